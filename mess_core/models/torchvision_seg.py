"""torchvision's own segmentation builders, registered under our names (random weights, no downloads)."""

from __future__ import annotations

from torch import nn
from torchvision.models import segmentation

from .registry import register


@register(
    "resnet50_fcn",
    head="fcn",
    encoder="resnet50",
    output_stride=8,
    in_paper=True,
    description="torchvision fcn_resnet50",
)
def resnet50_fcn(*, num_classes: int) -> nn.Module:
    return segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=num_classes)


@register(
    "resnet50_deeplabv3",
    head="deeplabv3",
    encoder="resnet50",
    output_stride=8,
    in_paper=True,
    description="torchvision deeplabv3_resnet50",
)
def resnet50_deeplabv3(*, num_classes: int) -> nn.Module:
    return segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes)


@register(
    "mobilenetv3_deeplabv3",
    head="deeplabv3",
    encoder="mobilenet_v3_large",
    output_stride=16,
    description="torchvision deeplabv3_mobilenet_v3_large",
)
def mobilenetv3_deeplabv3(*, num_classes: int) -> nn.Module:
    return segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)


@register(
    "mobilenetv3_lraspp",
    head="lraspp",
    encoder="mobilenet_v3_large",
    output_stride=16,
    description="torchvision lraspp_mobilenet_v3_large",
)
def mobilenetv3_lraspp(*, num_classes: int) -> nn.Module:
    return segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
