"""torch.distributed plumbing: one process or many (``torchrun``), NCCL on GPUs, gloo on CPUs.

A process started by ``torchrun`` finds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its environment;
:func:`setup` then joins the process group. Without them it is a single process and nothing is initialised.

BatchNorm under data parallelism normally sees only the local batch, so K processes would train a different network
than one process with the same global batch. :func:`sync_batchnorm` makes statistics global: PyTorch's
``SyncBatchNorm`` on CUDA, and on CPU (where PyTorch's is not implemented) :class:`GlobalBatchNorm2d`, which sums the
per-channel moments with an autograd-aware all-reduce.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistEnv",
    "device_problem",
    "setup",
    "teardown",
    "all_reduce_sum",
    "all_gather_objects",
    "sync_batchnorm",
    "GlobalBatchNorm2d",
    "shard_indices",
    "rng_state",
    "set_rng_state",
]


@dataclass(frozen=True)
class DistEnv:
    """Where this process stands: its rank among ``world_size`` processes and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def device_problem(device: str, *, fix: str) -> str | None:
    """Why ``device`` cannot be computed on here, ending with ``fix`` (what the user changes), or None when it can:
    checked when a setting is read, so that a run asking for a GPU this machine lacks stops before any work.

    >>> device_problem("cpu", fix="use --device cpu") is None
    True
    >>> device_problem("gpu0", fix="use --device cpu")
    "'gpu0' is not a device PyTorch knows (cpu, cuda, cuda:1, ...); use --device cpu"
    """
    try:
        kind = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return f"{device!r} is not a device PyTorch knows (cpu, cuda, cuda:1, ...); {fix}"
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            return f"device {device!r}: PyTorch sees no CUDA GPU on this machine; {fix}"
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            return f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); {fix}"
    return None


def setup(device: str | None = None) -> DistEnv:
    """Join the process group ``torchrun`` describes in the environment, or run as a single process.

    ``device``: "cuda", "cpu" or None (CUDA when available). Under torchrun each process takes GPU ``LOCAL_RANK``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU; pass --device cpu")
        index = local_rank if world_size > 1 else (torch.device(kind).index or 0)
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device(kind)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over all processes (a copy; ``value`` itself when single-process)."""
    if not _active():
        return value
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if _active():
        dist.barrier()


def shard_indices(length: int, rank: int, world_size: int) -> list[int]:
    """Indices ``rank, rank + world_size, ...``: every sample exactly once across processes. Evaluation uses this
    instead of ``DistributedSampler``, which pads with repeated samples that would be counted twice."""
    return list(range(rank, length, world_size))


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span every process's batch (CPU/gloo; see the module docstring).

    The forward pass all-reduces per-channel sums of x and the pixel count, then of squared deviations from the global
    mean; ``torch.distributed.nn``'s
    all-reduce carries gradients back through the sums, so the backward pass matches single-process BatchNorm on the
    concatenated batch. Running statistics are updated with the unbiased global variance, as BatchNorm does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _active()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        # Two passes (global mean, then squared deviations from it) rather than E[x^2] - E[x]^2: the one-pass form
        # cancels catastrophically when a channel's mean is large against its spread, and DDP then drifts away
        # from single-process training far beyond reduction-order rounding.
        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        sums = all_reduce(torch.cat([x.sum(dims), count]), op=dist.ReduceOp.SUM)
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x - mean[None, :, None, None]
        var = all_reduce((centred * centred).sum(dims), op=dist.ReduceOp.SUM) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def _global_bn(bn: nn.BatchNorm2d) -> GlobalBatchNorm2d:
    new = GlobalBatchNorm2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    # share, don't copy: the original model object keeps seeing the trained values
    if bn.affine:
        new.weight, new.bias = bn.weight, bn.bias
    new.running_mean, new.running_var, new.num_batches_tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked
    new.train(bn.training)
    return new


def sync_batchnorm(module: nn.Module, device: torch.device) -> int:
    """Replace every BatchNorm2d in ``module`` (in place, keeping its parameters and buffers) by one whose statistics
    span all processes; returns how many were replaced. A no-op count of 0 when there is nothing to replace."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.BatchNorm2d:
                continue
            if device.type == "cuda":
                new: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(child)
            else:
                new = _global_bn(child)
            setattr(parent, name, new)
            replaced += 1
    return replaced


def rng_state() -> dict[str, Any]:
    """Every random generator training touches (Python, NumPy, torch CPU and CUDA), as tensors and plain values so
    that checkpoints load with ``torch.load(weights_only=True)``."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
