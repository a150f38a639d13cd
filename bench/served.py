"""A daemon a benchmark started: where it answers, and when it has caught up."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# the command as users run it: the script pip installed beside this Python
# (``python -m selfreflect`` also imports runpy: 5-8 ms more), else the module
_SCRIPT = shutil.which("selfreflect", path=os.path.dirname(sys.executable))
SELFREFLECT = [_SCRIPT] if _SCRIPT else [sys.executable, "-m", "selfreflect"]


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


def start(data: Path, env: dict[str, str], log: IO[bytes]) -> tuple[subprocess.Popen[bytes], str, float]:
    """Start ``selfreflect serve --port 0`` with ``env`` (which names ``data``),
    its output to ``log``: the process, its URL, and the seconds until it
    answered ``/healthz``."""
    started = time.perf_counter()
    serve = [sys.executable, "-m", "selfreflect", "serve", "--port", "0"]
    daemon = subprocess.Popen(serve, env=env, stdout=log, stderr=log)
    url = address(data, daemon, every=0.01)
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=10).read()
            return daemon, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.01)


def percentile(values: list[float], share: float) -> float:
    """The value at ``share`` (0.5: the median) of ``values``; 0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0.0


def serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``selfreflect serve --port 0`` with ``env`` (which names its data dir), its output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen([*SELFREFLECT, "serve", "--port", "0"], env=env, stdout=out, stderr=out)


@contextmanager
def daemons(work: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The daemons put in the list are stopped at the end, and ``work`` is removed."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.terminate()
            daemon.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)
