"""Joint image/mask transforms for training and evaluation (torchvision.transforms.v2).

Every geometric step moves image and mask together; photometric steps touch the image only. The image is resized
bilinearly with antialiasing, the mask with centred nearest neighbour (``NEAREST_EXACT``, which lines up with the
bilinear image grid better than torch's legacy ``NEAREST``) so labels are never blended. Pixels that padding
invents are ``ignore_index`` in the mask, so they never count in loss or metrics.

Both pipelines take ``(Image uint8 (3,H,W), Mask int (H,W))`` and return plain tensors
``(image float32 (3,H,W) normalised with ImageNet MEAN/STD, mask int64 (H,W))``.

Example:
    >>> import torch
    >>> from torchvision import tv_tensors
    >>> from mess_core.data import train_transform, eval_transform, pad_collate, denormalize
    >>> image = tv_tensors.Image(torch.full((3, 30, 40), 128, dtype=torch.uint8))
    >>> mask = tv_tensors.Mask(torch.zeros(30, 40, dtype=torch.int64))
    >>> x, y = train_transform(crop=(64, 64), ignore_index=255)(image, mask)
    >>> x.shape, x.dtype, y.shape, y.dtype
    (torch.Size([3, 64, 64]), torch.float32, torch.Size([64, 64]), torch.int64)
    >>> bool((y == 255).any())  # the crop is bigger than the image: padding is ignored
    True
    >>> x, y = eval_transform()(image, mask)
    >>> denormalize(x)[0, 0].tolist()
    [128, 128, 128]
    >>> images, masks = pad_collate([(x, y), (x[:, :20], y[:20])], ignore_index=255)
    >>> images.shape, int(masks[1, 25, 0])
    (torch.Size([2, 3, 30, 40]), 255)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as nnf
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "MEAN",
    "STD",
    "frame_tensor",
    "PairTransform",
    "JointResize",
    "resize_image",
    "resize_mask",
    "train_transform",
    "eval_transform",
    "pad_collate",
    "denormalize",
]

# ImageNet statistics: every backbone we convert was pre-trained with them.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class JointResize(v2.Transform):
    """Resize image (bilinear, antialiased) and mask (centred nearest) to a fixed ``size`` or by a random factor.

    Give exactly one of ``size`` (H, W) or ``scale`` (low, high): the factor is drawn uniformly from ``scale`` with
    torch's generator, so seeding torch reproduces it.
    """

    def __init__(self, *, size: tuple[int, int] | None = None, scale: tuple[float, float] | None = None) -> None:
        super().__init__()
        if (size is None) == (scale is None):
            raise ValueError("JointResize takes exactly one of size=(H, W) or scale=(low, high)")
        if scale is not None and not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if self.size is not None:
            return {"size": list(self.size)}
        height, width = next(F.get_size(x) for x in flat_inputs if isinstance(x, (tv_tensors.Image, tv_tensors.Mask)))
        factor = float(torch.empty(()).uniform_(*self.scale))
        return {"size": [max(1, round(height * factor)), max(1, round(width * factor))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return resize_mask(inpt, params["size"])
        if isinstance(inpt, tv_tensors.Image):
            return resize_image(inpt, params["size"])
        return inpt


def resize_image(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """An image (C, H, W) resized to ``size`` (H, W), bilinear and antialiased: the one resize of every image an
    evaluation or a drive reads, so that a drive's frame of a dataset is bit for bit the image its study evaluated."""
    return F.resize(image, [int(size[0]), int(size[1])], interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_mask(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A label map (H, W) resized to ``size`` by centred nearest neighbour: a label is a class id, never a mix of
    two."""
    return F.resize(mask, [int(size[0]), int(size[1])], interpolation=InterpolationMode.NEAREST_EXACT)


class PairTransform:
    """Runs a v2 pipeline on an (image, mask) pair and hands back plain ``(float32 image, int64 mask)`` tensors.

    Plain tensors or numpy arrays are accepted too: they are wrapped as Image (CHW, or HWC from numpy) and Mask.
    """

    def __init__(self, steps: Sequence[Callable[..., Any]]) -> None:
        self.pipeline = v2.Compose(list(steps))

    def __call__(self, image: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.pipeline(_as_image(image), _as_mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).to(torch.int64)

    def __repr__(self) -> str:
        return f"PairTransform({self.pipeline!r})"


def train_transform(
    *,
    crop: tuple[int, int],
    scale: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    jitter: float = 0.2,
    hue: float = 0.0,
    blur: float = 0.0,
    noise: float = 0.0,
    ignore_index: int,
) -> PairTransform:
    """Random scale, pad-if-needed + random crop to ``crop`` (H, W), random h-flip, colour jitter (brightness,
    contrast and saturation by up to ``jitter``, hue by up to ``hue``), a Gaussian blur (sigma 0.1-2) with probability
    ``blur``, Gaussian noise of standard deviation ``noise`` (of the 0-1 range) on half the images, normalise.

    The photometric steps stand for what changes between scenes (light, camera, compression) while labels do not."""
    steps: list[Callable[..., Any]] = []
    if tuple(scale) != (1.0, 1.0):
        steps.append(JointResize(scale=scale))
    steps.append(
        v2.RandomCrop(
            tuple(crop),
            pad_if_needed=True,
            padding_mode="constant",
            fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index},
        )
    )
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if jitter or hue:
        # v2.ColorJitter, GaussianBlur and GaussianNoise pass masks through untouched.
        steps.append(
            v2.ColorJitter(
                brightness=jitter or None, contrast=jitter or None, saturation=jitter or None, hue=hue or None
            )
        )
    if blur:
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 2.0))], p=blur))
    to_float, normalise = _to_normalised_float()
    steps.append(to_float)
    if noise:
        steps.append(v2.RandomApply([v2.GaussianNoise(sigma=noise, clip=True)], p=0.5))
    return PairTransform(steps + [normalise])


def eval_transform(*, size: tuple[int, int] | None = None) -> PairTransform:
    """Optional resize to ``size`` (H, W), then float + normalise; deterministic."""
    steps: list[Callable[..., Any]] = [] if size is None else [JointResize(size=size)]
    return PairTransform(steps + _to_normalised_float())


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], *, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (image, mask) pairs of different sizes by padding bottom/right to the largest H and W.

    Image padding is 0, mask padding ``ignore_index``. Use ``functools.partial(pad_collate, ignore_index=...)`` as a
    DataLoader ``collate_fn``.
    """
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    padded = []
    for image, mask in batch:
        image, mask = torch.as_tensor(image).as_subclass(torch.Tensor), torch.as_tensor(mask).as_subclass(torch.Tensor)
        if image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"pad_collate: image {tuple(image.shape)} and mask {tuple(mask.shape)} differ in size")
        extra = (0, width - image.shape[-1], 0, height - image.shape[-2])
        if any(extra):
            image = nnf.pad(image, extra, value=0)
            mask = nnf.pad(mask, extra, value=ignore_index)
        padded.append((image, mask))
    # default_collate stacks straight into shared memory inside DataLoader workers.
    images, masks = default_collate(padded)
    return images, masks


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Undo the normalisation for display: (3,H,W) -> uint8 (H,W,3), or (B,3,H,W) -> (B,H,W,3)."""
    tensor = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    pixels = (tensor * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)
    return pixels.movedim(-3, -1).numpy()


def _to_normalised_float() -> list[Callable[..., Any]]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(MEAN, STD)]


_NORMALISE = v2.Compose(_to_normalised_float())


def _as_image(image: Any) -> tv_tensors.Image:
    if isinstance(image, tv_tensors.Image):
        return image
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return tv_tensors.Image(image)


def _as_mask(mask: Any) -> tv_tensors.Mask:
    if isinstance(mask, tv_tensors.Mask):
        return mask
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    return tv_tensors.Mask(mask)


def frame_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32, normalised by the evaluation's own steps, so that a frame of a dataset
    is bit for bit the image its study evaluated."""
    x = _NORMALISE(_as_image(rgb)).as_subclass(torch.Tensor)
    return x[None].contiguous()
