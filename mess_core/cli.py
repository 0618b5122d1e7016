"""The ``python -m mess_core`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch
import yaml

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


def _size(text: str) -> tuple[int, int]:
    return tuple(int(v) for v in text.lower().split("x"))  # "180x240"


def _train(args: argparse.Namespace) -> int:
    from .training import TrainConfig, load_run_config, train

    if args.resume:
        config = load_run_config(args.out)
        overrides = {"epochs": args.epochs} if args.epochs is not None else {}
        if args.stage and args.stage != config.stage:
            print(f"error: {args.out} holds a '{config.stage}' run, not '{args.stage}'", file=sys.stderr)
            return 2
        config = TrainConfig.from_dict({**config.to_dict(), **overrides})
    else:
        if not args.stage:
            print("error: --stage is required for a new run (backbone, pretrain or exits)", file=sys.stderr)
            return 2
        options = {}
        for item in args.data_option:
            key, _, value = item.partition("=")
            options[key] = yaml.safe_load(value)
        fields = {
            "stage": args.stage, "out": args.out, "model": args.model, "dataset": args.data, "data_root": args.data_root,
            "init": args.init, "num_exits": args.exits, "profile_size": args.profile_size, "exit_space": args.space,
            "exit_loss": args.loss, "alpha": args.alpha, "temperature": args.temperature,
            "exit_schedule": args.exit_schedule, "class_balance": args.class_balance, "prune_at": args.prune_at,
            "prune_margin": args.prune_margin, "init_exits": args.init_exits or None, "crop": args.crop, "scale": args.scale, "hflip": not args.no_flip,
            "jitter": args.jitter, "eval_size": args.eval_size, "epochs": args.epochs or 10,
            "batch_size": args.batch_size, "accumulate": args.accumulate, "optimizer": args.optimizer, "lr": args.lr,
            "weight_decay": args.weight_decay, "lr_schedule": args.lr_schedule, "precision": args.precision,
            "device": args.device, "workers": args.workers, "seed": args.seed, "sync_bn": not args.no_sync_bn,
            "eval_every": args.eval_every, "train_limit": args.train_limit, "val_limit": args.val_limit,
            "steps_per_epoch": args.steps_per_epoch, "progress": not args.no_progress, "data_options": options,
        }
        config = TrainConfig(**{k: v for k, v in fields.items() if v is not None})
    try:
        train(config, resume=args.resume)
    finally:
        from .distributed import teardown

        teardown()
    return 0


def _check_data(args: argparse.Namespace) -> int:
    from .data import build_dataset

    # a folder dataset may have no split subfolders: then the whole folder is checked
    split = args.split or (None if args.data == "folder" else "train")
    dataset = build_dataset(args.data, root=args.data_root, split=split)
    info = dataset.info
    print(f"{info.name} {split or '(no split)'}: {len(dataset)} samples, {info.num_classes} classes "
          f"({', '.join(info.classes)}), ignore index {info.ignore_index}")
    problems = dataset.validate(limit=args.limit)
    checked = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    for line in problems:
        print(f"  problem: {line}")
    print(f"checked {checked} samples: {len(problems)} problem(s)")
    return 1 if problems else 0


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _cache(args: argparse.Namespace) -> int:
    from .artifacts import load_multi_exit
    from .cache import TH_PIX_GRID, build_cache
    from .data import build_dataset, eval_transform
    from .policy import EdgeMasking

    net, meta = load_multi_exit(args.multi_exit)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    net.to(device)
    options = {}
    for item in args.data_option:
        key, _, value = item.partition("=")
        options[key] = yaml.safe_load(value)
    dataset = build_dataset(args.data, root=args.data_root, split=args.split, transform=eval_transform(size=args.size),
                            **options)
    edges = EdgeMasking(size=args.edge_size, window=args.edge_window)
    print(f"evaluating {meta['model']} ({net.num_exits} exits x {len(meta['exit_space']['1'])} configurations) on "
          f"{args.data} {args.split}: {len(dataset) if args.limit is None else min(args.limit, len(dataset))} images")
    cache = build_cache(net, dataset, model=meta["model"], dataset_name=args.data, split=args.split,
                        batch_size=args.batch_size, device=device,
                        th_pix_grid=_floats(args.th_pix) if args.th_pix else TH_PIX_GRID, edges=edges,
                        latency=args.latency, limit=args.limit,
                        extra_meta={"source": str(args.multi_exit), "command": " ".join(sys.argv)})
    cache.save(args.out)
    miou = cache.head_miou()
    print(f"final exit mIoU {100 * miou[cache.final_head]:.2f}%, {cache.stage_gflops.sum():.3f} GFLOPs; best early "
          f"head per exit: " + ", ".join(f"{100 * miou[(i - 1) * len(cache.configs):i * len(cache.configs)].max():.1f}%"
                                         for i in range(1, cache.num_exits)))
    print(f"wrote {args.out}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from .cache import EvaluationCache
    from .instance import outcome_figures
    from .report import format_table, results_table
    from .search import Objective, SearchSpace, search

    cache = EvaluationCache.load(args.cache)
    eval_cache = EvaluationCache.load(args.eval_cache) if args.eval_cache else None
    objective = Objective(args.objective, max_drop=args.max_drop if args.objective == "min-cost" else None,
                          budget=args.budget if args.objective == "max-acc" else None)
    fields = {"max_exits": args.max_exits, "policy": args.policy}
    if args.th_pix:
        fields["th_pix"] = _floats(args.th_pix)
    if args.th_img:
        fields["th_img"] = _floats(args.th_img)
    if args.exit_ids:
        fields["exits"] = tuple(int(v) for v in args.exit_ids.split(","))
    space = SearchSpace(**fields)
    unit = "ms" if args.cost == "latency" else "gflops"
    result = search(cache, objective, mode=args.mode, unit=unit, space=space)
    meta = cache.meta
    print(f"{meta['model']} on {meta['dataset']} {meta['split']} ({cache.num_images} images, "
          f"{'x'.join(map(str, meta['input_size']))}); {args.mode}; {objective.describe()}; cost in {unit}")
    print(f"searched {result.space_size:,} instances ({result.evaluated:,} scored after lossless pruning) in "
          f"{1e3 * result.seconds:.0f} ms")
    if objective.kind == "pareto":
        front = result.front
        print(front[["cost", "miou", "description"]].to_string(index=False))
        if args.front_csv:
            front.drop(columns=["instance"]).to_csv(args.front_csv, index=False)
            print(f"wrote {args.front_csv}")
        return 0
    table = results_table(cache, mode=args.mode, unit=unit, space=space, eval_cache=eval_cache)
    title = (f"\nresults on {meta['split']}" + (f" (* = {eval_cache.meta['split']})" if eval_cache else "")
             + "; speedup in GFLOPs vs the backbone")
    print(format_table(table, title=title))
    if result.instance is None:
        print(f"\nno instance meets '{objective.describe()}'; nothing written", file=sys.stderr)
        return 1
    extra = {"objective": objective.describe(), "cost_unit": unit,
             "source": {k: meta.get(k) for k in ("model", "dataset", "split", "input_size")}
             | {"num_classes": cache.num_classes, "num_exits": cache.num_exits, "cache": args.cache},
             "tuned": outcome_figures(cache, result.instance)}
    if eval_cache is not None:
        extra["reported"] = {"split": eval_cache.meta.get("split"), **outcome_figures(eval_cache, result.instance)}
    out = args.out or str(Path(args.cache).with_suffix("")) + ".instance.json"
    result.instance.save(out, **extra)
    print(f"\nchosen: {result.instance.describe()}\nwrote {out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from .artifacts import load_multi_exit_and_model
    from .bench import bench, machine, policy_overhead, stage_latency
    from .cache import EvaluationCache
    from .data import build_dataset, eval_transform
    from .instance import Instance

    net, meta, model = load_multi_exit_and_model(args.multi_exit)
    instances = {Path(p).stem.removesuffix(".instance"): Instance.load(p) for p in args.instance}
    options = {}
    for item in args.data_option:
        key, _, value = item.partition("=")
        options[key] = yaml.safe_load(value)
    dataset = build_dataset(args.data, root=args.data_root, split=args.split, transform=eval_transform(size=args.size),
                            **options)
    images = torch.stack([dataset[i][0] for i in range(min(args.images, len(dataset)))]).float()
    size = tuple(images.shape[-2:])
    engines = list(args.engines)
    if torch.cuda.is_available() and "cuda" not in args.skip:
        engines.append("cuda")
    print(f"{meta['model']}, {len(images)} {args.data} {args.split} images at {size[0]}x{size[1]}; {machine()}")
    frames = []
    for engine in engines:
        frames.append(bench(net, model, instances, images, batch_sizes=args.batch, repeats=args.repeats,
                            engines=["eager" if engine == "cuda" else engine],
                            device="cuda" if engine == "cuda" else "cpu"))
    table = pd.concat(frames, ignore_index=True)
    shown = table.assign(exits=table.exit_fractions.map(
        lambda f: "" if not f else " ".join(f"{k}:{100 * v:.0f}%" for k, v in sorted(f.items()))))
    print("\nlatency per image (mean over images and rounds; median and p90 per batch), speedup vs original")
    print(shown[["engine", "batch", "variant", "ms_per_image", "median_ms", "p90_ms", "speedup", "exits"]]
          .to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for engine, group in table.groupby(["engine", "batch"]):
        ms = dict(zip(group.variant, group.ms_per_image))
        print(f"{engine[0]} batch {engine[1]}: converted network, no exit kept, vs original: "
              f"{100 * (ms['converted'] / ms['original'] - 1):+.1f}%")
    for name, inst in instances.items():
        if inst.mode == "input-dependent" and inst.exits:
            o = policy_overhead(net, inst, images[: min(8, len(images))])
            print(f"{name}: exit rule {o['policy_ms']:.2f} ms vs the shallowest kept exit's path (exit {o['exit']}) "
                  f"{o['path_ms']:.2f} ms = {100 * o['ratio']:.1f}% (batch 1, eager)")
    stage_ms, head_ms = stage_latency(net, size, repeats=args.repeats * 2)
    print("\nper-stage latency (ms, batch 1, eager): " + ", ".join(f"{i}: {v:.2f}" for i, v in enumerate(stage_ms, 1)))
    for exit, row in head_ms.items():
        print(f"exit {exit} heads (ms): " + ", ".join(f"{c} {v:.2f}" for c, v in sorted(row.items(), key=lambda kv: kv[1])))
    if args.out:
        from .io import atomic_write_text

        atomic_write_text(args.out, table.to_json(orient="records", indent=1))
        print(f"wrote {args.out}")
    if args.into_cache:
        cache = EvaluationCache.load(args.into_cache)
        if tuple(cache.meta.get("input_size", ())) != size:
            print(f"{args.into_cache}: its images are {cache.meta.get('input_size')}, these {list(size)}; "
                  "latency not written", file=sys.stderr)
            return 1
        cache.stage_ms = np.asarray(stage_ms, float)
        cache.head_ms = np.asarray([[head_ms[e][c] for c in cache.configs] for e in range(1, cache.num_exits)])
        cache.meta["latency_device"] = machine()
        cache.save(args.into_cache)
        print(f"wrote the latency table into {args.into_cache} (search with --cost latency)")
    return 0


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

    t = sub.add_parser(
        "train",
        help="train a backbone, pre-train it exit-aware (stage 1) or train every exit configuration (stage 2)",
        description="One stage of MESS training. Runs as one process, or under torchrun --nproc-per-node K.",
    )
    t.add_argument("--stage", choices=("backbone", "pretrain", "exits"), help="required unless --resume")
    t.add_argument("--out", required=True, help="run directory (config.yaml, checkpoint.pt, metrics.csv, result)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    t.add_argument("--model", help=f"registered model (default mobilenetv2_fcn): {', '.join(models.list_models())}")
    t.add_argument("--data", help="synthetic (default), camvid, cityscapes, voc or folder")
    t.add_argument("--data-root", help="dataset folder (all but synthetic)")
    t.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra dataset argument, e.g. length=512 or size=[120,160] for synthetic (repeatable)")
    t.add_argument("--init", help="model.pt (or checkpoint) of a previous stage to start from")
    t.add_argument("--exits", type=int, help="N, exits including the final one (default 6)")
    t.add_argument("--profile-size", type=_size, metavar="HxW", help="input size exits are placed for (default: crop)")
    t.add_argument("--space", help="stage 2 exit space: default (30 configurations), light, or comma-separated ids")
    t.add_argument("--loss", choices=("pfd", "kd", "ce"), help="stage 2 exit loss (default pfd)")
    t.add_argument("--alpha", type=float, help="PFD weight of the filtered cross-entropy (default 0.5)")
    t.add_argument("--temperature", type=float, help="distillation temperature (default 1)")
    t.add_argument("--exit-schedule", choices=("modulo", "every"),
                   help="stage 1: exit i counts on every i-th step (modulo, default) or on every step")
    t.add_argument("--class-balance", type=float, metavar="P",
                   help="weigh each pixel's loss by (median f / f_class) ** P (median-frequency balancing at 1; default 0)")
    t.add_argument("--prune-at", type=int, nargs="+", metavar="EPOCH",
                   help="stage 2, successive halving: after these epochs stop the heads that cannot reach the front")
    t.add_argument("--prune-margin", type=float, nargs="+", metavar="PP",
                   help="with --prune-at: one margin per epoch, in mIoU points (a head beaten by that much at no "
                        "more cost stops)")
    t.add_argument("--init-exits", action="store_true",
                   help="stage 2: start the configuration stage 1 trained (nocrm-b0-fcn) from the exits kept in the "
                        "--init model.pt instead of random weights")
    t.add_argument("--crop", type=_size, metavar="HxW", help="training crop (default 180x240)")
    t.add_argument("--scale", type=float, nargs=2, metavar=("MIN", "MAX"), help="random scale range (default 0.5 2)")
    t.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    t.add_argument("--jitter", type=float, help="colour jitter strength (default 0.2)")
    t.add_argument("--eval-size", type=_size, metavar="HxW", help="resize validation images (default: native size)")
    t.add_argument("--epochs", type=int, help="default 10")
    t.add_argument("--batch-size", type=int, help="per process and accumulation step (default 8)")
    t.add_argument("--accumulate", type=int, help="gradient accumulation steps (default 1)")
    t.add_argument("--optimizer", choices=("sgd", "adamw"))
    t.add_argument("--lr", type=float, help="default 0.01 (sgd) or 0.001 (adamw)")
    t.add_argument("--weight-decay", type=float)
    t.add_argument("--lr-schedule", choices=("poly", "constant"))
    t.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="mixed precision (fp16 needs CUDA)")
    t.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    t.add_argument("--workers", type=int, help="data loading processes per training process (default 2)")
    t.add_argument("--seed", type=int)
    t.add_argument("--no-sync-bn", action="store_true", help="keep BatchNorm statistics per process under torchrun")
    t.add_argument("--eval-every", type=int, help="evaluate every K epochs (and after the last)")
    t.add_argument("--train-limit", type=int, help="use only the first N training images")
    t.add_argument("--val-limit", type=int, help="evaluate on the first N validation images")
    t.add_argument("--steps-per-epoch", type=int, help="cap optimiser steps per epoch")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines are still printed)")
    t.set_defaults(run=_train)

    c = sub.add_parser("check-data", help="load every sample of a dataset split and list each unusable file")
    c.add_argument("--data", required=True, help="synthetic, camvid, cityscapes, voc or folder")
    c.add_argument("--data-root", help="dataset folder (all but synthetic)")
    c.add_argument("--split", help="default: train (folder datasets: the folder itself, or train/ if you say so)")
    c.add_argument("--limit", type=int, help="check only the first N samples")
    c.set_defaults(run=_check_data)

    k = sub.add_parser("cache", help="evaluate every exit x configuration of a trained multi-exit network on a split, "
                       "once, into an evaluation cache for the search and the app")
    k.add_argument("--multi-exit", required=True, help="multi_exit.pt written by stage 2 (train --stage exits)")
    k.add_argument("--data", required=True, help="synthetic, camvid, cityscapes, voc or folder")
    k.add_argument("--data-root", help="dataset folder (all but synthetic)")
    k.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    k.add_argument("--split", default="val")
    k.add_argument("--size", type=_size, metavar="HxW", help="resize every image (needed when sizes differ)")
    k.add_argument("--limit", type=int, help="only the first N images")
    k.add_argument("--out", required=True, help="the cache file to write (.npz)")
    k.add_argument("--batch-size", type=int, default=4)
    k.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    k.add_argument("--latency", action="store_true", help="also measure every stage's and head's latency (batch 1)")
    k.add_argument("--th-pix", help="comma-separated th_pix grid the cache answers for (default 0.5..0.99)")
    k.add_argument("--edge-size", type=int, default=3, help="edge masking: structuring element size s (odd)")
    k.add_argument("--edge-window", type=int, default=7, help="edge masking: median window w (odd)")
    k.set_defaults(run=_cache)

    s = sub.add_parser("search", help="choose exits, configurations and thresholds from an evaluation cache",
                       description="Exhaustive search of MESS instances on an evaluation cache; prints the results "
                       "table and writes the chosen instance as JSON.")
    s.add_argument("--cache", required=True, help="evaluation cache (python -m mess_core cache) to tune on")
    s.add_argument("--eval-cache", help="a cache of another split: every instance is also reported there")
    s.add_argument("--objective", choices=("min-cost", "max-acc", "pareto"), default="min-cost")
    s.add_argument("--max-drop", type=float, default=1.0, help="min-cost: allowed mIoU drop in percentage points")
    s.add_argument("--budget", type=float, default=1.0, help="max-acc: cost budget as a multiple of the backbone's")
    s.add_argument("--mode", choices=("budgeted", "anytime", "input-dependent"), default="input-dependent")
    s.add_argument("--cost", choices=("flops", "latency"), default="flops", help="latency needs a cache built with --latency")
    s.add_argument("--max-exits", type=int, default=2, help="most early exits an instance keeps (default 2)")
    s.add_argument("--exit-ids", help="comma-separated candidate exits the search may keep (default: all)")
    s.add_argument("--th-pix", help="comma-separated th_pix values (on the cache's grid)")
    s.add_argument("--th-img", help="comma-separated th_img values")
    s.add_argument("--policy", choices=("mess", "plain", "naive"), default="mess",
                   help="image confidence: edge-masked fraction (mess), unmasked fraction (plain), mean (naive)")
    s.add_argument("--out", help="instance JSON to write (default: next to the cache)")
    s.add_argument("--front-csv", help="pareto: also write the front as CSV")
    s.set_defaults(run=_search)
    b = sub.add_parser("bench", help="time the original model and deployed instances side by side (eager, "
                       "onnxruntime, CUDA when present)")
    b.add_argument("--multi-exit", required=True, help="multi_exit.pt written by stage 2")
    b.add_argument("--instance", action="append", default=[], help="an instance JSON from the search (repeatable)")
    b.add_argument("--data", default="synthetic")
    b.add_argument("--data-root")
    b.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    b.add_argument("--split", default="val")
    b.add_argument("--size", type=_size, metavar="HxW", help="resize every image")
    b.add_argument("--images", type=int, default=16, help="how many images of the split to time on")
    b.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    b.add_argument("--repeats", type=int, default=5, help="timed rounds after 2 warm-up rounds")
    b.add_argument("--engines", nargs="+", default=["eager", "onnxruntime"], choices=["eager", "onnxruntime"])
    b.add_argument("--skip", nargs="*", default=[], choices=["cuda"], help="leave out CUDA even when present")
    b.add_argument("--out", help="write every measurement as JSON")
    b.add_argument("--into-cache", help="write the per-stage and per-head latency into this evaluation cache")
    b.set_defaults(run=_bench)
    from .study import add_parser as add_study_parser

    add_study_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
