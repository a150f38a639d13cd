"""The streaming importer: file events in, new lines searchable within a second.

File events (watchfiles: inotify on Linux, FSEvents on macOS) make a changed
transcript "live"; a full rescan every ``watch_interval`` seconds catches what
events missed (new project folders, network filesystems, dropped events).
Claude Code's ``history.jsonl`` is watched and queued the same way (it is
read by :meth:`Importer.import_history`).
Live files are read first, each a few batches at a time, so a backlog of old
files never delays the session being written now. A memory guard keeps the
process under its cap (:class:`selfreflect.memory.MemoryPolicy`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from selfreflect.discover import TranscriptFile
from selfreflect.errors import ClaudeDirMissing, Unavailable
from selfreflect.importer import Importer, ImportSummary
from selfreflect.memory import MemoryPolicy

log = logging.getLogger("selfreflect")

BATCHES_PER_TURN = 2  # batches one file gets before the scheduler looks again
BACKFILL_CHUNKS = 8  # chunks per batch of a file nobody is writing: a live one waits less
TIERS = ("event", "active", "backlog")  # file events, written in the last 5 min, the rest
MAX_FAULT_PAUSE = 30.0  # the longest wait before writing again after a full disk or a failed embedding


@dataclass
class StreamStats:
    """Counters and gauges the daemon exports (``/metrics``, ``/healthz``)."""

    read: ImportSummary = field(default_factory=ImportSummary)  # totals since startup
    failed_reads: int = 0
    embed_seconds: float = 0.0
    files_pending: int = 0
    lag_seconds: float = 0.0
    memory_pauses: int = 0
    rescans: int = 0
    failing_reads: int = 0  # files that failed in a row (0 after a read that worked)
    last_failure: str = ""
    skipped_entries: int = 0  # entries the last rescan skipped (FIFOs, loops, unreadable folders, ...)
    store_fault: str = ""  # why writing is paused (a full disk, a failing embedding service), while it is
    store_faults: int = 0


class Turn:
    """The turn to write into the store: the importer takes it for each
    batch, a reflection or ``forget`` for its write, a compaction to copy
    the store and to swap the copy in, so whoever holds it knows nothing
    else is being written meanwhile. While a long job holds it
    (:meth:`held`), whoever asks (``with turn:``) is refused at once with
    the job's reason instead of waiting; the importer waits
    (:meth:`waiting`): it has nothing else to do.

    Raises:
        Unavailable: on entering, while a long job holds it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held_for = ""

    def __enter__(self) -> None:
        while not self._lock.acquire(timeout=0.1):
            if self._held_for:
                raise Unavailable(self._held_for)

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Take it, however long a job holds it."""
        with self._lock:
            yield

    @contextmanager
    def held(self, reason: str) -> Iterator[None]:
        """Hold it for a long job (waiting for the batch in flight); others
        are told ``reason``."""
        with self.waiting():
            self._held_for = reason
            try:
                yield
            finally:
                self._held_for = ""


class Streamer:
    """Keeps the index current with the transcripts on disk.

    Args:
        importer: the pipeline (it owns the store and the positions).
        projects_dir: the folder to watch.
        watch_interval: seconds between full rescans.
        memory: the process's memory policy (its cap, when memory is given back).
    """

    def __init__(self, importer: Importer, projects_dir: Path, watch_interval: float, memory: MemoryPolicy) -> None:
        self.importer = importer
        self.projects_dir = projects_dir
        self.watch_interval = watch_interval
        self.memory = memory
        self.stats = StreamStats()
        self.stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        # tier -> path -> when it was first seen changed (dicts keep queue order)
        self._queues: dict[str, dict[str, float]] = {tier: {} for tier in TIERS}
        self._changed: set[str] = set()  # changed again while being read
        self._reported: set[tuple[str, str]] = set()  # skipped entries already logged
        self._seen: dict[str, TranscriptFile] | None = None  # key -> as last scanned or read; None: not scanned yet
        self.between_batches = Turn()  # held while a file is read: taken, no batch is in flight
        self.on_caught_up: Callable[[], None] | None = None  # called when reading has caught up

    # -- events in ---------------------------------------------------------------

    def notify(self, paths: set[str]) -> None:
        """Files that changed (from the watcher): read them next."""
        now = time.time()
        with self._lock:
            for path in paths:
                since = min([now] + [q.pop(path) for q in self._queues.values() if path in q])
                self._queues["event"].setdefault(path, since)
                self._changed.add(path)
        self._update_gauges()
        self._wake.set()

    def watch(self) -> None:
        """Feed file events to :meth:`notify` until :attr:`stop` is set (a thread).

        Once the watcher is watching (its first answer, events or a quiet
        second), everything is scanned again: what was written between the
        last scan and the start of the watch raised no event.
        """
        import watchfiles

        while not self.stop.is_set():
            if not self.projects_dir.is_dir():
                self.stop.wait(1.0)
                continue
            history = self.importer.settings.history_file
            watched = [self.projects_dir] + (
                [history] if self.importer.settings.index_history and history.is_file() else []
            )
            try:
                watching = False
                for changes in watchfiles.watch(
                    *watched,
                    watch_filter=lambda _change, path: path.endswith(".jsonl"),
                    debounce=50,
                    step=20,
                    stop_event=self.stop,
                    rust_timeout=1000,
                    yield_on_timeout=True,
                    raise_interrupt=False,
                ):
                    if not watching:
                        watching = True
                        self.rescan()
                        self._wake.set()
                    if changes:
                        self.notify({path for _change, path in changes})
            except (FileNotFoundError, RuntimeError, OSError) as exc:
                log.warning("watching %s failed (%s); retrying", self.projects_dir, exc)
                self.stop.wait(1.0)

    # -- the loop ----------------------------------------------------------------

    def run(self, on_batch: Callable[[], None] | None = None) -> None:
        """Index until :attr:`stop` is set (a thread): live files first, then the backlog."""
        next_scan = time.monotonic() + self.watch_interval  # the daemon scanned at startup
        caught_up = False
        fault_pause = 1.0
        while not self.stop.is_set():
            if time.monotonic() >= next_scan:
                next_scan = time.monotonic() + self.watch_interval
                try:
                    self.rescan()
                except Exception as exc:  # a folder that vanished mid-walk, a damaged one: next time
                    log.warning(
                        "scanning %s failed (%s); trying again in %.0f s", self.projects_dir, exc, self.watch_interval
                    )
            path, tier = self._next()
            if path is None:
                self._update_gauges()
                self.memory.idle(first=not caught_up)
                if not caught_up and self.on_caught_up is not None:
                    try:
                        self.on_caught_up()
                    except Exception:
                        log.exception("after catching up")
                caught_up = True
                self._wake.wait(timeout=max(0.0, min(next_scan - time.monotonic(), 1.0)))
                self._wake.clear()
                continue
            caught_up = False
            if self.memory.guard(self.stop):
                self.stats.memory_pauses += 1
            with self._lock:
                self._changed.discard(path)
            try:
                with self.between_batches.waiting():
                    more = self._read(path, tier)
                self.stats.failing_reads = 0
                self.stats.store_fault, fault_pause = "", 1.0
            except Unavailable as exc:  # a full disk, an embedding service out: the position did not move, so
                # nothing is lost (a chunk written before the fault is written again under its id); wait, retry
                with self._lock:
                    self.stats.store_fault = f"writing paused: {exc}"
                    self.stats.store_faults += 1
                log.warning("%s; retrying in %.0f s", exc, fault_pause)
                self.stop.wait(fault_pause)
                fault_pause = min(fault_pause * 2, MAX_FAULT_PAUSE)
                more = True  # the file stays queued
            except Exception as exc:  # one file must not stop the importer: the next rescan retries it
                log.exception("%s: indexing failed; will retry at the next rescan", path)
                more = False
                with self._lock:
                    self.stats.failed_reads += 1
                    self.stats.failing_reads += 1
                    self.stats.last_failure = f"{path}: {type(exc).__name__}: {exc}"
                    self._changed.discard(path)
            with self._lock:
                queue = self._queues[tier]
                if path not in queue:
                    pass  # an event moved it up a tier meanwhile
                elif more or path in self._changed:  # not done: back of its queue, behind the others
                    queue[path] = queue.pop(path)
                else:
                    del queue[path]
            self._update_gauges()
            self.memory.after_batch()
            if on_batch:
                on_batch()

    def rescan(self) -> None:
        """Queue every transcript with lines not indexed yet or bytes the archive should take."""
        skipped: list[tuple[str, str]] = []
        try:
            files = self.importer.archive.transcripts(report=lambda path, why: skipped.append((path, why)))
        except ClaudeDirMissing:
            with self._lock:
                self._seen = {}
            return
        for path, why in set(skipped) - self._reported:  # logged once, not at every rescan
            log.warning("%s: skipped: %s", path, why)
        self._reported = set(skipped)
        self.stats.skipped_entries = len(skipped)
        now = time.time()
        with self._lock:
            self._seen = {transcript.key: transcript for transcript in files}
            for transcript in files:
                if not self.importer.needs_reading(transcript, now):
                    continue  # most of them: the path is made once, there
                path = str(transcript.path)
                if not any(path in q for q in self._queues.values()):
                    self._queues["active" if transcript.active(now) else "backlog"][path] = now
            history = str(self.importer.settings.history_file)
            if self.importer.history_changed() and not any(history in q for q in self._queues.values()):
                self._queues["active"][history] = now
            self.stats.rescans += 1
        self._update_gauges()

    def transcripts(self) -> list[TranscriptFile] | None:
        """Every transcript as the last scan found it, or as it was when read
        since (on disk, then those only the archive holds); ``None`` before
        the first scan."""
        with self._lock:
            return None if self._seen is None else list(self._seen.values())

    def _saw(self, path: str, transcript: TranscriptFile | None) -> None:
        key = transcript.key if transcript else self.importer.archive.key_of(Path(path))
        with self._lock:
            if self._seen is None or key is None:
                return
            if transcript is None:
                self._seen.pop(key, None)
            else:
                self._seen[key] = transcript

    def _next(self) -> tuple[str | None, str]:
        with self._lock:
            for tier in TIERS:
                if self._queues[tier]:
                    return next(iter(self._queues[tier])), tier
        return None, ""

    def _read(self, path: str, tier: str) -> bool:
        history = path == str(self.importer.settings.history_file)
        transcript = None
        if not history:
            transcript = self.importer.locate(path)
            self._saw(path, transcript)  # what status tells of it: as it is now
            if transcript is None:
                return False  # deleted and not archived (what was indexed stays), or not a transcript
        summary = ImportSummary()
        started = time.perf_counter()
        events = self._queues["event"]
        if tier == "event":  # a file being written: its batches at once
            size, should_yield = self.memory.batch_limit, None
        else:  # small batches, and out of the way as soon as a written file has news
            size, should_yield = self.memory.batch_limit or BACKFILL_CHUNKS, lambda: bool(events)
        if transcript is not None:
            more = self.importer.import_file(transcript, summary, BATCHES_PER_TURN, size, should_yield)
        else:
            more = self.importer.import_history(summary, BATCHES_PER_TURN, size, should_yield)
        with self._lock:
            stats = self.stats
            stats.read.add(summary)
            stats.failed_reads += len(summary.failed_files)
            stats.embed_seconds += self.importer.embed_seconds
            self.importer.embed_seconds = 0.0
        log.debug(
            "%s: %d lines, %d chunks in %.3f s", path, summary.lines, summary.chunks, time.perf_counter() - started
        )
        return more

    def _update_gauges(self) -> None:
        now = time.time()
        with self._lock:
            pending = {path: since for q in self._queues.values() for path, since in q.items()}
            self.stats.files_pending = len(pending)
            self.stats.lag_seconds = round(now - min(pending.values()), 3) if pending else 0.0
