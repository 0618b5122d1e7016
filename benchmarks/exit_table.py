"""mIoU and per-class IoU of every exit of training runs, as the markdown tables BENCHMARKS.md records per lever.

Usage:
    .venv/bin/python -m benchmarks.exit_table RUN [RUN ...] [--config ID] [--names A B ...]

A RUN is a run folder of stage 1 (``pretrain``: its light exits) or stage 2 (``exits``: the best head per exit by
mIoU, or the head ``--config`` names), read from its ``eval.json`` (the last evaluation) and ``metrics.csv``. Prints
one table of mIoU per exit (one row per run) and one table of IoU per class per exit for each run.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def exits_of(run: Path, config: str | None) -> dict[str, tuple[str, dict]]:
    """Exit name -> (head, evaluation summary) from a run's eval.json."""
    detail = json.loads((run / "eval.json").read_text())
    out: dict[str, tuple[str, dict]] = {}
    if "exits" in detail:  # stage 2: every configuration at every exit
        for index, by_config in sorted(detail["exits"].items(), key=lambda kv: int(kv[0])):
            name = config if config else max(by_config, key=lambda c: by_config[c]["miou"])
            out[f"exit {index}"] = (name, by_config[name])
    else:  # stage 1: one light exit per point
        for key in sorted(k for k in detail if k.startswith("exit")):
            out[f"exit {key[4:]}"] = ("light", detail[key])
    out["final"] = ("final", detail["final"])
    return out


def epochs_of(run: Path) -> str:
    path = run / "metrics.csv"
    if not path.is_file():
        return "?"
    rows = [r for r in csv.DictReader(path.open()) if r.get("miou_final")]
    return rows[-1]["epoch"] if rows else "?"  # the epoch of the last evaluation, which eval.json holds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--config", help="stage 2: report this configuration at every exit instead of the best")
    parser.add_argument("--names", nargs="+", help="a label per run (default: the folder names)")
    args = parser.parse_args()
    names = args.names or [f"{r.parent.name}/{r.name}" for r in args.runs]
    tables = {name: exits_of(run, args.config) for name, run in zip(names, args.runs)}
    columns = list(next(iter(tables.values())))
    print("| run | epochs | " + " | ".join(columns) + " |")
    print("|---|---" + "|---" * len(columns) + "|")
    for (name, exits), run in zip(tables.items(), args.runs):
        cells = [f"{100 * exits[c][1]['miou']:.2f}" if c in exits else "-" for c in columns]
        print(f"| {name} | {epochs_of(run)} | " + " | ".join(cells) + " |")
    for name, exits in tables.items():
        classes = list(next(iter(exits.values()))[1]["iou"])
        print(f"\nIoU % per class, {name}:\n")
        print("| exit | head | mIoU | " + " | ".join(classes) + " |")
        print("|---|---|---" + "|---" * len(classes) + "|")
        for exit_name, (head, summary) in exits.items():
            ious = [summary["iou"][c] for c in classes]
            cells = ["-" if v is None else f"{100 * v:.1f}" for v in ious]
            print(f"| {exit_name} | {head} | {100 * summary['miou']:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
