"""Reading a study folder (``precomputed/<name>/``, or a bare run folder with a ``multi_exit.pt`` and an evaluation
cache): :func:`open_study` gives a :class:`Study`, which reads each file when first used, checks the files against
the manifest (:meth:`Study.verify`) and the cache against the weights (:meth:`Study.check_weights`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import checkpoint
from ..conversion.workload import profile_report
from ..deploy.artifacts import load_multi_exit, load_multi_exit_and_model
from ..errors import MessError
from ..evaluate.cache import CacheError, EvaluationCache
from ..evaluate.cache_build import count_heads
from ..evaluate.instance import MODES
from ..io import expand_home, read_json
from ..models.source import ModelSource
from ..models.trust import SIGNATURE_KEY, UntrustedCodeError, check_study_source, describe_code, require_consent
from ..search.problem import SearchSpace
from ..search.report import all_fronts, results_table, with_row_ids
from ..search.transfer import of_mode, transfer_check
from .config import (
    FRONTS,
    LATENCY,
    MANIFEST,
    ORACLE,
    PROFILE,
    RESULTS,
    STUDY_FORMAT,
    TRAINING,
    TRANSFER,
    WEIGHTS,
    StudyConfig,
    StudyError,
)
from .pack import frame_from_json, sha256

__all__ = ["Study", "open_study", "list_studies"]

# what every stored table's rows carry (the app and the reports read these)
FRONT_COLUMNS = ("series", "mode", "cost", "miou", "instance")
RESULT_COLUMNS = ("row", "miou", "gflops", "exits", "instance", "speedup")


@dataclass
class Study:
    """An opened study folder (or a run folder with a ``multi_exit.pt`` and an evaluation cache). Files are read when
    first used; every problem raises :class:`StudyError` naming the file."""

    path: Path
    manifest: dict[str, Any]
    cache_path: Path
    weights_path: Path

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.path.name)

    @property
    def is_packed(self) -> bool:
        """Built by :func:`~mess_core.study.build` (results precomputed) rather than a bare run folder (results
        computed on open)."""
        return self.manifest.get("format") == STUDY_FORMAT

    @cached_property
    def weights_meta(self) -> dict[str, Any]:
        """The metadata in the weights file (read once: a run folder's cache check and its consent check use it)."""
        meta = checkpoint.load(self.weights_path).get("meta")
        return meta if isinstance(meta, dict) else {}

    @cached_property
    def cache(self) -> EvaluationCache:
        cache = self._load_cache(self.cache_path)
        if not self.is_packed:  # a packed study's manifest hashes both; a run folder's cache may be anyone's
            _check_cache_fits(cache, self.cache_path, self.weights_meta, self.weights_path)
        return cache

    @cached_property
    def report_cache(self) -> EvaluationCache | None:
        """The cache of the split every instance is also reported on (``test`` when the dataset has it), or None."""
        name = self.manifest.get("report_cache")
        return self._load_cache(self.path / name) if name else None

    def _load_cache(self, path: Path) -> EvaluationCache:
        try:
            return EvaluationCache.load(path)
        except MessError as exc:
            raise StudyError(f"study {self.name}: {exc}") from None

    @property
    def model_source(self) -> ModelSource | None:
        """Where the study's model comes from, as its manifest records it (a model file: the copy shipped in the
        study folder, checked against its SHA-256); None for run folders and older studies (the weights file's own
        record is used)."""
        record = self.manifest.get("model_source")
        if record is None:
            return None
        return ModelSource.from_dict(record, base=self.path, where=f"{self.path / MANIFEST}: model_source")

    def untrusted_code(self) -> str | None:
        """What building this study's model runs that this machine did not record, in words for a confirmation; None
        when it needs no consent (a registered model, or a study built or trained here). A model this machine cannot
        build at all (a package not installed) raises the error that says so."""
        try:
            self._require_consent(consent=False)
        except UntrustedCodeError as exc:
            if exc.source is None:
                raise
            return describe_code(exc.source)
        return None

    def _require_consent(self, *, consent: bool) -> None:
        """Refuse to build a model this machine cannot (not registered, not installed) or whose code it did not
        record unless ``consent``; a packed study's record is also held to what a study may name
        (:func:`~mess_core.models.trust.check_study_source`)."""
        if self.model_source is not None:
            where = f"{self.path / MANIFEST}: model_source"
            check_study_source(self.manifest["model_source"], where=where)
            require_consent(
                self.model_source,
                signature=self.manifest.get(SIGNATURE_KEY),
                consent=consent,
                where=where,
                stored=ModelSource.from_dict(self.manifest["model_source"]),
            )
            return
        meta = self.weights_meta
        where = f"{self.weights_path}: model_source"
        if isinstance(meta.get("model_source"), dict):
            record = meta["model_source"]
        else:  # files written before sources were recorded name a registered model
            record = {"kind": "registry", "target": str(meta.get("model"))}
        if self.is_packed:  # an older study: its weights file's record may name only what a manifest may
            check_study_source(record, where=where)
        stored = ModelSource.from_dict(record, where=where)
        source = ModelSource.from_dict(record, base=self.path if self.is_packed else None, where=where)
        require_consent(source, signature=meta.get(SIGNATURE_KEY), consent=consent, where=where, stored=stored)

    @property
    def promise_rule(self) -> dict[str, Any]:
        """How the study's results rows keep their promise: ``confidence`` and ``block`` (None: the plain search),
        as :func:`mess_core.search.report.results_table` takes them."""
        config = self.manifest.get("config") if isinstance(self.manifest.get("config"), dict) else {}
        return {"confidence": config.get("promise_confidence"), "block": config.get("promise_block")}

    @property
    def search_space(self) -> SearchSpace:
        """The space the study's rows were searched in (its ``max_exits``), for anything searched again from its
        cache: a row searched in another space is another row."""
        config = self.manifest.get("config") if isinstance(self.manifest.get("config"), dict) else {}
        max_exits = config.get("max_exits")
        return SearchSpace(max_exits=max_exits) if isinstance(max_exits, int) else SearchSpace()

    @property
    def user_model(self) -> dict[str, Any] | None:
        """For a study built from the user's weights: their model as given, evaluated (mIoU on the cache split)."""
        return self.manifest.get("user_model")

    def load_network(self, *, consent: bool = False) -> tuple[Any, dict[str, Any]]:
        """A fresh float32 :class:`~mess_core.MultiExitNet` (eval mode) and its metadata; the caller owns it. A model
        that runs Python this machine did not record (an import path, a model file) is built only with ``consent``
        (see :mod:`mess_core.models.trust`)."""
        self._require_consent(consent=consent)
        try:
            return load_multi_exit(self.weights_path, source=self.model_source, consent=True)
        except MessError as exc:
            raise StudyError(f"study {self.name}: {exc}") from None

    def load_network_and_model(self, *, consent: bool = False) -> tuple[Any, dict[str, Any], Any]:
        """:meth:`load_network`, plus the original model it was converted from (sharing its trained weights): what
        a drive or a benchmark compares the deployed instance against."""
        self._require_consent(consent=consent)
        try:
            return load_multi_exit_and_model(self.weights_path, source=self.model_source, consent=True)
        except MessError as exc:
            raise StudyError(f"study {self.name}: {exc}") from None

    def _json(self, name: str) -> Any:
        return read_json(self.path / name, StudyError, "missing from the study; rebuild it with its manifest's command")

    def results(self, mode: str) -> pd.DataFrame:
        """The seed-shaped results table of ``mode`` (see :func:`mess_core.search.report.results_table`), rows
        identified by
        :class:`~mess_core.search.report.Row` in column ``id`` (from their stored labels in studies built before
        ids)."""
        if mode not in MODES:
            raise StudyError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not self.is_packed:
            # the oracle bound is the build's work, too slow for a page
            return results_table(self.cache, mode=mode, space=self.search_space, oracle=False)
        data = self._json(RESULTS)
        where = self.path / RESULTS
        if not isinstance(data, dict) or mode not in data:
            raise StudyError(f"{where}: holds no '{mode}' table; rebuild the study")
        try:
            return with_row_ids(frame_from_json(data[mode], f"{where} ('{mode}' table)", RESULT_COLUMNS))
        except ValueError as exc:
            text = str(exc)
            raise StudyError(
                f"{text if text.startswith(str(where)) else f'{where}: {text}'}; rebuild the study with this version"
            ) from None

    def fronts(self) -> pd.DataFrame:
        """Accuracy-vs-GFLOPs fronts of every mode and peer (see :func:`mess_core.search.report.all_fronts`)."""
        if not self.is_packed:
            return all_fronts(self.cache, space=self.search_space)
        try:
            return frame_from_json(self._json(FRONTS), str(self.path / FRONTS), FRONT_COLUMNS)
        except ValueError as exc:
            raise StudyError(f"{exc}; rebuild the study with this version") from None

    def profile(self, *, consent: bool = False) -> dict[str, Any]:
        """The profile report (``mess_core profile --json`` shape): nodes with FLOPs, exits, totals. A run folder's is
        computed from its network (``consent`` as in :meth:`load_network`)."""
        if not self.is_packed:
            net, meta = self.load_network(consent=consent)
            return profile_report(net, model_name=meta["model"])
        return self._json(PROFILE)

    def training_table(self) -> pd.DataFrame | None:
        """Stage-2 variants (loss, with or without stage 1): mIoU of every exit and the final one; None if not built."""
        if not (self.path / TRAINING).is_file():
            return None
        rows = []
        for r in self._json(TRAINING):
            rows.append(
                {
                    "variant": r["variant"],
                    "stage 2 loss": r["exit_loss"],
                    "stage 1": r["stage1"],
                    "config": r["config"],
                    **{f"exit {i}": v for i, v in r["exits"].items()},
                    "final": r["final"],
                }
            )
        return pd.DataFrame(rows)

    def policy_versus_oracle(self) -> pd.DataFrame | None:
        """The policy's speedup against the oracle bound's at every allowed drop (see
        :func:`mess_core.search.report.policy_versus_oracle`), computed by the build; None for run folders and for
        studies built before it existed (the bound is too slow to compute while a page waits)."""
        return pd.DataFrame(self._json(ORACLE)) if self.is_packed and (self.path / ORACLE).is_file() else None

    def transfer_check(self, mode: str = "input-dependent", *, compute: bool = False) -> pd.DataFrame | None:
        """The transfer check of the results rows of ``mode`` (:func:`mess_core.search.transfer.transfer_check`, with
        the study's promise rule): stored by the build; where a study was built before the build stored it for
        ``mode``, computed from the cache with ``compute``, else None."""
        if self.is_packed and (self.path / TRANSFER).is_file():
            try:
                stored = of_mode(frame_from_json(self._json(TRANSFER), str(self.path / TRANSFER)), mode)
            except ValueError as exc:
                raise StudyError(f"{exc}; rebuild the study with this version") from None
            if stored is not None:
                return stored
        if not compute:
            return None
        return of_mode(transfer_check(self.cache, modes=(mode,), space=self.search_space, **self.promise_rule), mode)

    def latency(self) -> pd.DataFrame | None:
        """Measured latency of the results' instances against the original model (one run); None if not built.
        Column ``id`` names the results row a variant deploys (None for the original model and the like)."""
        if not (self.path / LATENCY).is_file():
            return None
        return with_row_ids(pd.DataFrame(self._json(LATENCY)), labels="variant", strict=False)

    def check_weights(
        self, *, images: int = 3, data_root: str | os.PathLike | None = None, consent: bool = False
    ) -> list[str]:
        """Re-run the shipped weights on the first ``images`` images of the cache's split and compare the counts of
        every head they carry with the cache (a pixel or two may flip on a tie: convolutions round differently at
        another batch size). Returns the problems; empty when they agree. ``consent`` as in :meth:`load_network`."""
        cfg = StudyConfig.from_dict(self.manifest["config"], where=str(self.path / MANIFEST))
        net, _ = self.load_network(consent=consent)
        shipped = self.cache
        split = shipped.meta["split"]
        groups = tuple(shipped.meta.get("groups") or ())  # the cache's images: a scene-disjoint study's tuning drive
        data = cfg.eval_dataset(split, tuple(shipped.meta["input_size"]), root=data_root, groups=groups)
        again = count_heads(net, data, batch_size=1, limit=images)  # the counts only: the costs are not re-checked
        if again.num_exits != shipped.num_exits:
            return [
                f"{self.cache_path}: has {shipped.num_exits} exits but {self.weights_path} has {again.num_exits}; "
                "the two come from different networks: rebuild the study"
            ]
        problems = []
        if not np.array_equal(again.arrays["label"], shipped.label[:images]):
            problems.append(f"{self.cache_path}: its labels differ from the dataset's first {images} images")
        budget = 0.001 * shipped.pixels[:images].sum()
        carried = [(e, c) for e in range(1, net.num_exits) for c in net.heads[str(e)].keys()]
        for e, c in carried + [(net.num_exits, "final")]:
            try:
                b = shipped.head_index(e, c)
            except CacheError:
                problems.append(
                    f"{self.cache_path}: has no counts for exit {e} {c}, which {self.weights_path} carries; the two "
                    "come from different networks: rebuild the study"
                )
                continue
            if np.abs(again.arrays["tp"][:, again.column(e, c)] - shipped.tp[:images, b]).sum() > budget:
                problems.append(f"{self.cache_path}: exit {e} {c}: counts differ from re-running {self.weights_path}")
        return problems

    def verify(self) -> list[str]:
        """Problems with the files the manifest lists (missing, size or SHA-256 differ) and files it does not list;
        empty when all match. A run folder has no manifest to check against: that is refused rather than reported as
        "0 files, no problem"."""
        if not self.is_packed:
            raise StudyError(
                f"{self.path}: has no {MANIFEST}, so there is nothing to check its files against (a run "
                "folder, not a built study); build a study with `python -m mess_core study build CONFIG`"
            )
        problems = []
        for name, entry in self.manifest.get("files", {}).items():
            path = self.path / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif path.stat().st_size != entry.get("bytes") or sha256(path) != entry.get("sha256"):
                problems.append(f"{path}: differs from the manifest (size or SHA-256); it was changed after the build")
        listed = set(self.manifest.get("files", {})) | {MANIFEST, "__pycache__"}  # Python's cache of a model file
        for path in sorted(self.path.iterdir()):
            if path.name not in listed:
                problems.append(
                    f"{path}: not listed in the manifest; the build did not write it (move it out of the "
                    "study, or rebuild the study)"
                )
        return problems


def open_study(path: str | os.PathLike) -> Study:
    """Open a study folder built by :func:`~mess_core.study.build`, or a run folder holding ``multi_exit.pt`` (there
    or in ``exits/``) and an evaluation cache ``*.npz`` (``val.npz`` preferred)."""
    path = expand_home(path, StudyError)
    # a typed path may hold a NUL byte or be thousands of characters long: show it escaped and cut
    text = str(path).replace("\0", "\\0")
    shown = text if len(text) <= 120 else f"{text[:120]}... ({len(text)} characters)"
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError) as exc:  # a name too long for the file system: not a folder we can open
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StudyError(
            f"{shown}: cannot be opened as a folder ({reason}); point to a study folder "
            "(precomputed/<name>) or a run folder"
        ) from None
    if not is_dir:
        raise StudyError(f"{shown}: no such folder; point to a study folder (precomputed/<name>) or a run folder")
    if (path / MANIFEST).is_file():
        return _open_packed(path)
    weights = next((p for p in (path / WEIGHTS, path / "exits" / WEIGHTS) if p.is_file()), None)
    if weights is None:
        raise StudyError(f"{path}: neither a study ({MANIFEST}) nor a run folder ({WEIGHTS} or exits/{WEIGHTS})")
    caches = sorted(path.glob("*.npz"), key=lambda p: (not p.name.startswith("val"), p.name))
    if not caches:
        raise StudyError(
            f"{path}: has {weights.relative_to(path)} but no evaluation cache (*.npz); make one with "
            f"`python -m mess_core cache --multi-exit {weights} --data ... --out {path}/val.npz`"
        )
    return Study(path, {"name": path.name, "format": None, "cache": caches[0].name}, caches[0], weights)


def _open_packed(path: Path) -> Study:
    manifest_path = path / MANIFEST
    manifest = read_json(manifest_path, StudyError, "missing")
    if not isinstance(manifest, dict) or manifest.get("format") != STUDY_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise StudyError(
            f"{manifest_path}: study format {found!r}, this version reads {STUDY_FORMAT!r}; rebuild "
            "it with this version's `python -m mess_core study build` (its command is in the manifest)"
        )
    _check_manifest(manifest, manifest_path)
    missing = [
        n for n in [WEIGHTS, manifest.get("cache", ""), RESULTS, FRONTS, PROFILE] if not n or not (path / n).is_file()
    ]
    if missing:
        raise StudyError(
            f"{path}: missing {', '.join(missing or ['its cache name'])}; the study is incomplete; "
            f"rebuild it with `{manifest.get('command', 'python -m mess_core study build CONFIG')}`"
        )
    return Study(path, manifest, path / manifest["cache"], path / WEIGHTS)


def _inside(path: Path, name: str) -> bool:
    """Whether ``name`` (a path the manifest gives) names something inside the folder ``path``."""
    if not name or Path(name).is_absolute() or Path(name).drive:
        return False
    # by the name itself, not by resolving links: a study folder made of links to a built study is still that study
    parts = Path(os.path.normpath(name)).parts
    return bool(parts) and parts[0] not in ("..", ".")


def _check_manifest(manifest: dict[str, Any], where: Path) -> None:
    """The types of the manifest's fields this module reads, and that every path it names stays inside the study."""
    fix = "the manifest is damaged or was edited; rebuild the study (its command is in the manifest)"
    folder = where.parent
    for key in ("name", "command"):
        if key in manifest and not isinstance(manifest[key], str):
            raise StudyError(f"{where}: field '{key}' is {manifest[key]!r}, expected a string; {fix}")
    for key in ("cache", "report_cache"):
        value = manifest.get(key)
        if key == "report_cache" and value is None:
            continue
        if not isinstance(value, str) or not value:
            raise StudyError(f"{where}: field '{key}' is {value!r}, expected a file name in the study; {fix}")
        if not _inside(folder, value):
            raise StudyError(
                f"{where}: field '{key}' is {value!r}, which lies outside the study folder {folder}; a "
                f"study only reads its own files: copy the file into the study and rebuild it"
            )
    for key in ("config", "model_source", "user_model"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise StudyError(f"{where}: field '{key}' is a {type(manifest[key]).__name__}, expected an object; {fix}")
    if manifest.get("model_source") is not None:
        try:  # what a study may not name at all; whether this machine can build it is asked when it is built
            check_study_source(manifest["model_source"], where=f"{where}: model_source", here=False)
        except UntrustedCodeError as exc:
            raise StudyError(str(exc)) from None
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise StudyError(
            f"{where}: field 'files' is a {type(files).__name__}, expected an object of file entries; {fix}"
        )
    for name, entry in files.items():
        if not _inside(folder, name):
            raise StudyError(
                f"{where}: field 'files' lists {name!r}, which lies outside the study folder {folder}; {fix}"
            )
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("bytes"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise StudyError(
                f"{where}: field 'files' entry {name!r} is {entry!r}, expected {{'bytes': int, 'sha256': str}}; {fix}"
            )


def _check_cache_fits(cache: EvaluationCache, cache_path: Path, meta: dict[str, Any], weights: Path) -> None:
    """Refuse a cache that another network wrote: its classes, exits and configurations must be the weights'."""
    meta = meta if isinstance(meta, dict) else {}
    space = meta.get("exit_space") if isinstance(meta.get("exit_space"), dict) else {}
    shipped = {c for configs in space.values() if isinstance(configs, list) for c in configs}
    differ = []
    if meta.get("num_classes") != cache.num_classes:
        differ.append(f"{cache.num_classes} classes there, {meta.get('num_classes')} in the weights")
    elif meta.get("classes") and cache.meta.get("classes") and list(meta["classes"]) != list(cache.meta["classes"]):
        differ.append(f"classes {', '.join(cache.meta['classes'])} there, {', '.join(meta['classes'])} in the weights")
    if meta.get("num_exits") != cache.num_exits:
        differ.append(f"{cache.num_exits} exits there, {meta.get('num_exits')} in the weights")
    if shipped and not set(cache.configs) <= shipped:
        extra = sorted(set(cache.configs) - shipped)
        differ.append(f"configurations {', '.join(extra[:3])} there that the weights have no head for")
    if differ:
        raise StudyError(
            f"{cache_path}: was not written from {weights} ({'; '.join(differ)}); rebuild the cache from "
            f"these weights (python -m mess_core cache --multi-exit {weights} ...) or put the matching "
            "weights beside it"
        )


def list_studies(root: str | os.PathLike) -> list[Path]:
    """Study folders under ``root`` (those with a manifest), sorted by name."""
    root = Path(root)
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST}")) if root.is_dir() else []
