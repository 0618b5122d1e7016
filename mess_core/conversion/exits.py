"""Exit architectures: the MESS exit space as data, and the heads built from it.

An exit head = Channel Reduction Module (CRM) x extra trainable blocks x Rapid Dilation Increase (RDI) x
segmentation head, as in the MESS paper:

* CRM: none, or 1x1 conv + BN + ReLU down to ``crm`` channels: an ``int`` is a fixed width, a ``float`` in (0, 1)
  a fraction of the incoming channels (rounded, at least 8).
* ``blocks``: 0, 1 or 2 extra residual blocks (two 3x3 convs + BN, identity skip) at the reduced width, to remedy the
  weak semantics of shallow features.
* ``rdi``: those blocks use fast-growing dilation, 2 then 4, to enlarge the receptive field; without blocks it means
  nothing, so ``rdi=True`` with ``blocks=0`` is not a configuration.
* ``head``: ``"fcn"`` (3x3 conv, BN, ReLU, dropout 0.1, 1x1 conv: torchvision's FCNHead) or ``"deeplab"``
  (torchvision's ASPP with rates 6/12/18, then 3x3 conv, BN, ReLU, 1x1 conv).

Logits are upsampled bilinearly to the input size. Each configuration has a stable readable id, e.g.
``crm64-b2-rdi-deeplab`` or ``crm50p-b0-fcn`` (50 percent of the channels) or ``nocrm-b1-fcn``.

Example:
    >>> from mess_core.conversion.exits import ExitSpec, ExitSpace
    >>> ExitSpec.parse("crm64-b2-rdi-deeplab")
    ExitSpec(crm=64, blocks=2, rdi=True, head='deeplab')
    >>> ExitSpec(crm=0.25, blocks=1, head="fcn").id
    'crm25p-b1-fcn'
    >>> len(ExitSpace.default())
    30
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from ..errors import SpecError

__all__ = ["ExitSpec", "ExitSpace", "ExitHead", "HEAD_KINDS", "LIGHT_EXIT", "exit_space"]

HEAD_KINDS = ("fcn", "deeplab")
ASPP_RATES = (6, 12, 18)
RDI_DILATIONS = (2, 4)
_ID = re.compile(r"^(?:nocrm|crm(?P<width>\d+)|crm(?P<pct>\d+)p)-b(?P<blocks>[0-2])(?P<rdi>-rdi)?-(?P<head>\w+)$")


@dataclass(frozen=True)
class ExitSpec:
    """One exit configuration. See the module docstring for what each field means."""

    crm: int | float | None = None
    blocks: int = 0
    rdi: bool = False
    head: str = "fcn"

    def __post_init__(self) -> None:
        if self.crm is not None:
            if isinstance(self.crm, bool) or not isinstance(self.crm, (int, float)):
                raise SpecError(f"crm must be None, an int width or a float fraction, not {self.crm!r}")
            if isinstance(self.crm, float) and not 0.0 < self.crm < 1.0:
                raise SpecError(f"a fractional crm must lie in (0, 1), not {self.crm}")
            if isinstance(self.crm, float) and round(self.crm * 100) != self.crm * 100:
                raise SpecError(f"a fractional crm must be a whole percentage, not {self.crm}")
            if isinstance(self.crm, int) and self.crm < 1:
                raise SpecError(f"a crm width must be at least 1, not {self.crm}")
        if self.blocks not in (0, 1, 2):
            raise SpecError(f"blocks must be 0, 1 or 2, not {self.blocks!r}")
        if self.rdi and self.blocks == 0:
            raise SpecError("rdi (rapid dilation increase) applies to extra blocks; it needs blocks >= 1")
        if self.head not in HEAD_KINDS:
            raise SpecError(f"head must be one of {HEAD_KINDS}, not {self.head!r}")

    @property
    def id(self) -> str:
        if self.crm is None:
            crm = "nocrm"
        elif isinstance(self.crm, float):
            crm = f"crm{round(self.crm * 100)}p"
        else:
            crm = f"crm{self.crm}"
        return f"{crm}-b{self.blocks}{'-rdi' if self.rdi else ''}-{self.head}"

    @classmethod
    def parse(cls, spec_id: str) -> "ExitSpec":
        m = _ID.match(spec_id)
        if not m:
            raise SpecError(
                f"'{spec_id}' is not an exit configuration id; ids look like 'nocrm-b0-fcn', 'crm50p-b1-fcn' or "
                f"'crm64-b2-rdi-deeplab' (crm: none, a width, or a percentage; 0-2 blocks; optional rdi; "
                f"head {' or '.join(HEAD_KINDS)})"
            )
        crm: int | float | None = None
        if m["width"]:
            crm = int(m["width"])
        elif m["pct"]:
            crm = int(m["pct"]) / 100
        return cls(crm=crm, blocks=int(m["blocks"]), rdi=bool(m["rdi"]), head=m["head"])

    @classmethod
    def coerce(cls, spec: "ExitSpec | str") -> "ExitSpec":
        return spec if isinstance(spec, ExitSpec) else cls.parse(spec)

    def reduced_channels(self, in_channels: int) -> int:
        if self.crm is None:
            return in_channels
        if isinstance(self.crm, float):
            return max(8, round(in_channels * self.crm))
        return self.crm

    def __str__(self) -> str:
        return self.id


# The light, fixed exit used when nothing else is asked for (and by stage-1 exit-aware pre-training).
LIGHT_EXIT = ExitSpec(crm=None, blocks=0, rdi=False, head="fcn")


@dataclass(frozen=True)
class ExitSpace:
    """The grid of exit configurations: every combination of the options, without meaningless duplicates."""

    crm: tuple[int | float | None, ...] = (None, 0.5, 0.25)
    blocks: tuple[int, ...] = (0, 1, 2)
    rdi: tuple[bool, ...] = (False, True)
    heads: tuple[str, ...] = HEAD_KINDS

    @classmethod
    def default(cls) -> "ExitSpace":
        """CRM none / 1/2 / 1/4 x 0-2 blocks x RDI on/off (with blocks) x FCN/DeepLab head: 30 configurations."""
        return cls()

    def __iter__(self) -> Iterator[ExitSpec]:
        for crm, blocks, rdi, head in itertools.product(self.crm, self.blocks, self.rdi, self.heads):
            if rdi and blocks == 0:
                continue
            yield ExitSpec(crm=crm, blocks=blocks, rdi=rdi, head=head)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self]


def exit_space(text: str) -> list[ExitSpec]:
    """``"default"`` (30 configurations), ``"light"`` (nocrm-b0-fcn) or comma-separated exit ids; here, beside the
    specs, so that a configuration can parse its exit space when it is read, without importing training."""
    if text == "default":
        return list(ExitSpace.default())
    if text == "light":
        return [LIGHT_EXIT]
    specs = [ExitSpec.parse(s.strip()) for s in text.split(",") if s.strip()]
    if not specs:
        raise SpecError(
            f"exit space {text!r} names no configuration; use default, light or comma-separated exit ids "
            "such as nocrm-b0-fcn,crm50p-b1-rdi-fcn"
        )
    return specs


def _head_width(channels: int) -> int:
    # torchvision's FCNHead uses in/4; narrow (reduced) features keep up to 32 channels so the head is not starved.
    return max(channels // 4, min(channels, 32))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + x)


class ExitHead(nn.Module):
    """An exit head built from an :class:`ExitSpec` for features of ``in_channels`` channels."""

    def __init__(self, spec: ExitSpec | str, in_channels: int, num_classes: int):
        super().__init__()
        spec = ExitSpec.coerce(spec)
        self.spec = spec
        width = spec.reduced_channels(in_channels)
        self.crm: nn.Module = (
            nn.Identity()
            if spec.crm is None
            else nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        )
        dilations = RDI_DILATIONS[: spec.blocks] if spec.rdi else (1,) * spec.blocks
        self.blocks = nn.Sequential(*[_ResidualBlock(width, d) for d in dilations])
        inner = _head_width(width)
        if spec.head == "fcn":
            self.head = nn.Sequential(
                nn.Conv2d(width, inner, 3, padding=1, bias=False),
                nn.BatchNorm2d(inner),
                nn.ReLU(),
                nn.Dropout(0.1),
                nn.Conv2d(inner, num_classes, 1),
            )
        else:
            self.head = nn.Sequential(
                ASPP(width, list(ASPP_RATES), out_channels=inner),
                nn.Conv2d(inner, inner, 3, padding=1, bias=False),
                nn.BatchNorm2d(inner),
                nn.ReLU(),
                nn.Conv2d(inner, num_classes, 1),
            )

    def forward(self, features: torch.Tensor, size: Sequence[int] | None = None) -> torch.Tensor:
        logits = self.head(self.blocks(self.crm(features)))
        if size is not None:
            logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
        return logits
