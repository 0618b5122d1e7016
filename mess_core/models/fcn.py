"""FCN models on dilated classification backbones (output stride 8), built from torchvision parts."""

from __future__ import annotations

from torch import nn
from torchvision.models import mobilenet_v2, resnet18
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.fcn import FCN, FCNHead

from .dilation import stride_to_dilation
from .registry import register


@register(
    "mobilenetv2_fcn",
    head="fcn",
    encoder="mobilenet_v2",
    output_stride=8,
    in_paper=True,
    description="MobileNetV2 (features up to the 320-channel block, dilated to OS 8) + FCN head, as in MESS",
)
def mobilenetv2_fcn(*, num_classes: int) -> nn.Module:
    features = mobilenet_v2(weights=None).features[:-1]  # drop the 1x1 conv to 1280 channels (classification only)
    # blocks 7-13 (stride 16) and 14-17 (stride 32) keep stride 8 by dilation 2 and 4
    for i in range(7, 14):
        stride_to_dilation(features[i], 2)
    for i in range(14, 18):
        stride_to_dilation(features[i], 4)
    backbone = IntermediateLayerGetter(features, return_layers={"17": "out"})
    return FCN(backbone, FCNHead(320, num_classes), None)


@register(
    "resnet18_fcn",
    head="fcn",
    encoder="resnet18",
    output_stride=8,
    description="ResNet18 (dilated to OS 8) + FCN head: small and fast, for tests and quick experiments",
)
def resnet18_fcn(*, num_classes: int) -> nn.Module:
    resnet = resnet18(weights=None)
    stride_to_dilation(resnet.layer3, 2)
    stride_to_dilation(resnet.layer4, 4)
    backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
    return FCN(backbone, FCNHead(512, num_classes), None)
