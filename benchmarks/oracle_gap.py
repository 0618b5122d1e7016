"""How far the greedy oracle is from the exact optimum, on sub-problems of a real evaluation cache.

Usage:
    .venv/bin/python -m benchmarks.oracle_gap --cache FILE [--images 12] [--trials 200] [--drop 0.1 1 2]

Each trial draws ``--images`` images of the cache and an instance with one or two kept exits (random exits and
configurations), then solves "least average cost with the sub-problem's mIoU >= its final-exit mIoU - drop" twice:
greedily (:func:`mess_core.search.oracle.assign`, what studies report) and exactly, by enumerating every assignment of
images to outputs. Prints how often the greedy is optimal and its worst and mean excess cost over the optimum.
"""

from __future__ import annotations

import argparse

import numpy as np

from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance, KeptExit, output_costs
from mess_core.search.oracle import _miou, assign, exact_assign


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--drop", type=float, nargs="+", default=[0.1, 1.0, 2.0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cache = EvaluationCache.load(args.cache)
    rng = np.random.default_rng(args.seed)
    print(
        f"cache {args.cache}: {cache.num_images} images; sub-problems of {args.images} images, {args.trials} trials "
        "per drop"
    )
    print(f"{'drop pp':>8} {'feasible':>9} {'greedy optimal':>15} {'mean excess':>12} {'worst excess':>13}")
    for drop in args.drop:
        optimal, excess, feasible = 0, [], 0
        for _ in range(args.trials):
            images = rng.choice(cache.num_images, args.images, replace=False)
            k = int(rng.integers(1, 3))
            exits = sorted(rng.choice(np.arange(1, cache.num_exits), k, replace=False).tolist())
            inst = Instance.input_dependent(
                [KeptExit(int(e), cache.configs[rng.integers(len(cache.configs))], 0.0) for e in exits]
            )
            rows = [cache.head_index(e.exit, e.config) for e in inst.exits] + [cache.final_head]
            tp = cache.tp[images][:, rows].astype(np.float64)
            pred = cache.pred[images][:, rows].astype(np.float64)
            label = cache.label[images].sum(0)
            costs = output_costs(cache, inst)
            target = float(_miou(tp[:, -1].sum(0), pred[:, -1].sum(0), label.astype(np.float64))) - drop / 100
            a = assign(tp[None], pred[None], costs[None], label, target=target)[0]
            exact, best = exact_assign(tp, pred, costs, label, target=target)
            if exact is None:
                continue
            feasible += 1
            greedy = float(costs[a].mean())
            excess.append(greedy / best - 1)
            optimal += greedy <= best + 1e-12
        ex = np.asarray(excess)
        print(f"{drop:>8g} {feasible:>9} {optimal / max(feasible, 1):>14.1%} {ex.mean():>12.2%} {ex.max():>13.2%}")


if __name__ == "__main__":
    main()
