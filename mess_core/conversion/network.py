"""The multi-exit network: :func:`convert` turns a segmentation CNN into a :class:`MultiExitNet`.

Which part of the model carries the early exits (the *backbone*) follows one rule:

1. the submodule the caller names with ``backbone=`` ("" means the whole model);
2. else the submodule called ``backbone`` (torchvision) or ``encoder`` (segmentation_models_pytorch), if present;
3. else the whole model.

Exits are only placed inside the backbone because heads such as DeepLabV3's ASPP can cost most of the model: an
exit inside them would save nothing. The N-1 early exits sit at about k/N of the backbone's cumulative workload
(k = 1..N-1), snapped to cut points (see :mod:`mess_core.conversion.placement`); the N-th exit is the model's own
output.

Example:
    >>> import torch, torchvision
    >>> import mess_core
    >>> model = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=11)
    >>> net = mess_core.convert(model, torch.randn(1, 3, 64, 64), num_exits=4)
    >>> [e.module for e in net.exits]
    ['backbone.layer3.2', 'backbone.layer3', 'backbone.layer4.1']
    >>> outs = net.eval()(torch.randn(2, 3, 96, 80))
    >>> len(outs), tuple(outs[-1].shape)
    (4, (2, 11, 96, 80))
    >>> [(step.index, step.final) for step in net.walk(torch.randn(1, 3, 64, 64), stop=3)]
    [(1, False), (2, False), (3, False)]
"""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import ConversionError, SpecError
from ..seeding import seeded_torch, stable_seed
from ..timelimit import time_limit
from .exits import LIGHT_EXIT, ExitHead, ExitSpace, ExitSpec
from .graph import EXIT_FEATURE_RULES, CutPoint, TracedModel, ValueInfo, find_cut_points, region_span, split, trace
from .placement import LATENCY_TOLERANCE, equidistant_targets, snap_stable, snap_to_cuts
from .profiling import COST_KINDS, NodeCost, count_flops, evaluating, profile_nodes

__all__ = [
    "ExitPoint",
    "WorkloadProfile",
    "StageStep",
    "StagedModule",
    "MultiExitNet",
    "convert",
    "resolve_backbone",
    "check_model_output",
    "check_module_names",
]


@dataclass(frozen=True)
class ExitPoint:
    """Where early exit ``index`` (1 = shallowest) attaches.

    ``node`` is the graph node after which the network is cut, ``feature_node`` the 4-D feature map the exit reads
    (among the ``live`` values crossing the cut, chosen by convert()'s ``exit_feature`` rule: the most recent one,
    or the highest-resolution one), ``module`` names where the cut sits.
    ``flops`` is the cumulative workload of one image before the exit (``seconds`` likewise, when latency was
    measured) and ``cost_fraction`` that cost over the whole model's, in the cost kind the network was converted
    with. ``channels`` and ``stride`` (input pixels per feature pixel) describe the feature map.
    """

    index: int
    node: str
    feature_node: str
    module: str
    live: tuple[str, ...]
    flops: float
    seconds: float | None
    cost_fraction: float
    channels: int
    stride: int
    feature_shape: tuple[int, int, int]

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def gmacs(self) -> float:
        return self.flops / 2e9

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(gflops=self.gflops, gmacs=self.gmacs)
        return d


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


def resolve_backbone(model: nn.Module, backbone: str | None) -> str:
    """The qualified name of the submodule that carries the exits (see the module docstring for the rule)."""
    modules = dict(model.named_modules())
    if backbone is None:
        for name in ("backbone", "encoder"):
            if isinstance(getattr(model, name, None), nn.Module):
                return name
        return ""
    if backbone not in modules:
        top = [n for n, _ in model.named_children()]
        raise ConversionError(
            f"backbone='{backbone}' is not a submodule of {type(model).__name__}; its top-level submodules are "
            f"{top}. Name the submodule that extracts features (dotted path), or pass backbone='' for the whole model."
        )
    return backbone


@dataclass(frozen=True)
class StageStep:
    """Where a walk through the stages stands after stage ``index`` (see :meth:`StagedModule.walk`).

    ``live`` is what the stage returned: the values the next stage takes (after the final stage, the model's own
    output). ``features`` is the feature map early exit ``index`` reads, None after the final stage; ``logits`` is the
    final exit's logits, None before the final stage.
    """

    index: int
    live: Any
    features: torch.Tensor | None
    logits: torch.Tensor | None = None

    @property
    def final(self) -> bool:
        """Whether this is the final stage, whose output is the model's own."""
        return self.logits is not None


class StagedModule(nn.Module):
    """A network run as a chain of stages with an early exit's feature map after each but the last.

    Subclasses provide ``stages`` (stage ``i`` is ``stages[i - 1]``; a deployed model may hold only the first few),
    ``feature_slots`` (per early exit, which live value it reads) and ``output_key`` (where the final stage's output
    holds the logits). :meth:`walk` is the one place that runs stages in sequence, so every caller - forward passes,
    FLOP counting, timing, deployment, export - hands live values on the same way.
    """

    stages: nn.ModuleList
    feature_slots: tuple[int, ...]
    output_key: str | int | None

    def run_stage(self, index: int, live: Sequence[Any]) -> Any:
        """Run stage ``index`` (1..N) on the live values handed on by the previous stage (stage 1: ``(x,)``)."""
        return self.stages[index - 1](*live)

    def exit_features(self, index: int, live: Sequence[Any]) -> torch.Tensor:
        """The feature map early exit ``index`` reads, from the live values returned by stage ``index``."""
        return live[self.feature_slots[index - 1]]

    def final_logits(self, output: Any) -> torch.Tensor:
        return output if self.output_key is None else output[self.output_key]

    def walk(
        self,
        x: torch.Tensor | None = None,
        *,
        live: Sequence[Any] | None = None,
        start: int = 1,
        stop: int | None = None,
    ) -> Iterator[StageStep]:
        """Run stages ``start``..``stop`` (1-based, inclusive; ``stop`` defaults to the last stage held) one at a
        time, yielding a :class:`StageStep` after each. Give the input ``x`` (stage 1), or the ``live`` values that
        stage ``start - 1`` returned to resume a walk, e.g. after dropping samples that left at an exit.

        Nothing runs until the next step is asked for, so a caller can time or FLOP-count each stage by wrapping
        ``next()``, and stops computing by not asking for more.
        """
        if (x is None) == (live is None):
            raise TypeError("walk() needs exactly one of the input x and the live values stage start - 1 returned")
        live = (x,) if x is not None else live
        final = len(self.feature_slots) + 1
        for index in range(start, (len(self.stages) if stop is None else stop) + 1):
            live = self.run_stage(index, live)
            if index == final:
                yield StageStep(index, live, None, self.final_logits(live))
            else:
                yield StageStep(index, live, self.exit_features(index, live))

    def walk_to(
        self,
        x: torch.Tensor | None = None,
        *,
        live: Sequence[Any] | None = None,
        start: int = 1,
        stop: int | None = None,
    ) -> StageStep:
        """The step after stage ``stop`` of :meth:`walk` (same arguments), running the stages before it."""
        step = None
        for step in self.walk(x, live=live, start=start, stop=stop):
            pass
        if step is None:
            raise ValueError(f"walk_to(start={start}, stop={stop}) runs no stage")
        return step


class MultiExitNet(StagedModule):
    """A segmentation model cut into N sequential stages with an exit head after each of the first N-1.

    ``net(x)`` returns N logit tensors ``(B, num_classes, H, W)`` at the input resolution: one per early exit
    (shallowest first, each from its active head) and last the original model's own output. The stages share
    parameters with the model passed to :func:`convert`.
    """

    def __init__(
        self,
        *,
        stages: Sequence[fx.GraphModule],
        exits: Sequence[ExitPoint],
        feature_slots: Sequence[int],
        profile: WorkloadProfile,
        num_classes: int,
        output_key: str | int | None,
        specialisations: Sequence[str],
        example_shape: tuple[int, int, int],
        value_info: Mapping[str, ValueInfo],
    ):
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleDict({str(e.index): nn.ModuleDict() for e in exits})
        self.exits: tuple[ExitPoint, ...] = tuple(exits)
        self.feature_slots = tuple(feature_slots)
        self.profile = profile
        self.num_classes = num_classes
        self.output_key = output_key
        self.specialisations = tuple(specialisations)
        self.example_shape = example_shape  # (C, H, W) of the example the network was converted with
        self.value_info = dict(value_info)  # what each graph node produced on the example (kind, shape)
        self.active: dict[int, str] = {}
        self._shape_cache: dict[tuple[int, int], tuple[list[tuple[int, int, int]], list[float]]] = {}

    # ----------------------------------------------------------------------------------------------- structure
    @property
    def num_exits(self) -> int:
        """N: the early exits plus the final one."""
        return len(self.exits) + 1

    def exit_point(self, index: int) -> ExitPoint:
        if not 1 <= index <= len(self.exits):
            raise IndexError(f"early exits are numbered 1..{len(self.exits)}, not {index}")
        return self.exits[index - 1]

    def attach(
        self,
        spec_or_space: ExitSpec | str | ExitSpace | Iterable[ExitSpec | str],
        *,
        exits: Iterable[int] | None = None,
        seed: int | None = None,
    ) -> "MultiExitNet":
        """Build a head for every given configuration at every early exit (or the given ``exits``).

        Heads already attached are kept. An exit with no active head activates the first configuration given. With
        ``seed``, each head's initial weights come from its own random stream (seed, exit, configuration), so they do
        not depend on which other heads are attached or in what order.
        """
        if isinstance(spec_or_space, (ExitSpec, str)):
            specs = [ExitSpec.coerce(spec_or_space)]
        else:
            specs = [ExitSpec.coerce(s) for s in spec_or_space]
        if not specs:
            raise SpecError("attach() needs at least one exit configuration")
        device, dtype = self._placement()
        for index in exits if exits is not None else range(1, self.num_exits):
            point = self.exit_point(index)
            bank = self.heads[str(index)]
            for spec in specs:
                if spec.id not in bank:
                    with seeded_torch(stable_seed(seed, "init", index, spec.id)) if seed is not None else nullcontext():
                        head = ExitHead(spec, point.channels, self.num_classes)
                    head = head.to(device=device, dtype=dtype)
                    head.train(self.training)
                    bank[spec.id] = head
            self.active.setdefault(index, specs[0].id)
        return self

    def activate(self, spec: ExitSpec | str | Mapping[int, ExitSpec | str]) -> "MultiExitNet":
        """Choose which attached head each early exit uses in :meth:`forward` (one spec for all, or per exit)."""
        chosen = spec if isinstance(spec, Mapping) else {i: spec for i in range(1, self.num_exits)}
        for index, s in chosen.items():
            spec_id = ExitSpec.coerce(s).id
            if spec_id not in self.heads[str(self.exit_point(index).index)]:
                raise SpecError(f"exit {index} has no head '{spec_id}'; attach it first with net.attach('{spec_id}')")
            self.active[index] = spec_id
        return self

    def head(self, index: int, spec: ExitSpec | str | None = None) -> ExitHead:
        bank = self.heads[str(self.exit_point(index).index)]
        spec_id = ExitSpec.coerce(spec).id if spec is not None else self.active.get(index)
        if spec_id is None or spec_id not in bank:
            raise SpecError(
                f"exit {index} has no head {spec_id!r} attached; call net.attach(spec_or_space) first "
                f"(attached: {sorted(bank.keys())})"
            )
        return bank[spec_id]

    def _placement(self) -> tuple[torch.device, torch.dtype]:
        for p in self.stages.parameters():
            return p.device, p.dtype
        return torch.device("cpu"), torch.float32

    # --------------------------------------------------------------------------------------------- execution
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[-2:]
        return [step.logits if step.final else self.head(step.index)(step.features, size) for step in self.walk(x)]

    def forward_features(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One pass through the backbone: the feature map at every early exit and the final exit's logits."""
        features = []
        for step in self.walk(x):
            if not step.final:
                features.append(step.features)
        return features, step.logits

    def forward_all(self, x: torch.Tensor) -> tuple[dict[int, dict[str, torch.Tensor]], torch.Tensor]:
        """Logits of every attached head at every early exit from one backbone pass, and the final logits."""
        features, final = self.forward_features(x)
        size = x.shape[-2:]
        heads = {
            index: {spec_id: head(feat, size) for spec_id, head in self.heads[str(index)].items()}
            for index, feat in enumerate(features, start=1)
        }
        return heads, final

    # ------------------------------------------------------------------------------------------------- costs
    def _shapes_and_stage_flops(
        self, input_size: Sequence[int] | None
    ) -> tuple[list[tuple[int, int, int]], list[float]]:
        size = tuple(input_size) if input_size is not None else self.example_shape[1:]
        if size not in self._shape_cache:
            shapes: list[tuple[int, int, int]] = []
            flops: list[float] = []

            def run(x: torch.Tensor) -> None:
                shapes.clear()  # count_flops may retry with real tensors after a fake-tensor failure
                flops.clear()
                steps = self.walk(x)
                for _ in range(self.num_exits):
                    with FlopCounterMode(display=False) as counter:
                        step = next(steps)
                    flops.append(float(counter.get_total_flops()))
                    if not step.final:
                        shapes.append(tuple(step.features.shape[1:]))

            with evaluating(self):
                count_flops(run, (1, self.example_shape[0], *size))
            self._shape_cache[size] = (shapes, flops)
        return self._shape_cache[size]

    def feature_shape(self, index: int, input_size: Sequence[int] | None = None) -> tuple[int, int, int]:
        """(C, H, W) of the feature map early exit ``index`` reads, for an input of ``input_size`` (H, W)."""
        self.exit_point(index)
        return self._shapes_and_stage_flops(input_size)[0][index - 1]

    def stage_flops(self, input_size: Sequence[int] | None = None) -> list[float]:
        """FLOPs of each of the N stages for one image of ``input_size`` (default: the example's size)."""
        return list(self._shapes_and_stage_flops(input_size)[1])

    def head_flops(self, index: int, spec: ExitSpec | str, input_size: Sequence[int] | None = None) -> float:
        """FLOPs of one head (``spec``) at early exit ``index`` for one image of ``input_size``, upsampling
        included. The head need not be attached: it is built on the meta device, costing no memory."""
        spec = ExitSpec.coerce(spec)
        c, h, w = self.feature_shape(index, input_size)
        size = tuple(input_size) if input_size is not None else self.example_shape[1:]
        with torch.device("meta"):
            head = ExitHead(spec, c, self.num_classes).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            head(torch.empty(1, c, h, w, device="meta"), size)
        return float(counter.get_total_flops())

    def exit_flops(
        self, index: int, spec: ExitSpec | str | None = None, input_size: Sequence[int] | None = None
    ) -> float:
        """FLOPs of the static path to exit ``index`` (1..N): stages up to it plus its head (the final exit's head is
        part of the last stage)."""
        stages = self.stage_flops(input_size)
        if index == self.num_exits:
            return sum(stages)
        spec = spec if spec is not None else self.active.get(index, LIGHT_EXIT)
        return sum(stages[:index]) + self.head_flops(index, spec, input_size)

    def describe(self) -> dict[str, Any]:
        """Everything :func:`convert` found, as JSON-ready data."""
        return {
            "num_exits": self.num_exits,
            "num_classes": self.num_classes,
            "example_shape": list(self.example_shape),
            "exits": [e.to_dict() for e in self.exits],
            "specialisations": list(self.specialisations),
            "profile": self.profile.to_dict(),
        }


def _final_tensor(output: Any, output_key: str | int | None) -> tuple[torch.Tensor, str | int | None]:
    if output_key is None:
        if isinstance(output, torch.Tensor):
            return output, None
        if isinstance(output, Mapping) and "out" in output:
            return output["out"], "out"
        kind = type(output).__name__
        kind = {"immutable_list": "list", "immutable_dict": "dict"}.get(kind, kind)  # torch.fx's containers
        keys = f" with keys {list(output.keys())}" if isinstance(output, Mapping) else ""
        raise ConversionError(
            f"the model returns a {kind}{keys}, not per-pixel logits; pass output_key= naming the entry that holds the "
            "(B, num_classes, H, W) logits"
        )
    try:
        return output[output_key], output_key
    except (KeyError, IndexError, TypeError) as exc:
        raise ConversionError(
            f"output_key={output_key!r} does not select an entry of the model's output: {exc}"
        ) from exc


def _check_logits(logits: Any, example: torch.Tensor) -> int:
    if (
        not isinstance(logits, torch.Tensor)
        or logits.dim() != 4
        or not logits.is_floating_point()
        or logits.shape[0] != example.shape[0]
    ):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConversionError(
            f"the model's output {shape} is not per-pixel logits (B, num_classes, H, W) for an input of shape "
            f"{tuple(example.shape)}; MESS converts semantic-segmentation models"
        )
    if logits.shape[-2:] != example.shape[-2:]:
        raise ConversionError(
            f"the model's logits are {tuple(logits.shape[-2:])} pixels for a {tuple(example.shape[-2:])} input; "
            "exits are compared with the final output per pixel, so wrap the model to upsample its logits to the "
            "input size (F.interpolate(..., mode='bilinear'))"
        )
    return logits.shape[1]


def check_module_names(model: nn.Module, *, backbone: str | None = None, leaf_modules: Iterable[Any] = ()) -> None:
    """Refuse ``backbone`` and ``leaf_modules`` names that are not submodules of ``model`` (what :func:`convert`
    would refuse), so that a study's ``convert:`` block is checked when its YAML is read, not after training."""
    resolve_backbone(model, backbone)
    modules = dict(model.named_modules())
    missing = [m for m in leaf_modules if isinstance(m, str) and m not in modules]
    if missing:
        raise ConversionError(
            f"leaf_modules names {missing} are not submodules of {type(model).__name__}; name "
            "submodules by their dotted path (print(model) lists them)"
        )


def check_model_output(
    model: nn.Module, example: torch.Tensor, *, num_classes: int | None = None, output_key: str | int | None = None
) -> str | int | None:
    """Run ``model`` once on ``example`` (eval mode, no gradients) and refuse an output that is not per-pixel logits
    of the input's size (with ``num_classes`` channels when given), as :func:`convert` does; returns the key of the
    logits in the output (None: the output is the tensor)."""
    was_training = model.training
    try:
        with torch.no_grad(), time_limit(f"running {type(model).__name__} on {tuple(example.shape)}"):
            output = model.eval()(example)
    finally:
        model.train(was_training)
    logits, key = _final_tensor(output, output_key)
    classes = _check_logits(logits, example)
    if num_classes is not None and classes != num_classes:
        raise ConversionError(
            f"the model predicts {classes} classes but the dataset has {num_classes}; build the "
            f"model with num_classes={num_classes} (its callable takes num_classes=)"
        )
    return key


def convert(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    num_exits: int = 4,
    cost: Literal["flops", "latency"] = "flops",
    backbone: str | None = None,
    leaf_modules: Iterable[str | type] = (),
    output_key: str | int | None = None,
    exit_head: ExitSpec | str | ExitSpace | None = LIGHT_EXIT,
    verify: bool = True,
    exit_feature: Literal["latest", "highest-resolution"] = "latest",
) -> MultiExitNet:
    """Turn ``model`` into a :class:`MultiExitNet` with ``num_exits`` exits (``num_exits - 1`` early ones).

    Args:
        model: a segmentation CNN returning (B, classes, H, W) logits, or a dict holding them under ``"out"``.
        example_input: an input batch; tracing, profiling and verification use it (profiling: its first image).
        num_exits: N, counting the model's own output as the last exit.
        cost: ``"flops"`` (torch.utils.flop_counter) or ``"latency"`` (median time per node on the model's
            device) for placing exits at equidistant workload.
        backbone: the submodule that carries the exits; see the module docstring for the default.
        leaf_modules: module classes or qualified names that tracing keeps opaque (for code FX cannot trace).
        output_key: which entry of a dict/tuple output holds the logits, if not ``"out"``.
        exit_head: configuration(s) to attach at every early exit right away (None: attach later).
        verify: check that running the stages reproduces the model's output on ``example_input``.
        exit_feature: which live 4-D feature map an exit reads where several cross a cut: ``"latest"`` (the most
            recently computed; right for single-path backbones and U-Net encoders) or ``"highest-resolution"`` (the
            most pixels, ties broken by most channels, then most recent; for multi-branch backbones such as HRNet,
            whose coarsest branch is often computed last).
    """
    if not isinstance(num_exits, int) or num_exits < 2:
        raise ConversionError(f"num_exits must be an int >= 2 (early exits plus the final one), not {num_exits!r}")
    if cost not in COST_KINDS:
        raise ConversionError(f"cost must be one of {COST_KINDS}, not {cost!r}")
    if exit_feature not in EXIT_FEATURE_RULES:
        raise ConversionError(f"exit_feature must be one of {EXIT_FEATURE_RULES}, not {exit_feature!r}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() != 4:
        shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise ConversionError(f"example_input must be an image batch (B, C, H, W), not {shape}")
    backbone_name = resolve_backbone(model, backbone)

    with time_limit(f"tracing {type(model).__name__} on an example input {tuple(example_input.shape)}"):
        traced = trace(model, example_input, leaf_modules=leaf_modules)
    logits, key = _final_tensor(traced.output, output_key)
    num_classes = _check_logits(logits, example_input)

    try:
        cuts = find_cut_points(traced, region=backbone_name, exit_feature=exit_feature)
    except KeyError:
        raise ConversionError(
            f"the backbone '{backbone_name}' is never called in {type(model).__name__}.forward; name the submodule "
            "that computes the features with backbone="
        ) from None
    where = f"the backbone '{backbone_name}'" if backbone_name else f"{type(model).__name__}"
    if not cuts:
        raise ConversionError(
            f"{where} has no place where a 4-D feature map (B, C, H, W) can be taken between blocks; MESS exits need "
            "spatial features. If the features live in another submodule, name it with backbone="
        )
    node_costs = _profile(traced.graph_module, example_input, cost)
    profile = _build_profile(traced, node_costs, cost, backbone_name, cuts, example_input)
    if len(cuts) < num_exits - 1:
        raise ConversionError(
            f"num_exits={num_exits} needs {num_exits - 1} early exits, but {where} has only {len(cuts)} valid cut "
            f"points; use num_exits <= {len(cuts) + 1}, or name a deeper backbone"
        )
    cumulative = profile.cumulative()
    chosen = _place_exits(cuts, profile, num_exits)

    flops_cumulative = profile.cumulative("flops")
    seconds_cumulative = profile.cumulative("latency") if cost == "latency" else None
    height = example_input.shape[-2]
    exits, slots = [], []
    for index, cut in enumerate(chosen, start=1):
        shape = traced.info[cut.feature].shape
        exits.append(
            ExitPoint(
                index=index,
                node=cut.node,
                feature_node=cut.feature,
                module=cut.module,
                live=cut.live,
                flops=flops_cumulative[cut.position],
                seconds=seconds_cumulative[cut.position] if seconds_cumulative else None,
                cost_fraction=cumulative[cut.position] / profile.total if profile.total else 0.0,
                channels=shape[1],
                stride=max(1, round(height / shape[2])),
                feature_shape=tuple(shape[1:]),
            )
        )
        slots.append(cut.live.index(cut.feature))

    net = MultiExitNet(
        stages=split(traced, [c.position for c in chosen]),
        exits=exits,
        feature_slots=slots,
        profile=profile,
        num_classes=num_classes,
        output_key=key,
        specialisations=traced.specialisations,
        example_shape=tuple(example_input.shape[1:]),
        value_info=traced.info,
    )
    net.train(model.training)
    if verify:
        _verify(net, model, key, example_input)
    if exit_head is not None:
        net.attach(exit_head)
    return net


LATENCY_ROUNDS = 3  # cost="latency": a node's time is the least of the medians of this many timing rounds


def _profile(gm: fx.GraphModule, example: torch.Tensor, cost: str) -> list[NodeCost]:
    """Per-node costs; with ``cost="latency"`` each node's time is the minimum over ``LATENCY_ROUNDS`` rounds of
    its median time, so that a burst of load from other processes during one round does not move an exit."""
    runs = [profile_nodes(gm, example, cost=cost) for _ in range(LATENCY_ROUNDS if cost == "latency" else 1)]
    return [replace(run[0], seconds=min(r.seconds for r in run)) if cost == "latency" else run[0] for run in zip(*runs)]


def _place_exits(cuts: list[CutPoint], profile: WorkloadProfile, num_exits: int) -> list[CutPoint]:
    """The cut points of the N-1 early exits (see :mod:`mess_core.conversion.placement`). Cut points inside a
    conv-normalisation-activation chain are only used when the other cut points are too few for ``num_exits``."""
    pool = [c for c in cuts if not c.in_chain]
    if len(pool) < num_exits - 1:
        pool = cuts
    cumulative = profile.cumulative()
    targets = equidistant_targets(profile.backbone_cost, num_exits)
    costs = [cumulative[c.position] for c in pool]
    if profile.cost != "latency":
        return [pool[i] for i in snap_to_cuts(costs, targets)]
    flops = profile.cumulative("flops")
    flop_targets = equidistant_targets(flops[profile.backbone_end], num_exits)
    tolerance = LATENCY_TOLERANCE * profile.backbone_cost * (num_exits - 1)
    return [pool[i] for i in snap_stable(costs, targets, [flops[c.position] for c in pool], flop_targets, tolerance)]


def _build_profile(
    traced: TracedModel,
    node_costs: list[NodeCost],
    cost: str,
    backbone: str,
    cuts: list[CutPoint],
    example: torch.Tensor,
) -> WorkloadProfile:
    modules = []
    for n in traced.nodes:
        chain = traced.module_calls[n.name]
        modules.append(n.target if n.op == "call_module" else (chain[-1][1] if chain else ""))
    backbone_end = region_span(traced, backbone)[1]
    return WorkloadProfile(node_costs, modules, cost, tuple(example.shape[-2:]), backbone, backbone_end, cuts)


def _verify(net: MultiExitNet, model: nn.Module, key: str | int | None, example: torch.Tensor) -> None:
    with evaluating(net), evaluating(model):
        ours = net.walk_to(example).logits
        theirs = _final_tensor(model(example), key)[0]
    if not torch.isfinite(theirs).all():
        bad = [
            name
            for name, t in [*model.named_parameters(), *model.named_buffers()]
            if t.is_floating_point() and not torch.isfinite(t).all()
        ]
        raise ConversionError(
            "the model's output on the example input is not finite (NaN or infinite)"
            + (
                f": its weights hold non-finite values ({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}); "
                "load weights from before training diverged"
                if bad
                else "; check its forward for a division by zero or a log of zero"
            )
        )
    if not torch.allclose(ours, theirs, atol=1e-5, rtol=0):
        raise ConversionError(
            "running the model stage by stage does not reproduce its output on the example input (max difference "
            f"{(ours - theirs).abs().max().item():.3g}); the model may be nondeterministic in eval mode"
        )
