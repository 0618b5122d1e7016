"""What each training stage optimises: the module it runs, its loss, its metrics and what it exports.

* :class:`BackboneTask`: a plain segmentation model trained with cross-entropy.
* :class:`PretrainTask` (MESS stage 1, exit-aware pre-training): a light exit at every candidate point; on optimiser
  step j the loss is ``sum_i [j mod i == 0] CE(exit_i) + CE(final)`` (exit 1 the shallowest), so shallow exits,
  which need the most help, weigh in most often. Heads that sit out a step are not even run.
* :class:`ExitsTask` (MESS stage 2): the backbone is frozen (no gradients, BatchNorm in eval mode); one backbone pass
  per batch feeds every head of the exit space at every exit (features detached) and the final exit's logits are
  the teacher for :class:`~mess_core.losses.ExitLoss`.

Losses are per-pixel sums divided by the number of valid pixels in the global batch (see :mod:`mess_core.losses`).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from ..evaluation import ConfusionMatrix, evaluate_exits, evaluate_model, model_logits
from ..losses import ExitLoss, ce_map, reduce_pixels
from ..network import MultiExitNet

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

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return model_logits(self.model(images))


class _ExitAware(nn.Module):
    """Runs a multi-exit net through the given early exits' heads (others skipped) and its final exit."""

    def __init__(self, net: MultiExitNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor, exits: tuple[int, ...]) -> dict[int, torch.Tensor]:
        net, size, live = self.net, images.shape[-2:], (images,)
        outputs = {}
        for index in range(1, net.num_exits):
            live = net.run_stage(index, live)
            if index in exits:
                outputs[index] = net.head(index)(net.exit_features(index, live), size)
        outputs[net.num_exits] = net.final_logits(net.run_stage(net.num_exits, live))
        return outputs


class _ExitBank(nn.Module):
    """One frozen backbone pass, then every attached head on the detached features."""

    def __init__(self, net: MultiExitNet):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> tuple[dict[tuple[int, str], torch.Tensor], torch.Tensor]:
        with torch.no_grad():
            features, final = self.net.forward_features(images)
        size = images.shape[-2:]
        outputs = {
            (index, spec): head(feat.detach(), size)
            for index, feat in enumerate(features, start=1)
            for spec, head in self.net.heads[str(index)].items()
        }
        return outputs, final.detach()


class _Task:
    stage: str
    module: nn.Module

    def __init__(self, *, ignore_index: int, class_names: Iterable[str]):
        self.ignore_index = ignore_index
        self.class_names = list(class_names)

    def forward_kwargs(self, step: int) -> dict[str, Any]:
        return {}

    def set_train_mode(self) -> None:
        self.module.train()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def _summary(self, cm: ConfusionMatrix) -> dict[str, Any]:
        return cm.summary(self.class_names)


class BackboneTask(_Task):
    stage = "backbone"
    find_unused_parameters = False

    def __init__(self, model: nn.Module, **kw: Any):
        super().__init__(**kw)
        self.model = model
        self.module = _Logits(model)

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor, step: int, num_valid: float):
        loss = reduce_pixels(ce_map(outputs, labels, ignore_index=self.ignore_index), num_valid)
        return loss, {"ce": loss.detach()}

    def evaluate(self, loader: Iterable, device: torch.device) -> tuple[dict[str, float], dict[str, Any]]:
        num_classes = len(self.class_names)
        cm = evaluate_model(self.model, loader, num_classes=num_classes, ignore_index=self.ignore_index, device=device)
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
        parts = {
            f"ce_exit{i}": reduce_pixels(ce_map(logits, labels, ignore_index=self.ignore_index), num_valid)
            for i, logits in outputs.items()
        }
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
    stage = "exits"
    find_unused_parameters = False

    def __init__(self, net: MultiExitNet, *, exit_loss: ExitLoss, **kw: Any):
        super().__init__(**kw)
        self.net, self.exit_loss = net, exit_loss
        for p in net.stages.parameters():
            p.requires_grad_(False)
        self.module = _ExitBank(net)
        self.heads_per_exit = {i: len(net.heads[str(i)]) for i in range(1, net.num_exits)}

    def set_train_mode(self) -> None:
        self.net.heads.train()
        self.net.stages.eval()  # frozen: BatchNorm statistics must not move

    def loss(self, outputs, labels: torch.Tensor, step: int, num_valid: float):
        heads, teacher = outputs
        targets = self.exit_loss.targets(teacher, labels, ignore_index=self.ignore_index)
        per_exit: dict[int, torch.Tensor] = {}
        total = torch.zeros((), device=labels.device)
        for (index, _spec), logits in heads.items():
            value = self.exit_loss.sum(logits, targets) / max(num_valid, 1.0)
            total = total + value
            per_exit[index] = per_exit.get(index, 0) + value.detach()
        # report each exit's mean over its heads, so figures do not scale with the size of the exit space
        parts = {f"{self.exit_loss.kind}_exit{i}": v / self.heads_per_exit[i] for i, v in per_exit.items()}
        return total, parts

    def evaluate(self, loader: Iterable, device: torch.device) -> tuple[dict[str, float], dict[str, Any]]:
        heads, final = evaluate_exits(self.net, loader, ignore_index=self.ignore_index, device=device)
        flat: dict[str, float] = {}
        detail: dict[str, Any] = {"final": self._summary(final), "exits": {}}
        for i, by_spec in heads.items():
            scores = {spec: cm.miou() for spec, cm in by_spec.items()}
            best = max(scores, key=lambda s: scores[s])
            flat[f"miou_exit{i}_best"] = scores[best]
            detail["exits"][str(i)] = {spec: self._summary(cm) for spec, cm in by_spec.items()}
        flat["miou_final"] = final.miou()
        return flat, detail
