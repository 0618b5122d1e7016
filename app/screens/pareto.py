"""Pareto and search: the search re-run under an accuracy-drop or cost-budget constraint on every change, drawn over
every evaluated instance, the front of each mode and the peers; clicking a point selects that instance, which can
be downloaded as JSON or exported to ONNX."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app.common import cloud, fronts, guarded, guarded_fragment, load_network, pct
from mess_core.errors import MessError
from mess_core.explore import (LiveSearch, PlotPoint, constraint_line, gflops_budget, instance_document,
                               live_search, onnx_zip, plot_points, threshold_summary)
from mess_core.instance import MODES, Instance
from mess_core.search import Objective
from mess_core.study import Study

SERIES_STYLE = {
    "budgeted": ("#ff7f0e", "lines+markers"),
    "anytime (first output)": ("#2ca02c", "lines+markers"),
    "MESS input-dependent": ("#1f77b4", "lines+markers"),
    "no edge masking": ("#9467bd", "lines"),
    "naive policy": ("#8c564b", "lines"),
}
PEER_STYLE = {"backbone": ("black", "square"), "uniform-exit MESS": ("#17becf", "diamond"),
              "naive policy": ("#8c564b", "triangle-up"), "oracle": ("#e377c2", "cross")}


def constraint(cache: Any) -> tuple[Objective, str]:
    cols = st.columns([1.2, 1.3, 2])
    mode = cols[0].radio("mode", MODES, index=2, key="par_mode")
    kind = cols[1].radio("objective", ["min cost, mIoU drop at most", "max mIoU, cost at most"], key="par_objective")
    if kind.startswith("min cost"):
        drop = cols[2].slider("allowed mIoU drop (pp)", 0.0, 10.0, 1.0, 0.1, key="par_drop")
        return Objective("min-cost", max_drop=drop), mode
    unit = cols[2].radio("budget in", ["x backbone", "GFLOPs"], horizontal=True, key="par_budget_unit")
    if unit == "x backbone":
        budget = cols[2].slider("cost budget (x backbone)", 0.05, 1.5, 1.0, 0.01, key="par_budget_x")
    else:
        slider = gflops_budget(cache.stage_gflops.sum())
        gflops = cols[2].slider("cost budget (GFLOPs)", slider.low, slider.high, slider.value, slider.step,
                                key="par_budget_g")
        budget = slider.fraction(gflops)
    return Objective("max-acc", budget=budget), mode


def figure(points: dict[str, PlotPoint], objective: Objective, found: LiveSearch, selected: str | None) -> go.Figure:
    fig = go.Figure()
    frame = pd.DataFrame([(k, p.series, p.instance, p.miou, p.cost) for k, p in points.items()],
                         columns=["id", "series", "instance", "miou", "cost"])
    frame["text"] = [i.describe() if i is not None else "oracle bound" for i in frame["instance"]]
    cloud_rows = frame[frame["id"].str.startswith("cloud:")]
    fig.add_trace(go.Scatter(x=cloud_rows["cost"], y=100 * cloud_rows["miou"], mode="markers", name="evaluated instances",
                             marker={"color": "#c7c7c7", "size": 5}, customdata=cloud_rows[["id", "text"]],
                             hovertemplate="%{customdata[1]}<br>%{x:.3f} GFLOPs, %{y:.2f}%<extra></extra>"))
    front_rows = frame[frame["id"].str.startswith("front:")]
    for series, rows in front_rows.groupby("series", sort=False):
        colour, mode = SERIES_STYLE.get(series, ("#7f7f7f", "lines"))
        rows = rows.sort_values("cost")
        fig.add_trace(go.Scatter(x=rows["cost"], y=100 * rows["miou"], mode=mode, name=f"front: {series}",
                                 line={"color": colour, "shape": "hv"}, marker={"size": 6},
                                 customdata=rows[["id", "text"]],
                                 hovertemplate="%{customdata[1]}<br>%{x:.3f} GFLOPs, %{y:.2f}%<extra></extra>"))
    for name, (colour, symbol) in PEER_STYLE.items():
        row = frame[frame["id"] == f"peer:{name}"]
        if len(row):
            fig.add_trace(go.Scatter(x=row["cost"], y=100 * row["miou"], mode="markers", name=name,
                                     marker={"color": colour, "symbol": symbol, "size": 12},
                                     customdata=row[["id", "text"]],
                                     hovertemplate=f"{name}: " + "%{customdata[1]}<br>%{x:.3f} GFLOPs, %{y:.2f}%<extra></extra>"))
    chosen = frame[frame["id"] == "chosen"]
    if len(chosen):
        fig.add_trace(go.Scatter(x=chosen["cost"], y=100 * chosen["miou"], mode="markers", name="searched",
                                 marker={"color": "#d62728", "symbol": "star", "size": 18,
                                         "line": {"color": "white", "width": 1}},
                                 customdata=chosen[["id", "text"]],
                                 hovertemplate="searched: %{customdata[1]}<br>%{x:.3f} GFLOPs, %{y:.2f}%<extra></extra>"))
    if selected in points and selected != "chosen":
        point = points[selected]
        fig.add_trace(go.Scatter(x=[point.cost], y=[100 * point.miou], mode="markers", name="selected", hoverinfo="skip",
                                 marker={"color": "rgba(0,0,0,0)", "size": 22, "line": {"color": "#d62728", "width": 3}}))
    line = constraint_line(objective, found.backbone)
    if line.axis == "miou":
        fig.add_hline(y=line.at, line_dash="dash", line_color="#d62728",
                      annotation_text=f"{objective.max_drop:g} pp below the backbone")
    else:
        fig.add_vline(x=line.at, line_dash="dash", line_color="#d62728",
                      annotation_text=f"budget {objective.budget:.2f}x")
    fig.update_layout(height=560, xaxis_title="average GFLOPs per image", yaxis_title="mIoU (%)",
                      legend={"orientation": "h", "y": -0.15}, margin={"t": 20}, clickmode="event+select",
                      dragmode="pan")
    return fig


def details(study: Study, point: PlotPoint) -> None:
    instance, series = point.instance, point.series
    if instance is None:
        st.info(f"The oracle ({pct(point.miou)}, {point.cost:.3f} GFLOPs) is a bound: it knows each image's labels, "
                "so it cannot be deployed. Pick another point.")
        return
    cache = study.cache
    figures = threshold_summary(cache, instance)
    st.markdown(f"**{series}**: `{instance.describe()}` ({instance.mode})")
    m = st.columns(4)
    m[0].metric("mIoU", pct(figures.miou), f"{-figures.drop_pp:+.2f} pp")
    m[1].metric("average GFLOPs", f"{figures.gflops:.3f}")
    m[2].metric("speedup (GFLOPs)", f"{figures.speedup:.2f}x")
    if figures.measured:
        m[3].metric("CPU latency (cache)", f"{figures.latency_ms:.2f} ms", f"{figures.latency_speedup:.2f}x",
                    delta_color="off")
    if instance.exits:
        st.dataframe(pd.DataFrame([{"exit": e.exit, "configuration": e.config, "th_img": e.th_img}
                                   for e in instance.exits]), hide_index=True, key="par_sel_exits")
    payload = instance_document(cache, study.name, instance, figures)
    left, right = st.columns(2)
    left.download_button("download instance (JSON)", json.dumps(payload, indent=2), file_name="instance.json",
                         mime="application/json", key="par_json")
    export_key = f"onnx::{study.path}::{json.dumps(instance.to_dict(), sort_keys=True)}"
    if right.button("export to ONNX", key="par_onnx",
                    help="per-stage and per-head ONNX files with a manifest, for onnxruntime"):
        with st.spinner("Exporting with torch.onnx (dynamo)..."):
            try:
                st.session_state[export_key] = export_zip(str(study.path), instance,
                                                          tuple(cache.meta.get("input_size", (120, 160))))
            except MessError as exc:
                st.error(f"ONNX export is not possible for this instance: {exc}")
    if export_key in st.session_state:
        right.download_button("download ONNX (zip)", st.session_state[export_key], file_name="mess_onnx.zip",
                              mime="application/zip", key="par_onnx_zip")


def export_zip(study_path: str, instance: Instance, size: tuple[int, int]) -> bytes:
    net, _ = load_network(study_path)
    return onnx_zip(net, instance, size)


@guarded_fragment
def search_area(study: Study) -> None:
    cache = study.cache
    objective, mode = constraint(cache)
    found = live_search(cache, objective, mode=mode)
    points = plot_points(cloud(str(study.path)), fronts(str(study.path)), found)
    chosen = found.chosen.instance
    if chosen is None:
        st.warning(f"No {mode} instance meets '{objective.describe()}'. Loosen the constraint.")
    else:
        st.success(f"searched {found.space_size:,} instances in {1e3 * found.seconds:.0f} ms: "
                   f"{chosen.describe()}: mIoU {pct(found.chosen.miou)}, {found.chosen.cost:.3f} GFLOPs "
                   f"({found.speedup:.2f}x)")
    selected = st.session_state.get("par_selected")
    event = st.plotly_chart(figure(points, objective, found, selected), key="par_plot", on_select="rerun",
                            selection_mode="points", width="stretch")
    picked = [p.get("customdata") for p in (event.selection.points if event else [])]
    picked = [c[0] if isinstance(c, (list, tuple)) else c for c in picked if c]
    if picked and picked[0] != selected and picked[0] in points:
        st.session_state["par_selected"] = picked[0]
        st.rerun(scope="fragment")
    if selected not in points:
        selected = "chosen" if "chosen" in points else None
    if selected is None:
        return
    st.subheader("selected instance" if selected != "chosen" else "searched instance")
    if selected != "chosen" and st.button("back to the searched instance", key="par_reset"):
        st.session_state.pop("par_selected", None)
        st.rerun(scope="fragment")
    details(study, points[selected])


@guarded
def page(study: Study) -> None:
    st.title("Pareto and search")
    st.caption("The exhaustive search re-runs on every change. Grey: a sample of evaluated instances (every budgeted "
               "one, 600 random input-dependent ones); lines: the Pareto front of each mode and policy; click any "
               "point to select it.")
    search_area(study)
