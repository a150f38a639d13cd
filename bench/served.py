"""A daemon a benchmark started: where it answers, and when it has caught up."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path


def address(data: Path, daemon: subprocess.Popen[bytes], every: float = 0.05) -> str:
    """The URL of ``daemon``, serving ``data``, once it has written ``daemon.json``."""
    while not (data / "daemon.json").exists():
        if daemon.poll() is not None:
            raise SystemExit(f"the daemon exited (code {daemon.returncode}) before it served {data}; see its log")
        time.sleep(every)
    return f"http://127.0.0.1:{json.loads((data / 'daemon.json').read_text())['port']}"


def caught_up(url: str) -> None:
    """Wait until the daemon at ``url`` answers and has no file left to read."""
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:
                if json.load(answer)["files_pending"] == 0:
                    return
        except OSError:  # not answering yet
            pass
        time.sleep(0.2)
