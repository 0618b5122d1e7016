"""How each objective's choice moves from one scene to another, and which search rule keeps its promise there.

Usage:
    .venv/bin/python -m benchmarks.transfer_rules CACHE.npz [--parts 2] [--block 10] [--drops 1 0.1]

The cache's images are cut into scene parts (:func:`mess_core.search.transfer.scene_parts`: its groups, or contiguous
runs of each group's frames). For each ordered pair (tune on A, report on B) and each rule, the cheapest instance
promising a drop <= D is chosen on A and scored on B against B's own final exit. Rules: the plain min-cost search; the
confidence-aware search with a predictive bound for a fresh sample of |B| images, over single images ("iid") and over
scene blocks of --block consecutive frames ("blocks"); and two walks up A's Pareto front by cost, taking the first
instance that also keeps the drop when every th_img is lowered by --shift ("shift": decisions stable under a
confidence rise), or on each of A's own two scene parts ("every part"). Prints one line per (rule, D, direction)
and a summary per (rule, D): how often the promise held on the other part and the mean speedup kept there.

Then the max-acc row (best mIoU at <= 1x the backbone's cost; its promise: not below the backbone): the plain search,
and "surest gain at C": the front instance at <= 1x cost with the lowest predictive upper bound of the drop at
confidence C over scene blocks (the gain most sure to hold), or the backbone when no bound is below 0 ("or the
backbone"). Nothing is simulated: every figure is mess_core.evaluate.instance.evaluate on the cache.
"""

from __future__ import annotations

import argparse

import pandas as pd

from mess_core.evaluate.cache import EvaluationCache
from mess_core.evaluate.instance import Instance, KeptExit, evaluate
from mess_core.search.constrained import confident_search, search
from mess_core.search.problem import Objective, SearchSpace
from mess_core.search.transfer import part_names, scene_parts
from mess_core.search.uncertainty import drop_intervals


def drop_of(cache: EvaluationCache, instance: Instance) -> float:
    return 100 * (evaluate(cache, Instance(instance.mode)).miou - evaluate(cache, instance).miou)


def shifted(instance: Instance, shift: float) -> Instance:
    """``instance`` with every th_img lowered by ``shift``: what it does when images are that much more confident."""
    kept = tuple(KeptExit(e.exit, e.config, max(0.0, e.th_img - shift)) for e in instance.exits)
    return Instance(instance.mode, kept, instance.policy)


def front_walk(front: pd.DataFrame, max_drop: float, keeps) -> Instance:
    """The cheapest front instance whose drop test ``keeps`` passes (the backbone when none does)."""
    for _, row in front.sort_values("cost").iterrows():
        if keeps(row["instance"]):
            return row["instance"]
    return Instance("input-dependent")


def surest_gain(
    cache: EvaluationCache, front: pd.DataFrame, confidence: float, block: int, *, or_backbone: bool
) -> Instance:
    """The front instance at <= 1x the backbone's cost whose predictive upper bound of the drop is lowest (with
    ``or_backbone``: the backbone unless that bound is below 0)."""
    base = evaluate(cache, Instance("input-dependent")).cost
    within = front[front["cost"] <= base + 1e-9]
    if within.empty:
        return Instance("input-dependent")
    bounds = drop_intervals(
        cache, list(within["instance"]), confidence=confidence, fresh_images=cache.num_images, block=block
    )
    best = min(range(len(bounds)), key=lambda i: bounds[i].upper)
    if or_backbone and bounds[best].upper >= 0:
        return Instance("input-dependent")
    return within["instance"].iloc[best]


def max_acc_rules(cache: EvaluationCache, parts: list[EvaluationCache], names: list[str], block: int) -> pd.DataFrame:
    rows = []
    space = SearchSpace()
    for a, tuned in enumerate(parts):
        front = search(tuned, Objective("pareto"), space=space).front
        chosen = {"plain": search(tuned, Objective("max-acc", budget=1.0), space=space).instance}
        for c in (0.5, 0.9):
            chosen[f"surest gain at {c:g}"] = surest_gain(tuned, front, c, block, or_backbone=False)
            chosen[f"surest gain at {c:g} or the backbone"] = surest_gain(tuned, front, c, block, or_backbone=True)
        for b, other in enumerate(parts):
            if a == b:
                continue
            base = evaluate(other, Instance("input-dependent"))
            for rule, instance in chosen.items():
                there = evaluate(other, instance)
                lost = 100 * (base.miou - there.miou)
                rows.append(
                    {
                        "rule": rule,
                        "tuned on": names[a],
                        "reported on": names[b],
                        "gain tuned pp": round(-drop_of(tuned, instance), 2) + 0.0,
                        "gain there pp": round(-lost, 2) + 0.0,
                        "speedup there": round(base.cost / there.cost, 2),
                        "held": lost <= 1e-9,
                        "exits": instance.describe(),
                    }
                )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache")
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--confidence", type=float, default=0.9)
    parser.add_argument("--drops", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--shift", type=float, default=0.1)
    args = parser.parse_args()
    cache = EvaluationCache.load(args.cache)
    parts = [cache.subset(p) for p in scene_parts(cache, args.parts)]
    names = part_names(cache, args.parts)
    space = SearchSpace()
    rows = []
    for a, tuned in enumerate(parts):
        front = search(tuned, Objective("pareto"), space=space).front
        for b, other in enumerate(parts):
            if a == b:
                continue
            base = evaluate(other, Instance("input-dependent"))
            for drop in args.drops:
                rules = {
                    "plain": Objective("min-cost", max_drop=drop),
                    "iid": Objective(
                        "min-cost", max_drop=drop, confidence=args.confidence, fresh_images=other.num_images
                    ),
                    f"blocks of {args.block}": Objective(
                        "min-cost",
                        max_drop=drop,
                        confidence=args.confidence,
                        fresh_images=other.num_images,
                        block=args.block,
                    ),
                }
                chosen = {}
                for rule, objective in rules.items():
                    found = (
                        search(tuned, objective, space=space)
                        if objective.confidence is None
                        else confident_search(tuned, objective, space=space, front=front)
                    )
                    chosen[rule] = found.instance
                halves = [tuned.subset(p) for p in scene_parts(tuned, 2)]
                chosen[f"shift {args.shift:g}"] = front_walk(
                    front, drop, lambda i: drop_of(tuned, i) <= drop and drop_of(tuned, shifted(i, args.shift)) <= drop
                )
                chosen["every part"] = front_walk(
                    front, drop, lambda i: drop_of(tuned, i) <= drop and all(drop_of(h, i) <= drop for h in halves)
                )
                tuned_base = evaluate(tuned, Instance("input-dependent"))
                for rule, instance in chosen.items():
                    there = evaluate(other, instance)
                    lost = 100 * (base.miou - there.miou)
                    rows.append(
                        {
                            "rule": rule,
                            "max drop": drop,
                            "tuned on": names[a],
                            "reported on": names[b],
                            "speedup tuned": round(tuned_base.cost / evaluate(tuned, instance).cost, 2),
                            "drop there pp": round(lost, 2),
                            "speedup there": round(base.cost / there.cost, 2),
                            "held": lost <= drop + 1e-9,
                            "exits": instance.describe(),
                        }
                    )
    frame = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 80)
    print(f"{args.cache}: {cache.num_images} images in {args.parts} scene parts ({', '.join(names)})\n")
    print(frame.to_string(index=False))
    summary = frame.groupby(["rule", "max drop"], sort=False).agg(
        held=("held", "mean"), speedup_there=("speedup there", "mean"), worst_drop=("drop there pp", "max")
    )
    print("\n" + summary.round(2).to_string())
    print("\nmax-acc at <= 1x cost (promise: not below the backbone):\n")
    print(max_acc_rules(cache, parts, names, args.block).to_string(index=False))


if __name__ == "__main__":
    main()
