"""Evaluation: what a trained multi-exit network does on labelled images, and what an instance of it scores.

:mod:`.evaluation` measures a model's mIoU; :mod:`.policy` is the confidence exit policy with edge masking;
:mod:`.cache` holds, per image, every exit x configuration's counts at every threshold (one pass of the network,
run by :mod:`.cache_build`), so that :mod:`.instance` scores any instance (kept exits, heads, thresholds) exactly
without running it again.
"""

from .cache import CacheError, EvaluationCache
from .cache_build import build_cache
from .instance import MODES, Instance, InstanceError, KeptExit, evaluate
from .policy import ConfidencePolicy, EdgeMasking

__all__ = [
    "EvaluationCache",
    "CacheError",
    "build_cache",
    "Instance",
    "KeptExit",
    "InstanceError",
    "evaluate",
    "MODES",
    "ConfidencePolicy",
    "EdgeMasking",
]
