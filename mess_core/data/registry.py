"""Build any dataset by name, for the CLI and the app.

Every path is a parameter: nothing here knows where datasets live on a machine.

Example:
    >>> from mess_core.data import build_dataset, list_datasets
    >>> list_datasets()
    ('synthetic', 'camvid', 'cityscapes', 'voc', 'folder')
    >>> build_dataset("synthetic", split="val", length=4)
    SyntheticSegmentation(split='val', length=4, size=(120, 160), seed=0)
    >>> build_dataset("camvid", split="train")
    Traceback (most recent call last):
    ...
    mess_core.errors.DataError: dataset 'camvid' reads files: pass root=<folder of the CamVid copy>
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import DataError
from ..fields import check_arguments
from .base import SegmentationDataset, Transform
from .camvid import CamVid
from .cityscapes import Cityscapes
from .folder import FolderDataset
from .info import distinct_palette
from .selection import SPLIT_SEPARATOR, PooledDataset, parse_splits
from .synthetic import SyntheticSegmentation
from .voc import PascalVOC

__all__ = ["build_dataset", "list_datasets", "check_dataset", "default_selections", "palette_for"]

# which images a study trains, tunes and reports on when its YAML does not say: (split, groups) per step. CamVid's
# SegNet val frames come from a drive (0016E5) that also gives 204 training frames, so its default is scene-disjoint:
# train on the drives 0016E5 and 0001TP of train + val (367 frames), tune on 0006R0 (101 frames of a drive it never
# sees) and report on Seq05VD (the 171 test frames of a drive neither train nor val holds; the other 62 test frames
# are of 0001TP, a training drive); the other datasets' splits share no scene (Cityscapes' val cities are not its
# train cities)
_SELECTIONS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "camvid": {
        "train": ("train+val", ("0016E5", "0001TP")),
        "tune": ("train", ("0006R0",)),
        "report": ("test", ("Seq05VD",)),
    },
}
_PLAIN_SELECTIONS = {"train": ("train", ()), "tune": ("val", ()), "report": ("test", ())}

_DATASETS: dict[str, tuple[Callable[..., SegmentationDataset], str | None]] = {
    # name: (class, what root is; None = no files)
    "synthetic": (SyntheticSegmentation, None),
    "camvid": (CamVid, "folder of the CamVid copy"),
    "cityscapes": (Cityscapes, "folder holding leftImg8bit/ and gtFine/"),
    "voc": (PascalVOC, "folder holding VOCdevkit/"),
    "folder": (FolderDataset, "folder holding dataset.yaml"),
}


def list_datasets() -> tuple[str, ...]:
    return tuple(_DATASETS)


def default_selections(name: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The (split, groups) a study of dataset ``name`` trains, tunes and reports on by default.

    >>> default_selections("camvid")["tune"], default_selections("synthetic")["tune"]
    (('train', ('0006R0',)), ('val', ()))
    """
    return dict(_SELECTIONS.get(name, _PLAIN_SELECTIONS))


def check_dataset(name: str, options: dict[str, Any]) -> None:
    """Refuse a dataset name that is not registered, an option its class does not take, or an option value of the
    wrong type (``size=abc``), before any file is read: a configuration is checked when it is read.

        >>> check_dataset("synthetic", {"size": "abc"})
        Traceback (most recent call last):
        mess_core.errors.DataError: dataset 'synthetic' option: size: expected a list of 2 whole numbers, got 'abc'
    """
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(_DATASETS)}")
    cls = _DATASETS[name][0]
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("root", "split", "transform", "seed")]
    if unknown := sorted(set(options) - set(accepted)):
        takes = f"it takes: {', '.join(accepted)}" if accepted else "it takes none"
        raise DataError(f"dataset {name!r} has no option(s) {', '.join(unknown)}; {takes}")
    check_arguments(cls, options, where=f"dataset {name!r} option", error=DataError)


def build_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    split: str | None,
    groups: Sequence[str] = (),
    transform: Transform | None = None,
    seed: int = 0,
    **options: Any,
) -> SegmentationDataset:
    """``name`` is one of ``list_datasets()``; ``options`` go to its class (e.g. ``length``/``size`` for synthetic).

    ``split`` may pool splits (``"train+val"``) and ``groups`` keep only the images of those groups (scenes, see
    :mod:`mess_core.data.selection`); either gives a :class:`PooledDataset`."""
    check_dataset(name, options)
    # a folder dataset without splits takes split None (its images sit in the folder itself)
    splits: tuple[str | None, ...] = (None,) if split is None else parse_splits(split)
    if len(splits) > 1 or groups:
        parts = [_build_one(name, root, part, None, seed, options) for part in splits]
        return PooledDataset(
            parts,
            split=SPLIT_SEPARATOR.join(str(p or "all") for p in splits),
            groups=groups,
            transform=transform,
            seed=seed,
        )
    return _build_one(name, root, split, transform, seed, options)


def _build_one(
    name: str,
    root: str | os.PathLike | None,
    split: str | None,
    transform: Transform | None,
    seed: int,
    options: dict[str, Any],
) -> SegmentationDataset:
    cls, root_is = _DATASETS[name]
    if root_is is None:
        if root is not None:
            raise DataError(f"dataset {name!r} is generated, it reads no files: drop root={str(root)!r}")
        return cls(split=split, transform=transform, seed=seed, **options)
    if root is None:
        raise DataError(f"dataset {name!r} reads files: pass root=<{root_is}>")
    return cls(root, split=split, transform=transform, seed=seed, **options)


def palette_for(dataset: str, num_classes: int) -> np.ndarray:
    """(K, 3) uint8 display colours: the dataset's own palette when it is a registered dataset with ``num_classes``
    classes, else well separated hues.

    >>> palette_for("camvid", 11)[0].tolist(), palette_for("my-data", 3).shape
    ([128, 128, 128], (3, 3))
    """
    from .camvid import CAMVID_INFO
    from .cityscapes import CITYSCAPES_INFO
    from .synthetic import SYNTHETIC_INFO

    known = {"camvid": CAMVID_INFO, "cityscapes": CITYSCAPES_INFO, "synthetic": SYNTHETIC_INFO}
    info = known.get(dataset)
    colours = info.palette if info is not None and info.num_classes == num_classes else distinct_palette(num_classes)
    return np.asarray(colours, np.uint8)
