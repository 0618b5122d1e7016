"""``profile``: workload profile and exit placement of a model (registered, import path or file)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch

from .. import models
from ..conversion.pipeline import convert
from ..conversion.workload import format_profile, profile_report
from ..errors import ConversionError, MessError
from ..io import atomic_write_text
from ..models import ModelSource
from .args import (
    MODEL_HELP,
    add_convert_options,
    class_count,
    convert_options_of,
    declare_files,
    output_file,
    positive_int,
    side,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("profile", help="workload profile and exit placement of a model")
    p.add_argument("--model", required=True, help=MODEL_HELP.format(", ".join(models.list_models())))
    p.add_argument("--size", nargs=2, type=side, metavar=("H", "W"), default=(360, 480))
    p.add_argument("--exits", type=positive_int, default=6, help="N, the number of exits including the final one")
    p.add_argument(
        "--num-classes",
        type=class_count,
        help="classes to build the model with (default 11); given, the model's output must have as many",
    )
    add_convert_options(p)
    p.add_argument("--heads", action="store_true", help="also list every head's GFLOPs at every exit")
    p.add_argument("--json", metavar="FILE", type=output_file, help="also write the full profile (every node) as JSON")
    declare_files(p, reads=("model", "weights"), writes=("json",))
    p.set_defaults(run=run)


DEFAULT_CLASSES = 11  # CamVid's


def run(args: argparse.Namespace) -> int:
    try:
        source = ModelSource.parse(args.model)
        model = source.build(args.num_classes or DEFAULT_CLASSES)
    except MessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    height, width = args.size
    torch.manual_seed(0)
    example = torch.randn(1, 3, height, width)
    net = convert(model, example, num_exits=args.exits, exit_head=None, **convert_options_of(args))
    if args.num_classes is not None and net.num_classes != args.num_classes:
        raise ConversionError(
            f"the model predicts {net.num_classes} classes but --num-classes is {args.num_classes}; "
            "build the model with num_classes= (its callable takes num_classes=)"
        )
    report = profile_report(net, model_name=source.name, with_heads=args.heads)
    print(format_profile(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0
