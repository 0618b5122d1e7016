"""The configuration of a training run: one flat dataclass, saved beside the run as ``config.yaml``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..conversion.exits import exit_space
from ..data import check_dataset
from ..data.selection import parse_splits
from ..errors import MessError, TrainingError
from ..fields import check_fields
from ..models.source import ModelSource, convert_options
from .distributed import device_problem
from .losses import EXIT_LOSSES

__all__ = ["TrainConfig", "STAGES", "PRECISIONS", "OPTIMIZERS", "EXIT_SCHEDULES"]

STAGES = ("backbone", "pretrain", "exits")
PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adamw")
LR_SCHEDULES = ("poly", "constant")
EXIT_SCHEDULES = ("modulo", "every")
DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}


# the largest value each numeric setting takes (checked when the settings are read; see mess_core.fields)
SIZE_LIMIT = 16_384  # pixels a side
TRAIN_LIMITS = {
    "epochs": 100_000,
    "schedule_epochs": 100_000,
    "num_exits": 64,
    "crop": SIZE_LIMIT,
    "eval_size": SIZE_LIMIT,
    "profile_size": SIZE_LIMIT,
    "batch_size": 65_536,
    "accumulate": 65_536,
    "seed": 2**32 - 1,
    "eval_every": 100_000,
    "workers": 256,
    "prune_at": 100_000,
}

# the fields that hold pairs or lists (YAML gives them as lists)
_TUPLE_FIELDS = ("crop", "scale", "profile_size", "eval_size", "prune_at", "prune_margin", "train_groups", "val_groups")


@dataclass
class TrainConfig:
    """Everything that determines a run. ``batch_size`` is per process and per accumulation step: the global batch
    is ``batch_size * accumulate * world_size``.

    Stages (see :mod:`mess_core.train`): ``backbone`` trains the plain model; ``pretrain`` trains it with a light
    exit at every candidate point (exit i weighted in on every i-th step with ``exit_schedule="modulo"``); ``exits``
    freezes it and trains every configuration of ``exit_space`` at every exit with ``exit_loss``.
    """

    LIMITS: ClassVar[dict[str, int]] = TRAIN_LIMITS

    stage: str
    out: str
    # a registered name, 'package.module:callable' or 'path/to/file.py:callable' (see mess_core.models.ModelSource)
    model: str = "mobilenetv2_fcn"
    # the user's trained weights (a state dict, or a checkpoint holding one), loaded before ``init``
    weights: str | None = None
    # conversion options (backbone, leaf_modules, output_key, cost; see mess_core.models.convert_options)
    convert: dict[str, Any] = field(default_factory=dict)
    dataset: str = "synthetic"
    data_root: str | None = None
    # which images train and which are evaluated during training: splits, pooled with '+' ("train+val"), kept to
    # some groups (scenes; () = every group; see mess_core.data.selection)
    train_split: str = "train"
    train_groups: tuple[str, ...] = ()
    val_split: str = "val"
    val_groups: tuple[str, ...] = ()
    init: str | None = None  # a model.pt / checkpoint whose "model" weights start this run
    num_exits: int = 6
    profile_size: tuple[int, int] | None = None  # input size exits are placed for (default: crop)
    exit_space: str = "default"  # "default", "light", or comma-separated exit ids
    exit_loss: str = "pfd"
    alpha: float = 0.5
    temperature: float = 1.0
    exit_schedule: str = "modulo"
    # class balancing: every pixel's loss is weighted by (median f / f_c) ** class_balance, f_c the frequency of its
    # label's class in the training split (median-frequency balancing at 1, none at 0, its square root at 0.5)
    class_balance: float = 0.0
    # stage 2, successive halving: after each epoch in prune_at, heads beaten by at least that rung's margin (mIoU
    # points) at no more cost stop training (see mess_core.train.halving)
    prune_at: tuple[int, ...] = ()
    prune_margin: tuple[float, ...] = ()
    # stage 2: heads of the configuration stage 1 trained (its light exits, kept in its model.pt) start from stage 1's
    # weights instead of random ones; every other configuration starts from random weights as usual
    init_exits: bool = False
    crop: tuple[int, int] = (180, 240)
    scale: tuple[float, float] = (0.5, 2.0)
    hflip: bool = True
    jitter: float = 0.2
    # photometric augmentation beyond jitter (see mess_core.data.train_transform): hue shift, blur probability, noise
    hue: float = 0.0
    blur: float = 0.0
    noise: float = 0.0
    eval_size: tuple[int, int] | None = None  # resize validation images (None: native size)
    epochs: int = 10
    # the learning-rate schedule's horizon in epochs (None: ``epochs``): a longer one trains the first ``epochs`` of a
    # longer schedule, so a short run is the exact beginning of the longer one
    schedule_epochs: int | None = None
    batch_size: int = 8
    accumulate: int = 1
    optimizer: str = "sgd"
    lr: float | None = None  # default per optimizer: DEFAULT_LR
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # exponential moving average of the weights, per optimiser step, with a warm-up (0: none, e.g. 0.999): evaluations
    # and the result use the average (see mess_core.train.averaging)
    ema: float = 0.0
    lr_schedule: str = "poly"
    poly_power: float = 0.9
    precision: str = "fp32"
    device: str | None = None
    workers: int = 2
    seed: int = 0
    sync_bn: bool = True
    eval_every: int = 1
    train_limit: int | None = None  # use only the first N training images (quick runs, benchmarks)
    val_limit: int | None = None
    steps_per_epoch: int | None = None  # cap optimiser steps per epoch (benchmarks)
    progress: bool = True
    data_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tuples_from_yaml()
        if self.convert is None:  # no conversion options, as convert_options reads it
            self.convert = {}
        # types first (batch_size: 1.5, lr: fast), so that the range checks below compare numbers
        check_fields(self, where="", error=TrainingError)
        checks = [
            *self._choice_checks(),
            *self._size_checks(),
            *self._optimisation_checks(),
            *self._augmentation_checks(),
            *self._data_checks(),
            *self._stage_two_checks(),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)
        self._check_references()
        self.convert = convert_options(self.convert)

    def _tuples_from_yaml(self) -> None:
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):  # YAML gives lists; anything else is left for the type check to name
                setattr(self, name, tuple(value))

    # Each group of checks below is a list of (holds, what the user is told when it does not); every check is
    # evaluated before the first failing one is reported, in the order the groups are listed.
    def _choice_checks(self) -> list[tuple[bool, str]]:
        """Settings that name one of a fixed set."""
        return [
            (self.stage in STAGES, f"stage must be one of {STAGES}, not {self.stage!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, not {self.precision!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}, not {self.lr_schedule!r}"),
            (self.exit_schedule in EXIT_SCHEDULES, f"exit_schedule must be one of {EXIT_SCHEDULES}"),
            (self.exit_loss in EXIT_LOSSES, f"exit_loss must be one of {EXIT_LOSSES}, not {self.exit_loss!r}"),
        ]

    def _size_checks(self) -> list[tuple[bool, str]]:
        """How long the run trains, on how much at a time, with how many exits, at what input sizes."""
        return [
            (self.epochs >= 1, f"epochs must be >= 1, not {self.epochs}"),
            (
                self.schedule_epochs is None or self.schedule_epochs >= self.epochs,
                f"schedule_epochs must be >= epochs ({self.epochs}), not {self.schedule_epochs}",
            ),
            (self.batch_size >= 1, f"batch_size must be >= 1, not {self.batch_size}"),
            (self.accumulate >= 1, f"accumulate must be >= 1, not {self.accumulate}"),
            (self.num_exits >= 2, f"num_exits must be >= 2, not {self.num_exits}"),
            (len(self.crop) == 2 and min(self.crop) >= 8, f"crop must be (H, W) of at least 8 pixels, not {self.crop}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, not {self.eval_every}"),
            (
                all(min(v) >= 8 for v in (self.profile_size, self.eval_size) if v is not None),
                f"profile_size and eval_size must be (H, W) of at least 8 pixels, not {self.profile_size} and "
                f"{self.eval_size}",
            ),
        ]

    def _optimisation_checks(self) -> list[tuple[bool, str]]:
        """The optimiser, its schedule, the weight average and the exit loss."""
        return [
            (self.lr is None or self.lr > 0, f"lr must be > 0 (or null for the optimizer's default), not {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, not {self.weight_decay}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), not {self.momentum}"),
            (0 <= self.ema < 1, f"ema must be a decay in [0, 1) (0: no weight average), not {self.ema}"),
            (self.poly_power > 0, f"poly_power must be > 0, not {self.poly_power}"),
            (0 <= self.alpha <= 1, f"alpha must be in [0, 1], not {self.alpha}"),
            (self.temperature > 0, f"temperature must be > 0, not {self.temperature}"),
        ]

    def _augmentation_checks(self) -> list[tuple[bool, str]]:
        """The random changes made to training images."""
        return [
            (self.jitter >= 0, f"jitter must be >= 0 (0: no colour jitter), not {self.jitter}"),
            (0 <= self.hue <= 0.5, f"hue must be in [0, 0.5] (0: no hue shift), not {self.hue}"),
            (0 <= self.blur <= 1, f"blur must be a probability in [0, 1], not {self.blur}"),
            (0 <= self.noise <= 1, f"noise must be a standard deviation in [0, 1] of the 0-1 range, not {self.noise}"),
            (0 < self.scale[0] <= self.scale[1], f"scale must be (min, max) with 0 < min <= max, not {self.scale}"),
        ]

    def _data_checks(self) -> list[tuple[bool, str]]:
        """How the data is loaded, shuffled, limited and balanced."""
        return [
            (self.workers >= 0, f"workers must be >= 0 (0: load data in the training process), not {self.workers}"),
            (self.seed >= 0, f"seed must be >= 0, not {self.seed}"),
            (
                all(v is None or v >= 1 for v in (self.train_limit, self.val_limit, self.steps_per_epoch)),
                f"train_limit, val_limit and steps_per_epoch must be >= 1 or null (no limit), not {self.train_limit}, "
                f"{self.val_limit} and {self.steps_per_epoch}",
            ),
            (self.class_balance >= 0, f"class_balance must be >= 0 (0: no balancing), not {self.class_balance}"),
        ]

    def _stage_two_checks(self) -> list[tuple[bool, str]]:
        """Successive halving and heads started from stage 1: settings of stage 2 only."""
        return [
            (
                len(self.prune_at) == len(self.prune_margin),
                f"prune_at {list(self.prune_at)} and prune_margin {list(self.prune_margin)} need one margin per epoch",
            ),
            (
                list(self.prune_at) == sorted(set(self.prune_at)) and all(1 <= e < self.epochs for e in self.prune_at),
                f"prune_at must list increasing epochs before the last ({self.epochs}), not {list(self.prune_at)}",
            ),
            (
                all(m > 0 for m in self.prune_margin),
                f"prune_margin must be positive mIoU points, not {list(self.prune_margin)}",
            ),
            (not self.prune_at or self.stage == "exits", "prune_at (successive halving) applies to stage 2 (exits)"),
            (not self.init_exits or self.stage == "exits", "init_exits applies to stage 2 (exits)"),
        ]

    def _check_references(self) -> None:
        """What the settings name must exist: the model, the device, every exit id, the dataset and its splits."""
        ModelSource.parse(self.model)  # a name that is not registered, or no callable named: refused now
        if self.device is not None and (problem := device_problem(self.device, fix="set device: cpu (or null)")):
            raise TrainingError(f"device: {problem}")
        # parsed now, so that a typo in an exit id stops the run before stages 0 and 1 train for hours
        try:
            exit_space(self.exit_space)
        except MessError as exc:
            raise TrainingError(f"exit_space: {exc}") from None
        try:
            check_dataset(self.dataset, self.data_options)
            parse_splits(self.train_split), parse_splits(self.val_split)
        except MessError as exc:
            raise TrainingError(str(exc)) from None

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TrainingError(f"unknown configuration fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)
