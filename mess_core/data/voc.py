"""PASCAL VOC 2012 segmentation, found by ``torchvision.datasets.VOCSegmentation`` (never downloads).

Layout: ``root/VOCdevkit/VOC2012/{JPEGImages/X.jpg, SegmentationClass/X.png, ImageSets/Segmentation/{split}.txt}``.
Labels are palette PNGs whose indices are the 21 classes; 255 marks object borders and "difficult" regions and is
ignored.

Example:
    >>> VOC_INFO.num_classes, VOC_INFO.ignore_index, VOC_INFO.palette[:3]
    (21, 255, ((0, 0, 0), (128, 0, 0), (0, 128, 0)))
"""

from __future__ import annotations

import os
from pathlib import Path

import torchvision

from ..errors import DataError
from .base import Transform
from .files import FilePairDataset
from .info import DatasetInfo
from .layout import check_split, some_of

__all__ = ["PascalVOC", "VOC_INFO", "voc_palette"]


def voc_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """The official VOC colour map: the bits of the class index spread over the high bits of R, G and B."""
    colours = []
    for index in range(count):
        r = g = b = 0
        value = index
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((r, g, b))
    return tuple(colours)


VOC_INFO = DatasetInfo(
    name="voc",
    classes=(
        "background",
        "aeroplane",
        "bicycle",
        "bird",
        "boat",
        "bottle",
        "bus",
        "car",
        "cat",
        "chair",
        "cow",
        "diningtable",
        "dog",
        "horse",
        "motorbike",
        "person",
        "pottedplant",
        "sheep",
        "sofa",
        "train",
        "tvmonitor",
    ),
    ignore_index=255,
    palette=voc_palette(21),
)


class PascalVOC(FilePairDataset):
    """VOC 2012 ``train`` (1464), ``val`` (1449) or ``trainval`` segmentation images."""

    SPLITS = ("train", "val", "trainval")

    def __init__(
        self, root: str | os.PathLike, *, split: str = "train", transform: Transform | None = None, seed: int = 0
    ) -> None:
        super().__init__(transform=transform, seed=seed)
        self.info = VOC_INFO
        self.split = check_split(split, self.SPLITS, dataset="PASCAL VOC 2012")
        self.root = Path(root)
        devkit = self.root / "VOCdevkit" / "VOC2012"
        expected = (
            f"expected {devkit}/JPEGImages/*.jpg, {devkit}/SegmentationClass/*.png and "
            f"{devkit}/ImageSets/Segmentation/{split}.txt"
        )
        if (self.root / "JPEGImages").is_dir():
            expected += f"; {self.root} looks like the VOC2012 folder itself: pass the folder that holds VOCdevkit"
        try:
            found = torchvision.datasets.VOCSegmentation(str(self.root), year="2012", image_set=split, download=False)
        except (RuntimeError, OSError) as error:
            raise DataError(f"PASCAL VOC 2012 {split} not found under {self.root} ({error}); {expected}") from error
        # A blank line in the split file would name the image ".jpg".
        pairs = [(Path(i), Path(m)) for i, m in zip(found.images, found.masks) if Path(i).stem]
        if not pairs:
            raise DataError(f"{devkit}/ImageSets/Segmentation/{split}.txt lists no images; {expected}")
        self.images = [image for image, _ in pairs]
        self.labels = [label for _, label in pairs]
        for kind, paths in (("image", self.images), ("label", self.labels)):
            missing = [path for path in paths if not path.is_file()]
            if missing:
                raise DataError(
                    f"{len(missing)} {kind} files listed in {split}.txt are missing: {some_of(missing)}; "
                    "the VOC copy is incomplete: unpack VOCtrainval_11-May-2012.tar again"
                )

    def name_of(self, index: int) -> str:
        return self.images[index].stem
