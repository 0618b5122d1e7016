"""Where a command may write a folder, and one writer per folder at a time.

A command that writes a folder (``train --out``, ``study build --work`` and ``--out``) writes only into a new or empty
folder, or into its own earlier output, recognised by what it holds (:func:`claim_folder`); anything else is refused
before anything is written, naming what is there. :func:`folder_lock` keeps a second writer out of a folder while one
works in it: a lock file names the holder's process, and a lock whose process is gone is taken over.

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
import json
import os
import socket
import time
from pathlib import Path
from typing import Callable, Iterator

from .io import OutputError, environment_fault

__all__ = ["LOCK", "claim_folder", "folder_lock"]

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
        entries = sorted(p.name for p in path.iterdir() if p.name != LOCK)
    except OSError as exc:
        raise environment_fault(path, exc) or exc from None
    if not entries or own(path):
        return
    shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
    raise OutputError(f"{path}: holds {shown}, which {what} did not write; {hint}")


def _holder(lock: Path) -> dict:
    try:
        data = json.loads(lock.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(holder: dict) -> bool:
    """Whether the lock's process still runs (on another machine: assume it does, we cannot tell)."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def folder_lock(path: str | os.PathLike, *, what: str) -> Iterator[None]:
    """Hold ``path`` (created if needed, and removed again if it is left empty) for this process while the block
    runs: a second writer is refused naming the first; a lock left by a process that is gone is taken over."""
    path = Path(path)
    lock = path / LOCK
    made = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise environment_fault(path, exc) or exc from None
    record = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder and _alive(holder):
                raise OutputError(
                    f"{path}: {holder.get('what', 'another command')} (process {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('started')}) is writing it now; wait for it to finish "
                    f"or stop it, then run again (if no such process runs, delete {lock})") from None
            with contextlib.suppress(OSError):
                if not holder and time.time() - lock.stat().st_mtime < 5:  # being written this instant
                    time.sleep(0.5)
                    continue
            lock.unlink(missing_ok=True)  # its process is gone: the lock is stale
            continue
        except OSError as exc:
            raise environment_fault(lock, exc) or exc from None
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        break
    else:
        raise OutputError(f"{lock}: could not take the lock of {path}; delete {lock} if no command is writing there")
    try:
        yield
    finally:
        if _holder(lock).get("pid") == record["pid"]:
            lock.unlink(missing_ok=True)
        if made:  # a command that failed before writing anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                path.rmdir()
