"""Segmentation accuracy: confusion matrices, per-class IoU and mIoU for a model or every exit of a multi-exit net.

The confusion matrix is counted with ``torch.bincount`` on the model's device; ignored pixels never enter it. A class
absent from both the labels and the predictions has no IoU (NaN) and is left out of the mean, as in the usual
Cityscapes/CamVid protocol. Under ``torch.distributed`` every process evaluates its own shard of the data and the
counts are summed with an all-reduce, so every process reports the same figures, equal to a single-process run.

Example:
    >>> import torch
    >>> cm = ConfusionMatrix(3, ignore_index=255)
    >>> cm.update(torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 1, 2, 255]]))
    >>> [round(v, 3) for v in cm.iou().tolist()]
    [1.0, 0.5, 0.0]
    >>> round(cm.miou(), 4)
    0.5
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn

from ..conversion.profiling import evaluating
from .policy import predicted_labels

__all__ = ["ConfusionMatrix", "evaluate_model", "evaluate_exits", "model_logits"]


class ConfusionMatrix:
    """Counts ``matrix[label, prediction]`` over every pixel whose label is not ``ignore_index``."""

    def __init__(self, num_classes: int, *, ignore_index: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predicted class maps and label maps of the same shape."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and label {tuple(target.shape)} differ in shape")
        valid = target != self.ignore_index
        label = target[valid].to(self.matrix.device, torch.int64)
        pred = prediction[valid].to(self.matrix.device, torch.int64)
        if label.numel() and (label.min() < 0 or label.max() >= self.num_classes):
            bad = sorted(set(label[(label < 0) | (label >= self.num_classes)].unique().tolist()))
            raise ValueError(
                f"labels {bad} lie outside 0..{self.num_classes - 1} and are not the ignore index {self.ignore_index}"
            )
        self.matrix += torch.bincount(label * self.num_classes + pred, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def all_reduce(self) -> "ConfusionMatrix":
        """Sum the counts of every process (no-op without an initialised process group)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)
        return self

    def iou(self) -> torch.Tensor:
        """Per-class IoU as float64; NaN for classes absent from both labels and predictions."""
        m = self.matrix.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))

    def miou(self) -> float:
        iou = self.iou()
        present = ~iou.isnan()
        return float(iou[present].mean()) if present.any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(self.matrix.diag().sum()) / total if total else float("nan")

    def summary(self, class_names: Iterable[str] | None = None) -> dict[str, Any]:
        """mIoU, pixel accuracy and per-class IoU (None where undefined) as JSON-ready data."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        return {
            "miou": self.miou(),
            "pixel_accuracy": self.pixel_accuracy(),
            "iou": {n: (None if v != v else v) for n, v in zip(names, self.iou().tolist())},
        }


def model_logits(output: Any, output_key: str | int | None = None) -> torch.Tensor:
    """The logits in a model's output: the tensor itself, ``output[output_key]``, or ``output["out"]``."""
    if isinstance(output, torch.Tensor):
        return output
    if output_key is not None:
        return output[output_key]
    if isinstance(output, Mapping) and "out" in output:
        return output["out"]
    raise ValueError(f"cannot find logits in a model output of type {type(output).__name__}; pass output_key=")


def _batches(loader: Iterable, device: torch.device) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def evaluate_model(
    model: nn.Module,
    loader: Iterable,
    *,
    num_classes: int,
    ignore_index: int,
    device: torch.device | str = "cpu",
    output_key: str | int | None = None,
) -> ConfusionMatrix:
    """The confusion matrix of a plain segmentation model over ``loader`` (all processes' shards summed)."""
    device = torch.device(device)
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)
    with evaluating(model):
        for images, labels in _batches(loader, device):
            cm.update(predicted_labels(model_logits(model(images), output_key)), labels)
    return cm.all_reduce()


def evaluate_exits(
    net: nn.Module,
    loader: Iterable,
    *,
    ignore_index: int,
    device: torch.device | str = "cpu",
    heads: Mapping[int, Iterable[str]] | None = None,
) -> tuple[dict[int, dict[str, ConfusionMatrix]], ConfusionMatrix]:
    """Confusion matrices of every attached head (or the configurations ``heads`` names per exit) at every early exit
    of a :class:`~mess_core.MultiExitNet`, and of its final exit, from one backbone pass per batch."""
    device = torch.device(device)
    num_classes = net.num_classes

    def new() -> ConfusionMatrix:
        return ConfusionMatrix(num_classes, ignore_index=ignore_index, device=device)

    chosen = {i: list(heads.get(i, ()) if heads is not None else net.heads[str(i)]) for i in range(1, net.num_exits)}
    matrices = {i: {spec: new() for spec in specs} for i, specs in chosen.items()}
    final = new()
    with evaluating(net):
        for images, labels in _batches(loader, device):
            features, final_logits = net.forward_features(images)
            for i, feat in enumerate(features, start=1):
                for spec in chosen[i]:
                    logits = net.heads[str(i)][spec](feat, images.shape[-2:])
                    matrices[i][spec].update(predicted_labels(logits), labels)
            final.update(predicted_labels(final_logits), labels)
    for by_spec in matrices.values():
        for cm in by_spec.values():
            cm.all_reduce()
    return matrices, final.all_reduce()
