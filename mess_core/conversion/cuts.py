"""Cut points of a traced model, and its split at chosen cut points into sequential stages.

A *cut point* is a position in topological order where execution can stop and resume later: everything computed
before it that is used after it (the *live set*) is known, and consists of tensors and shape metadata only. Cuts are
only placed between blocks: a cut inside a call of a module that is not a plain container (``nn.Sequential``,
``nn.ModuleList``, ``nn.ModuleDict`` or the backbone itself) is not a cut point, so exits never split a residual
block from its skip connection. Models with skip connections (U-Net, FPN, DeepLabV3+) carry several live tensors
across their cut points; the exit attaches to the most recent 4-D feature map of the live set, or, with
``exit_feature="highest-resolution"`` (for multi-branch backbones such as HRNet), to the one with the most pixels
(ties: most channels, then most recent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn
from torch.fx.node import map_arg

from .tracing import TracedModel, is_container

__all__ = ["CutPoint", "EXIT_FEATURE_RULES", "find_cut_points", "live_sets", "region_span", "split"]


@dataclass(frozen=True)
class CutPoint:
    """A place where execution can stop after node ``position`` and resume later from the ``live`` values.

    ``node`` is the last node computed before the cut except metadata reads moved up to it (``position`` counts
    those). ``module`` names what has just been computed, never empty: the outermost module call that ends at the cut
    (a block, or a whole layer), else the leaf module just called, else the node's name qualified by the module whose
    forward computes it (``backbone.relu_1``; in the model's own forward the bare node name, ``relu_1``).
    """

    position: int
    node: str
    live: tuple[str, ...]
    feature: str
    module: str
    in_chain: bool = False  # between a convolution and its normalisation/activation (see _inside_chain)


def live_sets(traced: TracedModel) -> list[tuple[int, ...]]:
    """For every position p, the indices of values computed at or before p and used after p (graph order).

    get_attr nodes (parameters and buffers) are constants, re-read by every stage that needs them, never live.
    """
    index = {n: i for i, n in enumerate(traced.nodes)}
    last_use = {}
    for i, n in enumerate(traced.nodes):
        if n.op in ("get_attr", "output") or not n.users:
            continue
        last_use[i] = max(index[u] for u in n.users)
    live: set[int] = set()
    result = []
    for p in range(len(traced.nodes)):
        if p in last_use:
            live.add(p)
        live = {i for i in live if last_use[i] > p}
        result.append(tuple(sorted(live)))
    return result


def region_span(traced: TracedModel, region: str) -> tuple[int, int]:
    """Indices of the first and last node of the first call of submodule ``region`` ('' = the whole model's
    computing nodes). Raises KeyError if the submodule is never called."""
    nodes = traced.nodes
    if not region:
        return next(i for i, n in enumerate(nodes) if n.op != "placeholder"), len(nodes) - 2
    inside = [i for i, n in enumerate(nodes) if any(q == region for _, q, _ in traced.module_calls[n.name])]
    if not inside:
        raise KeyError(region)
    first_key = next(k for k, q, _ in traced.module_calls[nodes[inside[0]].name] if q == region)
    inside = [i for i in inside if any(k == first_key for k, _, _ in traced.module_calls[nodes[i].name])]
    return inside[0], inside[-1]


def _cut_label(a: fx.Node, ending: Sequence[str], calls: Sequence[tuple[str, str, type]]) -> str:
    """Never empty: the outermost module call ending at the cut, else the leaf module node ``a`` calls, else node
    ``a``'s own name qualified by the module whose forward computes it (a bare node name in the model's forward)."""
    if ending:
        return ending[0]
    if a.op == "call_module":
        return str(a.target)
    return f"{calls[-1][1]}.{a.name}" if calls else a.name


EXIT_FEATURE_RULES = ("latest", "highest-resolution")


_CONVS: tuple[type, ...] = (nn.modules.conv._ConvNd,)
_NORMS: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    torchvision.ops.FrozenBatchNorm2d,
)
_ACTIVATIONS: tuple[type, ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
)
_CONV_FUNCTIONS = frozenset({torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d, F.conv3d})
_NORM_FUNCTIONS = frozenset({F.batch_norm, F.group_norm, F.layer_norm, F.instance_norm, torch.batch_norm})
_ACTIVATION_FUNCTIONS = frozenset(
    {
        F.relu,
        torch.relu,
        F.relu_,
        torch.relu_,
        F.relu6,
        F.leaky_relu,
        F.elu,
        F.gelu,
        F.silu,
        F.mish,
        F.hardswish,
        F.hardsigmoid,
        F.hardtanh,
        torch.sigmoid,
        F.sigmoid,
        torch.tanh,
        F.tanh,
    }
)
_ACTIVATION_METHODS = frozenset({"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"})


def _layer_kind(traced: TracedModel, n: fx.Node) -> str | None:
    """``"conv"``, ``"norm"``, ``"act"`` or None for a graph node."""
    if n.op == "call_module":
        m = traced.graph_module.get_submodule(str(n.target))
        for kind, types in (("conv", _CONVS), ("norm", _NORMS), ("act", _ACTIVATIONS)):
            if isinstance(m, types):
                return kind
    elif n.op == "call_function":
        for kind, targets in (("conv", _CONV_FUNCTIONS), ("norm", _NORM_FUNCTIONS), ("act", _ACTIVATION_FUNCTIONS)):
            if n.target in targets:
                return kind
    elif n.op == "call_method" and n.target in _ACTIVATION_METHODS:
        return "act"
    return None


def _inside_chain(traced: TracedModel, a: fx.Node, b: fx.Node) -> bool:
    """Whether a cut between ``a`` and ``b`` splits a convolution from its normalisation or activation (conv|BN,
    BN|ReLU, conv|ReLU): ``b`` is the only consumer of ``a`` and takes it as its input. An exit there reads a map
    that is not yet normalised or activated, at the same FLOPs as after the chain, and latency noise would move it."""
    if not b.args or b.args[0] is not a or len(a.users) != 1:
        return False
    kinds = (_layer_kind(traced, a), _layer_kind(traced, b))
    return kinds in {("conv", "norm"), ("conv", "act"), ("norm", "act")}


def _exit_feature(traced: TracedModel, features: Sequence[str], rule: str) -> str:
    """The feature map an exit reads among the live 4-D ``features`` (graph order), by ``rule``:

    * ``"latest"``: the most recently computed one (the deepest, for a single-path backbone; in a U-Net the newest
      encoder output, not an older skip);
    * ``"highest-resolution"``: the one with the most pixels, ties broken by the most channels, then the most
      recent. For multi-branch backbones (HRNet) where the coarsest branch is often computed last.
    """
    if rule == "latest":
        return features[-1]
    if rule == "highest-resolution":

        def key(item: tuple[int, str]) -> tuple[int, int, int]:
            shape = traced.info[item[1]].shape
            return shape[2] * shape[3], shape[1], item[0]

        return max(enumerate(features), key=key)[1]
    raise ValueError(f"exit_feature must be one of {EXIT_FEATURE_RULES}, not {rule!r}")


def find_cut_points(traced: TracedModel, *, region: str = "", exit_feature: str = "latest") -> list[CutPoint]:
    """Every valid cut point inside the call of submodule ``region`` ('' = the whole model), in graph order.
    ``exit_feature`` is the rule that chooses the feature map an exit reads (see :func:`_exit_feature`)."""
    if exit_feature not in EXIT_FEATURE_RULES:
        raise ValueError(f"exit_feature must be one of {EXIT_FEATURE_RULES}, not {exit_feature!r}")
    nodes = traced.nodes
    transparent = frozenset({region, ""})
    start, end = region_span(traced, region)
    if not region:
        end -= 1  # leave at least the last computing node after the cut, or the exit saves nothing
    live = live_sets(traced)
    batch = traced.info[nodes[0].name].shape[0]
    cuts = []
    for p in range(start, end + 1):
        if nodes[p].name in traced.hoisted:
            continue  # a shape read moved up: it belongs to the cut before it
        q = p  # the cut falls after the shape reads that follow node p, so that only the shapes cross it
        while nodes[q + 1].name in traced.hoisted:
            q += 1
        if nodes[q + 1].op == "output":
            continue
        a, b = nodes[p], nodes[q + 1]
        calls_a, calls_b = traced.module_calls[a.name], traced.module_calls[b.name]
        shared = [c for c, d in zip(calls_a, calls_b) if c[0] == d[0]]
        if any(not is_container(qual, typ, transparent) for _, qual, typ in shared):
            continue  # inside a block: cutting here would split it from its own skip path
        names = tuple(nodes[i].name for i in live[q])
        infos = [traced.info[n] for n in names]
        if not names or any(i.kind == "other" for i in infos):
            continue
        features = [
            n
            for n, i in zip(names, infos)
            if i.is_feature_map and i.shape[0] == batch and nodes[traced.index(n)].op != "placeholder"
        ]
        if not features:
            continue
        ending = [qual for key, qual, _ in calls_a if key not in {c[0] for c in shared} and qual != region]
        module = _cut_label(a, ending, calls_a)
        feature = _exit_feature(traced, features, exit_feature)
        cuts.append(CutPoint(q, a.name, names, feature, module, _inside_chain(traced, a, b)))
    return cuts


def split(traced: TracedModel, positions: Sequence[int]) -> list[fx.GraphModule]:
    """Split the graph after each position into len(positions)+1 sequential stages.

    Stage k takes the live values at cut k-1 (stage 0 takes the model's input) and returns the live values at cut k
    as a tuple in graph order; the last stage returns whatever the model returns. Stages share the model's
    submodules and parameters (no copies).
    """
    nodes = traced.nodes
    live = live_sets(traced)
    bounds = [-1, *positions, len(nodes) - 1]
    placeholders = [n for n in nodes if n.op == "placeholder"]
    stages = []
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        graph = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        inputs = placeholders if k == 0 else [nodes[i] for i in live[lo]]
        for n in inputs:
            env[n] = graph.placeholder(n.name)

        def lookup(a: fx.Node) -> fx.Node:
            if a not in env:
                if a.op != "get_attr":
                    raise AssertionError(f"stage {k} uses {a.name}, which is neither live nor a constant")
                env[a] = graph.get_attr(a.target)
            return env[a]

        for n in nodes[lo + 1 : hi + 1]:
            if n.op == "placeholder":
                continue
            if n.op == "output":
                graph.output(map_arg(n.args[0], lookup))
            else:
                env[n] = graph.node_copy(n, lookup)
        if k < len(bounds) - 2:
            graph.output(tuple(lookup(nodes[i]) for i in live[hi]))
        graph.lint()
        stages.append(fx.GraphModule(traced.graph_module, graph, class_name=f"Stage{k + 1}"))
    return stages
