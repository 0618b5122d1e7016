"""Reference segmentation models for offline use: ``mess_core.models.create(name, num_classes=...)``."""

from . import fcn, torchvision_seg  # noqa: F401  (registers the models)
from .registry import ModelInfo, create, list_models, model_info, register

__all__ = ["ModelInfo", "create", "list_models", "model_info", "register"]
