"""Where a model comes from, named one of three ways wherever a model is named (a study's ``model:``, ``train
--model``, ``profile --model``, a study reopened by the app or :func:`~mess_core.study.open_study`):

* a registered name: ``mobilenetv2_fcn`` (see :func:`mess_core.models.list_models`);
* an import path: ``package.module:callable`` (the package must be importable: installed, or on ``PYTHONPATH``);
* a file: ``path/to/file.py:callable`` (relative paths are relative to the current folder, or, in a study
  configuration, to the folder of the YAML file).

The callable (a class or a function) returns an ``nn.Module``; it is called with ``num_classes=`` when it takes that
argument, with no argument otherwise. :class:`ModelSource` parses, builds, describes and records the choice; every
problem raises :class:`ModelSourceError` naming the file, module or callable and what to do.

How the conversion is done travels with it: :func:`convert_options` checks a ``convert:`` mapping (``backbone``,
``leaf_modules``, ``output_key``, ``cost``) that training records in ``model.pt``/``multi_exit.pt`` beside the source.

    >>> ModelSource.parse("resnet18_fcn").describe()
    "registered model 'resnet18_fcn'"
    >>> ModelSource.parse("torchvision.models.segmentation:lraspp_mobilenet_v3_large").kind
    'import'
    >>> convert_options({"cost": "flops", "leaf_modules": ["backbone.gate"]})
    {'leaf_modules': ['backbone.gate'], 'cost': 'flops'}
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import MessError
from ..io import expand_home, input_file
from .registry import create, list_models

__all__ = [
    "ModelSource",
    "ModelSourceError",
    "convert_options",
    "load_user_weights",
    "CONVERT_OPTIONS",
    "STATE_DICT_KEYS",
]

CONVERT_OPTIONS = ("backbone", "leaf_modules", "output_key", "cost", "exit_feature")
# convert()'s rules for the map an exit reads where several cross a cut (multi-branch models)
EXIT_FEATURES = ("latest", "highest-resolution")
# where checkpoints commonly keep the state dict, tried in this order
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "weights", "params")
_FORMS = (
    "a registered name (e.g. mobilenetv2_fcn), an import path 'package.module:callable' or a file "
    "'path/to/file.py:callable'"
)


class ModelSourceError(MessError):
    """A model that cannot be found or built as named, or weights that do not fit it; the message says what to do."""


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class ModelSource:
    """A model named one of three ways. ``kind``: ``registry`` (``target`` the registered name), ``import``
    (``target`` the module) or ``file`` (``target`` the ``.py`` file); ``attr``: the callable in the module or file.
    ``sha256``: a file's hash when it was recorded (a changed file is refused when rebuilding from a record)."""

    kind: str
    target: str
    attr: str | None = None
    sha256: str | None = None

    @classmethod
    def parse(cls, text: str, *, base: str | os.PathLike | None = None) -> "ModelSource":
        """Read ``text`` (one of the three forms). A relative file path is taken relative to ``base`` (default: the
        current folder) and kept absolute."""
        if isinstance(text, ModelSource):
            return text
        if not isinstance(text, str) or not text.strip():
            raise ModelSourceError(f"model {text!r}: expected {_FORMS}")
        text = text.strip()
        where, sep, attr = text.rpartition(":")
        if not sep or len(where) == 1:  # no ':' (or only a Windows drive letter): a registered name
            if text not in list_models():
                raise ModelSourceError(
                    f"model '{text}' is not registered (registered: {', '.join(list_models())}); to use your own "
                    "model, name it as 'package.module:callable' or 'path/to/file.py:callable'"
                )
            return cls("registry", text)
        if not attr.isidentifier():
            raise ModelSourceError(
                f"model '{text}': '{attr}' after the ':' is not a Python name; write "
                "'package.module:callable' or 'path/to/file.py:callable'"
            )
        if where.endswith(".py") or "/" in where or "\\" in where:
            path = expand_home(where, ModelSourceError)
            if not path.is_absolute():
                path = Path(base or ".") / path
            return cls("file", str(path.resolve()), attr)
        if not all(part.isidentifier() for part in where.split(".")):
            raise ModelSourceError(
                f"model '{text}': '{where}' is neither a module name (package.module) nor a file path ending in .py"
            )
        return cls("import", where, attr)

    @property
    def name(self) -> str:
        """A short name for tables and metadata: the registered name, ``module:callable`` or ``file.py:callable``."""
        if self.kind == "registry":
            return self.target
        return f"{Path(self.target).name if self.kind == 'file' else self.target}:{self.attr}"

    @property
    def spec(self) -> str:
        """The text :meth:`parse` reads back into this source."""
        return self.target if self.kind == "registry" else f"{self.target}:{self.attr}"

    def describe(self) -> str:
        if self.kind == "registry":
            return f"registered model '{self.target}'"
        if self.kind == "import":
            return f"'{self.attr}' from module '{self.target}'"
        return f"'{self.attr}' from file {self.target}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(
        cls, data: Any, *, base: str | os.PathLike | None = None, where: str = "model source"
    ) -> "ModelSource":
        """A recorded source; a relative file path is taken relative to ``base`` (a study folder)."""
        kinds = ("registry", "import", "file")
        if not isinstance(data, dict) or data.get("kind") not in kinds or not data.get("target"):
            raise ModelSourceError(f"{where}: not a model source record ({data!r}); rebuild it with this version")
        source = cls(data["kind"], data["target"], data.get("attr"), data.get("sha256"))
        if source.kind == "file" and base is not None and not Path(source.target).is_absolute():
            source = replace(source, target=str(Path(base) / source.target))
        return source

    def recorded(self) -> "ModelSource":
        """This source with a file's current hash, for a record that should refuse a changed file later."""
        if self.kind != "file":
            return self
        return replace(self, sha256=_file_sha256(self._file()))

    def _file(self) -> Path:
        path = Path(self.target)
        if not path.is_file():
            raise ModelSourceError(
                f"{path}: no such model file (model '{self.spec}'); put the file there, or name "
                "the model by a path that exists (in a study, relative to the YAML file's folder)"
            )
        return path

    def load_callable(self) -> Any:
        """The callable this source names (the registry's builder for a registered name)."""
        if self.kind == "registry":
            return lambda num_classes: create(self.target, num_classes=num_classes)
        if self.kind == "import":
            try:
                module = importlib.import_module(self.target)
            except ImportError as exc:
                missing = getattr(exc, "name", None)
                what = (
                    f"it needs module '{missing}', which is not installed: install it (pip install "
                    f"{missing.split('.')[0]}) or put it on PYTHONPATH"
                    if missing and missing != self.target
                    else f"install the package that provides '{self.target}' or put its folder on PYTHONPATH"
                )
                raise ModelSourceError(
                    f"model '{self.spec}': cannot import module '{self.target}' ({exc}); {what}"
                ) from None
            except (Exception, SystemExit, KeyboardInterrupt) as exc:  # a module that exits ends no command
                raise ModelSourceError(
                    f"model '{self.spec}': importing module '{self.target}' failed ({_raised(exc)}); fix that module"
                ) from None
            where = f"module '{self.target}'"
        else:
            path = self._file()
            data = path.read_bytes()  # read once: the bytes checked are the bytes run
            if self.sha256 is not None and hashlib.sha256(data).hexdigest() != self.sha256:
                raise ModelSourceError(
                    f"{path}: differs from the model file this network was trained with (SHA-256 "
                    "changed); restore that file, or retrain with the new one"
                )
            module = _import_file(path, data, self.spec)
            where = f"file {path}"
        if not hasattr(module, self.attr):
            found = sorted(
                n
                for n, v in vars(module).items()
                if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
            )
            raise ModelSourceError(
                f"model '{self.spec}': {where} has no '{self.attr}'"
                + (f" (it defines {', '.join(found[:10])})" if found else "")
                + "; name a class or function that returns an nn.Module"
            )
        return getattr(module, self.attr)

    def build(self, num_classes: int) -> nn.Module:
        """The model with random (or the callable's own) weights and ``num_classes`` outputs."""
        if self.kind == "registry":
            return create(self.target, num_classes=num_classes)
        factory = self.load_callable()
        if not callable(factory):
            raise ModelSourceError(
                f"model '{self.spec}': '{self.attr}' is a {type(factory).__name__}, not a class "
                "or function; name one that returns an nn.Module"
            )
        try:
            params = inspect.signature(factory).parameters
            takes = "num_classes" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            takes = True
        try:
            model = factory(num_classes=num_classes) if takes else factory()
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            raise ModelSourceError(
                f"model '{self.spec}': calling {self.attr}"
                f"({'num_classes=' + str(num_classes) if takes else ''}) failed "
                f"({_raised(exc)})"
            ) from None
        if not isinstance(model, nn.Module):
            raise ModelSourceError(
                f"model '{self.spec}': {self.attr}() returned a {type(model).__name__}, not an "
                "nn.Module; name a class or function that returns the model itself"
            )
        return model


def _raised(exc: BaseException) -> str:
    """What model code raised, in words: an exit call is named as such (a model must not end the program)."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) or exit(); a model must not end the program, remove that call"
    if isinstance(exc, KeyboardInterrupt):
        return "KeyboardInterrupt: interrupted, or the model raised it"
    return f"{type(exc).__name__}: {exc}"


def _import_file(path: Path, data: bytes, spec_text: str) -> Any:
    """The module the Python source ``data`` (read from ``path``) defines, run once per file content (the same
    classes on every build). It is compiled from those bytes, not re-read: a file swapped after its hash was checked
    never runs, and no ``__pycache__`` is written beside it (inside a study folder)."""
    name = "mess_user_model_" + hashlib.sha1(f"{path}\0{hashlib.sha256(data).hexdigest()}".encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module
    try:
        exec(compile(data, str(path), "exec", dont_inherit=True), module.__dict__)
    except ImportError as exc:
        del sys.modules[name]
        missing = getattr(exc, "name", None)
        raise ModelSourceError(
            f"{path}: importing it failed ({exc}); "
            + (
                f"install '{missing.split('.')[0]}' or put it on PYTHONPATH"
                if missing
                else "a model file may import installed packages, not files beside it (use the "
                "'package.module:callable' form for a package of your own)"
            )
        ) from None
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # SyntaxError and ValueError (a NUL byte) included
        del sys.modules[name]
        raise ModelSourceError(f"{path}: running it failed ({_raised(exc)}); fix that file") from None
    return module


def convert_options(data: Any, *, where: str = "convert") -> dict[str, Any]:
    """Check a ``convert:`` mapping (``backbone``: a submodule name; ``leaf_modules``: submodule names;
    ``output_key``: the key of the logits in a dict output; ``cost``: flops or latency; ``exit_feature``:
    which live map an exit reads, latest or highest-resolution); returns it as plain data."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ModelSourceError(
            f"{where}: expected a mapping with some of {', '.join(CONVERT_OPTIONS)}, got {type(data).__name__}"
        )
    unknown = sorted(set(data) - set(CONVERT_OPTIONS))
    if unknown:
        extra = " (num_exits is a setting of its own, beside model:)" if "num_exits" in unknown else ""
        raise ModelSourceError(
            f"{where}: unknown option(s) {', '.join(unknown)}; known: {', '.join(CONVERT_OPTIONS)}{extra}"
        )
    out = {k: data[k] for k in CONVERT_OPTIONS if k in data and data[k] is not None}
    if "backbone" in out and not isinstance(out["backbone"], str):
        raise ModelSourceError(
            f"{where}.backbone: expected a submodule name such as 'encoder', got {out['backbone']!r}"
        )
    if "leaf_modules" in out:
        leaves = out["leaf_modules"]
        if isinstance(leaves, str):
            leaves = [leaves]
        if not isinstance(leaves, (list, tuple)) or not all(isinstance(n, str) for n in leaves):
            raise ModelSourceError(f"{where}.leaf_modules: expected a list of submodule names, got {leaves!r}")
        out["leaf_modules"] = list(leaves)
    if "output_key" in out and not isinstance(out["output_key"], (str, int)):
        raise ModelSourceError(f"{where}.output_key: expected a key or index, got {out['output_key']!r}")
    if "cost" in out and out["cost"] not in ("flops", "latency"):
        raise ModelSourceError(f"{where}.cost: expected flops or latency, not {out['cost']!r}")
    if "exit_feature" in out and out["exit_feature"] not in EXIT_FEATURES:
        raise ModelSourceError(
            f"{where}.exit_feature: expected one of {', '.join(EXIT_FEATURES)}, not {out['exit_feature']!r}"
        )
    return out


def _state_dict_of(payload: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        weights = payload
    else:
        key = next(
            (
                k
                for k in STATE_DICT_KEYS
                if isinstance(payload.get(k), dict)
                and payload[k]
                and all(isinstance(v, torch.Tensor) for v in payload[k].values())
            ),
            None,
        )
        if key is None:
            raise ModelSourceError(
                f"{path}: holds neither a state dict nor one under {', '.join(STATE_DICT_KEYS)} (its keys: "
                f"{', '.join(map(str, list(payload)[:8]))}); save model.state_dict() with torch.save"
            )
        weights = payload[key]
    for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel / torch.compile wrappers
        if weights and all(k.startswith(prefix) for k in weights):
            weights = {k[len(prefix) :]: v for k, v in weights.items()}
    return weights


def load_user_weights(path: str | os.PathLike, model: nn.Module, *, show: int = 5) -> nn.Module:
    """Load the user's trained weights into ``model``: a state dict, or a checkpoint holding one under a common key
    (:data:`STATE_DICT_KEYS`), read with ``torch.load(weights_only=True)``. Keys that do not fit are refused by name:
    missing, unexpected and shape mismatches (the first ``show`` of each)."""
    path = input_file(
        path,
        ModelSourceError,
        "no such weights file; `weights:` (study) or --weights (train) names "
        "your trained state dict (a file written with torch.save(model.state_dict(), ...))",
    )
    if path.stat().st_size == 0:
        raise ModelSourceError(
            f"{path}: is an empty (0-byte) file, not trained weights; save them with "
            "torch.save(model.state_dict(), path)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or ["no detail"])[0][:200]
        raise ModelSourceError(
            f"{path}: not a readable weights-only torch file ({type(exc).__name__}: "
            f"{detail}); save tensors only, e.g. torch.save(model.state_dict(), path)"
        ) from None
    if not isinstance(payload, dict):
        raise ModelSourceError(
            f"{path}: holds a {type(payload).__name__}, not a state dict; save model.state_dict(), not the model object"
        )
    weights = _state_dict_of(payload, path)
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch (file vs model)", shapes),
        ):
            if keys:
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:show])}{', ...' if len(keys) > show else ''}")
        raise ModelSourceError(
            f"{path}: its weights do not fit the {type(model).__name__} built here ("
            + "; ".join(parts)
            + "); were they trained for another model, another number of "
            "classes, or saved from a wrapper?"
        )
    model.load_state_dict(weights)
    return model
