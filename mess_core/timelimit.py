"""A time limit for running a user's model on an example input, so that a model far too slow at the asked size is
named instead of hanging a command.

The limit is ``$MESS_TIME_LIMIT`` seconds (default 600; 0 switches it off). It is enforced with a timer signal, so it
applies in a program's main thread only, and it interrupts between operations, never inside one.

    >>> import time
    >>> with time_limit("sleeping", seconds=0.05):  # doctest: +ELLIPSIS
    ...     time.sleep(1)
    Traceback (most recent call last):
    ...
    mess_core.timelimit.TimeLimitExceeded: sleeping took more than 0.05 s, far longer ...
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

from .errors import MessError

__all__ = ["TimeLimitExceeded", "time_limit", "ENV", "DEFAULT_SECONDS"]

ENV = "MESS_TIME_LIMIT"
DEFAULT_SECONDS = 600.0


class TimeLimitExceeded(MessError):
    """A model took longer than the time limit (see the module docstring)."""


def _limit() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV, DEFAULT_SECONDS)))
    except ValueError:
        raise MessError(f"{ENV}={os.environ[ENV]!r}: expected a number of seconds (0: no limit)") from None


@contextlib.contextmanager
def time_limit(what: str, *, seconds: float | None = None) -> Iterator[None]:
    """Raise :class:`TimeLimitExceeded` naming ``what`` when the block runs longer than ``seconds`` (default: the
    limit of the module docstring). Without effect outside the main thread, or when a limit is already running."""
    seconds = _limit() if seconds is None else seconds
    usable = (
        seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    )
    if not usable:
        yield
        return

    def expired(_signum, _frame):
        raise TimeLimitExceeded(
            f"{what} took more than {seconds:g} s, far longer than a model should at this size; "
            f"try a smaller input size, or set {ENV}=SECONDS to wait longer (0: no limit)"
        )

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
