"""``train``: one stage of MESS training (backbone, exit-aware pre-training, or every exit configuration)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import models
from ..train import TrainConfig, load_run_config, train
from ..train.distributed import teardown
from .args import (
    MODEL_HELP,
    add_convert_options,
    add_data_option,
    convert_options_of,
    declare_files,
    device,
    folder,
    fraction,
    groups,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    size,
    split_expression,
)


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "train",
        help="train a backbone, pre-train it exit-aware (stage 1) or train every exit configuration (stage 2)",
        description="One stage of MESS training. Runs as one process, or under torchrun --nproc-per-node K.",
    )
    _add_run_options(parser)
    _add_data_options(parser)
    _add_stage_options(parser)
    _add_augmentation_options(parser)
    _add_optimisation_options(parser)
    _add_execution_options(parser)
    declare_files(parser, reads=("model", "weights", "init"), writes=("out",))
    parser.set_defaults(run=run)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """The run: its stage and folder, and the model it trains."""
    parser.add_argument("--stage", choices=("backbone", "pretrain", "exits"), help="required unless --resume")
    parser.add_argument(
        "--out", required=True, type=folder, help="run directory (config.yaml, checkpoint.pt, metrics.csv, result)"
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument(
        "--model", help=MODEL_HELP.format(", ".join(models.list_models())) + "; default mobilenetv2_fcn"
    )
    parser.add_argument(
        "--weights",
        help="your trained weights: a state dict, or a checkpoint holding one (under "
        "state_dict, model, ...), loaded before --init",
    )
    add_convert_options(parser)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    """The images it trains on and evaluates on."""
    parser.add_argument("--data", help="synthetic (default), camvid, cityscapes, voc or folder")
    parser.add_argument("--data-root", help="dataset folder (all but synthetic)")
    add_data_option(parser, help="extra dataset argument, e.g. length=512 or size=[120,160] for synthetic (repeatable)")
    parser.add_argument(
        "--train-split",
        type=split_expression,
        help="the training images: a split or splits pooled with '+' (default train)",
    )
    parser.add_argument(
        "--train-groups",
        type=groups,
        metavar="G1,G2",
        help="train only on these groups (scenes: CamVid's sequence, Cityscapes' city)",
    )
    parser.add_argument("--val-split", type=split_expression, help="the images evaluated during training (default val)")
    parser.add_argument("--val-groups", type=groups, metavar="G1,G2", help="evaluate only on these groups")


def _add_stage_options(parser: argparse.ArgumentParser) -> None:
    """What the stage starts from, where its exits go and what trains them (loss, class balance, halving)."""
    parser.add_argument("--init", help="model.pt (or checkpoint) of a previous stage to start from")
    parser.add_argument("--exits", type=positive_int, help="N, exits including the final one (default 6)")
    parser.add_argument(
        "--profile-size", type=size, metavar="HxW", help="input size exits are placed for (default: crop)"
    )
    parser.add_argument(
        "--space", help="stage 2 exit space: default (30 configurations), light, or comma-separated ids"
    )
    parser.add_argument("--loss", choices=("pfd", "kd", "ce"), help="stage 2 exit loss (default pfd)")
    parser.add_argument("--alpha", type=fraction, help="PFD weight of the filtered cross-entropy (default 0.5)")
    parser.add_argument("--temperature", type=positive_float, help="distillation temperature (default 1)")
    parser.add_argument(
        "--exit-schedule",
        choices=("modulo", "every"),
        help="stage 1: exit i counts on every i-th step (modulo, default) or on every step",
    )
    parser.add_argument(
        "--class-balance",
        type=non_negative_float,
        metavar="P",
        help="weigh each pixel's loss by (median f / f_class) ** P (median-frequency balancing at 1; default 0)",
    )
    parser.add_argument(
        "--prune-at",
        type=positive_int,
        nargs="+",
        metavar="EPOCH",
        help="stage 2, successive halving: after these epochs stop the heads that cannot reach the front",
    )
    parser.add_argument(
        "--prune-margin",
        type=positive_float,
        nargs="+",
        metavar="PP",
        help="with --prune-at: one margin per epoch, in mIoU points (a head beaten by that much at no more cost stops)",
    )
    parser.add_argument(
        "--init-exits",
        action="store_true",
        help="stage 2: start the configuration stage 1 trained (nocrm-b0-fcn) from the exits kept in the "
        "--init model.pt instead of random weights",
    )


def _add_augmentation_options(parser: argparse.ArgumentParser) -> None:
    """How training images are cropped and augmented, and validation images sized."""
    parser.add_argument("--crop", type=size, metavar="HxW", help="training crop (default 180x240)")
    parser.add_argument(
        "--scale", type=positive_float, nargs=2, metavar=("MIN", "MAX"), help="random scale range (default 0.5 2)"
    )
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    parser.add_argument("--jitter", type=non_negative_float, help="colour jitter strength (default 0.2)")
    parser.add_argument(
        "--hue", type=non_negative_float, help="hue shift of the colour jitter, at most 0.5 (default 0)"
    )
    parser.add_argument("--blur", type=fraction, help="probability of a Gaussian blur (default 0)")
    parser.add_argument(
        "--noise",
        type=non_negative_float,
        help="standard deviation of Gaussian noise on half the images, of the 0-1 range (default 0)",
    )
    parser.add_argument("--eval-size", type=size, metavar="HxW", help="resize validation images (default: native size)")


def _add_optimisation_options(parser: argparse.ArgumentParser) -> None:
    """How long and how the weights are optimised."""
    parser.add_argument("--epochs", type=positive_int, help="default 10")
    parser.add_argument("--batch-size", type=positive_int, help="per process and accumulation step (default 8)")
    parser.add_argument("--accumulate", type=positive_int, help="gradient accumulation steps (default 1)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"))
    parser.add_argument("--lr", type=positive_float, help="default 0.01 (sgd) or 0.001 (adamw)")
    parser.add_argument("--weight-decay", type=non_negative_float)
    parser.add_argument("--lr-schedule", choices=("poly", "constant"))
    parser.add_argument(
        "--ema",
        type=fraction,
        metavar="DECAY",
        help="keep an exponential moving average of the weights; DECAY (e.g. 0.999) is the ceiling of a warm-up "
        "decay (1 + n) / (10 + n) after n updates; evaluations and the result use it (default 0: none)",
    )
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="mixed precision (fp16 needs CUDA)")


def _add_execution_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the run executes: devices, data loading, evaluation, limits, output."""
    parser.add_argument("--device", type=device, help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--workers", type=non_negative_int, help="data loading processes per training process (default 2)"
    )
    parser.add_argument("--seed", type=non_negative_int)
    parser.add_argument(
        "--no-sync-bn", action="store_true", help="keep BatchNorm statistics per process under torchrun"
    )
    parser.add_argument("--eval-every", type=positive_int, help="evaluate every K epochs (and after the last)")
    parser.add_argument("--train-limit", type=positive_int, help="use only the first N training images")
    parser.add_argument("--val-limit", type=positive_int, help="evaluate on the first N validation images")
    parser.add_argument("--steps-per-epoch", type=positive_int, help="cap optimiser steps per epoch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines are still printed)")


# what a resumed run may change: how long it trains, how fast it learns after a divergence, and where and how it
# runs; everything else is the run's identity and comes from its config.yaml
RESUME_OVERRIDES = ("epochs", "lr", "device", "workers", "progress")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the arguments set (None: not given, the configuration's default applies)."""
    return {
        "stage": args.stage,
        "model": args.model,
        "dataset": args.data,
        "data_root": args.data_root,
        "train_split": args.train_split,
        "train_groups": args.train_groups,
        "val_split": args.val_split,
        "val_groups": args.val_groups,
        "init": args.init,
        "num_exits": args.exits,
        "profile_size": args.profile_size,
        "exit_space": args.space,
        "exit_loss": args.loss,
        "alpha": args.alpha,
        "temperature": args.temperature,
        "exit_schedule": args.exit_schedule,
        "class_balance": args.class_balance,
        "prune_at": args.prune_at,
        "prune_margin": args.prune_margin,
        "init_exits": args.init_exits or None,
        "crop": args.crop,
        "scale": args.scale,
        "hflip": False if args.no_flip else None,
        "jitter": args.jitter,
        "hue": args.hue,
        "blur": args.blur,
        "noise": args.noise,
        "eval_size": args.eval_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "accumulate": args.accumulate,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "lr_schedule": args.lr_schedule,
        "ema": args.ema,
        "precision": args.precision,
        "device": args.device,
        "workers": args.workers,
        "seed": args.seed,
        "sync_bn": False if args.no_sync_bn else None,
        "eval_every": args.eval_every,
        "train_limit": args.train_limit,
        "val_limit": args.val_limit,
        "steps_per_epoch": args.steps_per_epoch,
        "progress": False if args.no_progress else None,
        "data_options": dict(args.data_option) or None,
        "weights": args.weights,
        "convert": convert_options_of(args) or None,
    }


def _plain(value: Any) -> Any:
    """A setting as YAML stores it (tuples as lists), to compare a given value with a stored one."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def run(args: argparse.Namespace) -> int:
    given = {k: v for k, v in _fields(args).items() if v is not None}
    if args.resume:
        stored = load_run_config(args.out, **{k: given[k] for k in RESUME_OVERRIDES if k in given})
        # the run's own command line again, with --resume added, is fine: only a setting that differs is refused
        fixed = sorted(
            k
            for k in given
            if k not in RESUME_OVERRIDES and k != "stage" and _plain(given[k]) != _plain(getattr(stored, k))
        )
        if fixed:
            print(
                f"error: --resume continues the run in {args.out} with its own settings; only "
                f"{', '.join(RESUME_OVERRIDES)} may change, not {', '.join(fixed)}, which differ from its "
                "config.yaml (start a new run with --out elsewhere for other settings)",
                file=sys.stderr,
            )
            return 2
        config = stored
        if args.stage and args.stage != config.stage:
            print(f"error: {args.out} holds a '{config.stage}' run, not '{args.stage}'", file=sys.stderr)
            return 2
    else:
        if not args.stage:
            print("error: --stage is required for a new run (backbone, pretrain or exits)", file=sys.stderr)
            return 2
        config = TrainConfig(out=args.out, **given)
    try:
        train(config, resume=args.resume)
    finally:
        teardown()
    return 0
