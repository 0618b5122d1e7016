"""One image through every exit, computed without Streamlit: each exit's prediction and its per-pixel and
edge-masked confidence maps, where the image leaves under given thresholds and what that saves (GFLOPs counted on the
path, time measured on the deployed instance), the colours and size they are drawn at, and what the explorer starts
from (the heads the study ships, its thresholds)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import cv2
import numpy as np
import torch

from mess_core.conversion.network import MultiExitNet
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance
from mess_core.evaluate.policy import (
    EdgeMasking,
    edge_masked_confidence,
    image_confidence,
    label_edges,
    pixel_confidence,
    predicted_labels,
    widen,
)


@torch.inference_mode()
def run_exits(net: MultiExitNet, x: torch.Tensor, configs: Mapping[int, str]) -> tuple[dict[int, torch.Tensor], float]:
    """One pass through the backbone computing, at every early exit, the head of configuration ``configs[exit]``
    (exits not in ``configs`` are skipped) and the final logits (key N). Returns the logits and the seconds taken."""
    start = time.perf_counter()
    size = x.shape[-2:]
    logits: dict[int, torch.Tensor] = {}
    for step in net.walk(x):
        if step.final:
            logits[step.index] = step.logits
        elif step.index in configs:
            logits[step.index] = net.head(step.index, configs[step.index])(step.features, size)
    return logits, time.perf_counter() - start


@dataclass
class ExitView:
    """Everything the explorer draws for one exit on one image."""

    exit: int
    config: str  # "final" for the last exit
    labels: np.ndarray  # (H, W) predicted class
    confidence: np.ndarray  # (H, W) maximum softmax probability
    edge_mask: np.ndarray  # (H, W) bool: widened edges of the prediction (M)
    masked_confidence: np.ndarray  # (H, W) confidence with edge pixels replaced by their local median
    c_img: float  # fraction of edge-masked pixel confidences >= th_pix
    c_img_plain: float  # the same without edge masking


def exit_views(
    logits: Mapping[int, torch.Tensor], configs: Mapping[int, str], *, th_pix: float, edges: EdgeMasking
) -> list[ExitView]:
    """The per-exit maps of one image (batch 1) at ``th_pix`` with edge masking ``edges``, shallowest first."""
    views = []
    final = max(logits)
    for index in sorted(logits):
        out = logits[index]
        conf = pixel_confidence(out)
        labels = predicted_labels(out)
        mask = widen(label_edges(labels), edges.size)
        masked = edge_masked_confidence(conf, labels, size=edges.size, window=edges.window)
        views.append(
            ExitView(
                exit=index,
                config="final" if index == final else configs[index],
                labels=labels[0].numpy(),
                confidence=conf[0].numpy(),
                edge_mask=mask[0].numpy(),
                masked_confidence=masked[0].numpy(),
                c_img=float(image_confidence(masked, th_pix)[0]),
                c_img_plain=float(image_confidence(conf, th_pix)[0]),
            )
        )
    return views


def exit_taken(views: Sequence[ExitView], th_img: Mapping[int, float]) -> int:
    """The exit this image leaves at: the shallowest exit in ``th_img`` whose c_img reaches its threshold, else the
    final exit."""
    for view in views[:-1]:
        if view.exit in th_img and view.c_img >= th_img[view.exit]:
            return view.exit
    return views[-1].exit


@dataclass(frozen=True)
class PathCost:
    """What one image costs on its way to an exit, against the original model, at one input size."""

    gflops: float  # the stages up to the exit plus every kept head up to and including it
    full_gflops: float  # the original model: every stage, no head

    @property
    def saved(self) -> float:
        """The fraction of the original model's GFLOPs saved (negative when the heads cost more than they save)."""
        return 1 - self.gflops / self.full_gflops


def path_gflops(net: MultiExitNet, size: Sequence[int], kept: Mapping[int, str], leave_at: int) -> PathCost:
    """What an image of input ``size`` costs when it leaves at ``leave_at`` with the heads ``kept`` evaluated on the
    way: the stages up to the exit plus every kept head up to and including it, beside the original model."""
    path, full = net.path_flops(kept, leave_at, tuple(size))
    return PathCost(gflops=path / 1e9, full_gflops=full / 1e9)


@dataclass(frozen=True)
class EarlyExitTiming:
    """One image timed through the deployed instance and through the original model."""

    full_ms: float  # the original model's path: every stage, no head
    early_exit_ms: float  # the deployed EarlyExitNet, which stops at the exit it takes
    exit: int  # the exit the deployed network took

    @property
    def speedup(self) -> float:
        """How many times faster the early-exit network answered than the original model."""
        return self.full_ms / self.early_exit_ms


def measure_early_exit(net: MultiExitNet, instance: Instance, x: torch.Tensor, *, repeats: int = 3) -> EarlyExitTiming:
    """Time the deployed instance (:class:`~mess_core.deploy.runtime.EarlyExitNet`, which really stops at the exit) and
    the original model's path (every stage, no head) on ``x``, interleaved, median of ``repeats``."""
    from mess_core.deploy.runtime import deploy

    deployed = deploy(net, instance)
    full_times, exit_times = [], []

    def full() -> torch.Tensor:
        return net.walk_to(x).logits

    with torch.inference_mode():
        _, taken = deployed(x)
        full()
        for _ in range(repeats):
            t0 = time.perf_counter()
            full()
            full_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            deployed(x)
            exit_times.append(time.perf_counter() - t0)
    return EarlyExitTiming(
        full_ms=1e3 * float(np.median(full_times)), early_exit_ms=1e3 * float(np.median(exit_times)), exit=int(taken[0])
    )


def heatmap(values: np.ndarray, *, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """(H, W) values in [low, high] -> (H, W, 3) uint8 viridis colours (dark = low confidence)."""
    scaled = np.clip((values - low) / max(high - low, 1e-9), 0, 1)
    bgr = cv2.applyColorMap((scaled * 255).round().astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    return np.ascontiguousarray(bgr[:, :, ::-1])


DISPLAY_WIDTH = 320


def enlarge(image: np.ndarray, width: int = DISPLAY_WIDTH) -> np.ndarray:
    """Nearest-neighbour upscaling to ``width`` for display, so small study images show their pixels instead of blur
    (an image as wide already is returned as it is).

    Example:
        >>> enlarge(np.zeros((2, 4, 3), np.uint8), 8).shape, enlarge(np.zeros((2, 40), np.uint8), 8).shape
        ((4, 8, 3), (2, 40))
    """
    h, w = image.shape[:2]
    if w >= width:
        return image
    return cv2.resize(image, (width, round(h * (width / w))), interpolation=cv2.INTER_NEAREST)


def shipped_heads(net: MultiExitNet) -> dict[int, list[str]]:
    """The configurations whose weights the network has at each early exit (a study may leave heavy heads out where
    no instance uses them; their figures stay in the cache)."""
    return {i: list(net.heads[str(i)].keys()) for i in range(1, net.num_exits)}


@dataclass(frozen=True)
class ExitSettings:
    """What the explorer's widgets start from."""

    configs: dict[int, str]  # a configuration at every early exit
    th_img: dict[int, float]  # the kept exits and their image thresholds
    th_pix: float


def explorer_defaults(
    cache: EvaluationCache, shipped: Mapping[int, Sequence[str]], searched: Instance | None, *, th_pix: float = 0.8
) -> ExitSettings:
    """The explorer's starting settings: every exit with its most accurate shipped configuration (mIoU on the cache),
    then the ``searched`` instance's exits, configurations, thresholds and th_pix where it has one (its exits whose
    configuration is not shipped keep the most accurate one and are not kept). A static exit (budgeted or anytime,
    no threshold) is kept with th_img 0: every image leaves at the first one, as the static instance does."""
    miou = cache.head_miou()[:-1].reshape(cache.num_exits - 1, len(cache.configs))
    configs = {i: max(shipped[i], key=lambda c: miou[i - 1, cache.config_index(c)]) for i in range(1, cache.num_exits)}
    th_img: dict[int, float] = {}
    if searched is not None:
        th_pix = searched.policy.th_pix
        for e in searched.exits:
            if e.config in shipped[e.exit]:
                configs[e.exit] = e.config
                th_img[e.exit] = float(e.th_img) if e.th_img is not None else 0.0
    return ExitSettings(configs, th_img, th_pix)


@dataclass(frozen=True)
class ExitFiring:
    """One exit of one image under the chosen thresholds."""

    exit: int
    config: str
    c_img: float  # edge-masked
    c_img_plain: float
    th_img: float | None  # None: the exit is not kept
    fires: bool  # kept and c_img reaches th_img


def exit_firings(views: Sequence[ExitView], th_img: Mapping[int, float]) -> list[ExitFiring]:
    """Every exit's image confidence against its threshold, shallowest first: the explorer's table."""
    return [
        ExitFiring(
            v.exit, v.config, v.c_img, v.c_img_plain, th_img.get(v.exit), v.exit in th_img and v.c_img >= th_img[v.exit]
        )
        for v in views
    ]
