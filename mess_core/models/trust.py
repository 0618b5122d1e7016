"""Whose Python a recorded model runs, and the user's consent to run it.

A study or a weights file records where its model comes from (:class:`~mess_core.models.ModelSource`). A registered
name runs only this package's code. An import path or a model file runs Python that came with the record: opening a
study someone shared must not run it unasked, any more than loading their checkpoint may unpickle objects. So a
recorded source that runs code is built only when

* it was recorded on this machine: training and the study build sign the record with a key only this user can read
  (HMAC-SHA256 under ``$MESS_TRUST_KEY``, default ``~/.local/share/mess-explorer/trust.key``, created on first use,
  as Jupyter signs the notebooks its user ran), and the signature travels beside the record; or
* the user consents: ``--trust-model-code`` on the command line, the confirmation in the app.

A study's record is also held to what a study may name at all (:func:`check_study_source`): a registered name, an
import path of an installed package outside the standard library, or a model file inside the study folder whose
SHA-256 the manifest records. Anything else is refused, consent or not.

    >>> from mess_core.models import ModelSource
    >>> runs_code(ModelSource.parse("mobilenetv2_fcn"))
    False
    >>> require_consent(ModelSource.parse("mobilenetv2_fcn"), signature=None, consent=False, where="m.pt")
    >>> check_study_source({"kind": "import", "target": "os", "attr": "abort"}, where="manifest.json: model_source")
    Traceback (most recent call last):
    ...
    mess_core.models.trust.UntrustedCodeError: manifest.json: model_source: imports module 'os', which is part of \
Python's standard library, not a model package; a study may name a registered model, an installed model package or \
a model file inside the study folder
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import os
import re
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..errors import MessError
from .registry import list_models
from .source import ModelSource

__all__ = [
    "UntrustedCodeError",
    "KEY_ENV",
    "SIGNATURE_KEY",
    "CONSENT_FLAG",
    "key_path",
    "runs_code",
    "sign",
    "signed_here",
    "require_consent",
    "check_study_source",
    "describe_code",
]

KEY_ENV = "MESS_TRUST_KEY"
# the field beside a ``model_source`` record (in a manifest or a weights file's metadata) that holds its signature
SIGNATURE_KEY = "model_source_signature"
CONSENT_FLAG = "--trust-model-code"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ALLOWED = "a study may name a registered model, an installed model package or a model file inside the study folder"


class UntrustedCodeError(MessError):
    """A recorded model source that would run Python the user has not allowed, or one a study may not name at all.
    ``source`` is the source that would run (None when it is refused outright)."""

    def __init__(self, message: str, source: ModelSource | None = None):
        super().__init__(message)
        self.source = source


def key_path() -> Path:
    """Where this user's signing key lives: ``$MESS_TRUST_KEY``, else under ``$XDG_DATA_HOME`` (``~/.local/share``)."""
    if os.environ.get(KEY_ENV):
        return Path(os.environ[KEY_ENV]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "mess-explorer" / "trust.key"


KEY_BYTES = 32


def _read_key(path: Path) -> bytes | None:
    """The key in ``path``: exactly 32 bytes in hex, anything else (an empty or cut file) is no key."""
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return key if len(key) == KEY_BYTES else None


def _key(*, create: bool) -> bytes | None:
    """The signing key; made (readable by this user only) when ``create`` and it does not exist yet. None when there
    is none, or it cannot be made (a read-only home): records then stay unsigned and need consent later."""
    path = key_path()
    key = _read_key(path)
    if key is not None or not create:
        return key
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # written whole to a file of its own, then linked into place: no process ever reads a half-written key
        fd, tmp = tempfile.mkstemp(prefix=".trust.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(KEY_BYTES) + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:  # another process made it first: use theirs (a damaged one is left alone)
                pass
        finally:
            os.unlink(tmp)
    except OSError:
        return None
    return _read_key(path)


def _digest(key: bytes, source: ModelSource) -> str:
    return hmac.new(key, json.dumps(source.to_dict(), sort_keys=True).encode(), hashlib.sha256).hexdigest()


def runs_code(source: ModelSource) -> bool:
    """Whether building ``source`` runs Python from outside this package (an import path or a model file)."""
    return source.kind != "registry"


def sign(source: ModelSource) -> str | None:
    """This machine's signature of a record it writes (None for a registered name, or when no key can be made)."""
    if not runs_code(source):
        return None
    key = _key(create=True)
    return None if key is None else _digest(key, source)


def signed_here(source: ModelSource, signature: Any) -> bool:
    """Whether ``signature`` is this machine's signature of ``source``."""
    key = _key(create=False)
    return isinstance(signature, str) and key is not None and hmac.compare_digest(_digest(key, source), signature)


def describe_code(source: ModelSource) -> str:
    """What building ``source`` runs, in words a user can check before allowing it."""
    if source.kind == "file":
        sha = f", SHA-256 {source.sha256[:16]}..." if source.sha256 else ""
        return f"the Python file {source.target}{sha} (it calls its '{source.attr}')"
    if source.kind == "import":
        spec = importlib.util.find_spec(source.target.split(".")[0])
        origin = f", installed at {Path(spec.origin).parent}" if spec is not None and spec.origin else ""
        return f"'{source.attr}' from the module '{source.target}'{origin}"
    return f"the registered model '{source.target}'"


def require_consent(
    source: ModelSource, *, signature: Any, consent: bool, where: str, stored: ModelSource | None = None
) -> None:
    """Refuse to build a recorded ``source`` that runs code unless it was recorded on this machine or the user
    consents; ``where`` names the record (a file and field), ``stored`` is the record as stored, which the signature
    covers (default ``source``; a study stores its model file's name, ``source`` holds its path)."""
    if not runs_code(source) or consent or signed_here(stored or source, signature):
        return
    raise UntrustedCodeError(
        f"{where}: building this model runs {describe_code(source)}, which was not recorded on this machine. Read that "
        f"code; to run it, pass {CONSENT_FLAG} (python -m mess_core COMMAND ... {CONSENT_FLAG}) or confirm in the "
        "app",
        source,
    )


def check_study_source(record: Any, *, where: str, here: bool = True) -> None:
    """Refuse a study's ``model_source`` record that names what a study may not: anything but a registered name, an
    import path of a package outside the standard library and this program, or a model file inside the study folder
    recorded with its SHA-256. The record is the manifest's (or an older study's weights metadata), as stored. With
    ``here`` (when the model is to be built) the name must also be registered, or the package installed, here; a
    study whose model this machine cannot build still opens, for its stored figures."""
    if (
        not isinstance(record, dict)
        or record.get("kind") not in ("registry", "import", "file")
        or not isinstance(record.get("target"), str)
        or not record["target"]
    ):
        raise UntrustedCodeError(f"{where}: not a model source record ({str(record)[:200]}); rebuild the study")
    kind, target, attr = record["kind"], record["target"], record.get("attr")
    if kind == "registry":
        if here and target not in list_models():
            raise UntrustedCodeError(
                f"{where}: model '{target}' is not registered in this version (registered: "
                f"{', '.join(list_models())}); rebuild the study with this version"
            )
        return
    if not isinstance(attr, str) or not attr.isidentifier():
        raise UntrustedCodeError(f"{where}: callable {attr!r} is not a Python name; rebuild the study")
    if kind == "import":
        parts = target.split(".")
        if not all(part.isidentifier() for part in parts):
            raise UntrustedCodeError(f"{where}: {target!r} is not a module name; rebuild the study")
        if parts[0] in sys.stdlib_module_names or parts[0] in sys.builtin_module_names:
            raise UntrustedCodeError(
                f"{where}: imports module '{target}', which is part of Python's standard "
                f"library, not a model package; {_ALLOWED}"
            )
        if parts[0] == "mess_core":
            raise UntrustedCodeError(
                f"{where}: imports module '{target}' of this program; name a registered model "
                "instead (python -m mess_core profile --help lists them)"
            )
        if here and importlib.util.find_spec(parts[0]) is None:
            raise UntrustedCodeError(
                f"{where}: module '{target}' is not installed here; install the package that "
                f"provides it (or put it on PYTHONPATH), then open the study again"
            )
        return
    if Path(target).name != target or target in (".", "..") or "\\" in target or not target.endswith(".py"):
        raise UntrustedCodeError(
            f"{where}: model file {target!r} is not a .py file inside the study folder; {_ALLOWED}"
        )
    if not isinstance(record.get("sha256"), str) or not _SHA256.fullmatch(record["sha256"]):
        raise UntrustedCodeError(
            f"{where}: model file {target!r} has no SHA-256 recorded; rebuild the study (the build records it)"
        )
