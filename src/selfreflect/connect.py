"""The one way every face reaches the core.

CLI ``search``/``status``/``show``/``import``, the stdio MCP server and the
daemon's HTTP routes all go through a :class:`Connection`:

1. a live daemon for this data dir, verified: ``daemon.json`` names a pid,
   and that pid must still be the process that wrote it (its start time
   matches; a pid reused after a crash does not pass);
2. else, for the stdio MCP server only, a daemon it starts itself, detached,
   on a free port (``serve --port 0``; the real port is in ``daemon.json``).
   It watches the child: if the child exits (the store is held by an
   import, the data dir is unusable, another daemon won the race) it does
   not wait, it goes on to 3 at once (or to the winner);
3. else the store, opened in this process for the length of one call under
   the store lock (so a daemon or an import can take it in between).

Every call that fails because the daemon went away (restart, crash,
``kill``) resolves again and is retried once: a Claude session never gets
stuck on a dead daemon. A daemon start that failed is not tried again for a
minute.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from selfreflect.client import DaemonBackend, DaemonUnavailable
from selfreflect.errors import StoreLocked
from selfreflect.running import DaemonInfo, running_daemon, serve_command
from selfreflect.settings import Settings
from selfreflect.system import detached, is_same_process

if TYPE_CHECKING:  # off the path of a client whose daemon answers (the local backend: only without one)
    import logging

    from selfreflect.backend import Backend, LocalBackend
    from selfreflect.query import SearchRequest, SearchResponse

START_TIMEOUT = 30.0  # Claude Code gives an MCP server about 30 s to answer
RETRY_START_AFTER = 60.0

T = TypeVar("T")


class Connection:
    """A :class:`~selfreflect.backend.Backend` that finds its way to the core
    on every call.

    Args:
        settings: the settings.
        command: what this process is (told to whoever is refused the store).
        start_daemon: start a daemon when none runs (the stdio MCP server).
    """

    def __init__(self, settings: Settings, command: str, start_daemon: bool = False) -> None:
        self.settings = settings
        self.command = command
        self.start_daemon = start_daemon
        self._local: LocalBackend | None = None
        self._lock = threading.Lock()
        self._start_failed_at = -RETRY_START_AFTER

    # -- which backend -----------------------------------------------------------

    def daemon(self) -> DaemonInfo | None:
        """The verified daemon serving this data dir, if any (never starts one)."""
        return running_daemon(self.settings.data_dir)

    def resolve(self) -> Backend:
        """The backend for the next call: the daemon, a started daemon, or local."""
        with self._lock:
            info = running_daemon(self.settings.data_dir)
            if info is None and self.start_daemon and time.monotonic() - self._start_failed_at > RETRY_START_AFTER:
                info = self._start()
                if info is None:
                    self._start_failed_at = time.monotonic()
            if info is not None:
                return DaemonBackend(info.url, self.settings.token)
            if self._local is None:
                self._local = _local_backend(self.settings, self.command)
            return self._local

    def warm_up(self) -> None:
        """Resolve now, in the background (the stdio server starts the daemon
        while the client initialises)."""
        threading.Thread(target=self._quietly_resolve, name="connect", daemon=True).start()

    def _quietly_resolve(self) -> None:
        try:
            self.resolve()
        except Exception as exc:  # the first call reports it
            _log().info("could not reach the store yet: %s", exc)

    def _call(self, work: Callable[[Backend], T]) -> T:
        try:
            return work(self.resolve())
        except DaemonUnavailable as exc:
            _log().info("the daemon went away (%s): finding the store again", exc)
        except StoreLocked:
            if running_daemon(self.settings.data_dir) is None:
                raise
            _log().info("a daemon took the store meanwhile: asking it")
        return work(self.resolve())

    # -- the Backend interface ---------------------------------------------------

    def search(self, request: SearchRequest) -> SearchResponse:
        return self._call(lambda b: b.search(request))

    def by_file(self, path: str, limit: int, alternatives: tuple[str, ...] = ()) -> SearchResponse:
        return self._call(lambda b: b.by_file(path, limit, alternatives))

    def store_reflection(self, content: str, tags: list[str], cwd: str | None) -> dict[str, Any]:
        return self._call(lambda b: b.store_reflection(content, tags, cwd))

    def read_conversation(self, target: str, line: int | None, before: int, after: int) -> dict[str, Any]:
        return self._call(lambda b: b.read_conversation(target, line, before, after))

    def status(self) -> dict[str, Any]:
        return self._call(lambda b: b.status())

    def forget(self, kind: str, value: str) -> dict[str, Any]:
        return self._call(lambda b: b.forget(kind, value))

    # -- starting a daemon -------------------------------------------------------

    def _start(self) -> DaemonInfo | None:
        """Start ``selfreflect serve`` detached and wait until it serves, or
        until it exits (then the winner of a race, or ``None``)."""
        settings = self.settings
        try:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            log_file = open(settings.data_dir / "serve.log", "ab")  # noqa: SIM115 (the child keeps it)
        except OSError as exc:
            _log().warning("cannot start the daemon: %s", exc)
            return None
        argv = serve_command(settings, "--port", "0", "--started-by", f"mcp (pid {os.getpid()})")
        with log_file:
            import subprocess  # only here: its import is on every CLI command's path otherwise

            child = subprocess.Popen(
                argv,
                cwd=settings.data_dir,  # not the project's folder (serve_command)
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                **detached(),
            )
        threading.Thread(target=child.wait, name="reap-daemon", daemon=True).start()  # no zombie
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            info = running_daemon(settings.data_dir)
            if info is not None:
                return info
            if child.poll() is not None and not _daemon_starting(settings):
                # not another client's daemon that won the store and is still loading: give up at once
                _log().warning(
                    "the daemon exited at start (code %s, see %s): opening the store here instead",
                    child.returncode,
                    settings.data_dir / "serve.log",
                )
                return running_daemon(settings.data_dir)
            time.sleep(0.05)
        _log().warning(
            "the daemon did not start within %.0f s (see %s)", START_TIMEOUT, settings.data_dir / "serve.log"
        )
        return None


def _daemon_starting(settings: Settings) -> bool:
    """A live ``serve`` holds the store but has not written ``daemon.json`` yet."""
    from selfreflect.lock import read_owner  # filelock: off the path of a client whose daemon answers

    owner = read_owner(settings.data_dir)
    return owner is not None and owner.command == "serve" and is_same_process(owner.pid, owner.process_started)


def _local_backend(settings: Settings, command: str) -> LocalBackend:
    from selfreflect.backend import LocalBackend
    from selfreflect.embed import make_embedder
    from selfreflect.store import open_store

    embedder = make_embedder(settings)

    @contextmanager
    def briefly() -> Iterator[Any]:
        store = open_store(settings, embedder.name, embedder.dim, command)  # the lock, only for this call
        try:
            yield store
        finally:
            store.close()

    return LocalBackend(settings, embedder, briefly)


def _log() -> logging.Logger:
    """The package's logger, imported when there is something to say: logging's
    imports are a tenth of a ``selfreflect search`` through the daemon."""
    import logging

    return logging.getLogger("selfreflect")
