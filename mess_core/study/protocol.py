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
    >>> table = protocol_table({"data": protocol})
    >>> list(table["groups"]), list(table["images"])
    (['train (4)', 'val (4)', 'test (4)'], [4, 4, 4])
    >>> protocol_warning({"data": protocol}) is None
    True
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..data import build_dataset
from ..data.selection import describe_groups, group_counts
from ..errors import MessError
from .config import SELECTIONS, StudyConfig, StudyError

__all__ = [
    "data_protocol",
    "selection_summary",
    "overlap",
    "protocol_table",
    "protocol_warning",
    "pre_groups_train_split",
]

_STEPS = {
    "train": "training (stages 1 and 2)",
    "tune": "tuning (thresholds, search, results)",
    "report": "report (every instance, never tuned)",
}


def selection_summary(cfg: StudyConfig, step: str) -> dict[str, Any]:
    """``{"split", "groups": {group: images}, "images"}`` of the images ``step`` (train, tune, report) uses."""
    split, groups = cfg.selection(step)
    data = build_dataset(cfg.dataset, root=cfg.data_root, split=split, groups=groups, **cfg.data_options)
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
    protocol["shared_train_report"] = overlap(protocol, "train", "report")
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
            "true to accept it"
        )
    return protocol


def protocol_table(manifest: dict[str, Any]) -> pd.DataFrame | None:
    """Which images fed which step of a built study (its manifest's ``data``): step, split, groups with their image
    counts, images; None for a study built before groups were recorded."""
    data = manifest.get("data")
    if not isinstance(data, dict):
        return None
    rows = []
    for step, what in _STEPS.items():
        held = data.get(step)
        if isinstance(held, dict) and isinstance(held.get("groups"), dict):
            rows.append(
                {
                    "step": what,
                    "split": held.get("split"),
                    "groups": describe_groups(held["groups"]),
                    "images": held.get("images"),
                }
            )
        elif step == "report":
            rows.append(
                {"step": what, "split": _report_split(manifest), "groups": "not on the build machine", "images": 0}
            )
    return pd.DataFrame(rows)


def _report_split(manifest: dict[str, Any]) -> str | None:
    """The split a study would have reported on (from its configuration; None when that cannot be read): a report
    split that was not on the build machine is recorded without its name."""
    try:
        return StudyConfig.from_dict(manifest["config"]).selection("report")[0]
    except (MessError, KeyError, TypeError):
        return None


def pre_groups_train_split(config: dict[str, Any]) -> str:
    """The split a study built before groups were recorded trained on, all of it, from its stored configuration:
    reading that configuration as a :class:`StudyConfig` would fill in today's default selection instead."""
    return config.get("train_split") or "train"


def protocol_warning(manifest: dict[str, Any]) -> str | None:
    """What a reader must know about how a study's tuning images relate to its training images, or None when they
    share no group."""
    data = manifest.get("data")
    if not isinstance(data, dict):
        config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
        return (
            f"This study was built before groups (scenes) were recorded: it trained on "
            f"'{pre_groups_train_split(config)}' and tuned on '{config.get('cache_split', 'val')}', which may "
            "share scenes; its figures may not hold on scenes the network never saw. `study evaluate` measures "
            "them on your own images."
        )
    lines = []
    shared = data.get("shared_train_tune") or []
    if shared:
        lines.append(
            f"Tuned on group(s) {', '.join(shared)}, which it also trained on (tune_on_training_groups: true): "
            "its figures describe scenes the network saw; expect less on new ones."
        )
    # a manifest written before the build recorded the overlap still holds both steps' groups
    reported = data.get("shared_train_report", overlap(data, "train", "report")) or []
    if reported:
        lines.append(
            f"Its report split holds group(s) {', '.join(reported)}, which it also trained on: the report figures "
            "mix scenes the network saw with new ones (report_groups chooses the others)."
        )
    return " ".join(lines) or None
