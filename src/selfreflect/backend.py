"""What the MCP tools do, behind one small interface with two answers:
:class:`LocalBackend` works on a store in this process (the daemon's, or one
opened briefly per call when no daemon runs), :class:`DaemonBackend` asks the
running daemon over HTTP. The MCP face and the HTTP API both sit on these.
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
from selfreflect.reflection import store_reflection
from selfreflect.search import SearchQuery, SearchResponse, by_file, search
from selfreflect.settings import Settings
from selfreflect.status import status_report
from selfreflect.store import Store

MAX_CONTEXT_LINES = 50


class Backend(Protocol):
    def search(self, query: SearchQuery) -> SearchResponse: ...

    def by_file(self, path: str, limit: int) -> SearchResponse: ...

    def store_reflection(self, content: str, tags: list[str], cwd: str | None) -> dict[str, Any]: ...

    def read_conversation(self, session_id: str, line: int, before: int, after: int) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


class LocalBackend:
    """The tools over a store in this process.

    Args:
        settings: the settings.
        embedder: a loaded embedder.
        store: gives the store for one call (a context manager).
        extra_status: merged into :meth:`status` (the daemon's health).
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
        self._store = store
        self._extra_status = extra_status

    def search(self, query: SearchQuery) -> SearchResponse:
        with self._store() as store:
            return search(store, self.embedder, query)

    def by_file(self, path: str, limit: int) -> SearchResponse:
        with self._store() as store:
            return by_file(store, path, limit)

    def store_reflection(self, content: str, tags: list[str], cwd: str | None) -> dict[str, Any]:
        with self._store() as store:
            return store_reflection(store, self.embedder, self.settings.data_dir, content, tags, cwd)

    def read_conversation(self, session_id: str, line: int, before: int, after: int) -> dict[str, Any]:
        """Lines around ``line`` of an indexed transcript of ``session_id``.
        Only what is in the index can be read: the path comes from the store."""
        before, after = (max(0, min(n, MAX_CONTEXT_LINES)) for n in (before, after))
        with self._store() as store:
            path = find_transcript(self.settings, session_id, store, on_disk=False)
        lines = excerpt(path, max(1, line), before, after, self.settings.max_line_bytes)
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
    """The tools, answered by the running daemon (``url``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def search(self, query: SearchQuery) -> SearchResponse:
        where = query.where
        params = [("q", query.text), ("limit", str(query.limit))]
        params += [("project", p) for p in where.projects]
        fields = [("since", where.since), ("until", where.until), ("session", where.session_id)]
        fields += [("file", where.file), ("branch", where.git_branch), ("tool", where.tool)]
        params += [(k, v) for k, v in fields if v]
        if query.min_score is not None:
            params.append(("min_score", str(query.min_score)))
        if not where.include_sidechains:
            params.append(("no_sidechains", "1"))
        if query.decay is not None:
            params.append(("decay", "1"))  # the daemon applies its own half-life and weight
        return SearchResponse.from_json(get_json(self.url, "/api/search", params))

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
