"""Confidence explorer: one image through every exit: prediction, per-pixel confidence, edge mask M and the
edge-masked confidence side by side, where the image leaves under the chosen thresholds, what that saves (counted
and measured), and the anytime strip."""

from __future__ import annotations

import hashlib
from typing import Any

import cv2
import numpy as np
import pandas as pd
import streamlit as st

from app import state
from app.common import REPO, code_allowed, guarded, load_network, pct
from app.views.one_image import (
    EarlyExitTiming,
    PathCost,
    colorize,
    exit_firings,
    exit_taken,
    exit_views,
    explorer_defaults,
    heatmap,
    measure_early_exit,
    palette_for,
    path_gflops,
    run_exits,
    shipped_heads,
)
from app.views.thresholds import instance_from_settings
from app.views.upload import dataset_sample, dataset_source, decode_image, synthetic_sample, to_input
from mess_core.data import build_dataset
from mess_core.errors import MessError
from mess_core.evaluate.instance import Instance
from mess_core.evaluate.policy import EdgeMasking
from mess_core.study import Study

SOURCES = ("dataset image", "generated synthetic sample", "upload")
DISPLAY_WIDTH = 320


def enlarge(image: np.ndarray, width: int = DISPLAY_WIDTH) -> np.ndarray:
    """Nearest-neighbour upscaling for display, so small study images show their pixels instead of blur."""
    h, w = image.shape[:2]
    if w >= width:
        return image
    scale = width / w
    return cv2.resize(image, (width, round(h * scale)), interpolation=cv2.INTER_NEAREST)


@st.cache_resource(show_spinner=False, max_entries=4)
def dataset_of(name: str, root: str | None, options: tuple, split: str, groups: tuple[str, ...] = ()) -> Any:
    return build_dataset(name, root=root, split=split, groups=groups, **dict(options))


@st.cache_resource(show_spinner="Running every exit...", max_entries=12)
def infer(study_path: str, digest: str, configs: tuple[tuple[int, str], ...], _x: Any) -> tuple[dict, float]:
    net, _ = load_network(study_path)
    return run_exits(net, _x, dict(configs))


@st.cache_data(show_spinner=False, max_entries=64)
def gflops_of(study_path: str, size: tuple[int, int], kept: tuple[tuple[int, str], ...], leave_at: int) -> PathCost:
    net, _ = load_network(study_path)
    return path_gflops(net, size, dict(kept), leave_at)


@st.cache_resource(show_spinner="Timing the early-exit network against the full model...", max_entries=32)
def timing(study_path: str, digest: str, description: str, _instance: Any, _x: Any) -> EarlyExitTiming:
    net, _ = load_network(study_path)
    return measure_early_exit(net, _instance, _x, repeats=3)


def pick_image(study: Study) -> tuple[np.ndarray, np.ndarray | None, str] | None:
    """(RGB uint8, ground truth or None, a digest naming the pixels), or None with a message."""
    origin = dataset_source(study.manifest.get("config") or {}, study.cache.meta, REPO)
    sources = SOURCES if origin.on_disk else SOURCES[1:]
    if not origin.on_disk:
        st.caption(
            f"The study's dataset ({origin.name} at {origin.root}) is not on this machine: pick a generated "
            "sample or upload an image."
        )
    source = st.radio("image", sources, horizontal=True, key="explorer_source")
    if source == "dataset image":
        dataset = dataset_of(origin.name, origin.root, origin.options, origin.split, origin.groups)
        sent = state.sent(study)
        start = min(sent[0], len(dataset) - 1) if sent is not None else 0
        index = st.slider(f"{origin.label} image", 0, len(dataset) - 1, start, key="explorer_index")
        names = study.cache.meta.get("images") or []
        if index < len(names):
            st.caption(f"image {index}: {names[index]} (the Image browser lists every one)")
        rgb, label = dataset_sample(dataset, index)
        return rgb, label, "-".join([origin.name, origin.split, *origin.groups, str(index)])
    if source == "generated synthetic sample":
        size = tuple(study.cache.meta.get("input_size", (120, 160)))
        seed = st.number_input("scene seed", 0, 10_000, 7, key="explorer_seed")
        rgb, label = synthetic_sample(size, int(seed), study.cache.num_classes)
        return rgb, label, f"synthetic-{seed}-{size}"
    upload = st.file_uploader(
        "an image (PNG, JPEG, BMP, TIFF, WebP; any size, 8 or 16 bit, gray, RGB or RGBA)", key="explorer_upload"
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


def start_instance(study: Study) -> Instance | None:
    """The instance the explorer's settings start from: the one the Image browser sent with its image, else the
    study's searched instance (MESS <= 1 pp)."""
    sent = state.sent(study)
    return sent[1] if sent is not None and sent[1] is not None else state.searched(study)


def heads_of(study: Study) -> dict[int, list[str]]:
    net, _ = load_network(str(study.path))
    return shipped_heads(net)


def settings(study: Study) -> tuple[dict[int, str], dict[int, float], float, EdgeMasking, bool]:
    cache = study.cache
    shipped = heads_of(study)
    start = explorer_defaults(cache, shipped, start_instance(study))
    with st.expander("exit settings", expanded=True):
        top = st.columns(4)
        th_pix = top[0].slider(
            "th_pix (pixel confidence threshold)", 0.50, 0.99, float(start.th_pix), 0.01, key="explorer_th_pix"
        )
        size = top[1].select_slider("edge width s", [1, 3, 5, 7, 9], 3, key="explorer_s")
        window = top[2].select_slider("median window w", [3, 5, 7, 9, 11], 7, key="explorer_w")
        native = top[3].toggle(
            "run at the image's own size",
            False,
            key="explorer_native",
            help="off: resize to the study's input size, as the exits were trained",
        )
        cols = st.columns(cache.num_exits - 1)
        configs, th_img = {}, {}
        for i, col in enumerate(cols, start=1):
            configs[i] = col.selectbox(
                f"exit {i}",
                shipped[i],
                index=shipped[i].index(start.configs[i]),
                key=f"explorer_cfg_{i}",
                help="configurations whose weights the study ships",
            )
            if col.checkbox("kept", i in start.th_img, key=f"explorer_keep_{i}"):
                th_img[i] = col.slider("th_img", 0.0, 1.0, start.th_img.get(i, 0.8), 0.01, key=f"explorer_th_img_{i}")
    return configs, th_img, th_pix, EdgeMasking(size=size, window=window), native


@guarded
def page(study: Study) -> None:
    st.title("Confidence explorer")
    if not code_allowed(study, where="explorer"):
        return
    picked = pick_image(study)
    if picked is None:
        return
    rgb, label, digest = picked
    configs, th_img, th_pix, edges, native = settings(study)
    input_size = tuple(study.cache.meta.get("input_size")) if not native else tuple(rgb.shape[:2])
    x = to_input(rgb, input_size)
    path = str(study.path)
    key = tuple(sorted(configs.items()))
    logits, seconds = infer(path, f"{digest}-{input_size}", key, x)
    views = exit_views(logits, configs, th_pix=th_pix, edges=edges)
    shown_rgb = (
        rgb if tuple(rgb.shape[:2]) == input_size else cv2.resize(rgb, input_size[::-1], interpolation=cv2.INTER_AREA)
    )
    palette = palette_for(study.cache.meta.get("dataset", ""), study.cache.num_classes)

    leave = exit_taken(views, th_img)
    kept = {i: configs[i] for i in th_img}
    cost = gflops_of(path, input_size, tuple(sorted(kept.items())), leave)
    instance = instance_from_settings("input-dependent", th_img, configs, th_pix=th_pix, edges=edges)
    n = study.cache.num_exits
    m = st.columns(5)
    m[0].metric("leaves at", f"exit {leave}" if leave < n else f"final exit ({n})")
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
    m[3].metric("every exit, once", f"{1e3 * seconds:.0f} ms", f"{input_size[0]}x{input_size[1]}", delta_color="off")
    m[4].metric("kept exits", ", ".join(map(str, sorted(th_img))) or "none")
    warning_slot = st.empty()

    st.subheader("Anytime: the prediction refining exit by exit")
    strip = st.columns(len(views) + 1)
    strip[0].image(enlarge(shown_rgb, 200), caption="input")
    for col, view in zip(strip[1:], views):
        reach = gflops_of(path, input_size, ((view.exit, view.config),) if view.exit < n else (), view.exit)
        col.image(
            enlarge(colorize(view.labels, palette), 200),
            caption=f"exit {view.exit} · {reach.gflops:.3f} GFLOPs" + (" · leaves here" if view.exit == leave else ""),
        )

    st.subheader("Every exit")
    if label is not None:
        st.image(
            [enlarge(shown_rgb), enlarge(colorize(np.where(label == 255, -1, label), palette))],
            caption=["input", "ground truth"],
        )
    firings = exit_firings(views, th_img)
    for view, firing in zip(views, firings):
        head = (
            f"**exit {view.exit}** ({view.config}): c_img = {pct(view.c_img)} edge-masked, "
            f"{pct(view.c_img_plain)} plain"
            + (
                f"; th_img {firing.th_img:.2f}: {'fires' if firing.fires else 'does not fire'}"
                if firing.th_img is not None
                else ""
            )
        )
        st.markdown(head)
        st.image(
            [
                enlarge(colorize(view.labels, palette)),
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
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "exit": f.exit,
                    "config": f.config,
                    "c_img (edge-masked)": f.c_img,
                    "c_img (plain)": f.c_img_plain,
                    "th_img": f.th_img,
                    "fires": f.fires,
                }
                for f in firings
            ]
        ),
        hide_index=True,
        key="explorer_table",
    )

    # the maps are on the page first; timing the deployed network against the full model takes a few passes more
    measured = timing(
        path, f"{digest}-{input_size}", instance.describe() + f" s{edges.size} w{edges.window}", instance, x
    )
    timing_slot.metric(
        "measured, early exit",
        f"{measured.early_exit_ms:.1f} ms",
        f"{measured.speedup:.2f}x vs full {measured.full_ms:.1f} ms",
        delta_color="off",
        help="the deployed EarlyExitNet (it stops at the exit) and the original "
        "model's path, interleaved, median of 3 after a warm-up, batch 1, this machine",
    )
    if measured.exit != leave:
        warning_slot.warning(
            f"The deployed network left at exit {measured.exit}, the maps say {leave}: please report this."
        )
