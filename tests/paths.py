import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
APP = REPO / "app" / "main.py"
PRECOMPUTED = REPO / "precomputed"
# the README's pictures are refreshed with MESS_SCREENSHOTS=docs/screenshots; otherwise they go to a temp folder
SHOTS = Path(os.environ.get("MESS_SCREENSHOTS", Path(tempfile.gettempdir()) / "mess-screenshots"))


def folder_digest(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder``, each file by its sha256: equal before and after means nothing there
    was written, changed, created or removed."""
    import hashlib

    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }
