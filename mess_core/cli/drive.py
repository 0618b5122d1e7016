"""``drive``: a study's instance on a drive, frame by frame, as an annotated video and a per-frame CSV.

    python -m mess_core drive STUDY (--instance FILE | --row ID) (--input VIDEO_OR_FOLDER | --sequence NAME)
        --out OUT.mp4 [--csv FRAMES.csv] [--engine torch|onnx] [--max-frames N] [--scale K]

Each frame runs alone (batch 1, as a camera would) through the deployed input-dependent instance and through the
original model (:class:`mess_core.deploy.drive.Driver`); the video shows the prediction, the exit taken, the image
confidence at each kept exit and the running saving (:mod:`mess_core.deploy.annotate`). ``--sequence`` reads a
sequence of the study's own dataset (where it is on this machine), labels included, so the CSV also has each frame's
mIoU. ``--engine onnx`` runs the instance's exported ONNX files through onnxruntime and times the PyTorch instance
beside it. Every check runs before the first frame; the video and the CSV appear only once complete (Ctrl-C leaves
neither).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..data.frames import MAX_FRAMES, DatasetSequence, FrameError, FrameSource, open_frames, sequences
from ..data.registry import palette_for
from ..deploy.annotate import VIDEO_CODECS, AnnotatedVideo, annotate, frames_csv, readable_scale
from ..deploy.drive import ENGINES, Driver, DriveTotals
from ..deploy.runtime import check_instance
from ..errors import MessError
from ..evaluate.instance import InstanceError
from ..io import expand_home
from ..search.report import Row
from ..study import open_study
from ..study.config import StudyConfig
from .args import add_trust, declare_files, output_file, positive_int
from .export import chosen_instance

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    d = sub.add_parser(
        "drive",
        help="run a study's instance on a video, frame by frame, into an annotated video and a per-frame CSV",
        description="Early exit on a drive: every frame through the deployed instance and the original model, "
        "timed on this machine, written as an annotated video (and a CSV of every frame).",
    )
    d.add_argument("study", help="study folder (precomputed/<name>) or run folder")
    which = d.add_mutually_exclusive_group(required=True)
    which.add_argument("--instance", metavar="FILE", help="an input-dependent instance JSON (the app's Pareto page)")
    which.add_argument("--row", choices=[r.value for r in Row], help="a row of the study's input-dependent table")
    source = d.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="VIDEO_OR_FOLDER", help="a video file or a folder of frame images")
    source.add_argument(
        "--sequence", metavar="NAME", help="a sequence of the study's dataset (e.g. CamVid's 0006R0), with labels"
    )
    d.add_argument("--out", required=True, type=output_file, help=f"video to write ({', '.join(VIDEO_CODECS)})")
    d.add_argument("--csv", type=output_file, metavar="FRAMES.csv", help="also write one row per frame")
    d.add_argument("--engine", choices=ENGINES, default="torch", help="what runs the instance (default: torch)")
    d.add_argument(
        "--max-frames", type=positive_int, default=MAX_FRAMES, help=f"read at most this many (default {MAX_FRAMES})"
    )
    d.add_argument(
        "--scale", type=positive_int, help="video size over the network's input (default: at least 640 pixels wide)"
    )
    d.add_argument("--data-root", help="where the study's dataset lives on this machine (default: its data_root)")
    add_trust(d)
    declare_files(d, reads=("study", "instance", "input"), writes=("out", "csv"))
    d.set_defaults(run=run)


def _dataset_sequence(study: Any, name: str, size: tuple[int, int], root: str | None, limit: int) -> FrameSource:
    config = study.manifest.get("config")
    if not isinstance(config, dict):
        raise FrameError(f"study {study.name}: records no dataset to read sequence {name!r} from; use --input")
    try:
        dataset = StudyConfig.from_dict(config).drive_dataset(root=root)
    except MessError as exc:
        raise FrameError(f"study {study.name}: {exc}, or use --input with a video") from None
    if name not in sequences(dataset):
        raise FrameError(
            f"sequence {name!r} is not in study {study.name}'s dataset; it has {', '.join(sequences(dataset))}"
        )
    return DatasetSequence(dataset, name, size=size, max_frames=limit)


def _check_outputs(args: argparse.Namespace) -> None:
    for flag, value in (("--out", args.out), ("--csv", args.csv)):
        if value is not None and expand_home(value, MessError).exists():
            raise MessError(f"{flag} {value}: exists; choose a new file or remove this one first")


def run(args: argparse.Namespace) -> int:
    _check_outputs(args)
    study = open_study(args.study)
    instance, where = chosen_instance(study, file=args.instance, row=args.row, mode="input-dependent")
    net, meta, model = study.load_network_and_model(consent=args.trust_model_code)
    try:
        check_instance(net, instance)
    except InstanceError as exc:
        raise InstanceError(f"{where}: does not fit study {study.name}: {exc}") from None
    size = tuple(int(s) for s in (study.cache.meta.get("input_size") or net.example_shape[1:]))
    if args.sequence is not None:
        source = _dataset_sequence(study, args.sequence, size, args.data_root, args.max_frames)
    else:
        source = open_frames(expand_home(args.input, MessError), size=size, max_frames=args.max_frames)
    for notice in source.notices:
        print(f"note: {notice}")
    driver = Driver(net, model, instance, engine=args.engine, ignore_index=int(meta.get("ignore_index", 255)))
    palette = palette_for(str(meta.get("dataset", "")), net.num_classes)
    kept = tuple(e.exit for e in instance.exits)
    print(f"study {study.name}: {instance.describe()} (from {where}) on {source.name}, {len(source)} frames")
    totals, results = DriveTotals(), []
    out = expand_home(args.out, MessError)
    scale = args.scale or readable_scale(size[1])
    with AnnotatedVideo(out, fps=source.fps, size=(size[0] * scale, size[1] * scale)) as video:
        for frame in source.frames():
            result, prediction = driver.run(frame)
            totals.add(result)
            results.append(result)
            video.write(
                annotate(
                    frame.rgb, prediction, result, totals, palette, kept=kept, num_exits=net.num_exits, scale=args.scale
                )
            )
            _progress(totals, len(source))
        video.close()
    print(file=sys.stderr)
    if args.csv is not None:
        frames_csv(expand_home(args.csv, MessError), results, kept)
    _summary(totals, out, args, net.num_exits)
    return 0


def _progress(totals: DriveTotals, total: int) -> None:
    done = totals.frames
    bar = "#" * (30 * done // max(1, total))
    print(
        f"\r[{bar:<30}] {done}/{total} frames, {totals.fps:.1f} fps (original {totals.original_fps:.1f})",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _summary(totals: DriveTotals, out: Any, args: argparse.Namespace, num_exits: int) -> None:
    exits = ", ".join(f"exit {e}: {n}" for e, n in sorted(totals.exits.items()))
    print(f"wrote {out}" + (f" and {args.csv}" if args.csv else ""))
    print(
        f"{totals.frames} frames ({exits}; exit {num_exits} is the final one): {totals.ms / 1000:.2f} s "
        f"against {totals.original_ms / 1000:.2f} s for the original model ({totals.speedup:.2f}x, model time "
        f"alone, engine {args.engine}); {totals.gflops_saved:.1f} GFLOPs saved"
    )
