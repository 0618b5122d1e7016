"""Checks of a dataset's folder layout that turn "not found" into a message saying what is there instead.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "train").mkdir()
    >>> require_dir(root / "val", what="CamVid split folder")
    Traceback (most recent call last):
    ...
    mess_core.errors.DataError: CamVid split folder .../val does not exist; .../... contains: train/
    >>> check_split("dev", ("train", "val"), dataset="CamVid")
    Traceback (most recent call last):
    ...
    mess_core.errors.DataError: CamVid has no split 'dev'; use one of: train, val
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import DataError

__all__ = ["require_dir", "describe_folder", "check_split", "some_of"]


def require_dir(path: str | os.PathLike, *, what: str) -> Path:
    """``path`` as a Path if it is a folder, else a DataError that names it and lists its parent's contents."""
    path = Path(path)
    if path.is_dir():
        return path
    problem = "is a file, not a folder" if path.exists() else "does not exist"
    parent = path.parent
    where = f"{parent} contains: {describe_folder(parent)}" if parent.is_dir() else f"{parent} does not exist either"
    raise DataError(f"{what} {path} {problem}; {where}")


def describe_folder(path: str | os.PathLike, limit: int = 12) -> str:
    """The first ``limit`` entries of a folder, folders marked with a slash, for error messages."""
    entries = sorted(Path(path).iterdir(), key=lambda p: p.name)
    if not entries:
        return "nothing (it is empty)"
    names = [entry.name + ("/" if entry.is_dir() else "") for entry in entries]
    return some_of(names, limit=limit)


def check_split(split: str, splits: Sequence[str], *, dataset: str) -> str:
    if split not in splits:
        raise DataError(f"{dataset} has no split {split!r}; use one of: {', '.join(splits)}")
    return split


def some_of(items: Iterable[object], *, limit: int = 5) -> str:
    """``a, b, c`` or ``a, b, c ... (17 in all)`` for listing offending files without flooding the terminal."""
    items = [str(item) for item in items]
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} ... ({len(items)} in all)"
