"""Images into the app, read without Streamlit: an uploaded file (untrusted: any format OpenCV or Pillow reads,
any depth or channel count, never more pixels than :data:`MAX_PIXELS`), a sample of the study's dataset, or a
synthetic one; and an image as the network's input tensor.

Example:
    >>> import numpy as np, cv2
    >>> ok, png = cv2.imencode(".png", np.zeros((40, 60), np.uint16))
    >>> image = decode_image(png.tobytes(), name="depth.png")
    >>> image.rgb.shape, image.rgb.dtype, image.notices
    ((40, 60, 3), dtype('uint8'), ['depth.png: 16-bit image, scaled to 8 bits', 'depth.png: grayscale, shown as RGB'])
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch

from mess_core.data.transforms import frame_tensor
from mess_core.errors import MessError

MIN_SIDE = 32  # the reference backbones downsample 32x: smaller images have no feature map left
MAX_SIDE = 1024  # larger uploads are downscaled so every exit stays interactive on a CPU
# larger uploads are refused before decoding: 100 megapixels of RGBA is 400 MB, and a small file (a PNG of one
# colour) can declare far more, which would exhaust memory before the downscale to MAX_SIDE
MAX_PIXELS = 100_000_000


class ImageError(MessError):
    """An uploaded file that cannot be used as an image; the message names it and says what would work."""


@dataclass
class LoadedImage:
    rgb: np.ndarray  # (H, W, 3) uint8
    name: str
    notices: list[str] = field(default_factory=list)  # what was done to make it usable, for the page to say


def _to_uint8(array: np.ndarray, name: str, notices: list[str]) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        notices.append(f"{name}: 16-bit image, scaled to 8 bits")
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = float(finite.max()) if finite.size else 0.0
        scale = 255.0 if top <= 1.0 else 255.0 / top
        notices.append(f"{name}: floating-point image, scaled to 8 bits")
        return np.clip(finite * scale, 0, 255).round().astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        top = max(int(array.max()), 1)
        notices.append(f"{name}: {array.dtype} image, scaled to 8 bits")
        return (array.astype(np.float64) * (255.0 / top)).round().astype(np.uint8)
    raise ImageError(f"{name}: pixels of type {array.dtype} cannot be shown; upload an 8- or 16-bit PNG or a JPEG")


def _decode_pillow(data: bytes, name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)  # animations: the first frame
            if img.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                img = img.convert("RGBA" if "A" in img.mode or "transparency" in img.info else "RGB")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError(
            f"{name}: not an image that OpenCV or Pillow can read ({type(exc).__name__}); upload a PNG, "
            "JPEG, BMP, TIFF or WebP file"
        ) from None


def _too_large(name: str, size: str) -> ImageError:
    return ImageError(
        f"{name}: {size} is more than this app decodes ({MAX_PIXELS // 1_000_000} megapixels at most); "
        f"downscale the image (to at most {MAX_SIDE} pixels a side, as it would be shown) and upload it "
        "again"
    )


def _check_pixel_count(data: bytes, name: str) -> None:
    """Refuse an image whose header declares more than :data:`MAX_PIXELS`, before any pixel is decoded: Pillow's
    ``Image.open`` reads only the header. A file Pillow cannot identify is left to OpenCV, whose own limit
    (``OPENCV_IO_MAX_IMAGE_PIXELS``, 2**30 by default) makes it raise ``cv2.error``, which :func:`decode_image`
    reports."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is the one that counts
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Image.DecompressionBombError as exc:  # Pillow refuses more than twice its own limit in open() itself
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _too_large(name, f"an image of {int(found[1]):,} pixels" if found else "this image") from None
    except Exception:  # noqa: BLE001 -- not identified by Pillow (or a damaged header): OpenCV or the Pillow decode says why
        return
    if width * height > MAX_PIXELS:
        raise _too_large(name, f"{height}x{width} pixels ({width * height / 1e6:,.0f} megapixels)")


def decode_image(data: bytes, *, name: str = "upload", max_side: int = MAX_SIDE) -> LoadedImage:
    """Read an uploaded file into 8-bit RGB, saying what was converted: 16-bit or float pixels are scaled, grayscale
    is repeated over three channels, an alpha channel is composited over white, an image larger than ``max_side``
    on a side is downscaled. Anything else raises :class:`ImageError` naming the file."""
    if not data:
        raise ImageError(f"{name}: the file is empty")
    notices: list[str] = []
    _check_pixel_count(data, name)
    try:
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV refuses some damaged or oversized files with an error, not with None
        detail = " ".join(str(exc).split())[-160:]
        raise ImageError(
            f"{name}: OpenCV cannot decode this file ({detail}); upload a PNG, JPEG, BMP, TIFF or WebP "
            f"file of at most {MAX_PIXELS // 1_000_000} megapixels"
        ) from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image; downscale it and upload it again") from None
    if array is not None:  # OpenCV gives BGR(A)
        if array.ndim == 3 and array.shape[2] == 3:
            array = array[:, :, ::-1]
        elif array.ndim == 3 and array.shape[2] == 4:
            array = array[:, :, [2, 1, 0, 3]]
    else:
        array = _decode_pillow(data, name)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (2, 3, 4)):
        raise ImageError(f"{name}: an image of shape {array.shape} is neither grayscale, RGB nor RGBA")
    array = _to_uint8(np.ascontiguousarray(array), name, notices)
    alpha = None
    if array.ndim == 3 and array.shape[2] in (2, 4):
        alpha, array = array[:, :, -1], array[:, :, :-1]
        if array.shape[2] == 1:
            array = array[:, :, 0]
    if array.ndim == 2:
        notices.append(f"{name}: grayscale, shown as RGB")
        array = np.repeat(array[:, :, None], 3, axis=2)
    if alpha is not None:
        if alpha.min() < 255:
            weight = alpha[:, :, None].astype(np.float32) / 255.0
            array = (array * weight + 255.0 * (1.0 - weight)).round().astype(np.uint8)
            notices.append(f"{name}: transparent pixels composited over white")
        else:
            notices.append(f"{name}: alpha channel dropped (fully opaque)")
    h, w = array.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{name}: {h}x{w} pixels is too small; the network needs at least {MIN_SIDE} on each side")
    if max(h, w) > max_side:
        scale = max_side / max(h, w)
        size = (max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale)))
        array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
        notices.append(f"{name}: {h}x{w} is large; downscaled to {size[1]}x{size[0]} to stay interactive")
    return LoadedImage(np.ascontiguousarray(array), name, notices)


def to_input(rgb: np.ndarray, size: Sequence[int] | None = None) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 normalised like the training data; resized to ``size`` (H, W) first
    when given."""
    if size is not None and tuple(rgb.shape[:2]) != tuple(size):
        rgb = cv2.resize(rgb, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA)
    return frame_tensor(rgb)


@dataclass(frozen=True)
class DatasetSource:
    """Where a study's images come from: the dataset it was evaluated on, on this machine."""

    name: str  # a registered dataset
    root: str | None  # its folder (absolute), None where the dataset needs none
    options: tuple[tuple[str, Any], ...]  # build_dataset's keyword options, sorted and hashable (lists as tuples)
    split: str
    groups: tuple[str, ...] = ()  # the groups (scenes) of the split its images were kept to; () = all

    @property
    def label(self) -> str:
        """``camvid train [0006R0]``: the images as a caption names them."""
        return f"{self.name} {self.split}" + (f" [{','.join(self.groups)}]" if self.groups else "")

    @property
    def on_disk(self) -> bool:
        """Whether its images can be read here: generated datasets always, others when their folder exists."""
        return self.name == "synthetic" or (self.root is not None and Path(self.root).is_dir())


def dataset_source(config: Mapping[str, Any], meta: Mapping[str, Any], base: Path) -> DatasetSource:
    """The dataset a study's images come from: name and split from its cache's ``meta``, folder and options from its
    build ``config`` (``manifest["config"]``); a relative folder is taken from ``base`` (the repository)."""
    fix = "the study's manifest (its 'config') is damaged or was edited; rebuild the study"
    root, given = config.get("data_root"), config.get("data_options") or {}
    if root is not None and not isinstance(root, str):
        raise MessError(f"config field 'data_root' is {root!r}, expected a folder path; {fix}")
    if not isinstance(given, Mapping):
        raise MessError(f"config field 'data_options' is {given!r}, expected an object of dataset options; {fix}")
    if root is not None and not Path(root).is_absolute():
        root = str(Path(base) / root)
    options = tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in given.items()))
    groups = meta.get("groups") or ()
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, str) for g in groups):
        raise MessError(f"cache field 'groups' is {groups!r}, expected a list of group names; rebuild the cache")
    return DatasetSource(meta.get("dataset", "synthetic"), root, options, meta.get("split", "val"), tuple(groups))


def dataset_sample(dataset: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of a dataset as (H, W, 3) uint8 RGB, with its (H, W) label map (255: ignored)."""
    image, label = dataset.load(index)
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy()), label.numpy()


def synthetic_sample(size: Sequence[int], seed: int, num_classes: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A generated scene of ``size`` (H, W) from ``seed``, with its labels only when the network has the synthetic
    dataset's ``num_classes`` (its classes mean nothing to another dataset's network)."""
    from mess_core.data import build_dataset

    dataset = build_dataset("synthetic", split="test", seed=int(seed), length=1, size=tuple(size))
    rgb, label = dataset_sample(dataset, 0)
    return rgb, (label if num_classes == dataset.info.num_classes else None)
