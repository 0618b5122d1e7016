"""A build as a list of named steps: a runner numbers them in its log (``[3/8] ...``), times each and keeps the
wall seconds in a file, so a build resumed after an interruption still reports every step.

    >>> import tempfile
    >>> from pathlib import Path
    >>> times = StepTimes(Path(tempfile.mkdtemp()) / "times.json")
    >>> steps = [Step("fetch", lambda say: say("fetch: done")),
    ...          Step("train", lambda say, part: say(f"train {part}"), parts=lambda: ["a", "b"]),
    ...          Step("pack", lambda say: say.detail("packed"), timed=False)]
    >>> run_steps(steps, times=times, log=print)
    [1/3] fetch: done
    [2/3] train a
    [2/3] train b
          packed
    True
    >>> sorted(times.seconds)
    ['fetch', 'train_a', 'train_b']
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..io import atomic_write_text

__all__ = ["Step", "StepLog", "StepTimes", "run_steps"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    """One step: ``run(say)`` does it, skipping what an earlier run finished. With ``parts`` (a function giving the
    part names when the step starts), ``run(say, part)`` runs once per part, each timed as ``<name>_<part>``.
    ``timed=False``: the step's own time is not kept (the last step writes the record the times go into)."""

    name: str
    run: Callable[..., None]
    parts: Callable[[], Sequence[str]] | None = None
    timed: bool = True


class StepLog:
    """The log as one step sees it: ``say(msg)`` prefixes its number, ``say.detail(msg)`` indents what it runs."""

    def __init__(self, log: Log, number: int, total: int):
        self.log, self.prefix = log, f"[{number}/{total}] "

    def __call__(self, message: str) -> None:
        self.log(self.prefix + message)

    def detail(self, message: str) -> None:
        self.log(" " * 6 + message)


class StepTimes:
    """Wall seconds of every finished step, kept in ``path`` (a resumed build adds to them)."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def record(self, key: str, seconds: float) -> None:
        self.seconds[key] = round(self.seconds.get(key, 0.0) + seconds, 1)
        atomic_write_text(self.path, json.dumps(self.seconds, indent=1))


def run_steps(steps: Sequence[Step], *, times: StepTimes, log: Log, stop_after: str | None = None) -> bool:
    """Run ``steps`` in order, numbered and timed; False when it stopped after the step named ``stop_after``."""
    for number, step in enumerate(steps, start=1):
        say = StepLog(log, number, len(steps))
        runs = [(step.name, ())] if step.parts is None else [(f"{step.name}_{p}", (p,)) for p in step.parts()]
        for key, args in runs:
            started = time.perf_counter()
            step.run(say, *args)
            if step.timed:
                times.record(key, time.perf_counter() - started)
        if step.name == stop_after:
            return False
    return True
