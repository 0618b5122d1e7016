"""File output that never leaves a half-written file behind, and never replaces what a path is.

:func:`atomic_open` writes a temporary file beside the target and renames it over the target only when complete. A
symlink is written through (its target gets the new content, the link stays), a device, FIFO or folder is refused,
and the file gets the permissions a plain ``open`` would give: an existing file keeps its mode, a new one gets
0666 minus the umask. Faults of the environment (disk full, read-only, no permission, a name too long) raise
:class:`OutputError` naming the file.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> atomic_write_text(folder / "a.txt", "one").read_text()
    'one'
    >>> atomic_write_text(folder, "x")
    Traceback (most recent call last):
    ...
    mess_core.io.OutputError: ... is a folder, not a file; name a file to write
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from .errors import MessError

__all__ = [
    "OutputError",
    "atomic_open",
    "atomic_write_text",
    "read_text",
    "read_yaml",
    "expand_home",
    "input_file",
    "read_json",
    "output_target",
    "environment_fault",
]

_UMASK_LOCK = threading.Lock()
_FAULTS = {
    errno.ENOSPC: "the disk is full; free some space and run it again",
    errno.EDQUOT: "the disk quota is used up; free some space and run it again",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.EACCES: "no permission to write there; write somewhere else or change the folder's permissions",
    errno.EPERM: "the operation is not permitted there; write somewhere else",
    errno.ENAMETOOLONG: "the name is too long for the file system; use a shorter one",
    errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
    errno.EISDIR: "it is a folder, not a file; name a file to write",
}


class OutputError(MessError):
    """An output that cannot be written where asked (a special file, a full or read-only disk, no permission); the
    message names the file and what to do."""


def environment_fault(path: str | os.PathLike, exc: OSError) -> OutputError | None:
    """A one-line :class:`OutputError` for an :class:`OSError` the environment causes, or None for any other."""
    reason = _FAULTS.get(exc.errno)
    return None if reason is None else OutputError(f"{_shown(path)}: cannot write it: {reason}")


def _shown(path: str | os.PathLike) -> str:
    text = str(path).replace("\0", "\\0")
    return text if len(text) <= 160 else f"{text[:160]}... ({len(text)} characters)"


def output_target(path: str | os.PathLike) -> Path:
    """Where writing ``path`` really goes: a symlink's final target; a device, FIFO, socket or folder is refused."""
    path = Path(path)
    try:
        real = Path(os.path.realpath(path)) if path.is_symlink() else path
        info = real.stat() if real.exists() else None
    except OSError as exc:
        raise environment_fault(path, exc) or exc from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a device or other special file"
        raise OutputError(f"{_shown(path)}: is {kind}, not a file; name a file to write")
    return real


def _new_file_mode() -> int:
    with _UMASK_LOCK:  # reading the umask means setting it: no other thread of ours may create files meanwhile
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` (beside a symlink's target) for writing; on a clean exit it is fsynced,
    given the mode a plain ``open`` would give, and renamed over the target (atomic on POSIX); on an exception it is
    deleted and the target keeps its previous content."""
    target = output_target(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not os.access(target, os.W_OK):  # open() would refuse it: so do we
            raise OutputError(f"{_shown(path)}: is read-only; make it writable or write somewhere else")
        keep = stat.S_IMODE(target.stat().st_mode) if target.exists() else _new_file_mode()
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:200]}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise environment_fault(path, exc) or exc from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, keep)
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and (fault := environment_fault(path, exc)) is not None:
            raise fault from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def expand_home(path: str | os.PathLike, error: Callable[[str], Exception]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded; a user this machine does not know raises ``error``."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise error(
            f"{_shown(path)}: names the home folder of a user this machine does not have; write the full path"
        ) from None


def input_file(path: str | os.PathLike, error: Callable[[str], Exception], missing: str) -> Path:
    """``path`` when it is a regular file; a missing file (``missing`` says what to do), a folder, a device, FIFO or
    socket raise ``error`` naming what the path is instead."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{_shown(path)}: {missing}") from None
    except OSError as exc:
        raise error(f"{_shown(path)}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{_shown(path)}: is a folder, not a file; name the file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{_shown(path)}: is a device, FIFO or other special file, not a file; name a file")
    return path


def read_text(path: str | os.PathLike, error: Callable[[str], Exception], missing: str) -> str:
    """The UTF-8 text in ``path``; a missing file (``missing`` says what to do), a folder, a special file, another
    encoding or binary content raise ``error`` naming the file and what to do."""
    path = input_file(path, error, missing)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{_shown(path)}: cannot be read ({exc.strerror or exc})") from None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise error(f"{_shown(path)}: is UTF-16 text; save it as UTF-8")
    if b"\0" in data:
        raise error(f"{_shown(path)}: holds binary data, not text; name a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{_shown(path)}: is not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r}; "
            "latin-1 or another encoding?); save it as UTF-8"
        ) from None


def _keys_are_names(
    value: Any, where: Path, error: Callable[[str], Exception], depth: int = 0, seen: set[int] | None = None
) -> None:
    seen = set() if seen is None else seen
    if depth > 50:
        raise error(f"{_shown(where)}: is nested more than 50 levels deep; no setting is")
    if not isinstance(value, (dict, list)) or id(value) in seen:  # YAML aliases share objects: each is walked once
        return
    seen.add(id(value))
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise error(f"{_shown(where)}: key {key!r} is not a name; write every key as text (quote it)")
            _keys_are_names(inner, where, error, depth + 1, seen)
    else:
        for inner in value:
            _keys_are_names(inner, where, error, depth + 1, seen)


def read_yaml(path: str | os.PathLike, error: Callable[[str], Exception], missing: str) -> Any:
    """The YAML document in ``path`` (see :func:`read_text`); invalid YAML, nesting deeper than any setting and keys
    that are not text raise ``error`` naming the file."""
    import yaml

    text = read_text(path, error, missing)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{_shown(path)}: not valid YAML ({' '.join(str(exc).split())[:300]})") from None
    except RecursionError:
        raise error(f"{_shown(path)}: is nested too deep to read; no setting is") from None
    _keys_are_names(data, Path(path), error)
    return data


def read_json(path: str | os.PathLike, error: Callable[[str], Exception], missing: str) -> Any:
    """The JSON in ``path`` (see :func:`read_text`); bad JSON or nesting too deep to read raises ``error`` naming
    the file (``missing`` says what to do when it does not exist)."""
    import json

    text = read_text(path, error, missing)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{_shown(path)}: not valid JSON ({exc})") from None
    except RecursionError:
        raise error(f"{_shown(path)}: is nested too deep to read") from None
