"""What a dataset's labels mean: class names, the ignore value and display colours.

Example:
    >>> from mess_core.data import DatasetInfo
    >>> info = DatasetInfo(name="toy", classes=("background", "thing"), ignore_index=255,
    ...                    palette=((0, 0, 0), (255, 0, 0)))
    >>> info.num_classes
    2
    >>> distinct_palette(3)
    ((0, 0, 0), (230, 23, 23), (18, 65, 178))
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from ..errors import DataError

__all__ = ["DatasetInfo", "distinct_palette", "colorize"]

Colour = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetInfo:
    """Class names (index = training id), the label value excluded from loss and metrics, and a colour per class."""

    name: str
    classes: tuple[str, ...]
    ignore_index: int
    palette: tuple[Colour, ...]

    def __post_init__(self) -> None:
        # Freeze lists from YAML or callers into tuples so the info stays hashable and immutable.
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        object.__setattr__(self, "palette", tuple(tuple(int(v) for v in colour) for colour in self.palette))
        if not self.classes:
            raise DataError(f"dataset {self.name!r}: it needs at least one class")
        if len(self.palette) != len(self.classes):
            raise DataError(
                f"dataset {self.name!r}: {len(self.palette)} palette colours for {len(self.classes)} "
                "classes; give exactly one colour per class"
            )
        if 0 <= self.ignore_index < len(self.classes):
            raise DataError(
                f"dataset {self.name!r}: ignore_index {self.ignore_index} is the index of class "
                f"{self.classes[self.ignore_index]!r}; pick a value outside 0..{len(self.classes) - 1}, "
                "e.g. 255"
            )

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def distinct_palette(count: int) -> tuple[Colour, ...]:
    """Black for class 0 (usually background), then well separated saturated hues (golden-ratio hue steps)."""
    colours: list[Colour] = [(0, 0, 0)]
    for k in range(1, count):
        hue = ((k - 1) * 0.618033988749895) % 1.0
        value = 0.9 if k % 2 else 0.7  # alternate brightness so neighbouring hues stay apart
        r, g, b = colorsys.hsv_to_rgb(hue, 0.9, value)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colours[:count])


def colorize(labels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 colours; ids outside the palette (the ignore index) black."""
    inside = (labels >= 0) & (labels < len(palette))
    out = palette[np.where(inside, labels, 0)]
    out[~inside] = 0
    return out
