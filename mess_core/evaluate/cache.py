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
  and, when measured, the same in milliseconds (``stage_ms``, ``head_ms``), with the milliseconds of each policy's
  decision at an exit (``meta["decision_ms"]``).

It is one ``.npz`` file with a JSON ``meta`` entry (model, dataset, split, input size, classes, exits, space,
threshold grid, edge masking, what was measured where). This module holds the data, its file and what follows from
it; :mod:`.cache_build` runs the network pass that fills it, :mod:`.cache_checks` refuses figures no pass produces.

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

from ..conversion.exits import ExitSpec
from ..data.selection import selection_label
from ..errors import MessError
from ..io import atomic_open, input_file
from .cache_checks import count_problem, meta_problem

__all__ = ["EvaluationCache", "CacheError", "TH_PIX_GRID", "CACHE_FORMAT", "POLICIES", "head_row"]

CACHE_FORMAT = "mess-cache/1"
# th_pix values the cache can answer for: every search and the app pick th_pix from this grid
TH_PIX_GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)
POLICIES = ("mess", "plain", "naive")  # edge-masked fraction, unmasked fraction, mean confidence
Unit = Literal["gflops", "ms"]

_ARRAYS = ("tp", "pred", "label", "above", "above_plain", "conf_sum", "pixels", "stage_gflops", "head_gflops")


class CacheError(MessError):
    """An evaluation cache file that cannot be used, or a request it cannot answer."""


def head_row(exit: int, config: int, configs: int) -> int:
    """Row of ``tp``/``above``/... of configuration number ``config`` (of ``configs`` in the space) at early exit
    ``exit``: every early exit's heads in exit order, each in the space's order, then the final exit's, which is
    ``head_row(N, 0, configs)`` (so a cache of N exits has ``head_row(N, 0, configs) + 1`` rows).

        >>> head_row(2, 1, 3), head_row(4, 0, 3)
        (4, 9)
    """
    return (exit - 1) * configs + config


def _refuse(problem: str | None) -> None:
    if problem is not None:
        raise CacheError(problem)


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
        return head_row(exit, index, len(self.configs))

    @property
    def image_groups(self) -> list[str] | None:
        """Each image's group (scene), where the dataset it was evaluated on said; None for caches that do not record
        them."""
        groups = self.meta.get("image_groups")
        return groups if isinstance(groups, list) and len(groups) == self.num_images else None

    @property
    def split_label(self) -> str:
        """The images' name in tables (:func:`mess_core.data.selection.selection_label`): the split and, where the
        cache records them, their groups (``train 0006R0``)."""
        return selection_label(self.meta.get("split"), self.image_groups or self.meta.get("groups") or [])

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

    def exit_cost(self, policy: str, unit: Unit = "gflops") -> np.ndarray:
        """(N-1, C) per-image cost of an exit of an input-dependent instance: the head, then the decision."""
        return self.head_cost(unit) + self.decision_cost(policy, unit)

    def decision_cost(self, policy: str, unit: Unit = "gflops") -> float:
        """Per image, the cost of deciding at one exit under ``policy`` (its c_img, compared with th_img), which an
        input-dependent instance pays at every kept exit an image reaches: the milliseconds measured with the
        latency (``meta["decision_ms"]``), 0 where they were not (caches built before they were) and in GFLOPs (a
        softmax and a mask over the output, a few MFLOPs)."""
        if policy not in POLICIES:
            raise CacheError(f"policy must be one of {POLICIES}, not {policy!r}")
        self._cost(unit)  # the unit is known, and ms are measured
        return float((self.meta.get("decision_ms") or {}).get(policy, 0.0)) if unit == "ms" else 0.0

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
        """Raise :class:`CacheError` (naming ``where``) on anything no evaluation can produce: metadata or counts that
        contradict themselves (see :mod:`.cache_checks`), arrays of the wrong shape, unknown absent heads."""
        _refuse(meta_problem(self.meta, self.tp, where))
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
        if h != head_row(n, 0, c) + 1:
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
        arrays = {name: np.asarray(getattr(self, name)) for name in _ARRAYS}
        for extra in ("stage_ms", "head_ms"):
            if getattr(self, extra) is not None:
                arrays[extra] = np.asarray(getattr(self, extra))
        _refuse(count_problem(arrays, where))

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
        if latency:  # drawn last: the arrays above are the same with or without latency
            meta["decision_ms"] = dict(zip(POLICIES, (float(v) for v in rng.uniform(0.2, 1.0, len(POLICIES)))))
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
