"""What a search is asked: the objective (:class:`Objective`) and the instances it may choose from
(:class:`SearchSpace`); :class:`SearchError` when either cannot be set up. :mod:`.constrained` answers it. Both sit
below the search itself because :mod:`.engine` and :mod:`.collector` need them too.

Objectives (``Objective``):

* ``min-cost``: minimise average cost per image subject to mIoU >= final-exit mIoU - ``max_drop`` (percentage points);
  with a ``confidence`` (e.g. 0.9), subject instead to the one-sided bootstrap upper bound of the drop at that
  confidence being <= ``max_drop``: the promise holds at that confidence, not only on this split's images (see
  :mod:`mess_core.search.uncertainty`; this one is searched over the Pareto front's instances only, not exhaustively);
* ``max-acc``: maximise mIoU subject to average cost <= ``budget`` x the backbone's cost;
* ``pareto``: every instance on the accuracy-vs-cost front.

The space (``SearchSpace``): which candidate exits may be kept (at most ``max_exits`` of them, the final exit always
last), each kept exit's configuration, and, in input-dependent mode, one th_pix from a grid (shared by every exit)
and one th_img per kept exit from a grid.

Example:
    >>> Objective("min-cost", max_drop=1.0, confidence=0.9).describe()
    'min cost, mIoU drop <= 1 pp at 90% confidence'
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> SearchSpace().size(EvaluationCache.random(images=4, exits=3, configs=2, seed=0), "budgeted")
    5
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from ..errors import MessError
from ..evaluate.cache import EvaluationCache
from ..evaluate.policy import EdgeMasking
from .uncertainty import UncertaintyError, check_confidence

__all__ = ["Objective", "SearchSpace", "SearchError", "DEFAULT_TH_IMG", "DEFAULT_TH_PIX"]

DEFAULT_TH_PIX = (0.6, 0.7, 0.8, 0.9, 0.95)
DEFAULT_TH_IMG = tuple(round(0.05 * i, 2) for i in range(1, 21))


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
