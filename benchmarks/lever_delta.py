"""How far each lever moved each exit from the reference run, with a 90% interval over the tuning images: the
stage-1 caches of two runs (benchmarks/stage1_cache.py) on the same images, mIoU of lever minus reference per exit,
the interval from a paired bootstrap that resamples scene blocks of 10 consecutive frames (the study's promise rule:
frames a second apart are alike, so single-frame resampling would understate the spread).

The interval is over images only: it says whether the difference would hold on more frames of this drive, not on
another training seed (one run per lever).

Usage:
    .venv/bin/python -m benchmarks.lever_delta runs/sd-base-0006R0.npz runs/sd-NAME-0006R0.npz [...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import iou_of_counts, mean_iou
from mess_core.search.uncertainty import UncertaintyError, check_confidence, resample_weights, scene_blocks


def exit_mious(cache: EvaluationCache, weights: np.ndarray) -> np.ndarray:
    """(exits, R + 1) mIoU in % of every exit's light head (then the final exit) on each resample of ``weights``
    (R, N) and, last, on the images themselves."""
    every = np.concatenate([weights, np.ones((1, cache.num_images))])
    heads = [cache.head_index(i, cache.configs[0]) for i in range(1, cache.num_exits)] + [cache.final_head]
    label = every @ cache.label.astype(np.float64)  # (R + 1, K)
    out = []
    for h in heads:
        tp, pred = every @ cache.tp[:, h].astype(np.float64), every @ cache.pred[:, h].astype(np.float64)
        out.append(100.0 * mean_iou(iou_of_counts(label, tp, pred)))
    return np.asarray(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", type=Path)
    parser.add_argument("levers", type=Path, nargs="+")
    parser.add_argument("--block", type=int, default=10, help="frames per scene block (default 10)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--confidence", type=float, default=0.9, help="the interval's coverage (default 0.9)")
    args = parser.parse_args()
    try:
        confidence = check_confidence(args.confidence)
    except UncertaintyError as exc:
        raise SystemExit(f"--confidence: {exc}") from None
    ref = EvaluationCache.load(args.reference)
    weights = resample_weights(ref.num_images, args.resamples, blocks=scene_blocks(ref, args.block))
    base = exit_mious(ref, weights)
    lo, hi = 50 * (1 - confidence), 50 * (1 + confidence)
    names = [f"exit {i}" for i in range(1, ref.num_exits)] + ["final"]
    print(f"mIoU % minus {args.reference.name}'s, [{100 * confidence:.0f}% interval, blocks of {args.block}]\n")
    print("| run | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for path in args.levers:
        cache = EvaluationCache.load(path)
        for what, mine, theirs in (
            ("images", cache.meta["images"], ref.meta["images"]),
            ("exits", cache.num_exits, ref.num_exits),
            ("first configuration", cache.configs[0], ref.configs[0]),
            ("classes", cache.meta["classes"], ref.meta["classes"]),
        ):
            if mine != theirs:
                raise SystemExit(
                    f"{path}: its {what} differ from {args.reference}'s; build both with benchmarks/stage1_cache.py "
                    "on the same split from runs of the same network"
                )
        delta = exit_mious(cache, weights) - base
        cells = [f"{d[-1]:+.2f} [{np.percentile(d[:-1], lo):+.2f}, {np.percentile(d[:-1], hi):+.2f}]" for d in delta]
        print(f"| {path.stem} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
