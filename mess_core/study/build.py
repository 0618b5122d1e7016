"""Building a study: the steps from a YAML file to a study folder, each skipping what an earlier run finished (a
training stage that was interrupted resumes from its checkpoint), and the folder written in one rename.

Steps: the three training stages (backbone, exit-aware pre-training, every exit configuration), the stage-2 variants
of the training table, the evaluation caches, the search, the latency run and the packing (:func:`steps`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import yaml
from torch.utils.data import Subset

from ..conversion.exits import ExitSpec
from ..conversion.workload import profile_report
from ..data.selection import describe_groups
from ..deploy import artifacts
from ..deploy.bench import bench, machine
from ..errors import MessError
from ..evaluate.cache import EvaluationCache
from ..evaluate.cache_build import build_cache
from ..evaluate.evaluation import evaluate_model
from ..evaluate.instance import MODES
from ..folders import claim_folder, folder_lock
from ..io import atomic_write_text, read_json
from ..models.source import ModelSource, load_user_weights
from ..models.trust import SIGNATURE_KEY, sign
from ..search.problem import SearchSpace
from ..search.report import Row, all_fronts, policy_versus_oracle, results_table
from ..search.transfer import transfer_check
from ..train import TrainConfig
from ..train.run import RESULT_FILES
from .config import (
    CONFIG,
    FRONTS,
    LATENCY,
    MANIFEST,
    ORACLE,
    PROFILE,
    RESULTS,
    STAGES,
    STUDY_FORMAT,
    TRAINING,
    TRANSFER,
    USER_MODEL,
    WEIGHTS,
    StudyConfig,
    StudyError,
)
from .pack import (
    file_entries,
    frame_json,
    replace_folder,
    sha256,
    ship_weights,
    to_half,
    used_heads,
    versions,
    write_json,
)
from .protocol import data_protocol
from .runs import holds_build_work, study_name, train_or_resume
from .steps import Step, StepLog, StepTimes, run_steps

__all__ = ["build"]


def build(
    config_path: str | os.PathLike,
    *,
    work: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    stop_after: str | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Build the study ``config_path`` describes end to end; returns the study folder (or the work folder when
    ``stop_after`` names a training stage to stop after).

    ``work`` (default ``runs/<name>``) keeps the training runs and the cache; ``out`` (default
    ``precomputed/<name>``) receives the study. Finished steps are skipped, an interrupted stage resumes from its
    checkpoint; a run folder trained with other settings is refused."""
    if stop_after is not None and stop_after not in STAGES:
        raise StudyError(f"stop_after must be one of {', '.join(STAGES)}, not {stop_after!r}")
    config_path = Path(config_path)
    cfg = StudyConfig.from_yaml(config_path)
    work = Path(work or Path("runs") / cfg.name)
    out = Path(out or Path("precomputed") / cfg.name)
    protocol = data_protocol(cfg)  # refuses to tune on scenes it trains on before anything is written
    claim_folder(
        work,
        own=holds_build_work,
        what="study build",
        hint="choose a new or empty --work folder (a build resumes only in its own)",
    )
    claim_folder(
        out,
        own=lambda p: study_name(p) == cfg.name,
        what="study build",
        hint=f"choose a new or empty --out (a build replaces only an earlier build of study {cfg.name})",
    )
    with folder_lock(work, what=f"study build {config_path}"):
        return _build_in(cfg, config_path, work, out, protocol, stop_after, log)


def _build_in(
    cfg: StudyConfig,
    config_path: Path,
    work: Path,
    out: Path,
    protocol: dict[str, Any],
    stop_after: str | None,
    log: Callable[[str], None],
) -> Path:
    log(f"study {cfg.name}: work folder {work}, output {out}")
    for step in ("train", "tune", "report"):
        if protocol[step] is not None:
            log(
                f"  {step}: {cfg.dataset} {protocol[step]['split']}, groups {describe_groups(protocol[step]['groups'])}"
            )
    run = _Build(cfg, config_path, work, out, protocol)
    if not run_steps(run.steps(), times=run.times, log=log, stop_after=stop_after):
        log(f"stopped after {stop_after}, as asked; run the same command without --stop-after to go on")
        return work
    log(
        f"study {cfg.name} written to {out} ({run.packed_bytes / 1e6:.1f} MB; "
        f"steps took {sum(run.times.seconds.values()) / 60:.1f} min in all)"
    )
    return out


class _Build:
    """One build of a study: its steps, and what each leaves for the next."""

    def __init__(self, cfg: StudyConfig, config_path: Path, work: Path, out: Path, protocol: dict[str, Any]):
        self.cfg, self.config_path, self.work, self.out = cfg, config_path, work, out
        self.protocol = protocol
        self.times = StepTimes(work / "build_times.json")
        self.started = time.perf_counter()
        self.size = tuple(cfg.eval_size or cfg.crop)
        self.variants: list[dict[str, Any]] = []
        self.caches: dict[str, Path] = {}
        # what the search leaves for the latency run and the pack
        self.cache: EvaluationCache | None = None
        self.report: EvaluationCache | None = None
        self.tables: dict[str, pd.DataFrame] = {}
        self.fronts: pd.DataFrame | None = None
        self.versus: list[dict[str, Any]] = []
        self.transfer: pd.DataFrame | None = None
        self.profile: dict[str, Any] = {}
        self.latency: list[dict[str, Any]] | None = None
        self.packed_bytes = 0

    def steps(self) -> list[Step]:
        cfg = self.cfg
        stages = [Step(stage, lambda say, stage=stage: self.train_stage(say, stage)) for stage in STAGES]
        return stages + [
            Step("variant", self.train_variant, parts=lambda: list(cfg.variants)),
            Step("cache", self.evaluate, parts=lambda: list(dict.fromkeys(self.cache_names.values()))),
            Step("search", self.search),
            Step("latency", self.measure_latency),
            Step("pack", self.pack, timed=False),  # its own time cannot be in the manifest it writes
        ]

    # ------------------------------------------------------------------------------------------- training
    def _result(self, stage: str) -> Path:
        return self.work / stage / RESULT_FILES[stage]

    def _start(self, stage: str) -> dict[str, Any]:
        """How a run continuing ``stage`` starts (its ``init`` or ``weights``): stage 1's result when it ran, else the
        user's weights, else the backbone stage's result, else random weights (pretrain_from: scratch)."""
        cfg = self.cfg
        if stage == "pretrain" and cfg.pretrain:
            return {"init": str(self._result("pretrain"))}
        if cfg.weights is not None:
            return {"weights": cfg.weights}
        return {"init": str(self._result("backbone"))} if cfg.trains_backbone else {}

    def train_stage(self, say: StepLog, stage: str) -> None:
        cfg = self.cfg
        if stage == "backbone" and not cfg.trains_backbone:
            why = (
                f"your weights ({cfg.weights}) are the backbone"
                if cfg.weights is not None
                else "pretrain_from: scratch; stage 1 starts from random weights"
            )
            say(f"backbone: not trained on its own ({why})")
            return
        if stage == "pretrain" and not cfg.pretrain:
            say("pretrain: switched off (stages.pretrain: false); stage 2 trains exits on the backbone as it is")
            return
        start = {} if stage == "backbone" else self._start(STAGES[STAGES.index(stage) - 1])
        wanted = TrainConfig(**{**cfg.stage_fields(stage), **start}, stage=stage, out=str(self.work / stage))
        train_or_resume(say, stage, wanted)

    @cached_property
    def _variant_config(self) -> str:
        return ExitSpec.coerce(self.cfg.variant_space).id

    @cached_property
    def _trained_in_stage2(self) -> set[str]:
        """Configurations whose heads all trained the whole schedule in stage 2 (none stopped by successive
        halving)."""
        held = read_json(self.work / "exits" / "eval.json", StudyError, "missing: stage 2 did not evaluate")
        return set(held["exits"]["1"]) - {k.split(":", 1)[1] for k in held.get("stopped", {})}

    def train_variant(self, say: StepLog, name: str) -> None:
        """Train stage-2 variant ``name`` of the training table; its row: the mIoU of every exit on the validation
        split and the final exit's."""
        spec = self.cfg.variants[name]
        init_stage = spec.get("init", "pretrain")
        run_dir = self.work / "variants" / name
        wanted = TrainConfig(
            **{**self.cfg.variant_fields(name), **self._start(init_stage)}, stage="exits", out=str(run_dir)
        )
        # heads are independent given the frozen backbone: a variant with stage 2's own settings, on a configuration
        # stage 2 trained, is the stage-2 run itself, read from it instead of training the same heads twice
        stage2 = self.cfg.stage_fields("exits")
        own_start = "pretrain" if self.cfg.pretrain else "backbone"
        same = init_stage == own_start and all(stage2.get(k) == v for k, v in spec.items() if k != "init")
        if same and self._variant_config in self._trained_in_stage2:
            run_dir = self.work / "exits"
            say(f"variant {name}: stage 2's own settings, read from {run_dir}")
        else:
            train_or_resume(
                say, f"variant {name}", wanted, starting=f"stage 2 with {wanted.exit_loss}, from {init_stage}"
            )
        detail = read_json(run_dir / "eval.json", StudyError, "missing: the variant's run did not evaluate")
        config = self._variant_config
        if config not in detail["exits"]["1"]:
            raise StudyError(f"{run_dir / 'eval.json'}: no figures for the variant space '{config}'")
        exits = {i: detail["exits"][i][config]["miou"] for i in sorted(detail["exits"], key=int)}
        self.variants.append(
            {
                "variant": name,
                "exit_loss": wanted.exit_loss,
                "stage1": init_stage == "pretrain",
                "config": config,
                "epochs": wanted.epochs,
                "exits": exits,
                "final": detail["final"]["miou"],
            }
        )

    # ------------------------------------------------------------------------------------------- figures
    @cached_property
    def network(self) -> tuple[Any, dict[str, Any], Any]:
        """The shipped network, its metadata and the original model. The study ships float16 weights: the caches are
        computed from exactly those (widened back to float32), so anyone re-running them gets the cached figures."""
        weights = self.work / WEIGHTS
        if not weights.is_file():
            to_half(self._result("exits"), weights)
        # the study's YAML names the model: building it is the user's own request, signed or not
        return artifacts.load_multi_exit_and_model(weights, consent=True)

    @cached_property
    def cache_names(self) -> dict[str, str]:
        """The cache of the tuning and of the report images, named by their selection (``val``, ``train-0006R0``)."""
        names = {}
        for step in ("tune", "report"):
            split, groups = self.cfg.selection(step)
            names[step] = "-".join([split, *groups])
        return names

    def evaluate(self, say: StepLog, name: str) -> None:
        cfg = self.cfg
        tune = name == self.cache_names["tune"]
        split, groups = cfg.selection("tune" if tune else "report")
        path = self.work / f"{name}.npz"
        try:
            dataset = cfg.eval_dataset(split, self.size, groups=groups)
        except MessError as exc:
            if tune:
                raise
            say(f"cache: no '{name}' images here ({str(exc).splitlines()[0]}); figures on the tuning images only")
            return
        self.caches["tune" if tune else "report"] = path
        if path.is_file():
            say(f"cache: {name} done earlier ({path})")
            return
        latency = cfg.latency and tune
        say(
            f"cache: every exit x configuration on {cfg.dataset} {name}"
            + (" (and per-stage/head latency)" if latency else "")
        )
        cache = build_cache(
            self.network[0],
            dataset,
            model=cfg.model_source.name,
            dataset_name=cfg.dataset,
            split=split,
            batch_size=8,
            latency=latency,
            limit=cfg.cache_limit,
            extra_meta={"source": f"study {cfg.name}", "groups": list(groups)},
        )
        cache.save(path)
        if cfg.weights is not None and tune:
            self.user_model_figures(say, dataset)

    def user_model_figures(self, say: StepLog, dataset: Any) -> dict[str, Any]:
        """The user's model as given (their weights, before any stage of ours) on the cache split: what the report
        compares against. Kept in the work folder, so a second build reads it back."""
        path = self.work / USER_MODEL
        if path.is_file():
            return json.loads(path.read_text())
        cfg = self.cfg
        meta = self.network[1]
        model = load_user_weights(cfg.weights, cfg.model_source.build(meta["num_classes"])).eval()
        loader = torch.utils.data.DataLoader(
            Subset(dataset, range(min(len(dataset), cfg.cache_limit or len(dataset)))), batch_size=8
        )
        cm = evaluate_model(
            model,
            loader,
            num_classes=meta["num_classes"],
            ignore_index=meta["ignore_index"],
            output_key=cfg.convert.get("output_key"),
        )
        figures = {
            "model": cfg.model_source.name,
            "weights": Path(cfg.weights).name,
            "weights_sha256": sha256(Path(cfg.weights)),
            "split": cfg.cache_split,
            "miou": cm.miou(),
        }
        say(f"your model as given ({figures['weights']}): mIoU {figures['miou']:.4f} on {cfg.cache_split}")
        write_json(path, figures)
        return figures

    def search(self, say: StepLog) -> None:
        cfg = self.cfg
        self.cache = cache = EvaluationCache.load(self.caches["tune"])
        self.report = report = EvaluationCache.load(self.caches["report"]) if "report" in self.caches else None
        if report is not None and cache.has_latency:
            report.stage_ms, report.head_ms = cache.stage_ms, cache.head_ms  # same network, same machine: same cost
        say(
            f"search on {self.cache_names['tune']}: results table of every mode, fronts of every mode and peer"
            + (f", every instance also reported on {self.cache_names['report']}" if report is not None else "")
        )
        space = SearchSpace(max_exits=cfg.max_exits)
        self.tables = {
            mode: results_table(
                cache,
                mode=mode,
                space=space,
                eval_cache=report,
                confidence=cfg.promise_confidence,
                block=cfg.promise_block,
            )
            for mode in MODES
        }
        self.fronts = all_fronts(cache, space=space)
        say(f"the policy against the oracle bound at every allowed drop (label-aware, {space.max_exits} exits)")
        self.versus = json.loads(policy_versus_oracle(cache, space=space).to_json(orient="records"))
        say("the transfer check: each mode's rows tuned on one scene part of the tuning images, scored on the other")
        self.transfer = transfer_check(cache, space=space, confidence=cfg.promise_confidence, block=cfg.promise_block)
        self.profile = profile_report(self.network[0], model_name=cfg.model_source.name)

    def measure_latency(self, say: StepLog) -> None:
        """Latency of the input-dependent results' instances against the original model, in one interleaved run on
        ``bench_images`` images of the cache split (batch sizes and engines from the configuration). Each instance
        is timed under its row's label; column ``id`` names the row."""
        cfg = self.cfg
        path = self.work / LATENCY
        if cfg.bench_images <= 0:
            return
        if path.is_file():
            say(f"latency: done earlier ({path})")
            self.latency = json.loads(path.read_text())
            return
        table = self.tables["input-dependent"]
        deployed = [r for r in table.itertuples() if r.instance is not None and r.instance.exits]
        instances = {r.row: r.instance for r in deployed}
        say(
            f"latency: {', '.join(instances) or 'no early-exit instance'} against the original model, "
            f"batch {list(cfg.bench_batches)}, {', '.join(cfg.bench_engines)}"
        )
        split, groups = cfg.selection("tune")
        dataset = cfg.eval_dataset(split, self.size, groups=groups)
        images = torch.stack([dataset[i][0] for i in range(min(cfg.bench_images, len(dataset)))])
        net, _, model = self.network
        frame = bench(
            net,
            model,
            instances,
            images,
            batch_sizes=cfg.bench_batches,
            engines=cfg.bench_engines,
            repeats=cfg.bench_repeats,
            log=say.detail,
        )
        frame.insert(0, "id", frame["variant"].map({r.row: Row(r.id).value for r in deployed}))
        self.latency = json.loads(frame.to_json(orient="records"))
        write_json(path, self.latency)

    # ------------------------------------------------------------------------------------------- pack
    def pack(self, say: StepLog) -> None:
        out = self.out
        say(f"pack: {out}")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building.", dir=out.parent))  # a name no one else has
        try:
            manifest = self.fill(tmp)
            replace_folder(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.packed_bytes = sum(f["bytes"] for f in manifest["files"].values())

    def fill(self, tmp: Path) -> dict[str, Any]:
        """Write every file of the study into the empty folder ``tmp``; returns its manifest."""
        cfg = self.cfg
        unshipped = ship_weights(
            self.work / WEIGHTS, tmp / WEIGHTS, set(cfg.heavy_configs), used_heads([*self.tables.values(), self.fronts])
        )
        for path in self.caches.values():
            shutil.copyfile(path, tmp / path.name)
        files = {
            RESULTS: {mode: frame_json(table) for mode, table in self.tables.items()},
            FRONTS: frame_json(self.fronts),
            PROFILE: self.profile,
            ORACLE: self.versus,
            TRANSFER: frame_json(self.transfer) if self.transfer is not None else None,
            TRAINING: self.variants or None,
            LATENCY: self.latency,
        }
        for name, data in files.items():
            if data is not None:
                write_json(tmp / name, data)
        atomic_write_text(tmp / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        source = self.ship_model_source(tmp)
        manifest = self.manifest(unshipped, file_entries(tmp))
        manifest["model_source"] = source.to_dict()
        if (signature := sign(source)) is not None:  # built here: reopening it here needs no consent
            manifest[SIGNATURE_KEY] = signature
        manifest["convert"] = dict(cfg.convert)
        if (self.work / USER_MODEL).is_file():
            manifest["user_model"] = json.loads((self.work / USER_MODEL).read_text())
        write_json(tmp / MANIFEST, manifest)
        return manifest

    def ship_model_source(self, folder: Path) -> ModelSource:
        """Where the study's model comes from, as the manifest records it. A model file is copied into the study
        (under its own name) and recorded by that name and its SHA-256, so the study reopens on a machine without the
        original file; registered names and import paths are recorded as they are (the package must be installed
        where the study is opened)."""
        source = self.cfg.model_source
        if source.kind != "file":
            return source
        shipped = folder / Path(source.target).name
        shutil.copyfile(source.target, shipped)
        return ModelSource("file", shipped.name, source.attr, sha256(shipped))

    def manifest(self, unshipped: dict[str, list[str]], files: dict[str, dict[str, Any]]) -> dict[str, Any]:
        cfg = self.cfg
        h, w = self.cache.meta["input_size"]
        return {
            "format": STUDY_FORMAT,
            "name": cfg.name,
            "description": cfg.description,
            "command": f"python -m mess_core study build {self.config_path.as_posix()}",
            "config": cfg.to_dict(),
            "model": cfg.model_source.name,
            "dataset": cfg.dataset,
            "classes": self.network[1].get("classes"),
            "input_size": [h, w],
            "cache": self.caches["tune"].name,
            "report_cache": self.caches["report"].name if self.report is not None else None,
            # which groups (scenes) fed which step: the Study page shows it
            "data": self.protocol,
            "unshipped_heads": unshipped,
            "versions": versions(),
            "machine": machine(),
            "wall_seconds": {**self.times.seconds, "total_this_run": round(time.perf_counter() - self.started, 1)},
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": files,
        }
