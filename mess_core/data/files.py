"""Reading image and label files into tensors, turning every unreadable file into a DataError that names it.

Truncated files raise: Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off on purpose (if other code turns it
on, truncated files load with grey/black gaps instead).

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(folder / "a.png")
    >>> read_rgb(folder / "a.png").shape
    torch.Size([3, 4, 6])
    >>> read_label(folder / "missing.png")
    Traceback (most recent call last):
    ...
    mess_core.errors.DataError: .../missing.png: file not found; check the path and that the dataset is complete
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from ..errors import DataError
from .base import SegmentationDataset

__all__ = ["read_rgb", "read_label", "FilePairDataset", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Pillow's errors for a corrupt file: OSError (truncated, unidentified), SyntaxError (broken PNG chunks),
# ValueError (bad headers), DecompressionBombError (absurd sizes).
_CORRUPT = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
# Modes whose pixels are class indices; anything else (RGB colour masks, alpha) is a mistake for a label file.
_INDEX_MODES = {"L", "P", "I", "I;16", "I;16B", "I;16L", "1"}


def read_rgb(path: str | os.PathLike) -> tv_tensors.Image:
    """Decode an image file fully and return it as ``tv_tensors.Image`` uint8 (3, H, W), RGB."""
    with _open(path, "image") as image:
        try:
            pixels = np.asarray(image.convert("RGB"))
        except _CORRUPT as error:
            raise _corrupt(path, "image", error) from error
    return tv_tensors.Image(torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous())


def read_label(path: str | os.PathLike) -> torch.Tensor:
    """Decode a single-channel label file (class index per pixel) and return it as int64 (H, W), values unmapped."""
    with _open(path, "label") as label:
        if label.mode not in _INDEX_MODES:
            raise DataError(
                f"{path}: label file has mode {label.mode} ({len(label.getbands())} channels); a label "
                "must hold one class index per pixel: save it as a single-channel (L or P) PNG, "
                "not as colours"
            )
        pixels = np.asarray(label)
    return torch.from_numpy(pixels.astype(np.int64))


@contextmanager
def _open(path: str | os.PathLike, role: str) -> Iterator[Image.Image]:
    """Image.open + full decode, with missing and corrupt files reported as DataError."""
    path = Path(path)
    if not path.is_file():
        raise _not_found(path)
    try:
        image = Image.open(path)
    except _CORRUPT as error:
        raise _corrupt(path, role, error) from error
    with image:
        try:
            # Image.open only reads the header; load() decodes the pixels, which is where truncation shows.
            image.load()
        except _CORRUPT as error:
            raise _corrupt(path, role, error) from error
        yield image


def _not_found(path: str | os.PathLike) -> DataError:
    return DataError(f"{path}: file not found; check the path and that the dataset is complete")


def _corrupt(path: str | os.PathLike, role: str, error: BaseException) -> DataError:
    return DataError(
        f"{path}: cannot read this {role} file ({type(error).__name__}: {error}); it is truncated or "
        "not an image: re-copy or re-export it, or remove it (and its pair) from the dataset"
    )


class FilePairDataset(SegmentationDataset):
    """A dataset of (image file, label file) pairs. Subclasses find the files and set ``root``, ``split``,
    ``images`` and ``labels`` (parallel lists of paths); ``map_label`` turns stored label values into training ids."""

    root: Path
    split: str | None
    images: list[Path]
    labels: list[Path]

    def __len__(self) -> int:
        return len(self.images)

    def map_label(self, label: torch.Tensor) -> torch.Tensor:
        return label

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        return read_rgb(self.images[index]), tv_tensors.Mask(self.map_label(read_label(self.labels[index])))

    def name_of(self, index: int) -> str:
        return self.images[index].name

    def files_of(self, index: int) -> tuple[str, str]:
        return str(self.images[index]), str(self.labels[index])

    def size_of(self, index: int) -> tuple[int, int]:
        path = self.images[index]
        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
        except FileNotFoundError:
            raise _not_found(path) from None
        except _CORRUPT as error:
            raise _corrupt(path, "image", error) from error
        return height, width

    def __repr__(self) -> str:
        split = "" if self.split is None else f", split={self.split!r}"
        return f"{type(self).__name__}({str(self.root)!r}{split}, {len(self)} samples)"
