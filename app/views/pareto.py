"""The Pareto page's figures, computed without Streamlit from an evaluation cache: the search re-run under the
page's constraint, the cloud of evaluated instances and the fronts it is drawn over, each plotted point with its kind,
the constraint's line, and what the page hands out (the instance's JSON document, its ONNX files zipped)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mess_core.conversion.network import MultiExitNet
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance, KeptExit, evaluate
from mess_core.evaluate.policy import ConfidencePolicy
from mess_core.search.constrained import search, uniform_exit
from mess_core.search.oracle import oracle
from mess_core.search.problem import Objective, SearchSpace
from mess_core.search.uncertainty import DEFAULT_LEVEL, DropInterval, drop_interval

from .thresholds import ThresholdFigures


@dataclass(frozen=True)
class SearchPoint:
    """One instance on the accuracy-cost plane; instance None for the oracle (a bound, not deployable) or when
    nothing meets the constraint (then cost and mIoU are NaN)."""

    instance: Instance | None
    miou: float
    cost: float
    interval: DropInterval | None = None  # the drop against the backbone with its bootstrap interval (the chosen one)


@dataclass(frozen=True)
class LiveSearch:
    """The Pareto page's search under one constraint: the chosen instance, the backbone, and the peers under the same
    objective (absent for a Pareto objective; the oracle only when the chosen instance keeps an exit)."""

    chosen: SearchPoint
    backbone: SearchPoint
    seconds: float  # the search's own time
    space_size: int  # instances searched
    uniform: SearchPoint | None = None  # uniform-exit MESS
    naive: SearchPoint | None = None  # the naive policy (mean confidence), input-dependent
    oracle: SearchPoint | None = None  # the oracle bound on the chosen exits

    PEERS = ("backbone", "uniform-exit MESS", "naive policy", "oracle")  # the peers' names, as the plot labels them

    @property
    def speedup(self) -> float:
        """Backbone cost / chosen cost (NaN when nothing was chosen)."""
        return self.backbone.cost / self.chosen.cost if self.chosen.instance is not None else float("nan")

    def peers(self) -> dict[str, SearchPoint]:
        """The peers present, by name (:attr:`PEERS` order), the backbone first."""
        points = dict(zip(self.PEERS, (self.backbone, self.uniform, self.naive, self.oracle)))
        return {name: point for name, point in points.items() if point is not None}


def live_search(
    cache: EvaluationCache, objective: Objective, *, mode: str, unit: str = "gflops", space: SearchSpace | None = None
) -> LiveSearch:
    """The Pareto page's search for one constraint: the chosen instance and its peers under the same objective
    (uniform-exit MESS and the naive policy, input-dependent; the oracle on the chosen exits under the same
    constraint, :func:`mess_core.search.oracle.oracle`), plus the backbone."""
    space = space or SearchSpace()
    result = search(cache, objective, mode=mode, unit=unit, space=space)
    interval = result.interval  # a confidence-aware search already bootstrapped its choice
    if interval is None and result.instance is not None:
        interval = drop_interval(
            cache,
            result.instance,
            confidence=objective.confidence or DEFAULT_LEVEL,
            fresh_images=objective.fresh_images,
            block=objective.block,
        )
    chosen = SearchPoint(result.instance, result.miou, result.cost, interval)
    backbone = SearchPoint(Instance(mode), result.reference_miou, result.reference_cost)
    peers: dict[str, SearchPoint] = {}
    # the peers answer the same constraint on this split's images (a confidence level is the chosen instance's
    # extra demand; uniform-exit MESS and the oracle have no confidence-aware form)
    objective = Objective(objective.kind, max_drop=objective.max_drop, budget=objective.budget)
    if objective.kind != "pareto":
        uni = uniform_exit(cache, objective, unit=unit, space=space)
        peers["uniform"] = SearchPoint(uni.instance, uni.miou, uni.cost)
        naive = search(
            cache,
            objective,
            mode="input-dependent",
            unit=unit,
            space=SearchSpace(**{**space.__dict__, "policy": "naive"}),
        )
        peers["naive"] = SearchPoint(naive.instance, naive.miou, naive.cost)
        if result.instance is not None and result.instance.exits:
            found = oracle(cache, result.instance, max_drop=objective.max_drop, budget=objective.budget, unit=unit)
            peers["oracle"] = SearchPoint(None, found.miou, found.cost)
    return LiveSearch(chosen=chosen, backbone=backbone, seconds=result.seconds, space_size=result.space_size, **peers)


def sample_instances(
    cache: EvaluationCache, *, count: int = 600, seed: int = 0, max_exits: int = 2, space: SearchSpace | None = None
) -> pd.DataFrame:
    """Exact mIoU and GFLOPs of every budgeted instance and of ``count`` random input-dependent instances (1 to
    ``max_exits`` exits, configurations, th_pix and th_img drawn from ``space``): the cloud the fronts are drawn
    over. Columns series, mode, cost, miou, description, instance."""
    space = space or SearchSpace()
    exits, configs, th_pixes = space.resolve(cache)
    rows: list[Instance] = [Instance("budgeted")]
    rows += [Instance("budgeted", (KeptExit(e, cache.configs[c]),)) for e in exits for c in configs]
    rng = np.random.default_rng(seed)
    th_pixes = [p for p in th_pixes if p is not None] or list(cache.th_pix_grid)
    for _ in range(count):
        k = int(rng.integers(1, min(max_exits, len(exits)) + 1))
        chosen = sorted(rng.choice(exits, size=k, replace=False).tolist())
        kept = tuple(
            KeptExit(int(e), cache.configs[int(rng.choice(configs))], float(rng.choice(space.th_img))) for e in chosen
        )
        rows.append(
            Instance("input-dependent", kept, ConfidencePolicy(th_pix=float(rng.choice(th_pixes)), edges=space.edges))
        )
    records = []
    for inst in rows:
        out = evaluate(cache, inst)
        records.append(
            {
                "series": f"evaluated ({inst.mode})",
                "mode": inst.mode,
                "cost": out.cost,
                "miou": out.miou,
                "description": inst.describe(),
                "instance": inst,
            }
        )
    return pd.DataFrame(records)


def thin_cloud(cloud: pd.DataFrame, *, cells: tuple[int, int] = (240, 120)) -> pd.DataFrame:
    """The rows of a :func:`sample_instances` cloud that a plot can tell apart: the plane (cost x mIoU, over the
    cloud's own range) cut into ``cells`` (columns, rows), one point per occupied cell (the first in the cloud's
    order), the rest dropped. At the Pareto plot's ~1300 x 560 pixels a cell is ~5 pixels, under a marker's size, so
    the plot looks the same with about half the points to send and draw on every slider move."""
    if len(cloud) == 0:
        return cloud

    def cell(values: np.ndarray, count: int) -> np.ndarray:  # 0..count; -1 for NaN (nothing met the constraint)
        finite = values[np.isfinite(values)]
        if finite.size == 0 or np.ptp(finite) == 0:
            return np.zeros(len(values), np.int64)
        scaled = np.floor((values - finite.min()) / np.ptp(finite) * count)
        return np.nan_to_num(scaled, nan=-1.0).astype(np.int64)

    x, y = cell(cloud["cost"].to_numpy(float), cells[0]), cell(cloud["miou"].to_numpy(float), cells[1])
    keys = (x + 1) * (cells[1] + 2) + (y + 1)
    _, first = np.unique(keys, return_index=True)
    return cloud.iloc[np.sort(first)].reset_index(drop=True)


@dataclass(frozen=True)
class GflopsBudget:
    """A cost budget slider in GFLOPs around the backbone's cost, and its conversion to the search's budget (a
    fraction of the backbone)."""

    backbone: float  # the backbone's GFLOPs
    low: float
    high: float
    value: float  # where the slider starts: the backbone's cost
    step: float

    def fraction(self, gflops: float) -> float:
        """A budget in GFLOPs as the search takes it: x backbone."""
        return gflops / self.backbone


def gflops_budget(backbone_gflops: float, *, low: float = 0.05, high: float = 1.5) -> GflopsBudget:
    """A GFLOPs budget slider from ``low`` to ``high`` x ``backbone_gflops`` (3 decimals), starting at the backbone,
    in 200 steps of the backbone."""
    b = float(backbone_gflops)
    return GflopsBudget(b, round(low * b, 3), round(high * b, 3), round(b, 3), round(b / 200, 4))


class PointKind(Enum):
    """What a point of the Pareto plot stands for."""

    CLOUD = "cloud"  # an evaluated instance (:func:`sample_instances`)
    FRONT = "front"  # a point of one of the study's fronts
    PEER = "peer"  # one of the search's peers (:meth:`LiveSearch.peers`)
    CHOSEN = "chosen"  # the searched instance


@dataclass(frozen=True)
class PointId:
    """Which point of the Pareto plot: its kind, with its row for the cloud and the fronts, its name for a peer.
    Plotly hands a clicked point back as text: :attr:`text` writes it into the point's customdata and
    :func:`parse_point_id` reads it back, the one place where a point is named by a string.

    Example:
        >>> PointId(PointKind.PEER, name="oracle").text
        'peer:oracle'
        >>> parse_point_id("front:3") == PointId(PointKind.FRONT, index=3)
        True
    """

    kind: PointKind
    index: int | None = None  # the row of the cloud or of the fronts
    name: str | None = None  # the peer's name

    @property
    def text(self) -> str:
        """The id as plotly carries it: ``cloud:i``, ``front:i``, ``peer:NAME`` or ``chosen``."""
        if self.kind is PointKind.CHOSEN:
            return self.kind.value
        return f"{self.kind.value}:{self.name if self.kind is PointKind.PEER else self.index}"


SEARCHED = PointId(PointKind.CHOSEN)


def parse_point_id(text: Any) -> PointId | None:
    """The point that :attr:`PointId.text` wrote, or None for anything else (text no point carries, no text).

    Example:
        >>> parse_point_id("chosen") == SEARCHED, parse_point_id("peer:naive policy").name, parse_point_id("cloud:x")
        (True, 'naive policy', None)
    """
    if not isinstance(text, str):
        return None
    kind, colon, at = text.partition(":")
    if kind == PointKind.CHOSEN.value and not colon:
        return SEARCHED
    if kind == PointKind.PEER.value and at:
        return PointId(PointKind.PEER, name=at)
    if kind in (PointKind.CLOUD.value, PointKind.FRONT.value) and at.isdigit():
        return PointId(PointKind(kind), index=int(at))
    return None


@dataclass(frozen=True)
class PlotPoint:
    """One point of the Pareto plot."""

    id: PointId
    series: str  # the series (evaluated cloud, front, peer name, "searched") it belongs to
    instance: Instance | None  # None: the oracle bound
    miou: float
    cost: float

    @property
    def kind(self) -> PointKind:
        return self.id.kind

    @property
    def label(self) -> str:
        """What its hover names: the instance, or the oracle's bound."""
        return self.instance.describe() if self.instance is not None else "oracle bound"


def study_points(cloud: pd.DataFrame, fronts: pd.DataFrame) -> dict[PointId, PlotPoint]:
    """The points that depend on the study alone, by id: the evaluated instances (:func:`sample_instances`) and the
    study's fronts, each numbered by its row."""
    points: dict[PointId, PlotPoint] = {}
    for kind, frame in ((PointKind.CLOUD, cloud), (PointKind.FRONT, fronts)):
        for i, r in enumerate(frame.itertuples()):
            key = PointId(kind, index=i)
            points[key] = PlotPoint(key, r.series, r.instance, r.miou, r.cost)
    return points


def search_points(found: LiveSearch) -> dict[PointId, PlotPoint]:
    """The points of one search, by id: its peers with a finite cost (:meth:`LiveSearch.peers`) and the searched
    instance, when one meets the constraint."""
    points: dict[PointId, PlotPoint] = {}
    for name, peer in found.peers().items():
        if np.isfinite(peer.cost):
            key = PointId(PointKind.PEER, name=name)
            points[key] = PlotPoint(key, name, peer.instance, peer.miou, peer.cost)
    if found.chosen.instance is not None:
        points[SEARCHED] = PlotPoint(SEARCHED, "searched", found.chosen.instance, found.chosen.miou, found.chosen.cost)
    return points


def plot_points(cloud: pd.DataFrame, fronts: pd.DataFrame, found: LiveSearch) -> dict[PointId, PlotPoint]:
    """Every point of the Pareto plot by id: :func:`study_points` and :func:`search_points`."""
    return study_points(cloud, fronts) | search_points(found)


@dataclass(frozen=True)
class ConstraintLine:
    """Where an objective's constraint lies on the accuracy-cost plane."""

    axis: str  # "miou": a horizontal line at ``at`` mIoU (%); "cost": a vertical line at ``at`` GFLOPs
    at: float


def constraint_line(objective: Objective, backbone: SearchPoint) -> ConstraintLine:
    """The least mIoU (%) a min-cost objective allows (the backbone's minus the allowed drop), or the most cost a
    max-accuracy objective allows (its budget x the backbone's cost)."""
    if objective.kind == "min-cost":
        return ConstraintLine("miou", 100 * backbone.miou - objective.max_drop)
    return ConstraintLine("cost", objective.budget * backbone.cost)


def instance_document(
    cache: EvaluationCache, study_name: str, instance: Instance, figures: ThresholdFigures
) -> dict[str, Any]:
    """The JSON document of a downloaded instance: the instance, where it comes from (model, dataset, split, input
    size, classes, exits, study) and its single-number figures on the cache's split."""
    meta = cache.meta
    return instance.to_dict(
        source={k: meta.get(k) for k in ("model", "dataset", "split", "input_size")}
        | {"num_classes": cache.num_classes, "num_exits": cache.num_exits, "study": study_name},
        figures=figures.scalars(),
    )


def onnx_zip(net: MultiExitNet, instance: Instance, size: Sequence[int]) -> bytes:
    """The instance exported to ONNX (:func:`mess_core.deploy.export.export_onnx`: per-stage and per-head files with a
    manifest) at input ``size``, zipped under ``mess_onnx/``."""
    import tempfile
    import zipfile

    from mess_core.deploy.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = export_onnx(net, instance, Path(tmp) / "onnx", input_size=tuple(size))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(out.iterdir()):
                zf.write(f, f"mess_onnx/{f.name}")
    return buffer.getvalue()
