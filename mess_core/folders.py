"""Where a command may write a folder, and one writer per folder at a time.

A command that writes a folder (``train --out``, ``study build --work`` and ``--out``) writes only into a new or empty
folder, or into its own earlier output, recognised by what it holds (:func:`claim_folder`); anything else is refused
before anything is written, naming what is there. :func:`folder_lock` keeps a second writer out of a folder while one
works in it: the operating system's lock on a file that names the holder, released however its process ends.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "thesis.txt").write_text("four years of work")
    >>> claim_folder(folder, own=lambda p: False, what="study build", hint="choose a new or empty --out")
    Traceback (most recent call last):
    ...
    mess_core.io.OutputError: ...: holds thesis.txt, which study build did not write; choose a new or empty --out
    >>> with folder_lock(folder / "run", what="train"):
    ...     (folder / "run" / LOCK).is_file()
    True
    >>> (folder / "run" / LOCK).exists()
    False
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from .io import OutputError, environment_fault

__all__ = ["LOCK", "claim_folder", "folder_lock", "is_leftover", "written_by_others"]

LOCK = ".mess.lock"


def claim_folder(path: str | os.PathLike, *, own: Callable[[Path], bool], what: str, hint: str) -> None:
    """Refuse to write into ``path`` unless it does not exist, is empty, or ``own(path)`` recognises it as ``what``'s
    own earlier output; ``hint`` says what to do instead."""
    path = Path(path)
    try:
        if not path.exists():
            return
        if not path.is_dir():
            raise OutputError(f"{path}: is a file, not a folder; {hint}")
        entries = written_by_others(path)
    except OSError as exc:
        raise environment_fault(path, exc) or exc from None
    if not entries or own(path):
        return
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    raise OutputError(f"{path}: holds {shown}, which {what} did not write; {hint}")


def written_by_others(folder: Path) -> list[str]:
    """The names in ``folder`` besides the lock and a killed writer's leftovers: what a writer has to recognise."""
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK and not is_leftover(p.name))


def is_leftover(name: str) -> bool:
    """Whether ``name`` is a temporary file the atomic writer (:func:`mess_core.io.atomic_open`) left when its process
    was killed mid-write: it belongs to the folder's writer, and the next run of it may write again."""
    return name.startswith(".") and name.endswith(".tmp")


def _holder(lock: Path) -> dict:
    try:
        data = json.loads(lock.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike, *, what: str) -> Iterator[None]:
    """Hold ``path`` (created if needed, and removed again if it is left empty) for this process while the block
    runs: a second writer is refused naming the first. The lock is the operating system's (``flock`` on a file in
    the folder), so it ends with its process however that ends: a lock file left behind by a killed process takes
    nothing from the next writer."""
    path = Path(path)
    lock = path / LOCK
    made = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise environment_fault(path, exc) or exc from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(lock)
            raise OutputError(
                f"{path}: {holder.get('what', 'another command')} (process {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, since {holder.get('started', '?')}) is writing it now; wait for it to "
                "finish or stop it, then run again"
            ) from None
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "what": what,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        try:
            yield
        finally:
            if made and all(p.name == LOCK for p in path.iterdir()):  # nothing written: leave no folder behind
                with contextlib.suppress(OSError):
                    lock.unlink()
                    path.rmdir()
    finally:
        os.close(fd)  # releases the lock
