"""Successive halving for stage 2: stop training the heads that can no longer reach the accuracy-vs-cost front.

Stage 2 trains every configuration of the exit space at every exit at once (150 heads for the default space and
N = 6). Most of them never matter: a head whose path (the stages up to its exit plus the head itself) costs more
than another head's, or the final exit's, while being less accurate, is never on a front. Training all of them for
the whole schedule costs about 16 times a backbone pass per image; the backbone pass itself is shared.

The rule, applied after the epochs listed in ``prune_at`` with the margin of that rung (mIoU points on the
validation split):

    a head stops training when another head still training, or the final exit, has a path that costs no more
    and is at least ``margin`` mIoU points more accurate.

The margin is what a stopped head could still have gained on the one that dominates it with more training: heads
that are behind by less keep training. A stopped head keeps the weights it had when it stopped (its training is
exactly the first epochs of the long schedule) and stays in the exit space, the cache and the search; the run
records when each head stopped. Heads are independent given the frozen backbone (each draws its dropout from its
own random stream, see :func:`head_seed`), so a head that trains to the end gets exactly the weights it would get
trained alone for the same steps.

Example:
    >>> cost = {(1, "a"): 1.0, (1, "b"): 2.0, (2, "a"): 2.5}
    >>> miou = {(1, "a"): 0.40, (1, "b"): 0.41, (2, "a"): 0.30}
    >>> sorted(dominated(cost, miou, final=(3.0, 0.55), margin=0.02))
    [(2, 'a')]
"""

from __future__ import annotations

from typing import Hashable, Mapping

from ..seeding import stable_seed

__all__ = ["dominated", "head_seed"]


def dominated(
    cost: Mapping[Hashable, float], miou: Mapping[Hashable, float], *, final: tuple[float, float], margin: float
) -> set[Hashable]:
    """The heads of ``cost``/``miou`` (path cost and mIoU per head) that another head, or the final exit
    ``final = (cost, miou)``, beats by at least ``margin`` mIoU at no more cost."""
    if margin <= 0:
        raise ValueError(f"the margin must be positive (mIoU as a fraction), not {margin}")
    rivals = [(cost[h], miou[h]) for h in cost] + [final]
    return {h for h in cost if any(c <= cost[h] and m >= miou[h] + margin for c, m in rivals)}


def head_seed(seed: int, step: int, exit: int, config: str, rank: int = 0) -> int:
    """The seed of one head's random stream (dropout) on one optimiser step: the same whichever other heads run."""
    return stable_seed(seed, rank, step, exit, config)
