"""The workload profile of a traced model: what every node costs, which module computes it, where the backbone ends
and where it can be cut. Exit placement reads it, and a converted network keeps it (``net.profile``).

It is built from the per-node costs that :mod:`.profiling` measures, and holds the cut points of :mod:`.cuts`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import fx

from .cuts import CutPoint, region_span
from .profiling import NodeCost, profile_nodes
from .tracing import TracedModel

__all__ = ["WorkloadProfile", "profile_workload"]


@dataclass
class WorkloadProfile:
    """The per-node workload of a traced model for one image of ``input_size``."""

    nodes: list[NodeCost]
    modules: list[str]  # per node: the module it belongs to ('' = the model's own forward)
    cost: str  # "flops" or "latency": what exit placement and cost_fraction use
    input_size: tuple[int, int]
    backbone: str
    backbone_end: int  # index of the backbone's last node
    cut_points: list[CutPoint] = field(default_factory=list)

    def node_costs(self, kind: str | None = None) -> list[float]:
        """Per-node cost in ``kind`` ("flops" or "latency"; default: the kind exits were placed by)."""
        if (kind or self.cost) == "latency":
            return [n.seconds or 0.0 for n in self.nodes]
        return [n.flops for n in self.nodes]

    def cumulative(self, kind: str | None = None) -> list[float]:
        """Cost of everything up to and including each node, in ``kind`` (see :meth:`node_costs`)."""
        return list(itertools.accumulate(self.node_costs(kind)))

    @property
    def total(self) -> float:
        return sum(self.node_costs())

    @property
    def total_flops(self) -> float:
        return sum(n.flops for n in self.nodes)

    @property
    def total_seconds(self) -> float | None:
        return sum(n.seconds or 0.0 for n in self.nodes) if self.cost == "latency" else None

    @property
    def backbone_cost(self) -> float:
        return self.cumulative()[self.backbone_end]

    def to_dict(self) -> dict[str, Any]:
        return {
            "cost": self.cost,
            "input_size": list(self.input_size),
            "backbone": self.backbone,
            "total_flops": self.total_flops,
            "total_gflops": self.total_flops / 1e9,
            "total_gmacs": self.total_flops / 2e9,
            "total_seconds": self.total_seconds,
            "backbone_fraction": self.backbone_cost / self.total if self.total else 0.0,
            "nodes": [dict(n.to_dict(), module=m) for n, m in zip(self.nodes, self.modules)],
            "cut_points": [
                {"node": c.node, "position": c.position, "feature": c.feature, "live": list(c.live)}
                for c in self.cut_points
            ],
        }


LATENCY_ROUNDS = 3  # cost="latency": a node's time is the least of the medians of this many timing rounds


def _node_costs(gm: fx.GraphModule, example: torch.Tensor, cost: str) -> list[NodeCost]:
    """Per-node costs; with ``cost="latency"`` each node's time is the minimum over ``LATENCY_ROUNDS`` rounds of
    its median time, so that a burst of load from other processes during one round does not move an exit."""
    runs = [profile_nodes(gm, example, cost=cost) for _ in range(LATENCY_ROUNDS if cost == "latency" else 1)]
    return [replace(run[0], seconds=min(r.seconds for r in run)) if cost == "latency" else run[0] for run in zip(*runs)]


def profile_workload(
    traced: TracedModel, example: torch.Tensor, cost: str, backbone: str, cuts: list[CutPoint]
) -> WorkloadProfile:
    """The workload of ``traced`` in ``cost`` ("flops" or "latency") per node for one image of ``example``'s size,
    each node credited to the module it belongs to, with the end of submodule ``backbone`` and its ``cuts``."""
    node_costs = _node_costs(traced.graph_module, example, cost)
    modules = []
    for n in traced.nodes:
        chain = traced.module_calls[n.name]
        modules.append(n.target if n.op == "call_module" else (chain[-1][1] if chain else ""))
    backbone_end = region_span(traced, backbone)[1]
    return WorkloadProfile(node_costs, modules, cost, tuple(example.shape[-2:]), backbone, backbone_end, cuts)
