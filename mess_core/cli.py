"""The ``python -m mess_core`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import torch

from . import models
from .errors import MessError
from .exits import ExitSpace
from .io import atomic_write_text
from .network import MultiExitNet, convert


def _profile(args: argparse.Namespace) -> int:
    try:
        model = models.create(args.model, num_classes=args.num_classes)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    height, width = args.size
    torch.manual_seed(0)
    example = torch.randn(1, 3, height, width)
    net = convert(model, example, num_exits=args.exits, cost=args.cost, exit_head=None)
    report = profile_report(net, model_name=args.model, with_heads=args.heads)
    print(format_profile(report))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
        print(f"\nwrote {args.json}")
    return 0


def profile_report(net: MultiExitNet, *, model_name: str, with_heads: bool = False) -> dict:
    """The profile command's data: the network's description plus, optionally, head GFLOPs for the default space."""
    report = {"model": model_name, **net.describe()}
    if with_heads:
        report["head_gflops"] = {
            str(e.index): {spec.id: net.head_flops(e.index, spec) / 1e9 for spec in ExitSpace.default()}
            for e in net.exits
        }
    return report


def format_profile(report: dict) -> str:
    prof = report["profile"]
    h, w = prof["input_size"]
    backbone = f"'{prof['backbone']}'" if prof["backbone"] else "the whole model"
    unit = "seconds" if prof["cost"] == "latency" else "GFLOPs"
    lines = [
        f"model {report['model']}  input {h}x{w}  {report['num_classes']} classes  exits placed by {unit}",
        f"backbone {backbone}: {100 * prof['backbone_fraction']:.1f}% of the workload; "
        f"{len(prof['cut_points'])} valid cut points",
        f"total {prof['total_gflops']:.3f} GFLOPs ({prof['total_gmacs']:.3f} GMACs) per image"
        + (f", {1e3 * prof['total_seconds']:.2f} ms measured" if prof["total_seconds"] is not None else ""),
        "",
        f"{'exit':>4}  {'node':<30} {'module':<26} {'cost frac':>9} {'cum GFLOPs':>10} {'channels':>8} {'stride':>6}",
    ]
    for e in report["exits"]:
        lines.append(
            f"{e['index']:>4}  {e['node'][:30]:<30} {e['module'][:26]:<26} {e['cost_fraction']:>9.3f} "
            f"{e['gflops']:>10.3f} {e['channels']:>8} {e['stride']:>6}"
        )
    lines.append(
        f"{report['num_exits']:>4}  {'output (the model head)':<30} {'':<26} {1.0:>9.3f} {prof['total_gflops']:>10.3f} "
        f"{report['num_classes']:>8} {1:>6}"
    )
    if "head_gflops" in report:
        specs = list(next(iter(report["head_gflops"].values())))
        lines += ["", "head GFLOPs per exit (default exit space):", f"{'config':<24}" + "".join(f"{'exit ' + i:>10}" for i in report["head_gflops"])]
        for spec in specs:
            lines.append(f"{spec:<24}" + "".join(f"{report['head_gflops'][i][spec]:>10.3f}" for i in report["head_gflops"]))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mess_core", description="MESS Explorer engine")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile", help="workload profile and exit placement of a registered model")
    p.add_argument("--model", required=True, help=f"one of: {', '.join(models.list_models())}")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), default=(360, 480))
    p.add_argument("--exits", type=int, default=6, help="N, the number of exits including the final one")
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--cost", choices=("flops", "latency"), default="flops")
    p.add_argument("--heads", action="store_true", help="also list every head's GFLOPs at every exit")
    p.add_argument("--json", metavar="FILE", help="also write the full profile (every node) as JSON")
    p.set_defaults(run=_profile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
