"""The one training loop every stage shares: plain PyTorch, one process or many.

Per optimiser step it draws ``accumulate`` micro-batches, counts the valid (non-ignored) pixels of the whole global
batch across processes, and back-propagates each micro-batch's per-pixel loss sum divided by that count, times the
world size because DistributedDataParallel averages gradients. The result is the gradient of one big batch, whatever
the number of processes or accumulation steps. Samples are assigned by ``DistributedSampler`` (also with one
process, so the order of samples is the same for any process count) and augmented with per-sample seeds (see
:class:`mess_core.data.SegmentationDataset`), so runs are reproducible and resumable.

After every epoch rank 0 writes ``checkpoint.pt`` atomically (weights, optimiser, scheduler, gradient scaler, every
process's RNG state, the epoch, the configuration and the metric history) and rewrites ``metrics.csv`` from that
history, so the two never disagree. A non-finite loss stops the run before the optimiser touches the weights; a
non-finite value anywhere in the trained state (parameters, buffers such as BatchNorm statistics, optimiser state)
stops it after the epoch, before anything is written, so every checkpoint (and result file) is finite by construction
(see :mod:`.divergence`).

With ``ema`` a copy of the weights (and BatchNorm statistics) averaged exponentially over the optimiser steps
(:mod:`.averaging`) is kept beside them: evaluations read the average, the checkpoint holds both, and the run's
result is the average.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .. import checkpoint
from ..data import pad_collate
from ..data.loader import plain_error_loader
from ..errors import TrainingError
from ..io import atomic_write_text
from .averaging import weight_average
from .config import TrainConfig
from .distributed import DistEnv, all_gather_objects, all_reduce_sum, barrier, rng_state, set_rng_state, shard_indices
from .divergence import guard_finite

__all__ = ["fit", "CHECKPOINT", "METRICS", "write_metrics_csv"]

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"
EVAL = "eval.json"
_FORMAT = "mess-checkpoint/1"


def _loaders(config: TrainConfig, env: DistEnv, train_set, val_set, ignore_index: int):
    collate = partial(pad_collate, ignore_index=ignore_index)
    sampler = DistributedSampler(
        train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=config.seed, drop_last=True
    )
    pin = env.device.type == "cuda"
    # plain_error_loader: a bad dataset file ends as its DataError's one-line message, not a worker's traceback
    train = plain_error_loader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        drop_last=True,
        collate_fn=collate,
        pin_memory=pin,
    )
    val = None
    if val_set is not None:
        val = plain_error_loader(
            Subset(val_set, shard_indices(len(val_set), env.rank, env.world_size)),
            batch_size=config.batch_size,
            num_workers=config.workers,
            collate_fn=collate,
            pin_memory=pin,
        )
    return train, sampler, val


def _optimizer(config: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if not params:
        raise TrainingError("nothing to train: every parameter of the task is frozen")
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay)


def _scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int):
    if config.lr_schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    power = config.poly_power
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total_steps) ** power)


def _autocast(config: TrainConfig, device: torch.device):
    if config.precision == "fp32":
        return contextlib.nullcontext
    if config.precision == "fp16" and device.type != "cuda":
        raise TrainingError("precision fp16 needs a CUDA device (it relies on a gradient scaler); use bf16 or fp32")
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    return partial(torch.autocast, device_type=device.type, dtype=dtype)


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Write the metric history as CSV (atomically; columns in order of first appearance)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())


def _kept(run: "_Run", epoch: int) -> str:
    return (
        f"{run.ckpt_path} still holds epoch {epoch - 1}, the last good one (finite)"
        if epoch > 1
        else "no epoch had finished, so no checkpoint was written"
    )


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=True, dynamic_ncols=True, unit="step")


@dataclass
class _Run:
    """What one call of :func:`fit` trains with, shared by the helpers that make up its loop."""

    task: Any
    config: TrainConfig
    env: DistEnv
    wrapped: nn.Module  # the task's module, inside DistributedDataParallel when there are several processes
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]
    ignore_index: int
    run_dir: Path
    log: Callable[[str], None]
    ema: Any = None  # torch.optim.swa_utils.AveragedModel of the task's module when config.ema > 0

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    def main_log(self) -> Callable[[str], None]:
        """``log`` on rank 0, silence on the others (so each message appears once)."""
        return self.log if self.env.is_main else (lambda _msg: None)


def _steps_per_epoch(config: TrainConfig, env: DistEnv, train_loader: DataLoader, train_set) -> tuple[int, int]:
    """Optimiser steps per epoch and the global batch (images per step over all processes)."""
    steps = len(train_loader) // config.accumulate
    if config.steps_per_epoch:
        steps = min(steps, config.steps_per_epoch)
    global_batch = config.batch_size * config.accumulate * env.world_size
    if steps == 0:
        raise TrainingError(
            f"the training split has {len(train_set)} images, fewer than one global batch of {global_batch} "
            f"(batch_size {config.batch_size} x accumulate {config.accumulate} x {env.world_size} processes); "
            "lower the batch size or use more data"
        )
    return steps, global_batch


def _parallel_module(task, env: DistEnv) -> nn.Module:
    if not env.distributed:
        return task.module
    device = env.device
    return DistributedDataParallel(
        task.module,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=task.find_unused_parameters,
    )


def _rescale_lr(run: _Run, log: Callable[[str], None]) -> None:
    """After a divergence the user resumes with a lower ``lr``: the restored schedule continues from where it was,
    scaled to the new rate (the checkpoint's optimiser state carries the old one)."""
    stored, wanted = run.scheduler.base_lrs[0], run.config.learning_rate
    if math.isclose(stored, wanted, rel_tol=1e-9):
        return
    ratio = wanted / stored
    run.scheduler.base_lrs = [base * ratio for base in run.scheduler.base_lrs]
    for group in run.optimizer.param_groups:
        group["initial_lr"] = group.get("initial_lr", stored) * ratio
        group["lr"] *= ratio
    log(f"learning rate {stored:.3g} -> {wanted:.3g} from here on (the schedule continues, scaled)")


def _resume(run: _Run) -> tuple[int, int, list[dict[str, Any]]]:
    """Restore weights, optimiser, scheduler, scaler, task state and random streams from the checkpoint; returns
    the first epoch still to run, the global step reached and the metric history."""
    ckpt_path, env, config, log = run.ckpt_path, run.env, run.config, run.log
    state = checkpoint.load(ckpt_path)
    if state.get("format") != _FORMAT or state.get("stage") != run.task.stage:
        raise TrainingError(
            f"{ckpt_path}: not a checkpoint of a '{run.task.stage}' run (stage {state.get('stage')!r}); resume the run "
            "directory the checkpoint belongs to"
        )
    try:
        run.task.module.load_state_dict(state["module"])
    except RuntimeError as exc:
        raise TrainingError(f"{ckpt_path}: its weights do not fit this network: {str(exc).splitlines()[0]}") from None
    run.task.restore(state.get("task", {}))
    if run.ema is not None:
        if "ema" not in state:
            raise TrainingError(
                f"{ckpt_path}: holds no weight average (it was written without ema); resume with the run's own settings"
            )
        run.ema.load_state_dict(state["ema"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    _rescale_lr(run, log)
    start_epoch, global_step, history = state["epoch"] + 1, state["global_step"], list(state["history"])
    if len(state["rng"]) == env.world_size:
        set_rng_state(state["rng"][env.rank])
    else:
        log(
            f"note: {ckpt_path} was written by {len(state['rng'])} processes, this run has {env.world_size}; "
            "random streams (dropout) restart from the seed"
        )
        torch.manual_seed(config.seed + 7919 * env.rank + start_epoch)
    log(f"resuming {ckpt_path} after epoch {state['epoch']} (global step {global_step})")
    if start_epoch > config.epochs:
        log(f"the run already finished its {config.epochs} epochs")
    return start_epoch, global_step, history


def _train_step(run: _Run, micro: list, epoch: int, global_step: int) -> tuple[float, dict[str, float]]:
    """One optimiser step on the micro-batches ``micro``; returns the loss and its named parts summed over all
    processes. A non-finite loss raises before the optimiser touches the weights."""
    device, env = run.env.device, run.env
    local_valid = sum(int((labels != run.ignore_index).sum()) for _, labels in micro)
    num_valid = float(all_reduce_sum(torch.tensor([local_valid], dtype=torch.float64, device=device)))
    run.optimizer.zero_grad(set_to_none=True)
    step_parts: dict[str, torch.Tensor] = {}
    step_loss = torch.zeros((), device=device, dtype=torch.float64)
    for k, (images, labels) in enumerate(micro):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        last = k == len(micro) - 1
        sync = contextlib.nullcontext() if (last or not env.distributed) else run.wrapped.no_sync()
        with sync:
            with run.autocast():
                outputs = run.wrapped(images, **run.task.forward_kwargs(global_step))
                loss, parts = run.task.loss(outputs, labels, global_step, num_valid)
            run.scaler.scale(loss * env.world_size).backward()
        step_loss += loss.detach().double()
        for name, value in parts.items():
            step_parts[name] = step_parts.get(name, 0) + value.double()
    names = sorted(step_parts)
    reduced = all_reduce_sum(torch.stack([step_loss] + [step_parts[n] for n in names]))
    loss_value = float(reduced[0])
    if not math.isfinite(loss_value):
        kept = _kept(run, epoch)
        raise TrainingError(
            f"the loss became {loss_value} at epoch {epoch}, global step {global_step}; the weights were not "
            f"updated by this step and {kept}. Lower the learning rate (now {run.scheduler.get_last_lr()[0]:.3g}), "
            "use fp32/bf16 instead of fp16, or check the data for NaN/inf values"
        )
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update_parameters(run.task.module)
    return loss_value, dict(zip(names, reduced[1:].tolist()))


def _train_epoch(
    run: _Run, epoch: int, train_loader: DataLoader, steps: int, global_step: int, global_batch: int
) -> tuple[dict[str, Any], int]:
    """``steps`` optimiser steps; returns the epoch's metric row (before evaluation) and the global step reached."""
    config = run.config
    run.task.set_train_mode()
    epoch_lr = run.optimizer.param_groups[0]["lr"]
    sums: dict[str, float] = {}
    bar = _progress(steps, f"{run.task.stage} {epoch}/{config.epochs}", run.env.is_main and config.progress)
    started = time.perf_counter()
    batches = iter(train_loader)
    for _ in range(steps):
        global_step += 1
        micro = [next(batches) for _ in range(config.accumulate)]
        loss_value, parts = _train_step(run, micro, epoch, global_step)
        sums["loss"] = sums.get("loss", 0.0) + loss_value
        for n, v in parts.items():
            sums[n] = sums.get(n, 0.0) + v
        done = bar.n + 1
        elapsed = time.perf_counter() - started
        bar.set_postfix(loss=f"{sums['loss'] / done:.4f}", img_s=f"{done * global_batch / elapsed:.1f}")
        bar.update()
    seconds = time.perf_counter() - started
    bar.close()
    row: dict[str, Any] = {
        "epoch": epoch,
        "step": global_step,
        "lr": epoch_lr,  # at the epoch's start (poly decay reaches 0 after the last step)
        **{k: sums[k] / steps for k in sorted(sums, key=lambda k: (k != "loss", len(k), k))},
        "images_per_s": steps * global_batch / seconds,
        "train_seconds": seconds,
        **run.task.row_extras(),
    }
    return row, global_step


def _save_epoch(run: _Run, epoch: int, global_step: int, history: list[dict[str, Any]], detail: dict[str, Any]) -> None:
    """Rank 0 writes the checkpoint, metrics.csv and (when evaluated) eval.json; every process contributes its
    random state, so this is a collective call. A non-finite trained state raises before anything is written."""
    _guard_epoch(run, epoch)
    rngs = all_gather_objects(rng_state())
    if run.env.is_main:
        checkpoint.save(
            run.ckpt_path,
            {
                "format": _FORMAT,
                "stage": run.task.stage,
                "epoch": epoch,
                "global_step": global_step,
                "config": run.config.to_dict(),
                "module": run.task.module.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict(),
                "scaler": run.scaler.state_dict(),
                "history": history,
                "rng": rngs,
                "task": run.task.state(),
                **({"ema": run.ema.state_dict()} if run.ema is not None else {}),
            },
        )
        write_metrics_csv(run.run_dir / METRICS, history)
        if detail:
            atomic_write_text(run.run_dir / EVAL, json.dumps(detail, indent=2))
        row = history[-1]
        run.log(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "step")))
    barrier()


def _guard_epoch(run: _Run, epoch: int) -> None:
    guard_finite(
        run.task.module,
        run.env,
        where=f"in epoch {epoch}",
        kept=_kept(run, epoch),
        lr=run.scheduler.get_last_lr()[0],
        optimizer=run.optimizer,
    )


@contextlib.contextmanager
def _averaged(run: _Run):
    """The task's module holds the weight average for the block (evaluation), its own weights again after it."""
    if run.ema is None:
        yield
        return
    own = {k: v.clone() for k, v in run.task.module.state_dict().items()}
    run.task.module.load_state_dict(run.ema.module.state_dict())
    try:
        yield
    finally:
        run.task.module.load_state_dict(own)


def _evaluate(run: _Run, val_loader: DataLoader) -> tuple[dict[str, Any], dict[str, Any]]:
    with _averaged(run):
        return run.task.evaluate(val_loader, run.env.device)


def _evaluate_final_weights(run: _Run, val_loader: DataLoader, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluate weights no epoch of this call evaluated (a resume after the last epoch) and record the result."""
    metrics, detail = run.task.evaluate(val_loader, run.env.device)  # the average already, when there is one
    detail.update(run.task.after_evaluation(run.config.epochs, run.main_log()))
    if history:
        history[-1].update(metrics)
    if run.env.is_main:
        write_metrics_csv(run.run_dir / METRICS, history)
        atomic_write_text(run.run_dir / EVAL, json.dumps(detail, indent=2))
        run.log("final weights: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return detail


def fit(
    task,
    *,
    config: TrainConfig,
    env: DistEnv,
    train_set,
    val_set,
    run_dir: str | Path,
    ignore_index: int,
    resume: bool = False,
    evaluate_before: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``task`` (see :mod:`mess_core.train.tasks`) for ``config.epochs`` epochs; returns the history and the
    last detailed evaluation. ``resume`` continues from ``run_dir/checkpoint.pt``."""
    device = env.device
    task.module.to(device)
    train_loader, sampler, val_loader = _loaders(config, env, train_set, val_set, ignore_index)
    steps, global_batch = _steps_per_epoch(config, env, train_loader, train_set)
    wrapped = _parallel_module(task, env)
    optimizer = _optimizer(config, task.trainable_parameters())
    run = _Run(
        task=task,
        config=config,
        env=env,
        wrapped=wrapped,
        optimizer=optimizer,
        scheduler=_scheduler(config, optimizer, (config.schedule_epochs or config.epochs) * steps),
        scaler=torch.amp.GradScaler(device.type, enabled=config.precision == "fp16"),
        autocast=_autocast(config, device),
        ignore_index=ignore_index,
        run_dir=Path(run_dir),
        log=log,
        ema=weight_average(task.module, config.ema),
    )

    history: list[dict[str, Any]] = []
    detail: dict[str, Any] = {}
    start_epoch, global_step = 1, 0
    if resume:
        start_epoch, global_step, history = _resume(run)
    else:
        torch.manual_seed(config.seed + 7919 * env.rank)  # per-process dropout streams, reproducible
        if evaluate_before and val_loader is not None:
            metrics, detail = task.evaluate(val_loader, device)
            history.append({"epoch": 0, "step": 0, **metrics})
            log("before training: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    for epoch in range(start_epoch, config.epochs + 1):
        sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        row, global_step = _train_epoch(run, epoch, train_loader, steps, global_step, global_batch)
        _guard_epoch(run, epoch)  # before evaluating diverged weights (and again right before the checkpoint)
        due = epoch % config.eval_every == 0 or epoch == config.epochs or epoch in config.prune_at
        if val_loader is not None and due:
            metrics, detail = _evaluate(run, val_loader)
            row.update(metrics)
            detail.update(task.after_evaluation(epoch, run.main_log()))
        history.append(row)
        _save_epoch(run, epoch, global_step, history, detail)
    if run.ema is not None:  # the run's result is the average
        task.module.load_state_dict(run.ema.module.state_dict())
    if val_loader is not None and not detail:  # resumed after its last epoch: its final weights were not evaluated
        detail = _evaluate_final_weights(run, val_loader, history)
    return {"history": history, "detail": detail}
