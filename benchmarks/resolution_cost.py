"""What stage 1 (exit-aware training) and inference cost at 360x480 against 180x240 on this machine: what a study
at CamVid's full 360x480 would cost to build, where one does not fit the build budget.

Usage:
    .venv/bin/python -m benchmarks.resolution_cost [--rounds 5] [--batch-size 8]

Builds the stage-1 network (MobileNetV2-FCN, 6 exits, the light exit at each) once per input size and times, in
alternating rounds so that both sizes see the same machine load, one training step (forward of every exit, the
exit-aware loss, backward, AdamW step) on a batch of random images and labels, and one batch-1 eval forward of the
backbone. Prints the median seconds of each, their ratios, and the GFLOPs ratio (torch.utils.flop_counter).
"""

from __future__ import annotations

import argparse
import time

import torch

from mess_core import models
from mess_core.data import SyntheticSegmentation
from mess_core.train import TrainConfig, build_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    info = SyntheticSegmentation(split="val", length=1).info
    sizes = {"180x240": (180, 240), "360x480": (360, 480)}
    runs = {}
    for name, size in sizes.items():
        cfg = TrainConfig(
            stage="pretrain", out="unused", crop=size, num_exits=6, optimizer="adamw", lr=0.002, progress=False
        )
        torch.manual_seed(0)
        task = build_task(cfg, models.create("mobilenetv2_fcn", num_classes=11), info)
        optimizer = torch.optim.AdamW(task.trainable_parameters(), lr=0.002)
        images = torch.randn(args.batch_size, 3, *size)
        labels = torch.randint(0, 11, (args.batch_size, *size))
        runs[name] = (task, optimizer, images, labels, size)
    times: dict[str, dict[str, list[float]]] = {n: {"train step": [], "inference (batch 1)": []} for n in sizes}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for name, (task, optimizer, images, labels, size) in runs.items():
            task.set_train_mode()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            outputs = task.module(images, **task.forward_kwargs(round_ + 1))
            loss, _ = task.loss(outputs, labels, round_ + 1, float(labels.numel()))
            loss.backward()
            optimizer.step()
            train = time.perf_counter() - start
            task.net.eval()
            with torch.no_grad():
                start = time.perf_counter()
                task.net.forward_features(images[:1])
                infer = time.perf_counter() - start
            if round_:
                times[name]["train step"].append(train)
                times[name]["inference (batch 1)"].append(infer)
    median = {n: {k: sorted(v)[len(v) // 2] for k, v in t.items()} for n, t in times.items()}
    gflops = {n: sum(runs[n][0].net.stage_flops(runs[n][4])) / 1e9 for n in sizes}
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"{args.rounds} rounds (medians)\n"
    )
    print(f"{'':22} {'180x240':>10} {'360x480':>10} {'ratio':>7}")
    for key in ("train step", "inference (batch 1)"):
        a, b = median["180x240"][key], median["360x480"][key]
        print(f"{key + ' s':22} {a:>10.3f} {b:>10.3f} {b / a:>7.2f}")
    print(
        f"{'backbone GFLOPs':22} {gflops['180x240']:>10.3f} {gflops['360x480']:>10.3f} "
        f"{gflops['360x480'] / gflops['180x240']:>7.2f}"
    )


if __name__ == "__main__":
    main()
