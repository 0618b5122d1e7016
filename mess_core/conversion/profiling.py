"""Profiling: the workload of every graph node, in FLOPs (torch.utils.flop_counter) or measured latency.

FLOPs follow torch.utils.flop_counter's convention: a multiply-accumulate is 2 FLOPs and only matrix products and
convolutions are counted (normalisation, activations and resampling count 0). GMACs = GFLOPs / 2.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Literal

import torch
from torch import fx, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["NodeCost", "profile_nodes", "count_flops", "evaluating", "COST_KINDS"]

COST_KINDS = ("flops", "latency")
CostKind = Literal["flops", "latency"]


@dataclass(frozen=True)
class NodeCost:
    """The cost of one graph node for one image: ``flops`` always, ``seconds`` when latency was measured."""

    name: str
    op: str
    target: str
    flops: float
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _target_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


class _FlopInterpreter(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, counter: FlopCounterMode):
        super().__init__(gm)
        self.counter = counter
        self.flops: dict[str, float] = {}

    def run_node(self, n: fx.Node) -> Any:
        before = self.counter.get_total_flops()
        result = super().run_node(n)
        self.flops[n.name] = float(self.counter.get_total_flops() - before)
        return result


class _LatencyInterpreter(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule, warmup: int, repeats: int):
        super().__init__(gm)
        self.warmup, self.repeats = warmup, repeats
        self.seconds: dict[str, float] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("placeholder", "output", "get_attr"):
            self.seconds[n.name] = 0.0
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        run = getattr(self, n.op)
        times = []
        for i in range(self.warmup + self.repeats):
            # fresh copies so that in-place ops (ReLU(inplace=True), +=) never compound across repeats
            a, k = fx.node.map_aggregate((args, kwargs), _clone_tensor)
            _synchronize()
            t0 = time.perf_counter()
            run(n.target, a, k)
            _synchronize()
            if i >= self.warmup:
                times.append(time.perf_counter() - t0)
        self.seconds[n.name] = statistics.median(times)
        return run(n.target, args, kwargs)


def _clone_tensor(a: Any) -> Any:
    return a.clone() if isinstance(a, torch.Tensor) else a


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode without gradients, then restore every submodule's own mode.

    Submodules are restored one by one because training mixes modes: stage 2 keeps a frozen backbone in eval mode
    while its exit heads train, and a blanket ``train()`` afterwards would unfreeze its BatchNorm statistics.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def profile_nodes(
    gm: fx.GraphModule,
    example: torch.Tensor,
    *,
    cost: CostKind = "flops",
    warmup: int = 2,
    repeats: int = 7,
) -> list[NodeCost]:
    """The cost of every node of ``gm`` for one image of ``example``'s size, in eval mode.

    ``cost="latency"`` also times every node on ``example``'s device: the median of ``repeats`` runs after
    ``warmup`` runs.
    """
    if cost not in COST_KINDS:
        raise ValueError(f"cost must be one of {COST_KINDS}, not {cost!r}")
    one = example[:1]
    with evaluating(gm):
        with FlopCounterMode(display=False) as counter:
            flop_run = _FlopInterpreter(gm, counter)
            flop_run.run(one)
        seconds: dict[str, float] = {}
        if cost == "latency":
            timer = _LatencyInterpreter(gm, warmup, repeats)
            timer.run(one)
            seconds = timer.seconds
    return [
        NodeCost(n.name, n.op, _target_name(n), flop_run.flops.get(n.name, 0.0), seconds.get(n.name))
        for n in gm.graph.nodes
    ]


def count_flops(fn: Callable[..., Any], *shapes: tuple[int, ...], dtype: torch.dtype = torch.float32) -> float:
    """FLOPs of ``fn(*inputs)`` for inputs of the given shapes, without computing anything (fake tensors).

    Falls back to real zero tensors if a module does something fake tensors do not support.
    """
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode, FlopCounterMode(display=False) as counter:
            inputs = [mode.from_tensor(torch.empty(s, dtype=dtype)) for s in shapes]
            with torch.no_grad():
                fn(*inputs)
        return float(counter.get_total_flops())
    except Exception:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            fn(*[torch.zeros(s, dtype=dtype) for s in shapes])
        return float(counter.get_total_flops())


def time_call(fn: Callable[[], Any], *, warmup: int = 2, repeats: int = 10) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs (CUDA synchronised)."""
    times = []
    for i in range(warmup + repeats):
        _synchronize()
        t0 = time.perf_counter()
        fn()
        _synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)
