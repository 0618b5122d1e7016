"""A study build's runs: which folders a build may write into, and each training run trained, resumed from its
checkpoint or skipped when done, but never reused when it was trained with other settings than the study asks for.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "pretrain").mkdir(); (folder / "val.npz").write_bytes(b"")
    0
    >>> holds_build_work(folder), study_name(folder)
    (True, None)
    >>> (folder / "notes.txt").write_text("mine")
    4
    >>> holds_build_work(folder)
    False
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ..folders import written_by_others
from ..train import TrainConfig, load_run_config, train
from ..train.loop import CHECKPOINT
from ..train.run import RESULT_FILES
from .config import LATENCY, MANIFEST, STAGES, USER_MODEL, WEIGHTS, StudyError
from .steps import StepLog

__all__ = ["holds_build_work", "study_name", "check_run", "train_or_resume", "WORK_ENTRIES"]


# what a build writes into its work folder (besides *.npz caches)
WORK_ENTRIES = frozenset([*STAGES, "variants", "build_times.json", WEIGHTS, USER_MODEL, LATENCY])


def holds_build_work(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but what a build writes: a build resumes only in its own work folder."""
    return all(
        name in WORK_ENTRIES or (Path(name).suffix == ".npz" and (folder / name).is_file())
        for name in written_by_others(folder)
    )


def study_name(folder: Path) -> str | None:
    """The name of the study in ``folder`` (None when there is none): a build replaces only an earlier build of its
    own study."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("name") if isinstance(manifest, dict) else None


def check_run(run_dir: Path, wanted: dict[str, Any]) -> None:
    """Refuse to reuse a run folder trained with other settings than the study asks for now."""
    if not (run_dir / "config.yaml").is_file():
        return

    def plain(value: Any) -> Any:  # tuples from YAML-built configs and lists from files compare equal
        return json.loads(json.dumps(value))

    held = plain(load_run_config(run_dir).to_dict())
    wanted = plain(wanted)
    # a run written before a setting existed ran with that setting's default
    defaults = plain(
        {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    )
    # where a run lives (out, and init: the previous stage in the same work folder) may change when a folder moves,
    # but whether it started from another run or from scratch may not; how it runs (loader processes, device, a
    # progress bar) does not change what it computes (every sample's augmentation is seeded by its own index)
    differ = sorted(
        k
        for k in wanted
        if k not in ("out", "init", "progress", "workers", "device") and held.get(k, defaults.get(k)) != wanted[k]
    )
    if (held.get("init") is None) != (wanted.get("init") is None):
        differ.append("init")
    if differ:
        detail = ", ".join(f"{k}: {held.get(k)!r} there, {wanted[k]!r} now" for k in differ[:4])
        raise StudyError(
            f"{run_dir}: holds a run with other settings ({detail}); delete that folder to retrain it "
            "with these, or build into another --work folder"
        )


def train_or_resume(say: StepLog, what: str, wanted: TrainConfig, *, starting: str = "training") -> None:
    """Train the run ``wanted`` describes, resume it from its checkpoint, or skip it when its result exists; a run
    folder holding other settings is refused."""
    run_dir = Path(wanted.out)
    check_run(run_dir, wanted.to_dict())
    result = run_dir / RESULT_FILES[wanted.stage]
    if result.is_file():
        say(f"{what}: done earlier ({result})")
        return
    resume = (run_dir / CHECKPOINT).is_file()
    say(f"{what}: {'resuming from its checkpoint' if resume else starting}")
    train(wanted, resume=resume, log=lambda msg: say.detail(f"{what}: {msg}"))
