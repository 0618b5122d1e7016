"""Plots of a built study for BENCHMARKS.md: accuracy against average GFLOPs (the front of every mode and exit
policy, the results table's rows) and what every exit head reaches on its own.

    .venv/bin/python -m benchmarks.study_plots precomputed/camvid-mobilenetv2-fcn --out docs/benchmarks

Every value drawn comes from the study's files through ``mess_core.study`` (the same functions the app and
``study report`` use); nothing is recomputed here. Needs matplotlib (in requirements.txt).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mess_core.search.report import Row  # noqa: E402
from mess_core.study import open_study  # noqa: E402

SERIES = [
    ("budgeted", "tab:blue", "budgeted (one exit)"),
    ("anytime (first output)", "tab:purple", "anytime"),
    ("naive policy", "tab:orange", "naive mean-confidence policy"),
    ("no edge masking", "tab:olive", "MESS without edge masking"),
    ("MESS input-dependent", "tab:red", "MESS input-dependent (edge-masked)"),
]
MARKERS = {
    Row.BACKBONE: ("k", "s"),
    Row.MAX_ACC_1X: ("tab:red", "^"),
    Row.MIN_COST_01PP: ("tab:red", "D"),
    Row.MIN_COST_1PP: ("tab:red", "o"),
    Row.UNIFORM_1PP: ("tab:green", "P"),
    Row.NAIVE_1PP: ("tab:orange", "X"),
    Row.ORACLE_1PP: ("tab:gray", "*"),
}


def fronts_plot(study, path: Path) -> None:
    fronts = study.fronts()
    table = study.results("input-dependent")
    cache = study.cache
    base_miou = 100 * float(cache.head_miou()[cache.final_head])
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for series, colour, label in SERIES:
        f = fronts[fronts["series"] == series].sort_values("cost")
        if len(f):
            style = "o--" if series == "budgeted" else "-"  # budgeted and anytime may share points: keep both seen
            ax.plot(f["cost"], 100 * f["miou"], style, color=colour, lw=1.4, ms=3, alpha=0.85, label=label)
    for row in table.itertuples():
        if not np.isfinite(row.gflops):
            continue
        colour, marker = MARKERS.get(row.id, ("k", "."))
        ax.scatter(
            row.gflops,
            100 * row.miou,
            color=colour,
            marker=marker,
            s=70,
            zorder=5,
            edgecolor="k",
            linewidth=0.5,
            label=row.row,
        )
    ax.axhline(base_miou - 1, color="k", ls=":", lw=0.8)
    ax.text(ax.get_xlim()[0], base_miou - 1, " backbone - 1 pp", va="bottom", fontsize=8)
    ax.set_xlabel("average GFLOPs per image")
    ax.set_ylabel(f"mIoU % ({cache.split_label})")
    ax.set_title(f"{study.name}: accuracy against cost, every mode and exit policy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heads_plot(study, path: Path) -> None:
    cache = study.cache
    miou = 100 * cache.head_miou()
    reach = cache.reach_cost("gflops")
    heads = cache.head_cost("gflops")
    fig, ax = plt.subplots(figsize=(9, 5))
    colours = plt.cm.viridis(np.linspace(0, 0.9, cache.num_exits - 1))
    for exit in range(1, cache.num_exits):
        x = [reach[exit] + heads[exit - 1, c] for c in range(len(cache.configs))]
        y = [miou[cache.head_index(exit, c)] for c in range(len(cache.configs))]
        ax.scatter(x, y, color=colours[exit - 1], s=22, label=f"exit {exit} ({len(cache.configs)} configurations)")
    ax.scatter([reach[-1]], [miou[cache.final_head]], color="k", marker="s", s=60, label="final exit (backbone)")
    ax.set_xlabel("GFLOPs to reach the exit and run its head")
    ax.set_ylabel(f"mIoU % of the head alone ({cache.split_label})")
    ax.set_title(f"{study.name}: every exit head on its own")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="a study folder (precomputed/NAME)")
    parser.add_argument("--out", default="docs/benchmarks", help="folder for the PNG files")
    args = parser.parse_args()
    study = open_study(args.study)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, draw in (("fronts", fronts_plot), ("heads", heads_plot)):
        path = out / f"{study.name}-{name}.png"
        draw(study, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
