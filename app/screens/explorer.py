"""Confidence explorer: one image through every exit: prediction, per-pixel confidence, edge mask M and the
edge-masked confidence side by side, where the image leaves under the chosen thresholds, what that saves (counted
and measured), and the anytime strip."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import streamlit as st

from app.common import REPO, guarded, load_network, pct, results
from mess_core.data import build_dataset
from mess_core.errors import MessError
from mess_core.explore import (colorize, decode_image, exit_taken, exit_views, heatmap, instance_from_settings,
                               measure_early_exit, palette_for, path_gflops, run_exits, to_input)
from mess_core.policy import EdgeMasking
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


def dataset_spec(study: Study) -> tuple[str, str | None, dict[str, Any], str]:
    config = study.manifest.get("config") or {}
    meta = study.cache.meta
    root = config.get("data_root")
    if root is not None and not Path(root).is_absolute():
        root = str(REPO / root)
    return meta.get("dataset", "synthetic"), root, dict(config.get("data_options") or {}), meta.get("split", "val")


@st.cache_resource(show_spinner=False, max_entries=4)
def dataset_of(name: str, root: str | None, options: tuple, split: str) -> Any:
    return build_dataset(name, root=root, split=split, **dict(options))


def load_sample(dataset: Any, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    image, label = dataset.load(index)
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy()), label.numpy()


@st.cache_resource(show_spinner="Running every exit...", max_entries=12)
def infer(study_path: str, digest: str, configs: tuple[tuple[int, str], ...], _x: Any) -> tuple[dict, float]:
    net, _ = load_network(study_path)
    return run_exits(net, _x, dict(configs))


@st.cache_data(show_spinner=False, max_entries=64)
def gflops_of(study_path: str, size: tuple[int, int], kept: tuple[tuple[int, str], ...], leave_at: int
              ) -> tuple[float, float]:
    net, _ = load_network(study_path)
    return path_gflops(net, size, dict(kept), leave_at)


@st.cache_resource(show_spinner="Timing the early-exit network against the full model...", max_entries=32)
def timing(study_path: str, digest: str, description: str, _instance: Any, _x: Any) -> dict:
    net, _ = load_network(study_path)
    return measure_early_exit(net, _instance, _x, repeats=3)


def pick_image(study: Study) -> tuple[np.ndarray, np.ndarray | None, str] | None:
    """(RGB uint8, ground truth or None, a digest naming the pixels), or None with a message."""
    name, root, options, split = dataset_spec(study)
    has_files = name == "synthetic" or (root is not None and Path(root).is_dir())
    sources = SOURCES if has_files else SOURCES[1:]
    if not has_files:
        st.caption(f"The study's dataset ({name} at {root}) is not on this machine: pick a generated sample or "
                   "upload an image.")
    source = st.radio("image", sources, horizontal=True, key="explorer_source")
    if source == "dataset image":
        dataset = dataset_of(name, root, tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                                      for k, v in options.items())), split)
        index = st.slider(f"{name} {split} image", 0, len(dataset) - 1, 0, key="explorer_index")
        rgb, label = load_sample(dataset, index)
        return rgb, label, f"{name}-{split}-{index}"
    if source == "generated synthetic sample":
        size = tuple(study.cache.meta.get("input_size", (120, 160)))
        seed = st.number_input("scene seed", 0, 10_000, 7, key="explorer_seed")
        dataset = build_dataset("synthetic", split="test", seed=int(seed), length=1, size=size)
        rgb, label = load_sample(dataset, 0)
        if label is not None and study.cache.num_classes != dataset.info.num_classes:
            label = None  # synthetic classes mean nothing to another dataset's network
        return rgb, label, f"synthetic-{seed}-{size}"
    upload = st.file_uploader("an image (PNG, JPEG, BMP, TIFF, WebP; any size, 8 or 16 bit, gray, RGB or RGBA)",
                              key="explorer_upload")
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


def default_settings(study: Study) -> tuple[dict[int, str], dict[int, float], float]:
    """Configurations per exit and kept thresholds of the study's searched instance (MESS <= 1 pp), other exits with
    their most accurate configuration."""
    cache = study.cache
    shipped = shipped_heads(study)
    miou = cache.head_miou()[:-1].reshape(cache.num_exits - 1, len(cache.configs))
    configs = {i: max(shipped[i], key=lambda c: miou[i - 1, cache.config_index(c)]) for i in range(1, cache.num_exits)}
    table = results(str(study.path), "input-dependent")
    chosen = table.loc[table["row"] == "MESS min-cost <= 1pp drop", "instance"]
    th_img, th_pix = {}, 0.8
    if len(chosen) and chosen.iloc[0] is not None:
        inst = chosen.iloc[0]
        th_pix = inst.policy.th_pix
        for e in inst.exits:
            if e.config in shipped[e.exit]:
                configs[e.exit] = e.config
                th_img[e.exit] = float(e.th_img)
    return configs, th_img, th_pix


def shipped_heads(study: Study) -> dict[int, list[str]]:
    """The configurations whose weights the study ships at each exit (a study may leave heavy heads out where no
    instance uses them; their figures stay in the cache)."""
    net, _ = load_network(str(study.path))
    return {i: list(net.heads[str(i)].keys()) for i in range(1, net.num_exits)}


def settings(study: Study) -> tuple[dict[int, str], dict[int, float], float, EdgeMasking, bool]:
    cache = study.cache
    configs0, th_img0, th_pix0 = default_settings(study)
    with st.expander("exit settings", expanded=True):
        top = st.columns(4)
        th_pix = top[0].slider("th_pix (pixel confidence threshold)", 0.50, 0.99, float(th_pix0), 0.01,
                               key="explorer_th_pix")
        size = top[1].select_slider("edge width s", [1, 3, 5, 7, 9], 3, key="explorer_s")
        window = top[2].select_slider("median window w", [3, 5, 7, 9, 11], 7, key="explorer_w")
        native = top[3].toggle("run at the image's own size", False, key="explorer_native",
                               help="off: resize to the study's input size, as the exits were trained")
        cols = st.columns(cache.num_exits - 1)
        configs, th_img = {}, {}
        shipped = shipped_heads(study)
        for i, col in enumerate(cols, start=1):
            configs[i] = col.selectbox(f"exit {i}", shipped[i], index=shipped[i].index(configs0[i]),
                                       key=f"explorer_cfg_{i}", help="configurations whose weights the study ships")
            if col.checkbox("kept", i in th_img0, key=f"explorer_keep_{i}"):
                th_img[i] = col.slider("th_img", 0.0, 1.0, th_img0.get(i, 0.8), 0.01, key=f"explorer_th_img_{i}")
    return configs, th_img, th_pix, EdgeMasking(size=size, window=window), native


@guarded
def page(study: Study) -> None:
    st.title("Confidence explorer")
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
    shown_rgb = rgb if tuple(rgb.shape[:2]) == input_size else cv2.resize(rgb, input_size[::-1],
                                                                            interpolation=cv2.INTER_AREA)
    palette = palette_for(study.cache.meta.get("dataset", ""), study.cache.num_classes)

    leave = exit_taken(views, th_img)
    kept = {i: configs[i] for i in th_img}
    cost, full = gflops_of(path, input_size, tuple(sorted(kept.items())), leave)
    instance = instance_from_settings("input-dependent", th_img, configs, th_pix=th_pix, edges=edges)
    n = study.cache.num_exits
    m = st.columns(5)
    m[0].metric("leaves at", f"exit {leave}" if leave < n else f"final exit ({n})")
    saved = 1 - cost / full
    m[1].metric("GFLOPs", f"{cost:.3f}", (f"{100 * saved:.0f}% saved" if saved >= 0 else f"{-100 * saved:.0f}% more")
                + f" vs the full {full:.3f}", delta_color="off",
                help="stages to the exit it leaves at, plus every kept head on the way")
    timing_slot = m[2].empty()
    timing_slot.metric("measured, early exit", "timing...")
    m[3].metric("every exit, once", f"{1e3 * seconds:.0f} ms", f"{input_size[0]}x{input_size[1]}", delta_color="off")
    m[4].metric("kept exits", ", ".join(map(str, sorted(th_img))) or "none")
    warning_slot = st.empty()

    st.subheader("Anytime: the prediction refining exit by exit")
    strip = st.columns(len(views) + 1)
    strip[0].image(enlarge(shown_rgb, 200), caption="input")
    for col, view in zip(strip[1:], views):
        reach, _ = gflops_of(path, input_size, ((view.exit, view.config),) if view.exit < n else (), view.exit)
        col.image(enlarge(colorize(view.labels, palette), 200),
                  caption=f"exit {view.exit} · {reach:.3f} GFLOPs" + (" · leaves here" if view.exit == leave else ""))

    st.subheader("Every exit")
    if label is not None:
        st.image([enlarge(shown_rgb), enlarge(colorize(np.where(label == 255, -1, label), palette))],
                 caption=["input", "ground truth"])
    rows = []
    for view in views:
        fires = view.exit in th_img and view.c_img >= th_img[view.exit]
        head = (f"**exit {view.exit}** ({view.config}): c_img = {pct(view.c_img)} edge-masked, "
                f"{pct(view.c_img_plain)} plain"
                + (f"; th_img {th_img[view.exit]:.2f}: {'fires' if fires else 'does not fire'}"
                   if view.exit in th_img else ""))
        st.markdown(head)
        st.image([enlarge(colorize(view.labels, palette)), enlarge(heatmap(view.confidence)),
                  enlarge((view.edge_mask * 255).astype(np.uint8)), enlarge(heatmap(view.masked_confidence))],
                 caption=["prediction", "pixel confidence", f"edge mask M (s={edges.size})",
                          f"edge-masked confidence (w={edges.window})"])
        rows.append({"exit": view.exit, "config": view.config, "c_img (edge-masked)": view.c_img,
                     "c_img (plain)": view.c_img_plain, "th_img": th_img.get(view.exit), "fires": fires})
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="explorer_table")

    # the maps are on the page first; timing the deployed network against the full model takes a few passes more
    measured = timing(path, f"{digest}-{input_size}", instance.describe() + f" s{edges.size} w{edges.window}",
                      instance, x)
    timing_slot.metric("measured, early exit", f"{measured['early_exit_ms']:.1f} ms",
                       f"{measured['full_ms'] / measured['early_exit_ms']:.2f}x vs full {measured['full_ms']:.1f} ms",
                       delta_color="off", help="the deployed EarlyExitNet (it stops at the exit) and the original "
                       "model's path, interleaved, median of 3 after a warm-up, batch 1, this machine")
    if measured["exit"] != leave:
        warning_slot.warning(f"The deployed network left at exit {measured['exit']}, the maps say {leave}: "
                             "please report this.")
