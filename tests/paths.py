from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app" / "main.py"
PRECOMPUTED = REPO / "precomputed"
