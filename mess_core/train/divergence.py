"""The divergence guard: a training run stops on a NaN or an infinity in its trained state (parameters, buffers such
as BatchNorm statistics, optimiser state) before anything is written, so every checkpoint and result is finite.

Example:
    >>> import torch
    >>> non_finite_tensors({"w": torch.ones(2), "bn.running_var": torch.tensor([1.0, float("inf")])})
    ['bn.running_var (inf)']
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TrainingError
from .distributed import DistEnv, all_reduce_sum

__all__ = ["non_finite_tensors", "guard_finite"]


def non_finite_tensors(named: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``named`` holding a NaN or an infinity, each with what it holds
    (``"bn.running_var (inf)"``); one fused check, one device synchronisation."""
    items = [(k, t) for k, t in named.items() if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    if not items:
        return []
    flags = torch.stack([torch.isfinite(t).all().to(items[0][1].device) for _, t in items])
    bad = (~flags).nonzero().flatten().tolist()
    names = []
    for i in bad:
        name, t = items[i]
        kinds = [w for w, has in (("nan", torch.isnan(t).any()), ("inf", torch.isinf(t).any())) if bool(has)]
        names.append(f"{name} ({'/'.join(kinds)})")
    return names


def _trained_state(module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, torch.Tensor]:
    """Every tensor a divergence can poison: ``module``'s state and ``optimizer``'s, named so a reader can place it."""
    state = dict(module.state_dict(keep_vars=False))
    if optimizer is not None:
        names = {id(p): n for n, p in module.named_parameters()}
        for param, values in optimizer.state.items():
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    state[f"optimizer {key} of {names.get(id(param), 'a parameter')}"] = value
    return state


def guard_finite(
    module: nn.Module,
    env: DistEnv,
    *,
    where: str,
    kept: str,
    lr: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Raise :class:`TrainingError` on every process when any process's trained state holds a non-finite value
    (a collective call: each process checks its own copy, then they agree). ``where``: when it was found; ``kept``:
    what the run directory still holds."""
    bad = non_finite_tensors(_trained_state(module, optimizer))
    count = int(all_reduce_sum(torch.tensor([len(bad)], dtype=torch.int64, device=env.device)))
    if not count:
        return
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    what = (
        f"non-finite values in {len(bad)} tensor(s) of the trained state: {shown}"
        if bad
        else "non-finite values in the trained state of another process"
    )
    rate = f" (now {lr:.3g})" if lr is not None else ""
    raise TrainingError(
        f"training diverged {where}: {what}; nothing of it was written and {kept}. Lower the learning rate{rate} or "
        "use fp32/bf16 instead of fp16, and resume from the last checkpoint (it is finite) or start a new run"
    )
