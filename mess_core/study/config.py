"""What a study is built from (:class:`StudyConfig`, one YAML file), the error every study problem raises, and the
names of the files a study folder holds.

    >>> cfg = StudyConfig.from_dict({"name": "demo", "model": "mobilenetv2_fcn", "crop": [96, 128]})
    >>> cfg.name, cfg.stage_fields("exits")["exit_loss"], cfg.crop
    ('demo', 'pfd', (96, 128))
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from ..conversion.exits import ExitSpec, exit_space
from ..conversion.pipeline import check_module_names
from ..data import build_dataset, check_dataset, eval_transform, list_datasets
from ..data.registry import default_selections
from ..data.selection import SPLIT_SEPARATOR, parse_splits
from ..deploy.bench import ENGINES
from ..errors import DataError, MessError
from ..fields import check_fields
from ..io import expand_home, read_yaml
from ..models.source import ModelSource, convert_options
from ..train import TrainConfig
from ..train.config import SIZE_LIMIT

__all__ = [
    "StudyError",
    "StudyConfig",
    "SELECTIONS",
    "STUDY_FORMAT",
    "DEFAULT_STUDY",
    "STAGES",
    "MANIFEST",
    "WEIGHTS",
    "RESULTS",
    "FRONTS",
    "PROFILE",
    "CONFIG",
    "TRAINING",
    "LATENCY",
    "ORACLE",
    "TRANSFER",
    "USER_MODEL",
]

STUDY_FORMAT = "mess-study/1"
# the files of a study folder
MANIFEST = "manifest.json"
WEIGHTS = "multi_exit.pt"
RESULTS = "results.json"
FRONTS = "fronts.json"
PROFILE = "profile.json"
CONFIG = "study.yaml"
TRAINING = "training.json"
LATENCY = "latency.json"
ORACLE = "oracle.json"
TRANSFER = "transfer.json"
USER_MODEL = "user_model.json"  # in the work folder: the user's model as given, evaluated (studies with weights:)
# the shipped study the app opens first: the CPU reference study on real driving scenes
DEFAULT_STUDY = "camvid-mobilenetv2-fcn"
STAGES = ("backbone", "pretrain", "exits")
_STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "backbone": {"epochs": 10, "optimizer": "adamw", "lr": 0.002},
    "pretrain": {"epochs": 4, "optimizer": "adamw", "lr": 0.0005},
    "exits": {"epochs": 3, "optimizer": "adamw", "lr": 0.002, "exit_loss": "pfd"},
}
_TUPLES = (
    "crop",
    "eval_size",
    "bench_batches",
    "bench_engines",
    "heavy_configs",
    "train_groups",
    "cache_groups",
    "report_groups",
)
# the images each step of a study uses: (split field, groups field)
SELECTIONS = {
    "train": ("train_split", "train_groups"),
    "tune": ("cache_split", "cache_groups"),
    "report": ("report_split", "report_groups"),
}
_MAPPINGS = ("convert", "data_options", "stages", "variants")


class StudyError(MessError):
    """A study configuration or folder that cannot be used; the message names the file and what to do."""


@dataclass
class StudyConfig:
    """What a study is built from (the YAML file, flat, plus per-stage overrides under ``stages``)."""

    LIMITS: ClassVar[dict[str, int]] = {
        "num_exits": 64,
        "crop": SIZE_LIMIT,
        "eval_size": SIZE_LIMIT,
        "batch_size": 65_536,
        "seed": 2**32 - 1,
        "cache_limit": 10_000_000,
        "max_exits": 64,
        "promise_block": 1_000_000,
        "bench_images": 100_000,
        "bench_batches": 65_536,
        "bench_repeats": 1_000,
    }

    name: str
    description: str = ""
    # a registered name, 'package.module:callable' or 'path/to/file.py:callable' (from_yaml reads a relative file
    # path relative to the YAML file's folder and keeps it absolute; the build ships a copy of the file)
    model: str = "mobilenetv2_fcn"
    # the user's trained weights (a state dict or a checkpoint holding one; relative to the YAML file's folder): no
    # backbone stage, stage 1 (or stage 2 with stages.pretrain: false) starts from them
    weights: str | None = None
    # how the model is converted: backbone, leaf_modules, output_key, cost (see mess_core.models.convert_options)
    convert: dict[str, Any] = field(default_factory=dict)
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
    # stages.pretrain: false switches stage 1 off: stage 2 trains its exits on the backbone stage's (or the user's)
    # weights as they are
    # "backbone": stage 1 (exit-aware pre-training) continues the plainly trained backbone, as in the paper, where
    # the backbone comes pretrained; "scratch": no plain backbone stage, stage 1 trains the network from random
    # weights with its exit losses from the first step (exit-aware training when no pretrained backbone exists)
    pretrain_from: str = "backbone"
    # which images train, which tune (the caches the search picks thresholds on; also what training evaluates) and
    # which report: a split, or splits pooled with '+' ("train+val"), kept to some groups (scenes: CamVid's drive,
    # Cityscapes' city; () = every group). The build refuses to tune on a group it trained on unless
    # tune_on_training_groups says so: thresholds tuned on frames of a drive the network trained on promise savings
    # that new scenes do not give. A step whose split and groups the YAML leaves out takes the dataset's default
    # (mess_core.data.default_selections: CamVid's is scene-disjoint)
    train_split: str = "train"
    train_groups: tuple[str, ...] = ()
    cache_split: str = "val"
    cache_groups: tuple[str, ...] = ()
    tune_on_training_groups: bool = False
    cache_limit: int | None = None
    latency: bool = True
    max_exits: int = 2
    # how the results rows keep their promise: with a confidence, the min-cost rows (and the naive peer) keep their
    # drop at that confidence on a fresh sample of as many images as the tuning set (a predictive bootstrap bound),
    # over scene blocks of promise_block consecutive images of a group when given (see mess_core.search.uncertainty).
    # The default is the one rule that held its promise in every transfer check of BENCHMARKS.md (issue 23): 90%,
    # scene blocks of 10 images. promise_confidence: null is the plain search (it takes the default block with it)
    promise_confidence: float | None = 0.9
    promise_block: int | None = 10
    # stage-2 variants for the training table: name -> {exit_loss, init ("pretrain" or "backbone"), other stage
    # settings}, each trained on ``variant_space`` (heads are independent given the frozen backbone)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    variant_space: str = "crm50p-b1-rdi-fcn"
    # thresholds are tuned on cache_split; when the dataset also has this split, every instance is reported there too
    report_split: str = "test"
    report_groups: tuple[str, ...] = ()
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
        _check_shape(data, where, {f.name for f in dataclasses.fields(cls)})
        values = dict(data)
        for key in _TUPLES:
            if isinstance(values.get(key), list):  # anything else is left for the type check to name
                values[key] = tuple(values[key])
        for key in _MAPPINGS:
            if key in values and values[key] is None:  # 'convert:' with nothing under it: no options
                values[key] = {}
        dataset = values.get("dataset", cls.dataset)
        if isinstance(dataset, str) and dataset in list_datasets():
            for step, (split, groups) in default_selections(dataset).items():
                split_key, groups_key = SELECTIONS[step]
                if split_key not in values and groups_key not in values:
                    values[split_key], values[groups_key] = split, groups
        if "promise_block" not in values and values.get("promise_confidence", cls.promise_confidence) is None:
            values["promise_block"] = None  # the plain search has no blocks to resample
        cfg = cls(**values)
        cfg._check_settings(where)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "StudyConfig":
        """Read a study configuration; a model file and ``weights`` given as relative paths are resolved relative to
        the YAML file's folder (and kept absolute), and checked now: the model must import, the weights exist."""
        path = Path(path)
        data = read_yaml(path, StudyError, "no such study configuration file")
        base = path.resolve().parent
        if isinstance(data, dict):
            data = dict(data)
            try:
                source = ModelSource.parse(data.get("model", cls.model), base=base)
                source.load_callable()
            except MessError as exc:
                raise StudyError(f"{path}: model: {exc}") from None
            convert = data.get("convert")
            if isinstance(convert, dict) and (convert.get("backbone") or convert.get("leaf_modules")):
                try:  # names are checked on the model itself now, not after hours of training
                    options = convert_options(convert)
                    check_module_names(
                        source.build(2), backbone=options.get("backbone"), leaf_modules=options.get("leaf_modules", ())
                    )
                except MessError as exc:
                    raise StudyError(f"{path}: convert: {exc}") from None
            data["model"] = source.spec
            if data.get("weights") is not None:
                weights = (base / expand_home(str(data["weights"]), StudyError)).resolve()
                if not weights.is_file():
                    raise StudyError(
                        f"{path}: weights: {weights}: no such file (a relative path is read from the "
                        "YAML file's folder); name the file of your trained state dict"
                    )
                data["weights"] = str(weights)
        return cls.from_dict(data, where=str(path))

    @property
    def model_source(self) -> ModelSource:
        return ModelSource.parse(self.model)

    @property
    def pretrain(self) -> bool:
        """Whether stage 1 (exit-aware pre-training) runs (``stages.pretrain: false`` switches it off)."""
        return self.stages.get("pretrain", {}) is not False

    @property
    def trains_backbone(self) -> bool:
        """Whether the plain backbone stage runs: not from the user's weights, not with pretrain_from: scratch."""
        return self.weights is None and self.pretrain_from == "backbone"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in _TUPLES:
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    def variant_fields(self, name: str) -> dict[str, Any]:
        """Stage-2 settings of training-table variant ``name`` (its ``init`` stage left out): stage 2's, on
        ``variant_space``, for the whole schedule (no successive halving: the table compares fully trained heads)."""
        spec = {k: v for k, v in self.variants[name].items() if k != "init"}
        return {
            **self.stage_fields("exits"),
            "exit_space": self.variant_space,
            "prune_at": (),
            "prune_margin": (),
            **spec,
        }

    def stage_fields(self, stage: str) -> dict[str, Any]:
        """The :class:`~mess_core.train.TrainConfig` fields of one stage (without ``stage``/``out``/``init``)."""
        overrides = self.stages.get(stage) or {}
        return {**self._common_fields(), **_STAGE_DEFAULTS[stage], **overrides}

    def _common_fields(self) -> dict[str, Any]:
        """The :class:`~mess_core.train.TrainConfig` fields every stage takes from the study's own settings."""
        return {
            "model": self.model,
            "convert": dict(self.convert),
            "dataset": self.dataset,
            "data_root": self.data_root,
            "data_options": dict(self.data_options),
            "num_exits": self.num_exits,
            "train_split": self.train_split,
            "train_groups": tuple(self.train_groups),
            "val_split": self.cache_split,
            "val_groups": tuple(self.cache_groups),
            "crop": tuple(self.crop),
            "eval_size": self.eval_size,
            "exit_space": self.exit_space,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "progress": False,
        }

    def selection(self, step: str) -> tuple[str, tuple[str, ...]]:
        """The (split, groups) of the images ``step`` uses: ``train``, ``tune`` or ``report``."""
        split, groups = SELECTIONS[step]
        return getattr(self, split), tuple(getattr(self, groups))

    def eval_dataset(
        self, split: str, size: tuple[int, int], *, groups: Sequence[str] = (), root: str | os.PathLike | None = None
    ) -> Any:
        """The study's images of ``split`` (pooled with '+'), kept to ``groups``, as evaluated: every image resized
        to ``size``; ``root`` overrides ``data_root`` (the data may live elsewhere on another machine)."""
        return build_dataset(
            self.dataset,
            root=root if root is not None else self.data_root,
            split=split,
            groups=tuple(groups),
            transform=eval_transform(size=tuple(size)),
            **self.data_options,
        )

    def drive_dataset(self, *, root: str | os.PathLike | None = None) -> Any:
        """Every split this study's steps read (train, tune, report) that is on this machine, pooled and at full
        size: a drive is the whole of its sequence, whichever split holds each frame (CamVid's drive 0016E5 has
        frames in train and in val). The Drive page and the ``drive`` command read sequences from here.

        Raises:
            DataError: no split of the study's dataset is under its folder (or ``root``).
        """
        splits = dict.fromkeys(
            part for split in (self.train_split, self.cache_split, self.report_split) for part in parse_splits(split)
        )
        here = []
        for split in splits:
            try:
                if len(self.eval_dataset(split, (1, 1), root=root)) > 0:
                    here.append(split)
            except (MessError, OSError):
                continue
        if not here:
            where = root if root is not None else self.data_root
            raise DataError(
                f"dataset {self.dataset!r} is not on this machine: none of the study's splits "
                f"{', '.join(splits)} under {where!r}; pass its folder (--data-root)"
            )
        return build_dataset(
            self.dataset,
            root=root if root is not None else self.data_root,
            split=SPLIT_SEPARATOR.join(here),
            **self.data_options,
        )

    def _check_settings(self, where: str) -> None:
        """Every setting has its type and range, and every stage's and variant's settings make a valid training
        configuration, now, not hours later."""
        check_fields(self, where=where, error=StudyError)
        self._check_ranges(where)
        try:
            self.convert = convert_options(self.convert, where=f"{where}: convert")
        except MessError as exc:
            raise StudyError(str(exc)) from None
        # the study's own settings first, so that a bad crop is blamed on crop, not on the first stage that uses it
        _check_training(where, {**self._common_fields(), **_STAGE_DEFAULTS["backbone"], "stage": "backbone"})
        for stage in STAGES:
            _check_training(f"{where}: stages.{stage}", {**self.stage_fields(stage), "stage": stage})
        if self.weights is not None and self.pretrain_from == "scratch":
            raise StudyError(
                f"{where}: weights and pretrain_from: scratch contradict each other (scratch starts from "
                "random weights); drop one"
            )
        if not self.pretrain and not self.trains_backbone and self.weights is None:
            raise StudyError(
                f"{where}: stages.pretrain: false with pretrain_from: scratch leaves stage 2 no trained "
                "backbone; give weights: or switch stage 1 back on"
            )
        if not self.pretrain:
            orphans = [n for n, spec in self.variants.items() if spec.get("init", "pretrain") == "pretrain"]
            if orphans:
                raise StudyError(
                    f"{where}: variants {', '.join(orphans)} start from stage 1 (init: pretrain), which "
                    "stages.pretrain: false switches off; set init: backbone or drop them"
                )
        for config in self.heavy_configs:
            try:
                ExitSpec.parse(config)
            except MessError as exc:
                raise StudyError(f"{where}: heavy_configs: {exc}") from None
        for name in self.variants:
            _check_training(f"{where}: variants.{name}", {**self.variant_fields(name), "stage": "exits"})

    def _check_ranges(self, where: str) -> None:
        """The study-only settings' ranges (the training settings are TrainConfig's to check)."""
        checks = [
            (self.max_exits >= 1, f"max_exits must be >= 1 (early exits an instance keeps), not {self.max_exits}"),
            (
                self.promise_confidence is None or 0.5 <= self.promise_confidence < 1,
                f"promise_confidence must be a level in [0.5, 1) (e.g. 0.9) or null, not {self.promise_confidence}",
            ),
            (
                self.promise_block is None or (self.promise_confidence is not None and self.promise_block >= 1),
                f"promise_block needs promise_confidence and a whole number of images >= 1, not {self.promise_block}",
            ),
            (
                self.cache_limit is None or self.cache_limit >= 1,
                f"cache_limit must be >= 1 image or null (the whole split), not {self.cache_limit}",
            ),
            (self.bench_images >= 0, f"bench_images must be >= 0 (0: no latency benchmark), not {self.bench_images}"),
            (
                len(self.bench_batches) > 0 and all(b >= 1 for b in self.bench_batches),
                f"bench_batches must list batch sizes >= 1, not {list(self.bench_batches)}",
            ),
            (self.bench_repeats >= 1, f"bench_repeats must be >= 1, not {self.bench_repeats}"),
            (
                len(self.bench_engines) > 0 and all(e in ENGINES for e in self.bench_engines),
                f"bench_engines must list engines among {', '.join(ENGINES)}, not {list(self.bench_engines)}",
            ),
            (self.cache_split.strip() != "", f"cache_split must name a split (e.g. val), not {self.cache_split!r}"),
            (self.report_split.strip() != "", f"report_split must name a split (e.g. test), not {self.report_split!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise StudyError(f"{where}: {message}")
        for step, (split, groups) in SELECTIONS.items():
            try:
                parse_splits(getattr(self, split))
            except MessError as exc:
                raise StudyError(f"{where}: {split}: {exc}") from None
            names = getattr(self, groups)
            if any(not str(name).strip() for name in names) or len(set(names)) != len(names):
                raise StudyError(f"{where}: {groups} must list distinct group names ({step} images), not {list(names)}")
        for name, parse in (("exit_space", exit_space), ("variant_space", ExitSpec.parse)):
            try:
                parse(getattr(self, name))
            except MessError as exc:
                raise StudyError(f"{where}: {name}: {exc}") from None
        try:
            check_dataset(self.dataset, self.data_options)
        except MessError as exc:
            setting = "dataset" if self.dataset not in list_datasets() else "data_options"
            raise StudyError(f"{where}: {setting}: {exc}") from None


def _check_training(what: str, fields: dict[str, Any]) -> None:
    try:
        TrainConfig(**fields, out=".")
    except (TypeError, MessError) as exc:
        raise StudyError(f"{what}: {exc}") from None


def _check_shape(data: Any, where: str, known: set[str]) -> None:
    """Refuse, naming ``where``, what no study can be: unknown settings, a bad name, stages or variants."""
    if not isinstance(data, dict):
        raise StudyError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise StudyError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if not data.get("name") or not str(data["name"]).replace("-", "").replace("_", "").isalnum():
        raise StudyError(f"{where}: 'name' must be letters, digits, '-' or '_' (it names the study folder)")
    for stage, overrides in (data.get("stages") or {}).items():
        if stage == "pretrain" and overrides is False:
            continue
        if stage not in STAGES or not isinstance(overrides, dict):
            raise StudyError(
                f"{where}: stages.{stage}: expected one of {', '.join(STAGES)} with a mapping "
                "(or stages.pretrain: false to switch stage 1 off)"
            )
    for name, spec in (data.get("variants") or {}).items():
        if not isinstance(spec, dict) or spec.get("init", "pretrain") not in ("pretrain", "backbone"):
            raise StudyError(f"{where}: variants.{name}: expected a mapping with init 'pretrain' or 'backbone'")
    if data.get("pretrain_from", "backbone") not in ("backbone", "scratch"):
        raise StudyError(f"{where}: pretrain_from must be 'backbone' or 'scratch', not {data['pretrain_from']!r}")
    if data.get("pretrain_from") == "scratch":
        orphans = [n for n, spec in (data.get("variants") or {}).items() if spec.get("init") == "backbone"]
        if orphans:
            raise StudyError(
                f"{where}: variants {', '.join(orphans)} start from the backbone stage, which "
                "pretrain_from: scratch does not train; drop them or set init: pretrain"
            )
