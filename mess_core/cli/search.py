"""``search``: choose exits, configurations and thresholds from an evaluation cache."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ..evaluate.cache import EvaluationCache
from ..evaluate.instance import Instance, outcome_figures
from ..io import atomic_open
from ..search.constrained import SearchResult, search
from ..search.problem import Objective, SearchSpace
from ..search.report import format_table, results_table, with_drop_intervals
from ..search.uncertainty import DEFAULT_LEVEL, DropInterval, drop_interval
from .args import (
    confidence_level,
    declare_files,
    fractions,
    ints,
    non_negative_float,
    output_file,
    positive_float,
    positive_int,
)


def add_parser(sub: Any) -> None:
    s = sub.add_parser(
        "search",
        help="choose exits, configurations and thresholds from an evaluation cache",
        description="Exhaustive search of MESS instances on an evaluation cache; prints the results "
        "table and writes the chosen instance as JSON.",
    )
    s.add_argument("--cache", required=True, help="evaluation cache (python -m mess_core cache) to tune on")
    s.add_argument("--eval-cache", help="a cache of another split: every instance is also reported there")
    s.add_argument("--objective", choices=("min-cost", "max-acc", "pareto"), default="min-cost")
    s.add_argument(
        "--max-drop", type=non_negative_float, default=1.0, help="min-cost: allowed mIoU drop in percentage points"
    )
    s.add_argument(
        "--confidence",
        type=confidence_level,
        help="min-cost: keep the drop within --max-drop at this confidence (e.g. 0.9: the one-sided "
        "bootstrap upper bound over the images), not only on average; chosen among the Pareto front",
    )
    s.add_argument(
        "--fresh-images",
        type=positive_int,
        metavar="M",
        help="with --confidence: bound the drop a fresh sample of M images would show (wider: that sample "
        "has its own noise), e.g. the size of the split you will be checked on",
    )
    s.add_argument(
        "--block",
        type=positive_int,
        metavar="B",
        help="with --confidence: resample scene blocks of B consecutive images of a group instead of "
        "single images (frames of one drive are not independent; e.g. 10)",
    )
    s.add_argument(
        "--budget", type=positive_float, default=1.0, help="max-acc: cost budget as a multiple of the backbone's"
    )
    s.add_argument("--mode", choices=("budgeted", "anytime", "input-dependent"), default="input-dependent")
    s.add_argument(
        "--cost", choices=("flops", "latency"), default="flops", help="latency needs a cache built with --latency"
    )
    s.add_argument("--max-exits", type=positive_int, default=2, help="most early exits an instance keeps (default 2)")
    s.add_argument("--exit-ids", type=ints, help="comma-separated candidate exits the search may keep (default: all)")
    s.add_argument("--th-pix", type=fractions, help="comma-separated th_pix values (on the cache's grid)")
    s.add_argument("--th-img", type=fractions, help="comma-separated th_img values")
    s.add_argument(
        "--policy",
        choices=("mess", "plain", "naive"),
        default="mess",
        help="image confidence: edge-masked fraction (mess), unmasked fraction (plain), mean (naive)",
    )
    s.add_argument("--out", type=output_file, help="instance JSON to write (default: next to the cache)")
    s.add_argument("--front-csv", type=output_file, help="pareto: also write the front as CSV")
    declare_files(s, reads=("cache", "eval_cache"), writes=("out", "front_csv"))
    s.set_defaults(run=run)


def _space(args: argparse.Namespace) -> SearchSpace:
    fields: dict[str, Any] = {"max_exits": args.max_exits, "policy": args.policy}
    for field, value in (("th_pix", args.th_pix), ("th_img", args.th_img), ("exits", args.exit_ids)):
        if value:
            fields[field] = value
    return SearchSpace(**fields)


def _figures(
    cache: EvaluationCache, instance: Any, confidence: float, block: int | None = None
) -> tuple[dict[str, Any], DropInterval]:
    """The instance file's figures on one split (mIoU, costs, and the drop with its bootstrap interval), and that
    interval, which the summary prints."""
    interval = drop_interval(cache, instance, confidence=confidence, block=block)
    return {**outcome_figures(cache, instance), "uncertainty": interval.to_dict()}, interval


def _option_error(args: argparse.Namespace) -> str | None:
    """What makes the options contradict each other, or None."""
    if args.confidence is not None and args.objective != "min-cost":
        return f"--confidence applies to --objective min-cost, not {args.objective}"
    if args.fresh_images is not None and args.confidence is None:
        return "--fresh-images needs --confidence"
    if args.block is not None and args.confidence is None:
        return "--block needs --confidence"
    return None


def _objective(args: argparse.Namespace) -> Objective:
    return Objective(
        args.objective,
        max_drop=args.max_drop if args.objective == "min-cost" else None,
        budget=args.budget if args.objective == "max-acc" else None,
        confidence=args.confidence,
        fresh_images=args.fresh_images,
        block=args.block,
    )


def _print_heading(cache: EvaluationCache, mode: str, wanted: str, unit: str, result: SearchResult) -> None:
    """What was searched, for what, and how much of the space was scored."""
    meta = cache.meta
    print(
        f"{meta['model']} on {meta['dataset']} {meta['split']} ({cache.num_images} images, "
        f"{'x'.join(map(str, meta['input_size']))}); {mode}; {wanted}; cost in {unit}"
    )
    print(
        f"searched {result.space_size:,} instances ({result.evaluated:,} scored after lossless pruning) in "
        f"{1e3 * result.seconds:.0f} ms"
    )


def _print_front(front: pd.DataFrame, front_csv: str | None) -> None:
    """The Pareto front, also written to ``front_csv`` when given."""
    print(front[["cost", "miou", "description"]].to_string(index=False))
    if front_csv:
        with atomic_open(front_csv, "w") as f:
            front.drop(columns=["instance"]).to_csv(f, index=False)
        print(f"wrote {front_csv}")


def _print_table(
    cache: EvaluationCache,
    eval_cache: EvaluationCache | None,
    mode: str,
    unit: str,
    space: SearchSpace,
    confidence: float,
) -> None:
    """The results table of ``cache``, with ``eval_cache``'s figures as starred columns when given."""
    table = with_drop_intervals(
        results_table(cache, mode=mode, unit=unit, space=space, eval_cache=eval_cache),
        cache,
        confidence=confidence,
    )
    title = (
        f"\nresults on {cache.meta['split']}"
        + (f" (* = {eval_cache.meta['split']})" if eval_cache else "")
        + "; speedup in GFLOPs vs the backbone"
    )
    print(format_table(table, title=title))


def _save_choice(
    args: argparse.Namespace,
    cache: EvaluationCache,
    eval_cache: EvaluationCache | None,
    instance: Instance,
    wanted: str,
    unit: str,
    confidence: float,
) -> None:
    """Write the chosen instance's file (what it was chosen for and its figures on each split) and print its
    drops."""
    meta = cache.meta
    tuned, tuned_interval = _figures(cache, instance, confidence, args.block)
    extra = {
        "objective": wanted,
        "cost_unit": unit,
        "source": {k: meta.get(k) for k in ("model", "dataset", "split", "input_size")}
        | {"num_classes": cache.num_classes, "num_exits": cache.num_exits, "cache": args.cache},
        "tuned": tuned,
    }
    fresh = (
        None
        if args.fresh_images is None
        else drop_interval(cache, instance, confidence=confidence, fresh_images=args.fresh_images)
    )
    if fresh is not None:
        extra["tuned"]["uncertainty_fresh"] = fresh.to_dict()
    reported_interval = None
    if eval_cache is not None:
        reported, reported_interval = _figures(eval_cache, instance, confidence, args.block)
        extra["reported"] = {"split": eval_cache.meta.get("split"), **reported}
    out = args.out or str(Path(args.cache).with_suffix("")) + ".instance.json"
    instance.save(out, **extra)
    print(f"\nchosen: {instance.describe()}")
    print(f"  on {meta['split']}: {tuned_interval.describe()}")
    if fresh is not None:
        print(f"  predicted: {fresh.describe()}")
    if reported_interval is not None:
        print(f"  on {eval_cache.meta['split']}*: {reported_interval.describe()}")
    print(f"wrote {out}")


def run(args: argparse.Namespace) -> int:
    cache = EvaluationCache.load(args.cache)
    eval_cache = EvaluationCache.load(args.eval_cache) if args.eval_cache else None
    error = _option_error(args)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    objective = _objective(args)
    space = _space(args)
    unit = "ms" if args.cost == "latency" else "gflops"
    wanted = objective.describe()
    result = search(cache, objective, mode=args.mode, unit=unit, space=space)
    _print_heading(cache, args.mode, wanted, unit, result)
    if objective.kind == "pareto":
        _print_front(result.front, args.front_csv)
        return 0
    confidence = args.confidence or DEFAULT_LEVEL
    _print_table(cache, eval_cache, args.mode, unit, space, confidence)
    if result.instance is None:
        # a constraint nothing meets is a request that cannot be met as given, not a bug: status 2, as bad input
        print(
            f"\nerror: no instance meets '{objective.describe()}'; nothing written: loosen it (a larger --budget "
            "or --max-drop)",
            file=sys.stderr,
        )
        return 2
    _save_choice(args, cache, eval_cache, result.instance, wanted, unit, confidence)
    return 0
