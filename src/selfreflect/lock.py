"""Who owns the store: one process at a time, and everyone else is told who.

Qdrant Edge must not be opened by two processes at once. Before a process
opens the store it takes ``<data dir>/store.lock`` (filelock: ``flock`` on
POSIX, ``msvcrt.locking`` on Windows) and writes who it is to
``<data dir>/store.owner.json``. Both live next to the store folder, not in
it, so deleting the store (which some error messages ask for) cannot drop
the lock from under its owner. The owner file is informational: the lock is
what counts, and the kernel drops it when the owner dies, even by kill -9.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import filelock
import orjson

from selfreflect.errors import StoreLocked
from selfreflect.system import process_started

LOCK_FILE = "store.lock"
OWNER_FILE = "store.owner.json"


@dataclass(frozen=True)
class Owner:
    """The process holding the store, as it described itself."""

    pid: int
    command: str  # the selfreflect command: import, serve, search, ...
    since: float  # when it took the store (seconds since the epoch)
    process_started: float | None = None

    def describe(self, now: float | None = None) -> str:
        ago = max(0, int((now or time.time()) - self.since))
        clock = datetime.fromtimestamp(self.since).strftime("%H:%M:%S")
        elapsed = f"{ago // 60} min" if ago >= 120 else f"{ago} s"
        return f"`selfreflect {self.command}` (pid {self.pid}, since {clock}, {elapsed} ago)"


def read_owner(data_dir: Path) -> Owner | None:
    try:
        return Owner(**orjson.loads((data_dir / OWNER_FILE).read_bytes()))
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None


class StoreLock:
    """The right to open the store in ``data_dir``.

    Args:
        data_dir: the data folder (the store is ``data_dir/store``).
        command: what this process is, for whoever is refused.
    """

    def __init__(self, data_dir: Path, command: str) -> None:
        self.data_dir = data_dir
        self.command = command
        self._lock = filelock.FileLock(str(data_dir / LOCK_FILE), timeout=0, thread_local=False)

    def acquire(self) -> None:
        """Take the store, or say who has it.

        Raises:
            StoreLocked: another process (or another opener in this one) holds it.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            owner = read_owner(self.data_dir)
            who = owner.describe() if owner else "another process"
            store = self.data_dir / "store"
            raise StoreLocked(f"the store at {store} is in use by {who}", pid=owner.pid if owner else None) from None
        me = Owner(os.getpid(), self.command, time.time(), process_started(os.getpid()))
        tmp = self.data_dir / f".{OWNER_FILE}.{os.getpid()}.tmp"
        try:
            tmp.write_bytes(orjson.dumps(asdict(me)))
            os.replace(tmp, self.data_dir / OWNER_FILE)
        except OSError:
            self._lock.release()
            raise

    def release(self) -> None:
        if self._lock.is_locked:
            owner = read_owner(self.data_dir)
            if owner is not None and owner.pid == os.getpid():
                (self.data_dir / OWNER_FILE).unlink(missing_ok=True)
            self._lock.release()
