"""The daemon: one process that owns the store, streams new lines into it and
answers over HTTP on 127.0.0.1.

Lifecycle (uvicorn's): startup (lock the store, load the model, bind the
port, start the watcher and the importer threads), main loop (uvicorn serves
HTTP), graceful shutdown on SIGTERM/SIGINT (the importer finishes its batch,
positions are saved, the store is closed). A second Ctrl-C forces exit:
positions are saved atomically after every batch, so even that loses nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from selfreflect import __version__
from selfreflect.embed import OnnxEmbedder
from selfreflect.errors import SelfReflectError, StoreLocked
from selfreflect.importer import Importer
from selfreflect.memory import limit_malloc_arenas
from selfreflect.settings import Settings
from selfreflect.state import State
from selfreflect.store import Store, open_store
from selfreflect.stream import Streamer

log = logging.getLogger("selfreflect")

INFO_FILE = "daemon.json"


class DaemonRunning(StoreLocked):
    """A daemon already owns this data dir."""


class PortInUse(SelfReflectError):
    """The HTTP port is taken by another program."""


@dataclass(frozen=True)
class DaemonInfo:
    """Who owns the data dir (``<data dir>/daemon.json``, written at startup)."""

    pid: int
    port: int
    started: float
    version: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def running_daemon(data_dir: Path) -> DaemonInfo | None:
    """The daemon serving ``data_dir``, if one is alive."""
    try:
        info = DaemonInfo(**orjson.loads((data_dir / INFO_FILE).read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None
    if info.pid == os.getpid() or not psutil.pid_exists(info.pid):
        return None
    return info


class Daemon:
    """``selfreflect serve``.

    Args:
        settings: the settings (``settings.port``: 0 picks a free port).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = time.time()
        self.embedder = OnnxEmbedder()
        self.store: Store | None = None
        self.streamer: Streamer | None = None
        self.info: DaemonInfo | None = None
        self._threads: list[threading.Thread] = []

    def startup(self) -> socket.socket:
        """Take the store, load the model, bind the port, start streaming.

        Raises:
            DaemonRunning: another daemon owns the data dir.
            PortInUse: the port is taken.
        """
        settings = self.settings
        limit_malloc_arenas()
        try:
            self.store = open_store(settings, self.embedder.name, self.embedder.dim)
        except StoreLocked as exc:
            other = running_daemon(settings.data_dir)
            if other is not None:
                raise DaemonRunning(
                    f"selfreflect serve is already running for {settings.data_dir} "
                    f"(pid {other.pid}, port {other.port})",
                    pid=other.pid,
                ) from exc
            raise
        try:
            sock = _bind(settings.port)
            self.embedder.load()
            importer = Importer(settings, self.store, self.embedder, State.load(settings.state_file))
            self.streamer = Streamer(importer, settings.projects_dir, settings.watch_interval, settings.max_memory_mb)
        except BaseException:
            self.store.close()
            raise
        self.info = DaemonInfo(os.getpid(), sock.getsockname()[1], self.started, __version__)
        _write_atomic(settings.data_dir / INFO_FILE, orjson.dumps(asdict(self.info)))
        if not settings.projects_dir.is_dir():
            log.warning("no Claude Code transcripts at %s yet: watching for them", settings.projects_dir)
        self.streamer.rescan()  # what is behind is known (and reported) from the first request on
        for target, name in ((self.streamer.run, "importer"), (self.streamer.watch, "watcher")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("selfreflect serve: pid %d, http://127.0.0.1:%d", self.info.pid, self.info.port)
        return sock

    def shutdown(self) -> None:
        """Stop streaming (the batch in flight finishes), close the store."""
        if self.streamer is not None:
            self.streamer.stop.set()
            self.streamer.notify(set())
        for thread in self._threads:
            thread.join(timeout=60)
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.info is not None:
            (self.settings.data_dir / INFO_FILE).unlink(missing_ok=True)
        log.info("selfreflect serve: stopped")

    def health(self) -> dict[str, Any]:
        assert self.streamer is not None and self.info is not None
        stats = self.streamer.stats
        return {
            "status": "ok",
            "lag_seconds": stats.lag_seconds,
            "files_pending": stats.files_pending,
            "chunks_indexed": stats.read.chunks,
            "pid": self.info.pid,
            "port": self.info.port,
            "uptime_seconds": round(time.time() - self.started, 1),
        }

    def metrics(self) -> str:
        """Prometheus text exposition."""
        assert self.streamer is not None
        stats = self.streamer.stats
        rows = [
            ("lines_read_total", "counter", "Transcript lines read.", stats.read.lines),
            ("chunks_indexed_total", "counter", "Chunks embedded and written.", stats.read.chunks),
            ("bad_lines_total", "counter", "Lines skipped as not JSON objects.", stats.read.bad_lines),
            ("oversized_lines_total", "counter", "Lines skipped as too long.", stats.read.oversized_lines),
            (
                "failed_reads_total",
                "counter",
                "Transcript reads that failed (vanished, unreadable).",
                stats.failed_reads,
            ),
            ("embed_seconds_total", "counter", "Seconds spent embedding.", round(stats.embed_seconds, 6)),
            ("memory_pauses_total", "counter", "Times intake paused for the memory cap.", stats.memory_pauses),
            ("rescans_total", "counter", "Full rescans of the transcripts folder.", stats.rescans),
            ("queue_depth", "gauge", "Transcripts with lines not yet indexed.", stats.files_pending),
            ("lag_seconds", "gauge", "Age of the oldest change not yet indexed.", stats.lag_seconds),
            ("rss_bytes", "gauge", "Resident memory of the daemon.", self.streamer.rss()),
            ("memory_cap_bytes", "gauge", "The memory cap (MAX_MEMORY_MB).", self.streamer.max_memory),
        ]
        lines = []
        for name, kind, text, value in rows:
            lines += [
                f"# HELP selfreflect_{name} {text}",
                f"# TYPE selfreflect_{name} {kind}",
                f"selfreflect_{name} {value}",
            ]
        return "\n".join(lines) + "\n"


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on 127.0.0.1:{port}: {exc.strerror} (use --port or SELFREFLECT_PORT)") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
