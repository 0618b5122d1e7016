"""Confidence explorer: one image through every exit: prediction, per-pixel confidence, edge mask M and the
edge-masked confidence side by side, where the image leaves under the chosen thresholds, what that saves (counted
and measured), and the anytime strip."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pandas as pd
import streamlit as st

from app import state
from app.boundaries import guarded
from app.consent import code_allowed, load_network
from app.loaders import dataset_of, dataset_origin
from app.state import EXPLORER
from app.views.formats import pct
from app.views.one_image import (
    EarlyExitTiming,
    ExitFiring,
    ExitView,
    PathCost,
    enlarge,
    exit_firings,
    exit_taken,
    exit_views,
    explorer_defaults,
    heatmap,
    measure_early_exit,
    path_gflops,
    run_exits,
    shipped_heads,
)
from app.views.thresholds import instance_from_settings
from app.views.upload import dataset_sample, decode_image, synthetic_sample, to_input
from mess_core.data.info import colorize
from mess_core.data.registry import palette_for
from mess_core.errors import MessError
from mess_core.evaluate.instance import Instance
from mess_core.evaluate.policy import EdgeMasking
from mess_core.study import Study

SOURCES = ("dataset image", "generated synthetic sample", "upload")
Size = tuple[int, int]


@st.cache_resource(show_spinner="Running every exit...", max_entries=12)
def infer(
    study_path: str, digest: str, size: Size, configs: tuple[tuple[int, str], ...], _x: Any
) -> tuple[dict, float]:
    """Every exit's logits for the image ``digest`` names, run at ``size``."""
    net, _ = load_network(study_path)
    return run_exits(net, _x, dict(configs))


@st.cache_data(show_spinner=False, max_entries=64)
def gflops_of(study_path: str, size: Size, kept: tuple[tuple[int, str], ...], leave_at: int) -> PathCost:
    net, _ = load_network(study_path)
    return path_gflops(net, size, dict(kept), leave_at)


@st.cache_resource(show_spinner="Timing the early-exit network against the full model...", max_entries=32)
def timing(study_path: str, digest: str, size: Size, instance: Instance, _x: Any) -> EarlyExitTiming:
    net, _ = load_network(study_path)
    return measure_early_exit(net, instance, _x, repeats=3)


def dataset_image(study: Study) -> tuple[np.ndarray, np.ndarray | None, str]:
    """An image of the study's split, the one the Image browser sent first."""
    origin = dataset_origin(study)
    dataset = dataset_of(origin)
    sent = state.sent(study)
    start = min(sent[0], len(dataset) - 1) if sent is not None else 0
    index = st.slider(f"{origin.label} image", 0, len(dataset) - 1, start, key=EXPLORER.index)
    names = study.cache.meta.get("images") or []
    if index < len(names):
        st.caption(f"image {index}: {names[index]} (the Image browser lists every one)")
    rgb, label = dataset_sample(dataset, index)
    return rgb, label, "-".join([origin.name, origin.split, *origin.groups, str(index)])


def uploaded_image() -> tuple[np.ndarray, None, str] | None:
    upload = st.file_uploader(
        "an image (PNG, JPEG, BMP, TIFF, WebP; any size, 8 or 16 bit, gray, RGB or RGBA)", key=EXPLORER.upload
    )
    if upload is None:
        st.info("Upload an image to see it go through every exit.")
        return None
    data = upload.getvalue()
    try:
        image = decode_image(data, name=upload.name)
    except MessError as exc:
        st.error(str(exc))
        return None
    for note in image.notices:
        st.info(note)
    return image.rgb, None, hashlib.sha1(data).hexdigest()


def pick_image(study: Study) -> tuple[np.ndarray, np.ndarray | None, str] | None:
    """(RGB uint8, ground truth or None, a digest naming the pixels), or None with a message."""
    origin = dataset_origin(study)
    sources = SOURCES if origin.on_disk else SOURCES[1:]
    if not origin.on_disk:
        st.caption(
            f"The study's dataset ({origin.name} at {origin.root}) is not on this machine: pick a generated "
            "sample or upload an image."
        )
    source = st.radio("image", sources, horizontal=True, key=EXPLORER.source)
    if source == "dataset image":
        return dataset_image(study)
    if source == "generated synthetic sample":
        size = tuple(study.cache.meta.get("input_size", (120, 160)))
        seed = st.number_input("scene seed", 0, 10_000, 7, key=EXPLORER.seed)
        rgb, label = synthetic_sample(size, int(seed), study.cache.num_classes)
        return rgb, label, f"synthetic-{seed}-{size}"
    return uploaded_image()


def start_instance(study: Study) -> Instance | None:
    """The instance the explorer's settings start from: the one the Image browser sent with its image, else the
    study's searched instance (MESS <= 1 pp)."""
    sent = state.sent(study)
    return sent[1] if sent is not None and sent[1] is not None else state.searched(study)


@dataclass(frozen=True)
class ExitChoice:
    """What the exit settings chose: each exit's configuration, the kept exits' th_img, th_pix, the edge masking,
    and whether the image runs at its own size."""

    configs: dict[int, str]
    th_img: dict[int, float]
    th_pix: float
    edges: EdgeMasking
    native: bool

    def instance(self) -> Instance:
        return instance_from_settings(
            "input-dependent", self.th_img, self.configs, th_pix=self.th_pix, edges=self.edges
        )


def settings(study: Study) -> ExitChoice:
    cache = study.cache
    net, _ = load_network(str(study.path))
    shipped = shipped_heads(net)
    start = explorer_defaults(cache, shipped, start_instance(study))
    with st.expander("exit settings", expanded=True):
        top = st.columns(4)
        th_pix = top[0].slider(
            "th_pix (pixel confidence threshold)", 0.50, 0.99, float(start.th_pix), 0.01, key=EXPLORER.th_pix
        )
        size = top[1].select_slider("edge width s", [1, 3, 5, 7, 9], 3, key=EXPLORER.edge_size)
        window = top[2].select_slider("median window w", [3, 5, 7, 9, 11], 7, key=EXPLORER.window)
        native = top[3].toggle(
            "run at the image's own size",
            False,
            key=EXPLORER.native,
            help="off: resize to the study's input size, as the exits were trained",
        )
        configs, th_img = {}, {}
        for i, col in enumerate(st.columns(cache.num_exits - 1), start=1):
            configs[i] = col.selectbox(
                f"exit {i}",
                shipped[i],
                index=shipped[i].index(start.configs[i]),
                key=EXPLORER.config(i),
                help="configurations whose weights the study ships",
            )
            if col.checkbox("kept", i in start.th_img, key=EXPLORER.kept(i)):
                th_img[i] = col.slider("th_img", 0.0, 1.0, start.th_img.get(i, 0.8), 0.01, key=EXPLORER.th_img(i))
    return ExitChoice(configs, th_img, th_pix, EdgeMasking(size=size, window=window), native)


@dataclass(frozen=True)
class ImageRun:
    """One image through every exit, as the page shows it."""

    study_path: str
    size: Size  # what the network ran at (H, W)
    shown: np.ndarray  # the input at that size, RGB
    label: np.ndarray | None  # its ground truth, when known
    views: list[ExitView]  # every exit's maps, the final exit last
    leave: int  # the exit the image leaves at
    seconds: float  # every exit, once
    palette: np.ndarray
    num_exits: int  # the study's, the final exit's index


def image_metrics(run: ImageRun, choice: ExitChoice) -> tuple[Any, Any]:
    """The metrics above the maps; returns the slots the measured timing and its warning fill in last."""
    n, size = run.num_exits, run.size
    cost = gflops_of(run.study_path, size, tuple(sorted((i, choice.configs[i]) for i in choice.th_img)), run.leave)
    m = st.columns(5)
    m[0].metric("leaves at", f"exit {run.leave}" if run.leave < n else f"final exit ({n})")
    saved = cost.saved
    m[1].metric(
        "GFLOPs",
        f"{cost.gflops:.3f}",
        (f"{100 * saved:.0f}% saved" if saved >= 0 else f"{-100 * saved:.0f}% more")
        + f" vs the full {cost.full_gflops:.3f}",
        delta_color="off",
        help="stages to the exit it leaves at, plus every kept head on the way",
    )
    timing_slot = m[2].empty()
    timing_slot.metric("measured, early exit", "timing...")
    m[3].metric("every exit, once", f"{1e3 * run.seconds:.0f} ms", f"{size[0]}x{size[1]}", delta_color="off")
    m[4].metric("kept exits", ", ".join(map(str, sorted(choice.th_img))) or "none")
    return timing_slot, st.empty()


def anytime_strip(run: ImageRun) -> None:
    st.subheader("Anytime: the prediction refining exit by exit")
    strip = st.columns(len(run.views) + 1)
    strip[0].image(enlarge(run.shown, 200), caption="input")
    for col, view in zip(strip[1:], run.views):
        kept = ((view.exit, view.config),) if view.exit < run.num_exits else ()
        reach = gflops_of(run.study_path, run.size, kept, view.exit)
        col.image(
            enlarge(colorize(view.labels, run.palette), 200),
            caption=f"exit {view.exit} · {reach.gflops:.3f} GFLOPs"
            + (" · leaves here" if view.exit == run.leave else ""),
        )


def exit_maps(view: ExitView, firing: ExitFiring, run: ImageRun, edges: EdgeMasking) -> None:
    """One exit's line and its four maps: prediction, pixel confidence, edge mask, edge-masked confidence."""
    fires = (
        f"; th_img {firing.th_img:.2f}: {'fires' if firing.fires else 'does not fire'}"
        if firing.th_img is not None
        else ""
    )
    st.markdown(
        f"**exit {view.exit}** ({view.config}): c_img = {pct(view.c_img)} edge-masked, "
        f"{pct(view.c_img_plain)} plain" + fires
    )
    st.image(
        [
            enlarge(colorize(view.labels, run.palette)),
            enlarge(heatmap(view.confidence)),
            enlarge((view.edge_mask * 255).astype(np.uint8)),
            enlarge(heatmap(view.masked_confidence)),
        ],
        caption=[
            "prediction",
            "pixel confidence",
            f"edge mask M (s={edges.size})",
            f"edge-masked confidence (w={edges.window})",
        ],
    )


def every_exit(run: ImageRun, choice: ExitChoice) -> None:
    st.subheader("Every exit")
    if run.label is not None:
        st.image(
            [enlarge(run.shown), enlarge(colorize(np.where(run.label == 255, -1, run.label), run.palette))],
            caption=["input", "ground truth"],
        )
    firings = exit_firings(run.views, choice.th_img)
    for view, firing in zip(run.views, firings):
        exit_maps(view, firing, run, choice.edges)
    columns = ("exit", "config", "c_img (edge-masked)", "c_img (plain)", "th_img", "fires")
    st.dataframe(
        pd.DataFrame(
            [dict(zip(columns, (f.exit, f.config, f.c_img, f.c_img_plain, f.th_img, f.fires))) for f in firings]
        ),
        hide_index=True,
        key=EXPLORER.table,
    )


def run_image(
    study: Study, picked: tuple[np.ndarray, np.ndarray | None, str], choice: ExitChoice
) -> tuple[ImageRun, Any]:
    """The picked image through every exit under ``choice``; also returns the network's input."""
    rgb, label, digest = picked
    size = tuple(study.cache.meta.get("input_size")) if not choice.native else tuple(rgb.shape[:2])
    x = to_input(rgb, size)
    path = str(study.path)
    logits, seconds = infer(path, digest, size, tuple(sorted(choice.configs.items())), x)
    views = exit_views(logits, choice.configs, th_pix=choice.th_pix, edges=choice.edges)
    shown = rgb if tuple(rgb.shape[:2]) == size else cv2.resize(rgb, size[::-1], interpolation=cv2.INTER_AREA)
    palette = palette_for(study.cache.meta.get("dataset", ""), study.cache.num_classes)
    leave = exit_taken(views, choice.th_img)
    return ImageRun(path, size, shown, label, views, leave, seconds, palette, study.cache.num_exits), x


def measured_timing(run: ImageRun, choice: ExitChoice, digest: str, x: Any, slots: tuple[Any, Any]) -> None:
    """The deployed network timed against the full model, filled into the headline's slots (last: it takes a few
    passes more than the maps, which are on the page by then)."""
    measured = timing(run.study_path, digest, run.size, choice.instance(), x)
    timing_slot, warning_slot = slots
    timing_slot.metric(
        "measured, early exit",
        f"{measured.early_exit_ms:.1f} ms",
        f"{measured.speedup:.2f}x vs full {measured.full_ms:.1f} ms",
        delta_color="off",
        help="the deployed EarlyExitNet (it stops at the exit) and the original "
        "model's path, interleaved, median of 3 after a warm-up, batch 1, this machine",
    )
    if measured.exit != run.leave:
        warning_slot.warning(
            f"The deployed network left at exit {measured.exit}, the maps say {run.leave}: please report this."
        )


@guarded
def page(study: Study) -> None:
    st.title("Confidence explorer")
    if not code_allowed(study, where="explorer"):
        return
    picked = pick_image(study)
    if picked is None:
        return
    choice = settings(study)
    run, x = run_image(study, picked, choice)
    slots = image_metrics(run, choice)
    anytime_strip(run)
    every_exit(run, choice)
    measured_timing(run, choice, picked[2], x, slots)
