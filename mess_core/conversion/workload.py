"""A converted network's workload as data and as text: where the exits sit, what each costs, and (optionally) what
every head of the default exit space costs at every exit. The ``profile`` command prints it; a study stores it.

Example:
    >>> import torch
    >>> from mess_core import convert, models
    >>> net = convert(models.create("resnet18_fcn", num_classes=5), torch.randn(1, 3, 64, 64), num_exits=3)
    >>> report = profile_report(net, model_name="resnet18_fcn")
    >>> report["model"], report["num_exits"], len(report["exits"])
    ('resnet18_fcn', 3, 2)
    >>> format_profile(report).splitlines()[0]
    'model resnet18_fcn  input 64x64  5 classes  exits placed by GFLOPs'
"""

from __future__ import annotations

from typing import Any

from .exits import ExitSpace
from .network import MultiExitNet

__all__ = ["profile_report", "format_profile"]


def profile_report(net: MultiExitNet, *, model_name: str, with_heads: bool = False) -> dict[str, Any]:
    """The profile command's data: the network's description plus, optionally, head GFLOPs for the default space."""
    report = {"model": model_name, **net.describe()}
    if with_heads:
        report["head_gflops"] = {
            str(e.index): {spec.id: net.head_flops(e.index, spec) / 1e9 for spec in ExitSpace.default()}
            for e in net.exits
        }
    return report


def format_profile(report: dict[str, Any]) -> str:
    """The report as the aligned text the ``profile`` command prints."""
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
        exits = report["head_gflops"]
        lines += [
            "",
            "head GFLOPs per exit (default exit space):",
            f"{'config':<24}" + "".join(f"{'exit ' + i:>10}" for i in exits),
        ]
        for spec in specs:
            lines.append(f"{spec:<24}" + "".join(f"{exits[i][spec]:>10.3f}" for i in exits))
    return "\n".join(lines)
