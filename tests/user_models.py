"""Small user-style models for tests: skip connections, untraceable code, wrong outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TinyUNet(nn.Module):
    """A U-Net written as one module (no `backbone`/`encoder`): skips carried across the whole encoder."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.enc1 = conv_block(3, 8)
        self.enc2 = conv_block(8, 16, 2)
        self.enc3 = conv_block(16, 32, 2)
        self.dec2 = conv_block(32 + 16, 16)
        self.dec1 = conv_block(16 + 8, 8)
        self.classifier = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:]), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:]), e1], 1))
        return self.classifier(d1)


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.stages = nn.ModuleList(
            [conv_block(3, 8), conv_block(8, 16, 2), conv_block(16, 32, 2), conv_block(32, 64, 2)]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class EncoderUNet(nn.Module):
    """A U-Net with an `encoder` submodule returning a list of features, like segmentation_models_pytorch."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.encoder = _Encoder()
        self.decoder = nn.ModuleList([conv_block(64 + 32, 32), conv_block(32 + 16, 16), conv_block(16 + 8, 8)])
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, x = self.encoder(x)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return self.head(x)


class Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:  # control flow on tensor values: a static graph cannot hold both branches
            return x
        return -x


class DataDependent(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(conv_block(3, 8), conv_block(8, 16, 2), conv_block(16, 16))
        self.gate = Gate()
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.classifier(self.gate(self.backbone(x)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class SizeBranch(nn.Module):
    """Shape-dependent control flow: traced for the example's branch, guarded for other sizes."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(conv_block(3, 8), conv_block(8, 16, 2), conv_block(16, 16), conv_block(16, 16))
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        if x.shape[-1] > 100:
            f = F.avg_pool2d(f, 2)
        return F.interpolate(self.classifier(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


class FlatBackbone(nn.Module):
    """No 4-D features in its backbone: everything is flattened first."""

    def __init__(self, num_classes: int = 3, size: int = 8):
        super().__init__()
        self.size, self.num_classes = size, num_classes
        self.backbone = nn.Sequential(
            nn.Flatten(), nn.Linear(3 * size * size, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU()
        )
        self.head = nn.Linear(32, num_classes * size * size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).view(x.shape[0], self.num_classes, self.size, self.size)


class LowResLogits(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(conv_block(3, 8, 2), conv_block(8, 16, 2), conv_block(16, 16))
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


class DictWithoutOut(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(conv_block(3, 8), conv_block(8, 8), conv_block(8, 8))
        self.classifier = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.classifier(self.backbone(x))}


class ShapeCarrier(nn.Module):
    """Carries the batch size from ``x.shape`` to its last layer (as code that rebuilds tensors from the input's shape
    does): per-sample early exit must shrink it along with the batch."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(conv_block(3, 8), conv_block(8, 16, 2), conv_block(16, 16), conv_block(16, 32, 2))
        self.classifier = nn.Conv2d(32, num_classes, 1)
        self.bias = nn.Parameter(torch.randn(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        y = F.interpolate(self.classifier(self.backbone(x)), size=(h, w), mode="bilinear", align_corners=False)
        return y + self.bias.view(1, -1, 1, 1).expand(b, -1, h, w)


def tiny_unet(num_classes: int = 3) -> TinyUNet:
    """A factory function (not a class) for the import-path and file forms of naming a model."""
    return TinyUNet(num_classes=num_classes)


def not_a_module(num_classes: int = 3) -> str:
    """Returns something that is not a model."""
    return f"a description of a model with {num_classes} classes"


def drop_connect(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """EfficientNet-style drop-path helper: only builds its random mask in training mode."""
    if not training or p == 0:
        return x
    keep = 1 - p
    mask = torch.floor(keep + torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device))
    return x / keep * mask


class DropPathBlock(nn.Module):
    def __init__(self, channels: int, p: float = 0.5):
        super().__init__()
        self.body, self.p = conv_block(channels, channels), p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + drop_connect(self.body(x), self.p, self.training)


class NoisyBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = conv_block(cin, cout, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.training:  # a branch taken only in training mode
            y = y + 0.1 * torch.randn_like(y)
        return y


class FunctionalDropoutBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = conv_block(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.body(x), 0.3, training=self.training)


class TrainingDependent(nn.Module):
    """Blocks whose forward reads ``self.training``: drop-path, a training-only branch, functional dropout."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(
            conv_block(3, 8),
            DropPathBlock(8),
            NoisyBlock(8, 16),
            FunctionalDropoutBlock(16),
            DropPathBlock(16),
            conv_block(16, 16),
        )
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.classifier(self.backbone(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class RootDropout(nn.Module):
    """Functional dropout in the model's own forward: no submodule can hold it."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(conv_block(3, 8), conv_block(8, 8), conv_block(8, 8))
        self.classifier = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.dropout(self.backbone(x), 0.2, training=self.training))


class _ZerosBias(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x + torch.zeros(n, c, h, w)  # sizes as separate arguments: torch.fx cannot pass them


class _OnesBias(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.ones(x.shape[0], 1, 1, 1)


class TracedSizes(nn.Module):
    """Two modules that build tensors from traced sizes."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(conv_block(3, 8), _ZerosBias(), conv_block(8, 8), _OnesBias(), conv_block(8, 8))
        self.classifier = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


class LateShapeRead(nn.Module):
    """Reads the input's shape only at the very end, as many segmentation models do to upsample their logits."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(conv_block(3, 8), conv_block(8, 16, 2), conv_block(16, 16), conv_block(16, 32, 2))
        self.classifier = nn.Conv2d(32, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.classifier(self.backbone(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class FunctionalActivations(nn.Module):
    """Activations written as functions in the model's own forward (no backbone submodule): the cut after one
    lies in no module at all."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        y = torch.relu(self.conv3(y))
        return F.interpolate(self.classifier(y), size=x.shape[-2:], mode="bilinear", align_corners=False)


class _TwoBranchBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_block(3, 16)
        self.high = nn.Sequential(conv_block(16, 16), conv_block(16, 16), conv_block(16, 16))  # stride 1
        self.low = nn.Sequential(conv_block(16, 32, 2), conv_block(32, 32, 2), conv_block(32, 64, 2))  # to stride 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        h, low = s, s
        for high_block, low_block in zip(self.high, self.low):  # the branches advance in turn, the coarse one last
            h = high_block(h)
            low = low_block(low)
        return torch.cat([h, F.interpolate(low, size=h.shape[-2:], mode="nearest")], 1)


class TwoBranch(nn.Module):
    """HRNet-like: a full-resolution branch and a coarse branch run side by side and meet at the end."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = _TwoBranchBackbone()
        self.classifier = nn.Conv2d(16 + 64, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


# ----------------------------------------------------- shared memory, defaulted arguments, crops, in-place assignments
class SkipSliceInplace(nn.Module):
    """A slice kept as a skip crosses a cut beside the map it views, and the next block starts with ReLU(inplace):
    two stage inputs share memory and the stage writes into one."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.stem = nn.Sequential(conv_block(3, 8), conv_block(8, 8, 2))
        self.block = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())
        self.block2 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, 1, 1), nn.ReLU())
        self.head = nn.Conv2d(12, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)
        skip = f[:, :4]
        f = self.block2(self.block(f))
        return F.interpolate(
            self.head(torch.cat([f, skip], 1)), size=x.shape[-2:], mode="bilinear", align_corners=False
        )


class ReturnAux(nn.Module):
    """forward takes a second argument with a default, as many segmentation models do."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(conv_block(3, 8), conv_block(8, 8), conv_block(8, 8), conv_block(8, 8))
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor, return_aux: bool = False):
        y = self.head(self.backbone(x))
        return (y, y) if return_aux else y


class PadCrop(nn.Module):
    """Pads the input to a multiple of 16 and crops the logits back to the input size."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(
            conv_block(3, 8, 2), conv_block(8, 8, 2), conv_block(8, 8, 2), conv_block(8, 8, 2)
        )
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (16 - w % 16) % 16, 0, (16 - h % 16) % 16))
        y = F.interpolate(self.head(self.backbone(x)), scale_factor=16, mode="bilinear", align_corners=False)
        return y[:, :, :h, :w]


class IndexAssign(nn.Module):
    """Assigns into part of a tensor: torch.fx cannot record it."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.backbone = nn.Sequential(conv_block(3, 8), conv_block(8, 8), conv_block(8, 8))
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.backbone(x)
        y[:, 0] = 0
        return self.head(y)


class ListOutput(ReturnAux):
    """Returns a list: refused as not per-pixel logits, in the user's words."""

    def forward(self, x: torch.Tensor):
        y = self.head(self.backbone(x))
        return [y, y]
