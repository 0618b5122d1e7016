"""Do a study's choices hold on another split? Thresholds tuned on one split, reported on the other, both ways.

Usage:
    .venv/bin/python benchmarks/cross_split.py precomputed/camvid-mobilenetv2-fcn [--split train] [--work DIR]

A packed study ships its heavy heads only at the exits a stored instance uses, so its weights do not form one exit
space; this script keeps the configurations every exit carries (a copy in ``--work``, default
``runs/<study>/cross-split``), builds the evaluation cache of the study's tuning split and of ``--split`` from it at
the study's input size (skipped when the files exist), and prints:

A. the study's own instances (tuned on its split) evaluated on ``--split``: does the promised drop hold there?
B. the results table tuned on ``--split`` and reported on the study's split.

Drops are against the final exit on the split where they are measured. Every figure comes from
``mess_core.instance.evaluate`` and ``mess_core.report.results_table`` on the caches; nothing is simulated.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mess_core import checkpoint
from mess_core.artifacts import load_multi_exit
from mess_core.cache import EvaluationCache, build_cache
from mess_core.data import build_dataset, eval_transform
from mess_core.instance import Instance, evaluate
from mess_core.report import results_table
from mess_core.study import open_study


def uniform_weights(src: Path, dst: Path) -> list[str]:
    """Copy ``src`` keeping only the configurations every exit carries; returns the configurations kept."""
    payload = checkpoint.load(src)
    space = payload["meta"]["exit_space"]
    common = sorted(set.intersection(*(set(configs) for configs in space.values())))
    dropped = tuple(f"{i}.{c}." for i, configs in space.items() for c in configs if c not in common)
    for i in space:
        space[i] = [c for c in space[i] if c in common]
    payload["heads"] = {k: v for k, v in payload["heads"].items() if not k.startswith(dropped)}
    checkpoint.save(dst, payload)
    return common


def split_cache(weights: Path, study, split: str, out: Path) -> EvaluationCache:
    if out.is_file():
        return EvaluationCache.load(out)
    cfg = study.manifest["config"]
    net, meta = load_multi_exit(weights)
    dataset = build_dataset(cfg["dataset"], root=cfg.get("data_root"), split=split,
                            transform=eval_transform(size=tuple(study.manifest["input_size"])),
                            **(cfg.get("data_options") or {}))
    print(f"building the {split} cache ({len(dataset)} images)...", flush=True)
    cache = build_cache(net, dataset, model=meta["model"], dataset_name=cfg["dataset"], split=split,
                        extra_meta={"source": str(weights)})
    cache.save(out)
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study")
    parser.add_argument("--split", default="train", help="the other split (default train)")
    parser.add_argument("--work", help="folder for the weights copy and the caches")
    args = parser.parse_args()
    study = open_study(args.study)
    work = Path(args.work or f"runs/{study.name}/cross-split")
    work.mkdir(parents=True, exist_ok=True)
    weights = work / "multi_exit_uniform.pt"
    if not weights.is_file():
        kept = uniform_weights(study.path / "multi_exit.pt", weights)
        print(f"{len(kept)} configurations at every exit")
    tune_split = study.cache.meta.get("split", "val")
    tuned = split_cache(weights, study, tune_split, work / f"{tune_split}.npz")
    other = split_cache(weights, study, args.split, work / f"{args.split}.npz")
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 90)

    def crossed(table: pd.DataFrame, there: EvaluationCache, tuned_on: str, reported_on: str) -> pd.DataFrame:
        """Each instance of ``table`` (tuned on ``tuned_on``) with its figures on the other split's cache ``there``:
        mIoU, drop against that split's final exit and speedup in GFLOPs."""
        rows = []
        for _, r in table.iterrows():
            if r["instance"] is None:
                continue
            base, found = (evaluate(there, i, unit="gflops") for i in (Instance(r["instance"].mode), r["instance"]))
            rows.append({"row": r["row"], f"mIoU {tuned_on}": round(100 * r["miou"], 2),
                         f"speedup {tuned_on}": round(r["speedup"], 2),
                         f"mIoU {reported_on}": round(100 * found.miou, 2),
                         f"drop {reported_on} pp": round(100 * (base.miou - found.miou), 2),
                         f"speedup {reported_on}": round(base.cost / found.cost, 2), "exits": r["exits"]})
        return pd.DataFrame(rows)

    print(f"\nA. the study's instances (tuned on {tune_split}) on {args.split} "
          f"(final exit there {100 * other.head_miou()[other.final_head]:.2f}%)")
    print(crossed(study.results("input-dependent"), other, tune_split, args.split).to_string(index=False))
    print(f"\nB. tuned on {args.split}, reported on {tune_split} "
          f"(final exit there {100 * tuned.head_miou()[tuned.final_head]:.2f}%)")
    table = results_table(other, eval_cache=tuned, oracle=False)
    print(crossed(table, tuned, args.split, tune_split).to_string(index=False))

if __name__ == "__main__":
    main()
