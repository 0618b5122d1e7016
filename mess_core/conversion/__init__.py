"""Conversion: a segmentation CNN becomes a multi-exit network.

The model is traced with torch.fx (:mod:`.graph`), its workload profiled per graph node (:mod:`.profiling`), exits
placed at cut points of equal cost (:mod:`.placement`), and the backbone split into stages with an exit head bank at
each cut (:mod:`.network`). :mod:`.exits` is the exit space (channel reduction x extra blocks x rapid dilation
increase x FCN/DeepLab head); :mod:`.workload` is what the ``profile`` command prints.
"""

from .exits import LIGHT_EXIT, ExitHead, ExitSpace, ExitSpec, exit_space
from .network import ExitPoint, MultiExitNet, WorkloadProfile, convert

__all__ = [
    "convert",
    "MultiExitNet",
    "ExitPoint",
    "WorkloadProfile",
    "ExitSpec",
    "ExitSpace",
    "ExitHead",
    "LIGHT_EXIT",
    "exit_space",
]
