"""Building an evaluation cache: the one torch pass of a trained multi-exit network over a data split that fills
every array of :class:`~mess_core.evaluate.cache.EvaluationCache` (counts per image and head, at every threshold of
the grid), then its costs in GFLOPs and, when asked, in milliseconds measured on the device (:func:`measure_latency`,
which the deployment benchmark uses too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from ..conversion.exits import ExitSpec
from ..conversion.profiling import evaluating, time_call
from .cache import CACHE_FORMAT, TH_PIX_GRID, CacheError, EvaluationCache, head_row
from .policy import (
    ConfidencePolicy,
    EdgeMasking,
    edge_masked_confidence,
    pixel_confidence,
    pixels_at_least,
    predicted_labels,
)

__all__ = ["build_cache", "count_heads", "HeadCounts", "measure_latency", "measure_decisions"]


def measure_latency(
    net: Any, specs: Sequence[ExitSpec | str], input_size: tuple[int, int], device: torch.device, repeats: int
) -> tuple[np.ndarray, np.ndarray]:
    """Median milliseconds of every stage and every head the network carries (0 for an absent head) for one image
    on ``device``."""
    x = torch.randn(1, 3, *input_size, device=device)
    stage_ms = []
    head_ms = np.zeros((net.num_exits - 1, len(specs)))
    inputs: Any = (x,)  # what the stage the walk just ran took, to time that stage again on its own
    for step in net.walk(x):
        stage_ms.append(1e3 * time_call(lambda: net.run_stage(step.index, inputs), repeats=repeats))
        inputs = step.live
        if not step.final:
            for c, spec in enumerate(specs):
                if ExitSpec.coerce(spec).id not in net.heads[str(step.index)]:
                    continue
                head = net.head(step.index, spec)
                head_ms[step.index - 1, c] = 1e3 * time_call(lambda: head(step.features, input_size), repeats=repeats)
    return np.asarray(stage_ms), head_ms


def measure_decisions(
    net: Any, input_size: tuple[int, int], edges: EdgeMasking, device: torch.device, repeats: int
) -> dict[str, float]:
    """Median milliseconds of each policy's decision at one exit for one image of ``input_size`` on ``device``
    (timed on the network's final logits, which have every exit's shape): the c_img an input-dependent instance
    computes at every kept exit an image reaches."""
    rules = {
        "mess": ConfidencePolicy(edges=edges),
        "plain": ConfidencePolicy(edges=None),
        "naive": ConfidencePolicy(naive=True),
    }
    with evaluating(net), torch.inference_mode():
        logits = net.walk_to(torch.randn(1, 3, *input_size, device=device)).logits
        return {
            name: 1e3 * time_call(lambda r=rule: r.image_confidence(logits), repeats=repeats)
            for name, rule in rules.items()
        }


def _exit_space(net: Any) -> tuple[list[str], dict[str, list[str]]]:
    """The configurations any early exit carries (in the order the exits list them), and per exit those it lacks."""
    spaces = {i: list(net.heads[str(i)].keys()) for i in range(1, net.num_exits)}
    specs = list(dict.fromkeys(c for ids in spaces.values() for c in ids))
    if not specs:
        raise CacheError("the network has no exit heads attached; load a stage-2 multi_exit.pt")
    absent = {str(i): [c for c in specs if c not in ids] for i, ids in spaces.items()}
    return specs, {i: missing for i, missing in absent.items() if missing}


def _image_name(dataset: Any, i: int) -> str:
    return dataset.name_of(i) if hasattr(dataset, "name_of") else str(i)


def _load_batch(
    dataset: Any, idx: list[int], size: tuple[int, int] | None, device: torch.device, k: int, ignore: int
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """Images and labels of dataset items ``idx`` on ``device``, and the input size every image must share (the
    first batch's, unless ``size`` is already known)."""
    pairs = [dataset[i] for i in idx]
    shapes = {tuple(img.shape[-2:]) for img, _ in pairs}
    size = size or next(iter(shapes))
    if shapes != {size}:
        bad = next(_image_name(dataset, i) for i, (img, _) in zip(idx, pairs) if tuple(img.shape[-2:]) != size)
        raise CacheError(
            f"image '{bad}' is {sorted(shapes - {size})[0]} pixels but the cache is {size}: costs "
            "are per input size, so resize every image to one size (--size HxW)"
        )
    images = torch.stack([torch.as_tensor(img).as_subclass(torch.Tensor) for img, _ in pairs]).to(device)
    labels = torch.stack([torch.as_tensor(lab).as_subclass(torch.Tensor) for _, lab in pairs]).to(device).long()
    bad_labels = (labels != ignore) & ((labels < 0) | (labels >= k))
    if bool(bad_labels.any()):
        raise CacheError(
            f"labels {sorted(set(labels[bad_labels].unique().tolist()))} lie outside "
            f"0..{k - 1} and are not the ignore index {ignore}"
        )
    return images, labels, size


@dataclass
class _Statistics:
    """The per-image arrays of :class:`EvaluationCache` that :func:`count_heads` fills batch by batch."""

    tp: np.ndarray
    pred: np.ndarray
    label: np.ndarray
    above: np.ndarray
    above_plain: np.ndarray
    conf_sum: np.ndarray
    pixels: np.ndarray
    thresholds: torch.Tensor  # the th_pix grid, on the device the network runs on
    ignore: int
    edges: EdgeMasking

    @classmethod
    def zeros(
        cls,
        images: int,
        heads: int,
        k: int,
        grid: Sequence[float],
        device: torch.device,
        ignore: int,
        edges: EdgeMasking,
    ) -> "_Statistics":
        above = np.zeros((images, heads, len(grid)), np.int64)
        return cls(
            tp=np.zeros((images, heads, k), np.int64),
            pred=np.zeros((images, heads, k), np.int64),
            label=np.zeros((images, k), np.int64),
            above=above,
            above_plain=np.zeros_like(above),
            conf_sum=np.zeros((images, heads), np.float64),
            pixels=np.zeros(images, np.int64),
            thresholds=torch.tensor(grid, device=device),
            ignore=ignore,
            edges=edges,
        )

    @property
    def num_images(self) -> int:
        return self.tp.shape[0]

    @property
    def num_heads(self) -> int:
        return self.tp.shape[1]

    @property
    def num_classes(self) -> int:
        return self.tp.shape[2]

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("tp", "pred", "label", "above", "above_plain", "conf_sum", "pixels")
        return {name: getattr(self, name) for name in names}

    def count_labels(self, rows: slice, labels: torch.Tensor, size: tuple[int, int]) -> None:
        """The labelled pixels of each class and the pixel count of images ``rows``."""
        k, n = self.num_classes, labels.shape[0]
        valid = labels != self.ignore
        image = torch.arange(n, device=labels.device)[:, None, None].expand_as(labels)
        self.label[rows] = torch.bincount((image * k + labels)[valid], minlength=n * k).view(-1, k).cpu().numpy()
        self.pixels[rows] = size[0] * size[1]

    def record(self, h: int, rows: slice, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Head ``h``'s statistics on images ``rows`` from its ``logits``."""
        k, edges, thresholds = self.num_classes, self.edges, self.thresholds
        conf = pixel_confidence(logits)
        classes = predicted_labels(logits)
        masked = edge_masked_confidence(conf, classes, size=edges.size, window=edges.window)
        self.above[rows, h] = pixels_at_least(masked, thresholds).cpu().numpy()
        self.above_plain[rows, h] = pixels_at_least(conf, thresholds).cpu().numpy()
        self.conf_sum[rows, h] = conf.double().flatten(1).sum(1).cpu().numpy()
        n = classes.shape[0]
        valid = labels != self.ignore
        image = torch.arange(n, device=labels.device)[:, None, None].expand_as(labels)
        hit = valid & (classes == labels)
        self.tp[rows, h] = torch.bincount((image * k + labels)[hit], minlength=n * k).view(n, k).cpu().numpy()
        self.pred[rows, h] = torch.bincount((image * k + classes)[valid], minlength=n * k).view(n, k).cpu().numpy()


@dataclass
class _Seen:
    """What the pass learnt about the images besides their statistics."""

    size: tuple[int, int]  # the input size every image shares
    names: list[str]
    groups: list[str]  # each image's group (scene), where the dataset says


@dataclass
class HeadCounts:
    """What one pass of every head a network carries counted over the first images of a split: the per-image arrays
    of :class:`EvaluationCache`, with the configurations they are laid out by."""

    specs: list[str]  # the configurations any early exit carries, in the order the columns follow (see head_row)
    absent: dict[str, list[str]]  # exit -> the configurations it lacks (their columns stay zero)
    th_pix_grid: list[float]  # the thresholds ``above`` and ``above_plain`` count at, ascending
    arrays: dict[str, np.ndarray]  # tp, pred, label, above, above_plain, conf_sum, pixels (see EvaluationCache)
    size: tuple[int, int]  # the input size every image shares
    names: list[str]
    groups: list[str]  # each image's group (scene), where the dataset says; else empty

    @property
    def num_exits(self) -> int:
        return (self.arrays["tp"].shape[1] - 1) // len(self.specs) + 1

    def column(self, exit: int, spec: str) -> int:
        """Column of head ``spec`` at early exit ``exit`` (1..N-1), or the final exit's (``exit`` = N, any ``spec``)."""
        if not 1 <= exit <= self.num_exits:
            raise CacheError(f"exit {exit} is not an exit of these counts: exits are 1..{self.num_exits}")
        return head_row(exit, 0 if exit == self.num_exits else self.specs.index(spec), len(self.specs))


def count_heads(
    net: Any,
    dataset: Any,
    *,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    th_pix_grid: Sequence[float] = TH_PIX_GRID,
    edges: EdgeMasking = EdgeMasking(),
    limit: int | None = None,
    progress: Iterable | None = None,
) -> HeadCounts:
    """Run every head a trained :class:`~mess_core.MultiExitNet` carries over the first ``limit`` images of
    ``dataset`` (items (image, label) of one size) and count what :class:`EvaluationCache` holds per image: the
    torch pass of :func:`build_cache`, without the costs."""
    device = torch.device(device)
    specs, absent = _exit_space(net)
    grid = sorted(float(v) for v in th_pix_grid)
    count = _images_to_evaluate(net, dataset, limit)
    heads = head_row(net.num_exits, 0, len(specs)) + 1
    stats = _Statistics.zeros(count, heads, dataset.info.num_classes, grid, device, dataset.info.ignore_index, edges)
    with evaluating(net):
        seen = _evaluate_split(net, dataset, stats, specs, absent, batch_size, device, progress)
    return HeadCounts(
        specs=specs,
        absent=absent,
        th_pix_grid=grid,
        arrays=stats.arrays(),
        size=seen.size,
        names=seen.names,
        groups=seen.groups,
    )


def build_cache(
    net: Any,
    dataset: Any,
    *,
    model: str,
    dataset_name: str,
    split: str,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    th_pix_grid: Sequence[float] = TH_PIX_GRID,
    edges: EdgeMasking = EdgeMasking(),
    latency: bool = False,
    latency_repeats: int = 10,
    limit: int | None = None,
    progress: Iterable | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> EvaluationCache:
    """One pass of a trained :class:`~mess_core.MultiExitNet` over ``dataset`` (items (image, label) of one size)
    computing every statistic of :class:`EvaluationCache` (:func:`count_heads`), then the costs. An exit that lacks a
    configuration others carry gives a partial cache (``meta["absent_heads"]``)."""
    device = torch.device(device)
    counts = count_heads(
        net,
        dataset,
        batch_size=batch_size,
        device=device,
        th_pix_grid=th_pix_grid,
        edges=edges,
        limit=limit,
        progress=progress,
    )
    specs, absent, info = counts.specs, counts.absent, dataset.info
    costs = _costs(net, specs, counts.size, device, latency, latency_repeats, edges)
    decision_ms = costs.pop("decision_ms")
    meta = {
        "format": CACHE_FORMAT,
        "model": model,
        "dataset": dataset_name,
        "split": split,
        "input_size": list(counts.size),
        "num_classes": info.num_classes,
        "classes": list(info.classes),
        "ignore_index": info.ignore_index,
        "exits": [{"index": e.index, "module": e.module} for e in net.exits],
        "space": list(specs),
        "th_pix_grid": counts.th_pix_grid,
        "edge_masking": {"size": edges.size, "window": edges.window},
        "images": counts.names,
        **({"image_groups": counts.groups} if len(counts.groups) == len(counts.names) else {}),
        **({"absent_heads": absent} if absent else {}),
        "latency_device": _device_name(device) if latency else None,
        **({"decision_ms": decision_ms} if decision_ms is not None else {}),
        **(extra_meta or {}),
    }
    cache = EvaluationCache(meta=meta, **counts.arrays, **costs)
    cache.validate()
    return cache


def _images_to_evaluate(net: Any, dataset: Any, limit: int | None) -> int:
    """How many of the dataset's images the cache holds, once the dataset is known to suit the network."""
    k = dataset.info.num_classes
    if k != net.num_classes:
        raise CacheError(f"the dataset has {k} classes but the network predicts {net.num_classes}")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise CacheError("the split is empty: nothing to evaluate")
    return count


def _evaluate_split(
    net: Any,
    dataset: Any,
    stats: _Statistics,
    specs: list[str],
    absent: dict[str, list[str]],
    batch_size: int,
    device: torch.device,
    progress: Iterable | None,
) -> _Seen:
    """Run every head the network carries over the dataset's first ``stats.num_images`` images, batch by batch,
    recording their statistics in ``stats``."""
    count = stats.num_images
    size: tuple[int, int] | None = None
    names: list[str] = []
    groups: list[str] = []
    batches = range(0, count, batch_size)
    for start in progress(batches) if progress else batches:
        idx = list(range(start, min(start + batch_size, count)))
        images, labels, size = _load_batch(dataset, idx, size, device, stats.num_classes, stats.ignore)
        rows = slice(start, start + len(idx))
        names += [_image_name(dataset, i) for i in idx]
        groups += [str(dataset.group_of(i)) for i in idx] if hasattr(dataset, "group_of") else []
        stats.count_labels(rows, labels, size)
        features, final = net.forward_features(images)
        for i, feat in enumerate(features, start=1):
            for c, spec in enumerate(specs):
                if spec in absent.get(str(i), ()):
                    continue  # its rows stay zero; meta["absent_heads"] makes head_index refuse them
                stats.record(head_row(i, c, len(specs)), rows, net.head(i, spec)(feat, size), labels)
        stats.record(stats.num_heads - 1, rows, final, labels)
    assert size is not None
    return _Seen(size=size, names=names, groups=groups)


def _costs(
    net: Any,
    specs: list[str],
    size: tuple[int, int],
    device: torch.device,
    latency: bool,
    repeats: int,
    edges: EdgeMasking,
) -> dict[str, Any]:
    """Per-image cost of every stage and head in GFLOPs and, with ``latency``, in measured milliseconds, with the
    milliseconds of each policy's decision at an exit."""
    stage_gflops = np.asarray(net.stage_flops(size)) / 1e9
    head_gflops = np.array([[net.head_flops(i, s, size) / 1e9 for s in specs] for i in range(1, net.num_exits)])
    stage_ms = head_ms = decision_ms = None
    if latency:
        with evaluating(net):
            stage_ms, head_ms = measure_latency(net, [ExitSpec.parse(s) for s in specs], size, device, repeats)
        decision_ms = measure_decisions(net, size, edges, device, repeats)
    return {
        "stage_gflops": stage_gflops,
        "head_gflops": head_gflops,
        "stage_ms": stage_ms,
        "head_ms": head_ms,
        "decision_ms": decision_ms,
    }


def _device_name(device: torch.device) -> str:
    """Where latency was measured: the GPU's name, or the CPU and its thread count."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
