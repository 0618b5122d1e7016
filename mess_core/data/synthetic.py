"""A generated segmentation dataset with easy and hard images, for tests, demos and early-exit experiments.

No files: sample ``i`` is drawn from ``(seed, split, i)``, so it is identical on every machine and run, and the
splits never share a scene. Each sample has a difficulty ``d`` in [0, 1] (uniform over the split):

* easy (d near 0): one to three large, well separated objects in their class colour on a calm, greyish background;
* hard (d near 1): up to eleven small objects that overlap, in colours drawn mostly at random and pulled towards
  the background, on a colourful textured background with class-coloured distractor strokes, plus noise and blur.

So a shallow exit can get easy images right while hard ones need shape and texture (what a deep exit sees):
colour alone does not separate the classes on hard images. Object outlines (one pixel where the label changes,
blurred into a mix of both sides in the image) are marked ignore.

Classes: 0 background, 1 disc, 2 square, 3 triangle, 4 ring, 5 cross, 6 striped blob (an irregular blob with
stripes: texture is its only cue); ignore index 255.

Example:
    >>> from mess_core.data import SyntheticSegmentation
    >>> data = SyntheticSegmentation(split="train", length=8, size=(60, 80), seed=3)
    >>> image, mask = data.load(0)
    >>> image.shape, image.dtype, mask.shape, mask.dtype
    (torch.Size([3, 60, 80]), torch.uint8, torch.Size([60, 80]), torch.int64)
    >>> sorted(set(mask.unique().tolist()) - set(range(7)))  # only the ignore value besides the classes
    [255]
    >>> bool((data.load(0)[0] == image).all()), 0.0 <= data.difficulty(0) <= 1.0
    (True, True)
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
import torch
from torchvision import tv_tensors

from ..errors import DataError
from .base import SegmentationDataset, Transform
from .info import DatasetInfo, distinct_palette
from .layout import check_split

__all__ = ["SyntheticSegmentation", "SYNTHETIC_INFO"]

CLASSES = ("background", "disc", "square", "triangle", "ring", "cross", "striped blob")
SYNTHETIC_INFO = DatasetInfo(
    name="synthetic", classes=CLASSES, ignore_index=255, palette=distinct_palette(len(CLASSES))
)
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}

# Each object class has a typical colour (RGB, 0..1); easy images use it nearly as is, hard ones mostly not.
_CLASS_COLOURS = np.array(
    [
        (0.50, 0.50, 0.50),  # background (unused)
        (0.90, 0.20, 0.15),  # disc: red
        (0.15, 0.35, 0.90),  # square: blue
        (0.20, 0.80, 0.25),  # triangle: green
        (0.95, 0.85, 0.15),  # ring: yellow
        (0.85, 0.25, 0.85),  # cross: magenta
        (0.95, 0.55, 0.10),  # striped blob: orange
    ],
    dtype=np.float32,
)


def _mix(easy: float, hard: float, d: float) -> float:
    return easy + (hard - easy) * d


class SyntheticSegmentation(SegmentationDataset):
    """Deterministic generated scenes (see the module docstring); ``length`` defaults to 256 for train, else 64."""

    SPLITS = tuple(_SPLIT_CODES)

    def __init__(
        self,
        *,
        split: str = "train",
        length: int | None = None,
        size: tuple[int, int] = (120, 160),
        seed: int = 0,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform=transform, seed=seed)
        self.info = SYNTHETIC_INFO
        self.split = check_split(split, self.SPLITS, dataset="synthetic")
        self.length = (256 if split == "train" else 64) if length is None else int(length)
        if self.length < 1:
            raise DataError(f"synthetic: length must be at least 1, got {length}")
        height, width = (int(v) for v in size)
        if min(height, width) < 16:
            raise DataError(f"synthetic: size must be (H, W) with both at least 16 pixels, got {size}")
        self.size = (height, width)

    def __len__(self) -> int:
        return self.length

    def name_of(self, index: int) -> str:
        return f"synthetic-{self.split}-{index:05d}"

    def difficulty(self, index: int) -> float:
        """How hard sample ``index`` is, in [0, 1]: the first number its generator draws."""
        return float(self._generator(self._checked_index(index)).random())

    def load(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        image, label = self._render(self._checked_index(index))
        return (
            tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1).contiguous()),
            tv_tensors.Mask(torch.from_numpy(label.astype(np.int64))),
        )

    def size_of(self, index: int) -> tuple[int, int]:
        return self.size

    def __repr__(self) -> str:
        return f"SyntheticSegmentation(split={self.split!r}, length={self.length}, size={self.size}, seed={self.seed})"

    # --- generation ------------------------------------------------------------------------------------------

    def _generator(self, index: int) -> np.random.Generator:
        return np.random.default_rng(
            [self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF, _SPLIT_CODES[self.split], index]
        )

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = self._generator(index)
        d = float(rng.random())  # first draw, so difficulty() needs no rendering
        height, width = self.size
        ys, xs = _grid(height, width)
        image = _background(rng, d, ys, xs)
        label = np.zeros((height, width), np.uint8)
        _distractors(rng, d, image)

        unit = min(height, width)
        placed: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(1, 4)) + round(8 * d)):
            cls = int(rng.integers(1, len(CLASSES)))
            radius = unit * float(rng.uniform(_mix(0.15, 0.05, d), _mix(0.28, 0.10, d)))
            cx, cy = _place(rng, d, radius, width, height, placed)
            placed.append((cx, cy, radius))
            _draw_object(rng, d, cls, cx, cy, radius, image, label, ys, xs)

        image += rng.normal(0.0, _mix(0.01, 0.06, d), image.shape).astype(np.float32)
        blur = _mix(0.0, 1.2, d)
        if blur > 0.3:
            image = cv2.GaussianBlur(image, (0, 0), blur)
        # Where the label changes the (blurred) pixel mixes both sides: ignore it, as VOC does with its borders.
        edge = np.zeros_like(label, dtype=bool)
        edge[:, :-1] |= label[:, :-1] != label[:, 1:]
        edge[:-1, :] |= label[:-1, :] != label[1:, :]
        label[edge] = SYNTHETIC_INFO.ignore_index
        return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8), label


@lru_cache(maxsize=8)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys.flags.writeable = xs.flags.writeable = False  # shared between samples
    return ys, xs


def _background(rng: np.random.Generator, d: float, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Two-colour gradient plus smooth blotches; greyish and calm when easy, colourful and busy when hard."""
    height, width = ys.shape
    grey = rng.uniform(0.25, 0.6, size=(2, 1))
    colours = grey + (rng.uniform(0.05, 0.95, size=(2, 3)) - grey) * _mix(0.15, 0.9, d)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(height, width)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    image = colours[0] + (colours[1] - colours[0]) * ramp[..., None]
    blotches = rng.normal(0.0, _mix(0.04, 0.12, d), size=(4, 5, 3)).astype(np.float32)
    image += cv2.resize(blotches, (width, height), interpolation=cv2.INTER_CUBIC)
    return image.astype(np.float32)


def _distractors(rng: np.random.Generator, d: float, image: np.ndarray) -> None:
    """Class-coloured strokes that are background: on hard images colour alone must not decide the class."""
    height, width = image.shape[:2]
    for _ in range(int(rng.binomial(4, d))):
        colour = _CLASS_COLOURS[int(rng.integers(1, len(CLASSES)))]
        start = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        end = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(image, start, end, tuple(float(v) for v in colour), int(rng.integers(1, 3)), cv2.LINE_AA)


def _place(
    rng: np.random.Generator, d: float, radius: float, width: int, height: int, placed: list[tuple[float, float, float]]
) -> tuple[float, float]:
    """A centre inside the image; easy images try to keep objects apart, hard ones let them overlap."""
    margin = radius * _mix(1.0, 0.3, d)
    tries = 12 if d < 0.5 else 1
    for _ in range(tries):
        cx = float(rng.uniform(min(margin, width / 2), max(width - margin, width / 2)))
        cy = float(rng.uniform(min(margin, height / 2), max(height - margin, height / 2)))
        if all(math.hypot(cx - x, cy - y) > radius + r for x, y, r in placed):
            break
    return cx, cy


def _draw_object(
    rng: np.random.Generator,
    d: float,
    cls: int,
    cx: float,
    cy: float,
    radius: float,
    image: np.ndarray,
    label: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
) -> None:
    height, width = label.shape
    reach = int(math.ceil(radius * 1.3)) + 2
    x0, x1 = max(0, int(cx) - reach), min(width, int(cx) + reach + 1)
    y0, y1 = max(0, int(cy) - reach), min(height, int(cy) + reach + 1)
    if x0 >= x1 or y0 >= y1:
        return
    shape = np.zeros((y1 - y0, x1 - x0), np.uint8)
    _draw_shape(rng, cls, cx - x0, cy - y0, radius, shape)
    inside = shape.astype(bool)
    if not inside.any():
        return

    # Colour: the class colour, blended with a random one (hard), then pulled towards the background (low contrast).
    roi = image[y0:y1, x0:x1]
    colour = _CLASS_COLOURS[cls] + (rng.uniform(0.05, 0.95, 3) - _CLASS_COLOURS[cls]) * _mix(0.1, 0.75, d)
    colour = colour + (roi[inside].mean(axis=0) - colour) * _mix(0.0, 0.4, d)
    angle = float(rng.uniform(0, 2 * math.pi))
    along = (xs[y0:y1, x0:x1] - cx) * math.cos(angle) + (ys[y0:y1, x0:x1] - cy) * math.sin(angle)
    if cls == CLASSES.index("striped blob"):
        period = float(rng.uniform(3.0, 6.0))
        dark = np.sin(along * (2 * math.pi / period)) > 0
        pattern = np.where(dark, 1.0 - _mix(0.55, 0.35, d), 1.0)
    else:
        # A gentle light-to-shadow shading so flat colour is not the only appearance.
        pattern = 1.0 + along / radius * float(rng.uniform(0.0, _mix(0.05, 0.2, d)))
    roi[inside] = (colour[None, None, :] * pattern[..., None])[inside]
    label[y0:y1, x0:x1][inside] = cls


def _draw_shape(rng: np.random.Generator, cls: int, cx: float, cy: float, radius: float, shape: np.ndarray) -> None:
    """Fill the pixels of one object of class ``cls`` (centre and radius in ``shape``'s coordinates) with 1."""
    name = CLASSES[cls]
    rotation = float(rng.uniform(0, 2 * math.pi))
    centre = (int(round(cx)), int(round(cy)))
    if name == "disc":
        cv2.circle(shape, centre, max(2, int(round(radius))), 1, -1)
    elif name == "ring":
        thickness = max(3, int(round(radius * 0.4)))
        cv2.circle(shape, centre, max(thickness, int(round(radius - thickness / 2))), 1, thickness)
    elif name == "square":
        cv2.fillConvexPoly(shape, _polygon(cx, cy, radius * 1.1, 4, rotation), 1)
    elif name == "triangle":
        cv2.fillConvexPoly(shape, _polygon(cx, cy, radius * 1.2, 3, rotation), 1)
    elif name == "cross":
        for arm in (rotation, rotation + math.pi / 2):
            cv2.fillConvexPoly(shape, _bar(cx, cy, radius * 1.1, radius * 0.3, arm), 1)
    elif name == "striped blob":
        corners = 9
        angles = rotation + np.arange(corners) * (2 * math.pi / corners)
        radii = radius * rng.uniform(0.7, 1.15, corners)
        points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(shape, [np.round(points).astype(np.int32)], 1)
    else:  # pragma: no cover - CLASSES and this function are edited together
        raise AssertionError(name)


def _polygon(cx: float, cy: float, radius: float, corners: int, rotation: float) -> np.ndarray:
    angles = rotation + np.arange(corners) * (2 * math.pi / corners)
    return np.round(np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)).astype(np.int32)


def _bar(cx: float, cy: float, half_length: float, half_width: float, angle: float) -> np.ndarray:
    along = np.array([math.cos(angle), math.sin(angle)])
    across = np.array([-along[1], along[0]])
    corners = [along * sa * half_length + across * sw * half_width for sa, sw in ((1, 1), (1, -1), (-1, -1), (-1, 1))]
    return np.round(np.array(corners) + [cx, cy]).astype(np.int32)
