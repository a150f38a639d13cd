"""The real daemon as a subprocess on tmp dirs and a free port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


class DaemonProcess:
    """``selfreflect serve`` in a subprocess.

    Args:
        claude_dir, data_dir: the folders it serves.
        env: extra environment.
    """

    def __init__(self, claude_dir: Path, data_dir: Path, **env: str) -> None:
        self.claude_dir = claude_dir
        self.data_dir = data_dir
        self.env = {**os.environ, "CLAUDE_CONFIG_DIR": str(claude_dir), "SELFREFLECT_HOME": str(data_dir), **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log = data_dir.parent / f"{data_dir.name}-serve.log"

    def start(self, wait: bool = True) -> DaemonProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "selfreflect", "serve", "--port", "0"],
                env=self.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        if wait:
            self.wait_started()
        return self

    def wait_started(self, timeout: float = 60) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        info = self.data_dir / "daemon.json"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if info.exists():
                try:
                    doc = json.loads(info.read_text())
                except ValueError:
                    doc = {}
                if doc.get("pid") == self.proc.pid:
                    self.url = f"http://127.0.0.1:{doc['port']}"
                    return
            time.sleep(0.05)
        raise TimeoutError(f"daemon did not start: {self.log.read_text()[-2000:]}")

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=30)
        response.raise_for_status()
        return response.json() if path != "/metrics" else response.text

    def search(self, q: str, **params: Any) -> list[dict[str, Any]]:
        return list(self.get("/api/search", q=q, **params)["results"])

    def wait_idle(self, timeout: float = 120) -> dict[str, Any]:
        """Until nothing is pending (every transcript read to its end)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.get("/healthz")
            if health["files_pending"] == 0:
                return dict(health)
            time.sleep(0.1)
        raise TimeoutError(f"daemon still busy: {self.get('/healthz')}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def eventually(check: Any, timeout: float = 10.0, every: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(every)


def run_cli(claude_dir: Path, data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``selfreflect ARGS`` in a real process on these folders (no stdin)."""
    return subprocess.run(
        [sys.executable, "-m", "selfreflect", *args],
        env={**os.environ, "CLAUDE_CONFIG_DIR": str(claude_dir), "SELFREFLECT_HOME": str(data_dir), **env},
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
