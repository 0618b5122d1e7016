"""The MESS search: pick the exits to keep, their configurations and the exit policy's thresholds, from an
:class:`~mess_core.evaluate.cache.EvaluationCache`, for an :class:`~mess_core.search.problem.Objective` (min-cost
under an accuracy constraint, max-acc under a cost constraint, or the Pareto front) over a
:class:`~mess_core.search.problem.SearchSpace`; and the uniform-exit peer, the status quo it is compared with.

Budgeted and anytime instances keep one early exit (see :mod:`mess_core.evaluate.instance`: a second one could only
add cost to them), so their search is over every exit x configuration. Input-dependent instances are enumerated by
:mod:`.engine`; both offer what they score to a :mod:`.collector`, which keeps what the objective asks for. A
min-cost objective with a confidence level is answered by :func:`confident_search`, among the Pareto front's
instances only.

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

import numpy as np
import pandas as pd

from ..evaluate.cache import EvaluationCache
from ..evaluate.instance import MODES, Instance, KeptExit
from ..evaluate.policy import ConfidencePolicy
from .collector import Collector
from .engine import Engine
from .problem import Objective, SearchError, SearchSpace
from .uncertainty import DEFAULT_RESAMPLES, DropInterval, confident_choice

__all__ = ["SearchResult", "search", "confident_search", "pareto_front", "uniform_exit"]

# The largest space (instances before pruning) a search takes on: max_exits 3 on the 5-exit x 30-configuration CamVid
# cache is 10.8 billion (its search and front times are in BENCHMARKS.md); one more kept exit multiplies it by ~300
# and would run for hours, so refuse instead.
MAX_SPACE_SIZE = 100_000_000_000
# instances per second a constrained search gets through after pruning, for the time estimate of a refused space
_SEARCH_RATE = 8e8


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


def _single_exit(
    cache: EvaluationCache, unit: str, space: SearchSpace, mode: str, collector: Collector
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
    collector = Collector(objective, target, (objective.budget or 0.0) * cum_full)
    if mode == "input-dependent":
        engine = Engine(cache, unit, space)
        engine.run(collector)
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
    collector = Collector(
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
    from it; the time this saves is in BENCHMARKS.md)."""
    return cache.memo(("uniform-grid", unit, repr(space)), lambda: _compute_uniform_grid(cache, space, unit))


def _compute_uniform_grid(
    cache: EvaluationCache, space: SearchSpace, unit: str
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float | None, float]]]:
    exits, configs, th_pixes = space.resolve(cache)
    cum = cache.reach_cost(unit)  # type: ignore[arg-type]
    head = cache.exit_cost(space.policy, unit)  # type: ignore[arg-type]
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
