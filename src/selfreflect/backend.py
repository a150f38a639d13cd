"""What the faces ask of the core, behind one small interface with two
answers: :class:`LocalBackend` works on a store in this process (the
daemon's, or one opened briefly per call when no daemon runs),
:class:`DaemonBackend` asks the running daemon over HTTP. Which one a face
gets is decided in one place, :mod:`selfreflect.connect`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict
from typing import Any, Protocol

from selfreflect.client import get_json, post_json
from selfreflect.conversation import excerpt, find_transcript
from selfreflect.embed import Embedder
from selfreflect.errors import TranscriptNotFound
from selfreflect.query import Decay, SearchRequest, SearchResponse
from selfreflect.reflection import store_reflection
from selfreflect.search import by_file, search
from selfreflect.settings import Settings
from selfreflect.status import status_report
from selfreflect.store import Store

MAX_CONTEXT_LINES = 50


class Backend(Protocol):
    def search(self, request: SearchRequest) -> SearchResponse: ...

    def by_file(self, path: str, limit: int) -> SearchResponse: ...

    def store_reflection(self, content: str, tags: list[str], cwd: str | None) -> dict[str, Any]: ...

    def read_conversation(self, session_id: str, line: int, before: int, after: int) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


class LocalBackend:
    """The core over a store in this process.

    Args:
        settings: the settings.
        embedder: the model (loaded on the first call that needs it).
        store: gives the store for one call (a context manager).
        extra_status: merged into :meth:`status` as ``daemon`` (the daemon's health).
    """

    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        store: Callable[[], AbstractContextManager[Store]],
        extra_status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.decay = Decay(settings.decay_half_life_days, settings.decay_weight)
        self._store = store
        self._extra_status = extra_status

    def search(self, request: SearchRequest) -> SearchResponse:
        query = request.query(self.decay)  # a bad value fails before any I/O
        self.embedder.load()
        with self._store() as store:
            return search(store, self.embedder, query)

    def by_file(self, path: str, limit: int) -> SearchResponse:
        with self._store() as store:
            return by_file(store, path, limit)

    def store_reflection(self, content: str, tags: list[str], cwd: str | None) -> dict[str, Any]:
        self.embedder.load()
        with self._store() as store:
            return store_reflection(store, self.embedder, self.settings.data_dir, content, tags, cwd)

    def read_conversation(self, session_id: str, line: int, before: int, after: int) -> dict[str, Any]:
        """Lines around ``line`` of an indexed transcript of ``session_id``.
        Only what is in the index can be read: the path comes from the store.

        Raises:
            TranscriptNotFound: nothing indexed matches, or the transcript is
                gone from disk, or has no such line.
        """
        if not session_id.strip():
            raise TranscriptNotFound("give a session id (the session_id of a search result)")
        before, after = (max(0, min(n, MAX_CONTEXT_LINES)) for n in (before, after))
        with self._store() as store:
            path = find_transcript(self.settings, session_id.strip(), store, on_disk=False)
        try:
            lines = excerpt(path, max(1, line), before, after, self.settings.max_line_bytes)
        except FileNotFoundError:
            raise TranscriptNotFound(
                f"{path} was indexed but is no longer on disk (deleted since, perhaps by Claude Code's "
                "clean-up): its search results still hold the indexed text"
            ) from None
        except OSError as exc:
            raise TranscriptNotFound(f"cannot read {path}: {exc.strerror or exc}") from exc
        if not lines:
            raise TranscriptNotFound(f"{path.name} has no line {line}")
        return {"session_id": session_id, "transcript": str(path), "line": line, "lines": [asdict(x) for x in lines]}

    def status(self) -> dict[str, Any]:
        with self._store() as store:
            report = status_report(self.settings, store)
        if self._extra_status:
            report["daemon"] = self._extra_status()
        return report


class DaemonBackend:
    """The core, answered by the running daemon at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def search(self, request: SearchRequest) -> SearchResponse:
        return SearchResponse.from_json(get_json(self.url, "/api/search", request.params()))

    def by_file(self, path: str, limit: int) -> SearchResponse:
        return SearchResponse.from_json(get_json(self.url, "/api/by-file", [("path", path), ("limit", str(limit))]))

    def store_reflection(self, content: str, tags: list[str], cwd: str | None) -> dict[str, Any]:
        return dict(post_json(self.url, "/api/reflections", {"content": content, "tags": tags, "cwd": cwd}))

    def read_conversation(self, session_id: str, line: int, before: int, after: int) -> dict[str, Any]:
        params = [("session_id", session_id), ("line", str(line)), ("before", str(before)), ("after", str(after))]
        return dict(get_json(self.url, "/api/conversation", params))

    def status(self) -> dict[str, Any]:
        return dict(get_json(self.url, "/api/status"))


@contextmanager
def held(store: Store) -> Iterator[Store]:
    """A store that stays open (the daemon's) as a per-call context."""
    yield store
