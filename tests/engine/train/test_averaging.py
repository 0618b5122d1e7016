"""The weight average (``ema``) is the warmed-up exponential average of what the weights were, step by step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mess_core.train.averaging import ema_decay, weight_average


def _averaged(values: list[float], decay: float) -> tuple[float, float, int]:
    """(the average's weight, its BatchNorm running variance, its batch count) after one update per value, the
    module's weight and running variance set to that value and its batch count to the update's number."""
    module = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    average = weight_average(module, decay)
    for n, v in enumerate(values, start=1):
        with torch.no_grad():
            module[0].weight.fill_(v)
            module[1].running_var.fill_(v)
            module[1].num_batches_tracked.fill_(n)
        average.update_parameters(module)
    inner = average.module
    return inner[0].weight.item(), inner[1].running_var.item(), int(inner[1].num_batches_tracked)


def test_the_average_is_the_warmed_up_recursion_over_weights_and_statistics():
    values = [float(v) for v in torch.randn(50, generator=torch.Generator().manual_seed(0))]
    expected = values[0]  # the first update copies the module
    for n, v in enumerate(values[1:], start=1):
        d = ema_decay(0.9, n)
        expected = d * expected + (1 - d) * v
    weight, var, count = _averaged(values, 0.9)
    assert weight == pytest.approx(expected, rel=1e-5) and var == pytest.approx(expected, rel=1e-5)
    assert count == 50  # a count follows the module instead of being averaged


def test_the_first_steps_fade_from_a_long_run_average():
    # a 40-epoch CamVid stage 1 is 1800 steps: what the weights were at the first step must not survive in its
    # average (without a warm-up, 0.999 ** 1799 = 16% of it would)
    first, *_ = _averaged([1.0] + [0.0] * 1799, 0.999)
    assert abs(first) < 1e-6
    assert [ema_decay(0.999, n) for n in (1, 100_000)] == [2 / 11, 0.999]


def test_no_average_at_decay_zero():
    assert weight_average(nn.Linear(1, 1), 0.0) is None
