"""A study, as shipped, on your own labelled images (``python -m mess_core study evaluate``): one pass of the study's
network over them into an evaluation cache (partial where the study ships a heavy head only at some exits), then
every results row scored there (:func:`mess_core.search.heldout.evaluate_rows`). Images of another size are resized to
the study's input size, and the notes say so."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from ..data import build_dataset, eval_transform
from ..data.selection import group_counts
from ..errors import MessError
from ..evaluate.cache import EvaluationCache
from ..evaluate.cache_build import build_cache
from ..search.heldout import evaluate_rows, with_costs_of
from ..search.uncertainty import DEFAULT_LEVEL
from .config import StudyConfig, StudyError
from .folder import Study
from .pack import frame_json
from .protocol import pre_groups_train_split

__all__ = ["EvaluationData", "evaluation_dataset", "evaluate_on", "score_rows", "evaluation_record", "EVALUATED_MODES"]

# every mode, the one people deploy first first; an anytime row is scored by its first output (its headline)
EVALUATED_MODES = ("input-dependent", "budgeted", "anytime")


@dataclass(frozen=True)
class EvaluationData:
    """Which labelled images to evaluate a study on; ``dataset``/``root``/``options`` default to the study's own."""

    # None: the study's report selection on its own images, else "test", or a folder dataset's images sitting in
    # the folder itself
    split: str | None = None
    groups: tuple[str, ...] = ()
    dataset: str | None = None
    root: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        groups = f"[{','.join(self.groups)}]" if self.groups else ""
        return " ".join(filter(None, [self.dataset, self.split or "", groups]))


def evaluation_dataset(
    study: Study, data: EvaluationData, *, limit: int | None = None
) -> tuple[Any, EvaluationData, list[str]]:
    """The images ``data`` names, resized to the study's input size; the selection with the study's defaults filled
    in; and notes for the reader (how many of the first ``limit`` images are resized, from which sizes; class names
    that differ)."""
    config = study.manifest.get("config") if isinstance(study.manifest.get("config"), dict) else {}
    name = data.dataset or config.get("dataset") or study.cache.meta.get("dataset")
    if not name:
        raise StudyError(f"study {study.name} does not say which dataset it was built on; name one with --data")
    same = name == config.get("dataset")
    root = data.root if data.root is not None else (config.get("data_root") if same else None)
    options = data.options if (data.options or not same) else dict(config.get("data_options") or {})
    # the images the study was built from (same dataset, root and options): their groups are the study's groups
    own = same and _same_root(root, config.get("data_root")) and options == dict(config.get("data_options") or {})
    size = tuple(int(v) for v in study.cache.meta["input_size"])
    split, groups = data.split, tuple(data.groups)
    if split is None and name != "folder":
        split, report_groups = _report_selection(config) if own else ("test", ())
        groups = groups or report_groups
    dataset = build_dataset(name, root=root, split=split, groups=groups, transform=eval_transform(size=size), **options)
    chosen = EvaluationData(split, groups, name, root, dict(options))
    notes = []
    classes = study.cache.meta.get("classes") or []
    if dataset.info.num_classes != study.cache.num_classes:
        raise StudyError(
            f"{chosen.describe()} has {dataset.info.num_classes} classes but study {study.name} predicts "
            f"{study.cache.num_classes} ({', '.join(classes)}); evaluate on images labelled with the "
            "study's classes"
        )
    if classes and list(dataset.info.classes) != list(classes):
        notes.append(
            f"class names differ ({', '.join(dataset.info.classes)} here, {', '.join(classes)} in the study); "
            "they are matched by index"
        )
    count = len(dataset) if limit is None else min(limit, len(dataset))
    trained = _trained_groups(study.manifest, root) if own else None
    if trained:
        seen = Counter(g for g in (dataset.group_of(i) for i in range(count)) if g in trained)
        if seen:
            notes.append(
                f"{sum(seen.values())} of {count} images are of group(s) the network trained on "
                f"({', '.join(f'{g}: {n}' for g, n in seen.items())}): figures on them describe scenes it saw, "
                "not new ones; --groups keeps the others"
            )
    sizes = Counter(dataset.size_of(i) for i in range(count))
    other = {hw: n for hw, n in sizes.items() if hw != size}
    if other:
        seen = ", ".join(f"{n} at {h}x{w}" for (h, w), n in sorted(other.items(), key=lambda kv: -kv[1]))
        notes.append(
            f"{sum(other.values())} of {sum(sizes.values())} images are resized to the study's input size "
            f"{size[0]}x{size[1]} ({seen})"
        )
    return dataset, chosen, notes


def _trained_groups(manifest: dict[str, Any], root: Any) -> dict[str, int] | None:
    """The groups the study's network trained on: the manifest's record, or, for a study built before groups were
    recorded (it trained on the whole of its training split), that split's groups read again from its images under
    ``root`` (the folder being evaluated, the study's own); None when neither can be read."""
    data = manifest.get("data")
    if isinstance(data, dict):
        held = data.get("train")
        return held["groups"] if isinstance(held, dict) and isinstance(held.get("groups"), dict) else None
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    try:
        dataset = build_dataset(
            config["dataset"],
            root=root,
            split=pre_groups_train_split(config),
            **dict(config.get("data_options") or {}),
        )
    except (MessError, KeyError, TypeError):
        return None
    return group_counts(dataset)


def _same_root(a: Any, b: Any) -> bool:
    """Whether two dataset roots name the same folder (both None: a dataset without files)."""
    if a is None or b is None:
        return a is b
    return os.path.realpath(os.path.expanduser(str(a))) == os.path.realpath(os.path.expanduser(str(b)))


def _report_selection(config: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """The report split and groups a study's configuration names (its dataset's defaults where it is silent), or
    ("test", ()) when it cannot be read."""
    try:
        return StudyConfig.from_dict(config).selection("report")
    except (MessError, TypeError):
        return "test", ()


def evaluate_on(
    study: Study,
    dataset: Any,
    data: EvaluationData,
    *,
    batch_size: int = 8,
    limit: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    modes: Sequence[str] = EVALUATED_MODES,
    level: float = DEFAULT_LEVEL,
    consent: bool = False,
) -> tuple[EvaluationCache, pd.DataFrame]:
    """The study's network over ``dataset`` (an evaluation cache, with the tuning cache's measured latency) and every
    results row of ``modes`` scored on it; ``consent`` as in :meth:`~mess_core.study.Study.load_network`."""
    net, meta = study.load_network(consent=consent)
    cache = build_cache(
        net,
        dataset,
        model=meta["model"],
        dataset_name=str(data.dataset),
        split=data.split,
        batch_size=batch_size,
        limit=limit,
        progress=progress,
        extra_meta={"source": f"study evaluate {study.name}", "groups": list(data.groups)},
    )
    cache = with_costs_of(cache, study.cache)
    return cache, score_rows(study, cache, modes=modes, level=level)


def score_rows(
    study: Study, cache: EvaluationCache, *, modes: Sequence[str] = EVALUATED_MODES, level: float = DEFAULT_LEVEL
) -> pd.DataFrame:
    """Every results row of ``modes`` of ``study``, as shipped, scored on ``cache`` (other images of its network);
    the drop intervals resample the study's scene blocks, as its rows were chosen (single images for a study
    without them)."""
    tables = {mode: study.results(mode) for mode in modes}
    return evaluate_rows(tables, cache, level=level, block=study.promise_rule["block"])


def evaluation_record(
    study: Study, cache: EvaluationCache, rows: pd.DataFrame, data: EvaluationData, notes: Sequence[str]
) -> dict[str, Any]:
    """What ``study evaluate --json`` writes: the study, the images, the notes and every row's figures."""
    return {
        "format": "mess-evaluation/1",
        "study": study.name,
        "study_path": str(study.path),
        "data": {
            "dataset": data.dataset,
            "root": None if data.root is None else str(os.fspath(data.root)),
            "split": data.split,
            "groups": list(data.groups),
            "options": data.options,
            "images": cache.num_images,
            "input_size": list(cache.meta["input_size"]),
        },
        "notes": list(notes),
        # scene_block None: single images
        "interval": {"level": rows.attrs.get("drop_level"), "scene_block": rows.attrs.get("drop_block")},
        "backbone_miou": float(cache.head_miou()[cache.final_head]),
        "rows": frame_json(rows),
    }
