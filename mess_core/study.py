"""Studies: a trained multi-exit network with everything the app and a reader need to judge it, built by one
reproducible command from a YAML file and opened again without re-running anything.

A study folder (``precomputed/<name>/``) holds

* ``multi_exit.pt``: the backbone and every exit head, in float16 (loading widens them back to float32);
* ``<split>.npz``: the evaluation cache of the split thresholds were tuned on (``val``);
* ``results.json``: the seed-shaped results table of every mode, each row with its instance;
* ``fronts.json``: the accuracy-vs-GFLOPs fronts of every mode and peer;
* ``profile.json``: the per-node workload profile and where the exits sit;
* ``study.yaml``: the configuration it was built from; ``manifest.json``: format, command, package versions, machine,
  wall time of each step and the SHA-256 of every file.

:func:`build` runs the steps in a work folder (backbone, stage 1, stage 2, cache, search) and skips what is already
done, so an interrupted build continues where it stopped; the study folder itself is written to a temporary folder
and renamed, so it is either complete or absent.

Example:
    >>> from mess_core.study import StudyConfig
    >>> cfg = StudyConfig.from_dict({"name": "demo", "model": "mobilenetv2_fcn", "crop": [96, 128]})
    >>> cfg.name, cfg.stage_fields("exits")["exit_loss"]
    ('demo', 'pfd')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from .cache import EvaluationCache
from .errors import MessError
from .exits import ExitSpec
from .instance import MODES, Instance
from .io import atomic_write_text, read_json
from .report import (TARGETS, Target, end_to_end_table, headline, headline_figures, markdown_report,  # noqa: F401
                     policy_comparison, row_id, with_row_ids)

__all__ = ["StudyError", "StudyConfig", "Study", "build", "list_studies", "open_study", "STUDY_FORMAT",
           "DEFAULT_STUDY"]

STUDY_FORMAT = "mess-study/1"
MANIFEST = "manifest.json"
WEIGHTS = "multi_exit.pt"
RESULTS = "results.json"
FRONTS = "fronts.json"
PROFILE = "profile.json"
CONFIG = "study.yaml"
# the shipped study the app opens first: the CPU reference study on real driving scenes (issue 7)
DEFAULT_STUDY = "camvid-mobilenetv2-fcn"
TRAINING = "training.json"
LATENCY = "latency.json"
ORACLE = "oracle.json"
STAGES = ("backbone", "pretrain", "exits")
_STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "backbone": {"epochs": 10, "optimizer": "adamw", "lr": 0.002},
    "pretrain": {"epochs": 4, "optimizer": "adamw", "lr": 0.0005},
    "exits": {"epochs": 3, "optimizer": "adamw", "lr": 0.002, "exit_loss": "pfd"},
}


class StudyError(MessError):
    """A study configuration or folder that cannot be used; the message names the file and what to do."""


# ----------------------------------------------------------------------------------------------------- config
@dataclass
class StudyConfig:
    """What a study is built from (the YAML file, flat, plus per-stage overrides under ``stages``)."""

    name: str
    description: str = ""
    model: str = "mobilenetv2_fcn"
    dataset: str = "synthetic"
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    num_exits: int = 6
    crop: tuple[int, int] = (180, 240)
    eval_size: tuple[int, int] | None = None
    exit_space: str = "default"
    batch_size: int = 16
    seed: int = 0
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    # "backbone": stage 1 (exit-aware pre-training) continues the plainly trained backbone, as in the paper, where
    # the backbone comes pretrained; "scratch": no plain backbone stage, stage 1 trains the network from random
    # weights with its exit losses from the first step (exit-aware training when no pretrained backbone exists)
    pretrain_from: str = "backbone"
    cache_split: str = "val"
    cache_limit: int | None = None
    latency: bool = True
    max_exits: int = 2
    # stage-2 variants for the training table: name -> {exit_loss, init ("pretrain" or "backbone"), other stage
    # settings}, each trained on ``variant_space`` (heads are independent given the frozen backbone)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    variant_space: str = "crm50p-b1-rdi-fcn"
    # thresholds are tuned on cache_split; when the dataset also has this split, every instance is reported there too
    report_split: str = "test"
    # latency of the results' instances against the original model, measured in one run (0 images: skip)
    bench_images: int = 16
    bench_batches: tuple[int, ...] = (1, 8)
    bench_repeats: int = 3
    bench_engines: tuple[str, ...] = ("eager",)
    # configurations whose heads ship only at exits where a stored instance uses them (their figures stay in the
    # caches): how a large exit space fits the size budget of precomputed/
    heavy_configs: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "study config") -> "StudyConfig":
        if not isinstance(data, dict):
            raise StudyError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise StudyError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if not data.get("name") or not str(data["name"]).replace("-", "").replace("_", "").isalnum():
            raise StudyError(f"{where}: 'name' must be letters, digits, '-' or '_' (it names the study folder)")
        for stage, overrides in (data.get("stages") or {}).items():
            if stage not in STAGES or not isinstance(overrides, dict):
                raise StudyError(f"{where}: stages.{stage}: expected one of {', '.join(STAGES)} with a mapping")
        for name, spec in (data.get("variants") or {}).items():
            if not isinstance(spec, dict) or spec.get("init", "pretrain") not in ("pretrain", "backbone"):
                raise StudyError(f"{where}: variants.{name}: expected a mapping with init 'pretrain' or 'backbone'")
        if data.get("pretrain_from", "backbone") not in ("backbone", "scratch"):
            raise StudyError(f"{where}: pretrain_from must be 'backbone' or 'scratch', not {data['pretrain_from']!r}")
        if data.get("pretrain_from") == "scratch":
            orphans = [n for n, spec in (data.get("variants") or {}).items() if spec.get("init") == "backbone"]
            if orphans:
                raise StudyError(f"{where}: variants {', '.join(orphans)} start from the backbone stage, which "
                                 "pretrain_from: scratch does not train; drop them or set init: pretrain")
        values = dict(data)
        for key in ("crop", "eval_size", "bench_batches", "bench_engines", "heavy_configs"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        cfg = cls(**values)
        from .training import TrainConfig

        for stage in STAGES:  # every stage's settings must make a valid training configuration now, not hours later
            try:
                TrainConfig(**cfg.stage_fields(stage), stage=stage, out=".")
            except (TypeError, MessError) as exc:
                raise StudyError(f"{where}: stages.{stage}: {exc}") from None
        for config in cfg.heavy_configs:
            try:
                ExitSpec.parse(config)
            except MessError as exc:
                raise StudyError(f"{where}: heavy_configs: {exc}") from None
        for name in cfg.variants:
            try:
                TrainConfig(**cfg.variant_fields(name), stage="exits", out=".")
            except (TypeError, MessError) as exc:
                raise StudyError(f"{where}: variants.{name}: {exc}") from None
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "StudyConfig":
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise StudyError(f"{path}: no such study configuration file") from None
        except yaml.YAMLError as exc:
            raise StudyError(f"{path}: not valid YAML ({exc})") from None
        return cls.from_dict(data, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("crop", "eval_size", "bench_batches", "bench_engines", "heavy_configs"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def variant_fields(self, name: str) -> dict[str, Any]:
        """Stage-2 settings of training-table variant ``name`` (its ``init`` stage left out): stage 2's, on
        ``variant_space``, for the whole schedule (no successive halving: the table compares fully trained heads)."""
        spec = {k: v for k, v in self.variants[name].items() if k != "init"}
        return {**self.stage_fields("exits"), "exit_space": self.variant_space, "prune_at": (), "prune_margin": (),
                **spec}

    def stage_fields(self, stage: str) -> dict[str, Any]:
        """The :class:`~mess_core.training.TrainConfig` fields of one stage (without ``stage``/``out``/``init``)."""
        common = {"model": self.model, "dataset": self.dataset, "data_root": self.data_root,
                  "data_options": dict(self.data_options), "num_exits": self.num_exits, "crop": tuple(self.crop),
                  "eval_size": self.eval_size, "exit_space": self.exit_space, "batch_size": self.batch_size,
                  "seed": self.seed, "progress": False}
        return {**common, **_STAGE_DEFAULTS[stage], **self.stages.get(stage, {})}


# ----------------------------------------------------------------------------------------------------- build
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": numpy.__version__, "pandas": pd.__version__}


def _to_half(src: Path, dst: Path) -> None:
    """Rewrite a multi-exit file with float16 weights: half the size, and loading copies them into float32."""
    from . import checkpoint

    payload = checkpoint.load(src)
    for key in ("model", "heads"):
        payload[key] = {k: v.half() if v.is_floating_point() else v for k, v in payload[key].items()}
    payload["meta"] = {**payload["meta"], "stored_dtype": "float16"}
    checkpoint.save(dst, payload)


def _ship_weights(src: Path, dst: Path, heavy: set[str], used: set[tuple[int, str]]) -> dict[str, list[str]]:
    """Copy the float16 weights, leaving out the heads of ``heavy`` configurations at the exits where no stored
    instance uses them (the cache keeps their figures; the size budget keeps the weights out). Returns what was
    left out, per exit."""
    from . import checkpoint

    payload = checkpoint.load(src)
    dropped: dict[str, list[str]] = {}
    space = payload["meta"]["exit_space"]
    for index, configs in space.items():
        gone = [c for c in configs if c in heavy and (int(index), c) not in used]
        if gone:
            dropped[index] = gone
            space[index] = [c for c in configs if c not in gone]
    prefixes = tuple(f"{i}.{c}." for i, cs in dropped.items() for c in cs)
    payload["heads"] = {k: v for k, v in payload["heads"].items() if not k.startswith(prefixes)}
    checkpoint.save(dst, payload)
    return dropped


def _used_heads(frames: list[pd.DataFrame]) -> set[tuple[int, str]]:
    return {(e.exit, e.config) for frame in frames for inst in frame["instance"] if inst is not None
            for e in inst.exits}


def _instance_json(instance: Instance | None) -> dict[str, Any] | None:
    return None if instance is None else instance.to_dict()


def _frame_json(df: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for record in df.to_dict(orient="records"):
        record["instance"] = _instance_json(record.get("instance"))
        if "id" in record:
            record["id"] = getattr(record["id"], "value", record["id"])
        rows.append({k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in record.items()})
    return rows


def _with_ids(frame: pd.DataFrame, where: Path) -> pd.DataFrame:
    try:
        return with_row_ids(frame)
    except ValueError as exc:
        raise StudyError(f"{where}: {exc}; rebuild the study with this version") from None


def _frame_from_json(rows: list[dict[str, Any]], where: str) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if "instance" in df:
        df["instance"] = [None if d is None else Instance.from_dict(d, where=where) for d in df["instance"]]
    return df.fillna(value={c: np.nan for c in df.columns if c not in ("instance",)})


class _State:
    """Wall time of every finished step, kept in the work folder so a resumed build still reports them all."""

    def __init__(self, path: Path):
        self.path = path
        self.times: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def record(self, step: str, seconds: float) -> None:
        self.times[step] = round(self.times.get(step, 0.0) + seconds, 1)
        atomic_write_text(self.path, json.dumps(self.times, indent=1))


def _check_run(run_dir: Path, wanted: dict[str, Any]) -> None:
    """Refuse to reuse a run folder trained with other settings than the study asks for now."""
    from .training import load_run_config

    if not (run_dir / "config.yaml").is_file():
        return
    def plain(value: Any) -> Any:  # tuples from YAML-built configs and lists from files compare equal
        return json.loads(json.dumps(value))

    from .training import TrainConfig

    held = plain(load_run_config(run_dir).to_dict())
    wanted = plain(wanted)
    # a run written before a setting existed ran with that setting's default
    defaults = plain({f.name: f.default for f in dataclasses.fields(TrainConfig)
                      if f.default is not dataclasses.MISSING})
    # where a run lives (out, and init: the previous stage in the same work folder) may change when a folder moves,
    # but whether it started from another run or from scratch may not
    differ = sorted(k for k in wanted if k not in ("out", "init", "progress")
                    and held.get(k, defaults.get(k)) != wanted[k])
    if (held.get("init") is None) != (wanted.get("init") is None):
        differ.append("init")
    if differ:
        detail = ", ".join(f"{k}: {held.get(k)!r} there, {wanted[k]!r} now" for k in differ[:4])
        raise StudyError(f"{run_dir}: holds a run with other settings ({detail}); delete that folder to retrain it "
                         "with these, or build into another --work folder")


def build(config_path: str | os.PathLike, *, work: str | os.PathLike | None = None,
          out: str | os.PathLike | None = None, stop_after: str | None = None,
          log: Callable[[str], None] = print) -> Path:
    """Build the study ``config_path`` describes end to end; returns the study folder (or the work folder when
    ``stop_after`` names a training stage to stop after).

    ``work`` (default ``runs/<name>``) keeps the training runs and the cache; ``out`` (default
    ``precomputed/<name>``) receives the study. Finished steps are skipped, an interrupted stage resumes from its
    checkpoint; a run folder trained with other settings is refused."""
    if stop_after is not None and stop_after not in STAGES:
        raise StudyError(f"stop_after must be one of {', '.join(STAGES)}, not {stop_after!r}")
    from . import artifacts
    from .cache import build_cache
    from .data import build_dataset, eval_transform
    from .report import all_fronts, policy_versus_oracle, results_table
    from .search import SearchSpace
    from .training import TrainConfig, train
    from .training.loop import CHECKPOINT
    from .training.run import RESULT_FILES
    from .workload import profile_report

    config_path = Path(config_path)
    cfg = StudyConfig.from_yaml(config_path)
    work = Path(work or Path("runs") / cfg.name)
    out = Path(out or Path("precomputed") / cfg.name)
    work.mkdir(parents=True, exist_ok=True)
    state = _State(work / "build_times.json")
    started = time.perf_counter()
    log(f"study {cfg.name}: work folder {work}, output {out}")

    init: str | None = None
    for n, stage in enumerate(STAGES, start=1):
        run_dir = work / stage
        result = run_dir / RESULT_FILES[stage]
        if stage == "backbone" and cfg.pretrain_from == "scratch":
            log(f"[{n}/8] backbone: not trained on its own (pretrain_from: scratch; stage 1 starts from random weights)")
            continue
        wanted = TrainConfig(**cfg.stage_fields(stage), stage=stage, out=str(run_dir), init=init)
        _check_run(run_dir, wanted.to_dict())
        if result.is_file():
            log(f"[{n}/8] {stage}: done earlier ({result})")
        else:
            resume = (run_dir / CHECKPOINT).is_file()
            log(f"[{n}/8] {stage}: {'resuming from its checkpoint' if resume else 'training'}")
            t0 = time.perf_counter()
            train(wanted, resume=resume, log=lambda msg, stage=stage: log(f"      {stage}: {msg}"))
            state.record(stage, time.perf_counter() - t0)
        init = str(result)
        if stage == stop_after:
            log(f"stopped after {stage}, as asked; run the same command without --stop-after to go on")
            return work

    variants = _train_variants(cfg, work, state, log)

    # the study ships float16 weights: the cache is computed from exactly those (widened back to float32), so anyone
    # re-running the shipped weights gets the cached figures
    weights = work / WEIGHTS
    if not weights.is_file():
        _to_half(work / "exits" / RESULT_FILES["exits"], weights)
    net, meta, model = artifacts.load_multi_exit_and_model(weights)
    size = tuple(cfg.eval_size or cfg.crop)
    caches: dict[str, Path] = {}
    for split in (cfg.cache_split, cfg.report_split):
        path = work / f"{split}.npz"
        try:
            dataset = build_dataset(cfg.dataset, root=cfg.data_root, split=split,
                                    transform=eval_transform(size=size), **cfg.data_options)
        except MessError as exc:
            if split == cfg.cache_split:
                raise
            log(f"[5/8] cache: no '{split}' split here ({str(exc).splitlines()[0][:120]}); figures on "
                f"{cfg.cache_split} only")
            continue
        caches[split] = path
        if path.is_file():
            log(f"[5/8] cache: {split} done earlier ({path})")
            continue
        log(f"[5/8] cache: every exit x configuration on {cfg.dataset} {split}"
            + (" (and per-stage/head latency)" if cfg.latency and split == cfg.cache_split else ""))
        t0 = time.perf_counter()
        cache = build_cache(net, dataset, model=cfg.model, dataset_name=cfg.dataset, split=split, batch_size=8,
                            latency=cfg.latency and split == cfg.cache_split, limit=cfg.cache_limit,
                            extra_meta={"source": f"study {cfg.name}"})
        cache.save(path)
        state.record(f"cache_{split}", time.perf_counter() - t0)
    cache_path = caches[cfg.cache_split]
    cache = EvaluationCache.load(cache_path)
    report = EvaluationCache.load(caches[cfg.report_split]) if cfg.report_split in caches else None
    if report is not None and cache.has_latency:
        report.stage_ms, report.head_ms = cache.stage_ms, cache.head_ms  # same network, same machine: same cost

    log(f"[6/8] search on {cfg.cache_split}: results table of every mode, fronts of every mode and peer"
        + (f", every instance also reported on {cfg.report_split}" if report is not None else ""))
    t0 = time.perf_counter()
    space = SearchSpace(max_exits=cfg.max_exits)
    tables = {mode: results_table(cache, mode=mode, space=space, eval_cache=report) for mode in MODES}
    results = {mode: _frame_json(table) for mode, table in tables.items()}
    front_frame = all_fronts(cache, space=space)
    fronts = _frame_json(front_frame)
    log(f"[6/8] the policy against the oracle bound at every allowed drop (label-aware, {space.max_exits} exits)")
    versus = json.loads(policy_versus_oracle(cache, space=space).to_json(orient="records"))
    h, w = cache.meta["input_size"]
    profile = profile_report(net, model_name=cfg.model)
    state.record("search", time.perf_counter() - t0)

    latency = _bench_results(cfg, work, net, model, tables["input-dependent"], size, state, log)

    log(f"[8/8] pack: {out}")
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    unshipped = _ship_weights(weights, tmp / WEIGHTS, set(cfg.heavy_configs),
                              _used_heads(list(tables.values()) + [front_frame]))
    for path in caches.values():
        shutil.copyfile(path, tmp / path.name)
    atomic_write_text(tmp / RESULTS, json.dumps(results, indent=1))
    atomic_write_text(tmp / FRONTS, json.dumps(fronts, indent=1))
    atomic_write_text(tmp / PROFILE, json.dumps(profile, indent=1))
    atomic_write_text(tmp / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if variants:
        atomic_write_text(tmp / TRAINING, json.dumps(variants, indent=1))
    if latency is not None:
        atomic_write_text(tmp / LATENCY, json.dumps(latency, indent=1))
    atomic_write_text(tmp / ORACLE, json.dumps(versus, indent=1))
    from .bench import machine

    manifest = {
        "format": STUDY_FORMAT,
        "name": cfg.name,
        "description": cfg.description,
        "command": f"python -m mess_core study build {config_path.as_posix()}",
        "config": cfg.to_dict(),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "classes": meta.get("classes"),
        "input_size": [h, w],
        "cache": cache_path.name,
        "report_cache": caches[cfg.report_split].name if report is not None else None,
        "unshipped_heads": unshipped,
        "versions": _versions(),
        "machine": machine(),
        "wall_seconds": {**state.times, "total_this_run": round(time.perf_counter() - started, 1)},
        "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())},
    }
    atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    total = sum(v for k, v in state.times.items())
    log(f"study {cfg.name} written to {out} ({sum(f['bytes'] for f in manifest['files'].values()) / 1e6:.1f} MB; "
        f"steps took {total / 60:.1f} min in all)")
    return out


def _train_variants(cfg: StudyConfig, work: Path, state: "_State", log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Train every stage-2 variant of the training table (skipping finished ones); one row per variant x
    configuration: the mIoU of every exit on the validation split and the final exit's."""
    from .training import TrainConfig, train
    from .training.loop import CHECKPOINT
    from .training.run import RESULT_FILES

    rows = []
    main, stage2 = cfg.stage_fields("exits"), work / "exits"
    config = ExitSpec.coerce(cfg.variant_space).id
    stage2_eval = read_json(stage2 / "eval.json", StudyError, "missing: stage 2 did not evaluate") \
        if cfg.variants else {"exits": {"1": {}}}
    # a configuration whose heads all trained the whole schedule in stage 2 (none stopped by successive halving)
    trained_in_stage2 = set(stage2_eval["exits"]["1"]) - {k.split(":", 1)[1] for k in stage2_eval.get("stopped", {})}
    for name, spec in cfg.variants.items():
        run_dir = work / "variants" / name
        init_stage = spec.get("init", "pretrain")
        wanted = TrainConfig(**cfg.variant_fields(name), stage="exits", out=str(run_dir),
                             init=str(work / init_stage / RESULT_FILES[init_stage]))
        # heads are independent given the frozen backbone: a variant with stage 2's own settings, on a configuration
        # stage 2 trained, is the stage-2 run itself, read from it instead of training the same heads twice
        same = init_stage == "pretrain" and all(main.get(k) == v for k, v in spec.items() if k != "init")
        if same and config in trained_in_stage2:
            run_dir = stage2
            log(f"[4/8] variant {name}: stage 2's own settings, read from {run_dir}")
        else:
            _check_run(run_dir, wanted.to_dict())
            if (run_dir / RESULT_FILES["exits"]).is_file():
                log(f"[4/8] variant {name}: done earlier")
            else:
                resume = (run_dir / CHECKPOINT).is_file()
                log(f"[4/8] variant {name}: stage 2 with {wanted.exit_loss}, from {init_stage}"
                    + (", resuming" if resume else ""))
                t0 = time.perf_counter()
                train(wanted, resume=resume, log=lambda msg, name=name: log(f"      {name}: {msg}"))
                state.record(f"variant_{name}", time.perf_counter() - t0)
        detail = read_json(run_dir / "eval.json", StudyError, "missing: the variant's run did not evaluate")
        if config not in detail["exits"]["1"]:
            raise StudyError(f"{run_dir / 'eval.json'}: no figures for the variant space '{config}'")
        rows.append({"variant": name, "exit_loss": wanted.exit_loss, "stage1": init_stage == "pretrain",
                     "config": config, "epochs": wanted.epochs,
                     "exits": {i: detail["exits"][i][config]["miou"] for i in sorted(detail["exits"], key=int)},
                     "final": detail["final"]["miou"]})
    return rows


def _bench_results(cfg: StudyConfig, work: Path, net: Any, model: Any, table: pd.DataFrame, size: tuple[int, int],
                   state: "_State", log: Callable[[str], None]) -> list[dict[str, Any]] | None:
    """Latency of the input-dependent results' instances against the original model, in one interleaved run on
    ``bench_images`` images of the cache split (batch sizes and engines from the configuration)."""
    import torch

    from .bench import bench
    from .data import build_dataset, eval_transform

    path = work / "latency.json"
    if cfg.bench_images <= 0:
        return None
    if path.is_file():
        log(f"[7/8] latency: done earlier ({path})")
        return json.loads(path.read_text())
    instances = {row.row: row.instance for row in table.itertuples()
                 if row.instance is not None and row.instance.exits}
    log(f"[7/8] latency: {', '.join(instances) or 'no early-exit instance'} against the original model, "
        f"batch {list(cfg.bench_batches)}, {', '.join(cfg.bench_engines)}")
    t0 = time.perf_counter()
    dataset = build_dataset(cfg.dataset, root=cfg.data_root, split=cfg.cache_split, transform=eval_transform(size=size),
                            **cfg.data_options)
    images = torch.stack([dataset[i][0] for i in range(min(cfg.bench_images, len(dataset)))])
    frame = bench(net, model, instances, images, batch_sizes=cfg.bench_batches, engines=cfg.bench_engines,
                  repeats=cfg.bench_repeats, log=lambda msg: log(f"      {msg}"))
    frame.insert(0, "id", [None if (r := row_id(v)) is None else r.value for v in frame["variant"]])
    rows = json.loads(frame.to_json(orient="records"))
    atomic_write_text(path, json.dumps(rows, indent=1))
    state.record("latency", time.perf_counter() - t0)
    return rows


# ----------------------------------------------------------------------------------------------------- open
@dataclass
class Study:
    """An opened study folder (or a run folder with a ``multi_exit.pt`` and an evaluation cache). Files are read when
    first used; every problem raises :class:`StudyError` naming the file."""

    path: Path
    manifest: dict[str, Any]
    cache_path: Path
    weights_path: Path

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    @property
    def is_packed(self) -> bool:
        """Built by :func:`build` (results precomputed) rather than a bare run folder (results computed on open)."""
        return self.manifest.get("format") == STUDY_FORMAT

    @cached_property
    def cache(self) -> EvaluationCache:
        try:
            return EvaluationCache.load(self.cache_path)
        except MessError as exc:
            raise StudyError(f"study {self.name}: {exc}") from None

    def load_network(self) -> tuple[Any, dict[str, Any]]:
        """A fresh float32 :class:`~mess_core.MultiExitNet` (eval mode) and its metadata; the caller owns it."""
        from .artifacts import load_multi_exit

        try:
            return load_multi_exit(self.weights_path)
        except MessError as exc:
            raise StudyError(f"study {self.name}: {exc}") from None

    def _json(self, name: str) -> Any:
        return read_json(self.path / name, StudyError, "missing from the study; rebuild it with its manifest's command")

    def results(self, mode: str) -> pd.DataFrame:
        """The seed-shaped results table of ``mode`` (see :func:`mess_core.report.results_table`)."""
        if mode not in MODES:
            raise StudyError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not self.is_packed:
            from .report import results_table

            return results_table(self.cache, mode=mode, oracle=False)  # the bound is the build's work
        data = self._json(RESULTS)
        if mode not in data:
            raise StudyError(f"{self.path / RESULTS}: holds no '{mode}' table; rebuild the study")
        return _with_ids(_frame_from_json(data[mode], str(self.path / RESULTS)), self.path / RESULTS)

    def fronts(self) -> pd.DataFrame:
        """Accuracy-vs-GFLOPs fronts of every mode and peer (see :func:`mess_core.report.all_fronts`)."""
        if not self.is_packed:
            from .report import all_fronts

            return all_fronts(self.cache)
        return _frame_from_json(self._json(FRONTS), str(self.path / FRONTS))

    def profile(self) -> dict[str, Any]:
        """The profile report (``mess_core profile --json`` shape): nodes with FLOPs, exits, totals."""
        if not self.is_packed:
            from .workload import profile_report

            net, meta = self.load_network()
            return profile_report(net, model_name=meta["model"])
        return self._json(PROFILE)

    @cached_property
    def report_cache(self) -> EvaluationCache | None:
        """The cache of the split every instance is also reported on (``test`` when the dataset has it), or None."""
        name = self.manifest.get("report_cache")
        if not name:
            return None
        try:
            return EvaluationCache.load(self.path / name)
        except MessError as exc:
            raise StudyError(f"study {self.name}: {exc}") from None

    def training_table(self) -> pd.DataFrame | None:
        """Stage-2 variants (loss, with or without stage 1): mIoU of every exit and the final one; None if not built."""
        if not (self.path / TRAINING).is_file():
            return None
        rows = []
        for r in self._json(TRAINING):
            rows.append({"variant": r["variant"], "stage 2 loss": r["exit_loss"], "stage 1": r["stage1"],
                         "config": r["config"], **{f"exit {i}": v for i, v in r["exits"].items()},
                         "final": r["final"]})
        return pd.DataFrame(rows)

    def policy_versus_oracle(self) -> pd.DataFrame | None:
        """The policy's speedup against the oracle bound's at every allowed drop (see
        :func:`mess_core.report.policy_versus_oracle`), computed by the build; None for run folders and for studies
        built before it existed (the bound takes about a minute: the app does not wait for it)."""
        return pd.DataFrame(self._json(ORACLE)) if self.is_packed and (self.path / ORACLE).is_file() else None

    def latency(self) -> pd.DataFrame | None:
        """Measured latency of the results' instances against the original model (one run); None if not built."""
        if not (self.path / LATENCY).is_file():
            return None
        return with_row_ids(pd.DataFrame(self._json(LATENCY)), labels="variant", strict=False)

    def check_weights(self, *, images: int = 3, data_root: str | os.PathLike | None = None) -> list[str]:
        """Re-run the shipped weights on the first ``images`` images of the cache's split and compare every shipped
        head's counts with the cache (a pixel or two may flip on a tie: convolutions round differently at another
        batch size). Returns the problems; empty when they agree."""
        from .cache import build_cache
        from .data import build_dataset, eval_transform

        cfg = StudyConfig.from_dict(self.manifest["config"], where=str(self.path / MANIFEST))
        net, _ = self.load_network()
        common = set.intersection(*(set(net.heads[str(i)].keys()) for i in range(1, net.num_exits)))
        for i in range(1, net.num_exits):  # build_cache wants one space at every exit: the heads every exit has
            bank = net.heads[str(i)]
            for name in [k for k in bank.keys() if k not in common]:
                del bank[name]
        shipped = self.cache
        data = build_dataset(cfg.dataset, root=data_root if data_root is not None else cfg.data_root,
                             split=shipped.meta["split"], transform=eval_transform(size=tuple(shipped.meta["input_size"])),
                             **cfg.data_options)
        again = build_cache(net, data, model=cfg.model, dataset_name=cfg.dataset, split=shipped.meta["split"],
                            batch_size=1, limit=images)
        problems = []
        if not np.array_equal(again.label, shipped.label[:images]):
            problems.append(f"{self.cache_path}: its labels differ from the dataset's first {images} images")
        budget = 0.001 * shipped.pixels[:images].sum()
        rows = [(e, c) for e in range(1, net.num_exits) for c in again.configs] + [(net.num_exits, "final")]
        for e, c in rows:
            a, b = again.head_index(e, c), shipped.head_index(e, c)
            if np.abs(again.tp[:, a] - shipped.tp[:images, b]).sum() > budget:
                problems.append(f"{self.cache_path}: exit {e} {c}: counts differ from re-running {self.weights_path}")
        return problems

    def verify(self) -> list[str]:
        """Problems with the files the manifest lists (missing, size or SHA-256 differ); empty when all match."""
        problems = []
        for name, entry in self.manifest.get("files", {}).items():
            path = self.path / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif path.stat().st_size != entry.get("bytes") or _sha256(path) != entry.get("sha256"):
                problems.append(f"{path}: differs from the manifest (size or SHA-256); it was changed after the build")
        return problems


def open_study(path: str | os.PathLike) -> Study:
    """Open a study folder built by :func:`build`, or a run folder holding ``multi_exit.pt`` (there or in
    ``exits/``) and an evaluation cache ``*.npz`` (``val.npz`` preferred)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise StudyError(f"{path}: no such folder; point to a study folder (precomputed/<name>) or a run folder")
    manifest_path = path / MANIFEST
    if manifest_path.is_file():
        manifest = read_json(manifest_path, StudyError, "missing")
        if not isinstance(manifest, dict) or manifest.get("format") != STUDY_FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise StudyError(f"{manifest_path}: study format {found!r}, this version reads {STUDY_FORMAT!r}; rebuild "
                             "it with this version's `python -m mess_core study build` (its command is in the manifest)")
        missing = [n for n in [WEIGHTS, manifest.get("cache", ""), RESULTS, FRONTS, PROFILE]
                   if not n or not (path / n).is_file()]
        if missing:
            raise StudyError(f"{path}: missing {', '.join(missing or ['its cache name'])}; the study is incomplete; "
                             f"rebuild it with `{manifest.get('command', 'python -m mess_core study build CONFIG')}`")
        return Study(path, manifest, path / manifest["cache"], path / WEIGHTS)
    weights = next((p for p in (path / WEIGHTS, path / "exits" / WEIGHTS) if p.is_file()), None)
    if weights is None:
        raise StudyError(f"{path}: neither a study ({MANIFEST}) nor a run folder ({WEIGHTS} or exits/{WEIGHTS})")
    caches = sorted(path.glob("*.npz"), key=lambda p: (not p.name.startswith("val"), p.name))
    if not caches:
        raise StudyError(f"{path}: has {weights.relative_to(path)} but no evaluation cache (*.npz); make one with "
                         f"`python -m mess_core cache --multi-exit {weights} --data ... --out {path}/val.npz`")
    return Study(path, {"name": path.name, "format": None, "cache": caches[0].name}, caches[0], weights)


def list_studies(root: str | os.PathLike) -> list[Path]:
    """Study folders under ``root`` (those with a manifest), sorted by name."""
    root = Path(root)
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST}")) if root.is_dir() else []
