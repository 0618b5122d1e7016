"""The multi-exit network: a model cut into sequential stages with a bank of exit heads after each but the last.

:class:`StagedModule` runs the stages one at a time (:meth:`StagedModule.walk`, the one place that hands live values
from stage to stage); :class:`MultiExitNet` adds the exits (:class:`ExitPoint`: where each attaches, what the path to
it costs) and their heads, and answers FLOP and shape questions for any input size. :func:`mess_core.convert` builds
one (see :mod:`.pipeline`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import SpecError
from ..seeding import seeded_torch, stable_seed
from .exits import LIGHT_EXIT, ExitHead, ExitSpace, ExitSpec
from .profiling import count_flops, evaluating
from .tracing import ValueInfo
from .workload_profile import WorkloadProfile

__all__ = ["ExitPoint", "StageStep", "StagedModule", "MultiExitNet"]


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
    parameters with the model passed to :func:`mess_core.convert`.
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

    def path_flops(
        self, kept: Mapping[int, ExitSpec | str], leave_at: int, input_size: Sequence[int] | None = None
    ) -> tuple[float, float]:
        """(FLOPs of an image that leaves at exit ``leave_at`` with the heads ``kept`` (exit -> spec) evaluated on
        the way: the stages up to the exit plus every kept head up to and including it, FLOPs of the original
        model's path: every stage, no head) for one image of ``input_size``."""
        stages = self.stage_flops(input_size)
        heads = sum(self.head_flops(i, spec, input_size) for i, spec in kept.items() if i <= leave_at)
        return sum(stages[:leave_at]) + heads, sum(stages)

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
        """Everything :func:`mess_core.convert` found, as JSON-ready data."""
        return {
            "num_exits": self.num_exits,
            "num_classes": self.num_classes,
            "example_shape": list(self.example_shape),
            "exits": [e.to_dict() for e in self.exits],
            "specialisations": list(self.specialisations),
            "profile": self.profile.to_dict(),
        }
