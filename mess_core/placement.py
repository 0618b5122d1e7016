"""Exit placement: N-1 early exits at approximately equidistant cumulative workload, snapped to cut points.

The targets are k/N of the backbone's cumulative workload (k = 1..N-1); the N-th exit is the model's own output.
Each target is matched to a distinct cut point so that the total distance |cost(cut) - target| is smallest (a
monotone assignment solved exactly by dynamic programming). Among cut points of equal cost (an activation after a
convolution costs no FLOPs) the later one wins, so an exit sees the activated feature map at the same cost.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["equidistant_targets", "snap_to_cuts"]


def equidistant_targets(backbone_cost: float, num_exits: int) -> list[float]:
    return [backbone_cost * k / num_exits for k in range(1, num_exits)]


def snap_to_cuts(costs: Sequence[float], targets: Sequence[float]) -> list[int]:
    """Indices into ``costs`` (non-decreasing cumulative costs of the cut points), one per target, strictly
    increasing, minimising the summed distance to the targets."""
    n, m = len(targets), len(costs)
    if n > m:
        raise ValueError(f"{n} targets but only {m} cut points")
    if n == 0:
        return []
    inf = float("inf")
    # best[i][j]: smallest total distance placing targets[:i+1] with target i at cut j.
    best = [[inf] * m for _ in range(n)]
    prev = [[-1] * m for _ in range(n)]
    for j in range(m):
        best[0][j] = abs(costs[j] - targets[0])
    for i in range(1, n):
        running, arg = inf, -1
        for j in range(i, m):
            # <= prefers the latest predecessor among equals, matching the tie-break below
            if best[i - 1][j - 1] <= running:
                running, arg = best[i - 1][j - 1], j - 1
            best[i][j] = running + abs(costs[j] - targets[i])
            prev[i][j] = arg
    last = min(range(n - 1, m), key=lambda j: (best[n - 1][j], -j))
    chosen = [last]
    for i in range(n - 1, 0, -1):
        chosen.append(prev[i][chosen[-1]])
    return chosen[::-1]
