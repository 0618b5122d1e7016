"""``check-data``: load every sample of a dataset split and list each unusable file."""

from __future__ import annotations

import argparse
from typing import Any

from ..data import build_dataset
from .args import positive_int


def add_parser(sub: Any) -> None:
    c = sub.add_parser("check-data", help="load every sample of a dataset split and list each unusable file")
    c.add_argument("--data", required=True, help="synthetic, camvid, cityscapes, voc or folder")
    c.add_argument("--data-root", help="dataset folder (all but synthetic)")
    c.add_argument("--split", help="default: train (folder datasets: the folder itself, or train/ if you say so)")
    c.add_argument("--limit", type=positive_int, help="check only the first N samples")
    c.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # a folder dataset may have no split subfolders: then the whole folder is checked
    split = args.split or (None if args.data == "folder" else "train")
    dataset = build_dataset(args.data, root=args.data_root, split=split)
    info = dataset.info
    print(
        f"{info.name} {split or '(no split)'}: {len(dataset)} samples, {info.num_classes} classes "
        f"({', '.join(info.classes)}), ignore index {info.ignore_index}"
    )
    problems = dataset.validate(limit=args.limit)
    checked = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    for line in problems:
        print(f"  problem: {line}")
    print(f"checked {checked} samples: {len(problems)} problem(s)")
    return 1 if problems else 0
