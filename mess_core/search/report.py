"""Results for people, from one evaluation cache: the seed-shaped results table, the accuracy-vs-cost fronts of every
mode and peer, and the text the ``search`` command prints. Every figure comes from :mod:`mess_core.search.constrained`
and :func:`mess_core.evaluate.instance.evaluate` on the cache. A study's own tables and headline are
:mod:`mess_core.study.report`.

Rows of the results table are identified by :class:`Row` (column ``id``); ``row`` holds the label people read.

Example:
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> from mess_core.search.problem import SearchSpace
    >>> cache = EvaluationCache.random(images=16, exits=4, configs=2, seed=2)
    >>> table = results_table(cache, space=SearchSpace(th_pix=(0.7,), th_img=(0.4, 0.8)))
    >>> list(table["row"])[:2]
    ['Backbone', 'MESS max-acc <= 1x cost']
    >>> table.loc[table["id"] == Row.MIN_COST_1PP, "row"].item() == Row.MIN_COST_1PP.label
    True
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import numpy as np
import pandas as pd

from ..evaluate.cache import EvaluationCache
from ..evaluate.instance import Instance, evaluate
from .constrained import SearchResult, pareto_front, search, uniform_exit
from .oracle import oracle, oracle_bound
from .problem import Objective, SearchSpace
from .uncertainty import DEFAULT_LEVEL, drop_intervals

__all__ = [
    "Row",
    "ROW_LABELS",
    "row_id",
    "with_row_ids",
    "TableRow",
    "results_table",
    "format_table",
    "all_fronts",
    "ROW_OBJECTIVES",
    "row_objectives",
    "policy_versus_oracle",
    "exit_class_iou",
    "with_drop_intervals",
    "interval_name",
    "interval_texts",
]


class Row(str, Enum):
    """A row of the results table, by a name that does not change when its label does (the label people read is
    :attr:`label`; stored tables keep both)."""

    BACKBONE = "backbone"
    MAX_ACC_1X = "max_acc_1x"
    MIN_COST_01PP = "min_cost_01pp"
    MIN_COST_1PP = "min_cost_1pp"
    UNIFORM_1PP = "uniform_1pp"
    NAIVE_1PP = "naive_1pp"
    ORACLE_1PP = "oracle_1pp"

    @property
    def label(self) -> str:
        return ROW_LABELS[self]


ROW_LABELS: dict[Row, str] = {
    Row.BACKBONE: "Backbone",
    Row.MAX_ACC_1X: "MESS max-acc <= 1x cost",
    Row.MIN_COST_01PP: "MESS min-cost <= 0.1pp drop",
    Row.MIN_COST_1PP: "MESS min-cost <= 1pp drop",
    Row.UNIFORM_1PP: "uniform-exit MESS (<= 1pp)",
    Row.NAIVE_1PP: "naive-confidence policy (<= 1pp)",
    Row.ORACLE_1PP: "oracle bound (<= 1pp)",
}
# labels tables were stored under before rows had ids: today's, and the oracle row of studies built before the
# oracle bound (it was the oracle restricted to the exits of MESS <= 1pp)
_STORED_LABELS: dict[str, Row] = {
    **{label: row for row, label in ROW_LABELS.items()},
    "oracle (exits of MESS <= 1pp)": Row.ORACLE_1PP,
}


def row_id(name: Any) -> Row | None:
    """The :class:`Row` a stored id or label names; None for anything else (a bench variant such as ``original``,
    a missing value).

    >>> row_id("min_cost_1pp") is row_id("MESS min-cost <= 1pp drop") is Row.MIN_COST_1PP, row_id("original")
    (True, None)
    """
    if not isinstance(name, str):
        return None
    try:
        return Row(name)
    except ValueError:
        return _STORED_LABELS.get(name)


def with_row_ids(frame: pd.DataFrame, *, labels: str = "row", strict: bool = True) -> pd.DataFrame:
    """``frame`` with column ``id`` (first) holding each row's :class:`Row`: from a stored ``id`` column, else from
    the stored labels in column ``labels`` (tables written before rows had ids). ``strict``: every row must be one;
    a label this version does not know raises ``ValueError`` naming it."""
    stored = frame["id"] if "id" in frame else frame[labels]
    ids = [row_id(v) for v in stored]
    if strict:
        unknown = [v for v, i in zip(stored, ids) if i is None]
        if unknown:
            raise ValueError(f"row {unknown[0]!r} is none this version knows ({', '.join(r.value for r in Row)})")
    out = frame.drop(columns=["id"], errors="ignore")
    out.insert(0, "id", pd.Series(ids, index=frame.index, dtype=object))
    return out


# the MESS rows of the seed's table, and what each is searched for
ROW_OBJECTIVES = {
    Row.MAX_ACC_1X: Objective("max-acc", budget=1.0),
    Row.MIN_COST_01PP: Objective("min-cost", max_drop=0.1),
    Row.MIN_COST_1PP: Objective("min-cost", max_drop=1.0),
}
PEER_OBJECTIVE = Objective("min-cost", max_drop=1.0)

TableRow = dict[str, Any]


def _figures(cache: EvaluationCache, instance: Instance | None, prefix: str = "") -> dict[str, Any]:
    if instance is None:
        return {f"{prefix}miou": np.nan, f"{prefix}gflops": np.nan, f"{prefix}latency_ms": np.nan}
    flops = evaluate(cache, instance, unit="gflops")
    row = {
        f"{prefix}miou": flops.miou,
        f"{prefix}gflops": flops.cost,
        f"{prefix}latency_ms": evaluate(cache, instance, unit="ms").cost if cache.has_latency else np.nan,
    }
    return row


def row_objectives(
    *, confidence: float | None = None, fresh_images: int | None = None, block: int | None = None
) -> dict[Row, Objective]:
    """What each MESS row is searched for: :data:`ROW_OBJECTIVES`, or with ``confidence`` its min-cost rows keeping
    their drop at that confidence (for a fresh sample of ``fresh_images``, over scene blocks of ``block``; see
    :mod:`mess_core.search.uncertainty`)."""
    if confidence is None:
        return dict(ROW_OBJECTIVES)
    return {
        rid: (
            Objective("min-cost", max_drop=o.max_drop, confidence=confidence, fresh_images=fresh_images, block=block)
            if o.kind == "min-cost"
            else o
        )
        for rid, o in ROW_OBJECTIVES.items()
    }


def results_table(
    cache: EvaluationCache,
    *,
    mode: str = "input-dependent",
    unit: str = "gflops",
    space: SearchSpace | None = None,
    eval_cache: EvaluationCache | None = None,
    oracle: bool = True,
    confidence: float | None = None,
    block: int | None = None,
) -> pd.DataFrame:
    """The seed's table for ``mode``: rows Backbone, MESS max-acc <= 1x, MESS min-cost <= 0.1pp and <= 1pp,
    uniform-exit MESS, naive-confidence policy (these two: input-dependent, <= 1pp drop) and, in input-dependent
    mode with ``oracle``, the oracle bound at <= 1pp (the best label-aware assignment over every instance of the
    space, :func:`mess_core.search.oracle.oracle_bound`); columns mIoU, GFLOPs, latency, speedup, exits used, and the
    chosen ``instance``. With ``eval_cache`` (another split of the same network) every instance is also reported there
    (columns prefixed ``eval_``): thresholds tuned on one split are not the accuracy on another; the oracle, which
    knows each split's labels, is solved on each split anew.

    With ``confidence`` the min-cost rows and the naive policy keep their drop at that confidence on a fresh sample
    of as many images as the cache holds (a predictive bootstrap bound, over scene blocks of ``block`` images when
    given): a promise meant for new images, not these (:func:`row_objectives`). Uniform-exit MESS has no such form
    and stays plain; the table's ``attrs["confidence"]`` and ``attrs["block"]`` record the rule."""
    space = space or SearchSpace()
    if eval_cache is not None:
        cache.compatible_with(eval_cache)
    fresh = cache.num_images if confidence is not None else None
    objectives = row_objectives(confidence=confidence, fresh_images=fresh, block=block)
    rows: list[tuple[Row, Instance | None, SearchResult | None]] = [(Row.BACKBONE, Instance(mode), None)]
    for rid, objective in objectives.items():
        result = search(cache, objective, mode=mode, unit=unit, space=space)
        rows.append((rid, result.instance, result))
    uniform = uniform_exit(cache, PEER_OBJECTIVE, unit=unit, space=space)
    rows.append((Row.UNIFORM_1PP, uniform.instance, uniform))
    naive_space = SearchSpace(**{**space.__dict__, "policy": "naive"})
    peer = objectives[Row.MIN_COST_1PP] if confidence is not None else PEER_OBJECTIVE
    naive = search(cache, peer, mode="input-dependent", unit=unit, space=naive_space)
    rows.append((Row.NAIVE_1PP, naive.instance, naive))
    table = []
    base = evaluate(cache, Instance(mode), unit="gflops").cost
    base_ms = evaluate(cache, Instance(mode), unit="ms").cost if cache.has_latency else np.nan
    for rid, instance, _ in rows:
        row = {"id": rid, "row": rid.label, **_figures(cache, instance)}
        if eval_cache is not None:
            row.update(_figures(eval_cache, instance, prefix="eval_"))
        row["exits"] = instance.describe() if instance is not None else "no instance meets the constraint"
        row["instance"] = instance
        table.append(row)
    if oracle and mode == "input-dependent":
        policy = [r[1] for r in rows if r[0] is Row.MIN_COST_1PP and r[1] is not None]
        bound = dict(max_exits=space.max_exits, exits=space.exits, configs=space.configs, max_drop=1.0, also=policy)
        found = oracle_bound(cache, unit="gflops", **bound)
        row = {
            "id": Row.ORACLE_1PP,
            "row": Row.ORACLE_1PP.label,
            "miou": found.miou,
            "gflops": found.cost,
            "latency_ms": found.cost_in(cache, "ms") if cache.has_latency else np.nan,
        }
        if eval_cache is not None:
            other = oracle_bound(eval_cache, unit="gflops", **bound)
            row.update(
                eval_miou=other.miou,
                eval_gflops=other.cost,
                eval_latency_ms=other.cost_in(eval_cache, "ms") if eval_cache.has_latency else np.nan,
            )
        row["exits"] = found.describe() if found.feasible else "no assignment meets the constraint"
        row["instance"] = None
        table.append(row)
    df = with_row_ids(pd.DataFrame(table))  # the ids as Row members (pandas would keep plain strings)
    df["speedup"] = base / df["gflops"]
    df["latency_speedup"] = base_ms / df["latency_ms"]
    df.attrs.update(confidence=confidence, block=block)
    return df


def policy_versus_oracle(
    cache: EvaluationCache,
    *,
    drops: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0),
    space: SearchSpace | None = None,
    unit: str = "gflops",
) -> pd.DataFrame:
    """How close the exit policy comes to the oracle, at each allowed mIoU drop (pp): the speedup against the
    backbone of the searched MESS instance (edge-masked policy), of the oracle bound over the same space (which also
    starts from that instance's own assignment, so it is never below it) and of the clairvoyant oracle (any head per
    image, paying only that head), and the policy's share of the bound's speedup."""
    space = space or SearchSpace()
    rows = []
    for drop in drops:
        found = search(cache, Objective("min-cost", max_drop=drop), mode="input-dependent", unit=unit, space=space)
        also = [found.instance] if found.instance is not None else []
        bound = oracle_bound(
            cache,
            max_drop=drop,
            unit=unit,
            exits=space.exits,
            configs=space.configs,
            max_exits=space.max_exits,
            also=also,
        )
        seer = oracle(cache, max_drop=drop, unit=unit, clairvoyant=True)
        policy = found.reference_cost / found.cost if found.instance is not None else float("nan")
        rows.append(
            {
                "drop_pp": drop,
                "policy_speedup": policy,
                "policy_miou": found.miou,
                "policy_exits": found.instance.describe() if found.instance is not None else "",
                "oracle_speedup": bound.speedup,
                "oracle_miou": bound.miou,
                "oracle_exits": bound.describe(),
                "share_of_oracle": policy / bound.speedup if bound.feasible else float("nan"),
                "clairvoyant_speedup": seer.speedup,
                "clairvoyant_miou": seer.miou,
            }
        )
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
            c = (
                cache.config_index(config)
                if config is not None
                else int(np.argmax([miou[cache.head_index(e, j)] for j in range(len(cache.configs))]))
            )
            h, name, cost = cache.head_index(e, c), cache.configs[c], reach[e] + head[e - 1, c]
        tp, pred = cache.tp[:, h].sum(0).astype(np.float64), cache.pred[:, h].sum(0).astype(np.float64)
        union = label + pred - tp
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        rows.append(
            {
                "exit": str(e) if e < cache.num_exits else "final",
                "config": name,
                "gflops": float(cost),
                "miou": float(miou[h]),
                **dict(zip(cache.meta["classes"], iou)),
            }
        )
    return pd.DataFrame(rows)


def with_drop_intervals(
    table: pd.DataFrame,
    cache: EvaluationCache,
    *,
    level: float = DEFAULT_LEVEL,
    confidence: float = DEFAULT_LEVEL,
    block: int | None = None,
) -> pd.DataFrame:
    """``table`` (a results table) with each row's mIoU drop against the backbone on ``cache``'s split and its
    bootstrap uncertainty (:mod:`mess_core.search.uncertainty`), computed now from the cache: columns ``drop_pp``,
    ``drop_low``, ``drop_high`` (central ``level`` interval) and ``drop_upper`` (one-sided bound at ``confidence``),
    in percentage points; NaN for rows without an instance (the oracle bound). With ``block``, over scene blocks of
    that many images (a study's own rule); ``attrs["drop_block"]`` records the block used (None: single images)."""
    out = table.copy()
    at = [i for i, inst in enumerate(out["instance"]) if inst is not None]
    found = drop_intervals(
        cache, [out["instance"].iloc[i] for i in at], level=level, confidence=confidence, block=block
    )
    for column, field in (("drop_pp", "point"), ("drop_low", "low"), ("drop_high", "high"), ("drop_upper", "upper")):
        values = np.full(len(out), np.nan)
        values[at] = [getattr(f, field) for f in found]
        out[column] = values
    out.attrs["drop_level"] = level
    out.attrs["drop_block"] = found[0].block if found else None
    return out


def interval_name(table: pd.DataFrame) -> str:
    """The interval's name in a column header, e.g. ``90% interval, scene blocks of 10``; ``table`` from
    :func:`with_drop_intervals`."""
    block = table.attrs.get("drop_block")
    return f"{100 * table.attrs.get('drop_level', DEFAULT_LEVEL):g}% interval" + (
        f", scene blocks of {block}" if block else ""
    )


def interval_texts(table: pd.DataFrame) -> list[str]:
    """Each row's drop and interval as text, e.g. ``1.00 [0.64, 1.36]`` (``-`` without one); ``table`` from
    :func:`with_drop_intervals`."""
    return [
        f"{p:.2f} [{lo:.2f}, {hi:.2f}]" if np.isfinite(p) else "-"
        for p, lo, hi in zip(table["drop_pp"], table["drop_low"], table["drop_high"])
    ]


def format_table(df: pd.DataFrame, *, title: str = "") -> str:
    """The table as aligned text (mIoU in %, GFLOPs, ms, speedup x; with :func:`with_drop_intervals`' columns, the
    drop in pp and its bootstrap interval)."""
    has_eval = "eval_miou" in df.columns
    has_ms = bool(np.isfinite(df["latency_ms"]).any())
    has_drop = "drop_low" in df.columns
    drops = interval_texts(df) if has_drop else []
    level = 100 * df.attrs.get("drop_level", DEFAULT_LEVEL)
    head = f"{'':<34}{'mIoU':>8}{'GFLOPs':>9}" + (f"{'ms':>8}" if has_ms else "") + f"{'speedup':>9}"
    if has_drop:
        head += f"  {f'drop pp [{level:g}%]':<20}"
    if has_eval:
        head += f"{'mIoU*':>8}{'GFLOPs*':>9}"
    lines = ([title] if title else []) + [head + "  exits used"]

    def pct(v: float) -> str:
        return f"{100 * v:7.2f}%" if np.isfinite(v) else f"{'-':>8}"

    def num(v: float, width: int, digits: int = 3) -> str:
        return f"{v:{width}.{digits}f}" if np.isfinite(v) else f"{'-':>{width}}"

    for n, (_, r) in enumerate(df.iterrows()):
        line = f"{r['row']:<34}{pct(r['miou'])}{num(r['gflops'], 9)}"
        if has_ms:
            line += num(r["latency_ms"], 8, 2)
        line += f"{r['speedup']:8.2f}x" if np.isfinite(r["speedup"]) else f"{'-':>9}"
        if has_drop:
            line += f"  {drops[n]:<20}"
        if has_eval:
            line += f"{pct(r['eval_miou'])}{num(r['eval_gflops'], 9)}"
        lines.append(line + "  " + r["exits"])
    if has_eval:
        lines.append("* on the other split, with the exits and thresholds tuned on this one")
    if has_drop:
        lines.append(
            f"drop: mIoU points below the backbone on this split [{level:g}% bootstrap interval over its "
            "images, paired with the backbone]"
        )
    return "\n".join(lines)


def all_fronts(cache: EvaluationCache, *, unit: str = "gflops", space: SearchSpace | None = None) -> pd.DataFrame:
    """Accuracy-vs-cost fronts of every mode and peer in one DataFrame (columns series, mode, cost, miou,
    description, instance): budgeted, anytime, MESS input-dependent, no edge masking, naive policy."""
    space = space or SearchSpace()
    parts = [
        pareto_front(cache, mode="budgeted", unit=unit, space=space, series="budgeted"),
        pareto_front(cache, mode="anytime", unit=unit, space=space, series="anytime (first output)"),
        pareto_front(cache, mode="input-dependent", unit=unit, space=space, series="MESS input-dependent"),
        pareto_front(
            cache,
            mode="input-dependent",
            unit=unit,
            series="no edge masking",
            space=SearchSpace(**{**space.__dict__, "policy": "plain"}),
        ),
        pareto_front(
            cache,
            mode="input-dependent",
            unit=unit,
            series="naive policy",
            space=SearchSpace(**{**space.__dict__, "policy": "naive"}),
        ),
    ]
    return pd.concat(parts, ignore_index=True)
