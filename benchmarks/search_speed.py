"""How fast the exit search answers on a real evaluation cache (what the app's sliders wait for).

Usage:
    .venv/bin/python -m benchmarks.search_speed --cache FILE [--repeats 5] [--max-exits 2 3]

Prints, for every objective of the results table and for the full Pareto front: the wall-clock time of the first
search after the cache is loaded (cold: nothing derived from the cache yet) and the median of ``--repeats``, the
size of the space, how many instances were scored after lossless pruning, and instances per second (space size /
time: what exhaustive enumeration would have had to score).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from mess_core.evaluate.cache import EvaluationCache
from mess_core.search.constrained import search, uniform_exit
from mess_core.search.problem import Objective, SearchSpace


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-exits", type=int, nargs="+", default=[2])
    args = parser.parse_args()

    t0 = time.perf_counter()
    cache = EvaluationCache.load(args.cache)
    load = time.perf_counter() - t0
    cpu = platform.processor() or platform.machine()
    print(
        f"cache {args.cache}: {cache.meta['model']} on {cache.meta['dataset']} {cache.meta['split']}, "
        f"{cache.num_images} images, {cache.num_exits} exits x {len(cache.configs)} configurations; loaded in "
        f"{1e3 * load:.0f} ms"
    )
    print(f"machine: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}\n")
    print(
        f"{'search':<44}{'max exits':>9}{'first ms':>10}{'median ms':>10}{'space':>16}{'scored':>13}{'instances/s':>15}"
    )
    for max_exits in args.max_exits:
        space = SearchSpace(max_exits=max_exits)
        cases = [
            (
                "input-dependent min-cost <= 1pp",
                lambda: search(cache, Objective("min-cost", max_drop=1.0), space=space),
            ),
            (
                "input-dependent min-cost <= 0.1pp",
                lambda: search(cache, Objective("min-cost", max_drop=0.1), space=space),
            ),
            ("input-dependent max-acc <= 1x", lambda: search(cache, Objective("max-acc", budget=1.0), space=space)),
            ("input-dependent Pareto front", lambda: search(cache, Objective("pareto"), space=space)),
            (
                "naive policy min-cost <= 1pp",
                lambda: search(
                    cache, Objective("min-cost", max_drop=1.0), space=SearchSpace(max_exits=max_exits, policy="naive")
                ),
            ),
        ]
        if max_exits == args.max_exits[0]:
            cases += [
                ("uniform-exit min-cost <= 1pp", lambda: uniform_exit(cache, Objective("min-cost", max_drop=1.0))),
                (
                    "budgeted min-cost <= 1pp",
                    lambda: search(cache, Objective("min-cost", max_drop=1.0), mode="budgeted"),
                ),
            ]
        for name, fn in cases:
            first, seconds, result = timed(fn, args.repeats if max_exits <= 2 else 1)
            print(
                f"{name:<44}{max_exits:>9}{1e3 * first:>10.1f}{1e3 * seconds:>10.1f}"
                f"{result.space_size:>16,}{result.evaluated:>13,}"
                f"{result.space_size / seconds:>15,.0f}"
            )


if __name__ == "__main__":
    main()
