"""Checkpoints that are never half-written and never unpickle arbitrary objects.

:func:`save` writes through a temporary file in the same folder, fsyncs it and renames it over the target, so a run
killed at any moment leaves either the previous checkpoint or the new one. :func:`load` uses
``torch.load(weights_only=True)``: a checkpoint holds only tensors and plain Python values (dicts, lists, numbers,
strings), so a file from elsewhere cannot run code when it is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import TrainingError
from .io import atomic_open, input_file

__all__ = ["save", "load", "load_weights"]


def save(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (tensors and plain values only) to ``path``."""
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    return Path(path)


def load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save` (or any weights-only torch file)."""
    path = input_file(path, TrainingError, "no such checkpoint file")
    if path.stat().st_size == 0:
        raise TrainingError(
            f"{path}: an empty (0-byte) file, not a checkpoint; it was probably cut short while being "
            "written or copied: copy or train it again"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        lines = str(exc).strip().splitlines()  # some of these errors carry no message at all
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        raise TrainingError(
            f"{path}: not a readable weights-only checkpoint ({detail}); "
            "it may be truncated, or hold pickled objects other than tensors and plain values"
        ) from None
    if not isinstance(payload, dict):
        raise TrainingError(f"{path}: expected a dict of tensors, found {type(payload).__name__}")
    return payload


def load_weights(path: str | os.PathLike, key: str = "model") -> dict[str, torch.Tensor]:
    """The state dict stored under ``key`` in a checkpoint, or the file itself when it is a bare state dict."""
    payload = load(path)
    if key in payload and isinstance(payload[key], dict):
        return payload[key]
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return payload
    raise TrainingError(f"{path}: holds neither a '{key}' state dict nor bare weights (keys: {sorted(payload)[:8]})")
