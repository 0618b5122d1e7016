"""What the app shows, computed without Streamlit: images read from untrusted uploads, every exit's prediction and
confidence maps for one image, where that image leaves under given thresholds and what it saves (counted and
measured), and the live figures of the Thresholds and Pareto pages from an evaluation cache; also what the pages
start from (the explorer's image source and settings, the thresholds' defaults) and what the Pareto page plots and
hands out (its points, the constraint line, the instance's JSON document, the ONNX zip). Every result is a dataclass.

Example:
    >>> import numpy as np, cv2
    >>> ok, png = cv2.imencode(".png", np.zeros((40, 60), np.uint16))
    >>> image = decode_image(png.tobytes(), name="depth.png")
    >>> image.rgb.shape, image.rgb.dtype, image.notices
    ((40, 60, 3), dtype('uint8'), ['depth.png: 16-bit image, scaled to 8 bits', 'depth.png: grayscale, shown as RGB'])
"""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
import torch

from .cache import EvaluationCache
from .data.info import distinct_palette
from .data.transforms import MEAN, STD
from .errors import MessError
from .exits import ExitSpec
from .instance import Instance, KeptExit, evaluate, exit_histogram
from .network import MultiExitNet
from .oracle import oracle
from .policy import (
    ConfidencePolicy,
    EdgeMasking,
    edge_masked_confidence,
    image_confidence,
    label_edges,
    pixel_confidence,
    predicted_labels,
    widen,
)
from .search import Objective, SearchSpace, search, uniform_exit
from .uncertainty import DEFAULT_LEVEL, DropInterval, drop_interval

__all__ = [
    "ImageError",
    "LoadedImage",
    "decode_image",
    "to_input",
    "ExitView",
    "run_exits",
    "exit_views",
    "exit_taken",
    "PathCost",
    "path_gflops",
    "EarlyExitTiming",
    "measure_early_exit",
    "colorize",
    "heatmap",
    "palette_for",
    "ThresholdFigures",
    "threshold_summary",
    "SearchPoint",
    "LiveSearch",
    "live_search",
    "sample_instances",
    "thin_cloud",
    "instance_from_settings",
    "DatasetSource",
    "dataset_source",
    "dataset_sample",
    "synthetic_sample",
    "shipped_heads",
    "ExitSettings",
    "explorer_defaults",
    "ExitFiring",
    "exit_firings",
    "ThresholdDefaults",
    "threshold_defaults",
    "GflopsBudget",
    "gflops_budget",
    "PlotPoint",
    "plot_points",
    "ConstraintLine",
    "constraint_line",
    "instance_document",
    "onnx_zip",
    "MIN_SIDE",
    "MAX_SIDE",
    "MAX_PIXELS",
]

MIN_SIDE = 32  # the reference backbones downsample 32x: smaller images have no feature map left
MAX_SIDE = 1024  # larger uploads are downscaled so every exit stays interactive on a CPU
# larger uploads are refused before decoding: 100 megapixels of RGBA is 400 MB, and a small file (a PNG of one
# colour) can declare far more, which would exhaust memory before the downscale to MAX_SIDE
MAX_PIXELS = 100_000_000


class ImageError(MessError):
    """An uploaded file that cannot be used as an image; the message names it and says what would work."""


@dataclass
class LoadedImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    name: str
    notices: list[str] = field(default_factory=list)  # what was done to make it usable, for the page to say


def _to_uint8(array: np.ndarray, name: str, notices: list[str]) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        notices.append(f"{name}: 16-bit image, scaled to 8 bits")
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if top <= 1.0 else 255.0 / top
        notices.append(f"{name}: floating-point image, scaled to 8 bits")
        return np.clip(finite * scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        top = max(int(array.max()), 1)
        notices.append(f"{name}: {array.dtype} image, scaled to 8 bits")
        return (array.astype(np.float64) * (255.0 / top)).round().astype(np.uint8)
    raise ImageError(f"{name}: pixels of type {array.dtype} cannot be shown; upload an 8- or 16-bit PNG or a JPEG")


def _decode_pillow(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)  # animations: the first frame
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(
            f"{name}: not an image that OpenCV or Pillow can read ({type(exc).__name__}); upload a PNG, "
            "JPEG, BMP, TIFF or WebP file"
        ) from None


def _too_large(name: str, size: str) -> ImageError:
    return ImageError(
        f"{name}: {size} is more than this app decodes ({MAX_PIXELS // 1_000_000} megapixels at most); "
        f"downscale the image (to at most {MAX_SIDE} pixels a side, as it would be shown) and upload it "
        "again"
    )


def _check_pixel_count(data: bytes, name: str) -> None:
    """Refuse an image whose header declares more than :data:`MAX_PIXELS`, before any pixel is decoded: Pillow's
    ``Image.open`` reads only the header. A file Pillow cannot identify is left to OpenCV, whose own limit
    (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30 by default) makes it raise ``cv2.error``, which :func:`decode_image`
    reports."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is the one that counts
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Image.DecompressionBombError as exc:  # Pillow refuses more than twice its own limit in open() itself
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(name, f"an image of {int(found[1]):,} pixels" if found else "this image") from None
    except Exception:  # noqa: BLE001 -- not identified by Pillow (or a damaged header): OpenCV or the Pillow decode says why
        return
    if width * height > MAX_PIXELS:
        raise _too_large(name, f"{height}x{width} pixels ({width * height / 1e6:,.0f} megapixels)")


def decode_image(data: bytes, *, name: str = "upload", max_side: int = MAX_SIDE) -> LoadedImage:
    """Read an uploaded file into 8-bit RGB, saying what was converted: 16-bit or float pixels are scaled, grayscale
    is repeated over three channels, an alpha channel is composited over white, an image larger than ``max_side``
    on a side is downscaled. Anything else raises :class:`ImageError` naming the file."""
    if not data:
        raise ImageError(f"{name}: the file is empty")
    notices: list[str] = []
    _check_pixel_count(data, name)
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV refuses some damaged or oversized files with an error, not with None
        detail = " ".join(str(exc).split())[-160:]
        raise ImageError(
            f"{name}: OpenCV cannot decode this file ({detail}); upload a PNG, JPEG, BMP, TIFF or WebP "
            f"file of at most {MAX_PIXELS // 1_000_000} megapixels"
        ) from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image; downscale it and upload it again") from None
    if array is not None:  # OpenCV gives BGR(A)
        if array.ndim == 3 and array.shape[2] == 3:
            array = array[:, :, ::-1]
        elif array.ndim == 3 and array.shape[2] == 4:
            array = array[:, :, [2, 1, 0, 3]]
    else:
        array = _decode_pillow(data, name)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise ImageError(f"{name}: an image of shape {array.shape} is neither grayscale, RGB nor RGBA")
    array = _to_uint8(np.ascontiguousarray(array), name, notices)
    alpha = None
    if array.ndim == 3 and array.shape[2] in (2, 4):
        alpha, array = array[:, :, -1], array[:, :, :-1]
        if array.shape[2] == 1:
            array = array[:, :, 0]
    if array.ndim == 2:
        notices.append(f"{name}: grayscale, shown as RGB")
        array = np.repeat(array[:, :, None], 3, axis=2)
    if alpha is not None:
        if alpha.min() < 255:
            weight = alpha[:, :, None].astype(np.float32) / 255.0
            array = (array * weight + 255.0 * (1.0 - weight)).round().astype(np.uint8)
            notices.append(f"{name}: transparent pixels composited over white")
        else:
            notices.append(f"{name}: alpha channel dropped (fully opaque)")
    h, w = array.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{name}: {h}x{w} pixels is too small; the network needs at least {MIN_SIDE} on each side")
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale)))
        array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
        notices.append(f"{name}: {h}x{w} is large; downscaled to {size[1]}x{size[0]} to stay interactive")
    return LoadedImage(np.ascontiguousarray(array), name, notices)


def to_input(rgb: np.ndarray, size: Sequence[int] | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 normalised like the training data; resized to ``size`` (H, W) first
    when given."""
    if size is not None and tuple(rgb.shape[:2]) != tuple(size):
        rgb = cv2.resize(rgb, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    return x[None].contiguous()


# --------------------------------------------------------------------------------------------- one image
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
    stages = net.stage_flops(tuple(size))
    heads = sum(net.head_flops(i, spec, tuple(size)) for i, spec in kept.items() if i <= leave_at)
    return PathCost(gflops=(sum(stages[:leave_at]) + heads) / 1e9, full_gflops=sum(stages) / 1e9)


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
    """Time the deployed instance (:class:`~mess_core.runtime.EarlyExitNet`, which really stops at the exit) and
    the original model's path (every stage, no head) on ``x``, interleaved, median of ``repeats``."""
    from .runtime import deploy

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


def palette_for(dataset: str, num_classes: int) -> np.ndarray:
    """(K, 3) uint8 display colours: the dataset's own palette when it is a registered dataset with ``num_classes``
    classes, else well separated hues."""
    from .data.camvid import CAMVID_INFO
    from .data.cityscapes import CITYSCAPES_INFO
    from .data.synthetic import SYNTHETIC_INFO

    known = {"camvid": CAMVID_INFO, "cityscapes": CITYSCAPES_INFO, "synthetic": SYNTHETIC_INFO}
    info = known.get(dataset)
    colours = info.palette if info is not None and info.num_classes == num_classes else distinct_palette(num_classes)
    return np.asarray(colours, np.uint8)


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours (ids outside the palette black)."""
    safe = np.where((labels >= 0) & (labels < len(palette)), labels, 0)
    out = palette[safe]
    out[(labels < 0) | (labels >= len(palette))] = 0
    return out


def heatmap(values: np.ndarray, *, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """(H, W) values in [low, high] -> (H, W, 3) uint8 viridis colours (dark = low confidence)."""
    scaled = np.clip((values - low) / max(high - low, 1e-9), 0, 1)
    bgr = cv2.applyColorMap((scaled * 255).round().astype(np.uint8), cv2.COLORMAP_VIRIDIS)
    return np.ascontiguousarray(bgr[:, :, ::-1])


# --------------------------------------------------------------------------------------------- a split
@dataclass(frozen=True)
class ThresholdFigures:
    """An instance's exact figures on a split, beside the backbone's (the final exit's)."""

    miou: float
    gflops: float  # average per image
    speedup: float  # backbone GFLOPs / this instance's
    backbone_miou: float
    backbone_gflops: float
    drop_pp: float  # mIoU points lost against the backbone (negative: gained)
    histogram: pd.DataFrame  # where images leave: exit, config, images, fraction (final exit last)
    per_class: pd.DataFrame  # class, IoU, backbone IoU
    latency_ms: float | None = None  # the cache's measured CPU latency, when it has one
    backbone_ms: float | None = None
    latency_speedup: float | None = None
    # the drop's 90% bootstrap interval over the cache's images (mess_core.uncertainty), for the page to show
    drop_interval: DropInterval | None = None

    @property
    def measured(self) -> bool:
        """Whether the latency figures are there (the cache holds measured latencies)."""
        return self.latency_ms is not None

    @property
    def left_early(self) -> float:
        """The fraction of images that leave before the final exit."""
        return 1 - float(self.histogram["fraction"].iloc[-1])

    def scalars(self) -> dict[str, float]:
        """The single-number figures by name (the latency ones only when measured), as a downloaded instance
        records them."""
        names = ["miou", "gflops", "speedup", "backbone_miou", "backbone_gflops", "drop_pp"]
        names += ["latency_ms", "backbone_ms", "latency_speedup"] if self.measured else []
        return {name: getattr(self, name) for name in names}


def threshold_summary(cache: EvaluationCache, instance: Instance) -> ThresholdFigures:
    """The Thresholds page's figures for ``instance`` on ``cache``: mIoU, average GFLOPs (and ms when measured),
    speedup vs the backbone, the drop from the final exit (with its bootstrap interval), the exit histogram and the
    per-class IoU."""
    out = evaluate(cache, instance, unit="gflops")
    base = evaluate(cache, Instance(instance.mode), unit="gflops")
    classes = cache.meta.get("classes") or [f"class {k}" for k in range(cache.num_classes)]
    latency: dict[str, float] = {}
    if cache.has_latency:
        ms, base_ms = evaluate(cache, instance, unit="ms"), evaluate(cache, Instance(instance.mode), unit="ms")
        latency = {"latency_ms": ms.cost, "backbone_ms": base_ms.cost, "latency_speedup": base_ms.cost / ms.cost}
    return ThresholdFigures(
        miou=out.miou,
        gflops=out.cost,
        speedup=base.cost / out.cost,
        backbone_miou=base.miou,
        backbone_gflops=base.cost,
        drop_pp=100 * (base.miou - out.miou),
        histogram=exit_histogram(cache, instance),
        per_class=pd.DataFrame({"class": classes, "IoU": out.iou, "backbone IoU": base.iou}),
        **latency,
        drop_interval=drop_interval(cache, instance),
    )


@dataclass(frozen=True)
class SearchPoint:
    """One instance on the accuracy-cost plane; instance None for the oracle (a bound, not deployable) or when
    nothing meets the constraint (then cost and mIoU are NaN)."""

    instance: Instance | None
    miou: float
    cost: float
    interval: DropInterval | None = None  # the drop against the backbone with its bootstrap interval (the chosen one)


@dataclass(frozen=True)
class LiveSearch:
    """The Pareto page's search under one constraint: the chosen instance, the backbone, and the peers under the same
    objective (absent for a Pareto objective; the oracle only when the chosen instance keeps an exit)."""

    chosen: SearchPoint
    backbone: SearchPoint
    seconds: float  # the search's own time
    space_size: int  # instances searched
    uniform: SearchPoint | None = None  # uniform-exit MESS
    naive: SearchPoint | None = None  # the naive policy (mean confidence), input-dependent
    oracle: SearchPoint | None = None  # the oracle bound on the chosen exits

    PEERS = ("backbone", "uniform-exit MESS", "naive policy", "oracle")  # the peers' names, as the plot labels them

    @property
    def speedup(self) -> float:
        """Backbone cost / chosen cost (NaN when nothing was chosen)."""
        return self.backbone.cost / self.chosen.cost if self.chosen.instance is not None else float("nan")

    def peers(self) -> dict[str, SearchPoint]:
        """The peers present, by name (:attr:`PEERS` order), the backbone first."""
        points = dict(zip(self.PEERS, (self.backbone, self.uniform, self.naive, self.oracle)))
        return {name: point for name, point in points.items() if point is not None}


def live_search(
    cache: EvaluationCache, objective: Objective, *, mode: str, unit: str = "gflops", space: SearchSpace | None = None
) -> LiveSearch:
    """The Pareto page's search for one constraint: the chosen instance and its peers under the same objective
    (uniform-exit MESS and the naive policy, input-dependent; the oracle on the chosen exits under the same
    constraint, :func:`mess_core.oracle.oracle`), plus the backbone."""
    space = space or SearchSpace()
    result = search(cache, objective, mode=mode, unit=unit, space=space)
    interval = result.interval  # a confidence-aware search already bootstrapped its choice
    if interval is None and result.instance is not None:
        interval = drop_interval(
            cache,
            result.instance,
            confidence=objective.confidence or DEFAULT_LEVEL,
            fresh_images=objective.fresh_images,
            block=objective.block,
        )
    chosen = SearchPoint(result.instance, result.miou, result.cost, interval)
    backbone = SearchPoint(Instance(mode), result.reference_miou, result.reference_cost)
    peers: dict[str, SearchPoint] = {}
    # the peers answer the same constraint on this split's images (a confidence level is the chosen instance's
    # extra demand; uniform-exit MESS and the oracle have no confidence-aware form)
    objective = Objective(objective.kind, max_drop=objective.max_drop, budget=objective.budget)
    if objective.kind != "pareto":
        uni = uniform_exit(cache, objective, unit=unit, space=space)
        peers["uniform"] = SearchPoint(uni.instance, uni.miou, uni.cost)
        naive = search(
            cache,
            objective,
            mode="input-dependent",
            unit=unit,
            space=SearchSpace(**{**space.__dict__, "policy": "naive"}),
        )
        peers["naive"] = SearchPoint(naive.instance, naive.miou, naive.cost)
        if result.instance is not None and result.instance.exits:
            found = oracle(cache, result.instance, max_drop=objective.max_drop, budget=objective.budget, unit=unit)
            peers["oracle"] = SearchPoint(None, found.miou, found.cost)
    return LiveSearch(chosen=chosen, backbone=backbone, seconds=result.seconds, space_size=result.space_size, **peers)


def sample_instances(
    cache: EvaluationCache, *, count: int = 600, seed: int = 0, max_exits: int = 2, space: SearchSpace | None = None
) -> pd.DataFrame:
    """Exact mIoU and GFLOPs of every budgeted instance and of ``count`` random input-dependent instances (1 to
    ``max_exits`` exits, configurations, th_pix and th_img drawn from ``space``): the cloud the fronts are drawn
    over. Columns series, mode, cost, miou, description, instance."""
    space = space or SearchSpace()
    exits, configs, th_pixes = space.resolve(cache)
    rows: list[Instance] = [Instance("budgeted")]
    rows += [Instance("budgeted", (KeptExit(e, cache.configs[c]),)) for e in exits for c in configs]
    rng = np.random.default_rng(seed)
    th_pixes = [p for p in th_pixes if p is not None] or list(cache.th_pix_grid)
    for _ in range(count):
        k = int(rng.integers(1, min(max_exits, len(exits)) + 1))
        chosen = sorted(rng.choice(exits, size=k, replace=False).tolist())
        kept = tuple(
            KeptExit(int(e), cache.configs[int(rng.choice(configs))], float(rng.choice(space.th_img))) for e in chosen
        )
        rows.append(
            Instance("input-dependent", kept, ConfidencePolicy(th_pix=float(rng.choice(th_pixes)), edges=space.edges))
        )
    records = []
    for inst in rows:
        out = evaluate(cache, inst)
        records.append(
            {
                "series": f"evaluated ({inst.mode})",
                "mode": inst.mode,
                "cost": out.cost,
                "miou": out.miou,
                "description": inst.describe(),
                "instance": inst,
            }
        )
    return pd.DataFrame(records)


def thin_cloud(cloud: pd.DataFrame, *, cells: tuple[int, int] = (240, 120)) -> pd.DataFrame:
    """The rows of a :func:`sample_instances` cloud that a plot can tell apart: the plane (cost x mIoU, over the
    cloud's own range) cut into ``cells`` (columns, rows), one point per occupied cell (the first in the cloud's
    order), the rest dropped. At the Pareto plot's ~1300 x 560 pixels a cell is ~5 pixels, under a marker's size, so
    the plot looks the same with about half the points to send and draw on every slider move."""
    if len(cloud) == 0:
        return cloud

    def cell(values: np.ndarray, count: int) -> np.ndarray:  # 0..count; -1 for NaN (nothing met the constraint)
        finite = values[np.isfinite(values)]
        if finite.size == 0 or np.ptp(finite) == 0:
            return np.zeros(len(values), np.int64)
        scaled = np.floor((values - finite.min()) / np.ptp(finite) * count)
        return np.nan_to_num(scaled, nan=-1.0).astype(np.int64)

    x, y = cell(cloud["cost"].to_numpy(float), cells[0]), cell(cloud["miou"].to_numpy(float), cells[1])
    keys = (x + 1) * (cells[1] + 2) + (y + 1)
    _, first = np.unique(keys, return_index=True)
    return cloud.iloc[np.sort(first)].reset_index(drop=True)


def instance_from_settings(
    mode: str, th_img: Mapping[int, float], configs: Mapping[int, str], *, th_pix: float, edges: EdgeMasking | None
) -> Instance:
    """An input-dependent instance keeping the exits of ``th_img`` with their ``configs``: what the Thresholds and
    Explorer sliders describe."""
    kept = tuple(KeptExit(int(e), ExitSpec.coerce(configs[e]).id, float(th_img[e])) for e in sorted(th_img))
    return Instance(mode, kept, ConfidencePolicy(th_pix=th_pix, edges=edges))


# --------------------------------------------------------------------------------------------- the explorer's inputs
@dataclass(frozen=True)
class DatasetSource:
    """Where a study's images come from: the dataset it was evaluated on, on this machine."""

    name: str  # a registered dataset
    root: str | None  # its folder (absolute), None where the dataset needs none
    options: tuple[tuple[str, Any], ...]  # build_dataset's keyword options, sorted and hashable (lists as tuples)
    split: str
    groups: tuple[str, ...] = ()  # the groups (scenes) of the split its images were kept to; () = all

    @property
    def label(self) -> str:
        """``camvid train [0006R0]``: the images as a caption names them."""
        return f"{self.name} {self.split}" + (f" [{','.join(self.groups)}]" if self.groups else "")

    @property
    def on_disk(self) -> bool:
        """Whether its images can be read here: generated datasets always, others when their folder exists."""
        return self.name == "synthetic" or (self.root is not None and Path(self.root).is_dir())


def dataset_source(config: Mapping[str, Any], meta: Mapping[str, Any], base: Path) -> DatasetSource:
    """The dataset a study's images come from: name and split from its cache's ``meta``, folder and options from its
    build ``config`` (``manifest["config"]``); a relative folder is taken from ``base`` (the repository)."""
    fix = "the study's manifest (its 'config') is damaged or was edited; rebuild the study"
    root, given = config.get("data_root"), config.get("data_options") or {}
    if root is not None and not isinstance(root, str):
        raise MessError(f"config field 'data_root' is {root!r}, expected a folder path; {fix}")
    if not isinstance(given, Mapping):
        raise MessError(f"config field 'data_options' is {given!r}, expected an object of dataset options; {fix}")
    if root is not None and not Path(root).is_absolute():
        root = str(Path(base) / root)
    options = tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in given.items()))
    groups = meta.get("groups") or ()
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, str) for g in groups):
        raise MessError(f"cache field 'groups' is {groups!r}, expected a list of group names; rebuild the cache")
    return DatasetSource(meta.get("dataset", "synthetic"), root, options, meta.get("split", "val"), tuple(groups))


def dataset_sample(dataset: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of a dataset as (H, W, 3) uint8 RGB, with its (H, W) label map (255: ignored)."""
    image, label = dataset.load(index)
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy()), label.numpy()


def synthetic_sample(size: Sequence[int], seed: int, num_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A generated scene of ``size`` (H, W) from ``seed``, with its labels only when the network has the synthetic
    dataset's ``num_classes`` (its classes mean nothing to another dataset's network)."""
    from .data import build_dataset

    dataset = build_dataset("synthetic", split="test", seed=int(seed), length=1, size=tuple(size))
    rgb, label = dataset_sample(dataset, 0)
    return rgb, (label if num_classes == dataset.info.num_classes else None)


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


# --------------------------------------------------------------------------------------------- the thresholds' start
@dataclass(frozen=True)
class ThresholdDefaults:
    """What the Thresholds page's widgets start from when there is no searched instance to load."""

    kept: list[int]  # kept exits
    th_pix: float  # on the cache's th_pix grid
    th_img: float  # for an exit just added
    edges: EdgeMasking  # the edge masking the cache was evaluated with


def threshold_defaults(cache: EvaluationCache) -> ThresholdDefaults:
    """One exit half way down the network, th_pix 0.8 (the middle of the cache's grid where 0.8 is not on it),
    th_img 0.8, and the cache's own edge masking (s=3, w=7 where its meta does not say)."""
    grid = list(cache.th_pix_grid)
    edges = cache.meta.get("edge_masking", {"size": 3, "window": 7})
    return ThresholdDefaults(
        kept=[max(1, (cache.num_exits - 1) // 2)],
        th_pix=0.8 if 0.8 in grid else grid[len(grid) // 2],
        th_img=0.8,
        edges=EdgeMasking(size=edges["size"], window=edges["window"]),
    )


# --------------------------------------------------------------------------------------------- the Pareto page
@dataclass(frozen=True)
class GflopsBudget:
    """A cost budget slider in GFLOPs around the backbone's cost, and its conversion to the search's budget (a
    fraction of the backbone)."""

    backbone: float  # the backbone's GFLOPs
    low: float
    high: float
    value: float  # where the slider starts: the backbone's cost
    step: float

    def fraction(self, gflops: float) -> float:
        """A budget in GFLOPs as the search takes it: x backbone."""
        return gflops / self.backbone


def gflops_budget(backbone_gflops: float, *, low: float = 0.05, high: float = 1.5) -> GflopsBudget:
    """A GFLOPs budget slider from ``low`` to ``high`` x ``backbone_gflops`` (3 decimals), starting at the backbone,
    in 200 steps of the backbone."""
    b = float(backbone_gflops)
    return GflopsBudget(b, round(low * b, 3), round(high * b, 3), round(b, 3), round(b / 200, 4))


@dataclass(frozen=True)
class PlotPoint:
    """One point of the Pareto plot."""

    series: str  # the series (evaluated cloud, front, peer name, "searched") it belongs to
    instance: Instance | None  # None: the oracle bound
    miou: float
    cost: float


def plot_points(cloud: pd.DataFrame, fronts: pd.DataFrame, found: LiveSearch) -> dict[str, PlotPoint]:
    """Every point of the Pareto plot by id: ``cloud:i`` (evaluated instances, :func:`sample_instances`),
    ``front:i`` (the study's fronts), ``peer:NAME`` (the search's peers with a finite cost, :meth:`LiveSearch.peers`)
    and ``chosen`` (the searched instance, when one meets the constraint)."""
    points: dict[str, PlotPoint] = {}
    for i, r in enumerate(cloud.itertuples()):
        points[f"cloud:{i}"] = PlotPoint(r.series, r.instance, r.miou, r.cost)
    for i, r in enumerate(fronts.itertuples()):
        points[f"front:{i}"] = PlotPoint(r.series, r.instance, r.miou, r.cost)
    for name, peer in found.peers().items():
        if np.isfinite(peer.cost):
            points[f"peer:{name}"] = PlotPoint(name, peer.instance, peer.miou, peer.cost)
    if found.chosen.instance is not None:
        points["chosen"] = PlotPoint("searched", found.chosen.instance, found.chosen.miou, found.chosen.cost)
    return points


@dataclass(frozen=True)
class ConstraintLine:
    """Where an objective's constraint lies on the accuracy-cost plane."""

    axis: str  # "miou": a horizontal line at ``at`` mIoU (%); "cost": a vertical line at ``at`` GFLOPs
    at: float


def constraint_line(objective: Objective, backbone: SearchPoint) -> ConstraintLine:
    """The least mIoU (%) a min-cost objective allows (the backbone's minus the allowed drop), or the most cost a
    max-accuracy objective allows (its budget x the backbone's cost)."""
    if objective.kind == "min-cost":
        return ConstraintLine("miou", 100 * backbone.miou - objective.max_drop)
    return ConstraintLine("cost", objective.budget * backbone.cost)


def instance_document(
    cache: EvaluationCache, study_name: str, instance: Instance, figures: ThresholdFigures
) -> dict[str, Any]:
    """The JSON document of a downloaded instance: the instance, where it comes from (model, dataset, split, input
    size, classes, exits, study) and its single-number figures on the cache's split."""
    meta = cache.meta
    return instance.to_dict(
        source={k: meta.get(k) for k in ("model", "dataset", "split", "input_size")}
        | {"num_classes": cache.num_classes, "num_exits": cache.num_exits, "study": study_name},
        figures=figures.scalars(),
    )


def onnx_zip(net: MultiExitNet, instance: Instance, size: Sequence[int]) -> bytes:
    """The instance exported to ONNX (:func:`mess_core.export.export_onnx`: per-stage and per-head files with a
    manifest) at input ``size``, zipped under ``mess_onnx/``."""
    import tempfile
    import zipfile

    from .export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = export_onnx(net, instance, Path(tmp) / "onnx", input_size=tuple(size))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(out.iterdir()):
                zf.write(f, f"mess_onnx/{f.name}")
    return buffer.getvalue()
