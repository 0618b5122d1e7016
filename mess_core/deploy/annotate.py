"""A drive drawn for people: each frame with its prediction overlaid, a badge naming the exit it left at, its image
confidence at the kept exits and the running saving; written as a video by OpenCV (:class:`AnnotatedVideo`) and as
a per-frame CSV, both atomically: an interrupted run leaves no half-written file behind.

Example:
    >>> import numpy as np
    >>> rgb = np.zeros((48, 64, 3), np.uint8)
    >>> labels = np.ones((48, 64), np.int64)
    >>> palette = np.array([[0, 0, 0], [255, 0, 0]], np.uint8)
    >>> overlay(rgb, labels, palette, alpha=0.5)[0, 0].tolist()  # half the class colour over black
    [128, 0, 0]
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ..data.info import colorize
from ..errors import MessError
from ..io import atomic_write_text
from .drive import DriveTotals, FrameResult

__all__ = [
    "overlay",
    "exit_colour",
    "annotate",
    "readable_scale",
    "AnnotatedVideo",
    "frames_csv",
    "VIDEO_CODECS",
]

# what OpenCV's writer encodes here without extra libraries, by suffix
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mov": "mp4v", ".mkv": "MJPG"}


def overlay(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
    """The frame with its class colours blended in at ``alpha``."""
    return cv2.addWeighted(colorize(labels, palette), float(alpha), rgb, 1.0 - float(alpha), 0.0)


def exit_colour(exit: int, num_exits: int) -> tuple[int, int, int]:
    """RGB of an exit's badge: green for the first exit through amber to red for the final one."""
    t = (exit - 1) / max(1, num_exits - 1)
    return (int(round(40 + 200 * t)), int(round(180 - 140 * t)), 60)


def readable_scale(width: int) -> int:
    """The whole factor that makes a frame of ``width`` at least 640 pixels wide, where the text stays legible."""
    return max(1, -(-640 // max(1, int(width))))


def _shade(image: np.ndarray, top_left: tuple[int, int], bottom_right: tuple[int, int]) -> None:
    (x0, y0), (x1, y1) = top_left, bottom_right
    region = image[max(0, y0) : y1, max(0, x0) : x1]
    region[:] = (region * 0.35).astype(np.uint8)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour=(255, 255, 255)) -> None:
    thickness = max(1, int(round(scale * 2)))
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def annotate(
    rgb: np.ndarray,
    prediction: np.ndarray,
    result: FrameResult,
    totals: DriveTotals,
    palette: np.ndarray,
    *,
    kept: Sequence[int],
    num_exits: int,
    scale: int | None = None,
) -> np.ndarray:
    """(H*scale, W*scale, 3) RGB: the frame with the prediction overlaid, an exit badge (top left), the confidence at
    each kept exit (top right) and the running saving of the drive so far (bottom). ``scale`` defaults to
    :func:`readable_scale`."""
    image = overlay(rgb, prediction, palette)
    scale = readable_scale(rgb.shape[1]) if scale is None else scale
    if scale != 1:
        image = cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    h, w = image.shape[:2]
    font = max(0.35, w / 1100)
    line = int(28 * font / 0.6)
    badge = f"exit {result.exit}/{num_exits}" + (" (final)" if result.exit == num_exits else "")
    (tw, th), _ = cv2.getTextSize(badge, cv2.FONT_HERSHEY_SIMPLEX, font, max(1, int(round(font * 2))))
    cv2.rectangle(image, (4, 4), (14 + tw, 14 + th + 6), exit_colour(result.exit, num_exits), -1)
    _text(image, badge, (9, 9 + th + 2), font)
    # dark panels under the text: legible over any scene, and steady under a lossy codec
    panel_w = int(200 * font / 0.6)
    _shade(image, (w - panel_w - 4, 4), (w - 4, 12 + line * len(kept)))
    _shade(image, (0, h - 2 * line - 14), (w, h))
    for k, (exit, c) in enumerate(zip(kept, result.c_img)):
        shown = "-" if np.isnan(c) else f"{c:.2f}"
        _text(image, f"c_img at exit {exit}: {shown}", (w - panel_w, 9 + line * (k + 1) - line // 3), font * 0.8)
    frame_line = f"this frame: {result.ms:.0f} ms (original model {result.original_ms:.0f} ms)"
    drive_line = (
        f"so far: {totals.speedup:.2f}x, {totals.ms_saved / 1000:.1f} s and {totals.gflops_saved:.1f} GFLOPs saved"
    )
    _text(image, frame_line, (9, h - 10 - line), font * 0.8)
    _text(image, drive_line, (9, h - 10), font * 0.8)
    return image


class AnnotatedVideo:
    """A video file written frame by frame into a hidden temporary file beside ``path`` and renamed to ``path`` on
    :meth:`close`; leaving the ``with`` block by an exception (Ctrl-C included) removes the temporary file, so
    ``path`` is either the whole video or untouched. ``path`` must not exist."""

    def __init__(self, path: str | Path, *, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise MessError(f"{self.path}: write a video ending in {', '.join(sorted(VIDEO_CODECS))}")
        if self.path.exists():
            raise MessError(f"{self.path}: exists; choose a new output file or remove this one first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.size = size  # (H, W)
        self.writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*codec), float(fps), (size[1], size[0]))
        if not self.writer.isOpened():
            self.partial.unlink(missing_ok=True)
            raise MessError(f"{self.path}: OpenCV cannot write {codec} video here; write a .avi file instead")
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape[:2] != self.size:
            raise ValueError(f"frame of {rgb.shape[:2]} in a video of {self.size}")
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> Path:
        self.writer.release()
        if self.path.exists():
            self.partial.unlink(missing_ok=True)
            raise MessError(f"{self.path}: appeared while the video was written; the video was not kept")
        os.replace(self.partial, self.path)
        return self.path

    def abandon(self) -> None:
        self.writer.release()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> "AnnotatedVideo":
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.abandon()


def _cell(value: Any) -> Any:
    """A CSV cell: empty for what does not exist (no labels, an exit the frame never reached)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return f"{value:.4f}" if isinstance(value, float) else value


def frames_csv(path: str | Path, results: Sequence[FrameResult], kept: Sequence[int]) -> Path:
    """The per-frame CSV (see :meth:`FrameResult.row`), written atomically."""
    buffer = io.StringIO()
    rows = [r.row(kept) for r in results]
    columns = list(rows[0]) if rows else []
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    atomic_write_text(Path(path), buffer.getvalue())
    return Path(path)
