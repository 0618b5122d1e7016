"""The evaluation cache: everything the exit search needs from a trained multi-exit network on one data split,
computed in one pass so that any MESS instance's exact mIoU and cost follow without running the network again.

For every image b and every *head* h (each configuration at each early exit, then the final exit, last) it stores:

* ``tp[b, h, k]``, ``pred[b, h, k]``: pixels of class k predicted correctly / predicted as k (pixels whose label is
  not ignored), and ``label[b, k]``: pixels labelled k. Summing them over any assignment of images to heads gives
  that assignment's exact confusion-matrix diagonal and marginals, hence its exact IoU per class and mIoU;
* ``above[b, h, g]`` (edge-masked) and ``above_plain[b, h, g]`` (no masking): pixels whose confidence is at least
  ``th_pix_grid[g]``, so the MESS image confidence c_img = above / pixels for every th_pix on the grid;
* ``conf_sum[b, h]``: the sum of pixel confidences, for the naive policy's mean confidence;
* ``stage_gflops[s]`` for the N stages and ``head_gflops[i - 1, c]`` for every configuration at every early exit,
  and, when measured, the same in milliseconds (``stage_ms``, ``head_ms``).

It is one ``.npz`` file with a JSON ``meta`` entry (model, dataset, split, input size, classes, exits, space,
threshold grid, edge masking, what was measured where).

A network that does not carry every configuration at every exit (a shipped study keeps heavy heads only where a
stored instance uses them) gives a *partial* cache: ``meta["absent_heads"]`` lists the (exit, configuration) pairs
it has no figures for, their rows hold zeros, and :meth:`EvaluationCache.head_index` refuses them, so no instance
that uses one is ever scored from zeros.

Example:
    >>> import numpy as np
    >>> cache = EvaluationCache.random(images=4, exits=3, configs=2, classes=3, seed=0)
    >>> cache.num_heads, cache.head_index(2, 1), cache.final_head
    (5, 3, 4)
    >>> cache.image_confidence(policy="mess", th_pix=0.7).shape
    (4, 5)
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Literal, Sequence

import numpy as np
import torch

from ..conversion.exits import ExitSpec
from ..conversion.profiling import evaluating, time_call
from ..errors import MessError
from ..io import atomic_open, input_file
from .policy import EdgeMasking, edge_masked_confidence, pixel_confidence, pixels_at_least, predicted_labels

__all__ = ["EvaluationCache", "CacheError", "build_cache", "TH_PIX_GRID", "CACHE_FORMAT", "POLICIES"]

CACHE_FORMAT = "mess-cache/1"
# th_pix values the cache can answer for: every search and the app pick th_pix from this grid
TH_PIX_GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
POLICIES = ("mess", "plain", "naive")  # edge-masked fraction, unmasked fraction, mean confidence
Unit = Literal["gflops", "ms"]

_ARRAYS = ("tp", "pred", "label", "above", "above_plain", "conf_sum", "pixels", "stage_gflops", "head_gflops")


class CacheError(MessError):
    """An evaluation cache file that cannot be used, or a request it cannot answer."""


@dataclass
class EvaluationCache:
    """Per-image, per-head evaluation statistics of a multi-exit network on one split (see the module docstring)."""

    meta: dict[str, Any]
    tp: np.ndarray  # (B, H, K) int
    pred: np.ndarray  # (B, H, K) int
    label: np.ndarray  # (B, K) int
    above: np.ndarray  # (B, H, G) int, edge-masked confidence >= th_pix_grid[g]
    above_plain: np.ndarray  # (B, H, G) int, plain confidence >= th_pix_grid[g]
    conf_sum: np.ndarray  # (B, H) float
    pixels: np.ndarray  # (B,) int, pixels per image (all of them, labelled or not: the policy sees every pixel)
    stage_gflops: np.ndarray  # (N,)
    head_gflops: np.ndarray  # (N-1, C)
    stage_ms: np.ndarray | None = None  # (N,) measured, or None
    head_ms: np.ndarray | None = None  # (N-1, C)
    _derived: dict[Hashable, Any] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------------------------------------ layout
    @property
    def num_images(self) -> int:
        return self.tp.shape[0]

    @property
    def num_classes(self) -> int:
        return self.tp.shape[2]

    @property
    def num_exits(self) -> int:
        """N: early exits plus the final one."""
        return self.stage_gflops.shape[0]

    @property
    def configs(self) -> list[str]:
        return list(self.meta["space"])

    @property
    def num_heads(self) -> int:
        return self.tp.shape[1]

    @property
    def final_head(self) -> int:
        return self.num_heads - 1

    @property
    def th_pix_grid(self) -> tuple[float, ...]:
        return tuple(self.meta["th_pix_grid"])

    @property
    def has_latency(self) -> bool:
        return self.stage_ms is not None and self.head_ms is not None

    def head_index(self, exit: int, config: int | str) -> int:
        """Row of ``tp``/``above``/... holding configuration ``config`` (index or id) at early exit ``exit`` (1..N-1);
        ``exit == N`` is the final exit. A head the cache has no figures for (see ``absent_heads``) is refused."""
        if exit == self.num_exits:
            return self.final_head
        if not 1 <= exit < self.num_exits:
            raise CacheError(
                f"exit {exit} is not an exit of this cache: early exits are 1..{self.num_exits - 1}, "
                f"the final exit is {self.num_exits}"
            )
        index = self.config_index(config)
        if self.configs[index] in self.absent_heads.get(exit, ()):
            raise CacheError(
                f"this cache has no figures for '{self.configs[index]}' at exit {exit}: the network it "
                "was evaluated from does not carry that head there (a shipped study keeps heavy heads "
                "only where a stored instance uses them); choose an instance whose heads it carries"
            )
        return (exit - 1) * len(self.configs) + index

    @property
    def image_groups(self) -> list[str] | None:
        """Each image's group (scene), where the dataset it was evaluated on said; None for caches that do not record
        them."""
        groups = self.meta.get("image_groups")
        return groups if isinstance(groups, list) and len(groups) == self.num_images else None

    @property
    def absent_heads(self) -> dict[int, frozenset[str]]:
        """Early exit -> the configurations this (partial) cache has no figures for there; empty for a whole cache."""
        held = self.meta.get("absent_heads") or {}
        return {int(e): frozenset(configs) for e, configs in held.items()}

    def configs_at_every_exit(self, exits: Iterable[int] | None = None) -> list[str]:
        """The configurations this cache has figures for at every one of ``exits`` (default: every early exit)."""
        absent = self.absent_heads
        chosen = range(1, self.num_exits) if exits is None else exits
        return [c for c in self.configs if not any(c in absent.get(e, ()) for e in chosen)]

    def config_index(self, config: int | str) -> int:
        if isinstance(config, (int, np.integer)):
            return int(config)
        try:
            return self.configs.index(ExitSpec.coerce(config).id)
        except ValueError:
            raise CacheError(f"exit configuration '{config}' is not in this cache's space ({', '.join(self.configs)})")

    def th_pix_index(self, th_pix: float) -> int:
        grid = np.asarray(self.th_pix_grid)
        hits = np.flatnonzero(np.isclose(grid, th_pix, rtol=0, atol=1e-9))
        if not hits.size:
            raise CacheError(
                f"th_pix={th_pix} is not on this cache's grid {list(self.th_pix_grid)}; pick one of those "
                "(or rebuild the cache with --th-pix listing it)"
            )
        return int(hits[0])

    # ------------------------------------------------------------------------------------------------ derived
    def stage_cost(self, unit: Unit = "gflops") -> np.ndarray:
        """Per-image cost of each of the N stages."""
        return self._cost(unit)[0]

    def reach_cost(self, unit: Unit = "gflops") -> np.ndarray:
        """(N + 1,) per-image cost of running stages 1..i (index i; 0 = nothing run, N = the whole model)."""
        return np.concatenate([[0.0], np.cumsum(self.stage_cost(unit))])

    def head_cost(self, unit: Unit = "gflops") -> np.ndarray:
        """(N-1, C) per-image cost of each head."""
        return self._cost(unit)[1]

    def _cost(self, unit: str) -> tuple[np.ndarray, np.ndarray]:
        if unit == "gflops":
            return self.stage_gflops, self.head_gflops
        if unit == "ms":
            if not self.has_latency:
                raise CacheError("this cache holds no measured latency; rebuild it with --latency to search by latency")
            return self.stage_ms, self.head_ms  # type: ignore[return-value]
        raise CacheError(f"cost unit must be 'gflops' or 'ms', not {unit!r}")

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """What ``compute()`` returns, computed once per cache and ``key`` (figures derived from the arrays: image
        confidences, the search's per-exit options); :meth:`forget` drops them when the arrays change."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    def forget(self) -> None:
        """Drop every memo (after the cache's arrays were replaced)."""
        self._derived.clear()

    def image_confidence(self, *, policy: str = "mess", th_pix: float | None = None) -> np.ndarray:
        """(B, H) image confidence c_img of every image at every head under ``policy`` ("mess": fraction of
        edge-masked pixel confidences >= th_pix; "plain": the same without edge masking; "naive": mean confidence)."""

        def compute() -> np.ndarray:
            if policy == "naive":
                value = self.conf_sum / self.pixels[:, None]
            elif policy in ("mess", "plain"):
                if th_pix is None:
                    raise CacheError(f"the {policy} policy needs th_pix")
                counts = (self.above if policy == "mess" else self.above_plain)[:, :, self.th_pix_index(th_pix)]
                value = counts / self.pixels[:, None]
            else:
                raise CacheError(f"policy must be one of {POLICIES}, not {policy!r}")
            return value.astype(np.float64)

        return self.memo(("image_confidence", policy, th_pix), compute)

    def miou_of(self, tp: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """mIoU from summed (..., K) true-positive and prediction counts over the whole split (classes absent from
        both labels and predictions are left out, as :class:`~mess_core.evaluate.evaluation.ConfusionMatrix` does)."""
        label = self.label.sum(0).astype(np.float64)
        union = label + pred - tp
        present = union > 0
        iou = np.divide(tp, union, out=np.zeros(np.broadcast_shapes(tp.shape, union.shape)), where=present)
        return iou.sum(-1) / np.maximum(present.sum(-1), 1)

    def head_miou(self) -> np.ndarray:
        """(H,) dataset mIoU of every head on its own."""
        return self.miou_of(self.tp.sum(0).astype(np.float64), self.pred.sum(0).astype(np.float64))

    def image_miou(self) -> np.ndarray:
        """(B, H) per-image mIoU of every head (classes present in the image's labels or predictions)."""

        def compute() -> np.ndarray:
            tp = self.tp.astype(np.float64)
            union = self.label[:, None, :] + self.pred - tp
            present = union > 0
            iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
            return iou.sum(-1) / np.maximum(present.sum(-1), 1)

        return self.memo("image_miou", compute)

    def compatible_with(self, other: "EvaluationCache") -> None:
        """Raise unless ``other`` comes from the same network and space (for reporting on another split)."""
        for key in ("model", "num_classes", "exits", "space"):
            if self.meta.get(key) != other.meta.get(key):
                raise CacheError(
                    f"the caches differ in '{key}' ({self.meta.get(key)!r} vs {other.meta.get(key)!r}); "
                    "build both from the same multi_exit.pt"
                )

    def subset(self, images: Sequence[int] | np.ndarray) -> "EvaluationCache":
        """The cache of only ``images`` (indices into this split, in the order given; repeats allowed), e.g. one half
        of the split to tune on and the other to check on. Costs are per image and stay the same; ``meta["images"]``
        (the names, when recorded) follows the selection.

        >>> cache = EvaluationCache.random(images=6, seed=0)
        >>> half = cache.subset([4, 0, 2])
        >>> half.num_images, half.meta["images"], bool((half.tp[1] == cache.tp[0]).all())
        (3, ['img4', 'img0', 'img2'], True)
        """
        idx = np.asarray(images, dtype=np.int64).reshape(-1)
        if idx.size == 0 or idx.min() < -self.num_images or idx.max() >= self.num_images:
            raise CacheError(
                f"a subset needs at least one image index in 0..{self.num_images - 1}, got {idx.tolist()[:10]}"
            )
        idx = idx % self.num_images
        meta = dict(self.meta)
        names = meta.get("images")
        if isinstance(names, list) and len(names) == self.num_images:
            meta["images"] = [names[i] for i in idx]
        groups = meta.get("image_groups")
        if isinstance(groups, list) and len(groups) == self.num_images:
            meta["image_groups"] = [groups[i] for i in idx]
        per_image = {
            name: getattr(self, name)[idx]
            for name in ("tp", "pred", "label", "above", "above_plain", "conf_sum", "pixels")
        }
        return EvaluationCache(
            meta=meta,
            **per_image,
            stage_gflops=self.stage_gflops,
            head_gflops=self.head_gflops,
            stage_ms=self.stage_ms,
            head_ms=self.head_ms,
        )

    # ------------------------------------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the cache as one ``.npz`` file atomically (never half-written)."""
        path = Path(path)
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        if self.has_latency:
            arrays.update(stage_ms=self.stage_ms, head_ms=self.head_ms)
        with atomic_open(path, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(self.meta)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "EvaluationCache":
        path = input_file(path, CacheError, "no such cache file; build one with `python -m mess_core cache`")
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic and magic != b"PK\x03\x04":  # an .npz is a zip archive
            raise CacheError(
                f"{path}: is not an evaluation cache (an .npz archive; this file starts with {magic!r}); "
                "name the .npz written by `python -m mess_core cache`"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: data[name] for name in data.files if name != "meta"}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no detail"
            size = path.stat().st_size
            what = (
                "an empty (0-byte) file"
                if size == 0
                else f"not a readable evaluation cache ({type(exc).__name__}: {detail})"
            )
            raise CacheError(
                f"{path}: {what}; it may be truncated or not an .npz written by `python -m mess_core cache`: rebuild it"
            ) from None
        if not isinstance(meta, dict):
            raise CacheError(
                f"{path}: entry 'meta' is a JSON {type(meta).__name__}, expected an object; rebuild the cache"
            )
        if meta.get("format") != CACHE_FORMAT:
            raise CacheError(f"{path}: format {meta.get('format')!r}, expected {CACHE_FORMAT!r}; rebuild the cache")
        for key in ("space", "th_pix_grid"):
            value = meta.get(key)
            if not isinstance(value, list) or not value:
                raise CacheError(
                    f"{path}: meta field '{key}' is {value!r}, expected a non-empty list; rebuild the cache"
                )
        missing = [n for n in _ARRAYS if n not in arrays]
        if missing:
            raise CacheError(f"{path}: missing arrays {missing}; the file is damaged, rebuild it")
        cache = cls(
            meta=meta, **{n: arrays[n] for n in _ARRAYS}, stage_ms=arrays.get("stage_ms"), head_ms=arrays.get("head_ms")
        )
        cache.validate(str(path))
        return cache

    def validate(self, where: str = "cache") -> None:
        self._validate_meta(where)
        b, h, k = self.tp.shape
        n = self.stage_gflops.shape[0]
        c = len(self.configs)
        g = len(self.th_pix_grid)
        expected = {
            "pred": (b, h, k),
            "label": (b, k),
            "above": (b, h, g),
            "above_plain": (b, h, g),
            "conf_sum": (b, h),
            "pixels": (b,),
            "head_gflops": (n - 1, c),
        }
        if self.has_latency:
            expected.update(stage_ms=(n,), head_ms=(n - 1, c))
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise CacheError(f"{where}: array '{name}' has shape {getattr(self, name).shape}, expected {shape}")
        if h != (n - 1) * c + 1:
            raise CacheError(f"{where}: {h} heads do not match {n - 1} early exits x {c} configurations + the final")
        absent = self.meta.get("absent_heads") or {}
        if not isinstance(absent, dict) or not all(
            isinstance(e, str)
            and e.isdigit()
            and 1 <= int(e) < n
            and isinstance(cs, list)
            and all(isinstance(x, str) and x in self.configs for x in cs)
            for e, cs in absent.items()
        ):
            raise CacheError(
                f"{where}: meta field 'absent_heads' is {absent!r}, expected early exits (1..{n - 1}) "
                "mapped to lists of configurations of its space; rebuild the cache"
            )
        self._validate_counts(where)

    def _validate_meta(self, where: str) -> None:
        """Refuse metadata that contradicts itself or the arrays: the grid (numbers in (0, 1], strictly increasing:
        the search reads it by position), the space (unique configuration ids), the class count and names, the
        input size, and the image names."""
        fix = "the file is damaged or was edited; rebuild it with `python -m mess_core cache`"
        meta = self.meta
        grid = meta.get("th_pix_grid")
        if (
            not isinstance(grid, list)
            or not grid
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 < t <= 1 for t in grid)
            or any(a >= b for a, b in zip(grid, grid[1:]))
        ):
            raise CacheError(
                f"{where}: meta field 'th_pix_grid' is {str(grid)[:120]}, expected increasing numbers in (0, 1]; {fix}"
            )
        space = meta.get("space")
        if not isinstance(space, list) or not space or not all(isinstance(c, str) and c for c in space):
            raise CacheError(f"{where}: meta field 'space' is {str(space)[:120]}, expected configuration ids; {fix}")
        if len(set(space)) != len(space):
            twice = sorted({c for c in space if space.count(c) > 1})
            raise CacheError(f"{where}: meta field 'space' lists {', '.join(twice)} more than once; {fix}")
        k = self.tp.shape[2] if self.tp.ndim == 3 else None
        if "num_classes" in meta and meta["num_classes"] != k:
            raise CacheError(
                f"{where}: meta field 'num_classes' is {meta['num_classes']!r} but the arrays hold {k} classes; {fix}"
            )
        classes = meta.get("classes")
        if classes is not None and (not isinstance(classes, list) or len(classes) != k):
            raise CacheError(
                f"{where}: meta field 'classes' names {str(classes)[:120]}, not the {k} classes of the arrays; {fix}"
            )
        size = meta.get("input_size")
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
        ):
            raise CacheError(f"{where}: meta field 'input_size' is {str(size)[:120]}, expected [height, width]; {fix}")
        if self.tp.ndim != 3 or self.tp.shape[0] == 0:
            raise CacheError(f"{where}: holds no images; build the cache on a split with images")
        names = meta.get("images")
        if names is not None and (not isinstance(names, list) or len(names) != self.tp.shape[0]):
            raise CacheError(
                f"{where}: meta field 'images' names {len(names) if isinstance(names, list) else names!r} "
                f"images but the arrays hold {self.tp.shape[0]}; {fix}"
            )

    def _validate_counts(self, where: str) -> None:
        """Refuse counts no evaluation can produce (a damaged or hand-edited file would otherwise give nonsense such
        as a negative mIoU): every count is finite and >= 0, a class's true positives never exceed its predictions
        nor its labels, and no image has more predicted, labelled or confident pixels than it has pixels."""
        fix = "the file is damaged or was edited; rebuild it with `python -m mess_core cache`"

        def where_first(name: str, bad: np.ndarray, detail: str) -> None:
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            count = int(bad.sum())
            raise CacheError(
                f"{where}: array '{name}' {detail} at index {list(idx)} ({count} entr"
                f"{'y' if count == 1 else 'ies'} in all); {fix}"
            )

        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        for extra in ("stage_ms", "head_ms"):
            if getattr(self, extra) is not None:
                arrays[extra] = np.asarray(getattr(self, extra))
        for name, arr in arrays.items():
            if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
                raise CacheError(f"{where}: array '{name}' holds {arr.dtype} values, expected numbers; {fix}")
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                where_first(name, ~np.isfinite(arr), "holds a non-finite value")
            if (arr < 0).any():
                first = arr[tuple(np.argwhere(arr < 0)[0])]
                where_first(name, arr < 0, f"holds a negative value ({first})")
        tp, pred, label, pixels = arrays["tp"], arrays["pred"], arrays["label"], arrays["pixels"]
        if (tp > pred).any():
            where_first("tp", tp > pred, "exceeds 'pred' (more true positives than predictions)")
        if (tp > label[:, None, :]).any():
            where_first("tp", tp > label[:, None, :], "exceeds 'label' (more true positives than labelled pixels)")
        if (pixels == 0).any():
            where_first("pixels", pixels == 0, "is 0 (an image without pixels)")
        px = pixels.astype(np.float64)
        for name, total in (("label", label.sum(-1)), ("pred", pred.sum(-1))):
            over = total > (px if total.ndim == 1 else px[:, None])
            if over.any():
                where_first(name, over, "sums to more pixels than the image has (see 'pixels')")
        for name in ("above", "above_plain"):
            over = arrays[name] > px[:, None, None]
            if over.any():
                where_first(name, over, "counts more confident pixels than the image has (see 'pixels')")
        over = arrays["conf_sum"] > px[:, None] * (1 + 1e-6) + 1e-6
        if over.any():
            where_first("conf_sum", over, "exceeds the image's pixel count (confidences are at most 1)")
        if label.sum() == 0:
            raise CacheError(
                f"{where}: array 'label' holds no labelled pixel at all: no accuracy can be measured; {fix}"
            )
        for name in ("above", "above_plain"):  # a higher threshold never finds more confident pixels
            rising = np.diff(arrays[name].astype(np.int64), axis=-1) > 0
            if rising.any():
                where_first(name, rising, "counts more confident pixels at a higher th_pix (see 'th_pix_grid')")

    # ------------------------------------------------------------------------------------------------ testing aid
    @classmethod
    def random(
        cls,
        *,
        images: int = 6,
        exits: int = 3,
        configs: int = 2,
        classes: int = 3,
        pixels: int = 64,
        grid: Sequence[float] = (0.5, 0.7, 0.9),
        seed: int = 0,
        latency: bool = False,
    ) -> "EvaluationCache":
        """A small, internally consistent cache with random statistics (deeper heads tend to be more accurate and
        more confident), for tests and doctests of the search. ``exits`` is N, the final exit included."""
        rng = np.random.default_rng(seed)
        e = exits - 1
        h = e * configs + 1
        depth = np.concatenate([np.repeat(np.arange(1, exits), configs), [exits]]) / exits  # (H,)
        label = rng.multinomial(pixels, rng.dirichlet(np.ones(classes)), size=images)  # (B, K)
        skill = np.clip(depth[None, :] * rng.uniform(0.6, 1.0, (images, h)) + rng.normal(0, 0.1, (images, h)), 0, 1)
        tp = rng.binomial(label[:, None, :], skill[..., None])  # (B, H, K)
        wrong = label[:, None, :] - tp  # misclassified pixels are predicted as some other class
        moved = np.zeros_like(tp)
        others = (np.ones((classes, classes)) - np.eye(classes)) / max(classes - 1, 1)  # a miss goes to another class
        for b, j, k in zip(*np.nonzero(wrong)):
            moved[b, j] += rng.multinomial(wrong[b, j, k], others[k]) if classes > 1 else wrong[b, j, k]
        pred = tp + moved
        conf = np.clip(skill + rng.normal(0, 0.15, (images, h)), 0.05, 1.0)
        g = np.asarray(grid)
        fracs = np.clip(conf[..., None] - (g[None, None, :] - 0.5) * rng.uniform(0.3, 1.2, (images, h, 1)), 0, 1)
        fracs = np.sort(fracs, axis=-1)[..., ::-1]  # never rising with the threshold
        above = np.floor(fracs * pixels).astype(np.int64)
        above_plain = np.floor(np.clip(fracs - 0.05, 0, 1) * pixels).astype(np.int64)
        stage = rng.uniform(0.5, 1.5, exits)
        head = rng.uniform(0.05, 0.4, (e, configs))
        meta = {
            "format": CACHE_FORMAT,
            "model": "random",
            "dataset": "random",
            "split": "random",
            "input_size": [8, 8],
            "num_classes": classes,
            "classes": [f"c{k}" for k in range(classes)],
            "exits": list(range(1, exits)),
            "space": [f"crm{8 * (c + 1)}-b0-fcn" for c in range(configs)],
            "th_pix_grid": [float(v) for v in grid],
            "edge_masking": {"size": 3, "window": 7},
            "images": [f"img{b}" for b in range(images)],
        }
        return cls(
            meta=meta,
            tp=tp,
            pred=pred,
            label=label,
            above=above,
            above_plain=above_plain,
            conf_sum=conf * pixels,
            pixels=np.full(images, pixels),
            stage_gflops=stage,
            head_gflops=head,
            stage_ms=stage * 3.0 if latency else None,
            head_ms=head * 5.0 if latency else None,
        )


# ---------------------------------------------------------------------------------------------------- building
def _measure_latency(
    net: Any, specs: Sequence[ExitSpec], input_size: tuple[int, int], device: torch.device, repeats: int
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
    """The per-image arrays of :class:`EvaluationCache` that :func:`build_cache` fills batch by batch."""

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
    computing every statistic of :class:`EvaluationCache`. An exit that lacks a configuration others carry gives a
    partial cache (``meta["absent_heads"]``)."""
    device = torch.device(device)
    specs, absent = _exit_space(net)
    grid = sorted(float(v) for v in th_pix_grid)
    info = dataset.info
    k, ignore = info.num_classes, info.ignore_index
    if k != net.num_classes:
        raise CacheError(f"the dataset has {k} classes but the network predicts {net.num_classes}")
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise CacheError("the split is empty: nothing to evaluate")
    heads = (net.num_exits - 1) * len(specs) + 1
    stats = _Statistics.zeros(count, heads, k, grid, device, ignore, edges)
    size: tuple[int, int] | None = None
    names: list[str] = []
    groups: list[str] = []  # each image's group (scene), where the dataset says

    batches = range(0, count, batch_size)
    with evaluating(net):
        for start in progress(batches) if progress else batches:
            idx = list(range(start, min(start + batch_size, count)))
            images, labels, size = _load_batch(dataset, idx, size, device, k, ignore)
            rows = slice(start, start + len(idx))
            names += [_image_name(dataset, i) for i in idx]
            groups += [str(dataset.group_of(i)) for i in idx] if hasattr(dataset, "group_of") else []
            stats.count_labels(rows, labels, size)
            features, final = net.forward_features(images)
            for i, feat in enumerate(features, start=1):
                for c, spec in enumerate(specs):
                    if spec in absent.get(str(i), ()):
                        continue  # its rows stay zero; meta["absent_heads"] makes head_index refuse them
                    stats.record((i - 1) * len(specs) + c, rows, net.head(i, spec)(feat, size), labels)
            stats.record(heads - 1, rows, final, labels)
    assert size is not None
    stage_gflops = np.asarray(net.stage_flops(size)) / 1e9
    head_gflops = np.array([[net.head_flops(i, s, size) / 1e9 for s in specs] for i in range(1, net.num_exits)])
    stage_ms = head_ms = None
    if latency:
        with evaluating(net):
            stage_ms, head_ms = _measure_latency(net, [ExitSpec.parse(s) for s in specs], size, device, latency_repeats)
    meta = {
        "format": CACHE_FORMAT,
        "model": model,
        "dataset": dataset_name,
        "split": split,
        "input_size": list(size),
        "num_classes": k,
        "classes": list(info.classes),
        "ignore_index": ignore,
        "exits": [{"index": e.index, "module": e.module} for e in net.exits],
        "space": list(specs),
        "th_pix_grid": grid,
        "edge_masking": {"size": edges.size, "window": edges.window},
        "images": names,
        **({"image_groups": groups} if len(groups) == len(names) else {}),
        **({"absent_heads": absent} if absent else {}),
        "latency_device": (
            torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
        )
        if latency
        else None,
        **(extra_meta or {}),
    }
    cache = EvaluationCache(
        meta=meta,
        **stats.arrays(),
        stage_gflops=stage_gflops,
        head_gflops=head_gflops,
        stage_ms=stage_ms,
        head_ms=head_ms,
    )
    cache.validate()
    return cache
