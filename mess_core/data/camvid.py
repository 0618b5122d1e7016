"""CamVid in the SegNet layout: ``root/{split}/X.png`` with its label ``root/{split}annot/X.png``.

Labels are uint8 class indices 0..10 (Sky .. Bicyclist); 11 is Unlabelled and ignored.

Example:
    >>> from mess_core.data import CamVid
    >>> CamVid.SPLITS, CAMVID_INFO.num_classes, CAMVID_INFO.ignore_index
    (('train', 'val', 'test'), 11, 11)

Each image's group is its drive, the file name's sequence prefix (``0016E5_07959.png`` -> ``0016E5``).
"""

from __future__ import annotations

import os

from ..errors import DataError
from .base import Transform
from .files import IMAGE_SUFFIXES, FilePairDataset
from .info import DatasetInfo
from .layout import check_split, require_dir, some_of

__all__ = ["CamVid", "CAMVID_INFO"]

CAMVID_INFO = DatasetInfo(
    name="camvid",
    classes=(
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Pavement",
        "Tree",
        "SignSymbol",
        "Fence",
        "Car",
        "Pedestrian",
        "Bicyclist",
    ),
    ignore_index=11,
    # The colours of the SegNet tutorial, so our overlays look like the figures people know.
    palette=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
)


class CamVid(FilePairDataset):
    """The SegNet CamVid split (360x480 images); every image needs a label of the same file name.

    An image's group is its drive: the sequence prefix of its file name (``0016E5_07959.png`` -> ``0016E5``). The
    SegNet split's val frames come from a drive that also gives 204 training frames, so val is not new scenery;
    tune on a sequence the network did not train on (``split="train+val"`` with ``groups``)."""

    SPLITS = ("train", "val", "test")

    def __init__(
        self, root: str | os.PathLike, *, split: str = "train", transform: Transform | None = None, seed: int = 0
    ) -> None:
        super().__init__(transform=transform, seed=seed)
        self.info = CAMVID_INFO
        self.split = check_split(split, self.SPLITS, dataset="CamVid")
        self.root = require_dir(root, what="CamVid root")
        image_dir = require_dir(self.root / split, what=f"CamVid {split} image folder")
        label_dir = require_dir(self.root / f"{split}annot", what=f"CamVid {split} label folder")
        self.images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.images:
            raise DataError(
                f"CamVid {split} image folder {image_dir} holds no images "
                f"({', '.join(IMAGE_SUFFIXES)}); copy the split's images there"
            )
        self.labels = [label_dir / image.name for image in self.images]
        self._groups = [image.stem.split("_", 1)[0] for image in self.images]
        missing = [label for label in self.labels if not label.is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(self.images)} CamVid {split} images have no label file: "
                f"{some_of(missing)}; each image {image_dir}/X.png needs {label_dir}/X.png"
            )

    def group_of(self, index: int) -> str:
        return self._groups[index]
