"""Segmentation datasets and their transforms.

Every dataset yields ``(image float32 (3,H,W), mask int64 (H,W))`` through ``dataset[i]``, with labels in training
ids and ``dataset.info.ignore_index`` where a pixel must not count; ``load``/``raw`` give the untransformed pair.
Augmentation of sample ``i`` depends only on ``(seed, epoch, i)``, never on workers, ranks or call order.

Example:
    >>> from mess_core.data import build_dataset, train_transform
    >>> data = build_dataset("synthetic", split="train", length=16)
    >>> data.transform = train_transform(crop=(96, 96), ignore_index=data.info.ignore_index)
    >>> image, mask = data[0]
    >>> image.shape, mask.shape, data.info.num_classes
    (torch.Size([3, 96, 96]), torch.Size([96, 96]), 7)
"""

from .base import SegmentationDataset
from .camvid import CamVid
from .cityscapes import Cityscapes
from .folder import FolderDataset
from .info import DatasetInfo
from .registry import build_dataset, check_dataset, list_datasets
from .synthetic import SyntheticSegmentation
from .transforms import MEAN, STD, denormalize, eval_transform, pad_collate, train_transform
from .voc import PascalVOC

__all__ = [
    "DatasetInfo",
    "SegmentationDataset",
    "build_dataset",
    "check_dataset",
    "list_datasets",
    "train_transform",
    "eval_transform",
    "pad_collate",
    "denormalize",
    "MEAN",
    "STD",
    "CamVid",
    "Cityscapes",
    "PascalVOC",
    "FolderDataset",
    "SyntheticSegmentation",
]
