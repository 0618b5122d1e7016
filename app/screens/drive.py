"""Drive: the current instance on a drive, frame by frame. Each frame runs alone (batch 1, as a camera would) through
the deployed early-exit module and through the original model, both timed here; the page shows the frame with its
prediction, the exit it took, its confidence at each kept exit, both latencies and the running saving, and a timeline
of every frame played so far where a click seeks."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import streamlit as st

from app import state
from app.boundaries import guarded, guarded_fragment
from app.consent import code_allowed, consented
from app.loaders import dataset_origin
from app.views.drive import RATES, DriveSource, frame_of_click, timeline_figure, totals_metrics
from app.views.upload import DatasetSource
from mess_core.data.frames import DatasetSequence, FrameError, GeneratedDrive, open_frames, sequences
from mess_core.data.registry import palette_for
from mess_core.deploy.annotate import annotate
from mess_core.deploy.drive import Driver, DriveTotals
from mess_core.errors import MessError
from mess_core.evaluate.instance import Instance
from mess_core.study import Study
from mess_core.study.config import StudyConfig

POSITION, PLAYING, PLAYED, SCRUB = "drive_position", "drive_playing", "drive_played", "drive_scrub"
VIDEO_TYPES = ["mp4", "avi", "webm", "mov", "mkv", "m4v"]
GENERATED = "a generated drive"


@st.cache_resource(show_spinner="Loading the network and the original model...", max_entries=4)
def driver(study_path: str, consent: bool, instance: Instance, _study: Study) -> Driver:
    net, meta, model = _study.load_network_and_model(consent=consent)
    return Driver(net, model, instance, ignore_index=int(meta.get("ignore_index", 255)))


@st.cache_resource(show_spinner=False, max_entries=4)
def drive_dataset(origin: DatasetSource, _study: Study) -> Any:
    """Every split of the study's dataset that is here, pooled (``StudyConfig.drive_dataset``); ``origin`` keys it."""
    return StudyConfig.from_dict(_study.manifest["config"]).drive_dataset(root=origin.root)


@st.cache_resource(show_spinner="Reading the frames...", max_entries=4)
def frames_of(study_path: str, source: DriveSource, size: tuple[int, int], _data: Any = None) -> tuple[list, list]:
    """(the frames, notices) of ``source`` at the network's input ``size``; ``_data``: the uploaded bytes or the
    dataset (not hashed: ``source`` names them)."""
    if source.kind == "generated":
        read = GeneratedDrive(size=size, shots=8, frames_per_shot=10, seed=0)
    elif source.kind == "sequence":
        read = DatasetSequence(_data, source.name, size=size)
    elif source.kind == "video":
        with tempfile.TemporaryDirectory(prefix="mess-drive-") as tmp:
            path = Path(tmp) / Path(source.name).name
            path.write_bytes(_data)
            read = open_frames(path, size=size)
            return read.read_all(), list(read.notices)
    else:
        read = open_frames(Path(source.name).expanduser(), size=size)
    return read.read_all(), list(read.notices)


def choose_source(study: Study) -> tuple[DriveSource, Any] | None:
    """The source the user picks: a sequence of the study's dataset where it is here, a generated drive, an uploaded
    video or a folder of frames."""
    origin = dataset_origin(study)
    here = origin.on_disk and origin.name != "synthetic" and isinstance(study.manifest.get("config"), dict)
    options = ([f"a sequence of {origin.name}"] if here else []) + [
        GENERATED,
        "a video file",
        "a folder of frames",
    ]
    kind = st.radio("play", options, horizontal=True, key="drive_kind")
    if kind.startswith("a sequence"):
        try:
            dataset = drive_dataset(origin, study)
        except MessError as exc:
            st.error(str(exc))
            return None
        names = list(sequences(dataset))
        tuned = origin.groups[0] if origin.groups and origin.groups[0] in names else names[0]
        name = st.selectbox(
            "sequence", names, index=names.index(tuned), key="drive_sequence", help="the study tuned on " + tuned
        )
        return DriveSource("sequence", name), dataset
    if kind == GENERATED:
        return DriveSource("generated", "generated"), None
    if kind == "a video file":
        upload = st.file_uploader("video", type=VIDEO_TYPES, key="drive_upload")
        if upload is None:
            return None
        data = upload.getvalue()
        return DriveSource("video", upload.name, hashlib.sha256(data).hexdigest()), data
    folder = st.text_input("folder of frame images", key="drive_folder", placeholder="~/drives/today")
    return (DriveSource("folder", folder), None) if folder else None


def _played(key: tuple) -> dict[int, Any]:
    held = st.session_state.get(PLAYED)
    if held is None or held[0] != key:
        held = (key, {})
        st.session_state[PLAYED] = held
        st.session_state[POSITION] = 0
    return held[1]


def _run(drive: Driver, frames: list, played: dict[int, Any], position: int) -> tuple[Any, Any]:
    if position not in played:
        played[position] = drive.run(frames[position])
    return played[position]


def _totals(played: dict[int, Any]) -> DriveTotals:
    totals = DriveTotals()
    for position in sorted(played):
        totals.add(played[position][0])
    return totals


def _seek() -> None:
    st.session_state[POSITION] = st.session_state[SCRUB]
    st.session_state[PLAYING] = False


def playback_controls(count: int) -> None:
    """Step, play or pause, the rate, and the scrubber. The frame shown is ``POSITION``, which playback advances
    from inside its fragment; the scrubber is a widget of its own, set from it before it is drawn and setting it
    back when moved (a widget's own key cannot change after it is drawn in a run)."""
    cols = st.columns([1, 1, 1, 2, 5])
    position = st.session_state.get(POSITION, 0)
    if cols[0].button("back", key="drive_back", disabled=position == 0):
        position = st.session_state[POSITION] = position - 1
        st.session_state[PLAYING] = False
    playing = st.session_state.get(PLAYING, False)
    if cols[1].button("pause" if playing else "play", key="drive_play", type="primary"):
        st.session_state[PLAYING] = not playing
        st.rerun()  # the fragment's timer follows the new state
    if cols[2].button("step", key="drive_step", disabled=position >= count - 1):
        position = st.session_state[POSITION] = position + 1
        st.session_state[PLAYING] = False
    cols[3].selectbox(
        "frames per second",
        RATES,
        index=RATES.index(10),
        key="drive_rate",
        help="The rate asked. Every frame runs the instance and the original model before it is drawn, so a machine "
        "that cannot keep up shows fewer, and asking for far more than it makes shows fewer still.",
    )
    st.session_state[SCRUB] = min(position, max(0, count - 1))
    cols[4].slider("frame", 0, max(1, count - 1), key=SCRUB, on_change=_seek, disabled=count < 2)


def show_frame(study: Study, drive: Driver, frames: list, played: dict[int, Any], palette: Any) -> None:
    """The current frame, its figures and the running totals; while playing, the next frame on the next tick."""
    position = min(st.session_state.get(POSITION, 0), len(frames) - 1)
    result, prediction = _run(drive, frames, played, position)
    totals = _totals(played)
    image = annotate(
        frames[position].rgb, prediction, result, totals, palette, kept=drive.kept, num_exits=drive.num_exits
    )
    left, right = st.columns([3, 2])
    # JPEG: Streamlit's PNG of a numpy frame costs ~25 ms a frame, a tenth of the page's budget at 10 frames/s
    caption = f"frame {position + 1} of {len(frames)}: {result.name}"
    left.image(image, caption=caption, width="stretch", output_format="JPEG")
    playing = st.session_state.get(PLAYING)
    if playing:  # the browser's work per frame grows with every element redrawn: the frame carries its own figures
        right.caption(
            "Playing: the frame shows the exit it took, c_img at each kept exit, both latencies and the saving so "
            "far. Pause for the figures, the running totals and the timeline."
        )
    else:
        frame_figures(right, drive, result, totals)
    if playing and position < len(frames) - 1:
        st.session_state[POSITION] = position + 1
    elif playing:
        st.session_state[PLAYING] = False


def frame_figures(column: Any, drive: Driver, result: Any, totals: DriveTotals) -> None:
    """The frame's exit, latency, agreement, mIoU and confidences in ``column``; the running totals under it."""
    final = result.exit == drive.num_exits
    column.metric("exit taken", f"exit {result.exit}" + (" (final)" if final else f" of {drive.num_exits}"))
    column.metric(  # less time than the original is the good direction
        "latency", f"{result.ms:.1f} ms", f"{result.ms - result.original_ms:+.1f} ms vs original", delta_color="inverse"
    )
    column.metric("agrees with the original model", f"{100 * result.agreement:.1f}% of pixels")
    if result.miou is not None:
        column.metric(
            "mIoU against the labels", f"{100 * result.miou:.1f}%", f"original {100 * result.original_miou:.1f}%"
        )
    confidences = ", ".join(
        f"exit {e}: {'-' if c != c else f'{c:.2f}'} (th {k.th_img:.2f})"
        for e, c, k in zip(drive.kept, result.c_img, drive.instance.exits)
    )
    column.caption(f"c_img at the kept exits: {confidences}")
    cols = st.columns(4)
    for col, (label, value) in zip(cols, totals_metrics(totals).items()):
        col.metric(label, value)


def timeline(drive: Driver, played: dict[int, Any]) -> None:
    if not played:
        return
    positions = sorted(played)
    results = [played[p][0] for p in positions]
    current = st.session_state.get(POSITION, 0)
    figure = timeline_figure(
        results, num_exits=drive.num_exits, current=positions.index(current) if current in played else None
    )
    event = st.plotly_chart(figure, on_select="rerun", selection_mode="points", key="drive_timeline")
    chosen = frame_of_click(event)
    if chosen is not None and positions[chosen] != current:
        st.session_state[POSITION] = positions[chosen]
        st.session_state[PLAYING] = False
        st.rerun()


@guarded
def page(study: Study) -> None:
    st.title("Drive")
    instance, where = state.current(study)
    if instance is None or instance.mode != "input-dependent" or not instance.exits:
        st.info(
            "A drive shows per-frame early exit: choose an input-dependent instance with early exits on the "
            "Thresholds or Pareto page."
        )
        return
    st.caption(f"Instance: {instance.describe()} ({where})")
    if not code_allowed(study, where="drive"):
        return
    chosen = choose_source(study)
    if chosen is None:
        return
    source, data = chosen
    size = tuple(int(s) for s in study.cache.meta["input_size"])
    try:
        frames, notices = frames_of(str(study.path), source, size, data)
    except (FrameError, MessError) as exc:
        st.error(str(exc))
        return
    for notice in notices:
        st.warning(notice)
    drive = driver(str(study.path), consented(str(study.path)), instance, study)
    played = _played((source, instance))
    palette = palette_for(str(study.cache.meta.get("dataset", "")), study.cache.num_classes)
    playback_controls(len(frames))
    every = 1.0 / st.session_state.get("drive_rate", 10) if st.session_state.get(PLAYING) else None
    guarded_fragment(show_frame, run_every=every)(study, drive, frames, played, palette)
    if st.button(f"play every frame now ({len(frames) - len(played)} left)", key="drive_all"):
        bar = st.progress(0.0)
        for position in range(len(frames)):
            _run(drive, frames, played, position)
            bar.progress((position + 1) / len(frames))
        st.rerun()
    timeline(drive, played)
