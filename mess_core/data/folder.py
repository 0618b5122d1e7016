"""Your own data: a folder of images and single-channel PNG masks, described by a small ``dataset.yaml``.

Layout (``split`` optional: without it, ``images/`` and ``masks/`` sit directly in ``root``)::

    root/dataset.yaml            classes: [background, road, car]   # index = label value in the masks
                                 ignore_index: 255                  # optional, default 255
                                 palette: [[0,0,0], [128,64,128], [0,0,142]]   # optional
                                 name: streets                      # optional, default: the folder name
                                 group_pattern: '^([^_]+)_'         # optional: an image's group (scene) is the
                                                                    # regex's first group in its stem
                                 group_file: groups.csv             # optional instead: "stem,group" lines
    root/{split}/images/X.jpg    (.jpg .jpeg .png .bmp .tif .tiff)
    root/{split}/masks/X.png     same stem as its image, one class index per pixel

Example:
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (root / "dataset.yaml").write_text("classes: [background, thing]\\n")
    >>> for sub in ("images", "masks"):
    ...     (root / sub).mkdir()
    >>> Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "a.jpg")
    >>> Image.fromarray(np.eye(8, dtype=np.uint8)).save(root / "masks" / "a.png")
    >>> data = FolderDataset(root)
    >>> len(data), data.info.classes, data.info.ignore_index, data.name_of(0), data.group_of(0)
    (1, ('background', 'thing'), 255, 'a.jpg', 'all')

An image's group is the scene it shares with others (a drive, a site, a patient): a study trains and tunes on
different groups. Without ``group_pattern`` or ``group_file`` every image of a split is in one group, the split's.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..io import read_yaml
from .base import Transform
from .files import IMAGE_SUFFIXES, FilePairDataset
from .info import DatasetInfo, distinct_palette
from .layout import require_dir, some_of

__all__ = ["FolderDataset", "read_dataset_yaml"]

_YAML_FIELDS = ("name", "classes", "ignore_index", "palette", "group_pattern", "group_file")


class FolderDataset(FilePairDataset):
    """Images and masks paired by file stem; classes from ``root/dataset.yaml``."""

    def __init__(
        self, root: str | os.PathLike, *, split: str | None = None, transform: Transform | None = None, seed: int = 0
    ) -> None:
        super().__init__(transform=transform, seed=seed)
        self.root = require_dir(root, what="dataset folder")
        self.split = split
        spec_path = self.root / "dataset.yaml"
        spec = _read_spec(spec_path)
        self.info = _info_of(spec, spec_path, default_name=self.root.name)
        base = self.root if split is None else require_dir(self.root / split, what=f"split {split!r} folder")
        image_dir = require_dir(base / "images", what="image folder")
        mask_dir = require_dir(base / "masks", what="mask folder")
        images = _by_stem(image_dir, IMAGE_SUFFIXES, kind="image")
        masks = _by_stem(mask_dir, (".png",), kind="mask")
        if not images and not masks:
            raise DataError(
                f"{image_dir} and {mask_dir} are empty; put images ({' '.join(IMAGE_SUFFIXES)}) in the "
                "first and a .png mask of the same stem for each in the second"
            )
        problems = []
        if unmatched := [images[stem] for stem in sorted(images.keys() - masks.keys())]:
            problems.append(f"{len(unmatched)} images have no mask {mask_dir}/<stem>.png: {some_of(unmatched)}")
        if unmatched := [masks[stem] for stem in sorted(masks.keys() - images.keys())]:
            problems.append(
                f"{len(unmatched)} masks have no image of the same stem in {image_dir} "
                f"({' '.join(IMAGE_SUFFIXES)}): {some_of(unmatched)}"
            )
        if problems:
            raise DataError("; ".join(problems) + "; add the missing files or remove the unpaired ones")
        stems = sorted(images)
        self.images = [images[stem] for stem in stems]
        self.labels = [masks[stem] for stem in stems]
        self._groups = _groups_of(spec, spec_path, stems, default=str(split or "all"))

    def group_of(self, index: int) -> str:
        return self._groups[index]


_EXAMPLE = "e.g. 'classes: [background, road, car]' and 'ignore_index: 255' on two lines"


def _read_spec(path: Path) -> dict[str, Any]:
    spec = read_yaml(path, DataError, f"not found; a folder dataset describes its classes there, {_EXAMPLE}")
    if not isinstance(spec, dict):
        raise DataError(f"{path}: expected a mapping with fields {', '.join(_YAML_FIELDS)}, {_EXAMPLE}")
    if unknown := sorted(str(key) for key in spec.keys() - set(_YAML_FIELDS)):
        raise DataError(f"{path}: unknown field(s) {', '.join(unknown)}; the fields are {', '.join(_YAML_FIELDS)}")
    return spec


def read_dataset_yaml(path: Path, *, default_name: str) -> DatasetInfo:
    """Parse and check ``dataset.yaml``; every problem names the file and the field."""
    return _info_of(_read_spec(path), path, default_name=default_name)


def _info_of(spec: dict[str, Any], path: Path, *, default_name: str) -> DatasetInfo:

    classes = spec.get("classes")
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, (str, int)) and not isinstance(c, bool) and str(c).strip() for c in classes)
    ):
        raise DataError(
            f"{path}: field 'classes' must be a non-empty list of class names (index = label value), got {classes!r}"
        )
    classes = [str(c) for c in classes]
    if duplicates := sorted({c for c in classes if classes.count(c) > 1}):
        raise DataError(f"{path}: field 'classes' names {', '.join(duplicates)} more than once")

    ignore_index = spec.get("ignore_index", 255)
    if not _is_int(ignore_index) or ignore_index < len(classes):
        raise DataError(
            f"{path}: field 'ignore_index' must be a whole number that is not a class index "
            f"(>= {len(classes)}), e.g. 255; got {ignore_index!r}"
        )

    palette: Any = spec.get("palette")
    if palette is None:
        palette = distinct_palette(len(classes))
    elif not (
        isinstance(palette, list)
        and len(palette) == len(classes)
        and all(
            isinstance(rgb, list) and len(rgb) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in rgb)
            for rgb in palette
        )
    ):
        raise DataError(
            f"{path}: field 'palette' must list one [r, g, b] (0..255) per class, {len(classes)} in "
            f"all; got {palette!r}"
        )

    name = spec.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise DataError(f"{path}: field 'name' must be a non-empty string, got {name!r}")
    return DatasetInfo(
        name=name, classes=tuple(classes), ignore_index=ignore_index, palette=tuple(tuple(rgb) for rgb in palette)
    )


def _groups_of(spec: dict[str, Any], path: Path, stems: list[str], *, default: str) -> list[str]:
    """Each stem's group from ``group_pattern`` (a regex searched in the stem; its first group, or the whole match)
    or ``group_file`` (CSV lines ``stem,group``, relative to ``path``'s folder); ``default`` without either."""
    pattern, listing = spec.get("group_pattern"), spec.get("group_file")
    if pattern is not None and listing is not None:
        raise DataError(f"{path}: give group_pattern or group_file, not both")
    if pattern is not None:
        try:
            regex = re.compile(str(pattern))
        except re.error as error:
            raise DataError(
                f"{path}: field 'group_pattern' {pattern!r} is not a regular expression ({error})"
            ) from None
        groups = []
        for stem in stems:
            match = regex.search(stem)
            if match is None:
                raise DataError(
                    f"{path}: group_pattern {pattern!r} does not match image {stem!r}; every image needs "
                    "a group: widen the pattern or rename the file"
                )
            groups.append(match.group(1) if regex.groups else match.group(0))
        return groups
    if listing is not None:
        table = path.parent / str(listing)
        if not table.is_file():
            raise DataError(f"{path}: group_file {table} not found; write one 'stem,group' line per image there")
        try:
            rows = [row for row in csv.reader(table.read_text(encoding="utf-8").splitlines()) if row]
        except (UnicodeDecodeError, csv.Error) as error:
            raise DataError(f"{table}: not a UTF-8 CSV of 'stem,group' lines ({error})") from None
        if bad := [",".join(row) for row in rows if len(row) != 2 or not row[1].strip()]:
            raise DataError(f"{table}: lines must be 'stem,group', found {some_of(bad)}")
        mapping = {row[0].strip(): row[1].strip() for row in rows}
        if missing := [stem for stem in stems if stem not in mapping]:
            raise DataError(
                f"{table}: no group for {len(missing)} image(s): {some_of(missing)}; add a 'stem,group' line for each"
            )
        return [mapping[stem] for stem in stems]
    return [default] * len(stems)


def _by_stem(folder: Path, suffixes: tuple[str, ...], *, kind: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    # Hidden files (.DS_Store, editor swap files) are never data.
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise DataError(f"{found[path.stem]} and {path} are two {kind}s with the same stem; keep one")
        found[path.stem] = path
    return found


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
