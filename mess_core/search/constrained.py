"""The MESS search: pick the exits to keep, their configurations and the exit policy's thresholds, from an
:class:`~mess_core.evaluate.cache.EvaluationCache`, under an accuracy or a cost constraint.

Objectives (``Objective``):

* ``min-cost``: minimise average cost per image subject to mIoU >= final-exit mIoU - ``max_drop`` (percentage points);
  with a ``confidence`` (e.g. 0.9), subject instead to the one-sided bootstrap upper bound of the drop at that
  confidence being <= ``max_drop``: the promise holds at that confidence, not only on this split's images (see
  :mod:`mess_core.search.uncertainty`; this one is searched over the Pareto front's instances only, not exhaustively);
* ``max-acc``: maximise mIoU subject to average cost <= ``budget`` x the backbone's cost;
* ``pareto``: every instance on the accuracy-vs-cost front.

The space (``SearchSpace``): which candidate exits may be kept (at most ``max_exits`` of them, the final exit always
last), each kept exit's configuration, and, in input-dependent mode, one th_pix from a grid (shared by every exit)
and one th_img per kept exit from a grid. Budgeted and anytime instances keep one early exit (see
:mod:`mess_core.evaluate.instance`: a second one could only add cost to them), so their search is over every exit x
configuration.

The search is exhaustive. Nothing is skipped unless it provably cannot change the answer (lossless pruning):

* th_img values that let the same images leave at an exit are one choice (the highest such value is kept);
* a kept exit that no image leaves at is dominated by not keeping it (same outputs, one head more);
* after an exit that every image leaves at, deeper exits are never reached and are not enumerated;
* min-cost: instances costing more than the best feasible one found so far are not scored for accuracy;
  max-acc: instances over the budget are not scored.

The test suite checks the result equals brute-force enumeration of the whole space on small caches. Every instance
that reaches accuracy scoring counts as evaluated.

Example:
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> cache = EvaluationCache.random(images=20, exits=4, configs=2, seed=3)
    >>> result = search(cache, Objective("min-cost", max_drop=1.0), mode="input-dependent",
    ...                 space=SearchSpace(th_pix=(0.7,), th_img=(0.3, 0.6, 0.9)))
    >>> result.miou >= result.reference_miou - 0.01 and result.cost <= result.reference_cost
    True
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from math import comb
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import MessError
from ..evaluate.cache import EvaluationCache
from ..evaluate.instance import MODES, Instance, KeptExit
from ..evaluate.policy import ConfidencePolicy, EdgeMasking
from .uncertainty import DEFAULT_RESAMPLES, DropInterval, UncertaintyError, check_confidence, confident_choice

__all__ = [
    "Objective",
    "SearchSpace",
    "SearchResult",
    "SearchError",
    "search",
    "confident_search",
    "pareto_front",
    "uniform_exit",
    "DEFAULT_TH_IMG",
    "DEFAULT_TH_PIX",
]

DEFAULT_TH_PIX = (0.6, 0.7, 0.8, 0.9, 0.95)
DEFAULT_TH_IMG = tuple(round(0.05 * i, 2) for i in range(1, 21))
_EPS = 1e-12
# The largest space (instances before pruning) a search takes on: max_exits 3 on the 5-exit x 30-configuration CamVid
# cache is 10.8 billion (12-14 s constrained, ~100 s for the front, BENCHMARKS.md); one more kept exit multiplies it
# by ~300 and would run for hours, so refuse instead.
MAX_SPACE_SIZE = 100_000_000_000
# instances per second a constrained search gets through after pruning, for the time estimate of a refused space
_SEARCH_RATE = 8e8
_CHUNK = 20_000  # partial instances or scored candidates handled per array operation


def _gather_product(r: np.ndarray, w: np.ndarray, cols: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(S, 2K): row ``rows[s]`` of ``r`` (M, B) times option ``cols[s]`` of ``w`` (B, 2K, n), in chunks."""
    out = np.empty((len(cols), w.shape[1]), dtype=w.dtype)
    for start in range(0, len(cols), _CHUNK):
        c = cols[start : start + _CHUNK]
        rr = r[rows[start : start + _CHUNK]] if rows is not None else r[start : start + _CHUNK]
        out[start : start + _CHUNK] = np.einsum("sb,bks->sk", rr, w[:, :, c], optimize=True)
    return out


class SearchError(MessError):
    """A search that cannot be set up as asked."""


@dataclass(frozen=True)
class Objective:
    kind: str  # "min-cost", "max-acc" or "pareto"
    max_drop: float | None = None  # percentage points below the final exit's mIoU (min-cost)
    budget: float | None = None  # multiple of the backbone's cost (max-acc)
    # min-cost only: the drop's one-sided bootstrap upper bound at this confidence must be <= max_drop (0.5 <= c < 1)
    confidence: float | None = None
    # with a confidence: the bound is predictive, for the drop a fresh sample of this many images would show (that
    # sample's own noise added; see mess_core.search.uncertainty)
    fresh_images: int | None = None
    # with a confidence: the bootstrap resamples scene blocks of this many consecutive images of a group, not images
    # (frames of one drive are not independent draws; see mess_core.search.uncertainty)
    block: int | None = None

    def __post_init__(self) -> None:
        if self.confidence is not None:
            if self.kind != "min-cost":
                raise SearchError(f"a confidence level applies to min-cost only, not to {self.kind}")
            try:
                check_confidence(self.confidence)
            except UncertaintyError as exc:
                raise SearchError(str(exc)) from None
        if self.fresh_images is not None and (
            self.confidence is None
            or isinstance(self.fresh_images, bool)
            or not isinstance(self.fresh_images, int)
            or self.fresh_images < 1
        ):
            raise SearchError(
                f"fresh_images needs a confidence level and a whole number of images >= 1, not {self.fresh_images!r}"
            )
        if self.block is not None and (
            self.confidence is None or isinstance(self.block, bool) or not isinstance(self.block, int) or self.block < 1
        ):
            raise SearchError(f"block needs a confidence level and a whole number of images >= 1, not {self.block!r}")
        if self.kind == "min-cost":
            if self.max_drop is None or self.max_drop < 0:
                raise SearchError(f"min-cost needs max_drop >= 0 percentage points, not {self.max_drop!r}")
        elif self.kind == "max-acc":
            if self.budget is None or self.budget <= 0:
                raise SearchError(
                    f"max-acc needs a budget > 0 (a multiple of the backbone's cost), not {self.budget!r}"
                )
        elif self.kind != "pareto":
            raise SearchError(f"objective must be min-cost, max-acc or pareto, not {self.kind!r}")

    def describe(self) -> str:
        if self.kind == "min-cost":
            sure = f" at {100 * self.confidence:g}% confidence" if self.confidence is not None else ""
            sure += f" for a fresh sample of {self.fresh_images} images" if self.fresh_images else ""
            sure += f" over scene blocks of {self.block}" if self.block else ""
            return f"min cost, mIoU drop <= {self.max_drop:g} pp{sure}"
        if self.kind == "max-acc":
            return f"max mIoU, cost <= {self.budget:g}x backbone"
        return "Pareto front"


@dataclass(frozen=True)
class SearchSpace:
    """What the search may choose. ``exits``/``configs``: allowed candidate exits and configuration ids (None: all
    of the cache's); ``policy``: "mess" (edge-masked), "plain" (no edge masking) or "naive" (mean confidence, which has
    no th_pix)."""

    exits: tuple[int, ...] | None = None
    configs: tuple[str, ...] | None = None
    max_exits: int = 2
    th_pix: tuple[float, ...] | None = None  # None: DEFAULT_TH_PIX where the cache's grid has them, else its grid
    th_img: tuple[float, ...] = DEFAULT_TH_IMG
    policy: str = "mess"
    edges: EdgeMasking = EdgeMasking()

    def resolve(
        self, cache: EvaluationCache, mode: str = "input-dependent"
    ) -> tuple[list[int], list[int], list[float | None]]:
        exits = list(self.exits) if self.exits is not None else list(range(1, cache.num_exits))
        for e in exits:
            if not 1 <= e < cache.num_exits:
                raise SearchError(f"candidate exit {e} is not an early exit of this cache (1..{cache.num_exits - 1})")
        configs = (
            [cache.config_index(c) for c in self.configs]
            if self.configs is not None
            else list(range(len(cache.configs)))
        )
        if cache.absent_heads:  # a partial cache: only the configurations it has figures for at every candidate exit
            whole = set(cache.configs_at_every_exit(exits))
            configs = [c for c in configs if cache.configs[c] in whole]
            if not configs:
                raise SearchError(
                    "this cache has figures for no configuration at every candidate exit (its network "
                    "carries some heads only at some exits); restrict --exits, or build the cache from "
                    "a network that carries every head"
                )
        if self.policy == "naive" or mode != "input-dependent":
            th_pix: list[float | None] = [None]
        elif self.th_pix is None:
            grid = cache.th_pix_grid
            th_pix = [p for p in DEFAULT_TH_PIX if np.isclose(grid, p, rtol=0, atol=1e-9).any()] or list(grid)
        else:
            th_pix = [float(p) for p in self.th_pix]
            for p in th_pix:
                cache.th_pix_index(p)
        if self.max_exits < 0:
            raise SearchError(f"max_exits must be >= 0, not {self.max_exits}")
        return sorted(set(exits)), sorted(set(configs)), th_pix

    def size(self, cache: EvaluationCache, mode: str) -> int:
        """How many instances the space holds before any pruning (the backbone included)."""
        exits, configs, th_pix = self.resolve(cache, mode)
        if mode != "input-dependent":
            return 1 + len(exits) * len(configs)
        per_exit = len(configs) * len(self.th_img)
        total = 0
        # subsets of size k of the candidate exits: C(E, k) * per_exit^k, for every th_pix (k = 0 once)
        for k in range(1, min(self.max_exits, len(exits)) + 1):
            total += comb(len(exits), k) * per_exit**k
        return 1 + total * len(th_pix)


@dataclass
class SearchResult:
    instance: Instance | None  # None when no instance meets the constraint
    miou: float
    cost: float
    unit: str
    objective: Objective
    mode: str
    reference_miou: float  # the final exit's (backbone's) mIoU
    reference_cost: float  # the backbone's cost
    space_size: int
    evaluated: int
    seconds: float
    front: pd.DataFrame | None = None
    # confidence-aware min-cost: the chosen instance's drop interval, and those of every candidate examined
    interval: DropInterval | None = None
    candidates: list[DropInterval] | None = None


# ------------------------------------------------------------------------------------------------- collectors
class _Collector:
    """Receives blocks of scored candidates and keeps what the objective asks for."""

    def __init__(self, objective: Objective, target_miou: float, budget_cost: float):
        self.objective = objective
        self.target = target_miou
        self.budget = budget_cost
        self.best: tuple[float, float, Any] | None = None  # (cost, miou, key)
        self.points: list[tuple[np.ndarray, np.ndarray, list[Any]]] = []
        self.evaluated = 0

    def cost_limit(self) -> float:
        """Candidates above this cost cannot matter (lossless)."""
        if self.objective.kind == "min-cost":
            return self.best[0] if self.best is not None else np.inf
        if self.objective.kind == "max-acc":
            return self.budget
        return np.inf

    def miou_floor(self) -> float:
        """Instances below this mIoU cannot matter (lossless)."""
        if self.objective.kind == "min-cost":
            return self.target
        if self.objective.kind == "max-acc" and self.best is not None:
            return self.best[1]
        return -np.inf

    def shortlist(self, cost: np.ndarray, approx: np.ndarray, valid: np.ndarray, tol: float) -> np.ndarray:
        """The candidates (``valid``) that could still matter when ``approx`` is each one's mIoU to within ``tol``:
        every other one is provably beaten by a candidate of the same block, so only the shortlist needs its exact
        mIoU (lossless)."""
        kind = self.objective.kind
        if kind == "min-cost":
            keep = valid & (approx >= self.target - _EPS - tol)
            surely = keep & (approx >= self.target - _EPS + tol)  # feasible whatever the rounding
            if surely.any():  # anything dearer than the cheapest sure candidate cannot be the cheapest feasible one
                keep &= cost <= cost[surely].min() + _EPS
            return keep
        if kind == "max-acc":
            keep = valid & (cost <= self.budget + _EPS)
            if keep.any():  # anything surely less accurate than the most accurate candidate cannot win
                keep &= approx >= approx[keep].max() - 2 * tol - _EPS
            return keep
        # Pareto: drop what a candidate no dearer is surely more accurate than (even after rounding)
        keep = np.zeros_like(valid)
        keep[valid] = _front_mask(cost[valid], approx[valid], slack=-2 * tol - _EPS)
        return keep

    def offer(self, cost: np.ndarray, miou: np.ndarray, key: Callable[[int], Any], scored: int | None = None) -> None:
        """Take a block of candidates with exact mIoU: ``key(i)`` names candidate i (built only for the few kept);
        ``scored``: how many candidates the block's accuracy was computed for (default: the ones offered)."""
        self.evaluated += len(cost) if scored is None else scored
        if not len(cost):
            return
        kind = self.objective.kind
        if kind == "pareto":
            keep = np.flatnonzero(_front_mask(cost, miou))
            self.points.append((cost[keep], miou[keep], [key(int(i)) for i in keep]))
            return
        if kind == "min-cost":  # cheapest feasible, then most accurate among equally cheap
            ok = miou >= self.target - _EPS
            if not ok.any():
                return
            least = cost[ok].min()
            tied = np.flatnonzero(ok & (cost <= least + _EPS))
            i = int(tied[np.argmax(miou[tied])])
        else:  # most accurate within budget, then cheapest among equally accurate
            ok = cost <= self.budget + _EPS
            if not ok.any():
                return
            most = miou[ok].max()
            tied = np.flatnonzero(ok & (miou >= most - _EPS))
            i = int(tied[np.argmin(cost[tied])])
        if self.best is None or self._better((float(cost[i]), float(miou[i])), self.best):
            self.best = (float(cost[i]), float(miou[i]), key(i))

    def _better(self, a: tuple[float, float], b: tuple[float, float, Any]) -> bool:
        if self.objective.kind == "min-cost":
            return a[0] < b[0] - _EPS or (abs(a[0] - b[0]) <= _EPS and a[1] > b[1] + _EPS)
        return a[1] > b[1] + _EPS or (abs(a[1] - b[1]) <= _EPS and a[0] < b[0] - _EPS)

    def front(self) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        if not self.points:
            return np.zeros(0), np.zeros(0), []
        cost = np.concatenate([p[0] for p in self.points])
        miou = np.concatenate([p[1] for p in self.points])
        keys = [k for p in self.points for k in p[2]]
        keep = _front_mask(cost, miou)
        order = np.flatnonzero(keep)[np.argsort(cost[keep], kind="stable")]
        return cost[order], miou[order], [keys[i] for i in order]


def _front_mask(cost: np.ndarray, miou: np.ndarray, slack: float = _EPS) -> np.ndarray:
    """Points no other point beats (cost no higher and mIoU higher, or cost lower and mIoU no lower); of exact
    duplicates one is kept. A point counts as beaten only by an mIoU more than ``slack`` above its own (a negative
    slack keeps every point within -slack of the front)."""
    order = np.lexsort((-miou, cost))
    best_so_far = np.maximum.accumulate(np.concatenate([[-np.inf], miou[order][:-1]]))
    keep_sorted = miou[order] > best_so_far + slack
    keep = np.zeros(len(cost), bool)
    keep[order[keep_sorted]] = True
    return keep


# ------------------------------------------------------------------------------------------------- the engine
@dataclass
class _Options:
    """The distinct choices (configuration, th_img) at one exit for one th_pix, after lossless pruning. Products
    with a state's running images give an option's counts; their columns are class-major (column ``k * n + o``:
    class k of option o, true positives then false positives), so one matrix product serves every option and the mIoU
    works on contiguous per-class planes."""

    configs: np.ndarray  # (n,) config index, options of one configuration adjacent, th_img rising
    th_img: np.ndarray  # (n,)
    capture: np.ndarray  # (n, B) float 0/1: images whose rule fires
    head_cost: np.ndarray  # (n,)
    config_pos: np.ndarray  # (n,) position of each option's configuration in the engine's configuration list
    w_final: np.ndarray  # (B, 2K * n): capture x (head counts - final counts)
    w_head: np.ndarray  # (B, 2K * n): capture x head counts
    subset_next: np.ndarray  # (n,) option o + 1 has the same configuration: it lets a subset of o's images leave


@dataclass
class _States:
    """Partial instances sharing the same kept exits: images still running, counts and costs so far."""

    exits: tuple[int, ...]
    option_ids: np.ndarray  # (M, len(exits))
    remaining: np.ndarray  # (M, B) float 0/1
    counts: np.ndarray  # (M, 2K): true then false positives summed over images that already left
    paid: np.ndarray  # (M,) cost every still-running image has paid
    done: np.ndarray  # (M,) total cost of the images that already left

    def take(self, keep: np.ndarray) -> "_States":
        return _States(
            self.exits, self.option_ids[keep], self.remaining[keep], self.counts[keep], self.paid[keep], self.done[keep]
        )


class _Engine:
    def __init__(self, cache: EvaluationCache, unit: str, space: SearchSpace):
        self.cache = cache
        self.space = space
        self.exits, self.configs, self.th_pix = space.resolve(cache)
        self.unit = unit
        self.cum = cache.reach_cost(unit)  # type: ignore[arg-type]
        self.head = cache.head_cost(unit)  # type: ignore[arg-type]
        self.n_exits = cache.num_exits
        self.b = cache.num_images
        self.k = cache.num_classes
        # per image and head: true positives and false positives per class (IoU = tp / (labelled + fp))
        counts = np.concatenate([cache.tp, cache.pred - cache.tp], axis=2)  # (B, H, 2K)
        # float32 holds every integer below 2**24 exactly: when no class's count (or union) summed over the split can
        # reach it, matrix products and unions in float32 are exact (and twice as fast); otherwise float64
        exact32 = (counts.max(axis=1).sum(axis=0) + np.tile(cache.label.sum(0), 2)).max() < 2**24
        self.dtype = np.float32 if exact32 else np.float64
        self.counts = counts.astype(self.dtype)
        self.final_counts = self.counts[:, cache.final_head]  # (B, 2K)
        self.label = cache.label.sum(0).astype(np.float64)
        self._options: dict[tuple[int, float | None], _Options] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._head_or_final: dict[int, np.ndarray] = {}
        # optimistic per-image counts of any head after each exit (lossless accuracy bound for partial instances)
        later = {}
        for i in [0] + self.exits:
            rows = [cache.head_index(j, c) for j in self.exits if j > i for c in self.configs] + [cache.final_head]
            later[i] = (
                counts[:, rows, : self.k].max(1).astype(np.float64),
                counts[:, rows, self.k :].min(1).astype(np.float64),
            )
        self._later = later
        self._scored_classes = self.label > 0
        self._all_labelled = bool(self._scored_classes.all())
        self._label_counts = self.label.astype(self.dtype)
        # float32 mIoU of exact integer counts: K correctly rounded ratios in [0, 1], a float32 sum and one division
        # err by at most (K/2 + 2) * 2**-24; four times that keeps every shortlist lossless
        self.tol = (self.k + 2) * 2.0**-22

    def miou_bound(self, states: "_States", last: int) -> np.ndarray:
        """(M,) an upper bound on the mIoU of every instance that completes ``states`` (exits after ``last``)."""
        best_tp, least_fp = self._later[last]
        return self._bound(
            states.counts[:, : self.k] + states.remaining @ best_tp,
            states.counts[:, self.k :] + states.remaining @ least_fp,
        )

    def _bound(self, tp: np.ndarray, fp: np.ndarray, axis: int = -1) -> np.ndarray:
        """mIoU upper bound from optimistic true and false positives (classes along ``axis``)."""
        tp, fp = np.moveaxis(tp, axis, -1), np.moveaxis(fp, axis, -1)
        lab = self._scored_classes
        if not lab.any():
            return np.ones(tp.shape[:-1])
        # optimistic true positives can exceed the labelled pixels: IoU is capped at 1
        # classes with no labelled pixel score 0 or drop out of the mean: leaving them out bounds from above
        return np.minimum(tp[..., lab] / (fp[..., lab] + self.label[lab].astype(tp.dtype)), 1.0).mean(-1)

    def head_or_final_bound(self, states: "_States", exit: int) -> np.ndarray:
        """(M, C) upper bound on the mIoU of ``states`` completed with one option of each configuration at ``exit``:
        every still-running image gets the better of that head and the final exit, class by class. Computed in
        ``self.dtype``: within ``self.tol`` of the exact bound."""
        if exit not in self._head_or_final:
            rows = [self.cache.head_index(exit, c) for c in self.configs]
            head = self.counts[:, rows]  # (B, C, 2K)
            final = self.final_counts[:, None, :]
            tp = np.maximum(head[..., : self.k], final[..., : self.k])
            fp = np.minimum(head[..., self.k :], final[..., self.k :])
            best = np.concatenate([tp, fp], axis=2).transpose(0, 2, 1)  # (B, 2K, C)
            self._head_or_final[exit] = np.ascontiguousarray(best).reshape(self.b, -1)
        counts = (states.remaining @ self._head_or_final[exit]).reshape(len(states.paid), 2 * self.k, -1)
        counts += states.counts[:, :, None]
        return self._bound(counts[:, : self.k], counts[:, self.k :], axis=1)

    def miou(self, counts: np.ndarray) -> np.ndarray:
        """Exact mIoU (float64) of counts (..., 2K): true then false positives."""
        tp = counts[..., : self.k].astype(np.float64)
        union = np.add(counts[..., self.k :], self.label, dtype=np.float64)
        present = union > 0
        if present.all():  # the usual case: every class is labelled or predicted somewhere
            tp /= union
            return tp.mean(-1)
        iou = np.divide(tp, union, out=np.zeros(tp.shape), where=present)
        return iou.sum(-1) / np.maximum(present.sum(-1), 1)

    def approx_miou(self, full: np.ndarray, base: np.ndarray) -> np.ndarray:
        """(R, n) mIoU of the exact counts ``full`` (R, 2K, n) + ``base`` (R, 2K), computed in ``self.dtype``: within
        ``self.tol`` of :meth:`miou`. Works in place: ``full`` is left holding true positives and unions."""
        k = self.k
        full[:, :k] += base[:, :k, None]
        full[:, k:] += (base[:, k:] + self._label_counts)[:, :, None]  # union = labelled + false positives
        tp, union = full[:, :k], full[:, k:]
        if self._all_labelled:  # the usual case: every union > 0
            return np.divide(tp, union, out=self._buffer("ratio", tp.shape)).sum(1) / k
        lab = self._scored_classes
        # a class never labelled scores 0 where it is predicted and drops out of the mean where it is not
        present = lab.sum() + (union[:, ~lab] > 0).sum(1)
        return (tp[:, lab] / union[:, lab]).sum(1) / np.maximum(present, 1)

    def _buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Scratch memory reused by every block of one search: fresh multi-megabyte arrays cost page faults."""
        size = int(np.prod(shape))
        if name not in self._buffers or self._buffers[name].size < size:
            self._buffers[name] = np.empty(size, self.dtype)
        return self._buffers[name][:size].reshape(shape)

    def options(self, exit: int, th_pix: float | None) -> _Options:
        key = (exit, th_pix)
        if key not in self._options:
            # the same cache, exit, threshold grids and configurations always give the same options: searches
            # re-run under the app's sliders share them
            shared = (
                "options",
                self.space.policy,
                exit,
                th_pix,
                tuple(self.configs),
                tuple(self.space.th_img),
                self.unit,
                self.dtype,
            )
            self._options[key] = self.cache.memo(shared, lambda: self._build_options(exit, th_pix))
        return self._options[key]

    def _build_options(self, exit: int, th_pix: float | None) -> _Options:
        cache = self.cache
        c_img = cache.image_confidence(policy=self.space.policy, th_pix=th_pix)
        grid = np.sort(np.asarray(self.space.th_img, dtype=np.float64))
        configs = np.asarray(self.configs)
        conf = c_img[:, [cache.head_index(exit, c) for c in configs]].T  # (C, B)
        fires = conf[:, None, :] >= grid[None, :, None]  # (C, T, B), nested: fewer images as th_img rises
        n = fires.sum(2)
        # one choice per distinct set of images (the highest th_img giving it); a set no image leaves: dominated
        distinct = np.concatenate([n[:, 1:] != n[:, :-1], np.ones((len(configs), 1), bool)], axis=1)
        ci, ti = np.nonzero((n > 0) & distinct)
        cap = fires[ci, ti].astype(self.dtype).reshape(len(ci), self.b)
        cfg = configs[ci]
        rows = np.asarray([cache.head_index(exit, c) for c in configs], dtype=int)[ci]
        head_counts = self.counts[:, rows].transpose(0, 2, 1)  # (B, 2K, n)
        w_head = np.multiply(head_counts, cap.T[:, None, :], out=np.empty(head_counts.shape, self.dtype))
        w_final = w_head - self.final_counts[:, :, None] * cap.T[:, None, :]
        return _Options(
            cfg,
            grid[ti],
            cap,
            self.head[exit - 1, cfg],
            ci,
            w_final.reshape(self.b, -1),
            w_head.reshape(self.b, -1),
            np.append(ci[1:] == ci[:-1], False),
        )

    def root(self) -> _States:
        return _States(
            (),
            np.zeros((1, 0), int),
            np.ones((1, self.b), self.dtype),
            np.zeros((1, 2 * self.k), self.dtype),
            np.zeros(1),
            np.zeros(1),
        )

    def complete_root(self, collector: _Collector, th_pix: float | None) -> None:
        cost = np.array([self.cum[self.n_exits]])
        collector.offer(cost, self.miou(self.final_counts.sum(0))[None], lambda i: (th_pix, (), ()))

    def extend(
        self, states: _States, exit: int, th_pix: float | None, collector: _Collector, keep_states: bool
    ) -> list[_States]:
        """Score every state x option at ``exit`` as a complete instance (the rest go to the final exit); return
        the extended partial instances when a deeper level follows."""
        opts = self.options(exit, th_pix)
        n = len(opts.configs)
        if n == 0:
            return []
        last = states.exits[-1] if states.exits else 0
        r = states.remaining
        captured = r @ opts.capture.T  # (M, n) images leaving here (exact small integers)
        left = r.sum(1, dtype=np.float64)
        step = self.cum[exit] - self.cum[last]
        rest = self.cum[self.n_exits] - self.cum[exit]
        # average cost: every running image pays the stages to here and the head; those not leaving also the rest
        cost = np.multiply(captured, -rest / self.b, dtype=np.float64)
        cost += ((states.done + left * (states.paid + step + rest)) / self.b)[:, None]
        cost += np.multiply.outer(left / self.b, opts.head_cost)
        # an exit no image leaves at only adds its head (dominated); a higher th_img of the same configuration that
        # lets the same running images leave is the same instance (the higher one is kept)
        useful = captured > 0
        useful[:, :-1] &= ~(opts.subset_next[:-1] & (captured[:, :-1] == captured[:, 1:]))
        score = useful & (cost <= collector.cost_limit() + _EPS)
        floor = collector.miou_floor()
        if floor > -np.inf and score.any():  # (lossless) skip candidates whose accuracy bound is below the floor
            bound = self.head_or_final_bound(states, exit)  # (M, C)
            score &= bound[:, opts.config_pos] >= floor - _EPS - self.tol
        if score.any():
            self._score(states, opts, exit, th_pix, score, cost, collector)
        if not keep_states:
            return []
        # partial instances worth extending: some image left here, some still running; (lossless) bound: their
        # descendants cost at least what the images that left cost plus the running ones' cost so far
        alive = useful & (captured < left[:, None] - 0.5)
        alive &= cost - (left[:, None] - captured) * (rest / self.b) <= collector.cost_limit() + _EPS
        if not alive.any():
            return []
        mi, oi = np.nonzero(alive)
        floor = collector.miou_floor()
        batches = []
        for start in range(0, len(mi), _CHUNK):  # bounded memory however many partial instances survive
            a, o = mi[start : start + _CHUNK], oi[start : start + _CHUNK]
            paid = states.paid[a] + step + opts.head_cost[o]
            nxt = _States(
                states.exits + (exit,),
                np.concatenate([states.option_ids[a], o[:, None]], axis=1),
                r[a] * (1 - opts.capture[o]),
                states.counts[a] + self._products(r, opts.w_head, a, o),
                paid,
                states.done[a] + captured[a, o] * paid,
            )
            if floor > -np.inf:  # (lossless) no completion of a state can beat its accuracy bound
                nxt = nxt.take(self.miou_bound(nxt, exit) >= floor - _EPS)
            if len(nxt.paid):
                batches.append(nxt)
        return batches

    def _products(self, r: np.ndarray, w: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(S, 2K): row ``rows[s]`` of ``r`` (M, B) times option ``cols[s]`` of ``w`` (B, 2K * n)."""
        unique, row_of = np.unique(rows, return_inverse=True)
        n = w.shape[1] // (2 * self.k)
        if len(rows) * 16 >= len(unique) * n:  # dense enough: one BLAS product beats one product per pair
            return (r[unique] @ w).reshape(len(unique), 2 * self.k, n)[row_of, :, cols]
        return _gather_product(r, w.reshape(self.b, 2 * self.k, n), cols, rows=rows)

    def _score(
        self,
        states: _States,
        opts: _Options,
        exit: int,
        th_pix: float | None,
        score: np.ndarray,
        cost: np.ndarray,
        collector: _Collector,
    ) -> None:
        """Offer the candidates ``score`` (M, n) marks (state x option at ``exit``, the rest going to the final
        exit): every one gets an mIoU within ``self.tol`` of the exact one (float32); only the collector's
        shortlist gets the exact float64 mIoU it decides on."""
        r, n = states.remaining, len(opts.configs)
        rows = np.flatnonzero(score.any(1))
        hits = score[rows]  # (R, n)
        scored = int(np.count_nonzero(hits))
        sub = r[rows] if len(rows) < len(r) else r
        base = states.counts[rows] + sub @ self.final_counts  # (R, 2K): everything left goes to the final exit
        if scored * 16 >= hits.size:  # BLAS beats a product per candidate by far unless the hits are very sparse
            full = np.matmul(sub, opts.w_final, out=self._buffer("full", (len(rows), opts.w_final.shape[1])))
            full = full.reshape(len(rows), 2 * self.k, n)
            keep = collector.shortlist(cost[rows], self.approx_miou(full, base), hits, self.tol)
            ri, oi = np.nonzero(keep)
            counts = full[ri, :, oi]
        else:
            ri, oi = np.nonzero(hits)
            counts = _gather_product(sub, opts.w_final.reshape(self.b, 2 * self.k, n), oi, rows=ri)
            keep = collector.shortlist(
                cost[rows[ri], oi],
                self.approx_miou(counts[:, :, None], base[ri])[:, 0],
                np.ones(len(ri), bool),
                self.tol,
            )
            ri, oi, counts = ri[keep], oi[keep], counts[keep]
        counts[:, self.k :] -= self._label_counts  # unions back to false positives (exact integers)
        mi = rows[ri]
        ids, exits = states.option_ids, states.exits + (exit,)
        collector.offer(
            cost[mi, oi],
            self.miou(counts),
            lambda i: (th_pix, exits, tuple(int(v) for v in ids[mi[i]]) + (int(oi[i]),)),
            scored=scored,
        )

    def instance(self, key: Any) -> Instance:
        th_pix, exits, option_ids = key
        kept = []
        for e, o in zip(exits, option_ids):
            opts = self.options(e, th_pix)
            kept.append(KeptExit(e, self.cache.configs[int(opts.configs[o])], float(opts.th_img[o])))
        policy = self.space.policy
        return Instance(
            "input-dependent",
            tuple(kept),
            ConfidencePolicy(
                th_pix=th_pix if th_pix is not None else 0.5,
                edges=None if policy != "mess" else self.space.edges,
                naive=policy == "naive",
            ),
        )


def _input_dependent(cache: EvaluationCache, unit: str, space: SearchSpace, collector: _Collector) -> _Engine:
    engine = _Engine(cache, unit, space)
    engine.complete_root(collector, engine.th_pix[0])
    # breadth first (every th_pix at one depth before the next depth) so a good incumbent prunes early
    frontier: list[tuple[float | None, _States]] = [(p, engine.root()) for p in engine.th_pix]
    depth_limit = min(space.max_exits, len(engine.exits))
    for depth in range(1, depth_limit + 1):
        deeper = []
        for th_pix, states in frontier:
            last = states.exits[-1] if states.exits else 0
            for exit in [e for e in engine.exits if e > last]:
                for nxt in engine.extend(states, exit, th_pix, collector, keep_states=depth < depth_limit):
                    deeper.append((th_pix, nxt))
        frontier = deeper
    return engine


def _single_exit(
    cache: EvaluationCache, unit: str, space: SearchSpace, mode: str, collector: _Collector
) -> list[Instance]:
    """Budgeted and anytime: the backbone, or one early exit (then, for anytime, the final exit)."""
    exits, configs, _ = space.resolve(cache, mode)
    cum = cache.reach_cost(unit)  # type: ignore[arg-type]
    head = cache.head_cost(unit)  # type: ignore[arg-type]
    miou = cache.head_miou()
    instances = [Instance(mode)]
    costs, accs = [cum[-1]], [miou[cache.final_head]]
    for e in exits:
        for c in configs:
            instances.append(Instance(mode, (KeptExit(e, cache.configs[c]),)))
            costs.append(cum[e] + head[e - 1, c])
            accs.append(miou[cache.head_index(e, c)])
    collector.offer(np.asarray(costs), np.asarray(accs), lambda i: i)
    return instances


def _duration(seconds: float) -> str:
    for unit, length in (("years", 365 * 86400), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= length:
            return f"{seconds / length:,.0f} {unit}"
    return f"{seconds:.0f} s"


def check_size(cache: EvaluationCache, space: SearchSpace, mode: str = "input-dependent") -> int:
    """The space's size, or a :class:`SearchError` (with the count and an estimated time) beyond
    :data:`MAX_SPACE_SIZE` instances."""
    size = space.size(cache, mode)
    if size > MAX_SPACE_SIZE:
        raise SearchError(
            f"max_exits={space.max_exits} gives a space of {size:.3g} instances, beyond the {MAX_SPACE_SIZE:,} a "
            f"search takes on (about {_duration(size / _SEARCH_RATE)} for a constrained search, ~10x that for the "
            f"Pareto front); lower --max-exits (2-3 is the usual), or narrow --exit-ids, the configurations, "
            f"--th-pix or --th-img"
        )
    return size


def search(
    cache: EvaluationCache,
    objective: Objective,
    *,
    mode: str = "input-dependent",
    unit: str = "gflops",
    space: SearchSpace | None = None,
) -> SearchResult:
    """The best instance of ``space`` for ``objective`` in ``mode`` on ``cache`` (exhaustive, see the module
    docstring). For ``pareto`` the result's ``front`` DataFrame lists every non-dominated instance."""
    if mode not in MODES:
        raise SearchError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    space = space or SearchSpace()
    if objective.confidence is not None:
        return confident_search(cache, objective, mode=mode, unit=unit, space=space)
    check_size(cache, space, mode)
    start = time.perf_counter()
    cum_full = float(np.sum(cache.stage_cost(unit)))  # type: ignore[arg-type]
    final_miou = float(cache.head_miou()[cache.final_head])
    target = final_miou - (objective.max_drop or 0.0) / 100.0
    collector = _Collector(objective, target, (objective.budget or 0.0) * cum_full)
    if mode == "input-dependent":
        engine = _input_dependent(cache, unit, space, collector)
        to_instance = engine.instance
    else:
        instances = _single_exit(cache, unit, space, mode, collector)
        to_instance = instances.__getitem__
    seconds = time.perf_counter() - start
    front = None
    best_instance, best_cost, best_miou = None, float("nan"), float("nan")
    if objective.kind == "pareto":
        cost, miou, keys = collector.front()
        front = pd.DataFrame({"cost": cost, "miou": miou, "instance": [to_instance(k) for k in keys]})
        front["description"] = [i.describe() for i in front["instance"]]
        seconds = time.perf_counter() - start
    elif collector.best is not None:
        best_cost, best_miou, key = collector.best
        best_instance = to_instance(key)
    return SearchResult(
        best_instance,
        best_miou,
        best_cost,
        unit,
        objective,
        mode,
        final_miou,
        cum_full,
        space.size(cache, mode),
        collector.evaluated,
        seconds,
        front,
    )


def confident_search(
    cache: EvaluationCache,
    objective: Objective,
    *,
    mode: str = "input-dependent",
    unit: str = "gflops",
    space: SearchSpace | None = None,
    front: pd.DataFrame | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> SearchResult:
    """Confidence-aware min-cost: the cheapest instance of the Pareto front (``front``, searched when not given) whose
    one-sided bootstrap upper bound of the drop at ``objective.confidence`` is <= ``objective.max_drop``
    (:func:`mess_core.search.uncertainty.confident_choice`; with ``objective.fresh_images``, the bound on the drop a
    fresh sample of that many images would show); the backbone (a zero drop on every resample) when none is.
    Restricted to the front's instances: an instance off the front is never chosen even when it would qualify."""
    if objective.kind != "min-cost" or objective.confidence is None:
        raise SearchError("confident_search needs a min-cost objective with a confidence level")
    start = time.perf_counter()
    space = space or SearchSpace()
    scored = 0
    if front is None:
        found = search(cache, Objective("pareto"), mode=mode, unit=unit, space=space)
        front, scored = found.front, found.evaluated
    choice = confident_choice(
        cache,
        front,
        objective.max_drop,
        objective.confidence,  # type: ignore[arg-type]
        resamples=resamples,
        seed=seed,
        fresh_images=objective.fresh_images,
        block=objective.block,
    )
    final_miou = float(cache.head_miou()[cache.final_head])
    cum_full = float(np.sum(cache.stage_cost(unit)))  # type: ignore[arg-type]
    at = choice.row
    if at is None:  # the backbone: zero drop on every resample, so it keeps any promise
        instance, cost, miou = Instance(mode), cum_full, final_miou
    else:
        instance, cost, miou = front["instance"].iloc[at], float(front["cost"].iloc[at]), float(front["miou"].iloc[at])
    return SearchResult(
        instance,
        miou,
        cost,
        unit,
        objective,
        mode,
        final_miou,
        cum_full,
        space.size(cache, mode),
        scored + len(choice.rows),
        time.perf_counter() - start,
        interval=choice.interval,
        candidates=list(choice.intervals),
    )


def pareto_front(
    cache: EvaluationCache,
    *,
    mode: str = "input-dependent",
    unit: str = "gflops",
    space: SearchSpace | None = None,
    series: str | None = None,
) -> pd.DataFrame:
    """The accuracy-vs-cost front as a DataFrame (columns series, mode, cost, miou, description, instance)."""
    result = search(cache, Objective("pareto"), mode=mode, unit=unit, space=space)
    front = result.front.copy()  # type: ignore[union-attr]
    front.insert(0, "mode", mode)
    front.insert(
        0,
        "series",
        series
        or (
            f"MESS {mode}" if (space or SearchSpace()).policy == "mess" else f"{(space or SearchSpace()).policy} policy"
        ),
    )
    return front


# ------------------------------------------------------------------------------------------------- peers
def uniform_exit(
    cache: EvaluationCache, objective: Objective, *, unit: str = "gflops", space: SearchSpace | None = None
) -> SearchResult:
    """The status quo: the same configuration at every candidate exit, one th_pix and one th_img for all of them,
    searched exhaustively over configuration x th_pix x th_img."""
    space = space or SearchSpace()
    start = time.perf_counter()
    exits, configs, th_pixes = space.resolve(cache)
    cum = cache.reach_cost(unit)  # type: ignore[arg-type]
    final_miou = float(cache.head_miou()[cache.final_head])
    collector = _Collector(
        objective, final_miou - (objective.max_drop or 0.0) / 100.0, (objective.budget or 0.0) * cum[-1]
    )
    costs, accs, keys = _uniform_grid(cache, space, unit)
    collector.offer(costs, accs, keys.__getitem__)
    best = collector.best
    instance = None
    if best is not None:
        c, p, t = best[2]
        instance = Instance(
            "input-dependent",
            tuple(KeptExit(e, cache.configs[c], float(t)) for e in exits),
            ConfidencePolicy(
                th_pix=p if p is not None else 0.5,
                edges=space.edges if space.policy == "mess" else None,
                naive=space.policy == "naive",
            ),
        )
    return SearchResult(
        instance,
        best[1] if best else float("nan"),
        best[0] if best else float("nan"),
        unit,
        objective,
        "input-dependent",
        final_miou,
        float(cum[-1]),
        len(configs) * len(th_pixes) * len(space.th_img),
        collector.evaluated,
        time.perf_counter() - start,
    )


def _uniform_grid(
    cache: EvaluationCache, space: SearchSpace, unit: str
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float | None, float]]]:
    """Cost and mIoU of every uniform-exit instance (configuration x th_pix x th_img) with its key: the same for
    every constraint, so computed once per cache, space and unit (a live search under a new constraint only picks
    from it: ~25 ms less on a 2-core machine)."""
    return cache.memo(("uniform-grid", unit, repr(space)), lambda: _compute_uniform_grid(cache, space, unit))


def _compute_uniform_grid(
    cache: EvaluationCache, space: SearchSpace, unit: str
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float | None, float]]]:
    exits, configs, th_pixes = space.resolve(cache)
    cum = cache.reach_cost(unit)  # type: ignore[arg-type]
    head = cache.head_cost(unit)  # type: ignore[arg-type]
    grid = np.asarray(sorted(space.th_img))
    b = cache.num_images
    counts = np.concatenate([cache.tp, cache.pred], axis=2).astype(np.float64)
    keys: list[tuple[int, float | None, float]] = []
    costs, accs = [], []
    for c in configs:
        rows = np.array([cache.head_index(e, c) for e in exits] + [cache.final_head])
        reach = np.concatenate(
            [cum[exits] + np.cumsum(head[np.array(exits) - 1, c]), [cum[-1] + head[np.array(exits) - 1, c].sum()]]
        )
        for p in th_pixes:
            c_img = cache.image_confidence(policy=space.policy, th_pix=p)[:, rows[:-1]]  # (B, E)
            fires = c_img[None, :, :] >= grid[:, None, None]  # (T, B, E)
            fires = np.concatenate([fires, np.ones((len(grid), b, 1), bool)], axis=2)
            taken = fires.argmax(2)  # (T, B): first exit whose rule fires (the final always does)
            costs.append(reach[taken].mean(1))
            summed = counts[np.arange(b)[None, :], rows[taken]].sum(1)  # (T, 2K)
            accs.append(cache.miou_of(summed[:, : cache.num_classes], summed[:, cache.num_classes :]))
            keys += [(c, p, t) for t in grid]
    cost, miou = np.concatenate(costs), np.concatenate(accs)
    cost.flags.writeable = miou.flags.writeable = False  # shared by every later search
    return cost, miou, keys
