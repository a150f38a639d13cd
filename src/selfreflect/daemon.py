"""The daemon: one process that owns the store, streams new lines into it and
answers over HTTP on 127.0.0.1.

Lifecycle (uvicorn's): startup (lock the store, load the model, bind the
port, start the watcher and the importer threads), main loop (uvicorn serves
HTTP), graceful shutdown on SIGTERM/SIGINT (the importer finishes its batch,
positions are saved, the store is closed). A second Ctrl-C forces exit:
positions are saved atomically after every batch, so even that loses nothing.

The worker threads are supervised: one that fails is logged, reported by
``/healthz`` (503 with the reason) and restarted with a growing pause (1 s,
2 s, ... 60 s); ``/metrics`` counts the restarts. Files that keep failing to
index are reported the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from selfreflect import __version__
from selfreflect.compaction import WORK_DIR as COMPACTION_DIR
from selfreflect.compaction import Compaction
from selfreflect.embed import make_embedder
from selfreflect.errors import SelfReflectError, StoreLocked, Unavailable
from selfreflect.importer import Importer
from selfreflect.memory import MemoryPolicy, limit_malloc_arenas
from selfreflect.running import INFO_FILE, DaemonInfo, running_daemon  # noqa: F401  (their home before)
from selfreflect.settings import Settings
from selfreflect.state import State
from selfreflect.status import status_report
from selfreflect.store import FusionPlan, SearchFilter, Store, open_store
from selfreflect.store.edge import EdgeStore
from selfreflect.stream import Streamer
from selfreflect.system import listening_socket, process_started

log = logging.getLogger("selfreflect")


class DaemonRunning(StoreLocked):
    """A daemon already owns this data dir."""


class PortInUse(SelfReflectError):
    """The HTTP port is taken by another program."""


FAILING_READS = 3  # files failing in a row before /healthz says indexing is failing
MAX_RESTART_PAUSE = 60.0
AUTO_COMPACT_LOOK = 60.0  # seconds between looks at whether the store needs compacting
AUTO_COMPACT_RETRY = 3600.0  # seconds before compacting on its own again after that failed


@dataclass
class Worker:
    """A supervised thread of the daemon."""

    name: str
    target: Callable[[], None]
    thread: threading.Thread | None = None
    restarts: int = 0
    fault: str | None = None  # why it is down, while it is
    failures: int = 0


class Daemon:
    """``selfreflect serve``.

    Args:
        settings: the settings (``settings.port``: 0 picks a free port).
    """

    def __init__(self, settings: Settings, started_by: str = "serve") -> None:
        self.settings = settings
        self.started_by = started_by
        self.started = time.time()
        self.embedder = make_embedder(settings)
        self.store: Store | None = None
        self.streamer: Streamer | None = None
        self.info: DaemonInfo | None = None
        self.workers: list[Worker] = []
        self.compaction: Compaction | None = None  # the last one asked for
        self._stopping = threading.Event()
        self._compacting = threading.Lock()
        self._next_look = 0.0  # when to look again whether the store needs compacting

    def startup(self) -> socket.socket:
        """Take the store, load the model, bind the port, start streaming.

        Raises:
            DaemonRunning: another daemon owns the data dir.
            PortInUse: the port is taken.
        """
        settings = self.settings
        limit_malloc_arenas()
        memory = MemoryPolicy(settings.max_memory_mb)
        try:
            self.store = open_store(settings, self.embedder.name, self.embedder.dim, "serve", memory)
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
            sock = _bind(settings.host, settings.port)
            self.embedder.load()
            importer = Importer(settings, self.store, self.embedder, State.load(settings.state_file))
            self.streamer = Streamer(importer, settings.projects_dir, settings.watch_interval, memory)
            self.streamer.on_caught_up = self._compact_on_its_own
            shutil.rmtree(settings.data_dir / COMPACTION_DIR, ignore_errors=True)  # what a killed daemon left
        except BaseException:
            self.store.close()
            raise
        pid = os.getpid()
        port = sock.getsockname()[1]
        self.info = DaemonInfo(
            pid, port, self.started, __version__, uuid.uuid4().hex, process_started(pid), self.started_by, settings.host
        )
        _write_atomic(settings.data_dir / INFO_FILE, orjson.dumps(asdict(self.info)))
        if not settings.projects_dir.is_dir():
            log.warning("no Claude Code transcripts at %s yet: watching for them", settings.projects_dir)
        try:
            self.streamer.rescan()  # what is behind is known (and reported) from the first request on
        except Exception:
            log.exception("the first scan of %s failed; the importer retries", settings.projects_dir)
        for name, target in (("importer", self.streamer.run), ("watcher", self.streamer.watch)):
            self.start_worker(Worker(name, target))
        threading.Thread(target=self._warm_up, name="warm-up", daemon=True).start()
        log.info("selfreflect serve: pid %d, %s", self.info.pid, self.info.url)
        return sock

    def _warm_up(self) -> None:
        """Once, as the daemon starts: a query through the engine, and the
        status if nothing is waiting to be read. The engine's first query on
        a store loads what the later ones reuse (at 250k chunks, a fresh
        daemon's first search took 260-280 ms, 110-120 ms after this), and
        the status's per-project table is ready before anyone asks (375 ms
        at 250k); with a backlog it would be out of date at once. The model
        is not asked: its first call costs a few ms, and it may be a paid
        service."""
        store, streamer = self.store, self.streamer
        if store is None or streamer is None:
            return
        try:
            store.hybrid([1.0] + [0.0] * (store.dim - 1), "warm up", SearchFilter(), 1, FusionPlan())
            if not streamer.stats.files_pending:
                status_report(self.settings, store, streamer.importer.state, streamer.transcripts())
        except Exception as exc:  # stopped meanwhile, a server that is away: the first ask pays, as without this
            log.debug("warming up failed: %s", exc)

    def start_worker(self, worker: Worker) -> None:
        """Run ``worker`` in a thread that restarts it when it fails."""
        worker.thread = threading.Thread(target=self._supervise, args=(worker,), name=worker.name, daemon=True)
        self.workers.append(worker)
        worker.thread.start()

    def _supervise(self, worker: Worker) -> None:
        pause = 1.0
        while not self._stopping.is_set():
            try:
                worker.target()
                if self._stopping.is_set():
                    return
                raise RuntimeError("it returned while the daemon runs")
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                log.exception("the %s thread failed (%s); restarting it in %.0f s", worker.name, reason, pause)
                worker.fault = f"the {worker.name} thread failed ({reason}); restarting in {pause:.0f} s"
                worker.failures += 1
            self._stopping.wait(pause)
            pause = min(pause * 2, MAX_RESTART_PAUSE)
            worker.restarts += 1
            worker.fault = None
            log.info("restarting the %s thread (restart %d)", worker.name, worker.restarts)

    def shutdown(self) -> None:
        """Stop streaming (the batch in flight finishes), close the store."""
        self._stopping.set()
        if self.streamer is not None:
            self.streamer.stop.set()
            self.streamer.notify(set())
        for worker in self.workers:
            if worker.thread is not None:
                worker.thread.join(timeout=60)
        with self._compacting:  # none starts once stopping is set
            compaction = self.compaction
        if compaction is not None and compaction.thread.ident is not None:
            compaction.thread.join(timeout=60)  # its process is killed within a second
        if self.store is not None:
            self.store.close()
            self.store = None
        if self.info is not None:
            (self.settings.data_dir / INFO_FILE).unlink(missing_ok=True)
        log.info("selfreflect serve: stopped")

    def problems(self) -> list[str]:
        """Why the daemon is not doing its job right now (empty: it is)."""
        assert self.streamer is not None
        found = [w.fault for w in self.workers if w.fault]
        found += [f"the {w.name} thread is not running" for w in self.workers if w.thread and not w.thread.is_alive()]
        stats = self.streamer.stats
        if stats.store_fault:
            found.append(stats.store_fault)
        if stats.failing_reads >= FAILING_READS:
            found.append(f"indexing keeps failing ({stats.failing_reads} files in a row): {stats.last_failure}")
        return found

    def health(self) -> dict[str, Any]:
        """``/healthz``: ``status`` is ``ok``, or ``failing`` with ``problems``."""
        assert self.streamer is not None and self.info is not None
        stats = self.streamer.stats
        problems = self.problems()
        return {
            "status": "failing" if problems else "ok",
            "problems": problems,
            "lag_seconds": stats.lag_seconds,
            "files_pending": stats.files_pending,
            "chunks_indexed": stats.read.chunks,
            "lines_read": stats.read.lines,
            "bad_lines": stats.read.bad_lines,
            "oversized_lines": stats.read.oversized_lines,
            "failed_reads": stats.failed_reads,
            "skipped_entries": stats.skipped_entries,
            "restarts": {w.name: w.restarts for w in self.workers},
            "pid": self.info.pid,
            "port": self.info.port,
            "instance": self.info.instance,
            "started_by": self.info.started_by,
            "version": self.info.version,
            "uptime_seconds": round(time.time() - self.started, 1),
            "compaction": self.compaction.report() if self.compaction else None,
        }

    def catch_up(self) -> dict[str, Any]:
        """Look for new lines in every transcript now (``selfreflect import``
        while the daemon runs); the importer thread does the reading."""
        assert self.streamer is not None
        self.streamer.rescan()
        self.streamer.notify(set())
        return self.health()

    def compact(self, if_needed: bool = False, automatic: bool = False) -> dict[str, Any] | None:
        """Compact the store in another process (:mod:`selfreflect.compaction`),
        or say how the one under way stands; ``if_needed``: only if the store
        holds many small segments (None when it does not); ``automatic``:
        the daemon's own idea.

        Raises:
            SelfReflectError: the store is a Qdrant server's (it merges its own).
        """
        assert self.streamer is not None
        store = self.store
        if not isinstance(store, EdgeStore):
            if if_needed:
                return None
            raise SelfReflectError("the Qdrant server merges its own segments: there is nothing to compact here")
        with self._compacting:
            if self._stopping.is_set():
                raise Unavailable("the daemon is stopping")
            if self.compaction is None or not self.compaction.running:
                if if_needed and not store.needs_compaction():
                    return None
                streamer = self.streamer
                self.compaction = Compaction(
                    store, self.settings.data_dir, streamer.between_batches, streamer.stop, automatic
                )
                self.compaction.thread.start()
            return self.compaction.report()

    def _compact_on_its_own(self) -> None:
        """Reading has caught up: compact if the store holds many small
        segments (``auto_compact``), looked at once a minute at most, and
        not within an hour of a compaction of its own that failed."""
        now = time.monotonic()
        if not self.settings.auto_compact or now < self._next_look:
            return
        self._next_look = now + AUTO_COMPACT_LOOK
        last = self.compaction
        failed_lately = last and last.automatic and last.phase == "failed" and last.finished_within(AUTO_COMPACT_RETRY)
        if failed_lately or (last and last.running):
            return
        if self.compact(if_needed=True, automatic=True):
            log.info("the store holds many small segments: compacting it")

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
            ("skipped_entries", "gauge", "Entries the last rescan skipped (FIFOs, loops, ...).", stats.skipped_entries),
            (
                "worker_restarts_total",
                "counter",
                "Times a failed worker thread was restarted.",
                sum(w.restarts for w in self.workers),
            ),
            (
                "faults_total",
                "counter",
                "Worker failures, failed reads, writes paused (a full disk, an embedding service that failed).",
                self._faults(),
            ),
            (
                "store_faults_total",
                "counter",
                "Writes paused: a full disk, an embedding service that failed.",
                stats.store_faults,
            ),
            ("queue_depth", "gauge", "Transcripts with lines not yet indexed.", stats.files_pending),
            ("lag_seconds", "gauge", "Age of the oldest change not yet indexed.", stats.lag_seconds),
            ("rss_bytes", "gauge", "Resident memory of the daemon.", self.streamer.memory.rss()),
            ("memory_cap_bytes", "gauge", "The memory cap (MAX_MEMORY_MB).", self.streamer.memory.cap or 0),
        ]
        lines = []
        for name, kind, text, value in rows:
            lines += [
                f"# HELP selfreflect_{name} {text}",
                f"# TYPE selfreflect_{name} {kind}",
                f"selfreflect_{name} {value}",
            ]
        return "\n".join(lines) + "\n"

    def _faults(self) -> int:
        assert self.streamer is not None
        stats = self.streamer.stats
        return sum(w.failures for w in self.workers) + stats.failed_reads + stats.store_faults


def _bind(host: str, port: int) -> socket.socket:
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror} (use --port or SELFREFLECT_PORT)") from exc
    sock.set_inheritable(True)
    return sock


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
