"""Early exit on a drive: frames read from videos made here with OpenCV, folders and generated drives; the exit each
frame takes equals the deployed runtime's on the whole batch and the evaluation cache's on the same frames; bad
videos get one message; the annotated video and its CSV appear whole or not at all."""

from __future__ import annotations

import csv
import struct
import zlib

import cv2
import numpy as np
import pytest
import torch

from mess_core.cli import main
from mess_core.data.frames import DatasetSequence, FrameDataset, FrameError, GeneratedDrive, open_frames, sequences
from mess_core.data.synthetic import SYNTHETIC_INFO
from mess_core.data.transforms import frame_tensor
from mess_core.deploy.annotate import AnnotatedVideo
from mess_core.deploy.drive import Driver, DriveTotals
from mess_core.deploy.runtime import deploy
from mess_core.errors import MessError
from mess_core.evaluate.cache_build import build_cache
from mess_core.evaluate.instance import evaluate
from mess_core.search.report import Row
from mess_core.study import open_study
from mess_core.study.config import StudyConfig
from tests.paths import PRECOMPUTED, SHOTS

SYNTHETIC = PRECOMPUTED / "synthetic-mobilenetv2-fcn"
CAMVID = PRECOMPUTED / "camvid-mobilenetv2-fcn"


def write_video(path, frames: int = 12, size=(48, 64), fourcc: str = "MJPG") -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(frames):
        image = np.full((*size, 3), 20 * (i % 10), np.uint8)
        image[:, (5 * i) % size[1] :][:, :8] = (255, 200, 0)  # a bar that moves
        writer.write(image)
    writer.release()


@pytest.fixture(scope="module")
def study():
    return open_study(SYNTHETIC)


@pytest.fixture(scope="module")
def drive(study):
    """The shipped synthetic study's <= 1 pp instance over a generated drive, frame by frame."""
    net, meta, model = study.load_network_and_model()
    instance = study.results("input-dependent").set_index("id").loc[Row.MIN_COST_1PP, "instance"]
    size = tuple(study.cache.meta["input_size"])
    frames = GeneratedDrive(size=size, shots=4, frames_per_shot=2, seed=1).read_all()
    driver = Driver(net, model, instance, warmup=0)
    runs = [driver.run(f) for f in frames]
    return net, instance, frames, runs


def test_each_frame_leaves_where_the_runtime_and_the_cache_send_it(drive):
    net, instance, frames, runs = drive
    exits = [r.exit for r, _ in runs]
    assert len(set(exits)) > 1, "the drive should mix exits, or this test checks little"
    with torch.no_grad():
        logits, taken = deploy(net, instance)(torch.cat([frame_tensor(f.rgb) for f in frames]))
    assert taken.tolist() == exits  # alone (batch 1) as in a batch with compaction
    for (result, prediction), row in zip(runs, logits):
        assert np.array_equal(prediction, row.argmax(0).numpy())
    cache = build_cache(net, FrameDataset(frames, SYNTHETIC_INFO), model="m", dataset_name="synthetic", split="drive")
    assert evaluate(cache, instance).exit_left_at.tolist() == exits


def test_frame_results_say_what_each_frame_did(drive):
    net, instance, frames, runs = drive
    kept = [e.exit for e in instance.exits]
    totals = DriveTotals()
    for result, _ in runs:
        totals.add(result)
        reached = [c for e, c in zip(kept, result.c_img) if e <= result.exit]
        assert (
            not np.isnan(reached).any() and np.isnan([c for e, c in zip(kept, result.c_img) if e > result.exit]).all()
        )
        left_at = kept.index(result.exit) if result.exit in kept else None
        if left_at is not None:  # it left where its confidence first met the threshold
            assert result.c_img[left_at] >= instance.exits[left_at].th_img
        before = left_at if left_at is not None else len(kept)  # every exit it passed did not fire
        assert all(c < e.th_img for c, e in zip(result.c_img[:before], instance.exits))
        assert result.gflops <= result.original_gflops + 1e-9 or result.exit == net.num_exits
        assert 0.0 <= result.agreement <= 1.0 and result.miou is not None and result.ms > 0
        if result.exit == net.num_exits:
            assert result.agreement == 1.0  # the final exit is the original model's own output
    assert totals.frames == len(frames) and sum(totals.exits.values()) == len(frames)
    assert totals.gflops_saved == pytest.approx(sum(r.original_gflops - r.gflops for r, _ in runs))


def test_a_video_made_here_is_read_in_order_at_the_network_size(tmp_path):
    path = tmp_path / "drive.avi"
    write_video(path, frames=12)
    source = open_frames(path, size=(24, 32))
    frames = source.read_all()
    assert len(source) == len(frames) == 12 and source.notices == [] and source.fps == 10.0
    assert frames[0].rgb.shape == (24, 32, 3) and frames[5].index == 5 and frames[0].labels is None
    limited = open_frames(path, size=(24, 32), max_frames=5)
    assert len(limited.read_all()) == 5 and "only the first 5" in limited.notices[0]


def test_a_truncated_video_keeps_the_frames_before_the_damage(tmp_path):
    path = tmp_path / "drive.avi"
    write_video(path, frames=20)
    data = path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) * 2 // 3])
    source = open_frames(cut, size=(24, 32))
    assert 0 < len(source) < 20 and "truncated or damaged" in source.notices[0]
    assert len(source.read_all()) == len(source)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and holds no pixels: what a frame too large to decode looks like
    to the check that reads headers only."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "case, message",
    [
        ("junk", "OpenCV cannot open this video"),
        ("empty", "the file is empty"),
        ("image", "one image, not a drive"),
        ("missing", "no such video file or folder"),
        ("sizes", "the frames of one drive share one size"),
        ("huge", "megapixels at most"),
        ("large", "megapixels at most"),
        ("no frames", "holds no frame images"),
    ],
)
def test_bad_drives_get_one_message_naming_the_file(tmp_path, case, message):
    target = tmp_path / "in"
    if case == "junk":
        target = tmp_path / "junk.mp4"
        target.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif case == "empty":
        target = tmp_path / "empty.mp4"
        target.write_bytes(b"")
    elif case == "image":
        target = tmp_path / "one.png"
        cv2.imwrite(str(target), np.zeros((8, 8, 3), np.uint8))
    elif case == "sizes":
        target.mkdir()
        cv2.imwrite(str(target / "f_001.png"), np.zeros((8, 8, 3), np.uint8))
        cv2.imwrite(str(target / "f_002.png"), np.zeros((8, 10, 3), np.uint8))
    elif case in ("huge", "large"):  # past Pillow's own refusal, and past ours but short of Pillow's
        target.mkdir()
        (target / "f_001.png").write_bytes(_png_header(20000, 10000) if case == "huge" else _png_header(12000, 10000))
    elif case == "no frames":
        target.mkdir()
        (target / "notes.txt").write_text("x")
    with pytest.raises(FrameError, match=message) as caught:
        source = open_frames(target, size=(24, 32))
        source.read_all()
    assert target.name in str(caught.value)


def test_an_interrupted_video_leaves_nothing_and_an_existing_one_is_kept(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with AnnotatedVideo(out, fps=10, size=(32, 48)) as video:
            video.write(np.zeros((32, 48, 3), np.uint8))
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"mine")
    with pytest.raises(Exception, match="exists"):
        AnnotatedVideo(out, fps=10, size=(32, 48))
    assert out.read_bytes() == b"mine"


def test_the_drive_command_writes_the_video_and_one_csv_row_per_frame(tmp_path, capsys, drive):
    net, instance, _, _ = drive
    video = tmp_path / "in.avi"
    write_video(video, frames=4, size=(60, 80))
    out, table = tmp_path / "out.mp4", tmp_path / "frames.csv"
    args = [str(SYNTHETIC), "--row", "min_cost_1pp", "--input", str(video), "--out", str(out), "--csv", str(table)]
    assert main(["drive", *args]) == 0
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 4 and {f"c_img_exit{e.exit}" for e in instance.exits} <= set(rows[0])
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    assert "4 frames" in capsys.readouterr().out
    assert main(["drive", *args]) == 2  # the outputs exist now: refused, kept
    assert len(list(csv.DictReader(table.open()))) == 4


def test_the_drive_command_on_the_shipped_study_exits_where_the_runtime_does(tmp_path):
    """The app's default study on frames of its tuning drive, where the dataset is on this machine: the command's
    exit per frame is the deployed runtime's on the same frames, and the study's cache's on the frames it holds;
    three of its frames, one per exit taken where the drive has several, are the README's picture of an annotated
    video."""
    study = open_study(CAMVID)
    size = tuple(int(s) for s in study.cache.meta["input_size"])
    try:
        dataset = StudyConfig.from_dict(study.manifest["config"]).drive_dataset()
    except MessError as exc:
        pytest.skip(f"the study's dataset is not on this machine: {exc}")
    name = (study.cache.meta.get("groups") or list(sequences(dataset)))[0]
    out, table = tmp_path / "drive.mp4", tmp_path / "frames.csv"
    args = [str(CAMVID), "--row", "min_cost_1pp", "--sequence", name, "--max-frames", "24"]
    assert main(["drive", *args, "--out", str(out), "--csv", str(table)]) == 0
    exits = [int(row["exit"]) for row in csv.DictReader(table.open())]
    frames = DatasetSequence(dataset, name, size=size, max_frames=24).read_all()
    net, _, _ = study.load_network_and_model()
    instance = study.results("input-dependent").set_index("id").loc[Row.MIN_COST_1PP, "instance"]
    with torch.no_grad():
        _, taken = deploy(net, instance)(torch.cat([frame_tensor(f.rgb) for f in frames]))
    assert taken.tolist() == exits and len(exits) == 24
    # a frame of the drive that is an image of the study's cache is that image, bit for bit (one resize, one
    # normalisation): it exits where the cache, and so every figure of the study, says it does
    cached = {image: i for i, image in enumerate(study.cache.meta["images"])}
    shared = [(k, cached[f.name]) for k, f in enumerate(frames) if f.name in cached]
    left_there = evaluate(study.cache, instance).exit_left_at
    assert shared and [exits[k] for k, _ in shared] == [left_there[i] for _, i in shared]
    capture = cv2.VideoCapture(str(out))
    pictures = []
    for index in range(len(exits)):
        ok, image = capture.read()
        assert ok, f"frame {index} of the annotated video cannot be read"
        pictures.append(image)
    shown = [exits.index(e) for e in dict.fromkeys(exits)]  # the first frame to take each exit
    shown = (shown + [i for i in (0, len(exits) // 2, len(exits) - 1) if i not in shown])[:3]
    SHOTS.mkdir(parents=True, exist_ok=True)
    strip = cv2.hconcat([pictures[i] for i in sorted(shown)])
    width = min(strip.shape[1], 1440)  # the README's width; a smaller file
    strip = cv2.resize(strip, (width, round(strip.shape[0] * width / strip.shape[1])), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(SHOTS / "drive-frames.png"), strip)


def test_a_sequence_of_a_dataset_that_is_not_here_says_what_to_pass(tmp_path, capsys):
    out = tmp_path / "out.mp4"
    args = [str(CAMVID), "--row", "min_cost_1pp", "--sequence", "0006R0", "--out", str(out)]
    assert main(["drive", *args, "--data-root", str(tmp_path / "nowhere")]) == 2
    message = capsys.readouterr().err
    assert "'camvid' is not on this machine" in message and "--data-root" in message and "nowhere" in message
    assert not out.exists()
