"""Reference segmentation models for offline use: ``mess_core.models.create(name, num_classes=...)``; any model named
by registered name, import path or file: :class:`ModelSource`."""

from . import fcn, torchvision_seg  # noqa: F401  (registers the models)
from .registry import ModelInfo, create, list_models, model_info, register
from .source import ModelSource, ModelSourceError, convert_options, load_user_weights

__all__ = [
    "ModelInfo",
    "create",
    "list_models",
    "model_info",
    "register",
    "ModelSource",
    "ModelSourceError",
    "convert_options",
    "load_user_weights",
]
