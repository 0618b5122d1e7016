"""The weight average a run keeps beside its weights (``TrainConfig.ema``): an exponential moving average of every
parameter and BatchNorm statistic, with the usual warm-up (as TensorFlow's ``ExponentialMovingAverage`` with
``num_updates``): the first update copies the weights, and an update made when the average already holds ``n``
averages with decay ``min(decay, (1 + n) / (10 + n))``.

Without the warm-up, the first optimiser steps' weights keep ``decay ** steps`` of the average: 16% after the 1800
steps of a 40-epoch CamVid run at 0.999, with BatchNorm variances from the first step (still near their initial 1)
where training ends near 0.01, which leaves the average predicting one class everywhere. With it, they fade within a
few hundred steps. The setting is the decay's ceiling, reached after about ``9 / (1 - decay)`` updates (0.999: about
9000); until then the average spans about the last ``(n + 10) / 9`` steps (200 at the end of that 1800-step run,
where the decay is 0.995):

    >>> [round(ema_decay(0.999, n), 3) for n in (1, 10, 100, 1800, 10000)]
    [0.182, 0.55, 0.918, 0.995, 0.999]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ema_decay", "weight_average"]

WARMUP = 10.0  # the warm-up's length scale: (1 + n) / (WARMUP + n)


def ema_decay(decay: float, updates: int) -> float:
    """The decay of an update made when the average already holds ``updates`` (``AveragedModel.n_averaged``; the
    first update, at 0, copies) under the run's setting ``decay``."""
    return min(decay, (1.0 + updates) / (WARMUP + updates))


def weight_average(module: nn.Module, decay: float) -> Any:
    """A :class:`torch.optim.swa_utils.AveragedModel` of ``module`` (weights and buffers) updated with
    :func:`ema_decay`; None at ``decay`` 0. Its first update copies the module; integer buffers (BatchNorm's batch
    count) follow the module, being counts rather than weights."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], averaged_so_far: torch.Tensor) -> None:
        if torch.is_floating_point(averaged[0]) or torch.is_complex(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - ema_decay(decay, int(averaged_so_far)))
        else:
            torch._foreach_copy_(averaged, current)

    return AveragedModel(module, multi_avg_fn=update, use_buffers=True)
