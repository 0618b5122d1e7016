"""How sure a promise is: the mIoU drop of an instance against the backbone (the final exit), with a bootstrap
confidence interval over the images of the split, and the cheapest instance whose drop stays within a bound at a
stated confidence.

The split is one sample of images; another sample would give another drop. The bootstrap estimates how much:
resample the N images with replacement (``resamples`` times, a fixed ``seed`` so every figure is reproducible), sum
each resample's integer counts for the instance AND for the backbone on the SAME resample (paired: the images that
are hard for one are hard for the other, so the difference varies far less than either mIoU), recompute both mIoUs
(IoU = tp / (label + pred - tp) per class, NaN where the union is 0, averaged over the other classes, as
:func:`mess_core.evaluate.instance.evaluate` does) and take ``drop = backbone - instance`` in percentage points.
Reported:

* ``point``: the drop on the split itself; ``mean``: its average over the resamples;
* ``low``, ``high``: the central ``level`` percentile interval (90%: the 5th and 95th percentiles);
* ``upper``: the one-sided upper bound at ``confidence`` (its percentile: 90% -> the 90th). "Drop <= upper at 90%"
  is the promise; the percentile bootstrap is an approximation that assumes images are independent draws.

These bound the drop over the population the images come from. The drop measured on a *fresh sample* of M images
varies more (that sample has its own noise): with ``fresh_images=M`` the interval and bound are predictive, for the
drop such a sample would show: ``point + D_M - D_N``, D_M the drop on a resample of M images (a second, independent
set of resamples) and D_N on one of the split's N. Neither accounts for the search having chosen the instance on
these images (thresholds fitted to them look better here than elsewhere): BENCHMARKS.md measures how much that costs.

Images of one scene are not independent draws (frames a second apart of one drive look alike, and are alike hard
for the network): with ``block=B`` the bootstrap resamples *scene blocks* instead of images, B consecutive images of
one group (the cache's ``image_groups``, in its image order; see :func:`scene_blocks`), so the interval carries the
scene-to-scene spread too. A fresh sample of M images is then M/B fresh blocks. Fewer than :data:`MIN_BLOCKS` blocks
cannot be resampled into an interval (one block gives every resample the same images, an interval of zero width):
the bootstrap then resamples single images, and the interval records ``block=None``.

It is vectorised: the chosen head's per-image counts (N, K) of every instance, a (resamples, N) matrix of multinomial
resample counts, one matrix product per instance for the (resamples, K) totals.

:func:`confident_choice` is the confidence-aware objective (``search --max-drop 1 --confidence 0.9``): the cheapest
instance whose one-sided upper bound of the drop is <= max_drop. Restriction: it only considers the instances of
the accuracy-vs-cost Pareto front (by point mIoU) whose point drop is <= max_drop, walked by increasing cost; an
instance off the front (more cost for less point mIoU) with a narrower interval could meet the bound more cheaply and
is not considered.

Example:
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> from mess_core.evaluate.instance import Instance, KeptExit
    >>> cache = EvaluationCache.random(images=30, exits=3, configs=2, seed=4)
    >>> inst = Instance("budgeted", (KeptExit(2, cache.configs[1]),))
    >>> found = drop_interval(cache, inst, resamples=500, seed=0)
    >>> found.low <= found.point <= found.high and found.upper <= found.high
    True
    >>> drop_interval(cache, Instance("budgeted")).describe()  # the backbone against itself
    'drop 0.00 pp (90% interval 0.00 to 0.00; <= 0.00 pp at 90% confidence, 1000 resamples over 30 images)'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import MessError
from ..evaluate.cache import EvaluationCache
from ..evaluate.instance import Instance, evaluate, iou_of_counts, mean_iou

__all__ = [
    "DropInterval",
    "UncertaintyError",
    "resample_weights",
    "scene_blocks",
    "image_heads",
    "bootstrap_drops",
    "drop_interval",
    "drop_intervals",
    "confident_choice",
    "ConfidentChoice",
    "check_confidence",
    "DEFAULT_RESAMPLES",
    "DEFAULT_LEVEL",
]

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.9
# the fewest scene blocks a block bootstrap resamples; with fewer, single images are resampled instead
MIN_BLOCKS = 5


class UncertaintyError(MessError):
    """A bootstrap that cannot be set up as asked."""


def check_confidence(value: float, what: str = "confidence") -> float:
    """``value`` if it is a confidence level this module takes (0.5 <= value < 1), else :class:`UncertaintyError`."""
    if not isinstance(value, (int, float)) or not 0.5 <= value < 1.0:
        raise UncertaintyError(f"{what} must be a level in [0.5, 1), e.g. 0.9, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class DropInterval:
    """An instance's mIoU drop against the backbone, in percentage points, with its bootstrap uncertainty."""

    point: float  # on the split itself
    mean: float  # over the resamples
    low: float  # central `level` percentile interval
    high: float
    upper: float  # one-sided upper bound at `confidence`
    level: float
    confidence: float
    resamples: int
    images: int
    seed: int
    fresh_images: int | None = None  # predictive: for the drop a fresh sample of this many images shows
    block: int | None = None  # scene blocks of this many consecutive images of a group were resampled, not images

    def within(self, max_drop: float) -> bool:
        """Whether the promise "drop <= max_drop" holds at this interval's confidence."""
        return self.upper <= max_drop + 1e-9

    def describe(self) -> str:
        return (
            f"drop {self.point:.2f} pp ({100 * self.level:g}% interval {self.low:.2f} to {self.high:.2f}; "
            f"<= {self.upper:.2f} pp at {100 * self.confidence:g}% confidence, {self.resamples} resamples over "
            f"{self.images} images"
            + (f" in scene blocks of {self.block}" if self.block else "")
            + (f"; on a fresh sample of {self.fresh_images}" if self.fresh_images else "")
            + ")"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the instance file's ``uncertainty``)."""
        return {
            f"drop_{k}_pp" if k in ("point", "mean", "low", "high", "upper") else k: v for k, v in asdict(self).items()
        }


@lru_cache(maxsize=8)
def _weights(images: int, resamples: int, seed: int, size: int | None) -> np.ndarray:
    rng = np.random.default_rng(seed if size is None else (seed, 1, size))  # fresh samples: an independent stream
    w = rng.multinomial(size or images, np.full(images, 1.0 / images), size=resamples).astype(np.float64)
    w.setflags(write=False)
    return w


def resample_weights(
    images: int,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    *,
    size: int | None = None,
    blocks: np.ndarray | None = None,
) -> np.ndarray:
    """(resamples, images) read-only float array: how many times each image is drawn in each resample (rows sum to
    ``images``, or to ``size``: then from a stream independent of the one without); the same arguments give the same
    matrix. With ``blocks`` (each image's block number, 0..K-1) whole blocks are drawn, K of them (or ``size``
    images' worth: ``size`` / mean block size, at least one), and each image weighs as often as its block was drawn.

        >>> w = resample_weights(4, 3, blocks=np.array([0, 0, 1, 1]))
        >>> bool((w[:, 0] == w[:, 1]).all() and (w[:, 2] == w[:, 3]).all()), w.sum(1).tolist()
        (True, [4.0, 4.0, 4.0])
    """
    if images < 1 or resamples < 1 or (size is not None and size < 1):
        raise UncertaintyError(
            f"a bootstrap needs images >= 1, resamples >= 1 and a sample size >= 1, not {images}, "
            f"{resamples} and {size}"
        )
    if blocks is None:
        return _weights(int(images), int(resamples), int(seed), None if size is None else int(size))
    blocks = np.asarray(blocks, dtype=np.int64)
    if blocks.shape != (images,) or blocks.min() < 0:
        raise UncertaintyError(f"blocks must give each of the {images} images a block number >= 0")
    count = int(blocks.max()) + 1
    draws = None if size is None else max(1, round(size * count / images))
    return _weights(count, int(resamples), int(seed), draws)[:, blocks]


def scene_blocks(cache: EvaluationCache, block: int) -> np.ndarray:
    """Each image's scene block: runs of ``block`` consecutive images of one group (``meta["image_groups"]``, all one
    group when the cache does not record them), in the cache's image order (a drive's frames in time order).

        >>> cache = EvaluationCache.random(images=5)
        >>> scene_blocks(cache, 2).tolist()
        [0, 0, 1, 1, 2]
    """
    if not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise UncertaintyError(f"a scene block must be a whole number of images >= 1, not {block!r}")
    seen: dict[str, int] = {}
    keys = []  # (group, run of `block` images within it), in image order
    for g in cache.image_groups or ["all"] * cache.num_images:
        keys.append((g, seen.get(g, 0) // block))
        seen[g] = seen.get(g, 0) + 1
    number = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    return np.asarray([number[key] for key in keys], dtype=np.int64)


def image_heads(cache: EvaluationCache, instance: Instance) -> np.ndarray:
    """(N,) the cache head (row of ``tp``/``pred``) each image's headline output comes from under ``instance``."""
    return evaluate(cache, instance).head_taken


def _per_image(cache: EvaluationCache, heads: np.ndarray) -> np.ndarray:
    """(..., N, 2K): true positives then predictions of each image at ``heads`` (..., N)."""
    idx = np.arange(cache.num_images)
    return np.concatenate([cache.tp[idx, heads], cache.pred[idx, heads]], axis=-1).astype(np.float64)


def bootstrap_drops(cache: EvaluationCache, heads: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drops in pp (backbone - instance) of instances whose images use ``heads`` (M, N): the point drops (M,) on the
    split, and (M, R) on each resample of ``weights`` (R, N), paired with the backbone on the same resample."""
    heads = np.atleast_2d(heads)
    k = cache.num_classes
    label = cache.label.astype(np.float64)  # (N, K)
    final = np.concatenate([_per_image(cache, np.full(cache.num_images, cache.final_head)), label], axis=1)
    every = np.concatenate([weights, np.ones((1, weights.shape[1]))])  # the split itself as a last "resample"
    base_totals = every @ final  # (R + 1, 3K)
    labels = base_totals[:, 2 * k :]
    base = mean_iou(iou_of_counts(labels, base_totals[:, :k], base_totals[:, k : 2 * k]))  # (R + 1,)
    totals = np.einsum("rn,mnk->mrk", every, _per_image(cache, heads), optimize=True)  # (M, R + 1, 2K)
    miou = mean_iou(iou_of_counts(labels[None], totals[..., :k], totals[..., k:]))  # (M, R + 1)
    drops = 100.0 * (base[None, :] - miou)
    return drops[:, -1], drops[:, :-1]


def _summaries(
    point: np.ndarray,
    drops: np.ndarray,
    *,
    level: float,
    confidence: float,
    seed: int,
    images: int,
    fresh: int | None,
    block: int | None,
) -> list[DropInterval]:
    tail = (1.0 - level) / 2
    qs = np.nanquantile(drops, [tail, 1.0 - tail, confidence], axis=1)  # (3, M); resamples >= 1 always
    mean = np.nanmean(drops, axis=1)
    return [
        DropInterval(
            float(point[m]),
            float(mean[m]),
            float(qs[0, m]),
            float(qs[1, m]),
            float(qs[2, m]),
            level,
            confidence,
            drops.shape[1],
            images,
            seed,
            fresh,
            block,
        )
        for m in range(len(point))
    ]


def drop_intervals(
    cache: EvaluationCache,
    instances: Sequence[Instance],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    confidence: float = DEFAULT_LEVEL,
    seed: int = 0,
    fresh_images: int | None = None,
    block: int | None = None,
) -> list[DropInterval]:
    """:func:`drop_interval` of many instances at once, on the same resamples (one product for all of them)."""
    check_confidence(level, "level")
    check_confidence(confidence)
    if not instances:
        return []
    blocks = None if block is None else scene_blocks(cache, block)
    if blocks is not None and int(blocks.max()) + 1 < MIN_BLOCKS:
        blocks, block = None, None  # too few blocks to resample: single images
    weights = resample_weights(cache.num_images, resamples, seed, blocks=blocks)
    heads = np.stack([image_heads(cache, inst) for inst in instances])
    point, drops = bootstrap_drops(cache, heads, weights)
    if fresh_images is not None:  # predictive: the fresh sample's own noise on top of this split's
        fresh = resample_weights(cache.num_images, resamples, seed, size=fresh_images, blocks=blocks)
        drops = point[:, None] + bootstrap_drops(cache, heads, fresh)[1] - drops
    return _summaries(
        point,
        drops,
        level=level,
        confidence=confidence,
        seed=seed,
        images=cache.num_images,
        fresh=fresh_images,
        block=block,
    )


def drop_interval(
    cache: EvaluationCache,
    instance: Instance,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = DEFAULT_LEVEL,
    confidence: float = DEFAULT_LEVEL,
    seed: int = 0,
    fresh_images: int | None = None,
    block: int | None = None,
) -> DropInterval:
    """The mIoU drop of ``instance`` against the backbone on ``cache``'s split, with its central ``level`` bootstrap
    interval and one-sided upper bound at ``confidence``; with ``fresh_images``, predictive for a fresh sample of
    that many images; with ``block``, over scene blocks of that many images (see the module docstring)."""
    return drop_intervals(
        cache,
        [instance],
        resamples=resamples,
        level=level,
        confidence=confidence,
        seed=seed,
        fresh_images=fresh_images,
        block=block,
    )[0]


@dataclass(frozen=True)
class ConfidentChoice:
    """What :func:`confident_choice` found: ``row``, the chosen row of the front (None when no candidate qualifies);
    ``rows`` and ``intervals``, every candidate examined (point drop <= max_drop) by increasing cost."""

    row: int | None
    rows: tuple[int, ...]
    intervals: tuple[DropInterval, ...]

    @property
    def interval(self) -> DropInterval | None:
        """The chosen instance's drop interval."""
        return None if self.row is None else self.intervals[self.rows.index(self.row)]


def confident_choice(
    cache: EvaluationCache,
    front: pd.DataFrame,
    max_drop: float,
    confidence: float,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = DEFAULT_LEVEL,
    fresh_images: int | None = None,
    block: int | None = None,
) -> ConfidentChoice:
    """The cheapest instance of ``front`` (a Pareto front: columns cost, miou, instance) whose one-sided upper bound
    of the drop at ``confidence`` is <= ``max_drop`` pp, among those whose point drop is <= max_drop (with
    ``fresh_images``: the predictive bound for a fresh sample of that many images). Only front instances are
    candidates (see the module docstring)."""
    check_confidence(confidence)
    base = float(cache.head_miou()[cache.final_head])
    cost = front["cost"].to_numpy(dtype=np.float64)
    ok = np.flatnonzero(front["miou"].to_numpy(dtype=np.float64) >= base - max_drop / 100.0 - 1e-12)
    order = ok[np.argsort(cost[ok], kind="stable")]
    rows = tuple(int(i) for i in order)
    found = tuple(
        drop_intervals(
            cache,
            [front["instance"].iloc[i] for i in rows],
            resamples=resamples,
            level=level,
            confidence=confidence,
            seed=seed,
            fresh_images=fresh_images,
            block=block,
        )
    )
    row = next((i for i, interval in zip(rows, found) if interval.within(max_drop)), None)
    return ConfidentChoice(row, rows, found)
