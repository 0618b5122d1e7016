"""A study's rows, as shipped, on labelled images it was not tuned on: did each promise hold there?

A results row promises something about the images its thresholds were tuned on ("<= 1 pp below the backbone at the
least cost"). Deployment data are other images. :func:`evaluate_rows` scores every row's instance, unchanged, on an
evaluation cache of other images (the user's own, a withheld split, another scene) and says, for each, its mIoU,
its drop against the same network's final exit on those images with a bootstrap interval, its GFLOPs speedup, where
the images leave, and whether the row's promise held (:data:`PROMISES`). Nothing is re-tuned.

Example:
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> from mess_core.search.report import results_table
    >>> from mess_core.search.problem import SearchSpace
    >>> tune = EvaluationCache.random(images=24, exits=3, configs=2, seed=1)
    >>> other = EvaluationCache.random(images=20, exits=3, configs=2, seed=2)
    >>> table = results_table(tune, space=SearchSpace(th_pix=(0.7,)), oracle=False)
    >>> rows = evaluate_rows({"input-dependent": table}, other, resamples=200)
    >>> list(rows["id"])[:3], float(rows["drop_pp"].iloc[0])
    (['backbone', 'max_acc_1x', 'min_cost_01pp'], 0.0)
    >>> PROMISES[Row.MIN_COST_1PP].held(drop_pp=0.9, cost_ratio=0.4), PROMISES[Row.MAX_ACC_1X].describe()
    (True, 'not below the backbone at <= 1x its cost')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..evaluate.cache import CacheError, EvaluationCache
from ..evaluate.instance import Instance, Outcome, evaluate
from .report import Row, interval_name
from .uncertainty import DEFAULT_LEVEL, DEFAULT_RESAMPLES, drop_intervals

__all__ = [
    "Promise",
    "PROMISES",
    "evaluate_rows",
    "score_instance",
    "exit_mix",
    "mix_text",
    "with_costs_of",
    "check_report_set",
    "evaluation_markdown",
]


@dataclass(frozen=True)
class Promise:
    """What a results row promises: a drop of at most ``max_drop`` pp, or (``budget``) a cost of at most that many
    times the backbone's with an mIoU not below the backbone's."""

    max_drop: float | None = None
    budget: float | None = None

    def held(self, *, drop_pp: float, cost_ratio: float) -> bool:
        if self.budget is not None:
            return cost_ratio <= self.budget + 1e-9 and drop_pp <= 1e-9
        assert self.max_drop is not None
        return drop_pp <= self.max_drop + 1e-9

    def describe(self) -> str:
        if self.budget is not None:
            return f"not below the backbone at <= {self.budget:g}x its cost"
        return f"drop <= {self.max_drop:g} pp"


# the promise of every row that deploys an instance (the backbone promises nothing; the oracle is not deployable)
PROMISES: dict[Row, Promise] = {
    Row.MAX_ACC_1X: Promise(budget=1.0),
    Row.MIN_COST_01PP: Promise(max_drop=0.1),
    Row.MIN_COST_1PP: Promise(max_drop=1.0),
    Row.UNIFORM_1PP: Promise(max_drop=1.0),
    Row.NAIVE_1PP: Promise(max_drop=1.0),
}


def exit_mix(cache: EvaluationCache, instance: Instance) -> list[dict[str, Any]]:
    """Where the images leave under ``instance``: one entry per output (its exit, or ``final``) with the fraction."""
    return _mix_of(evaluate(cache, instance))


def _mix_of(out: Outcome) -> list[dict[str, Any]]:
    counts = np.bincount(out.exit_taken, minlength=len(out.steps)) / max(len(out.exit_taken), 1)
    return [
        {"exit": "final" if s["config"] == "final" else int(s["exit"]), "fraction": float(f)}
        for s, f in zip(out.steps, counts)
    ]


def mix_text(mix: list[dict[str, Any]]) -> str:
    """``exit 1 7%, exit 2 40%, final 53%``: where images leave, for tables and captions."""
    return ", ".join(
        f"{'final' if m['exit'] == 'final' else 'exit ' + str(m['exit'])} {100 * m['fraction']:.0f}%"
        for m in mix
        if m["fraction"] > 0
    )


def check_report_set(tuning: EvaluationCache, other: EvaluationCache, *, where: str = "report set") -> None:
    """Raise unless ``other`` was evaluated from the network ``tuning`` was (a study's tuning cache): the same model,
    classes, exits and input size, and the same GFLOPs for every head both have (its space may be partial)."""
    for key in ("model", "num_classes", "exits", "input_size"):
        if tuning.meta.get(key) != other.meta.get(key):
            raise CacheError(
                f"{where}: '{key}' is {other.meta.get(key)!r}, the study's is {tuning.meta.get(key)!r}; "
                "evaluate this study's network on the images with `python -m mess_core study evaluate "
                "STUDY --cache FILE`"
            )
    shared = [c for c in other.configs if c in tuning.configs]
    mine = other.head_gflops[:, [other.config_index(c) for c in shared]]
    theirs = tuning.head_gflops[:, [tuning.config_index(c) for c in shared]]
    if not shared or not np.allclose(mine, theirs) or not np.allclose(other.stage_gflops, tuning.stage_gflops):
        raise CacheError(f"{where}: its heads' costs are not the study's; it comes from another network")


def with_costs_of(cache: EvaluationCache, source: EvaluationCache) -> EvaluationCache:
    """``cache`` with ``source``'s measured latency (stage and head milliseconds, matched by configuration): the same
    network on the same machine costs the same on other images. Unchanged when ``source`` measured none."""
    if not source.has_latency or source.num_exits != cache.num_exits:
        return cache
    head_ms = np.zeros_like(cache.head_gflops)
    for c, config in enumerate(cache.configs):
        if config in source.configs:
            head_ms[:, c] = source.head_ms[:, source.config_index(config)]
    cache.stage_ms, cache.head_ms = np.asarray(source.stage_ms), head_ms
    cache.forget()
    return cache


def score_instance(
    cache: EvaluationCache,
    instance: Instance,
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    block: int | None = None,
) -> dict[str, Any]:
    """One instance on ``cache``'s images: miou, gflops, speedup, latency_ms and latency_speedup (with measured
    latency), exit_mix, and drop_pp with drop_low/drop_high (the central ``level`` bootstrap interval, over scene
    blocks of ``block`` images when given)."""
    return _scored(cache, [instance], level=level, resamples=resamples, seed=seed, block=block)[0]


def _scored(
    cache: EvaluationCache, instances: list[Instance], *, level: float, resamples: int, seed: int, block: int | None
) -> list[dict[str, Any]]:
    base = evaluate(cache, Instance("budgeted"))
    base_ms = evaluate(cache, Instance("budgeted"), unit="ms").cost if cache.has_latency else np.nan
    intervals = drop_intervals(cache, instances, resamples=resamples, level=level, seed=seed, block=block)
    out = []
    for instance, interval in zip(instances, intervals):
        figures = evaluate(cache, instance)
        ms = evaluate(cache, instance, unit="ms").cost if cache.has_latency else np.nan
        out.append(
            {
                "miou": figures.miou,
                "gflops": figures.cost,
                "speedup": base.cost / figures.cost,
                "latency_ms": ms,
                "latency_speedup": base_ms / ms if cache.has_latency else np.nan,
                "exit_mix": _mix_of(figures),
                "drop_pp": interval.point,
                "drop_low": interval.low,
                "drop_high": interval.high,
                "cost_ratio": figures.cost / base.cost,
                "interval_block": interval.block,  # None where too few blocks to resample (single images)
            }
        )
    return out


def evaluate_rows(
    tables: Mapping[str, pd.DataFrame],
    cache: EvaluationCache,
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    block: int | None = None,
) -> pd.DataFrame:
    """Every row of ``tables`` (mode -> a study's results table) that deploys an instance, scored on ``cache``.
    With ``block``, the intervals resample scene blocks of that many consecutive images of a group (as the study
    chose its rows), not single images; ``attrs["drop_level"]`` and ``attrs["drop_block"]`` record the interval's
    level and the block it used (None: single images, also when the images make too few blocks), as
    :func:`mess_core.search.report.with_drop_intervals` does.

    Columns: mode, id, row, exits, tuned_miou and tuned_speedup (the figures the row was chosen on), miou, drop_pp
    with drop_low/drop_high (the central ``level`` bootstrap interval over ``cache``'s images, paired with the final
    exit), gflops, speedup (the backbone's GFLOPs on the same images over the row's), latency_ms and latency_speedup
    (when the cache carries measured latency), exit_mix (per output, the fraction of images leaving there), promise,
    held (None for the backbone) and instance. mIoU in [0, 1], drops in percentage points. A row standing in several
    modes' tables with the same instance (the peers), and the backbone, are scored once, under the first."""
    found: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for mode, table in tables.items():
        for record in table.to_dict("records"):
            instance = record.get("instance")
            if not isinstance(instance, Instance):
                continue  # the oracle bound: an assignment that needs the labels, not a deployable instance
            rid = record["id"] if isinstance(record["id"], Row) else Row(record["id"])
            key = (rid.value, "" if rid is Row.BACKBONE else repr(instance.to_dict()))
            if key in seen:
                continue  # the backbone and the input-dependent peers stand in every mode's table: score them once
            seen.add(key)
            found.append(
                {
                    "mode": mode,
                    "id": rid.value,
                    "row": rid.label,
                    "exits": instance.describe(),
                    "tuned_miou": record.get("miou"),
                    "tuned_speedup": record.get("speedup"),
                    "instance": instance,
                }
            )
    scores = _scored(cache, [r["instance"] for r in found], level=level, resamples=resamples, seed=seed, block=block)
    for row, score in zip(found, scores):
        promise = PROMISES.get(Row(row["id"]))
        row.update(
            score,
            promise=promise.describe() if promise else "",
            held=None if promise is None else promise.held(drop_pp=score["drop_pp"], cost_ratio=score["cost_ratio"]),
        )
    columns = [
        "mode",
        "id",
        "row",
        "exits",
        "tuned_miou",
        "tuned_speedup",
        "miou",
        "drop_pp",
        "drop_low",
        "drop_high",
        "gflops",
        "speedup",
        "latency_ms",
        "latency_speedup",
        "exit_mix",
        "promise",
        "held",
        "instance",
    ]
    out = pd.DataFrame(found, columns=columns)
    out.attrs["drop_level"] = level
    out.attrs["drop_block"] = scores[0]["interval_block"] if scores else None
    return out


def evaluation_markdown(rows: pd.DataFrame, *, title: str = "") -> str:
    """``rows`` (:func:`evaluate_rows`) as a markdown table: mIoU in percent with two decimals, the drop with its
    interval, speedups, where images leave and whether each promise held."""
    lines = [f"### {title}", ""] if title else []
    lines += [
        f"| mode | row | tuned mIoU | tuned speedup | mIoU | drop pp [{interval_name(rows)}] | GFLOPs speedup | "
        "images leave | "
        "promise | held |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.to_dict("records"):
        held = "" if r["held"] is None else ("yes" if r["held"] else "**no**")
        tuned = f"{100 * r['tuned_miou']:.2f}" if _number(r["tuned_miou"]) else "-"
        tuned_speedup = f"{r['tuned_speedup']:.2f}x" if _number(r["tuned_speedup"]) else "-"
        lines.append(
            f"| {r['mode']} | {r['row']} | {tuned} | {tuned_speedup} | {100 * r['miou']:.2f} | "
            f"{r['drop_pp']:.2f} [{r['drop_low']:.2f}, {r['drop_high']:.2f}] | {r['speedup']:.2f}x | "
            f"{mix_text(r['exit_mix'])} | {r['promise'] or '-'} | {held} |"
        )
    return "\n".join(lines)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.floating)) and np.isfinite(value)
