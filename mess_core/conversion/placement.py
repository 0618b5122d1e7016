"""Exit placement: N-1 early exits at approximately equidistant cumulative workload, snapped to cut points.

The targets are k/N of the backbone's cumulative workload (k = 1..N-1); the N-th exit is the model's own output.
Each target is matched to a distinct cut point so that the total distance |cost(cut) - target| is smallest (a
monotone assignment solved exactly by dynamic programming). Among cut points of equal cost (an activation after a
convolution costs no FLOPs) the later one wins, so an exit sees the activated feature map at the same cost.

Cut points inside a convolution-normalisation-activation chain are never used while enough others exist (see
:func:`mess_core.conversion.cuts.find_cut_points`, ``in_chain``). With measured latency (``cost="latency"``) placement
must not move with timing noise, so :func:`snap_stable`:

* keeps one cut per run of cut points of equal cumulative FLOPs (the last), so noise in the few microseconds of a
  pooling or an activation cannot choose between them;
* uses the FLOP placement unless its summed latency distance to the targets is worse than the latency placement's by
  more than ``LATENCY_TOLERANCE`` of the backbone's latency per exit: only a clear difference in measured time moves
  an exit away from where FLOPs put it.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["equidistant_targets", "snap_to_cuts", "last_of_equal_runs", "snap_stable", "LATENCY_TOLERANCE"]

LATENCY_TOLERANCE = 0.05


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


def last_of_equal_runs(values: Sequence[float]) -> list[int]:
    """Indices of the last element of every run of equal consecutive ``values``."""
    return [i for i in range(len(values)) if i + 1 == len(values) or values[i + 1] != values[i]]


def snap_stable(
    costs: Sequence[float],
    targets: Sequence[float],
    flops: Sequence[float],
    flop_targets: Sequence[float],
    tolerance: float,
) -> list[int]:
    """Like :func:`snap_to_cuts` on measured ``costs``, but stable under timing noise (see the module docstring).
    ``flops`` are the same cut points' cumulative FLOPs and ``flop_targets`` the FLOP targets; ``tolerance`` is the
    summed latency distance by which the latency placement must beat the FLOP placement to be used."""
    keep = last_of_equal_runs(flops)
    if len(keep) < len(targets):
        keep = list(range(len(costs)))
    by_cost = snap_to_cuts([costs[i] for i in keep], targets)
    by_flops = snap_to_cuts([flops[i] for i in keep], flop_targets)

    def distance(chosen: Sequence[int]) -> float:
        return sum(abs(costs[keep[j]] - t) for j, t in zip(chosen, targets))

    chosen = by_flops if distance(by_flops) <= distance(by_cost) + tolerance else by_cost
    return [keep[j] for j in chosen]
