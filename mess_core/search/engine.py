"""The input-dependent search engine: every instance of a :class:`~mess_core.search.problem.SearchSpace` (one th_pix,
then kept exits in rising order, each with one option: a configuration and a th_img) is built level by level from
partial instances that share the images still running, scored by matrix products over per-image counts and offered
to a :class:`~mess_core.search.collector.Collector`. :mod:`.constrained` runs it for input-dependent searches; the
budgeted and anytime ones keep a single exit and need no engine.

It skips only what cannot change the collector's answer: th_img values that let the same images leave at an exit
are one option, an exit no image leaves at is dominated, nothing is enumerated past an exit every image leaves at,
and candidates and partial instances are cut by the collector's cost limit and by accuracy bounds. Candidates are
scored in float32 within a proven tolerance (``Engine.tol``); only the collector's shortlist gets the exact float64
mIoU it decides on.

Example:
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> from mess_core.search.problem import Objective
    >>> cache = EvaluationCache.random(images=20, exits=4, configs=2, seed=3)
    >>> front = Collector(Objective("pareto"), target_miou=0.0, budget_cost=0.0)
    >>> engine = Engine(cache, "gflops", SearchSpace(th_pix=(0.7,), th_img=(0.3, 0.6, 0.9)))
    >>> engine.run(front)
    >>> cost, miou, keys = front.front()
    >>> bool((np.diff(cost) > 0).all() and (np.diff(miou) > 0).all())
    True
    >>> engine.instance(keys[-1]).mode
    'input-dependent'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..evaluate.cache import EvaluationCache
from ..evaluate.instance import Instance, KeptExit
from ..evaluate.policy import ConfidencePolicy
from .collector import EPS, Collector
from .problem import SearchSpace

__all__ = ["Engine"]

_CHUNK = 20_000  # partial instances or scored candidates handled per array operation


def _gather_product(r: np.ndarray, w: np.ndarray, cols: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(S, 2K): row ``rows[s]`` of ``r`` (M, B) times option ``cols[s]`` of ``w`` (B, 2K, n), in chunks."""
    out = np.empty((len(cols), w.shape[1]), dtype=w.dtype)
    for start in range(0, len(cols), _CHUNK):
        c = cols[start : start + _CHUNK]
        rr = r[rows[start : start + _CHUNK]] if rows is not None else r[start : start + _CHUNK]
        out[start : start + _CHUNK] = np.einsum("sb,bks->sk", rr, w[:, :, c], optimize=True)
    return out


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


class Engine:
    """One input-dependent search of ``space`` on ``cache`` with costs in ``unit``: :meth:`run` offers its
    instances to a collector, whose keys :meth:`instance` turns back into instances."""

    def __init__(self, cache: EvaluationCache, unit: str, space: SearchSpace):
        self.cache = cache
        self.space = space
        self.exits, self.configs, self.th_pix = space.resolve(cache)
        self.unit = unit
        self.cum = cache.reach_cost(unit)  # type: ignore[arg-type]
        self.head = cache.exit_cost(space.policy, unit)  # type: ignore[arg-type]
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

    def run(self, collector: Collector) -> None:
        """Offer every instance of the space to ``collector``: the backbone, then each number of kept exits."""
        self.complete_root(collector, self.th_pix[0])
        # breadth first (every th_pix at one depth before the next depth) so a good incumbent prunes early
        frontier: list[tuple[float | None, _States]] = [(p, self.root()) for p in self.th_pix]
        depth_limit = min(self.space.max_exits, len(self.exits))
        for depth in range(1, depth_limit + 1):
            deeper = []
            for th_pix, states in frontier:
                last = states.exits[-1] if states.exits else 0
                for exit in [e for e in self.exits if e > last]:
                    for nxt in self.extend(states, exit, th_pix, collector, keep_states=depth < depth_limit):
                        deeper.append((th_pix, nxt))
            frontier = deeper

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

    def complete_root(self, collector: Collector, th_pix: float | None) -> None:
        cost = np.array([self.cum[self.n_exits]])
        collector.offer(cost, self.miou(self.final_counts.sum(0))[None], lambda i: (th_pix, (), ()))

    def extend(
        self, states: _States, exit: int, th_pix: float | None, collector: Collector, keep_states: bool
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
        score = useful & (cost <= collector.cost_limit() + EPS)
        floor = collector.miou_floor()
        if floor > -np.inf and score.any():  # (lossless) skip candidates whose accuracy bound is below the floor
            bound = self.head_or_final_bound(states, exit)  # (M, C)
            score &= bound[:, opts.config_pos] >= floor - EPS - self.tol
        if score.any():
            self._score(states, opts, exit, th_pix, score, cost, collector)
        if not keep_states:
            return []
        # partial instances worth extending: some image left here, some still running; (lossless) bound: their
        # descendants cost at least what the images that left cost plus the running ones' cost so far
        alive = useful & (captured < left[:, None] - 0.5)
        alive &= cost - (left[:, None] - captured) * (rest / self.b) <= collector.cost_limit() + EPS
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
                nxt = nxt.take(self.miou_bound(nxt, exit) >= floor - EPS)
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
        collector: Collector,
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
