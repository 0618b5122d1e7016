import itertools
import random

import pytest

from mess_core.conversion.placement import equidistant_targets, last_of_equal_runs, snap_stable, snap_to_cuts


def brute_force(costs, targets):
    best = None
    for combo in itertools.combinations(range(len(costs)), len(targets)):
        total = sum(abs(costs[j] - t) for j, t in zip(combo, targets))
        if best is None or total < best[0] - 1e-12:
            best = (total, combo)
    return best[0]


@pytest.mark.parametrize("seed", range(40))
def test_snapping_is_optimal_distinct_and_ordered(seed):
    rng = random.Random(seed)
    costs = sorted(rng.choice([rng.uniform(0, 10), float(rng.randint(0, 5))]) for _ in range(rng.randint(3, 9)))
    n = rng.randint(1, len(costs))
    targets = equidistant_targets(costs[-1] + rng.uniform(0, 3), n + 1)
    chosen = snap_to_cuts(costs, targets)
    assert chosen == sorted(set(chosen)) and len(chosen) == n
    assert sum(abs(costs[j] - t) for j, t in zip(chosen, targets)) == pytest.approx(brute_force(costs, targets))


def test_ties_prefer_the_later_cut():
    # three cuts of equal cost (conv, then free BN and ReLU): the exit should see the activated map
    assert snap_to_cuts([1.0, 2.0, 2.0, 2.0, 5.0], [2.0]) == [3]


def test_more_targets_than_cuts_is_refused():
    with pytest.raises(ValueError):
        snap_to_cuts([1.0], [0.5, 0.7])


def test_ties_prefer_the_later_cut_for_every_exit():
    assert snap_to_cuts([1.0, 2.0, 2.0, 2.0, 5.0, 5.0], [2.0, 5.0]) == [3, 5]


def test_equal_flop_runs_keep_their_last_cut():
    assert last_of_equal_runs([1.0, 2.0, 2.0, 2.0, 5.0, 5.0]) == [0, 3, 5]


@pytest.mark.parametrize("seed", range(20))
def test_stable_snapping_ignores_timing_noise(seed):
    rng = random.Random(seed)
    flops = [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 6.0, 6.0, 7.0]  # conv, then free BN/ReLU/pooling cuts
    seconds = [f * (1 + rng.uniform(-0.03, 0.03)) for f in flops]  # latency roughly follows FLOPs, with noise
    seconds = [max(seconds[: i + 1]) for i in range(len(seconds))]
    chosen = snap_stable(seconds, equidistant_targets(8.0, 4), flops, equidistant_targets(8.0, 4), tolerance=0.4)
    assert chosen == snap_stable(flops, equidistant_targets(8.0, 4), flops, equidistant_targets(8.0, 4), 0.0)
