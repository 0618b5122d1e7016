"""Training throughput of the three stages, and what stage 2's one-backbone-pass design saves.

Prints, for one model and input size on this machine:

* images per second of each stage (backbone, pretrain, exits with the full default exit space), measured by the real
  training loop (``mess_core.train.fit``) over ``--steps`` optimiser steps after one warm-up step;
* for stage 2, in the same run: the time of one frozen backbone forward, of every head's forward and backward on
  those features, their sum, the measured step time, and the step time the backbone would cost if it ran once per
  head. The measured step must be close to "one backbone + all heads", never to "one backbone per head".

    .venv/bin/python -m benchmarks.train_throughput --model mobilenetv2_fcn --size 180 240
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from mess_core import models
from mess_core.train import TrainConfig, build_datasets, build_task, fit
from mess_core.train.distributed import setup


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenetv2_fcn")
    parser.add_argument("--size", type=int, nargs=2, default=(180, 240), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--exits", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3, help="timed optimiser steps per stage")
    parser.add_argument("--space", default="default", help="stage 2 exit space (default: all 30 configurations)")
    args = parser.parse_args()
    size = tuple(args.size)
    env = setup("cpu")
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"model {args.model}, input {size[0]}x{size[1]}, batch {args.batch_size}, N={args.exits}, "
        f"{args.steps} timed steps per stage\n"
    )

    rows = []
    stage2 = None
    with tempfile.TemporaryDirectory() as tmp:
        for stage in ("backbone", "pretrain", "exits"):
            cfg = TrainConfig(
                stage=stage,
                out=str(Path(tmp) / stage),
                model=args.model,
                crop=size,
                batch_size=args.batch_size,
                epochs=1,
                steps_per_epoch=args.steps + 1,
                num_exits=args.exits,
                exit_space=args.space,
                workers=2,
                progress=False,
                scale=(1.0, 1.0),
                data_options={"size": size},
            )
            train_set, _ = build_datasets(cfg)
            info = train_set.info
            torch.manual_seed(0)
            task = build_task(cfg, models.create(args.model, num_classes=info.num_classes), info)
            net = getattr(task, "net", None)
            step_times: list[float] = []
            last = [time.perf_counter()]

            def hook(*_):  # one call per optimiser step: the scheduler steps once per step
                now = time.perf_counter()
                step_times.append(now - last[0])
                last[0] = now

            fit_start = time.perf_counter()
            last[0] = fit_start
            optimizer_hooks = register_optimizer_step_post_hook(hook)
            try:
                fit(
                    task,
                    config=cfg,
                    env=env,
                    train_set=train_set,
                    val_set=None,
                    run_dir=Path(tmp) / stage,
                    ignore_index=info.ignore_index,
                    log=lambda m: None,
                )
            finally:
                optimizer_hooks.remove()
            timed = step_times[1:]  # the first step includes start-up (workers, allocator)
            step = sum(timed) / len(timed)
            rows.append((stage, step, args.batch_size / step))
            if stage == "exits":
                stage2 = (task, net, step, train_set)

    print(f"{'stage':<10} {'s/step':>8} {'images/s':>9}")
    for stage, step, ips in rows:
        print(f"{stage:<10} {step:>8.3f} {ips:>9.2f}")

    task, net, step, train_set = stage2
    heads = sum(len(net.heads[str(i)]) for i in range(1, net.num_exits))
    images = torch.stack([train_set[i][0] for i in range(args.batch_size)])
    labels = torch.stack([train_set[i][1] for i in range(args.batch_size)])
    net.stages.eval()
    net.heads.train()

    def backbone():
        with torch.no_grad():
            return net.forward_features(images)

    features, teacher = backbone()
    t_backbone = median_seconds(backbone, 3)
    num_valid = float((labels != info.ignore_index).sum())

    def all_heads(fused: bool = True):
        targets = task.exit_loss.targets(teacher, labels, ignore_index=info.ignore_index)
        total = 0
        for index, feat in enumerate(features, start=1):
            for head in net.heads[str(index)].values():
                logits = head(feat.detach(), images.shape[-2:])
                if fused:
                    total = total + task.exit_loss.sum(logits, targets) / num_valid
                else:  # autograd through the per-pixel maps: the textbook way
                    loss_map = task.exit_loss(logits, teacher, labels, ignore_index=info.ignore_index)
                    total = total + loss_map.sum() / num_valid
        total.backward()
        net.heads.zero_grad(set_to_none=True)

    t_heads = median_seconds(all_heads, 2)
    t_heads_maps = median_seconds(lambda: all_heads(fused=False), 2)
    print(
        f"\nstage 2, {heads} heads ({net.num_exits - 1} exits x {heads // (net.num_exits - 1)} configurations), "
        f"per batch of {args.batch_size}:"
    )
    print(f"  frozen backbone forward                 {t_backbone:8.3f} s")
    print(f"  all heads forward + backward            {t_heads:8.3f} s")
    print(f"  one backbone pass + all heads           {t_backbone + t_heads:8.3f} s")
    print(
        f"  measured training step (fit)            {step:8.3f} s   "
        f"(ratio to one pass + heads: {step / (t_backbone + t_heads):.2f})"
    )
    print(
        f"  if the backbone ran once per head       {heads * t_backbone + t_heads:8.3f} s   "
        f"({(heads * t_backbone + t_heads) / step:.1f}x the measured step)"
    )
    print(
        f"  all heads with per-pixel loss maps      {t_heads_maps:8.3f} s   "
        f"(the fused loss is {t_heads_maps / t_heads:.1f}x faster)"
    )
    epoch_steps = 367 // args.batch_size
    print(
        f"  a CamVid-sized epoch (367 images, {epoch_steps} steps): {epoch_steps * step / 60:.1f} min measured, "
        f"{epoch_steps * (heads * t_backbone + t_heads) / 60:.1f} min with a backbone pass per head"
    )


if __name__ == "__main__":
    main()
