"""Pareto and search: the search re-run under an accuracy-drop or cost-budget constraint on every change, drawn over
every evaluated instance, the front of each mode and the peers; clicking a point selects that instance, which can
be downloaded as JSON or exported to ONNX."""

from __future__ import annotations

import json
from typing import Any

import cv2
import plotly.graph_objects as go
import streamlit as st

from app import state
from app.boundaries import guarded, guarded_fragment
from app.consent import code_allowed, load_network
from app.figures import instance_bars
from app.loaders import cloud, dataset_of, dataset_origin, fronts
from app.views.formats import pct
from app.views.image_table import LinkedView, compare_figures, linked_view
from app.views.instance_bars import NARROW
from app.views.pareto import (
    SEARCHED,
    LiveSearch,
    PlotPoint,
    PointId,
    PointKind,
    gflops_budget,
    instance_document,
    live_search,
    onnx_zip,
    parse_point_id,
    search_points,
    study_points,
)
from app.views.pareto_figures import STUDY_KINDS, search_figure, study_figure
from app.views.thresholds import ThresholdFigures, threshold_summary
from app.views.upload import dataset_sample
from mess_core.errors import MessError
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import MODES, Instance
from mess_core.search.heldout import mix_text, score_instance
from mess_core.search.problem import Objective
from mess_core.search.uncertainty import MIN_BLOCKS
from mess_core.study import Study

SELECTED = "selected on the Pareto page"  # where the current instance came from (app.state.remember)
SELECTED_KEY = "par_selected"  # the PointId clicked last
EXPORTS_KEY = "par_onnx_exports"  # the ONNX zips this session exported, by (study path, instance)


RULE_KEYS = ("par_sure", "par_confidence", "par_block")  # the controls that start from the study's promise rule


def min_cost_objective(cols: Any, study: Study) -> Objective:
    """The min-cost objective; "keep it on new images" starts as the study's own promise rule
    (:attr:`mess_core.study.Study.promise_rule`), so the page's search finds the study's min-cost rows."""
    cache, rule = study.cache, study.promise_rule
    state.start_from_study(study, RULE_KEYS, marker="par_rule_study")
    most_block = max(1, cache.num_images // MIN_BLOCKS)  # fewer blocks cannot be resampled
    drop = cols[2].slider("allowed mIoU drop (pp)", 0.0, 10.0, 1.0, 0.1, key="par_drop")
    sure = cols[2].toggle(
        "keep it on new images, at a confidence",
        value=rule["confidence"] is not None,
        key="par_sure",
        help="choose the cheapest instance of the Pareto front whose drop on a fresh set of as "
        "many images as this split stays within the bound at this confidence (a predictive "
        "bootstrap bound), not only on these images; on by default when the study chose its rows "
        "this way. BENCHMARKS.md measures how often it holds",
    )
    confidence = cols[2].select_slider(
        "confidence",
        [0.8, 0.9, 0.95],
        value=rule["confidence"] if rule["confidence"] in (0.8, 0.9, 0.95) else 0.9,
        key="par_confidence",
        disabled=not sure,
        format_func=lambda c: f"{100 * c:g}%",
    )
    block = cols[2].number_input(
        "resample scene blocks of (images; 1: single images)",
        min_value=1,
        max_value=most_block,
        # a block too big for these images is resampled as single images, as the study's own rows were
        value=rule["block"] if rule["block"] and rule["block"] <= most_block else 1,
        step=1,
        key="par_block",
        disabled=not sure,
        help="frames of one drive are not independent draws: resampling runs of this many consecutive "
        "images of a scene puts the scene-to-scene spread into the bound (BENCHMARKS.md, issue 23)",
    )
    if not sure:
        return Objective("min-cost", max_drop=drop)
    return Objective(
        "min-cost",
        max_drop=drop,
        confidence=confidence,
        fresh_images=cache.num_images,
        block=int(block) if block > 1 else None,
    )


def max_accuracy_objective(cols: Any, cache: EvaluationCache) -> Objective:
    unit = cols[2].radio("budget in", ["x backbone", "GFLOPs"], horizontal=True, key="par_budget_unit")
    if unit == "x backbone":
        budget = cols[2].slider("cost budget (x backbone)", 0.05, 1.5, 1.0, 0.01, key="par_budget_x")
    else:
        slider = gflops_budget(cache.stage_gflops.sum())
        gflops = cols[2].slider(
            "cost budget (GFLOPs)", slider.low, slider.high, slider.value, slider.step, key="par_budget_g"
        )
        budget = slider.fraction(gflops)
    return Objective("max-acc", budget=budget)


def constraint(study: Study) -> tuple[Objective, str]:
    """The mode and the objective the page's controls set."""
    cache = study.cache
    cols = st.columns([1.2, 1.3, 2])
    mode = cols[0].radio("mode", MODES, index=2, key="par_mode")
    kind = cols[1].radio("objective", ["min cost, mIoU drop at most", "max mIoU, cost at most"], key="par_objective")
    if kind.startswith("min cost"):
        return min_cost_objective(cols, study), mode
    return max_accuracy_objective(cols, cache), mode


@st.cache_resource(show_spinner=False, max_entries=8)
def evaluated_points(study_path: str) -> dict[PointId, PlotPoint]:
    """The study's own points (the cloud and the fronts), once per study: a slider move only adds the search's."""
    return study_points(cloud(study_path), fronts(study_path))


@st.cache_resource(show_spinner=False, max_entries=64)
def study_chart(study_path: str, ring_on: PointId | None) -> go.Figure:
    """:func:`app.views.pareto_figures.study_figure`, once per study and ringed point (a slider move changes
    neither): plotly_chart only copies it."""
    return study_figure(evaluated_points(study_path), ring_on)


@st.cache_resource(show_spinner=False, max_entries=512)
def live_result(study_path: str, objective: Objective, mode: str, _cache: Any) -> LiveSearch:
    """The search and its peers for one constraint, once per study: a slider back at a value it had is answered at
    once (the answer never changes for a given cache; BENCHMARKS.md times a search)."""
    return live_search(_cache, objective, mode=mode)


def clicked(event: Any, key: str) -> PointId | None:
    """The point a chart's selection names when it changed since the last run (a chart keeps its selection)."""
    texts = [p.get("customdata") for p in (event.selection.points if event else [])]
    ids = [parse_point_id(c[0] if isinstance(c, (list, tuple)) else c) for c in texts if c]
    seen_key = f"{key}_seen"
    new = ids[0] if ids and ids[0] != st.session_state.get(seen_key) else None
    st.session_state[seen_key] = ids[0] if ids else None
    return new


def search_outcome(found: LiveSearch, objective: Objective, mode: str) -> None:
    chosen = found.chosen.instance
    if chosen is None:
        st.warning(f"No {mode} instance meets '{objective.describe()}'. Loosen the constraint.")
        return
    interval = found.chosen.interval
    st.success(
        f"searched {found.space_size:,} instances in {1e3 * found.seconds:.0f} ms: "
        f"{chosen.describe()}: mIoU {pct(found.chosen.miou)}, {found.chosen.cost:.3f} GFLOPs "
        f"({found.speedup:.2f}x)" + (f"; {interval.describe()}" if interval is not None else "")
    )


def charts(study: Study, points: dict[PointId, PlotPoint], found: LiveSearch, objective: Objective) -> None:
    """Both plots side by side; a click on either selects its point and reruns the whole page (the linked views
    below the search fragment follow the selection)."""
    selected = st.session_state.get(SELECTED_KEY)
    ring_on = selected if isinstance(selected, PointId) and selected.kind in STUDY_KINDS else None
    left, right = st.columns([3, 2])
    events = {
        key: col.plotly_chart(fig, key=key, on_select="rerun", selection_mode="points", width="stretch")
        for col, key, fig in [
            (left, "par_plot", study_chart(str(study.path), ring_on)),
            (right, "par_search_plot", search_figure(points, objective, found, selected)),
        ]
    }
    picked = [p for p in (clicked(event, key) for key, event in events.items()) if p in points]
    if picked and picked[0] != selected:
        st.session_state[SELECTED_KEY] = picked[0]
        st.rerun()


@guarded_fragment
def search_area(study: Study) -> None:
    cache = study.cache
    objective, mode = constraint(study)
    found = live_result(str(study.path), objective, mode, cache)
    points = evaluated_points(str(study.path)) | search_points(found)
    search_outcome(found, objective, mode)
    charts(study, points, found, objective)
    selected = st.session_state.get(SELECTED_KEY)
    if selected not in points:
        selected = SEARCHED if SEARCHED in points else None
    if selected is None:
        return
    point = points[selected]
    if point.kind is not PointKind.CHOSEN and point.instance is not None:  # the oracle is a bound, not an instance
        state.remember(study, point.instance, SELECTED)
    st.subheader("selected instance" if point.kind is not PointKind.CHOSEN else "searched instance")
    if point.kind is not PointKind.CHOSEN and st.button("back to the searched instance", key="par_reset"):
        st.session_state.pop(SELECTED_KEY, None)
        st.rerun()
    details(study, point)


def instance_metrics(figures: ThresholdFigures) -> None:
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


def on_report_set(study: Study, instance: Instance) -> None:
    """The instance's figures on the report set chosen on the Study page, when there is one."""
    if (chosen := state.report_set(study)) is None:
        return
    _, other = chosen
    there = score_instance(other, instance, block=study.promise_rule["block"])
    st.caption(
        f"On the report set ({other.meta.get('dataset')} {other.split_label}, {other.num_images} "
        f"images, chosen on the Study page): mIoU {pct(there['miou'])}, drop {there['drop_pp']:.2f} pp "
        f"[{there['drop_low']:.2f}, {there['drop_high']:.2f}], {there['speedup']:.2f}x fewer GFLOPs; "
        f"images leave {mix_text(there['exit_mix'])}"
    )


def details(study: Study, point: PlotPoint) -> None:
    instance = point.instance
    if instance is None:
        st.info(
            f"The oracle ({pct(point.miou)}, {point.cost:.3f} GFLOPs) is a bound: it knows each image's labels, "
            "so it cannot be deployed. Pick another point."
        )
        return
    figures = threshold_summary(study.cache, instance)
    st.markdown(f"**{point.series}**: `{instance.describe()}` ({instance.mode})")
    instance_metrics(figures)
    on_report_set(study, instance)
    if instance.exits:  # a line, not a data grid: this part is redrawn on every slider move
        st.markdown(
            "kept exits: "
            + "; ".join(
                f"**exit {e.exit}** `{e.config}`" + (f" th_img {e.th_img:.2f}" if e.th_img is not None else "")
                for e in instance.exits
            )
        )
    pin_button(study, instance)
    downloads(study, instance, figures)


def downloads(study: Study, instance: Instance, figures: ThresholdFigures) -> None:
    """The instance as JSON, and exported to ONNX once the user asks (the export builds the network)."""
    left, right = st.columns(2)
    # the document is written when the button is pressed, not on every slider move
    left.download_button(
        "download instance (JSON)",
        lambda: json.dumps(instance_document(study.cache, study.name, instance, figures), indent=2),
        file_name="instance.json",
        mime="application/json",
        key="par_json",
    )
    if not code_allowed(study, where="pareto"):
        return
    exports = st.session_state.setdefault(EXPORTS_KEY, {})
    exported = (str(study.path), instance)
    if right.button(
        "export to ONNX", key="par_onnx", help="per-stage and per-head ONNX files with a manifest, for onnxruntime"
    ):
        with st.spinner("Exporting with torch.onnx (dynamo)..."):
            try:
                net, _ = load_network(str(study.path))
                exports[exported] = onnx_zip(net, instance, tuple(study.cache.meta.get("input_size", (120, 160))))
            except MessError as exc:
                st.error(f"ONNX export is not possible for this instance: {exc}")
    if exported in exports:
        right.download_button(
            "download ONNX (zip)",
            exports[exported],
            file_name="mess_onnx.zip",
            mime="application/zip",
            key="par_onnx_zip",
        )


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
    return instance if source == SELECTED and SELECTED_KEY in st.session_state else None


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnail(study_path: str, index: int, _study: Study):
    origin = dataset_origin(_study)
    if not origin.on_disk:
        return None
    rgb, _ = dataset_sample(dataset_of(origin), index)
    return cv2.resize(rgb, (160, round(160 * rgb.shape[0] / rgb.shape[1])), interpolation=cv2.INTER_AREA)


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
    instance_bars(view.figures, key, NARROW)
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
    views = []
    for col, (instance, title, key) in zip(st.columns(len(shown)), shown):
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
