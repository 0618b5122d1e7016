"""Thresholds: th_img at each kept exit and th_pix, with the dataset's live mIoU, average GFLOPs, speedup, exit
histogram and per-class IoU from the study's evaluation cache, beside the searched optimum."""

from __future__ import annotations

import streamlit as st

from app import state
from app.boundaries import guarded, guarded_fragment
from app.figures import instance_bars
from app.views.formats import pct
from app.views.instance_bars import WIDE
from app.views.thresholds import (
    ThresholdDefaults,
    ThresholdFigures,
    instance_from_settings,
    threshold_defaults,
    threshold_summary,
)
from mess_core.evaluate.instance import Instance
from mess_core.study import Study

SOURCE = "set on the Thresholds page"


def load_into_sliders(instance: Instance) -> None:
    """Put an instance's exits, configurations and thresholds into the widgets' session state."""
    st.session_state["thr_th_pix"] = float(instance.policy.th_pix)
    st.session_state["thr_exits"] = [e.exit for e in instance.exits]
    for e in instance.exits:
        st.session_state[f"thr_cfg_{e.exit}"] = e.config
        st.session_state[f"thr_th_img_{e.exit}"] = float(e.th_img)


def first_settings(study: Study, optimum: Instance | None, start: ThresholdDefaults) -> None:
    """Where the widgets start, before the user moved one: the searched optimum, else the defaults; a th_pix off the
    cache's grid goes back to the default."""
    if "thr_exits" not in st.session_state:
        if optimum is not None and optimum.exits:
            load_into_sliders(optimum)
        else:
            st.session_state["thr_exits"] = start.kept
    if st.session_state.get("thr_th_pix") not in list(study.cache.th_pix_grid):
        st.session_state["thr_th_pix"] = start.th_pix


def controls(study: Study, optimum: Instance | None, start: ThresholdDefaults) -> Instance:
    """The sliders, and the instance they describe."""
    cache = study.cache
    top = st.columns([1, 2, 1])
    th_pix = top[0].select_slider("th_pix", list(cache.th_pix_grid), key="thr_th_pix")
    kept = top[1].multiselect("kept exits", list(range(1, cache.num_exits)), key="thr_exits")
    if optimum is not None and top[2].button(
        "load the searched optimum", key="thr_load", help=f"the study's '{state.SEARCHED_ROW.label}' instance"
    ):
        load_into_sliders(optimum)
        st.rerun(scope="fragment")
    configs, th_img = {}, {}
    if kept:
        for col, e in zip(st.columns(len(kept)), sorted(kept)):
            configs[e] = col.selectbox(f"exit {e} configuration", cache.configs, key=f"thr_cfg_{e}")
            st.session_state.setdefault(f"thr_th_img_{e}", start.th_img)
            th_img[e] = col.slider(f"exit {e} th_img", 0.0, 1.0, step=0.01, key=f"thr_th_img_{e}")
    return instance_from_settings("input-dependent", th_img, configs, th_pix=th_pix, edges=start.edges)


def metrics(figures: ThresholdFigures) -> None:
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


def optimum_caption(study: Study, optimum: Instance) -> None:
    best = threshold_summary(study.cache, optimum)
    st.caption(
        f"searched optimum ({state.SEARCHED_ROW.label}): {optimum.describe()}: mIoU {pct(best.miou)}, "
        f"{best.gflops:.3f} GFLOPs, {best.speedup:.2f}x"
        + (f"; {best.drop_interval.describe()}" if best.drop_interval else "")
    )


@guarded_fragment
def controls_and_figures(study: Study) -> None:
    optimum = state.searched(study)
    start = threshold_defaults(study.cache)
    first_settings(study, optimum, start)
    instance = controls(study, optimum, start)
    figures = threshold_summary(study.cache, instance)
    state.remember(study, instance, SOURCE)
    metrics(figures)
    st.caption(f"instance: `{instance.describe() if instance.exits else 'backbone only (no exit kept)'}`")
    if optimum is not None:
        optimum_caption(study, optimum)
    instance_bars(figures, "thr", WIDE)


@guarded
def page(study: Study) -> None:
    st.title("Thresholds")
    st.caption(
        f"Every figure is exact on the tuning images {study.cache.split_label} ({study.cache.num_images}) "
        "from the study's evaluation cache: no network runs while you move a slider."
    )
    controls_and_figures(study)
