"""The evaluation cache of a stage-1 run's network with its light exits, to look at a recipe's exits (and how their
thresholds transfer) before stage 2 trains the whole exit space.

Usage:
    .venv/bin/python benchmarks/stage1_cache.py runs/camvid-sd-base/pretrain --data camvid \
        --data-root ../shared/datasets/camvid --split train --groups 0006R0 --size 180 240 --out runs/sd-base-0006R0.npz

Stage 1 keeps its light exit (nocrm-b0-fcn) at every exit in model.pt; this rebuilds that multi-exit network from it
(the same placement) and runs mess_core.evaluate.cache_build.build_cache over the images. Its search space is one
configuration per exit; benchmarks/transfer_rules.py reads the cache.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mess_core.conversion.exits import LIGHT_EXIT
from mess_core.conversion.pipeline import convert
from mess_core.data import build_dataset, eval_transform
from mess_core.deploy import artifacts
from mess_core.evaluate.cache_build import build_cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a stage-1 run folder (holding model.pt)")
    parser.add_argument("--data", required=True)
    parser.add_argument("--data-root")
    parser.add_argument("--split", default="val")
    parser.add_argument("--groups", default="", help="comma-separated groups to keep")
    parser.add_argument("--size", type=int, nargs=2, required=True, metavar=("H", "W"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    path = args.run / "model.pt"
    model, meta = artifacts.load_model(path)
    placed = meta["exits"]
    h, w = placed["profile_size"]
    net = convert(
        model.eval(),
        torch.zeros(1, 3, h, w),
        num_exits=len(placed["exit_modules"]) + 1,
        exit_head=None,
        **meta.get("convert", {}),
    ).attach(LIGHT_EXIT)
    loaded = artifacts.load_exit_heads(path, net)
    groups = tuple(g for g in args.groups.split(",") if g)
    dataset = build_dataset(
        args.data, root=args.data_root, split=args.split, groups=groups, transform=eval_transform(size=tuple(args.size))
    )
    print(
        f"{path}: exits {', '.join(f'{i}:{c}' for i, c in loaded)}; {len(dataset)} images of {args.data} "
        f"{args.split}{' [' + ','.join(groups) + ']' if groups else ''}",
        flush=True,
    )
    cache = build_cache(
        net,
        dataset,
        model=meta["model"],
        dataset_name=args.data,
        split=args.split,
        batch_size=8,
        extra_meta={"source": str(path), "groups": list(groups)},
    )
    cache.save(args.out)
    miou = cache.head_miou()
    print(
        f"final exit {100 * miou[cache.final_head]:.2f}%; exits "
        + ", ".join(f"{100 * miou[cache.head_index(i, cache.configs[0])]:.2f}%" for i in range(1, cache.num_exits))
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
