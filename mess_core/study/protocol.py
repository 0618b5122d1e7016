"""Which groups (scenes) fed which step of a study, and the rule that a study tunes only on scenes it did not train on.

A promise tuned on frames of a drive the network trained on is a promise about the training data: the network is
more confident there, so thresholds tuned there send more images out early than new scenes can afford. The build
checks the rule before it trains and records what it found in the manifest (``data``), which the Study page shows.

Example:
    >>> from mess_core.study.config import StudyConfig
    >>> cfg = StudyConfig.from_dict({"name": "demo", "dataset": "synthetic", "data_options": {"length": 4},
    ...                              "cache_split": "train"})
    >>> data_protocol(cfg)
    Traceback (most recent call last):
    ...
    mess_core.study.config.StudyError: study demo tunes on group(s) train (4 images), which it also trains on: ...
    >>> cfg.cache_split = "val"
    >>> protocol = data_protocol(cfg)
    >>> protocol["train"], protocol["tune"]["groups"], protocol["report"]["images"]
    ({'split': 'train', 'groups': {'train': 4}, 'images': 4}, {'val': 4}, 4)
"""

from __future__ import annotations

import os
from typing import Any

from ..data import build_dataset
from ..data.selection import group_counts
from ..errors import MessError
from .config import SELECTIONS, StudyConfig, StudyError

__all__ = ["data_protocol", "selection_summary", "overlap"]


def selection_summary(cfg: StudyConfig, step: str, *, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"split", "groups": {group: images}, "images"}`` of the images ``step`` (train, tune, report) uses."""
    split, groups = cfg.selection(step)
    data = build_dataset(cfg.dataset, root=root if root is not None else cfg.data_root, split=split, groups=groups,
                         **cfg.data_options)
    counts = group_counts(data)
    return {"split": split, "groups": counts, "images": sum(counts.values())}


def overlap(protocol: dict[str, Any], a: str = "train", b: str = "tune") -> list[str]:
    """The groups steps ``a`` and ``b`` share (empty when disjoint, or when either did not load)."""
    if not protocol.get(a) or not protocol.get(b):
        return []
    return [g for g in protocol[b]["groups"] if g in protocol[a]["groups"]]


def data_protocol(cfg: StudyConfig) -> dict[str, Any]:
    """What each step reads, by group; refuses a tuning set that shares a group with the training set unless
    ``tune_on_training_groups`` is set. A report split that is not on this machine is recorded as None."""
    protocol: dict[str, Any] = {step: selection_summary(cfg, step) for step in ("train", "tune")}
    try:
        protocol["report"] = selection_summary(cfg, "report")
    except MessError:
        protocol["report"] = None
    protocol["tune_on_training_groups"] = cfg.tune_on_training_groups
    shared = overlap(protocol)
    protocol["shared_train_tune"] = shared
    if shared and not cfg.tune_on_training_groups:
        tune = protocol["tune"]["groups"]
        n = sum(tune[g] for g in shared)
        split, groups = SELECTIONS["tune"]
        train_split, train_groups = SELECTIONS["train"]
        raise StudyError(
            f"study {cfg.name} tunes on group(s) {', '.join(shared)} ({n} images), which it also trains on: "
            f"thresholds tuned on scenes the network trained on do not hold on new ones. Choose disjoint groups "
            f"({train_split}/{train_groups} and {split}/{groups}; the groups here: train "
            f"{', '.join(protocol['train']['groups'])}, tune {', '.join(tune)}), or set tune_on_training_groups: "
            "true to accept it")
    return protocol
