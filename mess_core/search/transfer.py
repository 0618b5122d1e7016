"""Does a choice move from one scene to another? Tune on one part of the tuning images, report on the other, both
ways.

A results row is chosen on the tuning images; the images it will run on are other scenes. The tuning images are cut
into parts that are scenes of their own: their groups when there are several (drives, cities), else contiguous runs
of each group's images in their order (frames of one drive: its first half and its second half are different
stretches of road). For each ordered pair of parts and each deployment mode, every row is searched on the first with
the row's own objective and scored on the second, against the second's final exit: the drop it promised there and
the drop it kept, the speedup it had and the one it kept.

Example:
    >>> from mess_core.evaluate.cache import EvaluationCache
    >>> from mess_core.search.problem import SearchSpace
    >>> cache = EvaluationCache.random(images=24, exits=3, configs=2, seed=1)
    >>> [len(p) for p in scene_parts(cache)], part_names(cache)
    ([12, 12], ['images 1-12', 'images 13-24'])
    >>> table = transfer_check(cache, space=SearchSpace(th_pix=(0.7,)))
    >>> sorted(set(table["tuned_on"])), list(table.columns[:5])
    (['images 1-12', 'images 13-24'], ['mode', 'id', 'row', 'tuned_on', 'reported_on'])
    >>> sorted(set(table["mode"])) == sorted(MODES)
    True
    >>> summary = transfer_summary(of_mode(table, "budgeted"))
    >>> list(summary.columns)
    ['id', 'row', 'drop_pp', 'speedup', 'worst_drop_pp', 'least_speedup', 'held', 'text']
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..evaluate.cache import EvaluationCache
from ..evaluate.instance import MODES, Instance, evaluate
from .heldout import PROMISES
from .problem import SearchSpace
from .report import Row, results_table

__all__ = [
    "scene_parts",
    "part_names",
    "transfer_check",
    "of_mode",
    "transfer_summary",
    "transfer_beside",
    "transfer_markdown",
]


def scene_parts(cache: EvaluationCache, parts: int = 2) -> list[np.ndarray]:
    """Image indices of ``parts`` disjoint parts of ``cache``'s images that are scenes of their own: whole groups
    when the cache records at least ``parts`` groups (dealt out largest first to even the sizes), else each group's
    images in their order, cut into ``parts`` contiguous runs (part k takes run k of every group)."""
    groups = cache.image_groups
    if groups is not None and len(set(groups)) >= parts:
        by_group: dict[str, list[int]] = {}
        for i, g in enumerate(groups):
            by_group.setdefault(g, []).append(i)
        bins: list[list[int]] = [[] for _ in range(parts)]
        for members in sorted(by_group.values(), key=len, reverse=True):
            min(bins, key=len).extend(members)
        return [np.asarray(sorted(b)) for b in bins]
    labels = groups or ["all"] * cache.num_images
    cut: list[list[int]] = [[] for _ in range(parts)]
    for g in dict.fromkeys(labels):
        members = [i for i, x in enumerate(labels) if x == g]
        for k, run in enumerate(np.array_split(np.asarray(members), parts)):
            cut[k].extend(int(i) for i in run)
    return [np.asarray(sorted(c)) for c in cut]


def part_names(cache: EvaluationCache, parts: int = 2) -> list[str]:
    """How :func:`scene_parts`'s parts are called in tables: their groups, or their image numbers (1-based)."""
    found = scene_parts(cache, parts)
    groups = cache.image_groups
    if groups is not None and len(set(groups)) >= parts:
        return ["+".join(dict.fromkeys(groups[i] for i in p)) for p in found]
    return [
        f"images {p.min() + 1}-{p.max() + 1}" if len(p) == p.max() - p.min() + 1 else f"part {k + 1}"
        for k, p in enumerate(found)
    ]


def transfer_check(
    cache: EvaluationCache,
    *,
    modes: Sequence[str] = MODES,
    space: SearchSpace | None = None,
    parts: int = 2,
    confidence: float | None = None,
    block: int | None = None,
) -> pd.DataFrame:
    """Every results row of each of ``modes`` tuned on each part of ``cache`` and scored on each other part, each row
    searched as the study searches it (``confidence`` and ``block``: :func:`mess_core.search.report.results_table`).
    Columns: mode, id, row, tuned_on, reported_on, tuned_drop_pp and tuned_speedup (on the part it was tuned on),
    drop_pp and speedup (on the other, against its own final exit), held (its promise there; None for the backbone),
    exits."""
    pieces = [cache.subset(p) for p in scene_parts(cache, parts)]
    names = part_names(cache, parts)
    rows: list[dict[str, Any]] = []
    for mode, a in itertools.product(modes, range(len(pieces))):
        tuned = pieces[a]
        table = results_table(tuned, mode=mode, space=space, oracle=False, confidence=confidence, block=block)
        tuned_final = float(tuned.head_miou()[tuned.final_head])
        for b, other in enumerate(pieces):
            if a == b:
                continue
            base = evaluate(other, Instance(mode))
            for r in table.itertuples():
                if not isinstance(r.instance, Instance):
                    continue
                found = evaluate(other, r.instance)
                drop, speedup = 100 * (base.miou - found.miou), base.cost / found.cost
                promise = PROMISES.get(r.id)
                rows.append(
                    {
                        "mode": mode,
                        "id": r.id.value,
                        "row": r.row,
                        "tuned_on": names[a],
                        "reported_on": names[b],
                        "tuned_drop_pp": 100 * (tuned_final - r.miou),
                        "tuned_speedup": r.speedup,
                        "drop_pp": drop,
                        "speedup": speedup,
                        "held": None if promise is None else promise.held(drop_pp=drop, cost_ratio=1 / speedup),
                        "exits": r.exits,
                    }
                )
    return pd.DataFrame(rows)


def of_mode(check: pd.DataFrame, mode: str) -> pd.DataFrame | None:
    """The rows of ``check`` for deployment ``mode``; None when it has none. A check stored before it covered every
    mode (no ``mode`` column) holds the input-dependent rows only."""
    if "mode" not in check.columns:
        return check if mode == "input-dependent" else None
    mine = check[check["mode"] == mode]
    return mine.reset_index(drop=True) if len(mine) else None


def _held_every_way(held: pd.Series) -> bool | None:
    """Whether a row's promise held in every direction; None for a row that promises nothing (the backbone)."""
    return None if held.isna().all() else bool(held.astype(bool).all())


def transfer_summary(check: pd.DataFrame) -> pd.DataFrame:
    """One line per row of one mode's :func:`transfer_check` (:func:`of_mode`): the mean drop and speedup over the
    directions, the worst drop and the least speedup, whether the promise held in every direction, and a short text
    for tables."""
    out = []
    for rid, group in check.groupby("id", sort=False):
        every = _held_every_way(group["held"])
        text = "; ".join(
            f"{r.tuned_on} -> {r.reported_on}: {r.drop_pp:.2f} pp at {r.speedup:.2f}x" for r in group.itertuples()
        )
        out.append(
            {
                "id": rid,
                "row": Row(rid).label,
                "drop_pp": float(group["drop_pp"].mean()),
                "speedup": float(group["speedup"].mean()),
                "worst_drop_pp": float(group["drop_pp"].max()),
                "least_speedup": float(group["speedup"].min()),
                "held": every,
                "text": text,
            }
        )
    return pd.DataFrame(out)


def transfer_beside(table: pd.DataFrame, check: pd.DataFrame) -> pd.DataFrame:
    """A study's results ``table`` of one mode (tuned on the whole tuning split) with that mode's transfer
    ``check`` (:func:`of_mode`) beside each row: the tuned drop and speedup, then per direction the drop and speedup
    the row's objective kept on the other part, and whether the promise held every way."""
    final = table.loc[table["id"].map(lambda r: getattr(r, "value", r)) == "backbone", "miou"]
    base = float(final.iloc[0]) if len(final) else np.nan
    out = []
    for r in table.itertuples():
        rid = getattr(r.id, "value", r.id)
        if not isinstance(r.instance, Instance):
            continue
        line: dict[str, Any] = {"row": r.row, "tuned drop pp": 100 * (base - r.miou), "tuned speedup": r.speedup}
        mine = check[check["id"] == rid]
        for c in mine.itertuples():
            line[f"{c.tuned_on} -> {c.reported_on}"] = f"{c.drop_pp:.2f} pp, {c.speedup:.2f}x"
        every = _held_every_way(mine["held"])
        line["held every way"] = None if every is None else ("yes" if every else "no")
        out.append(line)
    return pd.DataFrame(out)


def transfer_markdown(table: pd.DataFrame, check: pd.DataFrame, cache: EvaluationCache) -> str:
    """A study's results ``table`` of one mode and that mode's transfer ``check`` (:func:`of_mode` of
    :func:`transfer_check` on ``cache``) as markdown (``study report``)."""
    beside = transfer_beside(table, check)
    header = "| " + " | ".join(beside.columns) + " |"
    lines = [header, "|" + "---|" * len(beside.columns)]
    for r in beside.to_dict("records"):
        cells = [
            "-"
            if v is None or (isinstance(v, float) and not np.isfinite(v))
            else (f"{v:.2f}" if isinstance(v, float) else str(v))
            for v in r.values()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    names = list(dict.fromkeys(check["tuned_on"]))
    return "\n".join(
        [
            f"Transfer check: each row's objective searched on one scene part of the {cache.num_images} "
            f"tuning images ({cache.split_label}) and scored on the other ({' and '.join(names)}), against that "
            "part's final exit:",
            "",
            *lines,
        ]
    )
