"""``study build|check|report``: build a study end to end from a YAML file, check one, or print its tables."""

from __future__ import annotations

import argparse
from typing import Any

from ..report import markdown_report
from ..study import STAGES, build, open_study
from .args import folder


def add_parser(sub: Any) -> None:
    st = sub.add_parser("study", help="build a study end to end from a YAML file, or check one")
    ssub = st.add_subparsers(dest="study_command", required=True)
    b = ssub.add_parser("build", help="train, evaluate, search and pack a study (resumable)")
    b.add_argument("config", help="the study's YAML file (e.g. studies/synthetic-mobilenetv2-fcn.yaml)")
    b.add_argument("--work", type=folder, help="folder for training runs and caches (default runs/<name>)")
    b.add_argument("--out", type=folder, help="study folder to write (default precomputed/<name>)")
    b.add_argument("--stop-after", choices=STAGES, help="stop after this training stage (continue later)")
    b.set_defaults(run=_build)
    c = ssub.add_parser("check", help="check a study's files against its manifest")
    c.add_argument("study", help="study folder")
    c.set_defaults(run=_check)
    r = ssub.add_parser("report", help="print a study's tables (end to end with measured latency, modes, training) "
                        "as markdown")
    r.add_argument("study", help="study folder")
    r.set_defaults(run=_report)


def _build(args: argparse.Namespace) -> int:
    build(args.config, work=args.work, out=args.out, stop_after=args.stop_after,
          log=lambda msg: print(msg, flush=True))
    return 0


def _check(args: argparse.Namespace) -> int:
    study = open_study(args.study)
    problems = study.verify()
    for line in problems:
        print(f"  problem: {line}")
    print(f"{study.path}: {len(study.manifest.get('files', {}))} files, {len(problems)} problem(s)")
    return 1 if problems else 0


def _report(args: argparse.Namespace) -> int:
    print(markdown_report(open_study(args.study)))
    return 0
