"""Trained-weight files: a plain model (``model.pt``) and a multi-exit network with its exit heads
(``multi_exit.pt``), each with the metadata needed to rebuild it exactly.

A multi-exit file stores where the model comes from (``model_source``: a registered name, an import path or a file,
see :class:`~mess_core.models.ModelSource`), the conversion options (``convert``), the number of exits and the input
size exits were placed for; loading re-runs :func:`~mess_core.convert` with those, which places the exits at the same
nodes, then loads the backbone and every head. Files are read with ``torch.load(weights_only=True)`` (see
:mod:`mess_core.checkpoint`), and a recorded source that runs Python (an import path, a model file) is built only
when this machine recorded it or the caller passes ``consent=True`` (see :mod:`mess_core.models.trust`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint
from ..conversion.network import MultiExitNet
from ..conversion.pipeline import convert
from ..errors import TrainingError
from ..models.source import ModelSource, ModelSourceError
from ..models.trust import SIGNATURE_KEY, require_consent

__all__ = [
    "save_model",
    "save_multi_exit",
    "load_model",
    "load_multi_exit",
    "load_exit_heads",
    "model_from_meta",
    "MODEL_FORMAT",
    "MULTI_EXIT_FORMAT",
]

MODEL_FORMAT = "mess-model/1"
MULTI_EXIT_FORMAT = "mess-multi-exit/1"


def _exit_meta(net: MultiExitNet) -> dict[str, Any]:
    return {
        "num_exits": net.num_exits,
        "num_classes": net.num_classes,
        "profile_size": list(net.example_shape[1:]),
        "exit_modules": [e.module for e in net.exits],
        "exit_space": {str(i): list(net.heads[str(i)].keys()) for i in range(1, net.num_exits)},
    }


def save_model(
    path: str | os.PathLike, model: nn.Module, meta: dict[str, Any], net: MultiExitNet | None = None
) -> Path:
    """Write a plain model's weights with ``meta`` (at least ``model``: its registered name, ``num_classes``). With
    ``net`` (stage 1), its exit heads are kept beside the model, so stage 2 may start from them."""
    payload = {"format": MODEL_FORMAT, "model": model.state_dict(), "meta": dict(meta)}
    if net is not None:
        payload["heads"] = net.heads.state_dict()
        payload["meta"]["exits"] = _exit_meta(net)
    return checkpoint.save(path, payload)


def load_exit_heads(path: str | os.PathLike, net: MultiExitNet) -> list[tuple[int, str]]:
    """Load the exit heads a stage-1 ``model.pt`` kept into the heads of ``net`` with the same configuration at the
    same exit; returns which (exit, configuration) were loaded."""
    path = Path(path)
    payload = checkpoint.load(path)
    held = payload.get("meta", {}).get("exits")
    if "heads" not in payload or not held:
        raise TrainingError(f"{path}: keeps no exit heads; only stage 1 (pretrain) writes them into its model.pt")
    placed = [e.module for e in net.exits]
    if held["exit_modules"] != placed:
        raise TrainingError(
            f"{path}: its exits sit at {held['exit_modules']}, this network's at {placed}; train "
            "stage 2 with the same number of exits and input size as stage 1"
        )
    loaded = []
    for index, specs in held["exit_space"].items():
        for spec in specs:
            if spec not in net.heads[index]:
                continue
            prefix = f"{index}.{spec}."
            weights = {k[len(prefix) :]: v for k, v in payload["heads"].items() if k.startswith(prefix)}
            _load_into(net.heads[index][spec], weights, path)
            loaded.append((int(index), spec))
    return loaded


def save_multi_exit(path: str | os.PathLike, net: MultiExitNet, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Write a multi-exit network: the model's weights, every attached head, and how to rebuild it."""
    meta = {**meta, **_exit_meta(net)}
    payload = {"format": MULTI_EXIT_FORMAT, "model": model.state_dict(), "heads": net.heads.state_dict(), "meta": meta}
    return checkpoint.save(path, payload)


def _load_into(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise TrainingError(
            f"{path}: its weights do not fit a {type(model).__name__} ({' '.join(lines[1:3])[:300]}); was it trained "
            "for another model or number of classes?"
        ) from None


def model_from_meta(
    meta: dict[str, Any], path: str | os.PathLike, source: ModelSource | None = None, *, consent: bool = False
) -> nn.Module:
    """An untrained model as the metadata of ``path`` names it (``model_source``, or ``model``: a registered name in
    files written before sources were recorded); ``source`` overrides where it comes from (a study's shipped copy,
    checked by the caller). A recorded source that runs Python needs this machine's signature or ``consent``."""
    if "num_classes" not in meta or (source is None and "model" not in meta and "model_source" not in meta):
        raise TrainingError(f"{path}: has no model name and class count in its metadata; pass the model to load into")
    try:
        if source is None:
            source = (
                ModelSource.from_dict(meta["model_source"], where=f"{path}: model_source")
                if "model_source" in meta
                else ModelSource.parse(meta["model"])
            )
            require_consent(source, signature=meta.get(SIGNATURE_KEY), consent=consent, where=f"{path}: model_source")
        return source.build(meta["num_classes"])
    except ModelSourceError as exc:
        raise ModelSourceError(f"{path}: cannot rebuild the model it was trained from: {exc}") from None


def load_model(
    path: str | os.PathLike, model: nn.Module | None = None, *, consent: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """A model from a ``model.pt`` (or any checkpoint with ``model`` weights): built from the source in its metadata
    (see :func:`model_from_meta` for ``consent``), or ``model`` when given."""
    path = Path(path)
    payload = checkpoint.load(path)
    meta = dict(payload.get("meta", {}))
    if model is None:
        model = model_from_meta(meta, path, consent=consent)
    _load_into(model, checkpoint.load_weights(path), path)
    return model, meta


def load_multi_exit(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    source: ModelSource | None = None,
    consent: bool = False,
    **convert_kwargs: Any,
) -> tuple[MultiExitNet, dict[str, Any]]:
    """Rebuild a trained multi-exit network from ``multi_exit.pt``; returns it in eval mode with its metadata.

    The model is rebuilt from the source recorded in the file (a registered name, an import path or a file) and
    converted with the recorded ``convert`` options; ``source`` overrides where it comes from, ``model`` gives the
    (untrained) model itself, ``convert_kwargs`` override recorded options. A recorded source that runs Python needs
    this machine's signature or ``consent`` (see :mod:`mess_core.models.trust`)."""
    net, meta, _ = load_multi_exit_and_model(path, model, source=source, consent=consent, **convert_kwargs)
    return net, meta


def load_multi_exit_and_model(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    source: ModelSource | None = None,
    consent: bool = False,
    **convert_kwargs: Any,
) -> tuple[MultiExitNet, dict[str, Any], nn.Module]:
    """:func:`load_multi_exit`, plus the original model it was converted from (sharing its trained weights): what a
    benchmark compares the deployed network against."""
    path = Path(path)
    payload = checkpoint.load(path)
    if payload.get("format") != MULTI_EXIT_FORMAT:
        raise TrainingError(f"{path}: not a multi-exit file (format {payload.get('format')!r}); stage 2 writes them")
    meta = dict(payload["meta"])
    if model is None:
        model = model_from_meta(meta, path, source, consent=consent)
    _load_into(model, payload["model"], path)
    h, w = meta["profile_size"]
    options = {**meta.get("convert", {}), **convert_kwargs}
    net = convert(model.eval(), torch.zeros(1, 3, h, w), num_exits=meta["num_exits"], exit_head=None, **options)
    placed = [e.module for e in net.exits]
    if placed != meta["exit_modules"]:
        raise TrainingError(
            f"{path}: exits were trained at {meta['exit_modules']} but converting now places them at {placed}; "
            "the model definition or conversion arguments changed"
        )
    for index, specs in meta["exit_space"].items():
        net.attach(specs, exits=[int(index)])
    try:
        net.heads.load_state_dict(payload["heads"])
    except RuntimeError as exc:
        raise TrainingError(f"{path}: exit head weights do not fit: {str(exc).splitlines()[0]}") from None
    return net.eval(), meta, model.eval()
