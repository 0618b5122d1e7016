"""Promises you can trust: does a promised mIoU drop hold on images the search never saw?

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.confidence_coverage [CACHE ...] [--splits 100] [--confidence 0.9]
        [--max-drops 1,0.5] [--seed 0]

For each cache (default: the shipped CamVid and synthetic val caches) it draws ``--splits`` random halves of the
images; on each it tunes on one half (input-dependent mode, the default search space: max_exits 2) with

* the plain objective: the cheapest instance whose mIoU drop against the backbone is <= max_drop on the tuning half;
* the confidence-aware one: the cheapest (Pareto-front) instance whose one-sided bootstrap upper bound of the drop
  at ``--confidence`` is <= max_drop (``search --confidence``);
* the same with the predictive bound for a fresh sample the size of the held-out half
  (``Objective(..., confidence=c, fresh_images=M)``): the promise is then about the drop that half shows;

then measures the chosen instance's drop on the other half (against the backbone on that half). It prints, per cache,
objective and max_drop: how often the promise holds on the held-out half (drop <= max_drop), with a 95% Wilson
interval over the splits (splits share images, so it is indicative), the mean held-out speedup in GFLOPs against the
backbone, the mean drop promised (tuning half) and found (held-out half), and whether the confidence objective keeps
its promise at least as often as it says. Last, without any choice on the halves: one fixed instance (the plain
<= 1 pp choice on the whole cache) on the same halves, how often its held-out drop stays under the bounds computed
on the tuning half (separates the bootstrap's own accuracy from the search's selection). Every figure comes from
``mess_core.search.constrained`` and ``mess_core.evaluate.instance.evaluate`` on subsets of the caches
(``EvaluationCache.subset``); nothing is simulated.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import REPO
from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance, evaluate
from mess_core.search.constrained import confident_search, search
from mess_core.search.problem import Objective, SearchSpace
from mess_core.search.uncertainty import drop_interval

DEFAULT_CACHES = [
    REPO / "precomputed/camvid-mobilenetv2-fcn/val.npz",
    REPO / "precomputed/synthetic-mobilenetv2-fcn/val.npz",
]
MODE = "input-dependent"


def held_out(check: EvaluationCache, instance: Instance) -> tuple[float, float]:
    """The instance's drop (pp) against the backbone and its speedup in GFLOPs, on ``check``."""
    base, found = evaluate(check, Instance(MODE)), evaluate(check, instance)
    return 100 * (base.miou - found.miou), base.cost / found.cost


def one_split(
    cache: EvaluationCache, rng: np.random.Generator, max_drops: list[float], confidence: float, space: SearchSpace
) -> list[dict]:
    order = rng.permutation(cache.num_images)
    tune, check = cache.subset(order[: cache.num_images // 2]), cache.subset(order[cache.num_images // 2 :])
    front = search(tune, Objective("pareto"), mode=MODE, space=space).front  # shared by every max_drop
    rows = []
    for max_drop in max_drops:
        plain = search(tune, Objective("min-cost", max_drop=max_drop), mode=MODE, space=space)
        objective = Objective("min-cost", max_drop=max_drop, confidence=confidence)
        sure = confident_search(tune, objective, mode=MODE, space=space, front=front)
        ahead = confident_search(
            tune, dataclasses.replace(objective, fresh_images=check.num_images), mode=MODE, space=space, front=front
        )
        for name, result in (
            ("plain", plain),
            (f"confidence {confidence:g}", sure),
            (f"confidence {confidence:g}, fresh {check.num_images}", ahead),
        ):
            instance = result.instance or Instance(MODE)
            drop, speedup = held_out(check, instance)
            rows.append(
                {
                    "objective": name,
                    "max_drop": max_drop,
                    "promised": 100 * (result.reference_miou - result.miou) if result.instance is not None else 0.0,
                    "upper": (
                        result.interval.upper
                        if result.interval is not None  # the backbone: 0
                        else np.nan
                        if name == "plain"
                        else 0.0
                    ),
                    "held_out_drop": drop,
                    "kept": drop <= max_drop + 1e-9,
                    "speedup": speedup,
                    "backbone": not instance.exits,
                }
            )
    return rows


def fixed_instance(cache: EvaluationCache, splits: int, seed: int, confidence: float) -> str:
    """Coverage of the tuning half's bounds for one instance chosen on the whole cache (no choice on the halves)."""
    instance = search(cache, Objective("min-cost", max_drop=1.0), mode=MODE).instance or Instance(MODE)
    rng = np.random.default_rng(seed)
    under_population = under_fresh = 0
    gaps, margins = [], []
    for _ in range(splits):
        order = rng.permutation(cache.num_images)
        tune, check = cache.subset(order[: cache.num_images // 2]), cache.subset(order[cache.num_images // 2 :])
        drop, _ = held_out(check, instance)
        fresh = drop_interval(tune, instance, confidence=confidence, fresh_images=check.num_images)
        under_population += drop <= drop_interval(tune, instance, confidence=confidence).upper + 1e-9
        under_fresh += drop <= fresh.upper + 1e-9
        gaps.append(drop - fresh.point)
        margins.append(fresh.upper - fresh.point)
    share = (cache.label.max(0) / np.maximum(cache.label.sum(0), 1)).max()
    return (
        f"fixed instance {instance.describe()}: held-out drop <= the tuning half's {100 * confidence:g}% bound in "
        f"{100 * under_population / splits:.0f}% of splits (population bound), {100 * under_fresh / splits:.0f}% "
        f"(fresh-sample bound); fresh bound's mean margin over the tuned drop {np.mean(margins):.2f} pp, "
        f"{100 * confidence:g}th percentile of held-out minus tuned drop {np.quantile(gaps, confidence):.2f} pp; "
        f"largest share of a class's pixels in one image {100 * share:.0f}%"
    )


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def summarise(rows: pd.DataFrame, confidence: float) -> pd.DataFrame:
    out = []
    for (max_drop, objective), part in rows.groupby(["max_drop", "objective"], sort=False):
        k, n = int(part["kept"].sum()), len(part)
        lo, hi = wilson(k, n)
        target = confidence if objective.startswith("confidence") else np.nan
        out.append(
            {
                "max drop pp": max_drop,
                "objective": objective,
                "kept": f"{k}/{n} = {100 * k / n:.0f}%",
                "95% Wilson": f"{100 * lo:.0f}-{100 * hi:.0f}%",
                "mean speedup (held out)": round(float(part["speedup"].mean()), 2),
                "mean drop tuned pp": round(float(part["promised"].mean()), 2),
                "mean drop held out pp": round(float(part["held_out_drop"].mean()), 2),
                "sd drop held out pp": round(float(part["held_out_drop"].std()), 2),
                "held out <= tuned bound": (
                    f"{100 * (part['held_out_drop'] <= part['upper'] + 1e-9).mean():.0f}%"
                    if part["upper"].notna().any()
                    else "-"
                ),
                "backbone chosen": int(part["backbone"].sum()),
                "target met": ("yes" if k / n >= target else "NO") if np.isfinite(target) else "-",
            }
        )
    return pd.DataFrame(out)


def markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("caches", nargs="*", type=Path, default=DEFAULT_CACHES)
    p.add_argument("--splits", type=int, default=100)
    p.add_argument("--confidence", type=float, default=0.9)
    p.add_argument("--max-drops", default="1,0.5")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    max_drops = [float(v) for v in args.max_drops.split(",")]
    cpu = (
        next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
            platform.processor(),
        )
        if os.path.exists("/proc/cpuinfo")
        else platform.processor()
    )
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {cpu}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, no GPU used")
    space = SearchSpace()  # the default: max_exits 2, every exit and configuration, the default th_pix/th_img grids
    for path in args.caches:
        cache = EvaluationCache.load(path)
        rng = np.random.default_rng(args.seed)
        start = time.perf_counter()
        rows = pd.DataFrame(
            [r for _ in range(args.splits) for r in one_split(cache, rng, max_drops, args.confidence, space)]
        )
        seconds = time.perf_counter() - start
        print(
            f"\n{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {cache.num_images} images, "
            f"{args.splits} random halves ({cache.num_images // 2} tune / {cache.num_images - cache.num_images // 2}"
            f" held out), {MODE}, default space; {seconds:.0f} s"
        )
        print(markdown(summarise(rows, args.confidence)))
        print(fixed_instance(cache, args.splits, args.seed, args.confidence))
    return 0


if __name__ == "__main__":
    sys.exit(main())
