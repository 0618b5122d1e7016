"""The dataset contract shared by every segmentation dataset, and the per-sample deterministic augmentation.

A subclass says how to ``load`` sample ``i`` (raw uint8 image, int64 mask already in training ids), what it is
called (``name_of``) and what its labels mean (``info``). The base class checks every loaded pair, applies the
transform and makes augmentation reproducible: sample ``i`` of epoch ``e`` always gets the same random crop, flip
and jitter, whichever DataLoader worker or DistributedDataParallel rank loads it, in whatever order, and after a
resume; the random stream is seeded by a hash of ``(seed, epoch, i)`` and forked so it never disturbs (or
depends on) the caller's global random state.

Example:
    >>> from mess_core.data import SyntheticSegmentation, train_transform
    >>> data = SyntheticSegmentation(split="val", length=4, seed=1)
    >>> data.transform = train_transform(crop=(64, 64), ignore_index=data.info.ignore_index)
    >>> a, _ = data[2]
    >>> _ = data[0]; b, _ = data[2]
    >>> bool((a == b).all())
    True
    >>> data.set_epoch(1)
    >>> c, _ = data[2]
    >>> bool((a == c).all())  # a new epoch draws new augmentations
    False
    >>> data.validate()
    []
"""

from __future__ import annotations

import operator
import random
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..errors import DataError
from ..seeding import stable_seed
from .info import DatasetInfo
from .transforms import eval_transform

__all__ = ["SegmentationDataset", "sample_seed"]

Transform = Callable[[tv_tensors.Image, tv_tensors.Mask], Any]


class SegmentationDataset(Dataset, ABC):
    """Base of all datasets: ``dataset[i]`` = ``transform(*load(i))``, by default ``(float32 (3,H,W), int64 (H,W))``.

    Subclasses implement ``__len__``, ``load``, ``name_of``, set ``info``, and override ``files_of`` when image and
    label live in different files, so that errors name both.
    """

    info: DatasetInfo

    def __init__(self, *, transform: Transform | None = None, seed: int = 0) -> None:
        self.transform = transform
        self.seed = int(seed)
        # Shared memory, so set_epoch in the main process reaches DataLoader workers that are already running
        # (persistent_workers=True): they hold a copy of the dataset, but this counter is the same memory.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._default_transform = eval_transform()

    # --- what subclasses provide -------------------------------------------------------------------------------

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """Raw sample: Image uint8 (3,H,W) RGB and Mask int64 (H,W) in training ids, ``info.ignore_index`` = ignore."""

    @abstractmethod
    def name_of(self, index: int) -> str:
        """Short name of sample ``index`` (a file name or stem) for messages and display."""

    def group_of(self, index: int) -> str:
        """The group (scene) sample ``index`` belongs to: images of one group share scenery, so a network is judged
        on scenes it never saw only on groups it did not train on. This default, the split's name, suits datasets
        whose splits share no scene by construction; datasets of video frames or cities override it."""
        return str(getattr(self, "split", None) or "all")

    def files_of(self, index: int) -> tuple[str, str]:
        """Where the image and the label of sample ``index`` come from (full paths for file datasets)."""
        name = self.name_of(index)
        return name, name

    def size_of(self, index: int) -> tuple[int, int]:
        """(H, W) of image ``index`` as stored, before any transform. This default loads the sample; file datasets
        read only the file's header."""
        return tuple(int(v) for v in self.load(index)[0].shape[-2:])  # type: ignore[return-value]

    # --- what the base provides --------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch``; call it before iterating a DataLoader for that epoch."""
        self._epoch.fill_(int(epoch))

    def __getitem__(self, index: int) -> Any:
        index = self._checked_index(index)
        image, mask = self.load_checked(index)
        transform = self.transform if self.transform is not None else self._default_transform
        with _seeded(sample_seed(self.seed, self.epoch, index)):
            return transform(image, mask)

    def load_checked(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """``load(index)`` plus the checks: image and mask sizes agree, every label is a class or ignore."""
        image, mask = self.load(index)
        image_file, label_file = self.files_of(index)
        if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
            raise DataError(f"{image_file}: loaded as {image.dtype} {tuple(image.shape)}, expected uint8 (3, H, W)")
        if mask.ndim == 3 and mask.shape[0] == 1:
            mask = mask[0]
        if tuple(image.shape[-2:]) != tuple(mask.shape):
            raise DataError(
                f"{image_file} is {_hw(image.shape[-2:])} but its label {label_file} is "
                f"{_hw(mask.shape)} (H x W); image and label must have the same size: re-export the "
                "label at the image's size, or remove the pair"
            )
        mask = tv_tensors.Mask(mask.as_subclass(torch.Tensor).to(torch.int64))
        self._check_labels(mask, label_file)
        return tv_tensors.Image(image), mask

    def validate(self, limit: int | None = None) -> list[str]:
        """Load the first ``limit`` samples (all by default) and return every problem found, one line each."""
        problems = []
        for index in range(len(self) if limit is None else min(limit, len(self))):
            try:
                self.load_checked(index)
            except DataError as error:
                problems.append(str(error))
        return problems

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Untransformed sample for display: uint8 (H,W,3) RGB and int64 (H,W) mask."""
        image, mask = self.load_checked(self._checked_index(index))
        return image.permute(1, 2, 0).numpy(), mask.as_subclass(torch.Tensor).numpy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name!r}, {len(self)} samples)"

    # --- helpers -----------------------------------------------------------------------------------------------

    def _checked_index(self, index: int) -> int:
        index = operator.index(index)
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"sample {index} out of range for {self!r}")
        return index % length

    def _check_labels(self, mask: torch.Tensor, label_file: str) -> None:
        info = self.info
        bad = ((mask < 0) | (mask >= info.num_classes)) & (mask != info.ignore_index)
        if not bool(bad.any()):
            return
        values, counts = torch.unique(mask[bad], return_counts=True)
        found = ", ".join(f"{v} ({c} px)" for v, c in zip(values.tolist()[:10], counts.tolist()[:10]))
        more = f" and {len(values) - 10} more" if len(values) > 10 else ""
        raise DataError(
            f"{label_file}: label values {found}{more} are neither a class of {info.name!r} "
            f"(0..{info.num_classes - 1}) nor its ignore index {info.ignore_index}; fix the label file, "
            "or declare the classes / ignore_index this dataset really uses"
        )


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Stable 63-bit seed for one sample (the same in every process, unlike Python's salted ``hash``)."""
    return stable_seed(seed, epoch, index)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch, ``random`` and numpy's global generator for the block, then restore the caller's states."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            # Third-party transforms (albumentations and friends) draw from numpy's global generator.
            np.random.seed(seed % 2**32)
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _hw(shape: Any) -> str:
    return f"{shape[0]}x{shape[1]}"
