"""What the faces ask of the core, behind one small interface with two
answers: :class:`LocalBackend` works on a store in this process (the
daemon's, or one opened briefly per call when no daemon runs),
:class:`DaemonBackend` asks the running daemon over HTTP. Which one a face
gets is decided in one place, :mod:`selfreflect.connect`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Protocol

from selfreflect.archive import Archive
from selfreflect.client import DaemonBackend  # noqa: F401  (its home before)
from selfreflect.conversation import find_transcript, read_conversation
from selfreflect.discover import TranscriptFile
from selfreflect.embed import Embedder
from selfreflect.errors import ConfigError
from selfreflect.query import Decay, SearchRequest, SearchResponse, parse_when
from selfreflect.reflection import store_reflection
from selfreflect.search import by_file, search
from selfreflect.settings import Settings
from selfreflect.state import State
from selfreflect.status import status_report
from selfreflect.store import SearchFilter, Store

MAX_CONTEXT_LINES = 50
MAX_TRANSCRIPTS = 1_000_000


class Backend(Protocol):
    def search(self, request: SearchRequest) -> SearchResponse: ...

    def by_file(self, path: str, limit: int, alternatives: tuple[str, ...] = ()) -> SearchResponse: ...

    def store_reflection(self, content: str, tags: list[str], cwd: str | None) -> dict[str, Any]: ...

    def read_conversation(self, target: str, line: int | None, before: int, after: int) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def forget(self, kind: str, value: str) -> dict[str, Any]: ...


FORGET_KINDS = ("project", "session", "transcript", "before")


def forget_filter(kind: str, value: str) -> SearchFilter:
    """What ``selfreflect forget --<kind> <value>`` removes.

    Raises:
        ConfigError: an unknown kind, an empty value, a date that is not one.
    """
    value = value.strip()
    if kind not in FORGET_KINDS or not value:
        raise ConfigError(f"forget what? one of {', '.join(FORGET_KINDS)}, with a value")
    if kind == "project":
        return SearchFilter(projects=(value,))
    if kind == "session":
        return SearchFilter(session_id=value)
    if kind == "transcript":
        return SearchFilter(transcript=value)
    return SearchFilter(until=parse_when(value))


class LocalBackend:
    """The core over a store in this process.

    Args:
        settings: the settings.
        embedder: the model (loaded on the first call that needs it).
        store: gives the store for one call (a context manager).
        extra_status: merged into :meth:`status` as ``daemon`` (the daemon's health).
        state: the read positions the importer in this process uses (the
            daemon's), so a tombstone reaches it at once; else read from disk.
        transcripts: the transcripts as that importer knows them (its last
            scan and the files read since; ``None``: not scanned yet), for
            :meth:`status`; else walked at each call.
        between_batches: held, no import batch is in flight in this process
            (what is forgotten cannot be written back by a batch read before),
            and no compaction is copying the store or swapping it (it refuses
            at once).
    """

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        store: Callable[[], AbstractContextManager[Store]],
        extra_status: Callable[[], dict[str, Any]] | None = None,
        state: State | None = None,
        between_batches: AbstractContextManager[Any] | None = None,
        transcripts: Callable[[], list[TranscriptFile] | None] | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.decay = Decay(settings.decay_half_life_days, settings.decay_weight)
        self._store = store
        self._extra_status = extra_status
        self._state = state
        self._between_batches = between_batches or nullcontext()
        self._transcripts = transcripts or (lambda: None)

    def search(self, request: SearchRequest) -> SearchResponse:
        query = request.query(self.decay)  # a bad value fails before any I/O
        self.embedder.load()
        with self._store() as store:
            return search(store, self.embedder, query)

    def by_file(self, path: str, limit: int, alternatives: tuple[str, ...] = ()) -> SearchResponse:
        with self._store() as store:
            return by_file(store, path, limit, alternatives)

    def store_reflection(self, content: str, tags: list[str], cwd: str | None) -> dict[str, Any]:
        self.embedder.load()
        with self._between_batches, self._store() as store:
            return store_reflection(store, self.embedder, self.settings.data_dir, content, tags, cwd)

    def read_conversation(self, target: str, line: int | None, before: int, after: int) -> dict[str, Any]:
        """Lines around ``line`` (default: the lines ``target`` cites) of the
        indexed transcript ``target`` names: what search prints
        (``transcript:263-267``), a session id or the start of one. Only
        what is in the index can be read: the path comes from the store.

        Raises:
            TranscriptNotFound: nothing indexed matches, or the transcript is
                gone from disk and not archived, or has no such line.
            NoMatch: the start of several session ids.
        """
        before, after = (max(0, min(n, MAX_CONTEXT_LINES)) for n in (before, after))
        with self._store() as store:
            path = find_transcript(self.settings, target, store, on_disk=False)
        archive = Archive.of(self.settings)
        return read_conversation(path, target, line, before, after, self.settings.max_line_bytes, archive)

    def status(self) -> dict[str, Any]:
        with self._store() as store:
            report = status_report(self.settings, store, self._state, self._transcripts())
        if self._extra_status:
            report["daemon"] = self._extra_status()
        return report

    def forget(self, kind: str, value: str) -> dict[str, Any]:
        """Remove what ``kind``/``value`` names from the index, and keep it out
        when the transcripts are read again (a tombstone in the state). The
        archived copy of each transcript it leaves nothing of goes too."""
        where = forget_filter(kind, value)
        stored = where.until if kind == "before" else value.strip()
        with self._between_batches, self._store() as store:
            state = self._state or State.load(self.settings.state_file)
            state.bury(kind, str(stored))
            touched = {str(t) for t, _ in store.facet("transcript", where, MAX_TRANSCRIPTS)}
            touched |= {value.strip()} if kind == "transcript" else set()
            removed = store.delete(where)
            gone = [t for t in sorted(touched) if not store.count(SearchFilter(transcript=t))]
            archived = Archive.of(self.settings).drop(gone, state)
        return {"kind": kind, "value": stored, "removed": removed, "archived_removed": archived}


@contextmanager
def held(store: Store) -> Iterator[Store]:
    """A store that stays open (the daemon's) as a per-call context."""
    yield store
