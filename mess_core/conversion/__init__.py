"""Conversion: a segmentation CNN becomes a multi-exit network.

The model is traced with torch.fx (:mod:`.tracing`; shape reads moved up by :mod:`.shape_reads`, failures explained
by :mod:`.trace_failures`), its workload profiled per graph node (:mod:`.profiling`, gathered in
:mod:`.workload_profile`), exits placed at cut points (:mod:`.cuts`) of equal cost (:mod:`.placement`), and the
backbone split into stages with an exit head bank at each cut (:mod:`.network`); :mod:`.pipeline` holds
:func:`convert`, which runs these steps. :mod:`.exits` is the exit space (channel reduction x extra blocks x rapid
dilation increase x FCN/DeepLab head); :mod:`.workload` is what the ``profile`` command prints.
"""

from .exits import LIGHT_EXIT, ExitHead, ExitSpace, ExitSpec, exit_space
from .network import ExitPoint, MultiExitNet
from .pipeline import convert
from .workload_profile import WorkloadProfile

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
