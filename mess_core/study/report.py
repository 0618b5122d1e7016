"""A study's tables and headline, for people: what ``study report``, BENCHMARKS.md and the app's Study page show.
Every figure is one a study stored (read through :class:`StudyView`; this module does not know where a study's files
live) or one computed from its evaluation cache by :mod:`mess_core.search.report`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ..evaluate.cache import EvaluationCache
from ..evaluate.instance import Instance
from ..search.report import Row, interval_name, interval_texts, with_drop_intervals
from ..search.transfer import transfer_markdown
from ..search.uncertainty import DEFAULT_LEVEL

__all__ = [
    "StudyView",
    "end_to_end_table",
    "policy_comparison",
    "Target",
    "TARGETS",
    "headline_figures",
    "headline",
    "markdown_report",
]


class StudyView(Protocol):
    """What the tables below read from a study (:class:`mess_core.study.Study` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def manifest(self) -> dict[str, Any]: ...

    @property
    def cache(self) -> EvaluationCache: ...

    @property
    def report_cache(self) -> EvaluationCache | None: ...

    def results(self, mode: str) -> pd.DataFrame: ...

    def fronts(self) -> pd.DataFrame: ...

    def latency(self) -> pd.DataFrame | None: ...

    def policy_versus_oracle(self) -> pd.DataFrame | None: ...

    def training_table(self) -> pd.DataFrame | None: ...

    def transfer_check(self, mode: str = "input-dependent", *, compute: bool = False) -> pd.DataFrame | None: ...

    @property
    def promise_rule(self) -> dict[str, Any]: ...


# the bench's name for the original model, which an instance without early exits runs as
ORIGINAL = "original"


def _md(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append(
            "| " + " | ".join("-" if (isinstance(v, float) and not np.isfinite(v)) else str(v) for v in row) + " |"
        )
    return "\n".join(lines)


def _measured(latency: pd.DataFrame, rid: Row, instance: Instance | None, column: str) -> float:
    """``column`` of the measured variant that deploys results row ``rid``: the row's own instance, or the original
    model for an instance without early exits; NaN for a bound (the oracle) and for what was not measured."""
    if rid is Row.ORACLE_1PP or instance is None:
        return np.nan
    at = latency[latency["variant"] == ORIGINAL] if not instance.exits else latency[latency["id"] == rid]
    return float(at[column].iloc[0]) if len(at) else np.nan


def _interval_column(study: StudyView, table: pd.DataFrame) -> tuple[str, list[str]]:
    """The name and texts of a column of each row's drop against the backbone with its bootstrap interval, computed
    now from the study's cache (a study built before intervals existed needs no rebuild)."""
    shown = with_drop_intervals(table, study.cache, block=study.promise_rule["block"])
    return f"drop pp [{interval_name(shown)}] ({study.cache.split_label})", interval_texts(shown)


def end_to_end_table(study: StudyView, *, intervals: bool = False) -> pd.DataFrame:
    """The seed's table for input-dependent deployment with the latency measured in the study's one run: rows of
    the results table; mIoU on the tuning split (and the report split), with ``intervals`` the drop against the
    backbone and its bootstrap interval on the tuning split, average GFLOPs, ms per image at each measured batch
    size (eager), speedups against the backbone, exits used."""
    table = study.results("input-dependent")
    latency = study.latency()
    out = pd.DataFrame({"": table["row"], f"mIoU % ({study.cache.split_label})": (100 * table["miou"]).round(2)})
    if intervals:
        name, texts = _interval_column(study, table)
        out[name] = texts
    if "eval_miou" in table:
        out[f"mIoU % ({study.report_cache.split_label if study.report_cache else 'report'})"] = (
            100 * table["eval_miou"]
        ).round(2)
    out["GFLOPs"] = table["gflops"].round(3)
    out["speedup (GFLOPs)"] = table["speedup"].round(2)
    if latency is not None:
        eager = latency[latency["engine"].str.startswith("eager")]
        for b in sorted(eager["batch"].unique()):
            at = eager[eager["batch"] == b]
            rows = list(zip(table["id"], table["instance"]))
            out[f"ms/img b{b}"] = np.round([_measured(at, r, i, "ms_per_image") for r, i in rows], 2)
            out[f"speedup b{b}"] = np.round([_measured(at, r, i, "speedup") for r, i in rows], 2)
    out["exits used"] = table["exits"]
    return out


def policy_comparison(study: StudyView, drops: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0)) -> pd.DataFrame:
    """Exit policies at equal accuracy: for each allowed mIoU drop, the fewest average GFLOPs on the front of MESS
    (edge-masked), of the same policy without edge masking and of the naive mean-confidence policy, as speedups
    against the backbone; then the oracle bound over the same space and the clairvoyant oracle (bounds, not
    policies), and MESS's share of the bound's speedup."""
    fronts = study.fronts()
    cache = study.cache
    base_miou = float(cache.head_miou()[cache.final_head])
    base = float(cache.stage_gflops.sum())
    versus = study.policy_versus_oracle()
    rows = []
    for drop in drops:
        row: dict[str, Any] = {"mIoU drop <= pp": drop}
        for series, label in (
            ("MESS input-dependent", "MESS (edge-masked)"),
            ("no edge masking", "no edge masking"),
            ("naive policy", "naive (mean confidence)"),
        ):
            front = fronts[(fronts["series"] == series) & (fronts["miou"] >= base_miou - drop / 100 - 1e-12)]
            row[label] = round(base / float(front["cost"].min()), 2) if len(front) else np.nan
        at = versus[np.isclose(versus["drop_pp"], drop)] if versus is not None else None
        if at is not None and len(at):
            row["oracle bound"] = round(float(at["oracle_speedup"].iloc[0]), 2)
            row["MESS / oracle"] = round(float(at["share_of_oracle"].iloc[0]), 2)
            row["clairvoyant oracle"] = round(float(at["clairvoyant_speedup"].iloc[0]), 2)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Target:
    """One headline claim checked on a study: ``name`` keys the measured value, ``at_least`` the bar it must reach."""

    name: str
    text: str
    at_least: float
    unit: str = "x"


# what the reference study is held to, with the paper's own figures as context in the texts
TARGETS = (
    Target(
        "gflops_1pp", "MESS <= 1 pp drop: fewer average GFLOPs than the backbone (the paper's MobileNetV2: 2.5x)", 2.0
    ),
    Target(
        "latency_1pp_b1",
        "MESS <= 1 pp drop: lower measured CPU latency at batch 1 than the backbone, same run "
        "(the paper's headline: 2.8x faster)",
        1.7,
    ),
    Target("gflops_01pp", "MESS <= 0.1 pp drop: fewer average GFLOPs than the backbone", 1.4),
    Target("miou_gain_1x", "MESS at <= 1x cost: mIoU above the backbone's (pp)", 1e-9, "pp"),
    Target("oracle_share_1pp", "MESS <= 1 pp drop: share of the oracle bound's speedup", 0.6, ""),
)


def headline_figures(study: StudyView) -> dict[str, float]:
    """The measured value of every :data:`TARGETS` entry on ``study`` (NaN where the study lacks the measurement)."""
    table = study.results("input-dependent").set_index("id")
    base = table.loc[Row.BACKBONE]
    figures = {
        "gflops_1pp": float(table.loc[Row.MIN_COST_1PP, "speedup"]),
        "gflops_01pp": float(table.loc[Row.MIN_COST_01PP, "speedup"]),
        "miou_gain_1x": 100 * float(table.loc[Row.MAX_ACC_1X, "miou"] - base["miou"]),
        "latency_1pp_b1": float("nan"),
        "oracle_share_1pp": float("nan"),
    }
    latency = study.latency()
    if latency is not None:
        at = latency[(latency["batch"] == 1) & latency["engine"].str.startswith("eager")]
        figures["latency_1pp_b1"] = _measured(at, Row.MIN_COST_1PP, table.loc[Row.MIN_COST_1PP, "instance"], "speedup")
    versus = study.policy_versus_oracle()
    if versus is not None:
        at1 = versus[np.isclose(versus["drop_pp"], 1.0)]
        if len(at1):
            figures["oracle_share_1pp"] = float(at1["share_of_oracle"].iloc[0])
    return figures


def headline(study: StudyView) -> list[str]:
    """Every :data:`TARGETS` claim checked on ``study``, one line each: measured value, bar, met or NOT met."""
    figures = headline_figures(study)
    lines = []
    for target in TARGETS:
        value = figures[target.name]
        if not np.isfinite(value):
            lines.append(f"{target.text}: not measured in this study")
            continue
        shown = f"{value:+.2f} pp" if target.unit == "pp" else f"{value:.2f}{target.unit}"
        bar = "> 0 pp" if target.unit == "pp" else f">= {target.at_least:g}{target.unit}"
        lines.append(f"{target.text}: {shown} (target {bar}: {'met' if value >= target.at_least else 'NOT met'})")
    return lines


def _transfer(study: StudyView, mode: str) -> str:
    """``mode``'s transfer check beside its rows: the build's, or computed now for a study built before it."""
    check = study.transfer_check(mode, compute=True)
    return "" if check is None else transfer_markdown(study.results(mode), check, study.cache)


def markdown_report(study: StudyView) -> str:
    """Every table BENCHMARKS.md records for a study, as markdown."""
    parts = [
        f"### {study.name}",
        "",
        f"Built by `{study.manifest.get('command')}` on {study.manifest.get('machine')}; "
        f"wall seconds per step: {study.manifest.get('wall_seconds')}.",
        "",
        "End to end (input-dependent):",
        "",
        _md(end_to_end_table(study, intervals=True)),
        "",
        _transfer(study, "input-dependent"),
    ]
    given = study.manifest.get("user_model")
    if given:  # a study built from the user's weights: the reference is their model as given, before our stages
        final = float(study.cache.head_miou()[study.cache.final_head])
        parts += [
            "",
            f"Your model as given ({given['model']}, weights {given['weights']}): mIoU "
            f"{100 * given['miou']:.2f}% on {given['split']}; the final exit after training: {100 * final:.2f}% "
            f"({100 * (final - given['miou']):+.2f} points).",
        ]
    for mode in ("budgeted", "anytime"):
        t = study.results(mode)
        name, texts = _interval_column(study, t)
        parts += [
            "",
            f"{mode}:",
            "",
            _md(
                pd.DataFrame(
                    {
                        "": t["row"],
                        "mIoU %": (100 * t["miou"]).round(2),
                        name: texts,
                        "GFLOPs": t["gflops"].round(3),
                        "exits used": t["exits"],
                    }
                )
            ),
            "",
            _transfer(study, mode),
        ]
    parts += [
        "",
        f"drop pp: mIoU points below the backbone with a {100 * DEFAULT_LEVEL:g}% bootstrap interval over "
        f"the {study.cache.num_images} tuning images ({study.cache.split_label}; 1000 resamples of images, or "
        "of the study's scene blocks where the header says so, paired with the backbone, computed from the cache).",
    ]
    parts += [
        "",
        "Exit policies at equal accuracy (speedup in average GFLOPs against the backbone):",
        "",
        _md(policy_comparison(study)),
        "",
        "Headline:",
        "",
    ] + [f"- {line}" for line in headline(study)]
    training = study.training_table()
    if training is not None:
        shown = training.copy()
        for c in shown.columns:
            if c.startswith("exit ") or c == "final":
                shown[c] = (100 * shown[c]).round(2)
        parts += ["", "Training table (mIoU % on the tuning split per exit):", "", _md(shown)]
    return "\n".join(parts)
