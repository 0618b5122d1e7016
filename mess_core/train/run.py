"""One entry point for every stage: build data, model and task from a :class:`TrainConfig`, train, export.

A run directory holds ``config.yaml`` (the resolved configuration), ``checkpoint.pt`` (the last epoch, for
``resume``), ``metrics.csv``, ``eval.json`` (the last detailed evaluation) and the stage's result: ``model.pt`` for
``backbone`` and ``pretrain`` (the pre-training exits are discarded), ``multi_exit.pt`` for ``exits``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn
from torch.utils.data import Dataset, Subset

from ..conversion.exits import LIGHT_EXIT, exit_space
from ..conversion.network import MultiExitNet
from ..conversion.pipeline import check_model_output, check_module_names, convert
from ..data import DatasetInfo, build_dataset, eval_transform, train_transform
from ..deploy import artifacts
from ..errors import MessError, TrainingError
from ..folders import claim_folder, folder_lock, written_by_others
from ..io import atomic_write_text, read_yaml
from ..models.source import ModelSource, load_user_weights
from ..models.trust import SIGNATURE_KEY, sign
from .config import TrainConfig
from .distributed import DistEnv, barrier, setup, sync_batchnorm
from .divergence import guard_finite
from .loop import CHECKPOINT, EVAL, METRICS, fit
from .losses import ExitLoss
from .tasks import BackboneTask, ExitsTask, PretrainTask

__all__ = ["train", "build_datasets", "build_task", "class_weights", "exit_space", "RESULT_FILES", "load_run_config"]

RESULT_FILES = {"backbone": "model.pt", "pretrain": "model.pt", "exits": "multi_exit.pt"}
CONFIG_FILE = "config.yaml"


class _Limited(Subset):
    """The first ``n`` samples of a dataset, still forwarding ``set_epoch`` to it."""

    def __init__(self, dataset: Dataset, n: int):
        super().__init__(dataset, list(range(min(n, len(dataset)))))
        self.info = getattr(dataset, "info", None)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)


def build_datasets(config: TrainConfig) -> tuple[Dataset, Dataset]:
    """The training images (augmented) and validation images of ``config.dataset``: ``train_split`` and ``val_split``
    kept to ``train_groups`` and ``val_groups``."""
    probe = build_dataset(
        config.dataset,
        root=config.data_root,
        split=config.train_split,
        groups=config.train_groups,
        seed=config.seed,
        **config.data_options,
    )
    ignore = probe.info.ignore_index
    probe.transform = train_transform(
        crop=config.crop,
        scale=config.scale,
        hflip=config.hflip,
        jitter=config.jitter,
        hue=config.hue,
        blur=config.blur,
        noise=config.noise,
        ignore_index=ignore,
    )
    val = build_dataset(
        config.dataset,
        root=config.data_root,
        split=config.val_split,
        groups=config.val_groups,
        seed=config.seed,
        transform=eval_transform(size=config.eval_size),
        **config.data_options,
    )
    train_set: Dataset = _Limited(probe, config.train_limit) if config.train_limit else probe
    val_set: Dataset = _Limited(val, config.val_limit) if config.val_limit else val
    return train_set, val_set


# configuration fields that name a file or folder; one inside the stored run directory moves with the run
_PATH_FIELDS = ("weights", "init", "data_root")


def _rebase(value: str | None, old: str, new: Path) -> str | None:
    """``value`` re-rooted from the run directory ``old`` to ``new`` when it lies inside ``old``, else unchanged."""
    if not value:
        return value
    try:
        inside = Path(os.path.abspath(value)).relative_to(os.path.abspath(old))
    except ValueError:
        return value
    return str(new / inside)


def load_run_config(run_dir: str | Path, **overrides: Any) -> TrainConfig:
    """The configuration of the run in ``run_dir``, to resume it there.

    ``run_dir`` is authoritative: the ``out`` recorded in its config.yaml is replaced by ``run_dir`` (a copied or moved
    run continues where it is now and never writes to the folder it came from), and recorded paths that pointed inside
    the old folder (``weights``, ``init``, ``data_root``) are re-based into ``run_dir``. ``overrides`` replace stored
    fields before they are checked (a run stored with ``device: cuda`` resumes on a CPU machine with
    ``device="cpu"``)."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    data = read_yaml(path, TrainingError, "missing; --resume continues a run directory that a previous run created")
    if not isinstance(data, dict):
        raise TrainingError(f"{path}: expected a mapping of configuration fields, found {type(data).__name__}")
    stored = data.get("out")
    if isinstance(stored, str) and stored:
        for name in _PATH_FIELDS:
            if isinstance(data.get(name), str):
                data[name] = _rebase(data[name], stored, run_dir)
    data["out"] = str(run_dir)
    data.update(overrides)
    try:
        return TrainConfig.from_dict(data)
    except MessError as exc:
        raise TrainingError(f"{path}: {exc}") from None


def class_weights(dataset: Dataset, info: DatasetInfo, power: float) -> torch.Tensor:
    """Median-frequency class balancing (Eigen & Fergus; SegNet's CamVid training): class c weighs
    ``(median(f) / f_c) ** power`` with ``f_c`` = pixels of class c / pixels of the images where c appears, counted
    on the untransformed labels of ``dataset``. A class absent from the split weighs 1.

    >>> from mess_core.data import build_dataset
    >>> data = build_dataset("synthetic", split="train", length=8, size=(32, 32))
    >>> w = class_weights(data, data.info, 0.5)
    >>> tuple(w.shape), bool((w > 0).all())
    ((7,), True)
    """
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    indices = dataset.indices if isinstance(dataset, Subset) else range(len(dataset))
    k = info.num_classes
    pixels = torch.zeros(k, dtype=torch.float64)
    seen_in = torch.zeros(k, dtype=torch.float64)
    for i in indices:
        _, mask = base.load_checked(i)
        mask = mask.as_subclass(torch.Tensor)
        counts = torch.bincount(mask[mask != info.ignore_index].flatten(), minlength=k)[:k].double()
        pixels += counts
        seen_in += (counts > 0).double() * mask.numel()
    present = pixels > 0
    freq = torch.where(present, pixels / seen_in.clamp(min=1), torch.zeros_like(pixels))
    median = freq[present].median() if present.any() else torch.tensor(1.0, dtype=torch.float64)
    weights = torch.where(present, (median / freq.clamp(min=1e-12)) ** power, torch.ones_like(freq))
    return weights.float()


def build_task(
    config: TrainConfig, model: nn.Module, info: DatasetInfo, weights: torch.Tensor | None = None
) -> BackboneTask | PretrainTask | ExitsTask:
    """The task ``config.stage`` trains: ``model`` as is (backbone), or converted to a multi-exit net (``task.net``)
    with a light exit at every point (pretrain) or every configuration of ``config.exit_space`` (exits).
    ``weights``: per-class loss weights (see :func:`class_weights`)."""
    common = {"ignore_index": info.ignore_index, "class_names": info.classes, "class_weights": weights}
    h, w = config.profile_size or config.crop
    if config.stage == "backbone":  # convert checks the names and the output at the other stages
        check_module_names(
            model, backbone=config.convert.get("backbone"), leaf_modules=config.convert.get("leaf_modules", ())
        )
        key = check_model_output(
            model, torch.zeros(1, 3, h, w), num_classes=info.num_classes, output_key=config.convert.get("output_key")
        )
        return BackboneTask(model, output_key=key, **common)
    net = convert(model.eval(), torch.zeros(1, 3, h, w), num_exits=config.num_exits, exit_head=None, **config.convert)
    if net.num_classes != info.num_classes:
        raise TrainingError(
            f"the model predicts {net.num_classes} classes but the dataset has {info.num_classes}; "
            f"build the model with num_classes={info.num_classes} (its callable takes num_classes=)"
        )
    if config.stage == "pretrain":
        return PretrainTask(net.attach(LIGHT_EXIT), model, schedule=config.exit_schedule, **common)
    exit_loss = ExitLoss(config.exit_loss, alpha=config.alpha, temperature=config.temperature)
    return ExitsTask(
        net.attach(exit_space(config.exit_space), seed=config.seed),
        exit_loss=exit_loss,
        seed=config.seed,
        prune_at=config.prune_at,
        prune_margin=config.prune_margin,
        **common,
    )


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    model: nn.Module | None = None,
    datasets: tuple[Dataset, Dataset | None] | None = None,
    env: DistEnv | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one stage as ``config`` says; returns ``{"history", "detail", "result", ...}``.

    ``model`` replaces the model ``config.model`` names (a registered name, an import path or a file: see
    :class:`~mess_core.models.ModelSource`), ``datasets`` the datasets ``config.dataset`` names. ``config.weights``
    (the user's trained weights) load into the model before ``config.init``. Under ``torchrun`` every process calls
    this; rank 0 writes the files.
    """
    env = env or setup(config.device)
    run_dir = Path(config.out)
    if not env.is_main:  # rank 0 holds the folder for every process
        return _train(config, resume=resume, model=model, datasets=datasets, env=env, log=log)
    claim_folder(
        run_dir,
        own=_holds_a_run,
        what="train",
        hint="choose a new or empty --out (train writes only into its own run folders)",
    )
    with folder_lock(run_dir, what=f"train --stage {config.stage}"):
        return _train(config, resume=resume, model=model, datasets=datasets, env=env, log=log)


# what a run writes into its folder (see the module docstring)
RUN_ENTRIES = frozenset([CONFIG_FILE, CHECKPOINT, METRICS, EVAL, "summary.json", *RESULT_FILES.values()])


def _holds_a_run(folder: Path) -> bool:
    """A folder train wrote: nothing but what a run writes, or a config.yaml that is a run's (a stage and an out
    folder; files beside it, such as the weights it starts from, are kept: train writes only its own names)."""
    if set(written_by_others(folder)) <= RUN_ENTRIES:
        return (folder / CONFIG_FILE).is_file()
    try:
        data = read_yaml(folder / CONFIG_FILE, TrainingError, "missing")
    except TrainingError:
        return False
    return isinstance(data, dict) and data.get("stage") in RESULT_FILES and isinstance(data.get("out"), str)


def _train(
    config: TrainConfig,
    *,
    resume: bool,
    model: nn.Module | None,
    datasets: tuple[Dataset, Dataset | None] | None,
    env: DistEnv,
    log: Callable[[str], None] | None,
) -> dict[str, Any]:
    say = log or (print if env.is_main else (lambda _msg: None))
    run_dir = Path(config.out)
    if not resume and (run_dir / CHECKPOINT).exists():
        raise TrainingError(
            f"{run_dir} already holds a run ({CHECKPOINT}); pass --resume to continue it, or choose another --out"
        )

    train_set, val_set = datasets or build_datasets(config)
    info = getattr(train_set, "info", None)
    if info is None:
        raise TrainingError(
            "the training dataset has no .info (classes and ignore index); use a mess_core.data dataset"
        )
    torch.manual_seed(config.seed)  # identical initial weights in every process
    source = ModelSource.parse(config.model) if model is None else None
    name = source.name if source is not None else type(model).__name__
    if source is not None:
        model = source.build(info.num_classes)
    model, started_from = _load_weights(config, model, name, say)
    task = build_task(config, model, info, _class_weights_of(config, train_set, info, say))
    net: MultiExitNet | None = getattr(task, "net", None)
    if config.init_exits and net is not None:
        _start_heads_from_stage_one(config, net, say)
    if env.distributed and config.sync_bn:
        sync_batchnorm(task.module, env.device)
    # the run folder is created only now, once data, model, weights and init have loaded: a run refused for bad input
    # leaves nothing behind
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
    barrier()

    say(
        f"{config.stage}: {name} on {config.dataset} ({len(train_set)} train / {len(val_set) if val_set else 0} val "
        f"images), {env.world_size} process(es) on {env.device}"
        + (f", exits at {[e.module for e in net.exits]}, {len(net.heads['1'])} head(s) per exit" if net else "")
    )
    outcome = fit(
        task,
        config=config,
        env=env,
        train_set=train_set,
        val_set=val_set,
        run_dir=run_dir,
        ignore_index=info.ignore_index,
        resume=resume,
        evaluate_before=config.stage == "pretrain",
        log=say,
    )
    meta = _result_meta(config, name, info, source, started_from)
    result = _write_result(config, env, net, model, meta, outcome["history"], say)
    return {**outcome, "result": result, "net": net, "model": model}


def _load_weights(
    config: TrainConfig, model: nn.Module, name: str, say: Callable[[str], None]
) -> tuple[nn.Module, str | None]:
    """``model`` with the user's weights and then ``config.init`` loaded into it, and the user's weights it descends
    from (``config.weights``, or those ``init`` was trained from), if any."""
    if config.weights:
        load_user_weights(config.weights, model)
        say(f"weights: {config.weights} loaded into {name}")
    started_from = config.weights
    if config.init:
        model, init_meta = artifacts.load_model(config.init, model)
        started_from = started_from or init_meta.get("weights")
        if "model" in init_meta and init_meta["model"] != name:
            raise TrainingError(f"{config.init}: trained for model '{init_meta['model']}', not '{name}'")
    return model, started_from


def _class_weights_of(
    config: TrainConfig, train_set: Dataset, info: DatasetInfo, say: Callable[[str], None]
) -> torch.Tensor | None:
    """The per-class loss weights ``config.class_balance`` asks for (None: no balancing)."""
    weights = None
    if config.class_balance > 0:
        weights = class_weights(train_set, info, config.class_balance)
        say(
            "class weights (median-frequency balancing ** {}): {}".format(
                config.class_balance, ", ".join(f"{c} {w:.2f}" for c, w in zip(info.classes, weights.tolist()))
            )
        )
    return weights


def _start_heads_from_stage_one(config: TrainConfig, net: MultiExitNet, say: Callable[[str], None]) -> None:
    """``init_exits``: the heads of the configuration stage 1 trained take its exits' weights."""
    if not config.init:
        raise TrainingError("init_exits starts heads from stage 1's exits: give the stage-1 model.pt as init")
    loaded = artifacts.load_exit_heads(config.init, net)
    if not loaded:
        raise TrainingError(
            f"{config.init}: none of its exit heads is a configuration of this exit space "
            f"({config.exit_space}); drop init_exits or add stage 1's configuration"
        )
    say(f"heads started from stage 1's exits: {', '.join(f'{i}:{s}' for i, s in loaded)}")


def _result_meta(
    config: TrainConfig, name: str, info: DatasetInfo, source: ModelSource | None, started_from: str | None
) -> dict[str, Any]:
    """What the result file records about the model it holds and how it was trained."""
    meta = {
        "model": name,
        "num_classes": info.num_classes,
        "dataset": config.dataset,
        "classes": list(info.classes),
        "ignore_index": info.ignore_index,
        "stage": config.stage,
        "convert": dict(config.convert),
        "weights": started_from,
    }
    if source is not None:
        recorded = source.recorded()
        meta["model_source"] = recorded.to_dict()
        if (signature := sign(recorded)) is not None:  # this machine's record: reloading it here needs no consent
            meta[SIGNATURE_KEY] = signature
    return meta


def _write_result(
    config: TrainConfig,
    env: DistEnv,
    net: MultiExitNet | None,
    model: nn.Module,
    meta: dict[str, Any],
    history: list[dict[str, Any]],
    say: Callable[[str], None],
) -> Path:
    """Rank 0 writes the stage's result file and summary.json, once every process found the weights finite."""
    run_dir = Path(config.out)
    result = run_dir / RESULT_FILES[config.stage]
    guard_finite(
        net if net is not None else model,
        env,
        where=f"before writing {result}",
        kept=f"{run_dir / CHECKPOINT} holds the last finite epoch",
    )
    if env.is_main:
        if config.stage == "exits":
            artifacts.save_multi_exit(result, net, model, meta)
        else:  # stage 1 keeps its exits beside the model: stage 2 may start from them (init_exits)
            artifacts.save_model(result, model, meta, net=net)
        summary = _summary(config, history)
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        for line in summary.get("notes", []):
            say(line)
        say(f"wrote {result}")
    barrier()
    return result


def _summary(config: TrainConfig, history: list[dict[str, Any]]) -> dict[str, Any]:
    evaluated = [row for row in history if "miou_final" in row]
    summary: dict[str, Any] = {"stage": config.stage, "epochs": config.epochs, "last": history[-1] if history else {}}
    if config.stage == "pretrain" and evaluated and evaluated[0]["epoch"] == 0:
        before, after = evaluated[0]["miou_final"], evaluated[-1]["miou_final"]
        summary.update(final_miou_before=before, final_miou_after=after)
        summary["notes"] = [
            f"final exit mIoU before exit-aware pre-training {before:.4f}, after {after:.4f} "
            f"({100 * (after - before):+.2f} points)"
        ]
        if after < before - 0.01:
            summary["notes"].append(
                "warning: exit-aware pre-training cost the final exit more than 1 mIoU point; train longer, lower "
                "--lr, or use --exit-schedule modulo so deep exits weigh in less often"
            )
    return summary
