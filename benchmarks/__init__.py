"""Scripts that print measurements (see BENCHMARKS.md); run each as a module from the repository root,
``.venv/bin/python -m benchmarks.NAME``, so that it uses this checkout's ``mess_core`` and ``app``."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
