"""Cityscapes (fine annotations), found by ``torchvision.datasets.Cityscapes``, labels mapped to the 19 train ids.

Layout: ``root/leftImg8bit/{split}/{city}/X_leftImg8bit.png`` and ``root/gtFine/{split}/{city}/X_gtFine_labelIds.png``.
Label ids that are not one of the 19 evaluated classes (void, license plate, rail track, ...) become 255 (ignore).

Example:
    >>> import torch
    >>> to_train_ids(torch.tensor([7, 26, 0, 33, 300])).tolist()  # road, car, unlabeled, bicycle, not an id
    [0, 13, 255, 18, 255]
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision

from ..errors import DataError
from .base import Transform
from .files import FilePairDataset
from .info import DatasetInfo
from .layout import check_split, some_of

__all__ = ["Cityscapes", "CITYSCAPES_INFO", "to_train_ids"]

IGNORE = 255
_TRAIN_CLASSES = sorted(
    (c for c in torchvision.datasets.Cityscapes.classes if 0 <= c.train_id < IGNORE), key=lambda c: c.train_id
)
CITYSCAPES_INFO = DatasetInfo(
    name="cityscapes",
    classes=tuple(c.name for c in _TRAIN_CLASSES),
    ignore_index=IGNORE,
    palette=tuple(c.color for c in _TRAIN_CLASSES),
)

# labelIds are 0..33 (uint8 files); a 256-entry table covers every value such a file can hold.
_LABEL_TO_TRAIN = torch.full((256,), IGNORE, dtype=torch.int64)
for _c in _TRAIN_CLASSES:
    _LABEL_TO_TRAIN[_c.id] = _c.train_id


def to_train_ids(label_ids: torch.Tensor) -> torch.Tensor:
    """Map Cityscapes label ids to train ids 0..18; everything else (including out-of-table values) -> 255."""
    label_ids = label_ids.to(torch.int64)
    in_table = (label_ids >= 0) & (label_ids < len(_LABEL_TO_TRAIN))
    return torch.where(in_table, _LABEL_TO_TRAIN[label_ids.clamp(0, len(_LABEL_TO_TRAIN) - 1)], IGNORE)


class Cityscapes(FilePairDataset):
    """Cityscapes ``train``/``val``/``test`` with fine labels, as 19 classes (test labels are all ignore)."""

    SPLITS = ("train", "val", "test")

    def __init__(
        self, root: str | os.PathLike, *, split: str, transform: Transform | None = None, seed: int = 0
    ) -> None:
        super().__init__(transform=transform, seed=seed)
        self.info = CITYSCAPES_INFO
        self.split = check_split(split, self.SPLITS, dataset="Cityscapes")
        self.root = Path(root)
        expected = (
            f"{self.root / 'leftImg8bit' / split}/<city>/*_leftImg8bit.png and "
            f"{self.root / 'gtFine' / split}/<city>/*_gtFine_labelIds.png"
        )
        try:
            found = torchvision.datasets.Cityscapes(str(self.root), split=split, mode="fine", target_type="semantic")
        except (RuntimeError, OSError, ValueError) as error:
            raise DataError(f"Cityscapes {split} not found under {self.root} ({error}); expected {expected}") from error
        # os.listdir order differs between file systems; sort so sample i is the same image on every machine.
        pairs = sorted(zip(found.images, (targets[0] for targets in found.targets)))
        if not pairs:
            raise DataError(f"Cityscapes {split} under {self.root} has no images; expected {expected}")
        self.images = [Path(image) for image, _ in pairs]
        self.labels = [Path(label) for _, label in pairs]
        missing = [label for label in self.labels if not label.is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(pairs)} Cityscapes {split} images have no label file: "
                f"{some_of(missing)}; unpack gtFine_trainvaltest.zip into {self.root}"
            )

    def map_label(self, label: torch.Tensor) -> torch.Tensor:
        return to_train_ids(label)

    def group_of(self, index: int) -> str:
        """The city (``leftImg8bit/{split}/{city}/``): Cityscapes' val cities are not its train cities."""
        return self.images[index].parent.name
