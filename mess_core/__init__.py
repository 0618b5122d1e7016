"""MESS Explorer's engine: turn segmentation CNNs into Multi-Exit Semantic Segmentation networks.

>>> import torch, mess_core
>>> net = mess_core.convert(mess_core.models.create("resnet18_fcn", num_classes=5), torch.randn(1, 3, 64, 64))
>>> net.num_exits
4
"""

from . import models
from .conversion import LIGHT_EXIT, ExitHead, ExitPoint, ExitSpace, ExitSpec, MultiExitNet, WorkloadProfile, convert
from .errors import ConversionError, GuardFailure, MessError, SpecError, TraceFailure

__version__ = "0.1.0"

__all__ = [
    "convert",
    "MultiExitNet",
    "ExitPoint",
    "WorkloadProfile",
    "ExitSpec",
    "ExitSpace",
    "ExitHead",
    "LIGHT_EXIT",
    "models",
    "MessError",
    "TraceFailure",
    "ConversionError",
    "SpecError",
    "GuardFailure",
]
