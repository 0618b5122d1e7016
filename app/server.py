"""The app as a person starts it: ``streamlit run app/main.py``, headless on a free local port, until the block
ends. The browser tests and the browser benchmarks drive this server, so that what they measure is the app a user
runs, not a test harness.

Example (not run here: it starts a server)::

    with served({"MESS_DEFAULT_STUDY": "precomputed/camvid-mobilenetv2-fcn"}) as url:
        ...  # open url in a browser
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from typing import Iterator, Mapping

from app.settings import REPO

__all__ = ["served"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def served(env: Mapping[str, str] | None = None, *, start_timeout: float = 120.0) -> Iterator[str]:
    """Start the app and yield its address once its health endpoint answers; stop it when the block ends.

    Args:
        env: the server's environment (default: this process's). ``MESS_DEFAULT_STUDY`` and ``MESS_STUDIES`` choose
            what it opens.
        start_timeout: seconds to wait for the server before giving up with its own output in the message.
    """
    port = _free_port()
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "main.py"), "--server.headless", "true"]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    command += ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    # the server's output goes to a file, not a pipe nobody reads, whose filling would stall the server
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        command, cwd=REPO, env=dict(os.environ if env is None else env), stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + start_timeout
    try:
        while True:  # the server's own health endpoint says when it accepts sessions
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    log.seek(0)
                    raise RuntimeError(f"`streamlit run app/main.py` did not start:\n{log.read()}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
