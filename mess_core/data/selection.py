"""Which images a step uses: one or more splits pooled (``"train+val"``), kept to some groups (scenes).

Every dataset says which group each image belongs to (``dataset.group_of(i)``): a scene that images of it share, so
that a network tuned on one group and trained on another is judged on scenery it never saw. CamVid's group is the
drive (the sequence prefix of the file name, ``0016E5``), Cityscapes' the city, a folder dataset's what its
``dataset.yaml`` says (``group_pattern`` or ``group_file``); datasets whose splits share no scene by construction
(synthetic, PASCAL VOC) use the split's name.

A study draws its training, tuning and report images as selections, and refuses to tune on a group it trained on
unless its YAML says so (``mess_core.study``).

Example:
    >>> from mess_core.data import build_dataset
    >>> parse_splits("train+val")
    ('train', 'val')
    >>> data = build_dataset("synthetic", split="train+val", length=4, size=(32, 32))
    >>> data, group_counts(data)
    (PooledDataset('synthetic', train+val, 8 samples), {'train': 4, 'val': 4})
    >>> only_val = build_dataset("synthetic", split="train+val", groups=("val",), length=4, size=(32, 32))
    >>> len(only_val), only_val.name_of(0), only_val.group_of(0)
    (4, 'synthetic-val-00000', 'val')
    >>> build_dataset("synthetic", split="train", groups=("0006R0",), length=4)
    Traceback (most recent call last):
    ...
    mess_core.errors.DataError: synthetic train holds no image of group(s) 0006R0; its groups are: train (4)
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from torchvision import tv_tensors

from ..errors import DataError
from .base import SegmentationDataset, Transform

__all__ = ["parse_splits", "PooledDataset", "group_counts", "describe_groups", "selection_label", "SPLIT_SEPARATOR"]

SPLIT_SEPARATOR = "+"


def parse_splits(text: str) -> tuple[str, ...]:
    """``"train+val"`` -> ``("train", "val")``: the one reading of a split expression (CLI, YAML, caches).

    >>> parse_splits("val")
    ('val',)
    >>> parse_splits("train++val")
    Traceback (most recent call last):
    ...
    mess_core.errors.DataError: split 'train++val': expected split names joined by '+', e.g. 'train+val'
    """
    parts = tuple(part.strip() for part in str(text).split(SPLIT_SEPARATOR))
    if not parts or any(not part for part in parts):
        raise DataError(f"split {text!r}: expected split names joined by '+', e.g. 'train+val'")
    if len(set(parts)) != len(parts):
        raise DataError(f"split {text!r} names a split twice; name each once")
    return parts


class PooledDataset(SegmentationDataset):
    """The images of several datasets (splits) in order, optionally only those of some groups.

    Augmentation is seeded by the pooled index (``transform`` and ``set_epoch`` are this dataset's own); loading,
    names, files and groups are the parts'."""

    def __init__(
        self,
        parts: Sequence[SegmentationDataset],
        *,
        split: str,
        groups: Iterable[str] = (),
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(transform=transform, seed=seed)
        if not parts:
            raise DataError("a pooled dataset needs at least one split")
        self.parts = list(parts)
        self.info = self.parts[0].info
        for part in self.parts[1:]:
            if part.info != self.info:
                raise DataError(
                    f"splits {split!r} describe different classes ({self.info.name} vs {part.info.name}); "
                    "pool only splits of one dataset"
                )
        self.split = split
        self.groups = tuple(groups)
        wanted = set(self.groups)
        self.index = [
            (p, i)
            for p, part in enumerate(self.parts)
            for i in range(len(part))
            if not wanted or part.group_of(i) in wanted
        ]
        if not self.index:
            found = Counter(part.group_of(i) for part in self.parts for i in range(len(part)))
            raise DataError(
                f"{self.info.name} {split} holds no image of group(s) {', '.join(self.groups)}; its groups "
                f"are: {describe_groups(found)}"
            )

    def __len__(self) -> int:
        return len(self.index)

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        part, i = self.index[index]
        return self.parts[part].load(i)

    def name_of(self, index: int) -> str:
        part, i = self.index[index]
        return self.parts[part].name_of(i)

    def files_of(self, index: int) -> tuple[str, str]:
        part, i = self.index[index]
        return self.parts[part].files_of(i)

    def group_of(self, index: int) -> str:
        part, i = self.index[index]
        return self.parts[part].group_of(i)

    def size_of(self, index: int) -> tuple[int, int]:
        part, i = self.index[index]
        return self.parts[part].size_of(i)

    def split_of(self, index: int) -> str:
        """Which pooled split sample ``index`` comes from."""
        return str(self.parts[self.index[index][0]].split)

    def __repr__(self) -> str:
        groups = f", groups {','.join(self.groups)}" if self.groups else ""
        return f"PooledDataset({self.info.name!r}, {self.split}{groups}, {len(self)} samples)"


def group_counts(dataset: SegmentationDataset) -> dict[str, int]:
    """Images per group, groups in the order they first appear."""
    return dict(Counter(dataset.group_of(i) for i in range(len(dataset))))


def describe_groups(counts: dict[str, int], limit: int = 12) -> str:
    """``a (3), b (5)`` for messages and captions, cut after ``limit`` groups."""
    items = [f"{group} ({n})" for group, n in counts.items()]
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} ... ({len(items)} groups)"


def selection_label(split: str | None, groups: Sequence[str]) -> str:
    """The name of a selection of images in tables: its split and, when they say more than the split, its groups
    (each image's, in order), so that figures on a scene-disjoint part of a split do not read as figures on the
    whole split.

    >>> selection_label("train", ["0006R0"] * 3), selection_label("train", ["train"] * 3)
    ('train 0006R0', 'train')
    >>> selection_label("train+val", ["train", "val"]), selection_label(None, ["a", "b"])  # pooled; no split
    ('train+val', 'images a+b')
    >>> selection_label("train", [f"city{i}" for i in range(6)])  # many groups are counted, not listed
    'train city0+city1+city2 and 3 more groups'
    """
    name = split or "images"
    found = list(dict.fromkeys(groups))
    if found in ([], [name]) or "+".join(found) == name:
        return str(name)
    shown = "+".join(found) if len(found) <= 4 else f"{'+'.join(found[:3])} and {len(found) - 3} more groups"
    return f"{name} {shown}"
