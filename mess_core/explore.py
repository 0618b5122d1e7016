"""What the app shows, computed without Streamlit: images read from untrusted uploads, every exit's prediction and
confidence maps for one image, where that image leaves under given thresholds and what it saves (counted and
measured), and the live figures of the Thresholds and Pareto pages from an evaluation cache.

Example:
    >>> import numpy as np, cv2
    >>> ok, png = cv2.imencode(".png", np.zeros((40, 60), np.uint16))
    >>> image = decode_image(png.tobytes(), name="depth.png")
    >>> image.rgb.shape, image.rgb.dtype, image.notices
    ((40, 60, 3), dtype('uint8'), ['depth.png: 16-bit image, scaled to 8 bits', 'depth.png: grayscale, shown as RGB'])
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
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
from .policy import ConfidencePolicy, EdgeMasking, image_confidence, label_edges, pixel_confidence, predicted_labels, \
    widen, edge_masked_confidence
from .oracle import oracle
from .search import Objective, SearchSpace, search, uniform_exit

__all__ = ["ImageError", "LoadedImage", "decode_image", "to_input", "ExitView", "run_exits", "exit_views",
           "exit_taken", "path_gflops", "measure_early_exit", "colorize", "heatmap", "palette_for",
           "threshold_summary", "live_search", "sample_instances", "instance_from_settings", "MIN_SIDE", "MAX_SIDE"]

MIN_SIDE = 32  # the reference backbones downsample 32x: smaller images have no feature map left
MAX_SIDE = 1024  # larger uploads are downscaled so every exit stays interactive on a CPU


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
        raise ImageError(f"{name}: not an image that OpenCV or Pillow can read ({type(exc).__name__}); upload a PNG, "
                         "JPEG, BMP, TIFF or WebP file") from None


def decode_image(data: bytes, *, name: str = "upload", max_side: int = MAX_SIDE) -> LoadedImage:
    """Read an uploaded file into 8-bit RGB, saying what was converted: 16-bit or float pixels are scaled, grayscale
    is repeated over three channels, an alpha channel is composited over white, an image larger than ``max_side``
    on a side is downscaled. Anything else raises :class:`ImageError` naming the file."""
    if not data:
        raise ImageError(f"{name}: the file is empty")
    notices: list[str] = []
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
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


def exit_views(logits: Mapping[int, torch.Tensor], configs: Mapping[int, str], *, th_pix: float,
               edges: EdgeMasking) -> list[ExitView]:
    """The per-exit maps of one image (batch 1) at ``th_pix`` with edge masking ``edges``, shallowest first."""
    views = []
    final = max(logits)
    for index in sorted(logits):
        out = logits[index]
        conf = pixel_confidence(out)
        labels = predicted_labels(out)
        mask = widen(label_edges(labels), edges.size)
        masked = edge_masked_confidence(conf, labels, size=edges.size, window=edges.window)
        views.append(ExitView(
            exit=index, config="final" if index == final else configs[index], labels=labels[0].numpy(),
            confidence=conf[0].numpy(), edge_mask=mask[0].numpy(), masked_confidence=masked[0].numpy(),
            c_img=float(image_confidence(masked, th_pix)[0]), c_img_plain=float(image_confidence(conf, th_pix)[0]),
        ))
    return views


def exit_taken(views: Sequence[ExitView], th_img: Mapping[int, float]) -> int:
    """The exit this image leaves at: the shallowest exit in ``th_img`` whose c_img reaches its threshold, else the
    final exit."""
    for view in views[:-1]:
        if view.exit in th_img and view.c_img >= th_img[view.exit]:
            return view.exit
    return views[-1].exit


def path_gflops(net: MultiExitNet, size: Sequence[int], kept: Mapping[int, str], leave_at: int) -> tuple[float, float]:
    """(GFLOPs this image costs when it leaves at ``leave_at`` with heads ``kept`` evaluated on the way, GFLOPs of the
    original model) at input ``size``: the stages up to the exit plus every kept head up to and including it."""
    stages = net.stage_flops(tuple(size))
    heads = sum(net.head_flops(i, spec, tuple(size)) for i, spec in kept.items() if i <= leave_at)
    return (sum(stages[:leave_at]) + heads) / 1e9, sum(stages) / 1e9


def measure_early_exit(net: MultiExitNet, instance: Instance, x: torch.Tensor, *, repeats: int = 3
                       ) -> dict[str, float | int]:
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
    return {"full_ms": 1e3 * float(np.median(full_times)), "early_exit_ms": 1e3 * float(np.median(exit_times)),
            "exit": int(taken[0])}


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
def threshold_summary(cache: EvaluationCache, instance: Instance) -> dict[str, Any]:
    """The Thresholds page's figures for ``instance`` on ``cache``: mIoU, average GFLOPs (and ms when measured),
    speedup vs the backbone, the drop from the final exit, the exit histogram and the per-class IoU."""
    out = evaluate(cache, instance, unit="gflops")
    base = evaluate(cache, Instance(instance.mode), unit="gflops")
    classes = cache.meta.get("classes") or [f"class {k}" for k in range(cache.num_classes)]
    summary: dict[str, Any] = {
        "miou": out.miou, "gflops": out.cost, "speedup": base.cost / out.cost, "backbone_miou": base.miou,
        "backbone_gflops": base.cost, "drop_pp": 100 * (base.miou - out.miou),
        "histogram": exit_histogram(cache, instance),
        "per_class": pd.DataFrame({"class": classes, "IoU": out.iou, "backbone IoU": base.iou}),
    }
    if cache.has_latency:
        ms, base_ms = evaluate(cache, instance, unit="ms"), evaluate(cache, Instance(instance.mode), unit="ms")
        summary.update(latency_ms=ms.cost, backbone_ms=base_ms.cost, latency_speedup=base_ms.cost / ms.cost)
    return summary


def live_search(cache: EvaluationCache, objective: Objective, *, mode: str, unit: str = "gflops",
                space: SearchSpace | None = None) -> dict[str, Any]:
    """The Pareto page's search for one constraint: the chosen instance and its peers under the same objective
    (uniform-exit MESS and the naive policy, input-dependent; the oracle on the chosen exits under the same
    constraint, :func:`mess_core.oracle.oracle`), each as
    ``{"instance", "miou", "cost"}`` (instance None when nothing meets the constraint), plus the backbone."""
    space = space or SearchSpace()
    result = search(cache, objective, mode=mode, unit=unit, space=space)
    out: dict[str, Any] = {
        "chosen": {"instance": result.instance, "miou": result.miou, "cost": result.cost},
        "backbone": {"instance": Instance(mode), "miou": result.reference_miou, "cost": result.reference_cost},
        "seconds": result.seconds, "space_size": result.space_size,
    }
    if objective.kind != "pareto":
        uni = uniform_exit(cache, objective, unit=unit, space=space)
        out["uniform-exit MESS"] = {"instance": uni.instance, "miou": uni.miou, "cost": uni.cost}
        naive = search(cache, objective, mode="input-dependent", unit=unit,
                       space=SearchSpace(**{**space.__dict__, "policy": "naive"}))
        out["naive policy"] = {"instance": naive.instance, "miou": naive.miou, "cost": naive.cost}
        if result.instance is not None and result.instance.exits:
            found = oracle(cache, result.instance, max_drop=objective.max_drop, budget=objective.budget, unit=unit)
            out["oracle"] = {"instance": None, "miou": found.miou, "cost": found.cost}
    return out


def sample_instances(cache: EvaluationCache, *, count: int = 600, seed: int = 0, max_exits: int = 2,
                     space: SearchSpace | None = None) -> pd.DataFrame:
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
        kept = tuple(KeptExit(int(e), cache.configs[int(rng.choice(configs))], float(rng.choice(space.th_img)))
                     for e in chosen)
        rows.append(Instance("input-dependent", kept,
                             ConfidencePolicy(th_pix=float(rng.choice(th_pixes)), edges=space.edges)))
    records = []
    for inst in rows:
        out = evaluate(cache, inst)
        records.append({"series": f"evaluated ({inst.mode})", "mode": inst.mode, "cost": out.cost, "miou": out.miou,
                        "description": inst.describe(), "instance": inst})
    return pd.DataFrame(records)


def instance_from_settings(mode: str, th_img: Mapping[int, float], configs: Mapping[int, str], *, th_pix: float,
                           edges: EdgeMasking | None) -> Instance:
    """An input-dependent instance keeping the exits of ``th_img`` with their ``configs``: what the Thresholds and
    Explorer sliders describe."""
    kept = tuple(KeptExit(int(e), ExitSpec.coerce(configs[e]).id, float(th_img[e])) for e in sorted(th_img))
    return Instance(mode, kept, ConfidencePolicy(th_pix=th_pix, edges=edges))
