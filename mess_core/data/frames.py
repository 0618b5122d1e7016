"""Frames of a drive, in time order, from four kinds of source: a video file (anything OpenCV's ``VideoCapture``
decodes: mp4, avi, webm, mov...), a folder of frame images, one sequence of a dataset (its images grouped by
sequence and ordered by frame number, labels included), or a generated drive for studies without a dataset.

Every frame comes out as 8-bit RGB at the size the network runs at (:class:`Frame`), so a long video costs memory
in proportion to the network's input, not to the camera's. Sources are read lazily and in order
(:meth:`FrameSource.frames`), which is what the annotated-video command needs; the app keeps what it read.

Bad input gets one message naming the file and what to do (:class:`FrameError`): a file OpenCV cannot decode,
zero frames, frames of a folder that change size, frames over :data:`MAX_PIXELS`. Two faults leave the frames read
so far usable, with a notice: a video that stops decoding before its container said it ends (truncated or
damaged), and one longer than the frame limit (only the first ``max_frames`` are read).

Example (a generated drive, 3 shots of 4 frames):
    >>> source = GeneratedDrive(size=(48, 64), shots=3, frames_per_shot=4, seed=0)
    >>> len(source), source.fps
    (12, 10.0)
    >>> frame = next(iter(source.frames()))
    >>> frame.rgb.shape, frame.rgb.dtype, frame.labels.shape, frame.name
    ((48, 64, 3), dtype('uint8'), (48, 64), 'shot 1 frame 1')
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
import torch

from ..errors import MessError
from .base import SegmentationDataset
from .info import DatasetInfo
from .transforms import resize_image, resize_mask

__all__ = [
    "Frame",
    "FrameError",
    "FrameSource",
    "VideoFile",
    "FrameFolder",
    "DatasetSequence",
    "FrameDataset",
    "GeneratedDrive",
    "open_frames",
    "frame_number",
    "sequences",
    "MAX_FRAMES",
    "MAX_PIXELS",
    "VIDEO_SUFFIXES",
    "IMAGE_SUFFIXES",
]

MAX_FRAMES = 3000  # at CamVid's 30 frames per second, 100 s of driving; more is refused with a notice
MAX_PIXELS = 100_000_000  # per frame, as for uploaded images: larger frames are refused before decoding
VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class FrameError(MessError):
    """A video, frame folder or sequence that cannot be read; the message names it and says what to do."""


@dataclass(frozen=True)
class Frame:
    """One frame at the network's input size: ``rgb`` (H, W, 3) uint8, ``labels`` (H, W) int64 training ids with
    the dataset's ignore index, or None where the source has no labels."""

    index: int  # 0-based position in the drive
    name: str
    rgb: np.ndarray
    labels: np.ndarray | None = None


def _resize_rgb(rgb: np.ndarray, size: Sequence[int]) -> np.ndarray:
    if tuple(rgb.shape[:2]) == tuple(size):
        return np.ascontiguousarray(rgb)
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)
    return resize_image(image, size).permute(1, 2, 0).contiguous().numpy()


def _resize_labels(labels: np.ndarray, size: Sequence[int]) -> np.ndarray:
    if tuple(labels.shape) == tuple(size):
        return labels
    return resize_mask(torch.from_numpy(labels.astype(np.int64))[None], size)[0].numpy()


class FrameSource(ABC):
    """Frames of one drive in time order at ``size`` (H, W). ``notices`` says what was read differently from what
    was asked (a truncated file, the frame limit); ``len()`` is the number of frames that will be read."""

    def __init__(self, name: str, size: Sequence[int], fps: float) -> None:
        self.name = name
        self.size = (int(size[0]), int(size[1]))
        self.fps = float(fps)
        self.notices: list[str] = []

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """The frames, first to last, read as they are asked for."""

    def read_all(self) -> list[Frame]:
        """Every frame, in memory (what the app keeps to seek in)."""
        return list(self.frames())

    @property
    def has_labels(self) -> bool:
        return False


# ------------------------------------------------------------------------------------------------------ videos
def _fourcc_text(code: float) -> str:
    value = int(code)
    text = "".join(chr((value >> 8 * i) & 0xFF) for i in range(4))
    return text if text.isprintable() and text.strip() else "unknown"


class VideoFile(FrameSource):
    """A video file decoded by OpenCV. Its frame count comes from the container, and is checked while decoding:
    a file that ends early leaves a notice and the frames before the damage."""

    def __init__(self, path: str | Path, *, size: Sequence[int], max_frames: int = MAX_FRAMES) -> None:
        path = Path(path)
        if not path.is_file():
            raise FrameError(f"{path}: no such video file")
        if path.stat().st_size == 0:
            raise FrameError(f"{path}: the file is empty")
        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                raise FrameError(
                    f"{path}: OpenCV cannot open this video: it is damaged or cut short (an MP4 file keeps its index "
                    "at the end), or in a format with no decoder here; re-encode it, for example "
                    f"`ffmpeg -i {path.name} -c:v libx264 drive.mp4`, or give a folder of frame images"
                )
            width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = float(capture.get(cv2.CAP_PROP_FPS))
            codec = _fourcc_text(capture.get(cv2.CAP_PROP_FOURCC))
        finally:
            capture.release()
        if width * height > MAX_PIXELS:
            raise FrameError(
                f"{path}: frames of {height}x{width} pixels are more than this tool decodes "
                f"({MAX_PIXELS // 1_000_000} megapixels at most); downscale the video first"
            )
        super().__init__(path.name, size, fps if np.isfinite(fps) and 0 < fps <= 1000 else 30.0)
        self.path, self.codec, self.source_size = path, codec, (height, width)
        self.max_frames = int(max_frames)
        self.declared = declared if declared > 0 else None
        if self.declared is not None and self.declared > self.max_frames:
            self.notices.append(
                f"{path.name}: {self.declared} frames; only the first {self.max_frames} are read "
                "(the frame limit: cut the video, or raise the limit)"
            )
        # the count a reader can trust: decoding once tells whether the file holds what its container says
        self._count = self._decodable_frames()

    def _capture(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise FrameError(f"{self.path}: the video could be opened once but not again; was it changed or removed?")
        return capture

    def _decodable_frames(self) -> int:
        capture, count = self._capture(), 0
        try:
            while count < self.max_frames and capture.grab():
                count += 1
        finally:
            capture.release()
        if count == 0:
            raise FrameError(
                f"{self.path}: no frame could be decoded (codec {self.codec}); the file is damaged, truncated "
                f"before its first frame, or in a format OpenCV does not decode: re-encode it, for example "
                f"`ffmpeg -i {self.path.name} -c:v libx264 drive.mp4`"
            )
        expected = min(self.declared, self.max_frames) if self.declared else None
        if expected is not None and count < expected:
            self.notices.append(
                f"{self.path.name}: decoding stopped at frame {count + 1} of {self.declared} (the file is truncated "
                f"or damaged there); the {count} frames before it are used"
            )
        if self.declared is None and count == self.max_frames:
            self.notices.append(
                f"{self.path.name}: only the first {self.max_frames} frames are read (the frame limit: cut the "
                "video, or raise the limit)"
            )
        return count

    def __len__(self) -> int:
        return self._count

    def frames(self) -> Iterator[Frame]:
        capture = self._capture()
        try:
            for index in range(self._count):
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    raise FrameError(
                        f"{self.path}: frame {index + 1} decoded a moment ago and not now; was the file changed?"
                    )
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else np.repeat(bgr[..., None], 3, 2)
                yield Frame(index, f"frame {index + 1}", _resize_rgb(rgb, self.size))
        finally:
            capture.release()


# ------------------------------------------------------------------------------------------- folders of frames
def frame_number(name: str) -> tuple[str, int]:
    """The sequence and frame number in a frame's file name, for ordering frames in time: the last run of digits
    is the frame, what comes before it the sequence.

    >>> frame_number("0016E5_07959.png"), frame_number("0006R0_f02310"), frame_number("img.png")
    (('0016E5_', 7959), ('0006R0_f', 2310), ('img.png', -1))
    """
    stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES else name
    found = list(re.finditer(r"\d+", stem))
    if not found:
        return name, -1
    last = found[-1]
    return stem[: last.start()], int(last.group())


class FrameFolder(FrameSource):
    """The images of a folder, ordered by the frame number in their names; they must share one size (a folder
    mixing sizes is most likely mixing drives)."""

    def __init__(
        self, folder: str | Path, *, size: Sequence[int], fps: float = 30.0, max_frames: int = MAX_FRAMES
    ) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise FrameError(f"{folder}: no such folder of frames")
        files = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: (frame_number(p.name), p.name),
        )
        if not files:
            raise FrameError(
                f"{folder}: holds no frame images ({', '.join(IMAGE_SUFFIXES)}); give a folder of a drive's frames, "
                "named so that their frame numbers order them"
            )
        super().__init__(folder.name, size, fps)
        if len(files) > max_frames:
            self.notices.append(
                f"{folder.name}: {len(files)} frames; only the first {max_frames} are read (the frame limit)"
            )
        self.folder, self.files = folder, files[:max_frames]

    def __len__(self) -> int:
        return len(self.files)

    def _read(self, path: Path) -> np.ndarray:
        import warnings

        from PIL import Image

        huge = FrameError(
            f"{path}: more pixels than this tool decodes ({MAX_PIXELS // 1_000_000} megapixels at most); downscale "
            "the frames first"
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is the one that counts
                with Image.open(path) as img:  # the header alone: refuse a huge frame before decoding it
                    width, height = img.size
        except Image.DecompressionBombError:  # Pillow refuses twice its own limit in open() itself
            raise huge from None
        except Exception:  # not identified by Pillow: OpenCV's decode below says whether it is an image at all
            width = height = 0
        if width * height > MAX_PIXELS:
            raise huge
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FrameError(f"{path}: not an image OpenCV can read; remove it from the folder or convert it to PNG")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def frames(self) -> Iterator[Frame]:
        first: tuple[int, int] | None = None
        for index, path in enumerate(self.files):
            rgb = self._read(path)
            if first is None:
                first = rgb.shape[:2]
            elif rgb.shape[:2] != first:
                raise FrameError(
                    f"{path}: {rgb.shape[0]}x{rgb.shape[1]} pixels, but the frames before it are "
                    f"{first[0]}x{first[1]}: the frames of one drive share one size; move the others to a folder "
                    "of their own"
                )
            yield Frame(index, path.stem, _resize_rgb(rgb, self.size))


# ------------------------------------------------------------------------------------------- dataset sequences
def sequences(dataset: Any) -> dict[str, list[int]]:
    """A dataset's sequences: the indices of each group's images ordered by frame number (CamVid's groups are its
    drives, and its file names carry the frame number)."""
    out: dict[str, list[int]] = {}
    for index in range(len(dataset)):
        out.setdefault(dataset.group_of(index), []).append(index)
    return {
        group: sorted(indices, key=lambda i: (frame_number(dataset.name_of(i)), dataset.name_of(i)))
        for group, indices in sorted(out.items())
    }


class DatasetSequence(FrameSource):
    """One sequence of a dataset, with its labels: ``dataset.load(i)`` gives the raw image and training ids."""

    def __init__(
        self, dataset: Any, group: str, *, size: Sequence[int], fps: float = 30.0, max_frames: int = MAX_FRAMES
    ) -> None:
        found = sequences(dataset)
        if group not in found:
            raise FrameError(f"sequence {group!r} is not in the dataset; it has {', '.join(found) or 'none'}")
        super().__init__(group, size, fps)
        indices = found[group]
        if len(indices) > max_frames:
            self.notices.append(f"{group}: {len(indices)} frames; only the first {max_frames} are read")
        self.dataset, self.indices = dataset, indices[:max_frames]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def has_labels(self) -> bool:
        return True

    def frames(self) -> Iterator[Frame]:
        for index, i in enumerate(self.indices):
            image, mask = self.dataset.load(i)
            rgb = image.permute(1, 2, 0).numpy()
            labels = _resize_labels(mask.numpy().astype(np.int64), self.size)
            yield Frame(index, self.dataset.name_of(i), _resize_rgb(rgb, self.size), labels)


class FrameDataset(SegmentationDataset):
    """Labelled frames as a dataset, so that an evaluation cache can be built on exactly the frames a drive ran."""

    def __init__(self, frames: Sequence[Frame], info: DatasetInfo) -> None:
        super().__init__()
        if any(f.labels is None for f in frames):
            raise FrameError("every frame needs labels to be evaluated; this drive has frames without them")
        self.info, self.frames = info, list(frames)

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> tuple[Any, Any]:
        from torchvision import tv_tensors

        frame = self.frames[index]
        image = torch.from_numpy(np.ascontiguousarray(frame.rgb)).permute(2, 0, 1).contiguous()
        return tv_tensors.Image(image), tv_tensors.Mask(torch.from_numpy(frame.labels.astype(np.int64)))

    def name_of(self, index: int) -> str:
        return self.frames[index].name


# --------------------------------------------------------------------------------------------- a generated drive
class GeneratedDrive(FrameSource):
    """A drive for studies without a dataset: shots of the synthetic dataset's scenes, from easy to hard and back,
    each a slow pan across one scene, so frames within a shot are alike and the difficulty changes between shots."""

    def __init__(self, *, size: Sequence[int], shots: int = 6, frames_per_shot: int = 8, seed: int = 0) -> None:
        if shots < 1 or frames_per_shot < 1:
            raise FrameError("a generated drive needs at least one shot of at least one frame")
        super().__init__("generated drive", size, 10.0)
        self.shots, self.frames_per_shot, self.seed = int(shots), int(frames_per_shot), int(seed)

    def __len__(self) -> int:
        return self.shots * self.frames_per_shot

    @property
    def has_labels(self) -> bool:
        return True

    def _scenes(self) -> tuple[Any, list[int]]:
        from .synthetic import SyntheticSegmentation

        h, w = self.size
        # a scene a quarter larger than the frame, so the camera can pan across it
        data = SyntheticSegmentation(split="val", length=self.shots, size=(h + h // 4, w + w // 4), seed=self.seed)
        by_difficulty = sorted(range(self.shots), key=data.difficulty)
        # easy -> hard -> easy: the easy half forwards, the hard end in the middle
        order = by_difficulty[0::2] + by_difficulty[1::2][::-1]
        return data, order

    def frames(self) -> Iterator[Frame]:
        data, order = self._scenes()
        h, w = self.size
        for shot, scene in enumerate(order):
            image, mask = data.load(scene)
            rgb, labels = image.permute(1, 2, 0).numpy(), mask.numpy()
            span_y, span_x = rgb.shape[0] - h, rgb.shape[1] - w
            for k in range(self.frames_per_shot):
                t = k / max(1, self.frames_per_shot - 1)
                y, x = round(t * span_y / 2), round(t * span_x)
                yield Frame(
                    shot * self.frames_per_shot + k,
                    f"shot {shot + 1} frame {k + 1}",
                    np.ascontiguousarray(rgb[y : y + h, x : x + w]),
                    np.ascontiguousarray(labels[y : y + h, x : x + w]),
                )


def open_frames(path: str | Path, *, size: Sequence[int], max_frames: int = MAX_FRAMES) -> FrameSource:
    """A video file or a folder of frames, by what ``path`` is."""
    path = Path(path)
    if path.is_dir():
        return FrameFolder(path, size=size, max_frames=max_frames)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise FrameError(f"{path}: one image, not a drive; give a video file or the folder holding the frames")
    if not path.exists():
        raise FrameError(f"{path}: no such video file or folder of frames")
    return VideoFile(path, size=size, max_frames=max_frames)
