"""Compaction while the daemon serves: a copy of the store is compacted by a
process of its own and swapped in.

A store the daemon filled holds many small segments (62 at 250k chunks),
and every search visits each. ``selfreflect compact`` merges them, but the
engine holds Python's lock for the whole of a merge (45 s for one step of
a 250k store, measured), and a merge maps hundreds of MB of the store's
files: a daemon merging its own segments would answer nothing meanwhile.
So :class:`Compaction`, on a thread of its own:

1. takes the turn to write (the batch in flight ends first; a reflection
   or ``forget`` is told to try again), flushes the store, so that its
   files are the whole store, and runs ``python -m selfreflect.compaction
   <store> <copy> <pid>``, which copies them to
   ``<data dir>/compacting/store`` (the engine's files are sparse: the
   holes are skipped, 1.4 GB of blocks at 250k chunks) and says so. The
   copy is made there, not in the daemon: each of its thousands of file
   operations would wait here for Python's lock, which the engine holds
   through every search (at 250k chunks: 5 s alone; beside searches back
   to back, 33-37 s in the daemon, 10-12 s in that process; measured).
   From then on the store notes what is written to it (:class:`Journal`),
   and the turn is given back: the importer goes on reading, reflections
   are stored;
2. that process goes on to compact the copy (and stops if the daemon is
   gone), and the daemon waits; searches go on against the store as it
   is, new lines are searchable as soon as they are read;
3. takes the turn again, writes into the copy what was written since the
   copy was taken (:meth:`EdgeStore.replay`), and swaps the copy in
   (searches wait for the load, well under a second for a compacted
   store); the old shard is deleted after the turn is given back.

A daemon stopped meanwhile kills the process and drops the copy; a daemon
killed meanwhile leaves the store as it was and a copy that it deletes at
its next start (a swap cut short is finished or undone when the store
opens: :meth:`EdgeStore.swap_in`).

The daemon starts one on its own when reading has caught up and the store
holds many small segments (``auto_compact``), as after a backfill.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfreflect.errors import DiskFull, SelfReflectError
from selfreflect.store.edge import MIN_FREE_BYTES, EdgeStore
from selfreflect.system import disk_bytes

if TYPE_CHECKING:
    from selfreflect.stream import Turn

log = logging.getLogger("selfreflect")

WORK_DIR = "compacting"  # under the data dir: the copy, and the compacting process's log
RUNNING = ("copying", "compacting", "swapping")  # phases; then "done", "failed" or "stopped"
_BLOCK = 1 << 20
_ZEROS = bytes(_BLOCK)
_PROGRESS = "segments "  # the compacting process's lines: segments left after each step
_COPIED = "copied"  # its line once the copy is whole


def copy_sparse(source: str, target: str) -> None:
    """Copy a file, leaving a hole where it has one, or where a block holds
    only zeros (on file systems that make holes; elsewhere zeros are written)."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        size = os.fstat(src.fileno()).st_size
        for start, end in _data(src.fileno(), size):
            src.seek(start)
            dst.seek(start)
            while start < end:
                block = src.read(min(_BLOCK, end - start))
                if not block:
                    break
                if block == _ZEROS[: len(block)]:
                    dst.seek(len(block), os.SEEK_CUR)
                else:
                    dst.write(block)
                start += len(block)
        dst.truncate(size)
    shutil.copystat(source, target)


def _data(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The ranges of a file that hold data, where the system says
    (``SEEK_DATA``: Linux, macOS); else the whole file."""
    if not hasattr(os, "SEEK_DATA"):
        yield 0, size
        return
    at = 0
    while at < size:
        try:
            start = os.lseek(fd, at, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole from here on
                return
            yield at, size  # the file system does not say: read it all
            return
        at = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, at


def copy_store(source: Path, target: Path, between_files: Callable[[], None] = lambda: None) -> None:
    """Copy a store folder (sparse files stay sparse); ``between_files`` is
    called after each file."""

    def copy(src: str, dst: str) -> None:
        copy_sparse(src, dst)
        between_files()

    shutil.copytree(source, target, copy_function=copy)


class Compaction:
    """One compaction of the daemon's store (see the module's docstring).

    Args:
        store: the daemon's store.
        data_dir: the data folder (the copy goes under it).
        writing: the turn to write (``Streamer.between_batches``): held
            while the store is copied and while the copy is swapped in.
        stop: set when the daemon stops.
        automatic: the daemon started it on its own (else it was asked).
    """

    def __init__(
        self, store: EdgeStore, data_dir: Path, writing: Turn, stop: threading.Event, automatic: bool = False
    ) -> None:
        self.store = store
        self.work = data_dir / WORK_DIR
        self.writing = writing
        self.stop = stop
        self.automatic = automatic
        self.phase = "copying"
        self.started = time.time()
        self.finished: float | None = None
        self.segments_before = self.segments = 0
        self.caught_up = 0  # points written while the copy was compacted, then written into it
        self.error = ""
        self.thread = threading.Thread(target=self.run, name="compaction", daemon=True)

    @property
    def running(self) -> bool:
        return self.phase in RUNNING

    def finished_within(self, seconds: float) -> bool:
        return self.finished is not None and time.time() - self.finished < seconds

    def report(self) -> dict[str, Any]:
        """What ``/healthz`` and ``status`` say about it."""
        return {
            "phase": self.phase,
            "running": self.running,
            "started": self.started,
            "finished": self.finished,
            "segments_before": self.segments_before,
            "segments": self.segments,
            "caught_up": self.caught_up,
            "automatic": self.automatic,
            "error": self.error,
        }

    def run(self) -> None:
        """Compact (:attr:`thread`); the outcome goes to :meth:`report`, once
        the copy is deleted."""
        try:
            self._run()
            phase, error = "done", ""
        except _Stopped:
            phase, error = "stopped", ""
        except Exception as exc:
            phase, error = "failed", str(exc)
            log.exception("compacting the store failed; it stays as it was")
        finally:
            self.store.stop_journal()
            shutil.rmtree(self.work, ignore_errors=True)  # and the shard swapped out
        self.finished = time.time()
        self.phase, self.error = phase, error
        if phase == "done":
            log.info(
                "compacted the store: %d segments into %d (%d points written meanwhile)",
                self.segments_before,
                self.segments,
                self.caught_up,
            )

    def _run(self) -> None:
        store = self.store
        copy = self.work / "store"
        output = self.work / "compact.log"
        since = time.strftime("%H:%M:%S", time.localtime(self.started))
        proc = None
        try:
            with self.writing.held(f"the store is being copied to compact it (since {since}): try again in a minute"):
                self.segments_before = self.segments = store.segments()
                store.flush()
                shutil.rmtree(self.work, ignore_errors=True)  # a copy a killed daemon left
                self.work.mkdir(parents=True)
                need = disk_bytes(store.folder) + store.merge_bytes() + MIN_FREE_BYTES  # the copy, and its merges
                free = shutil.disk_usage(self.work).free
                if free < need:
                    raise DiskFull(
                        f"compacting while the daemon runs needs a copy of the store: {need / 2**20:.0f} MB free, "
                        f"the disk has {free / 2**20:.0f} MB (`selfreflect stop`, then `selfreflect compact` "
                        "compacts it in place)",
                        free=free,
                    )
                helper = (sys.executable, "-m", "selfreflect.compaction", store.folder, copy, os.getpid())
                with open(output, "wb") as out:
                    proc = subprocess.Popen(
                        [str(arg) for arg in helper],
                        cwd=self.work,  # not the daemon's folder: nothing there can shadow a module
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                self._wait(proc, output, copied=True)
                store.start_journal()
            self.phase = "compacting"
            self._wait(proc, output)
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        self.phase = "swapping"
        with self.writing.held(f"the compacted store is being swapped in (since {since}): try again in a moment"):
            journal = store.stop_journal()
            if journal and (journal.ids or journal.operations):  # else the copy is the store already
                with EdgeStore(
                    copy,
                    store.model,
                    store.dim,
                    segment_points=store.segment_points,
                    command="compaction (catching up)",
                    machine=store.machine,
                    merge_points=store.merge_points,
                ) as target:
                    self.caught_up = store.replay(journal, target)
                    target.flush()
            self._check_stop()
            store.swap_in(copy)
            self.segments = store.segments()

    def _wait(self, proc: subprocess.Popen[bytes], output: Path, copied: bool = False) -> None:
        """Until the compacting process has compacted the copy, or with
        ``copied`` until it has copied the store (new lines wait meanwhile:
        looked at often).

        Raises:
            SelfReflectError: it failed (its last line says why).
        """
        while True:
            try:
                code: int | None = proc.wait(timeout=0.02 if copied else 1.0)
            except subprocess.TimeoutExpired:
                code = None
            said = output.read_text(encoding="utf-8", errors="replace").splitlines()
            if copied and _COPIED in said:
                return
            if code is not None:
                if code == 0 and not copied:
                    return
                last = said[-1] if said else "no output"
                raise SelfReflectError(f"the compacting process failed (exit {code}): {last}")
            self._check_stop()
            progress = [line for line in said if line.startswith(_PROGRESS)]
            if progress:
                self.segments = int(progress[-1][len(_PROGRESS) :])

    def _check_stop(self) -> None:
        if self.stop.is_set():
            raise _Stopped


class _Stopped(Exception):
    """The daemon is stopping."""


def main(argv: list[str]) -> int:
    """``python -m selfreflect.compaction STORE COPY DAEMON_PID``: copy the
    daemon's store folder (flushed; the daemon holds its turn to write until
    this says it is copied) and compact the copy, saying how many segments
    are left after each step; between files and steps, stop if the daemon
    is gone (killed: no one would swap the copy in, and its next start
    deletes it)."""
    import orjson
    import psutil

    source, folder, daemon = Path(argv[0]), Path(argv[1]), int(argv[2])

    def check() -> None:
        if os.getppid() != daemon or not psutil.pid_exists(daemon):
            raise SystemExit(f"the daemon (pid {daemon}) is gone: stopping")

    def step(left: int) -> None:
        check()
        print(f"{_PROGRESS}{left}", flush=True)

    try:
        copy_store(source, folder, check)
    except OSError as exc:
        raise SystemExit(f"copying the store failed: {exc}") from exc
    print(_COPIED, flush=True)
    meta = orjson.loads((folder / "meta.json").read_bytes())
    with EdgeStore(folder, meta["model"], meta["dim"], command="compact (for the daemon)") as store:
        step(store.segments())
        store.compact(progress=step)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
