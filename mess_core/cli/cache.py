"""``cache``: evaluate every exit x configuration of a trained multi-exit network on a split, once."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from ..deploy.artifacts import load_multi_exit
from ..evaluate.cache import TH_PIX_GRID
from ..evaluate.cache_build import build_cache
from ..evaluate.policy import EdgeMasking
from .args import (
    add_data_option,
    add_selection,
    add_trust,
    declare_files,
    device,
    eval_dataset,
    fractions,
    odd_positive_int,
    output_file,
    positive_int,
    size,
)


def add_parser(sub: Any) -> None:
    k = sub.add_parser(
        "cache",
        help="evaluate every exit x configuration of a trained multi-exit network on a split, "
        "once, into an evaluation cache for the search and the app",
    )
    k.add_argument("--multi-exit", required=True, help="multi_exit.pt written by stage 2 (train --stage exits)")
    k.add_argument("--data", required=True, help="synthetic, camvid, cityscapes, voc or folder")
    k.add_argument("--data-root", help="dataset folder (all but synthetic)")
    add_data_option(k)
    add_selection(k)
    k.add_argument("--size", type=size, metavar="HxW", help="resize every image (needed when sizes differ)")
    k.add_argument("--limit", type=positive_int, help="only the first N images")
    k.add_argument("--out", required=True, type=output_file, help="the cache file to write (.npz)")
    k.add_argument("--batch-size", type=positive_int, default=4)
    k.add_argument("--device", type=device, help="cuda or cpu (default: cuda when available)")
    add_trust(k)
    k.add_argument("--latency", action="store_true", help="also measure every stage's and head's latency (batch 1)")
    k.add_argument(
        "--th-pix", type=fractions, help="comma-separated th_pix grid the cache answers for (default 0.5..0.99)"
    )
    k.add_argument(
        "--edge-size", type=odd_positive_int, default=3, help="edge masking: structuring element size s (odd)"
    )
    k.add_argument("--edge-window", type=odd_positive_int, default=7, help="edge masking: median window w (odd)")
    declare_files(k, reads=("multi_exit",), writes=("out",))
    k.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    net, meta = load_multi_exit(args.multi_exit, consent=args.trust_model_code)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net.to(device)
    dataset = eval_dataset(args)
    edges = EdgeMasking(size=args.edge_size, window=args.edge_window)
    print(
        f"evaluating {meta['model']} ({net.num_exits} exits x {len(meta['exit_space']['1'])} configurations) on "
        f"{args.data} {args.split}: {len(dataset) if args.limit is None else min(args.limit, len(dataset))} images"
    )
    cache = build_cache(
        net,
        dataset,
        model=meta["model"],
        dataset_name=args.data,
        split=args.split,
        batch_size=args.batch_size,
        device=device,
        th_pix_grid=args.th_pix or TH_PIX_GRID,
        edges=edges,
        latency=args.latency,
        limit=args.limit,
        extra_meta={"source": str(args.multi_exit), "command": " ".join(sys.argv)},
    )
    cache.save(args.out)
    miou = cache.head_miou()
    print(
        f"final exit mIoU {100 * miou[cache.final_head]:.2f}%, {cache.stage_gflops.sum():.3f} GFLOPs; best early "
        f"head per exit: "
        + ", ".join(
            f"{100 * miou[(i - 1) * len(cache.configs) : i * len(cache.configs)].max():.1f}%"
            for i in range(1, cache.num_exits)
        )
    )
    print(f"wrote {args.out}")
    return 0
