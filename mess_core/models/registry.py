"""A registry of reference segmentation models, one build path: ``create(name, num_classes=...)``.

Metadata is declared as data beside each builder, so tests and tools can iterate over every registered model.
Nothing is ever downloaded: every builder starts from random initialisation (``weights=None``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

__all__ = ["ModelInfo", "register", "create", "list_models", "model_info"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    head: str  # "fcn", "deeplabv3" or "lraspp"
    encoder: str
    output_stride: int
    in_paper: bool  # one of the MESS paper's three backbones
    description: str


_REGISTRY: dict[str, ModelInfo] = {}


def register(
    name: str, *, head: str, encoder: str, output_stride: int, in_paper: bool = False, description: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = ModelInfo(name, builder, head, encoder, output_stride, in_paper, description)
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model '{name}'; registered models: {', '.join(list_models())}")
    return _REGISTRY[name]


def create(name: str, *, num_classes: int) -> nn.Module:
    """Build registered model ``name`` with random weights and ``num_classes`` output classes.

    Example:
        >>> from mess_core import models
        >>> net = models.create("resnet18_fcn", num_classes=11)
        >>> type(net).__name__
        'FCN'
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, not {num_classes!r}")
    return model_info(name).builder(num_classes=num_classes)
