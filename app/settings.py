"""Where the app finds things: the repository it runs from, and the studies its sidebar offers (read from the
environment on every run, so that a test or a deployment can point it elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

from mess_core.study import DEFAULT_STUDY

REPO = Path(__file__).resolve().parents[1]


def studies_root() -> Path:
    """Where the chooser looks for studies: ``precomputed/``, or ``$MESS_STUDIES``."""
    return Path(os.environ.get("MESS_STUDIES", REPO / "precomputed"))


def default_study() -> str:
    """The study the chooser opens first: ``$MESS_DEFAULT_STUDY``, else the shipped default."""
    return os.environ.get("MESS_DEFAULT_STUDY", DEFAULT_STUDY)
