"""Packing a study's files: float16 weights and which heads ship, tables as JSON and back, hashes and versions for
the manifest, and replacing a study folder in one rename.

    >>> import pandas as pd
    >>> rows = frame_json(pd.DataFrame({"row": ["a"], "miou": [float("nan")], "instance": [None]}))
    >>> rows
    [{'row': 'a', 'miou': None, 'instance': None}]
    >>> frame_from_json(rows, "x.json")["miou"].isna().item()
    True
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any, Sequence

import numpy
import pandas as pd
import torch
import torchvision

from .. import checkpoint
from ..evaluate.instance import Instance
from ..io import atomic_write_text

__all__ = [
    "sha256",
    "versions",
    "to_half",
    "ship_weights",
    "used_heads",
    "frame_json",
    "frame_from_json",
    "write_json",
    "file_entries",
    "replace_folder",
]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """The versions of what computed the study's figures."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
    }


def to_half(src: Path, dst: Path) -> None:
    """Rewrite a multi-exit file with float16 weights: half the size, and loading copies them into float32."""
    payload = checkpoint.load(src)
    for key in ("model", "heads"):
        payload[key] = {k: v.half() if v.is_floating_point() else v for k, v in payload[key].items()}
    payload["meta"] = {**payload["meta"], "stored_dtype": "float16"}
    checkpoint.save(dst, payload)


def ship_weights(src: Path, dst: Path, heavy: set[str], used: set[tuple[int, str]]) -> dict[str, list[str]]:
    """Copy the float16 weights, leaving out the heads of ``heavy`` configurations at the exits where no stored
    instance uses them (the cache keeps their figures; the size budget keeps the weights out). Returns what was
    left out, per exit."""
    payload = checkpoint.load(src)
    dropped: dict[str, list[str]] = {}
    space = payload["meta"]["exit_space"]
    for index, configs in space.items():
        gone = [c for c in configs if c in heavy and (int(index), c) not in used]
        if gone:
            dropped[index] = gone
            space[index] = [c for c in configs if c not in gone]
    prefixes = tuple(f"{i}.{c}." for i, cs in dropped.items() for c in cs)
    payload["heads"] = {k: v for k, v in payload["heads"].items() if not k.startswith(prefixes)}
    checkpoint.save(dst, payload)
    return dropped


def used_heads(frames: list[pd.DataFrame]) -> set[tuple[int, str]]:
    """(exit, configuration) of every head an instance in ``frames`` keeps."""
    return {
        (e.exit, e.config) for frame in frames for inst in frame["instance"] if inst is not None for e in inst.exits
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Instance):
        return value.to_dict()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not numpy.isfinite(value):
        return None
    return value


def frame_json(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A table as JSON records: instances as their dicts, enums (row ids) as their values, NaN as null."""
    return [{k: _plain(v) for k, v in record.items()} for record in df.to_dict(orient="records")]


def frame_from_json(rows: list[dict[str, Any]], where: str, columns: Sequence[str] = ()) -> pd.DataFrame:
    """The table :func:`frame_json` wrote (instances back as :class:`~mess_core.evaluate.instance.Instance`, null as
    NaN); ``columns`` must all be there (a ValueError names the file and the missing ones)."""
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{where}: expected a list of rows (objects), got {type(rows).__name__}")
    df = pd.DataFrame(rows)
    missing = [c for c in columns if c not in df.columns]
    if rows and missing:
        raise ValueError(f"{where}: its rows lack the column(s) {', '.join(missing)}")
    if "instance" in df:
        df["instance"] = [None if d is None else Instance.from_dict(d, where=where) for d in df["instance"]]
    return df.fillna(value={c: numpy.nan for c in df.columns if c not in ("instance", "id")})


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def file_entries(folder: Path) -> dict[str, dict[str, Any]]:
    """SHA-256 and size of every file in ``folder``, by name (what the manifest lists)."""
    return {p.name: {"sha256": sha256(p), "bytes": p.stat().st_size} for p in sorted(folder.iterdir())}


def replace_folder(built: Path, out: Path) -> None:
    """Put the complete folder ``built`` at ``out``, moving any earlier one aside first and deleting it after: ``out``
    is either the old study or the new one, never half of each."""
    if not out.exists():
        built.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent)) / out.name  # a name no one else has
    out.rename(old)
    built.rename(out)
    shutil.rmtree(old.parent, ignore_errors=True)
