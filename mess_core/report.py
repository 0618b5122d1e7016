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
from .search import Objective, SearchResult, SearchSpace, oracle, pareto_front, search, uniform_exit

__all__ = ["TableRow", "results_table", "format_table", "all_fronts", "ROW_OBJECTIVES"]

# the MESS rows of the seed's table: label -> objective
ROW_OBJECTIVES = {
    "MESS max-acc <= 1x cost": Objective("max-acc", budget=1.0),
    "MESS min-cost <= 0.1pp drop": Objective("min-cost", max_drop=0.1),
    "MESS min-cost <= 1pp drop": Objective("min-cost", max_drop=1.0),
}
PEER_OBJECTIVE = Objective("min-cost", max_drop=1.0)

TableRow = dict[str, Any]


def _figures(cache: EvaluationCache, instance: Instance | None, prefix: str = "") -> dict[str, Any]:
    if instance is None:
        return {f"{prefix}miou": np.nan, f"{prefix}gflops": np.nan, f"{prefix}latency_ms": np.nan}
    flops = evaluate(cache, instance, unit="gflops")
    row = {f"{prefix}miou": flops.miou, f"{prefix}gflops": flops.cost,
           f"{prefix}latency_ms": evaluate(cache, instance, unit="ms").cost if cache.has_latency else np.nan}
    return row


def results_table(cache: EvaluationCache, *, mode: str = "input-dependent", unit: str = "gflops",
                  space: SearchSpace | None = None, eval_cache: EvaluationCache | None = None) -> pd.DataFrame:
    """The seed's table for ``mode``: rows Backbone, MESS max-acc <= 1x, MESS min-cost <= 0.1pp and <= 1pp,
    uniform-exit MESS, naive-confidence policy, oracle (the last three: input-dependent, <= 1pp drop; the oracle on
    the exits of the <= 1pp MESS instance); columns mIoU, GFLOPs, latency, speedup, exits used, and the chosen
    ``instance``. With ``eval_cache`` (another split of the same network) every instance is also reported there
    (columns prefixed ``eval_``): thresholds tuned on one split are not the accuracy on another."""
    space = space or SearchSpace()
    if eval_cache is not None:
        cache.compatible_with(eval_cache)
    rows: list[tuple[str, Instance | None, SearchResult | None]] = [("Backbone", Instance(mode), None)]
    for label, objective in ROW_OBJECTIVES.items():
        result = search(cache, objective, mode=mode, unit=unit, space=space)
        rows.append((label, result.instance, result))
    mess_1pp = rows[-1][1] if mode == "input-dependent" else search(
        cache, PEER_OBJECTIVE, mode="input-dependent", unit=unit, space=space).instance
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
    if mess_1pp is not None:
        miou, gflops, _ = oracle(cache, mess_1pp, unit="gflops")
        row = {"row": "oracle (exits of MESS <= 1pp)", "miou": miou, "gflops": gflops,
               "latency_ms": oracle(cache, mess_1pp, unit="ms")[1] if cache.has_latency else np.nan}
        if eval_cache is not None:
            e_miou, e_gflops, _ = oracle(eval_cache, mess_1pp, unit="gflops")
            row.update(eval_miou=e_miou, eval_gflops=e_gflops,
                       eval_latency_ms=oracle(eval_cache, mess_1pp, unit="ms")[1] if eval_cache.has_latency else np.nan)
        row["exits"] = " > ".join([f"{e.exit}:{e.config}" for e in mess_1pp.exits] + ["final"]) + " (oracle)"
        row["instance"] = None
        table.append(row)
    df = pd.DataFrame(table)
    df["speedup"] = base / df["gflops"]
    df["latency_speedup"] = base_ms / df["latency_ms"]
    return df


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
