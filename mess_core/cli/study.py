"""``study build|check|report|evaluate``: build a study end to end from a YAML file, check one, print its tables, or
score every row of it, as shipped, on your own labelled images."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..io import atomic_write_text
from ..search.heldout import evaluation_markdown
from ..study import STAGES, build, open_study
from ..study.evaluate import EvaluationData, evaluate_on, evaluation_dataset, evaluation_record
from ..study.report import markdown_report
from .args import add_data_option, add_selection, add_trust, declare_files, folder, output_file, positive_int


def add_parser(sub: Any) -> None:
    st = sub.add_parser("study", help="build a study end to end from a YAML file, or check one")
    ssub = st.add_subparsers(dest="study_command", required=True)
    b = ssub.add_parser("build", help="train, evaluate, search and pack a study (resumable)")
    b.add_argument("config", help="the study's YAML file (e.g. studies/synthetic-mobilenetv2-fcn.yaml)")
    b.add_argument("--work", type=folder, help="folder for training runs and caches (default runs/<name>)")
    b.add_argument("--out", type=folder, help="study folder to write (default precomputed/<name>)")
    b.add_argument("--stop-after", choices=STAGES, help="stop after this training stage (continue later)")
    declare_files(b, reads=("config",), writes=("work", "out"))
    b.set_defaults(run=_build)
    c = ssub.add_parser("check", help="check a study's files against its manifest")
    c.add_argument("study", help="study folder")
    c.set_defaults(run=_check)
    r = ssub.add_parser(
        "report", help="print a study's tables (end to end with measured latency, modes, training) as markdown"
    )
    r.add_argument("study", help="study folder")
    r.set_defaults(run=_report)
    e = ssub.add_parser(
        "evaluate",
        help="every row of a study, as shipped, on your own labelled images: mIoU, drop "
        "with its interval, speedup, where images leave, and whether each promise held",
    )
    e.add_argument("study", help="study folder")
    e.add_argument("--data", help="dataset (synthetic, camvid, cityscapes, voc or folder; default: the study's)")
    e.add_argument("--data-root", help="dataset folder (default: the study's, when --data is its dataset)")
    add_data_option(e)
    add_selection(
        e,
        default=None,
        default_help="the study's report split and groups on its own images (CamVid: test, Seq05VD), else test "
        "(a folder dataset without splits: the folder itself)",
    )
    e.add_argument("--limit", type=positive_int, help="only the first N images")
    e.add_argument("--batch-size", type=positive_int, default=8)
    e.add_argument("--json", type=output_file, help="also write every row's figures as JSON here")
    e.add_argument(
        "--cache",
        type=output_file,
        help="also keep the evaluation cache here (.npz; the app shows it beside the tuning split)",
    )
    add_trust(e)
    declare_files(e, reads=("study",), writes=("json", "cache"))
    e.set_defaults(run=_evaluate)


def _build(args: argparse.Namespace) -> int:
    build(args.config, work=args.work, out=args.out, stop_after=args.stop_after, log=lambda msg: print(msg, flush=True))
    return 0


def _check(args: argparse.Namespace) -> int:
    study = open_study(args.study)
    problems = study.verify()
    for line in problems:
        print(f"  problem: {line}")
    print(f"{study.path}: {len(study.manifest.get('files', {}))} files, {len(problems)} problem(s)")
    return 1 if problems else 0


def _report(args: argparse.Namespace) -> int:
    study = open_study(args.study)
    print(markdown_report(study))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    study = open_study(args.study)
    wanted = EvaluationData(args.split, tuple(args.groups), args.data, args.data_root, dict(args.data_option))
    dataset, data, notes = evaluation_dataset(study, wanted, limit=args.limit)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    print(f"study {study.name} on {data.describe()}: {count} images", flush=True)
    for note in notes:
        print(f"note: {note}")
    cache, rows = evaluate_on(
        study, dataset, data, batch_size=args.batch_size, limit=args.limit, consent=args.trust_model_code
    )
    print(f"backbone (final exit) mIoU {100 * cache.head_miou()[cache.final_head]:.2f}% on these images\n")
    print(evaluation_markdown(rows, title=f"study {study.name}, as shipped, on {data.describe()} ({count} images)"))
    held = rows["held"].dropna()
    print(f"\n{int(held.sum())} of {len(held)} promises held on these images")
    if args.json:
        atomic_write_text(args.json, json.dumps(evaluation_record(study, cache, rows, data, notes), indent=1))
        print(f"wrote {args.json}")
    if args.cache:
        cache.save(args.cache)
        print(f"wrote {args.cache}")
    return 0
