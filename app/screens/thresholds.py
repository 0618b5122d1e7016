"""Thresholds: th_img at each kept exit and th_pix, with the dataset's live mIoU, average GFLOPs, speedup, exit
histogram and per-class IoU from the study's evaluation cache, beside the searched optimum."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from app import state
from app.common import guarded, guarded_fragment, pct, results
from app.views.thresholds import instance_from_settings, threshold_defaults, threshold_summary
from mess_core.search.report import Row
from mess_core.study import Study

OPTIMUM_ROW = Row.MIN_COST_1PP


def searched_optimum(study: Study):
    table = results(str(study.path), "input-dependent")
    row = table.loc[table["id"] == OPTIMUM_ROW, "instance"]
    return row.iloc[0] if len(row) else None


def load_into_sliders(study: Study, instance) -> None:
    """Put an instance's exits, configurations and thresholds into the widgets' session state."""
    st.session_state["thr_th_pix"] = float(instance.policy.th_pix)
    st.session_state["thr_exits"] = [e.exit for e in instance.exits]
    for e in instance.exits:
        st.session_state[f"thr_cfg_{e.exit}"] = e.config
        st.session_state[f"thr_th_img_{e.exit}"] = float(e.th_img)


@guarded_fragment
def controls_and_figures(study: Study) -> None:
    cache = study.cache
    optimum = searched_optimum(study)
    start = threshold_defaults(cache)
    if "thr_exits" not in st.session_state:
        if optimum is not None and optimum.exits:
            load_into_sliders(study, optimum)
        else:
            st.session_state["thr_exits"] = start.kept
    top = st.columns([1, 2, 1])
    grid = list(cache.th_pix_grid)
    if st.session_state.get("thr_th_pix") not in grid:
        st.session_state["thr_th_pix"] = start.th_pix
    th_pix = top[0].select_slider("th_pix", grid, key="thr_th_pix")
    kept = top[1].multiselect("kept exits", list(range(1, cache.num_exits)), key="thr_exits")
    if optimum is not None and top[2].button(
        "load the searched optimum", key="thr_load", help=f"the study's '{OPTIMUM_ROW.label}' instance"
    ):
        load_into_sliders(study, optimum)
        st.rerun(scope="fragment")
    configs, th_img = {}, {}
    if kept:
        cols = st.columns(len(kept))
        for col, e in zip(cols, sorted(kept)):
            configs[e] = col.selectbox(f"exit {e} configuration", cache.configs, key=f"thr_cfg_{e}")
            st.session_state.setdefault(f"thr_th_img_{e}", start.th_img)
            th_img[e] = col.slider(f"exit {e} th_img", 0.0, 1.0, step=0.01, key=f"thr_th_img_{e}")
    instance = instance_from_settings("input-dependent", th_img, configs, th_pix=th_pix, edges=start.edges)
    figures = threshold_summary(cache, instance)
    state.remember(study, instance, "set on the Thresholds page")

    m = st.columns(5)
    interval = figures.drop_interval
    m[0].metric(
        "mIoU",
        pct(figures.miou),
        f"{-figures.drop_pp:+.2f} pp vs backbone",
        help=f"mIoU {interval.describe()}" if interval else None,
    )
    m[1].metric("average GFLOPs", f"{figures.gflops:.3f}", f"backbone {figures.backbone_gflops:.3f}", delta_color="off")
    m[2].metric("speedup (GFLOPs)", f"{figures.speedup:.2f}x")
    if figures.measured:
        m[3].metric(
            "CPU latency (cache)", f"{figures.latency_ms:.2f} ms", f"{figures.latency_speedup:.2f}x", delta_color="off"
        )
    m[4].metric("images leaving early", pct(figures.left_early))
    if interval is not None:
        st.caption(
            f"mIoU {interval.describe()}: another sample of images like these would show a drop in this "
            "range; the search can choose by it (Pareto page, 'keep it on new images')"
        )
    st.caption(f"instance: `{instance.describe() if instance.exits else 'backbone only (no exit kept)'}`")

    if optimum is not None:
        best = threshold_summary(cache, optimum)
        st.caption(
            f"searched optimum ({OPTIMUM_ROW.label}): {optimum.describe()}: mIoU {pct(best.miou)}, "
            f"{best.gflops:.3f} GFLOPs, {best.speedup:.2f}x"
            + (f"; {best.drop_interval.describe()}" if best.drop_interval else "")
        )

    left, right = st.columns(2)
    hist = figures.histogram
    labels = [f"exit {e}" + (f" ({c})" if c != "final" else " (final)") for e, c in zip(hist["exit"], hist["config"])]
    fig = go.Figure(go.Bar(x=labels, y=hist["images"], text=[f"{100 * f:.0f}%" for f in hist["fraction"]]))
    fig.update_layout(title="where images leave", height=340, margin={"t": 40, "b": 10}, yaxis_title="images")
    left.plotly_chart(fig, key="thr_hist", width="stretch")
    per_class = figures.per_class
    fig = go.Figure(
        [
            go.Bar(x=per_class["class"], y=100 * per_class["IoU"], name="this instance"),
            go.Bar(x=per_class["class"], y=100 * per_class["backbone IoU"], name="backbone"),
        ]
    )
    fig.update_layout(
        title="IoU per class (%)",
        height=340,
        margin={"t": 40, "b": 10},
        barmode="group",
        legend={"orientation": "h", "y": -0.25},
    )
    right.plotly_chart(fig, key="thr_classes", width="stretch")


@guarded
def page(study: Study) -> None:
    st.title("Thresholds")
    st.caption(
        f"Every figure is exact on the {study.cache.meta.get('split')} split ({study.cache.num_images} images) "
        "from the study's evaluation cache: no network runs while you move a slider."
    )
    controls_and_figures(study)
