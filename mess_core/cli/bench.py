"""``bench``: time the original model and deployed instances side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..deploy.artifacts import load_multi_exit_and_model
from ..deploy.bench import ENGINES, bench, machine, policy_overhead, stage_latency
from ..evaluate.cache import EvaluationCache
from ..evaluate.cache_build import measure_decisions
from ..evaluate.instance import Instance
from ..evaluate.policy import EdgeMasking
from ..io import atomic_write_text
from .args import (
    add_data_option,
    add_selection,
    add_trust,
    declare_files,
    eval_dataset,
    output_file,
    positive_int,
    size,
)


def add_parser(sub: Any) -> None:
    b = sub.add_parser(
        "bench",
        help="time the original model and deployed instances side by side (eager, onnxruntime, CUDA when present)",
    )
    b.add_argument("--multi-exit", required=True, help="multi_exit.pt written by stage 2")
    b.add_argument("--instance", action="append", default=[], help="an instance JSON from the search (repeatable)")
    b.add_argument("--data", default="synthetic")
    b.add_argument("--data-root")
    add_data_option(b)
    add_selection(b)
    add_trust(b)
    b.add_argument("--size", type=size, metavar="HxW", help="resize every image")
    b.add_argument("--images", type=positive_int, default=16, help="how many images of the split to time on")
    b.add_argument("--batch", type=positive_int, nargs="+", default=[1, 8])
    b.add_argument("--repeats", type=positive_int, default=5, help="timed rounds after 2 warm-up rounds")
    b.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    b.add_argument("--skip", nargs="*", default=[], choices=["cuda"], help="leave out CUDA even when present")
    b.add_argument("--out", type=output_file, help="write every measurement as JSON")
    b.add_argument(
        "--into-cache", type=output_file, help="write the per-stage and per-head latency into this evaluation cache"
    )
    declare_files(b, reads=("multi_exit", "instance"), writes=("out",))
    b.set_defaults(run=run)


def _print_table(table: pd.DataFrame) -> None:
    shown = table.assign(
        exits=table.exit_fractions.map(
            lambda f: "" if not f else " ".join(f"{k}:{100 * v:.0f}%" for k, v in sorted(f.items()))
        )
    )
    print("\nlatency per image (mean over images and rounds; median and p90 per batch), speedup vs original")
    print(
        shown[["engine", "batch", "variant", "ms_per_image", "median_ms", "p90_ms", "speedup", "exits"]].to_string(
            index=False, float_format=lambda v: f"{v:.2f}"
        )
    )
    for engine, group in table.groupby(["engine", "batch"]):
        ms = dict(zip(group.variant, group.ms_per_image))
        print(
            f"{engine[0]} batch {engine[1]}: converted network, no exit kept, vs original: "
            f"{100 * (ms['converted'] / ms['original'] - 1):+.1f}%"
        )


def _into_cache(
    path: str, size: tuple[int, ...], stage_ms: Any, head_ms: dict[int, dict[str, float]], net: Any, repeats: int
) -> int:
    cache = EvaluationCache.load(path)
    if tuple(cache.meta.get("input_size", ())) != size:
        print(
            f"{path}: its images are {cache.meta.get('input_size')}, these {list(size)}; latency not written",
            file=sys.stderr,
        )
        return 1
    cache.stage_ms = np.asarray(stage_ms, float)
    cache.head_ms = np.asarray([[head_ms[e][c] for c in cache.configs] for e in range(1, cache.num_exits)])
    edges = EdgeMasking(**cache.meta.get("edge_masking", {}))
    cache.meta["decision_ms"] = measure_decisions(net, size, edges, torch.device("cpu"), repeats)
    cache.meta["latency_device"] = machine()
    cache.save(path)
    print(f"wrote the latency table into {path} (search with --cost latency)")
    return 0


def run(args: argparse.Namespace) -> int:
    net, meta, model = load_multi_exit_and_model(args.multi_exit, consent=args.trust_model_code)
    instances = {Path(p).stem.removesuffix(".instance"): Instance.load(p) for p in args.instance}
    dataset = eval_dataset(args)
    images = torch.stack([dataset[i][0] for i in range(min(args.images, len(dataset)))]).float()
    size = tuple(images.shape[-2:])
    engines = list(args.engines)
    if torch.cuda.is_available() and "cuda" not in args.skip:
        engines.append("cuda")
    print(f"{meta['model']}, {len(images)} {args.data} {args.split} images at {size[0]}x{size[1]}; {machine()}")
    frames = []
    for engine in engines:
        frames.append(
            bench(
                net,
                model,
                instances,
                images,
                batch_sizes=args.batch,
                repeats=args.repeats,
                engines=["eager" if engine == "cuda" else engine],
                device="cuda" if engine == "cuda" else "cpu",
            )
        )
    table = pd.concat(frames, ignore_index=True)
    _print_table(table)
    for name, inst in instances.items():
        if inst.mode == "input-dependent" and inst.exits:
            o = policy_overhead(net, inst, images[: min(8, len(images))])
            print(
                f"{name}: exit rule {o['policy_ms']:.2f} ms vs the shallowest kept exit's path (exit {o['exit']}) "
                f"{o['path_ms']:.2f} ms = {100 * o['ratio']:.1f}% (batch 1, eager)"
            )
    stage_ms, head_ms = stage_latency(net, size, repeats=args.repeats * 2)
    print("\nper-stage latency (ms, batch 1, eager): " + ", ".join(f"{i}: {v:.2f}" for i, v in enumerate(stage_ms, 1)))
    for exit, row in head_ms.items():
        print(
            f"exit {exit} heads (ms): "
            + ", ".join(f"{c} {v:.2f}" for c, v in sorted(row.items(), key=lambda kv: kv[1]))
        )
    if args.out:
        atomic_write_text(args.out, table.to_json(orient="records", indent=1))
        print(f"wrote {args.out}")
    if not args.into_cache:
        return 0
    return _into_cache(args.into_cache, size, stage_ms, head_ms, net, repeats=args.repeats * 2)
