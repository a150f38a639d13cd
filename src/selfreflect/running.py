"""Who serves a data dir: ``<data dir>/daemon.json``, read without loading
the daemon's machinery (a client that only asks the daemon stays quick to
start); and the command that starts one."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from selfreflect.system import is_same_process

if TYPE_CHECKING:
    from selfreflect.settings import Settings

INFO_FILE = "daemon.json"


@dataclass(frozen=True)
class DaemonInfo:
    """Who serves the data dir (``<data dir>/daemon.json``, written at startup).

    Attributes:
        pid, port: the process and its HTTP port on 127.0.0.1.
        started: when the daemon started (seconds since the epoch).
        version: selfreflect's version.
        instance: this run's id (``/healthz`` answers it too).
        process_started: the process's start time, as the system reports it:
            with ``pid`` it tells this daemon from a later process that got
            the same pid.
        started_by: who started it (``serve``, ``service``, ``mcp (pid N)``).
        host: the address it listens on.
    """

    pid: int
    port: int
    started: float
    version: str
    instance: str = ""
    process_started: float | None = None
    started_by: str = "serve"
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "localhost") else self.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"


def running_daemon(data_dir: Path) -> DaemonInfo | None:
    """The daemon serving ``data_dir``, if it is alive and is the process
    that wrote ``daemon.json`` (not this process, not a pid reused since)."""
    try:
        # json, not orjson: the CLI has json already, and orjson's import was 4 ms of its start
        info = DaemonInfo(**json.loads((data_dir / INFO_FILE).read_bytes()))
    except (OSError, ValueError, TypeError):  # unreadable, not JSON (or not UTF-8), not an object of these fields
        return None
    if info.pid == os.getpid() or not is_same_process(info.pid, info.process_started):
        return None
    return info


def serve_command(settings: Settings, *serve_args: str) -> list[str]:
    """``selfreflect serve SERVE_ARGS`` on ``settings``' folders, for a process
    started outside the caller's working folder (`python -m` puts the working
    folder first on sys.path, and a project's token.py or secrets.py would
    stand in for the standard library's): so its paths are absolute."""
    argv = [sys.executable, "-m", "selfreflect", "--claude-dir", os.path.abspath(settings.claude_dir)]
    argv += ["--data-dir", os.path.abspath(settings.data_dir)]
    if settings.config_file is not None:
        argv += ["--config", os.path.abspath(settings.config_file)]
    return [*argv, "serve", *serve_args]
