"""Trading stride for dilation, so a classification backbone keeps an output stride of 8 for segmentation."""

from __future__ import annotations

from torch import nn


def stride_to_dilation(module: nn.Module, dilation: int) -> None:
    """Remove the stride-2 downsampling inside ``module`` and dilate its 3x3 convolutions instead.

    The convolution that used to downsample gets half the dilation (its input is still at the coarser rate), the
    others the full ``dilation``; this keeps the receptive field of the original network (Yu & Koltun; the dilated
    ResNet and MobileNetV2 of PSPNet and CSAIL's semantic-segmentation code).
    """
    for m in module.modules():
        if not isinstance(m, nn.Conv2d):
            continue
        if m.stride == (2, 2):
            m.stride = (1, 1)
            if m.kernel_size == (3, 3):
                m.dilation = (dilation // 2, dilation // 2)
                m.padding = (dilation // 2, dilation // 2)
        elif m.kernel_size == (3, 3):
            m.dilation = (dilation, dilation)
            m.padding = (dilation, dilation)
