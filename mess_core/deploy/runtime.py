"""Deployment that really skips work: :func:`deploy` turns a trained :class:`MultiExitNet` and a searched
:class:`~mess_core.evaluate.instance.Instance` into a plain ``nn.Module`` that holds and runs only what the instance
needs.

* ``budgeted`` -> :class:`BudgetedNet`: the stages up to the kept exit and its head; ``forward(x)`` is one plain pass
  (no exit kept: the whole backbone).
* ``anytime`` -> :class:`AnytimeNet`: ``stream(x)`` yields ``(exit, logits)`` after every kept exit and the final
  one, so a caller can stop whenever its time is up; ``forward(x)`` runs them all.
* ``input-dependent`` -> :class:`EarlyExitNet`: ``forward(x)`` returns ``(logits, exit_taken)``. After each kept exit
  the samples whose rule fires leave the batch: every live tensor is compacted to the samples still running before
  the next stage runs, so no stage or head ever sees a sample that already left. Outputs come back in input order.

Exits are numbered as in the network: 1..N-1 for the early exits, N for the final one. Weights of heads the instance
does not keep, and (budgeted) of stages after its exit, are not part of the deployed module; its modules are shared
with ``net``, not copied.

Example:
    >>> import torch, mess_core
    >>> from mess_core.evaluate.instance import Instance, KeptExit
    >>> net = mess_core.convert(mess_core.models.create("resnet18_fcn", num_classes=5).eval(),
    ...                         torch.zeros(1, 3, 64, 64), num_exits=3)
    >>> _ = net.attach("crm25p-b0-fcn").eval()
    >>> model = deploy(net, Instance.input_dependent([KeptExit(1, "crm25p-b0-fcn", th_img=0.0)]))
    >>> logits, taken = model(torch.randn(2, 3, 64, 64))
    >>> tuple(logits.shape), taken.tolist()  # th_img 0: every image leaves at exit 1
    ((2, 5, 64, 64), [1, 1])
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from ..conversion.exits import ExitHead
from ..conversion.network import MultiExitNet, StagedModule, StageStep
from ..errors import MessError
from ..evaluate.instance import Instance, InstanceError
from ..evaluate.policy import ConfidencePolicy

__all__ = [
    "deploy",
    "check_instance",
    "BudgetedNet",
    "AnytimeNet",
    "EarlyExitNet",
    "DeployedNet",
    "compact_live",
    "probe_live",
]


def check_instance(net: MultiExitNet, instance: Instance, *, source: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`InstanceError` saying what differs unless ``instance`` fits ``net``: every kept exit exists and
    has its configuration attached, input-dependent exits have thresholds, and the instance's recorded ``source``
    (class count, number of exits), when given, matches the network."""
    source = dict(source or instance.source or {})
    if "num_classes" in source and source["num_classes"] != net.num_classes:
        raise InstanceError(
            f"the instance was searched for {source['num_classes']} classes but the network predicts "
            f"{net.num_classes}; search again on a cache of this network"
        )
    if "num_exits" in source and source["num_exits"] != net.num_exits:
        raise InstanceError(
            f"the instance was searched for a network with {source['num_exits']} exits but this one has "
            f"{net.num_exits}; convert with num_exits={source['num_exits']} or search again"
        )
    for kept in instance.exits:
        if not 1 <= kept.exit < net.num_exits:
            raise InstanceError(
                f"exit {kept.exit} is not an early exit of this network (early exits are 1..{net.num_exits - 1})"
            )
        bank = net.heads[str(kept.exit)]
        if kept.config not in bank:
            raise InstanceError(
                f"exit {kept.exit} has no head '{kept.config}' (attached: {sorted(bank.keys()) or 'none'}); "
                "load the multi-exit weights the instance was searched on"
            )
        if instance.mode == "input-dependent" and kept.th_img is None:
            raise InstanceError(f"exit {kept.exit}: an input-dependent instance needs th_img for every kept exit")


def compact_live(live: Sequence[Any], keep: torch.Tensor, batch_slots: Sequence[str]) -> tuple[Any, ...]:
    """The live values crossing a cut, restricted to the samples ``keep`` (1-D indices). ``batch_slots[i]`` says how
    slot i depends on the batch: "tensor" (dim 0 is the batch), "shape" (a shape whose element 0 is the batch size),
    "size" (the batch size itself, e.g. from ``b, c, h, w = x.shape``) or "fixed" (unchanged)."""
    out = []
    for value, how in zip(live, batch_slots):
        if how == "tensor":
            value = value.index_select(0, keep)
        elif how == "shape":
            value = type(value)((int(keep.numel()), *value[1:]))
        elif how == "size":
            value = int(keep.numel())
        out.append(value)
    return tuple(out)


def probe_live(net: MultiExitNet, upto: int, size: Sequence[int] | None = None) -> tuple[list[list[str]], list[tuple]]:
    """For the live values after each of stages 1..``upto``: how each depends on the batch ("tensor", "shape", "size"
    or "fixed", see :func:`compact_live`), found by running the stages at batch sizes 1 and 2 (shape metadata cannot
    be told apart from spatial sizes by looking at one run), and the values of the batch-1 run. ``size`` is the
    input's (H, W), the example's by default."""
    c, h, w = net.example_shape
    if size is not None:
        h, w = size
    device, dtype = net._placement()
    runs = []
    with torch.no_grad():
        for b in (1, 2):
            x = torch.zeros(b, c, h, w, device=device, dtype=dtype)
            runs.append([step.live for step in net.walk(x, stop=upto)])
    slots = []
    for index, (one, two) in enumerate(zip(*runs), start=1):
        kinds = []
        for pos, (a, b) in enumerate(zip(one, two)):
            if torch.is_tensor(a):
                if a.dim() > 0 and a.shape[0] == 1 and b.shape[0] == 2 and a.shape[1:] == b.shape[1:]:
                    kinds.append("tensor")
                elif a.shape == b.shape:
                    kinds.append("fixed")
                else:
                    raise MessError(
                        f"stage {index} hands on value {pos} whose shape {tuple(a.shape)} -> "
                        f"{tuple(b.shape)} changes with the batch size other than along dim 0; "
                        "per-sample early exit cannot compact it"
                    )
            elif isinstance(a, (tuple, list)) and a != b:
                if len(a) == len(b) and len(a) > 0 and a[0] == 1 and b[0] == 2 and tuple(a[1:]) == tuple(b[1:]):
                    kinds.append("shape")
                else:
                    raise MessError(
                        f"stage {index} hands on metadata {a!r} that changes with the batch size in a way "
                        "per-sample early exit cannot follow"
                    )
            elif isinstance(a, int) and not isinstance(a, bool) and (a, b) == (1, 2):
                kinds.append("size")
            elif a != b:
                raise MessError(
                    f"stage {index} hands on the value {a!r} that changes with the batch size (batch 2: "
                    f"{b!r}); per-sample early exit cannot compact it"
                )
            else:
                kinds.append("fixed")
        slots.append(kinds)
    return slots, runs[0]


class DeployedNet(StagedModule):
    """What every deployed mode shares: the stages it runs, the kept heads, the instance it came from."""

    def __init__(self, net: MultiExitNet, instance: Instance, num_stages: int):
        super().__init__()
        self.instance = instance
        self.stages = nn.ModuleList(net.stages[:num_stages])
        self.heads = nn.ModuleDict({str(e.exit): net.head(e.exit, e.config) for e in instance.exits})
        self.exits = tuple(e.exit for e in instance.exits)
        self.feature_slots = tuple(net.feature_slots)
        self.output_key = net.output_key
        self.num_classes = net.num_classes
        self.num_exits = net.num_exits  # of the network: the final exit's number

    def head_logits(self, step: StageStep, size: Sequence[int]) -> torch.Tensor:
        """The logits of the kept head at the early exit ``step`` reached."""
        head: ExitHead = self.heads[str(step.index)]
        return head(step.features, size)


class BudgetedNet(DeployedNet):
    """A static submodel: the stages up to the kept exit and its head (none kept: the whole backbone)."""

    def __init__(self, net: MultiExitNet, instance: Instance):
        self.exit = instance.exits[0].exit if instance.exits else None
        super().__init__(net, instance, self.exit if self.exit is not None else net.num_exits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self.walk_to(x)
        if self.exit is None:
            return step.logits
        return self.head_logits(step, x.shape[-2:])


class AnytimeNet(DeployedNet):
    """Every kept exit in sequence, then the final one; :meth:`stream` hands each output over as soon as it exists."""

    def __init__(self, net: MultiExitNet, instance: Instance):
        super().__init__(net, instance, net.num_exits)

    def stream(self, x: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
        """Yields ``(exit, logits)`` after each kept exit and the final one; stop iterating to stop computing."""
        size = x.shape[-2:]
        for step in self.walk(x):
            if step.final:
                yield step.index, step.logits
            elif step.index in self.exits:
                yield step.index, self.head_logits(step, size)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [logits for _, logits in self.stream(x)]


class EarlyExitNet(DeployedNet):
    """Per-sample early exit for any batch size (see the module docstring)."""

    def __init__(self, net: MultiExitNet, instance: Instance):
        super().__init__(net, instance, net.num_exits)
        self.policy: ConfidencePolicy = instance.policy
        self.th_img = tuple(float(e.th_img) for e in instance.exits)
        slots = probe_live(net, max(self.exits))[0] if self.exits else []
        self.batch_slots = {exit: slots[exit - 1] for exit in self.exits}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, taken, _ = self._run(x, record=False)
        return out, taken

    def forward_with_confidence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` plus ``(B, kept exits)`` float32: each sample's image confidence at every kept exit it
        reached (the figure its rule compared with ``th_img``), NaN at the exits after the one it left at. The same
        work as :meth:`forward`: the confidences are the ones the rule computed anyway."""
        out, taken, confidence = self._run(x, record=True)
        assert confidence is not None
        return out, taken, confidence

    def _run(self, x: torch.Tensor, *, record: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        size = x.shape[-2:]
        batch = x.shape[0]
        taken = torch.full((batch,), self.num_exits, dtype=torch.long, device=x.device)
        confidence = torch.full((batch, len(self.exits)), float("nan"), device=x.device) if record else None
        running = torch.arange(batch, device=x.device)  # input positions of the samples still running
        out: torch.Tensor | None = None
        live: Any = (x,)
        done = 0
        for k, (exit, th_img) in enumerate(zip(self.exits, self.th_img)):
            step = self.walk_to(live=live, start=done + 1, stop=exit)
            live, done = step.live, exit
            logits = self.head_logits(step, size)
            if out is None:
                out = logits.new_empty((batch, *logits.shape[1:]))
            c_img = self.policy.image_confidence(logits)
            if confidence is not None:
                confidence[running, k] = c_img.float()
            leave = c_img >= th_img  # the policy's rule (ConfidencePolicy.exits), its confidence kept
            n_leave = int(leave.sum())  # the one host sync per exit: it decides how much work follows
            if n_leave:
                where = running[leave]
                out[where] = logits[leave]
                taken[where] = exit
            if n_leave == running.numel():
                return out, taken, confidence
            if n_leave:
                stay = (~leave).nonzero().squeeze(1)
                running = running[stay]
                live = compact_live(live, stay, self.batch_slots[exit])
        final = self.walk_to(live=live, start=done + 1).logits
        if out is None:
            return final, taken, confidence
        out[running] = final
        return out, taken, confidence


_BUILDERS = {"budgeted": BudgetedNet, "anytime": AnytimeNet, "input-dependent": EarlyExitNet}


def deploy(net: MultiExitNet, instance: Instance, *, source: Mapping[str, Any] | None = None) -> DeployedNet:
    """The module that runs ``instance`` on ``net`` and nothing else (see the module docstring). Refuses, naming
    what differs, an instance that does not fit the network. The result is in eval mode."""
    check_instance(net, instance, source=source)
    return _BUILDERS[instance.mode](net, instance).eval()
