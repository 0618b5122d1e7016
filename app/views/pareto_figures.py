"""The Pareto page's two plots, built without Streamlit from its points (:func:`app.views.pareto.plot_points`): the
study's figure (every evaluated instance and the fronts, nothing that a constraint changes) and the search's figure
(the searched instance, its peers and the constraint line, on the same axes). BENCHMARKS.md ("The Pareto page's
redraw on a slider move") measures why they are split so and built the way they are."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from mess_core.search.problem import Objective

from .pareto import ConstraintLine, LiveSearch, PlotPoint, PointId, PointKind, constraint_line

__all__ = ["SERIES_STYLE", "PEER_STYLE", "STUDY_KINDS", "axes_ranges", "study_figure", "search_figure"]

Points = Mapping[PointId, PlotPoint]
Axes = tuple[list[float], list[float]]

# a front's colour and plotly mode, by series; a peer's colour and marker symbol, by name
SERIES_STYLE = {
    "budgeted": ("#ff7f0e", "lines+markers"),
    "anytime (first output)": ("#2ca02c", "lines+markers"),
    "MESS input-dependent": ("#1f77b4", "lines+markers"),
    "no edge masking": ("#9467bd", "lines"),
    "naive policy": ("#8c564b", "lines"),
}
PEER_STYLE = {
    "backbone": ("black", "square"),
    "uniform-exit MESS": ("#17becf", "diamond"),
    "naive policy": ("#8c564b", "triangle-up"),
    "oracle": ("#e377c2", "cross"),
}
HOVER = "%{customdata[1]}<br>%{x:.3f} GFLOPs, %{y:.2f}%<extra></extra>"
STUDY_KINDS = (PointKind.CLOUD, PointKind.FRONT)  # the points of the study's figure
HEIGHT = 560


def _of_kind(points: Points, kind: PointKind) -> list[PlotPoint]:
    return [p for p in points.values() if p.kind is kind]


def axes_ranges(points: Points) -> Axes:
    """Both plots' axes: the evaluated instances' and fronts' extent (GFLOPs, mIoU %), padded."""
    static = [p for p in points.values() if p.kind in STUDY_KINDS and np.isfinite(p.cost)]
    cost, miou = [p.cost for p in static], [100 * p.miou for p in static]
    pad_x, pad_y = 0.04 * (max(cost) - min(cost) or 1), 0.06 * (max(miou) - min(miou) or 1)
    return [min(cost) - pad_x, max(cost) + pad_x], [min(miou) - pad_y, max(miou) + pad_y]


def _ring(point: PlotPoint) -> dict[str, Any]:
    """A red ring around the selected point (it takes no clicks: the point under it does)."""
    return {
        "type": "scatter",
        "x": [point.cost],
        "y": [100 * point.miou],
        "mode": "markers",
        "name": "selected",
        "hoverinfo": "skip",
        "marker": {"color": "rgba(0,0,0,0)", "size": 22, "line": {"color": "#d62728", "width": 3}},
    }


def _layout(axes: Axes, title: str) -> dict[str, Any]:
    return {
        "title": {"text": title},
        "height": HEIGHT,
        "xaxis": {"title": {"text": "average GFLOPs per image"}, "range": axes[0]},
        "yaxis": {"title": {"text": "mIoU (%)"}, "range": axes[1]},
        "legend": {"orientation": "h", "y": -0.18},
        "margin": {"t": 30},
        "clickmode": "event+select",
        "dragmode": "pan",
    }


def _frame(points: list[PlotPoint]) -> pd.DataFrame:
    rows = [(p.id.text, p.series, p.miou, p.cost, p.label) for p in points]
    return pd.DataFrame(rows, columns=["id", "series", "miou", "cost", "text"])


def study_figure(points: Points, selected: PointId | None) -> go.Figure:
    """Every evaluated instance and the study's fronts, ringing ``selected`` when it is one of them: nothing here
    depends on the constraint, so a slider move sends the same figure and the browser keeps it as drawn."""
    fig = go.Figure()
    cloud = _frame(_of_kind(points, PointKind.CLOUD))
    fig.add_trace(
        go.Scatter(
            x=cloud["cost"],
            y=100 * cloud["miou"],
            mode="markers",
            name="evaluated instances",
            marker={"color": "#c7c7c7", "size": 5},
            customdata=cloud[["id", "text"]],
            hovertemplate=HOVER,
        )
    )
    for series, rows in _frame(_of_kind(points, PointKind.FRONT)).groupby("series", sort=False):
        colour, mode = SERIES_STYLE.get(series, ("#7f7f7f", "lines"))
        rows = rows.sort_values("cost")
        fig.add_trace(
            go.Scatter(
                x=rows["cost"],
                y=100 * rows["miou"],
                mode=mode,
                name=f"front: {series}",
                line={"color": colour, "shape": "hv"},
                marker={"size": 6},
                customdata=rows[["id", "text"]],
                hovertemplate=HOVER,
            )
        )
    if selected in points and selected.kind in STUDY_KINDS:
        fig.add_trace(_ring(points[selected]))
    fig.update_layout(_layout(axes_ranges(points), "every evaluated instance and the fronts (click to select)"))
    return fig


def _front_lines(points: Points) -> list[dict[str, Any]]:
    """The fronts as thin lines without hover, one trace per series, sorted by cost."""
    lines: dict[str, list[PlotPoint]] = {}
    for p in _of_kind(points, PointKind.FRONT):
        lines.setdefault(p.series, []).append(p)
    traces = []
    for series, pts in lines.items():
        pts = sorted(pts, key=lambda p: p.cost)
        traces.append(
            {
                "type": "scatter",
                "x": [p.cost for p in pts],
                "y": [100 * p.miou for p in pts],
                "mode": "lines",
                "showlegend": False,
                "hoverinfo": "skip",
                "line": {"color": SERIES_STYLE.get(series, ("#7f7f7f",))[0], "shape": "hv", "width": 1},
            }
        )
    return traces


def _markers(shown: list[PlotPoint], name: str, marker: dict[str, Any], hover_name: str) -> list[dict[str, Any]]:
    """One trace of clickable markers (none when ``shown`` is empty): plain lists, which keep plotly's checks short."""
    if not shown:
        return []
    return [
        {
            "type": "scatter",
            "x": [p.cost for p in shown],
            "y": [100 * p.miou for p in shown],
            "mode": "markers",
            "name": name,
            "marker": marker,
            "customdata": [[p.id.text, p.label] for p in shown],
            "hovertemplate": f"{hover_name}: " + HOVER,
        }
    ]


def _search_markers(points: Points) -> list[dict[str, Any]]:
    """The peers, one trace each in :data:`PEER_STYLE` order, then the searched instance as a star."""
    peers = _of_kind(points, PointKind.PEER)
    traces = []
    for name, (colour, symbol) in PEER_STYLE.items():
        marker = {"color": colour, "symbol": symbol, "size": 12}
        traces += _markers([p for p in peers if p.id.name == name], name, marker, name)
    star = {"color": "#d62728", "symbol": "star", "size": 18, "line": {"color": "white", "width": 1}}
    return traces + _markers(_of_kind(points, PointKind.CHOSEN), "searched", star, "searched")


def _constraint_marks(objective: Objective, line: ConstraintLine) -> tuple[dict[str, Any], dict[str, Any]]:
    """The constraint as a dashed layout shape and its note (a shape, not ``add_hline``: cheaper to build)."""
    dash = {"type": "line", "line": {"dash": "dash", "color": "#d62728"}}
    note = {"showarrow": False}
    if line.axis == "miou":
        shape = dash | {"xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": line.at, "y1": line.at}
        note |= {"text": f"{objective.max_drop:g} pp below the backbone", "xref": "x domain", "x": 1, "yref": "y"}
        return shape, note | {"y": line.at, "xanchor": "right", "yanchor": "bottom"}
    shape = dash | {"yref": "y domain", "y0": 0, "y1": 1, "xref": "x", "x0": line.at, "x1": line.at}
    note |= {"text": f"budget {objective.budget:.2f}x", "yref": "y domain", "y": 1, "xref": "x", "x": line.at}
    return shape, note | {"xanchor": "left", "yanchor": "top"}


def search_figure(points: Points, objective: Objective, found: LiveSearch, selected: PointId | None) -> go.Figure:
    """The search under the constraint: the searched instance, its peers and the constraint line over the fronts
    (as lines), ringing ``selected`` when it is a peer: the few points a slider move redraws. Built from plain lists
    and dicts in one ``go.Figure`` call, since every slider move builds it."""
    traces = _front_lines(points) + _search_markers(points)
    if selected in points and selected.kind is PointKind.PEER:
        traces.append(_ring(points[selected]))
    shape, note = _constraint_marks(objective, constraint_line(objective, found.backbone))
    layout = _layout(axes_ranges(points), "this search: the searched instance and its peers")
    return go.Figure(data=traces, layout=layout | {"shapes": [shape], "annotations": [note]})
