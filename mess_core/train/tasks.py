"""What each training stage optimises: the module it runs, its loss, its metrics and what it exports.

* :class:`BackboneTask`: a plain segmentation model trained with cross-entropy.
* :class:`PretrainTask` (MESS stage 1, exit-aware pre-training): a light exit at every candidate point; on optimiser
  step j the loss is ``sum_i [j mod i == 0] CE(exit_i) + CE(final)`` (exit 1 the shallowest), so shallow exits,
  which need the most help, weigh in most often. Heads that sit out a step are not even run.
* :class:`ExitsTask` (MESS stage 2): the backbone is frozen (no gradients, BatchNorm in eval mode); one backbone pass
  per batch feeds every head of the exit space at every exit (features detached) and the final exit's logits are
  the teacher for :class:`~mess_core.train.losses.ExitLoss`.

Losses are per-pixel sums divided by the number of valid pixels in the global batch (see :mod:`mess_core.train.losses`).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import nn

from ..conversion.network import MultiExitNet
from ..evaluate.evaluation import ConfusionMatrix, evaluate_exits, evaluate_model, model_logits
from ..seeding import seeded_torch
from .halving import dominated, head_seed
from .losses import ExitLoss, ce_map, reduce_pixels

__all__ = ["BackboneTask", "PretrainTask", "ExitsTask", "exits_due"]


def exits_due(step: int, num_early_exits: int, schedule: str = "modulo") -> tuple[int, ...]:
    """The early exits whose loss counts on optimiser step ``step`` (1-based).

    >>> exits_due(1, 5), exits_due(6, 5), exits_due(7, 5)
    ((1,), (1, 2, 3), (1,))
    """
    if schedule == "every":
        return tuple(range(1, num_early_exits + 1))
    return tuple(i for i in range(1, num_early_exits + 1) if step % i == 0)


class _Logits(nn.Module):
    """A segmentation model whose forward returns just its logits (DDP wraps this)."""

    def __init__(self, model: nn.Module, output_key: str | int | None = None):
        super().__init__()
        self.model, self.output_key = model, output_key

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return model_logits(self.model(images), self.output_key)


class _ExitAware(nn.Module):
    """Runs a multi-exit net through the given early exits' heads (others skipped) and its final exit."""

    def __init__(self, net: MultiExitNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor, exits: tuple[int, ...]) -> dict[int, torch.Tensor]:
        net, size = self.net, images.shape[-2:]
        outputs = {}
        for step in net.walk(images):
            if step.final:
                outputs[step.index] = step.logits
            elif step.index in exits:
                outputs[step.index] = net.head(step.index)(step.features, size)
        return outputs


class _ExitBank(nn.Module):
    """One frozen backbone pass, then every head still training on the detached features, each head drawing its
    dropout from its own random stream (so a head learns the same whichever other heads train beside it)."""

    def __init__(self, net: MultiExitNet, *, seed: int = 0):
        super().__init__()
        self.net = net
        self.seed = seed
        self.training_heads: set[tuple[int, str]] = {
            (i, spec) for i in range(1, net.num_exits) for spec in net.heads[str(i)]
        }

    def forward(self, images: torch.Tensor, step: int = 0) -> tuple[dict[tuple[int, str], torch.Tensor], torch.Tensor]:
        with torch.no_grad():
            features, final = self.net.forward_features(images)
        size = images.shape[-2:]
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        outputs = {}
        for index, feat in enumerate(features, start=1):
            feat = feat.detach()
            for spec, head in self.net.heads[str(index)].items():
                if (index, spec) not in self.training_heads:
                    continue
                with seeded_torch(head_seed(self.seed, step, index, spec, rank), images.device):
                    outputs[(index, spec)] = head(feat, size)
        return outputs, final.detach()


class _Task:
    stage: str
    module: nn.Module

    def __init__(self, *, ignore_index: int, class_names: Iterable[str], class_weights: torch.Tensor | None = None):
        self.ignore_index = ignore_index
        self.class_names = list(class_names)
        self.class_weights = class_weights  # (K,) per-class loss weights (class balancing), or None

    def forward_kwargs(self, step: int) -> dict[str, Any]:
        return {}

    def _ce(self, logits: torch.Tensor, labels: torch.Tensor, num_valid: float) -> torch.Tensor:
        return reduce_pixels(
            ce_map(logits, labels, ignore_index=self.ignore_index, class_weights=self.class_weights), num_valid
        )

    def row_extras(self) -> dict[str, Any]:
        """Figures of the task itself for the epoch's metrics row."""
        return {}

    def after_evaluation(self, epoch: int, log: Any = print) -> dict[str, Any]:
        """Called after every evaluation, before the checkpoint is written; returns what to add to the evaluation's
        detail (``eval.json``)."""
        return {}

    def state(self) -> dict[str, Any]:
        """What the task itself must carry across a resume (saved in the checkpoint)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back :meth:`state` from a checkpoint."""

    def set_train_mode(self) -> None:
        self.module.train()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def _summary(self, cm: ConfusionMatrix) -> dict[str, Any]:
        return cm.summary(self.class_names)


class BackboneTask(_Task):
    stage = "backbone"
    find_unused_parameters = False

    def __init__(self, model: nn.Module, *, output_key: str | int | None = None, **kw: Any):
        super().__init__(**kw)
        self.model, self.output_key = model, output_key
        self.module = _Logits(model, output_key)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, step: int, num_valid: float):
        loss = self._ce(outputs, labels, num_valid)
        return loss, {"ce": loss.detach()}

    def evaluate(self, loader: Iterable, device: torch.device) -> tuple[dict[str, float], dict[str, Any]]:
        num_classes = len(self.class_names)
        cm = evaluate_model(
            self.model,
            loader,
            num_classes=num_classes,
            ignore_index=self.ignore_index,
            device=device,
            output_key=self.output_key,
        )
        return {"miou_final": cm.miou()}, {"final": self._summary(cm)}


class PretrainTask(_Task):
    stage = "pretrain"
    find_unused_parameters = True  # heads that sit out a step produce no gradient

    def __init__(self, net: MultiExitNet, model: nn.Module, *, schedule: str = "modulo", **kw: Any):
        super().__init__(**kw)
        self.net, self.model, self.schedule = net, model, schedule
        self.module = _ExitAware(net)

    def forward_kwargs(self, step: int) -> dict[str, Any]:
        return {"exits": exits_due(step, self.net.num_exits - 1, self.schedule)}

    def loss(self, outputs: dict[int, torch.Tensor], labels: torch.Tensor, step: int, num_valid: float):
        parts = {f"ce_exit{i}": self._ce(logits, labels, num_valid) for i, logits in outputs.items()}
        loss = sum(parts.values())
        return loss, {k: v.detach() for k, v in parts.items()}

    def evaluate(self, loader: Iterable, device: torch.device) -> tuple[dict[str, float], dict[str, Any]]:
        heads, final = evaluate_exits(self.net, loader, ignore_index=self.ignore_index, device=device)
        flat = {f"miou_exit{i}": next(iter(by_spec.values())).miou() for i, by_spec in heads.items()}
        flat["miou_final"] = final.miou()
        detail = {f"exit{i}": self._summary(next(iter(s.values()))) for i, s in heads.items()}
        detail["final"] = self._summary(final)
        return flat, detail


class ExitsTask(_Task):
    """MESS stage 2. With ``prune_at``/``prune_margin`` (epochs, mIoU points) it trains by successive halving: after
    each of those epochs the heads another head or the final exit beats by the margin at no more path cost stop
    training (see :mod:`mess_core.train.halving`); a stopped head's evaluation is kept, since its weights no longer
    change."""

    stage = "exits"

    def __init__(
        self,
        net: MultiExitNet,
        *,
        exit_loss: ExitLoss,
        seed: int = 0,
        prune_at: Iterable[int] = (),
        prune_margin: Iterable[float] = (),
        **kw: Any,
    ):
        super().__init__(**kw)
        self.net, self.exit_loss = net, exit_loss
        for p in net.stages.parameters():
            p.requires_grad_(False)
        self.module = _ExitBank(net, seed=seed)
        self.rungs = dict(zip(prune_at, prune_margin))
        # under DDP, heads that stopped produce no gradient
        self.find_unused_parameters = bool(self.rungs)
        self.heads_per_exit = {i: len(net.heads[str(i)]) for i in range(1, net.num_exits)}
        self.stopped: dict[str, int] = {}  # "exit:config" -> the last epoch it trained
        self.frozen: dict[str, dict[str, Any]] = {}  # "exit:config" -> its evaluation when it stopped
        self.halving: list[dict[str, Any]] = []  # what each rung saw and decided
        self._last: dict[tuple[int, str], dict[str, Any]] = {}
        self._final = float("nan")

    @staticmethod
    def _key(index: int, spec: str) -> str:
        return f"{index}:{spec}"

    def forward_kwargs(self, step: int) -> dict[str, Any]:
        return {"step": step}

    def set_train_mode(self) -> None:
        self.net.heads.train()
        self.net.stages.eval()  # frozen: BatchNorm statistics must not move

    def row_extras(self) -> dict[str, Any]:
        return {"heads_training": len(self.module.training_heads)}

    def loss(self, outputs, labels: torch.Tensor, step: int, num_valid: float):
        heads, teacher = outputs
        targets = self.exit_loss.targets(
            teacher, labels, ignore_index=self.ignore_index, class_weights=self.class_weights
        )
        per_exit: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}
        total = torch.zeros((), device=labels.device)
        for (index, _spec), logits in heads.items():
            value = self.exit_loss.sum(logits, targets) / max(num_valid, 1.0)
            total = total + value
            per_exit[index] = per_exit.get(index, 0) + value.detach()
            counts[index] = counts.get(index, 0) + 1
        # report each exit's mean over its heads, so figures do not scale with the size of the exit space
        parts = {f"{self.exit_loss.kind}_exit{i}": v / counts[i] for i, v in per_exit.items()}
        return total, parts

    def evaluate(self, loader: Iterable, device: torch.device) -> tuple[dict[str, float], dict[str, Any]]:
        training = {
            i: [s for s in self.net.heads[str(i)] if (i, s) in self.module.training_heads]
            for i in range(1, self.net.num_exits)
        }
        heads, final = evaluate_exits(self.net, loader, ignore_index=self.ignore_index, device=device, heads=training)
        flat: dict[str, float] = {}
        detail: dict[str, Any] = {"final": self._summary(final), "exits": {}}
        self._last = {}
        for i in range(1, self.net.num_exits):
            summaries = {}
            for spec in self.net.heads[str(i)]:
                if spec in heads[i]:
                    summaries[spec] = self._last[(i, spec)] = self._summary(heads[i][spec])
                else:
                    summaries[spec] = self.frozen[self._key(i, spec)]
            best = max(summaries, key=lambda s: summaries[s]["miou"])
            flat[f"miou_exit{i}_best"] = summaries[best]["miou"]
            detail["exits"][str(i)] = summaries
        flat["miou_final"] = final.miou()
        self._final = detail["final"]["miou"]
        return flat, detail

    def after_evaluation(self, epoch: int, log: Any = print) -> dict[str, Any]:
        """At a rung of the successive halving, stop the heads that can no longer reach the front; returns the
        halving record so far for ``eval.json``."""
        if epoch not in self.rungs or not self._last:
            return {"stopped": dict(self.stopped), "halving": list(self.halving)}
        margin = self.rungs[epoch] / 100
        input_size = self.net.example_shape[1:]
        stages = self.net.stage_flops(input_size)
        reach = [sum(stages[:i]) for i in range(1, self.net.num_exits)]
        cost = {h: reach[h[0] - 1] + self.net.head_flops(h[0], h[1], input_size) for h in self._last}
        miou = {h: s["miou"] for h, s in self._last.items()}
        stop = dominated(cost, miou, final=(sum(stages), self._final), margin=margin)
        for h in sorted(stop):
            self.module.training_heads.discard(h)
            self.stopped[self._key(*h)] = epoch
            self.frozen[self._key(*h)] = self._last[h]
        self.halving.append(
            {
                "epoch": epoch,
                "margin_pp": self.rungs[epoch],
                "final_miou": self._final,
                "final_gflops": sum(stages) / 1e9,
                "heads": [
                    {"exit": h[0], "config": h[1], "gflops": cost[h] / 1e9, "miou": miou[h], "stopped": h in stop}
                    for h in sorted(self._last)
                ],
            }
        )
        log(
            f"successive halving after epoch {epoch} (margin {self.rungs[epoch]} mIoU points): {len(stop)} of "
            f"{len(self._last)} heads stop, {len(self.module.training_heads)} go on"
        )
        return {"stopped": dict(self.stopped), "halving": list(self.halving)}

    def state(self) -> dict[str, Any]:
        return {
            "training": sorted(self._key(*h) for h in self.module.training_heads),
            "stopped": self.stopped,
            "frozen": self.frozen,
            "halving": self.halving,
        }

    def restore(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.module.training_heads = {(int(k.split(":", 1)[0]), k.split(":", 1)[1]) for k in state["training"]}
        self.stopped, self.frozen, self.halving = dict(state["stopped"]), dict(state["frozen"]), list(state["halving"])
