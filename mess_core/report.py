"""Results for people: the seed-shaped results table, the accuracy-vs-cost fronts of every mode and peer, and the
text the ``search`` command prints. Every figure comes from :mod:`mess_core.search` and
:func:`mess_core.instance.evaluate` on an evaluation cache.

Example:
    >>> from mess_core.cache import EvaluationCache
    >>> from mess_core.search import SearchSpace
    >>> cache = EvaluationCache.random(images=16, exits=4, configs=2, seed=2)
    >>> table = results_table(cache, space=SearchSpace(th_pix=(0.7,), th_img=(0.4, 0.8)))
    >>> list(table["row"])[:2]
    ['Backbone', 'MESS max-acc <= 1x cost']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .cache import EvaluationCache
from .instance import Instance, evaluate
from .oracle import oracle, oracle_bound
from .search import Objective, SearchResult, SearchSpace, pareto_front, search, uniform_exit

__all__ = ["TableRow", "results_table", "format_table", "all_fronts", "ROW_OBJECTIVES", "ORACLE_ROW",
           "policy_versus_oracle", "exit_class_iou"]

# the MESS rows of the seed's table: label -> objective
ROW_OBJECTIVES = {
    "MESS max-acc <= 1x cost": Objective("max-acc", budget=1.0),
    "MESS min-cost <= 0.1pp drop": Objective("min-cost", max_drop=0.1),
    "MESS min-cost <= 1pp drop": Objective("min-cost", max_drop=1.0),
}
PEER_OBJECTIVE = Objective("min-cost", max_drop=1.0)
ORACLE_ROW = "oracle bound (<= 1pp)"

TableRow = dict[str, Any]


def _figures(cache: EvaluationCache, instance: Instance | None, prefix: str = "") -> dict[str, Any]:
    if instance is None:
        return {f"{prefix}miou": np.nan, f"{prefix}gflops": np.nan, f"{prefix}latency_ms": np.nan}
    flops = evaluate(cache, instance, unit="gflops")
    row = {f"{prefix}miou": flops.miou, f"{prefix}gflops": flops.cost,
           f"{prefix}latency_ms": evaluate(cache, instance, unit="ms").cost if cache.has_latency else np.nan}
    return row


def results_table(cache: EvaluationCache, *, mode: str = "input-dependent", unit: str = "gflops",
                  space: SearchSpace | None = None, eval_cache: EvaluationCache | None = None,
                  oracle: bool = True) -> pd.DataFrame:
    """The seed's table for ``mode``: rows Backbone, MESS max-acc <= 1x, MESS min-cost <= 0.1pp and <= 1pp,
    uniform-exit MESS, naive-confidence policy (these two: input-dependent, <= 1pp drop) and, in input-dependent
    mode with ``oracle``, the oracle bound at <= 1pp (the best label-aware assignment over every instance of the
    space, :func:`mess_core.oracle.oracle_bound`); columns mIoU, GFLOPs, latency, speedup, exits used, and the chosen
    ``instance``. With ``eval_cache`` (another split of the same network) every instance is also reported there
    (columns prefixed ``eval_``): thresholds tuned on one split are not the accuracy on another; the oracle, which
    knows each split's labels, is solved on each split anew."""
    space = space or SearchSpace()
    if eval_cache is not None:
        cache.compatible_with(eval_cache)
    rows: list[tuple[str, Instance | None, SearchResult | None]] = [("Backbone", Instance(mode), None)]
    for label, objective in ROW_OBJECTIVES.items():
        result = search(cache, objective, mode=mode, unit=unit, space=space)
        rows.append((label, result.instance, result))
    uniform = uniform_exit(cache, PEER_OBJECTIVE, unit=unit, space=space)
    rows.append(("uniform-exit MESS (<= 1pp)", uniform.instance, uniform))
    naive_space = SearchSpace(**{**space.__dict__, "policy": "naive"})
    naive = search(cache, PEER_OBJECTIVE, mode="input-dependent", unit=unit, space=naive_space)
    rows.append(("naive-confidence policy (<= 1pp)", naive.instance, naive))
    table = []
    base = evaluate(cache, Instance(mode), unit="gflops").cost
    base_ms = evaluate(cache, Instance(mode), unit="ms").cost if cache.has_latency else np.nan
    for label, instance, _ in rows:
        row = {"row": label, **_figures(cache, instance)}
        if eval_cache is not None:
            row.update(_figures(eval_cache, instance, prefix="eval_"))
        row["exits"] = instance.describe() if instance is not None else "no instance meets the constraint"
        row["instance"] = instance
        table.append(row)
    if oracle and mode == "input-dependent":
        policy = [r[1] for r in rows if r[0] == "MESS min-cost <= 1pp drop" and r[1] is not None]
        bound = dict(max_exits=space.max_exits, exits=space.exits, configs=space.configs, max_drop=1.0, also=policy)
        found = oracle_bound(cache, unit="gflops", **bound)
        row = {"row": ORACLE_ROW, "miou": found.miou, "gflops": found.cost,
               "latency_ms": found.cost_in(cache, "ms") if cache.has_latency else np.nan}
        if eval_cache is not None:
            other = oracle_bound(eval_cache, unit="gflops", **bound)
            row.update(eval_miou=other.miou, eval_gflops=other.cost,
                       eval_latency_ms=other.cost_in(eval_cache, "ms") if eval_cache.has_latency else np.nan)
        row["exits"] = found.describe() if found.feasible else "no assignment meets the constraint"
        row["instance"] = None
        table.append(row)
    df = pd.DataFrame(table)
    df["speedup"] = base / df["gflops"]
    df["latency_speedup"] = base_ms / df["latency_ms"]
    return df


def policy_versus_oracle(cache: EvaluationCache, *, drops: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0),
                         space: SearchSpace | None = None, unit: str = "gflops") -> pd.DataFrame:
    """How close the exit policy comes to the oracle, at each allowed mIoU drop (pp): the speedup against the
    backbone of the searched MESS instance (edge-masked policy), of the oracle bound over the same space (which also
    starts from that instance's own assignment, so it is never below it) and of the clairvoyant oracle (any head per
    image, paying only that head), and the policy's share of the bound's speedup."""
    space = space or SearchSpace()
    rows = []
    for drop in drops:
        found = search(cache, Objective("min-cost", max_drop=drop), mode="input-dependent", unit=unit, space=space)
        also = [found.instance] if found.instance is not None else []
        bound = oracle_bound(cache, max_drop=drop, unit=unit, exits=space.exits, configs=space.configs,
                             max_exits=space.max_exits, also=also)
        seer = oracle(cache, max_drop=drop, unit=unit, clairvoyant=True)
        policy = found.reference_cost / found.cost if found.instance is not None else float("nan")
        rows.append({"drop_pp": drop, "policy_speedup": policy, "policy_miou": found.miou,
                     "policy_exits": found.instance.describe() if found.instance is not None else "",
                     "oracle_speedup": bound.speedup, "oracle_miou": bound.miou, "oracle_exits": bound.describe(),
                     "share_of_oracle": policy / bound.speedup if bound.feasible else float("nan"),
                     "clairvoyant_speedup": seer.speedup, "clairvoyant_miou": seer.miou})
    return pd.DataFrame(rows)


def exit_class_iou(cache: EvaluationCache, *, config: str | None = None) -> pd.DataFrame:
    """IoU per class of every exit on the cache's split: at each early exit the head of ``config`` (default: the
    exit's most accurate head), then the final exit; columns exit, config, GFLOPs (the static path), mIoU and one
    per class. Where exits lose to the final one, class by class."""
    miou = cache.head_miou()
    label = cache.label.sum(0).astype(np.float64)
    reach, head = cache.reach_cost(), cache.head_cost()
    rows = []
    for e in range(1, cache.num_exits + 1):
        if e == cache.num_exits:
            h, name, cost = cache.final_head, "final", reach[-1]
        else:
            c = cache.config_index(config) if config is not None else int(np.argmax(
                [miou[cache.head_index(e, j)] for j in range(len(cache.configs))]))
            h, name, cost = cache.head_index(e, c), cache.configs[c], reach[e] + head[e - 1, c]
        tp, pred = cache.tp[:, h].sum(0).astype(np.float64), cache.pred[:, h].sum(0).astype(np.float64)
        union = label + pred - tp
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        rows.append({"exit": str(e) if e < cache.num_exits else "final", "config": name, "gflops": float(cost),
                     "miou": float(miou[h]), **dict(zip(cache.meta["classes"], iou))})
    return pd.DataFrame(rows)


def format_table(df: pd.DataFrame, *, title: str = "") -> str:
    """The table as aligned text (mIoU in %, GFLOPs, ms, speedup x)."""
    has_eval = "eval_miou" in df.columns
    has_ms = bool(np.isfinite(df["latency_ms"]).any())
    head = f"{'':<34}{'mIoU':>8}{'GFLOPs':>9}" + (f"{'ms':>8}" if has_ms else "") + f"{'speedup':>9}"
    if has_eval:
        head += f"{'mIoU*':>8}{'GFLOPs*':>9}"
    lines = ([title] if title else []) + [head + "  exits used"]

    def pct(v: float) -> str:
        return f"{100 * v:7.2f}%" if np.isfinite(v) else f"{'-':>8}"

    def num(v: float, width: int, digits: int = 3) -> str:
        return f"{v:{width}.{digits}f}" if np.isfinite(v) else f"{'-':>{width}}"

    for _, r in df.iterrows():
        line = f"{r['row']:<34}{pct(r['miou'])}{num(r['gflops'], 9)}"
        if has_ms:
            line += num(r["latency_ms"], 8, 2)
        line += (f"{r['speedup']:8.2f}x" if np.isfinite(r["speedup"]) else f"{'-':>9}")
        if has_eval:
            line += f"{pct(r['eval_miou'])}{num(r['eval_gflops'], 9)}"
        lines.append(line + "  " + r["exits"])
    if has_eval:
        lines.append("* on the other split, with the exits and thresholds tuned on this one")
    return "\n".join(lines)


def all_fronts(cache: EvaluationCache, *, unit: str = "gflops", space: SearchSpace | None = None) -> pd.DataFrame:
    """Accuracy-vs-cost fronts of every mode and peer in one DataFrame (columns series, mode, cost, miou,
    description, instance): budgeted, anytime, MESS input-dependent, no edge masking, naive policy."""
    space = space or SearchSpace()
    parts = [
        pareto_front(cache, mode="budgeted", unit=unit, space=space, series="budgeted"),
        pareto_front(cache, mode="anytime", unit=unit, space=space, series="anytime (first output)"),
        pareto_front(cache, mode="input-dependent", unit=unit, space=space, series="MESS input-dependent"),
        pareto_front(cache, mode="input-dependent", unit=unit, series="no edge masking",
                     space=SearchSpace(**{**space.__dict__, "policy": "plain"})),
        pareto_front(cache, mode="input-dependent", unit=unit, series="naive policy",
                     space=SearchSpace(**{**space.__dict__, "policy": "naive"})),
    ]
    return pd.concat(parts, ignore_index=True)
