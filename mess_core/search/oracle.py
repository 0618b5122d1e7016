"""The oracle: a bound on what any exit policy can do with the same exits.

An exit policy decides from each image alone where it leaves. The oracle knows every image's labels, so it may send
each image to any output; among all such per-image assignments it takes the one of least average cost whose dataset
mIoU meets the same constraint as the policy (min-cost: mIoU >= the final exit's - ``max_drop``; max-acc: the highest
mIoU at average cost <= ``budget`` x the backbone's). The instance a policy deploys is one of those assignments, so
the oracle's cost bounds the policy's from below, and its speedup bounds the policy's from above.

Two outputs sets:

* on an instance (:func:`oracle`): its kept exits and the final one, each costing what it costs the policy (the stages
  up to it and every kept head up to and including its own). :func:`oracle_bound` takes the best such oracle over
  every instance of a search space: the bound on every policy in that space.
* on every head (``clairvoyant=True``): any exit with any configuration, each costing only its stages and that one
  head (a policy that knew in advance where to stop would not run the heads before it). The bound on any early-exit
  scheme built from these heads.

Dataset mIoU is a mean of ratios of counts summed over images, so the exact problem is a non-linear multiple-choice
knapsack. It is solved greedily on the exact counts: from every image at the final exit, repeatedly move the one
image to the cheaper output that loses the least mIoU per unit of cost saved (moves that lose nothing first) while the
constraint holds. The greedy can only err on the safe side of a policy comparison if it misses the optimum by less
than the policy's distance to it; its gap to exhaustive enumeration is measured on sub-problems of real caches
(``benchmarks/oracle_gap.py``, BENCHMARKS.md) and tested on random ones.

Example:
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> from mess_core.evaluate.instance import Instance, KeptExit
    >>> cache = EvaluationCache.random(images=30, exits=3, configs=2, seed=4)
    >>> inst = Instance.input_dependent([KeptExit(1, cache.configs[0], 0.5)], th_pix=0.7)
    >>> result = oracle(cache, inst, max_drop=1.0)
    >>> result.miou >= result.reference_miou - 0.01
    True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import MessError
from ..evaluate.cache import EvaluationCache
from ..evaluate.instance import Instance, KeptExit, evaluate, output_costs, output_rows

__all__ = ["OracleResult", "oracle", "oracle_bound", "assign", "exact_assign"]

_TIE = 1e-12


@dataclass
class OracleResult:
    """Where the oracle sends each image and what that costs. ``taken[b]`` indexes ``outputs`` ((exit, config),
    the final exit as (N, "final")); ``instance`` is the instance it ran on (None for the clairvoyant oracle)."""

    miou: float
    cost: float
    unit: str
    taken: np.ndarray
    outputs: list[tuple[int, str]]
    instance: Instance | None
    reference_miou: float
    reference_cost: float
    feasible: bool

    @property
    def speedup(self) -> float:
        return self.reference_cost / self.cost if self.feasible and self.cost > 0 else float("nan")

    def cost_in(self, cache: EvaluationCache, unit: str) -> float:
        """The average cost of the same assignment in another unit ("gflops" or "ms")."""
        if not self.feasible:
            return float("nan")
        if self.instance is not None:
            return float(output_costs(cache, self.instance, unit=unit)[self.taken].mean())
        reach, head = cache.reach_cost(unit), cache.head_cost(unit)  # type: ignore[arg-type]
        costs = [reach[e] + head[e - 1, cache.config_index(c)] if c != "final" else reach[-1] for e, c in self.outputs]
        return float(np.asarray(costs)[self.taken].mean())

    def describe(self) -> str:
        used = sorted(set(int(t) for t in self.taken))
        parts = [
            f"{self.outputs[m][0]}:{self.outputs[m][1]}" if self.outputs[m][1] != "final" else "final" for m in used
        ]
        return " | ".join(parts) + " (oracle)"


def _miou(tp: np.ndarray, pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """mIoU over the last axis of summed counts; classes absent from labels and predictions are left out."""
    union = label + pred - tp
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros(np.broadcast_shapes(tp.shape, union.shape)), where=present)
    return iou.sum(-1) / np.maximum(present.sum(-1), 1)


def assign(
    tp: np.ndarray,
    pred: np.ndarray,
    cost: np.ndarray,
    label: np.ndarray,
    *,
    target: float | None = None,
    budget: float | None = None,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """The greedy oracle assignment for a batch of S problems at once.

    ``tp``/``pred``: (S, B, M, K) counts of image b at output m; ``cost``: (S, M) per-image cost of each output (the
    last output is the final exit); ``label``: (K,) labelled pixels per class. With ``target``: least average cost
    with mIoU >= target (min-cost); with ``budget``: the highest mIoU at average cost <= budget (max-acc). Every image
    starts at ``start`` (S, B) (default: the final exit) and only ever moves to cheaper outputs. Returns (S, B)
    output indices; a problem whose start misses the constraint and cannot be repaired keeps its start, and for
    max-acc a row of -1 says no assignment fits the budget."""
    if (target is None) == (budget is None):
        raise MessError("assign() needs exactly one of target (min-cost) or budget (max-acc)")
    s, b, m, _ = tp.shape
    label = label.astype(np.float64)
    a = np.full((s, b), m - 1) if start is None else np.array(start, dtype=np.int64, copy=True)
    rows_s = np.arange(s)[:, None]
    rows_b = np.arange(b)[None, :]
    tot_tp = tp[rows_s, rows_b, a].sum(1)  # (S, K)
    tot_pr = pred[rows_s, rows_b, a].sum(1)
    spent = cost[rows_s, a].sum(1)  # (S,) total cost of the current assignment
    active = np.ones(s, bool)
    if target is not None:
        active &= _miou(tot_tp, tot_pr, label) >= target - _TIE
    while active.any():
        idx = np.flatnonzero(active)
        cur = a[idx]  # (s', B)
        cur_tp = tp[idx[:, None], rows_b, cur]  # (s', B, K)
        cur_pr = pred[idx[:, None], rows_b, cur]
        new_tp = tot_tp[idx, None, None] - cur_tp[:, :, None] + tp[idx]  # (s', B, M, K)
        new_pr = tot_pr[idx, None, None] - cur_pr[:, :, None] + pred[idx]
        score = _miou(new_tp, new_pr, label)  # (s', B, M)
        now = _miou(tot_tp[idx], tot_pr[idx], label)[:, None, None]
        saving = np.take_along_axis(cost[idx], cur, 1)[:, :, None] - cost[idx][:, None, :]  # (s', B, M)
        loss = now - score
        allowed = saving > _TIE
        if target is not None:
            allowed &= score >= target - _TIE
        else:
            over = (spent[idx] > budget * b + _TIE)[:, None, None]
            allowed &= over | (loss < -_TIE)
        # moves that lose no mIoU come first (largest saving), then the least loss per unit of cost saved
        ratio = np.where(loss <= _TIE, np.inf, saving / np.maximum(loss, _TIE))
        key = np.where(allowed, ratio, -1.0)
        flat = key.reshape(len(idx), -1)
        best = flat.argmax(1)
        best_key = flat[np.arange(len(idx)), best]
        # among moves that lose nothing, prefer the larger saving, then the larger gain
        free = np.isinf(best_key)
        if free.any():
            tie = np.where(allowed & (loss <= _TIE), saving - 1e-9 * loss, -np.inf).reshape(len(idx), -1)
            best[free] = tie[free].argmax(1)
        go = best_key >= 0
        if not go.any():
            break
        j = np.flatnonzero(go)
        s_j = idx[j]
        i, to = np.divmod(best[j], m)
        frm = a[s_j, i]
        tot_tp[s_j] += tp[s_j, i, to] - tp[s_j, i, frm]
        tot_pr[s_j] += pred[s_j, i, to] - pred[s_j, i, frm]
        spent[s_j] += cost[s_j, to] - cost[s_j, frm]
        a[s_j, i] = to
        active[idx[~go]] = False
    if budget is not None:
        a[spent > budget * b + _TIE] = -1
    return a


def exact_assign(
    tp: np.ndarray, pred: np.ndarray, cost: np.ndarray, label: np.ndarray, *, target: float
) -> tuple[np.ndarray | None, float]:
    """The exact min-cost assignment of one small problem ((B, M, K) counts, (M,) costs) by enumerating all M**B
    assignments: for measuring the greedy's gap. Returns (assignment, average cost), (None, nan) if infeasible."""
    b, m, k = tp.shape
    if m**b > 2_000_000:
        raise MessError(f"{m}**{b} assignments are too many to enumerate; use fewer images")
    combos = np.array(list(itertools.product(range(m), repeat=b)))  # (A, B)
    rows = np.arange(b)[None, :]
    tot_tp = tp[rows, combos].sum(1)
    tot_pr = pred[rows, combos].sum(1)
    ok = _miou(tot_tp, tot_pr, label.astype(np.float64)) >= target - _TIE
    if not ok.any():
        return None, float("nan")
    total = cost[combos].sum(1)
    best = np.flatnonzero(ok)[np.argmin(total[ok])]
    return combos[best], float(total[best] / b)


def _constraint(cache: EvaluationCache, max_drop: float | None, budget: float | None, unit: str) -> dict[str, float]:
    if (max_drop is None) == (budget is None):
        raise MessError("the oracle needs one constraint: max_drop (pp, min-cost) or budget (x backbone, max-acc)")
    if max_drop is not None:
        return {"target": float(cache.head_miou()[cache.final_head]) - max_drop / 100}
    return {"budget": budget * float(cache.reach_cost(unit)[-1])}  # type: ignore[arg-type, operator]


def _outputs(
    cache: EvaluationCache, instance: Instance | None, unit: str
) -> tuple[list[int], np.ndarray, list[tuple[int, str]]]:
    """Cache rows, per-image costs and names of the outputs of ``instance`` (None: every head, clairvoyant)."""
    final = (cache.num_exits, "final")
    if instance is None:
        reach, head = cache.reach_cost(unit), cache.head_cost(unit)  # type: ignore[arg-type]
        outputs = [(e, c) for e in range(1, cache.num_exits) for c in cache.configs]
        costs = [reach[e] + head[e - 1, cache.config_index(c)] for e, c in outputs] + [reach[-1]]
        rows = [cache.head_index(e, c) for e, c in outputs] + [cache.final_head]
        return rows, np.asarray(costs, dtype=np.float64), outputs + [final]
    rows = output_rows(cache, instance)
    return rows, output_costs(cache, instance, unit=unit), [(e.exit, e.config) for e in instance.exits] + [final]


def _solve(
    cache: EvaluationCache,
    problems: list[tuple[Instance | None, np.ndarray | None]],
    constraint: dict[str, float],
    unit: str,
) -> OracleResult | None:
    """The best oracle over ``problems`` (instance or None for every head, and where its greedy starts; None: at the
    final exit), all with the same number of outputs."""
    label = cache.label.sum(0)
    b = cache.num_images
    parts = [_outputs(cache, inst, unit) for inst, _ in problems]
    tp = np.stack([cache.tp[:, rows] for rows, _, _ in parts]).astype(np.float64)
    pred = np.stack([cache.pred[:, rows] for rows, _, _ in parts]).astype(np.float64)
    costs = np.stack([c for _, c, _ in parts])
    m = costs.shape[1]
    start = np.stack([np.full(b, m - 1) if st is None else st for _, st in problems])
    a = assign(tp, pred, costs, label, start=start, **constraint)
    ok = (a >= 0).all(1)
    safe = np.maximum(a, 0)
    miou = cache.miou_of(
        np.take_along_axis(tp, safe[:, :, None, None], 2)[:, :, 0].sum(1),
        np.take_along_axis(pred, safe[:, :, None, None], 2)[:, :, 0].sum(1),
    )
    mean = np.take_along_axis(costs, safe, 1).mean(1)
    if "target" in constraint:
        ok &= miou >= constraint["target"] - _TIE
        order = np.lexsort((-miou, np.where(ok, mean, np.inf)))
    else:
        ok &= mean <= constraint["budget"] + _TIE
        order = np.lexsort((mean, np.where(ok, -miou, np.inf)))
    j = int(order[0])
    if not ok[j]:
        return None
    final_miou = float(cache.head_miou()[cache.final_head])
    full = float(cache.reach_cost(unit)[-1])  # type: ignore[arg-type]
    return OracleResult(float(miou[j]), float(mean[j]), unit, a[j], parts[j][2], problems[j][0], final_miou, full, True)


def _infeasible(cache: EvaluationCache, instance: Instance | None, unit: str) -> OracleResult:
    outputs = _outputs(cache, instance, unit)[2]
    return OracleResult(
        float("nan"),
        float("nan"),
        unit,
        np.zeros(0, int),
        outputs,
        instance,
        float(cache.head_miou()[cache.final_head]),
        float(cache.reach_cost(unit)[-1]),
        False,
    )


def _own_start(cache: EvaluationCache, instance: Instance) -> np.ndarray | None:
    """Where ``instance``'s own exit policy sends each image: a start from which the greedy can only do better."""
    if instance.mode != "input-dependent" or not instance.exits:
        return None
    return evaluate(cache, instance).exit_taken.astype(np.int64)


def oracle(
    cache: EvaluationCache,
    instance: Instance | None = None,
    *,
    max_drop: float | None = None,
    budget: float | None = None,
    unit: str = "gflops",
    clairvoyant: bool = False,
) -> OracleResult:
    """The oracle on ``instance``'s outputs (or, with ``clairvoyant=True``, on every head of the cache, each costing
    only its stages and itself) under ``max_drop`` (pp) or ``budget`` (x backbone); see the module docstring. The
    greedy starts both from the final exit and from where the instance's own policy sends each image, so it is never
    worse than that policy."""
    if not clairvoyant and instance is None:
        raise MessError("oracle() needs an instance, or clairvoyant=True")
    constraint = _constraint(cache, max_drop, budget, unit)
    target = None if clairvoyant else instance
    problems: list[tuple[Instance | None, np.ndarray | None]] = [(target, None)]
    if target is not None and (own := _own_start(cache, target)) is not None:
        problems.append((target, own))
    found = _solve(cache, problems, constraint, unit)
    return found if found is not None else _infeasible(cache, target, unit)


def oracle_bound(
    cache: EvaluationCache,
    *,
    max_drop: float | None = None,
    budget: float | None = None,
    unit: str = "gflops",
    exits: Sequence[int] | None = None,
    configs: Sequence[str] | None = None,
    max_exits: int = 2,
    also: Sequence[Instance] = (),
    chunk: int = 256,
) -> OracleResult:
    """The best oracle over every input-dependent instance that keeps at most ``max_exits`` of ``exits`` (default all)
    with any of ``configs`` (default all): a bound on every exit policy over that space. The greedy also starts from
    the own assignments of the instances in ``also`` (say, the ones a search found), so the bound is never above them.
    The result's ``instance`` holds the exits and configurations the oracle did best with (its thresholds mean
    nothing: the oracle needs none)."""
    exits = sorted(set(exits)) if exits is not None else list(range(1, cache.num_exits))
    configs = list(configs) if configs is not None else list(cache.configs)
    constraint = _constraint(cache, max_drop, budget, unit)
    # the backbone alone (no early exit) is an instance of every space: the bound never costs more than it
    groups: dict[int, list[tuple[Instance | None, np.ndarray | None]]] = {0: [(Instance("input-dependent"), None)]}
    for k in range(1, max_exits + 1):
        for chosen in itertools.combinations(exits, k):
            for cfgs in itertools.product(configs, repeat=k):
                inst = Instance.input_dependent([KeptExit(e, c, 0.0) for e, c in zip(chosen, cfgs)])
                groups.setdefault(k, []).append((inst, None))
    for inst in also:
        if (own := _own_start(cache, inst)) is not None:
            groups.setdefault(len(inst.exits), []).append((inst, own))
    best: OracleResult | None = None
    for group in groups.values():
        for begin in range(0, len(group), chunk):
            found = _solve(cache, group[begin : begin + chunk], constraint, unit)
            if found is not None and (best is None or _better(found, best, "budget" in constraint)):
                best = found
    return best if best is not None else _infeasible(cache, Instance("input-dependent"), unit)


def _better(a: OracleResult, b: OracleResult, max_acc: bool) -> bool:
    if max_acc:
        return (a.miou, -a.cost) > (b.miou, -b.cost)
    return (a.cost, -a.miou) < (b.cost, -b.miou)
