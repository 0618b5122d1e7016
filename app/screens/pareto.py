"""Pareto and search: the search re-run under an accuracy-drop or cost-budget constraint on every change, drawn over
every evaluated instance, the front of each mode and the peers; clicking a point selects that instance, which can
be downloaded as JSON or exported to ONNX."""

from __future__ import annotations

import json
from typing import Any

import cv2
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import state
from app.common import REPO, cloud, code_allowed, fronts, guarded, guarded_fragment, load_network, pct, report_set
from app.screens.explorer import dataset_of
from app.views.image_table import LinkedView, compare_figures, linked_view
from app.views.pareto import (
    LiveSearch,
    PlotPoint,
    constraint_line,
    gflops_budget,
    instance_document,
    live_search,
    onnx_zip,
    plot_points,
)
from app.views.thresholds import threshold_summary
from app.views.upload import dataset_sample, dataset_source
from mess_core.errors import MessError
from mess_core.evaluate.instance import MODES, Instance
from mess_core.search.constrained import Objective
from mess_core.search.heldout import mix_text, score_instance
from mess_core.study import Study

SERIES_STYLE = {
    "budgeted": ("#ff7f0e", "lines+markers"),
    "anytime (first output)": ("#2ca02c", "lines+markers"),
    "MESS input-dependent": ("#1f77b4", "lines+markers"),
    "no edge masking": ("#9467bd", "lines"),
    "naive policy": ("#8c564b", "lines"),
}
SELECTED = "selected on the Pareto page"
PEER_STYLE = {
    "backbone": ("black", "square"),
    "uniform-exit MESS": ("#17becf", "diamond"),
    "naive policy": ("#8c564b", "triangle-up"),
    "oracle": ("#e377c2", "cross"),
}


def constraint(cache: Any) -> tuple[Objective, str]:
    cols = st.columns([1.2, 1.3, 2])
    mode = cols[0].radio("mode", MODES, index=2, key="par_mode")
    kind = cols[1].radio("objective", ["min cost, mIoU drop at most", "max mIoU, cost at most"], key="par_objective")
    if kind.startswith("min cost"):
        drop = cols[2].slider("allowed mIoU drop (pp)", 0.0, 10.0, 1.0, 0.1, key="par_drop")
        sure = cols[2].toggle(
            "keep it on new images, at a confidence",
            key="par_sure",
            help="choose the cheapest instance of the Pareto front whose drop on a fresh set of as "
            "many images as this split stays within the bound at this confidence (a predictive "
            "bootstrap bound), not only on these images; BENCHMARKS.md measures how often it holds",
        )
        confidence = cols[2].select_slider(
            "confidence",
            [0.8, 0.9, 0.95],
            value=0.9,
            key="par_confidence",
            disabled=not sure,
            format_func=lambda c: f"{100 * c:g}%",
        )
        if not sure:
            return Objective("min-cost", max_drop=drop), mode
        return Objective("min-cost", max_drop=drop, confidence=confidence, fresh_images=cache.num_images), mode
    unit = cols[2].radio("budget in", ["x backbone", "GFLOPs"], horizontal=True, key="par_budget_unit")
    if unit == "x backbone":
        budget = cols[2].slider("cost budget (x backbone)", 0.05, 1.5, 1.0, 0.01, key="par_budget_x")
    else:
        slider = gflops_budget(cache.stage_gflops.sum())
        gflops = cols[2].slider(
            "cost budget (GFLOPs)", slider.low, slider.high, slider.value, slider.step, key="par_budget_g"
        )
        budget = slider.fraction(gflops)
    return Objective("max-acc", budget=budget), mode


HOVER = "%{customdata[1]}<br>%{x:.3f} GFLOPs, %{y:.2f}%<extra></extra>"


def frame_of(points: dict[str, PlotPoint], prefix: str) -> pd.DataFrame:
    rows = [
        (k, p.series, p.miou, p.cost, p.instance.describe() if p.instance is not None else "oracle bound")
        for k, p in points.items()
        if k.startswith(prefix)
    ]
    return pd.DataFrame(rows, columns=["id", "series", "miou", "cost", "text"])


def ranges(points: dict[str, PlotPoint]) -> tuple[list[float], list[float]]:
    """Both plots' axes: the evaluated instances' and fronts' extent (GFLOPs, mIoU %), padded."""
    static = [p for k, p in points.items() if k.startswith(("cloud:", "front:")) and np.isfinite(p.cost)]
    cost, miou = [p.cost for p in static], [100 * p.miou for p in static]
    pad_x, pad_y = 0.04 * (max(cost) - min(cost) or 1), 0.06 * (max(miou) - min(miou) or 1)
    return [min(cost) - pad_x, max(cost) + pad_x], [min(miou) - pad_y, max(miou) + pad_y]


def ring(fig: go.Figure, point: PlotPoint) -> None:
    fig.add_trace(
        go.Scatter(
            x=[point.cost],
            y=[100 * point.miou],
            mode="markers",
            name="selected",
            hoverinfo="skip",
            marker={"color": "rgba(0,0,0,0)", "size": 22, "line": {"color": "#d62728", "width": 3}},
        )
    )


def layout(fig: go.Figure, axes: tuple[list[float], list[float]], height: int) -> go.Figure:
    fig.update_layout(
        height=height,
        xaxis_title="average GFLOPs per image",
        yaxis_title="mIoU (%)",
        legend={"orientation": "h", "y": -0.18},
        margin={"t": 30},
        clickmode="event+select",
        dragmode="pan",
        xaxis_range=axes[0],
        yaxis_range=axes[1],
    )
    return fig


@st.cache_resource(show_spinner=False, max_entries=64)
def static_chart(study_path: str, ring_on: str | None, _points: dict[str, PlotPoint]) -> go.Figure:
    """:func:`static_figure`, once per study and ringed point (a slider move changes neither): plotly_chart only
    copies it (~20 ms of building saved on every move)."""
    return static_figure(_points, ring_on)


def static_figure(points: dict[str, PlotPoint], selected: str | None) -> go.Figure:
    """Every evaluated instance and the study's fronts: nothing here depends on the constraint, so a slider move
    sends the same figure and the browser keeps it as drawn (a changed figure is drawn anew, point by point)."""
    fig = go.Figure()
    cloud_rows = frame_of(points, "cloud:")
    fig.add_trace(
        go.Scatter(
            x=cloud_rows["cost"],
            y=100 * cloud_rows["miou"],
            mode="markers",
            name="evaluated instances",
            marker={"color": "#c7c7c7", "size": 5},
            customdata=cloud_rows[["id", "text"]],
            hovertemplate=HOVER,
        )
    )
    for series, rows in frame_of(points, "front:").groupby("series", sort=False):
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
    if selected in points and selected.startswith(("cloud:", "front:")):
        ring(fig, points[selected])
    fig.update_layout(title="every evaluated instance and the fronts (click to select)")
    return layout(fig, ranges(points), 560)


def rows_of(points: dict[str, PlotPoint], prefix: str) -> dict[str, list[Any]]:
    """The points whose id starts with ``prefix`` as plain columns (the small figure is rebuilt on every slider move:
    lists, not a data frame, keep plotly's checks short)."""
    ids = [k for k in points if k.startswith(prefix)]
    return {
        "id": ids,
        "x": [points[k].cost for k in ids],
        "y": [100 * points[k].miou for k in ids],
        "customdata": [
            [k, points[k].instance.describe() if points[k].instance is not None else "oracle bound"] for k in ids
        ],
    }


def front_lines(points: dict[str, PlotPoint]) -> list[dict[str, Any]]:
    """The fronts as thin lines without hover, one trace per series, sorted by cost."""
    lines: dict[str, list[PlotPoint]] = {}
    for key, p in points.items():
        if key.startswith("front:"):
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


def search_figure(
    points: dict[str, PlotPoint], objective: Objective, found: LiveSearch, selected: str | None
) -> go.Figure:
    """The search under the constraint: the searched instance, its peers and the constraint line over the fronts
    (as lines): the few points a slider move redraws. Built from plain lists and dicts in one go (every slider move
    builds it: a figure put together trace by trace with add_trace and add_hline took ~25 ms on 2 cores)."""
    traces = front_lines(points)
    for name, (colour, symbol) in PEER_STYLE.items():
        row = rows_of(points, f"peer:{name}")
        if row["id"]:
            traces.append(
                {
                    "type": "scatter",
                    "x": row["x"],
                    "y": row["y"],
                    "mode": "markers",
                    "name": name,
                    "marker": {"color": colour, "symbol": symbol, "size": 12},
                    "customdata": row["customdata"],
                    "hovertemplate": f"{name}: " + HOVER,
                }
            )
    chosen = rows_of(points, "chosen")
    if chosen["id"]:
        traces.append(
            {
                "type": "scatter",
                "x": chosen["x"],
                "y": chosen["y"],
                "mode": "markers",
                "name": "searched",
                "marker": {"color": "#d62728", "symbol": "star", "size": 18, "line": {"color": "white", "width": 1}},
                "customdata": chosen["customdata"],
                "hovertemplate": "searched: " + HOVER,
            }
        )
    if selected in points and selected.startswith("peer:"):
        point = points[selected]
        traces.append(
            {
                "type": "scatter",
                "x": [point.cost],
                "y": [100 * point.miou],
                "mode": "markers",
                "name": "selected",
                "hoverinfo": "skip",
                "marker": {"color": "rgba(0,0,0,0)", "size": 22, "line": {"color": "#d62728", "width": 3}},
            }
        )
    line = constraint_line(objective, found.backbone)
    dash = {"type": "line", "line": {"dash": "dash", "color": "#d62728"}}
    if line.axis == "miou":
        shape = dash | {"xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": line.at, "y1": line.at}
        note = {
            "text": f"{objective.max_drop:g} pp below the backbone",
            "xref": "x domain",
            "x": 1,
            "yref": "y",
            "y": line.at,
            "xanchor": "right",
            "yanchor": "bottom",
            "showarrow": False,
        }
    else:
        shape = dash | {"yref": "y domain", "y0": 0, "y1": 1, "xref": "x", "x0": line.at, "x1": line.at}
        note = {
            "text": f"budget {objective.budget:.2f}x",
            "yref": "y domain",
            "y": 1,
            "xref": "x",
            "x": line.at,
            "xanchor": "left",
            "yanchor": "top",
            "showarrow": False,
        }
    axes = ranges(points)
    return go.Figure(
        data=traces,
        layout={
            "title": {"text": "this search: the searched instance and its peers"},
            "height": 560,
            "xaxis": {"title": {"text": "average GFLOPs per image"}, "range": axes[0]},
            "yaxis": {"title": {"text": "mIoU (%)"}, "range": axes[1]},
            "legend": {"orientation": "h", "y": -0.18},
            "margin": {"t": 30},
            "clickmode": "event+select",
            "dragmode": "pan",
            "shapes": [shape],
            "annotations": [note],
        },
    )


def clicked(event: Any, key: str) -> str | None:
    """The point id a chart's selection names when it changed since the last run (a chart keeps its selection)."""
    ids = [p.get("customdata") for p in (event.selection.points if event else [])]
    ids = [c[0] if isinstance(c, (list, tuple)) else c for c in ids if c]
    seen_key = f"{key}_seen"
    new = ids[0] if ids and ids[0] != st.session_state.get(seen_key) else None
    st.session_state[seen_key] = ids[0] if ids else None
    return new


def details(study: Study, point: PlotPoint) -> None:
    instance, series = point.instance, point.series
    if instance is None:
        st.info(
            f"The oracle ({pct(point.miou)}, {point.cost:.3f} GFLOPs) is a bound: it knows each image's labels, "
            "so it cannot be deployed. Pick another point."
        )
        return
    cache = study.cache
    figures = threshold_summary(cache, instance)
    st.markdown(f"**{series}**: `{instance.describe()}` ({instance.mode})")
    m = st.columns(4)
    interval = figures.drop_interval
    m[0].metric(
        "mIoU",
        pct(figures.miou),
        f"{-figures.drop_pp:+.2f} pp",
        help=f"mIoU {interval.describe()}" if interval is not None else None,
    )
    m[1].metric("average GFLOPs", f"{figures.gflops:.3f}")
    m[2].metric("speedup (GFLOPs)", f"{figures.speedup:.2f}x")
    if figures.measured:
        m[3].metric(
            "CPU latency (cache)", f"{figures.latency_ms:.2f} ms", f"{figures.latency_speedup:.2f}x", delta_color="off"
        )
    if interval is not None:
        st.caption(f"mIoU {interval.describe()}")
    if (chosen := report_set(study)) is not None:
        _, other = chosen
        there = score_instance(other, instance)
        st.caption(
            f"On the report set ({other.meta.get('dataset')} {other.meta.get('split')}, {other.num_images} "
            f"images, chosen on the Study page): mIoU {pct(there['miou'])}, drop {there['drop_pp']:.2f} pp "
            f"[{there['drop_low']:.2f}, {there['drop_high']:.2f}], {there['speedup']:.2f}x fewer GFLOPs; "
            f"images leave {mix_text(there['exit_mix'])}"
        )
    if instance.exits:  # a line, not a data grid: this part is redrawn on every slider move
        st.markdown(
            "kept exits: "
            + "; ".join(
                f"**exit {e.exit}** `{e.config}`" + (f" th_img {e.th_img:.2f}" if e.th_img is not None else "")
                for e in instance.exits
            )
        )
    pin_button(study, instance)
    left, right = st.columns(2)
    # the document is written when the button is pressed, not on every slider move
    left.download_button(
        "download instance (JSON)",
        lambda: json.dumps(instance_document(cache, study.name, instance, figures), indent=2),
        file_name="instance.json",
        mime="application/json",
        key="par_json",
    )
    if not code_allowed(study, where="pareto"):  # the export builds the network
        return
    export_key = f"onnx::{study.path}::{json.dumps(instance.to_dict(), sort_keys=True)}"
    if right.button(
        "export to ONNX", key="par_onnx", help="per-stage and per-head ONNX files with a manifest, for onnxruntime"
    ):
        with st.spinner("Exporting with torch.onnx (dynamo)..."):
            try:
                st.session_state[export_key] = export_zip(
                    str(study.path), instance, tuple(cache.meta.get("input_size", (120, 160)))
                )
            except MessError as exc:
                st.error(f"ONNX export is not possible for this instance: {exc}")
    if export_key in st.session_state:
        right.download_button(
            "download ONNX (zip)",
            st.session_state[export_key],
            file_name="mess_onnx.zip",
            mime="application/zip",
            key="par_onnx_zip",
        )


def export_zip(study_path: str, instance: Instance, size: tuple[int, int]) -> bytes:
    net, _ = load_network(study_path)
    return onnx_zip(net, instance, size)


@st.cache_resource(show_spinner=False, max_entries=512)
def live_result(study_path: str, objective: Objective, mode: str, _cache: Any) -> LiveSearch:
    """The search and its peers for one constraint, once per study: a slider back at a value it had is answered at
    once (a search is 20-200 ms on a 2-core machine; the answer never changes for a given cache)."""
    return live_search(_cache, objective, mode=mode)


@guarded_fragment
def search_area(study: Study) -> None:
    cache = study.cache
    objective, mode = constraint(cache)
    found = live_result(str(study.path), objective, mode, cache)
    points = plot_points(cloud(str(study.path)), fronts(str(study.path)), found)
    chosen = found.chosen.instance
    if chosen is None:
        st.warning(f"No {mode} instance meets '{objective.describe()}'. Loosen the constraint.")
    else:
        interval = found.chosen.interval
        st.success(
            f"searched {found.space_size:,} instances in {1e3 * found.seconds:.0f} ms: "
            f"{chosen.describe()}: mIoU {pct(found.chosen.miou)}, {found.chosen.cost:.3f} GFLOPs "
            f"({found.speedup:.2f}x)" + (f"; {interval.describe()}" if interval is not None else "")
        )
    selected = st.session_state.get("par_selected")
    ring_on = selected if str(selected).startswith(("cloud:", "front:")) else None
    left, right = st.columns([3, 2])
    events = {
        key: col.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points", width="stretch")
        for col, key, fig in [
            (left, "par_plot", static_chart(str(study.path), ring_on, points)),
            (right, "par_search_plot", search_figure(points, objective, found, selected)),
        ]
    }
    picked = [p for p in (clicked(event, key) for key, event in events.items()) if p in points]
    if picked and picked[0] != selected:
        st.session_state["par_selected"] = picked[0]
        st.rerun()  # the whole page: the linked views below the fragment follow the selection
    if selected not in points:
        selected = "chosen" if "chosen" in points else None
    if selected is None:
        return
    if selected != "chosen" and points[selected].instance is not None:  # the oracle is a bound, not an instance
        state.remember(study, points[selected].instance, SELECTED)
    st.subheader("selected instance" if selected != "chosen" else "searched instance")
    if selected != "chosen" and st.button("back to the searched instance", key="par_reset"):
        st.session_state.pop("par_selected", None)
        st.rerun()
    details(study, points[selected])


@guarded
def page(study: Study) -> None:
    st.title("Pareto and search")
    st.caption(
        "The exhaustive search re-runs on every change. Left: a sample of evaluated instances in grey (every "
        "budgeted one, 600 random input-dependent ones, those drawn on top of another left out) and the Pareto "
        "front of each mode and policy; right, on the same axes: the searched instance and its peers under the "
        "constraint. Click any point to select it."
    )
    search_area(study)
    linked_views(study)


# ------------------------------------------------------------------------------------------ linked views
def pin_button(study: Study, instance: Instance) -> None:
    pinned = state.pinned(study)
    if pinned == instance:
        if st.button("unpin", key="par_unpin", help="stop comparing with this instance"):
            state.pin(study, None)
            st.rerun()
    elif st.button(
        "pin for comparison",
        key="par_pin",
        help="keep this instance beside the next one you select, in the views below the plot",
    ):
        state.pin(study, instance)
        st.rerun()


def selected_instance(study: Study) -> Instance | None:
    """The instance clicked on the plot (None: nothing clicked, the oracle, or another study's)."""
    instance, source = state.current(study)
    return instance if source == SELECTED and "par_selected" in st.session_state else None


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(study_path: str, index: int, _study: Study):
    origin = dataset_source(_study.manifest.get("config") or {}, _study.cache.meta, REPO)
    if not origin.on_disk:
        return None
    rgb, _ = dataset_sample(dataset_of(origin.name, origin.root, origin.options, origin.split, origin.groups), index)
    return cv2.resize(rgb, (160, round(160 * rgb.shape[0] / rgb.shape[1])), interpolation=cv2.INTER_AREA)


def bars(view: LinkedView, key: str) -> None:
    hist, per_class = view.figures.histogram, view.figures.per_class
    labels = [f"exit {e}" for e in hist["exit"]]
    fig = go.Figure(go.Bar(x=labels, y=hist["images"], text=[f"{100 * f:.0f}%" for f in hist["fraction"]]))
    fig.update_layout(title="where images leave", height=260, margin={"t": 40, "b": 10}, yaxis_title="images")
    st.plotly_chart(fig, key=f"{key}_hist", width="stretch")
    fig = go.Figure(
        [
            go.Bar(x=per_class["class"], y=100 * per_class["IoU"], name="this instance"),
            go.Bar(x=per_class["class"], y=100 * per_class["backbone IoU"], name="backbone"),
        ]
    )
    fig.update_layout(
        title="IoU per class (%)",
        height=300,
        margin={"t": 40, "b": 10},
        barmode="group",
        legend={"orientation": "h", "y": -0.35},
    )
    st.plotly_chart(fig, key=f"{key}_classes", width="stretch")


def examples(study: Study, view: LinkedView) -> None:
    for exit_, rows in view.examples.groupby("exit", sort=True):
        captions = [f"{r.name} · IoU {100 * r.IoU:.0f}%" for r in rows.itertuples()]
        thumbs = [thumbnail(str(study.path), int(i), study) for i in rows["image"]]
        st.markdown(f"images leaving at exit {exit_}" + (" (final)" if exit_ == study.cache.num_exits else ""))
        if all(t is not None for t in thumbs):
            st.image(thumbs, caption=captions, width=150)
        else:
            st.caption(", ".join(f"#{i} {c}" for i, c in zip(rows["image"], captions)))


def linked_column(study: Study, instance: Instance, title: str, key: str) -> LinkedView:
    view = linked_view(study.cache, instance)
    st.markdown(f"**{title}**: `{instance.describe()}` ({instance.mode})")
    bars(view, key)
    examples(study, view)
    return view


def linked_views(study: Study) -> None:
    """Below the plot: the clicked instance's exit histogram, per-class IoU against the backbone and a few images
    leaving at each exit, beside the pinned instance when there is one. Outside the search fragment: a slider move
    leaves them alone, a click redraws them."""
    chosen, pinned = selected_instance(study), state.pinned(study)
    if chosen is None and pinned is None:
        st.info(
            "Click a point of the plot to see where its images leave, its IoU per class against the backbone "
            "and images leaving at each exit; pin one to compare it with another."
        )
        return
    st.subheader("linked views" if pinned is None else "pinned (A) and selected (B), side by side")
    shown = [(pinned, "A: pinned", "par_a")] if pinned is not None else []
    shown += [(chosen, "B: selected" if pinned is not None else "selected", "par_b")] if chosen is not None else []
    cols = st.columns(len(shown))
    views = []
    for col, (instance, title, key) in zip(cols, shown):
        with col:
            views.append(linked_column(study, instance, title, key))
    if len(views) == 2:
        st.dataframe(
            compare_figures(views[0].figures, views[1].figures).style.format(
                {"A": "{:.2f}", "B": "{:.2f}", "B - A": "{:+.2f}"}
            ),
            hide_index=True,
            key="par_compare",
        )
