"""What a search keeps of the candidates it scores: the cheapest feasible one (min-cost), the most accurate one
within the budget (max-acc) or every one on the accuracy-vs-cost front (pareto); and the limits it can tell the
search, from what it holds so far, below which nothing can change its answer (lossless pruning). Shared by the
input-dependent :mod:`.engine` and by the budgeted, anytime and uniform-exit searches of :mod:`.constrained`.

Example:
    >>> import numpy as np
    >>> from mess_core.search.problem import Objective
    >>> best = Collector(Objective("max-acc", budget=1.0), target_miou=0.0, budget_cost=1.0)
    >>> best.offer(np.array([0.5, 0.9, 1.2]), np.array([0.6, 0.7, 0.9]), key=lambda i: f"candidate {i}")
    >>> best.best, best.evaluated
    ((0.9, 0.7, 'candidate 1'), 3)
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .problem import Objective

__all__ = ["Collector", "front_mask", "EPS"]

# costs and mIoUs closer than this are ties: sums of the same figures in another order differ by rounding alone
EPS = 1e-12


class Collector:
    """Receives blocks of scored candidates and keeps what the objective asks for. ``target_miou``: the mIoU a
    min-cost candidate must reach; ``budget_cost``: the cost a max-acc candidate must stay within."""

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
            keep = valid & (approx >= self.target - EPS - tol)
            surely = keep & (approx >= self.target - EPS + tol)  # feasible whatever the rounding
            if surely.any():  # anything dearer than the cheapest sure candidate cannot be the cheapest feasible one
                keep &= cost <= cost[surely].min() + EPS
            return keep
        if kind == "max-acc":
            keep = valid & (cost <= self.budget + EPS)
            if keep.any():  # anything surely less accurate than the most accurate candidate cannot win
                keep &= approx >= approx[keep].max() - 2 * tol - EPS
            return keep
        # Pareto: drop what a candidate no dearer is surely more accurate than (even after rounding)
        keep = np.zeros_like(valid)
        keep[valid] = front_mask(cost[valid], approx[valid], slack=-2 * tol - EPS)
        return keep

    def offer(self, cost: np.ndarray, miou: np.ndarray, key: Callable[[int], Any], scored: int | None = None) -> None:
        """Take a block of candidates with exact mIoU: ``key(i)`` names candidate i (built only for the few kept);
        ``scored``: how many candidates the block's accuracy was computed for (default: the ones offered)."""
        self.evaluated += len(cost) if scored is None else scored
        if not len(cost):
            return
        kind = self.objective.kind
        if kind == "pareto":
            keep = np.flatnonzero(front_mask(cost, miou))
            self.points.append((cost[keep], miou[keep], [key(int(i)) for i in keep]))
            return
        if kind == "min-cost":  # cheapest feasible, then most accurate among equally cheap
            ok = miou >= self.target - EPS
            if not ok.any():
                return
            least = cost[ok].min()
            tied = np.flatnonzero(ok & (cost <= least + EPS))
            i = int(tied[np.argmax(miou[tied])])
        else:  # most accurate within budget, then cheapest among equally accurate
            ok = cost <= self.budget + EPS
            if not ok.any():
                return
            most = miou[ok].max()
            tied = np.flatnonzero(ok & (miou >= most - EPS))
            i = int(tied[np.argmin(cost[tied])])
        if self.best is None or self._better((float(cost[i]), float(miou[i])), self.best):
            self.best = (float(cost[i]), float(miou[i]), key(i))

    def _better(self, a: tuple[float, float], b: tuple[float, float, Any]) -> bool:
        if self.objective.kind == "min-cost":
            return a[0] < b[0] - EPS or (abs(a[0] - b[0]) <= EPS and a[1] > b[1] + EPS)
        return a[1] > b[1] + EPS or (abs(a[1] - b[1]) <= EPS and a[0] < b[0] - EPS)

    def front(self) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        if not self.points:
            return np.zeros(0), np.zeros(0), []
        cost = np.concatenate([p[0] for p in self.points])
        miou = np.concatenate([p[1] for p in self.points])
        keys = [k for p in self.points for k in p[2]]
        keep = front_mask(cost, miou)
        order = np.flatnonzero(keep)[np.argsort(cost[keep], kind="stable")]
        return cost[order], miou[order], [keys[i] for i in order]


def front_mask(cost: np.ndarray, miou: np.ndarray, slack: float = EPS) -> np.ndarray:
    """Points no other point beats (cost no higher and mIoU higher, or cost lower and mIoU no lower); of exact
    duplicates one is kept. A point counts as beaten only by an mIoU more than ``slack`` above its own (a negative
    slack keeps every point within -slack of the front)."""
    order = np.lexsort((-miou, cost))
    best_so_far = np.maximum.accumulate(np.concatenate([[-np.inf], miou[order][:-1]]))
    keep_sorted = miou[order] > best_so_far + slack
    keep = np.zeros(len(cost), bool)
    keep[order[keep_sorted]] = True
    return keep
