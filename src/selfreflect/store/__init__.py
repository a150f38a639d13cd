"""Store: where chunks live, behind one small interface.

The embedded default is Qdrant Edge (:mod:`selfreflect.store.edge`): the
Qdrant engine in-process, on disk. A Qdrant server or cluster
(:mod:`selfreflect.store.server`, chosen by ``QDRANT_URL``) holds the same
collection. One collection holds every project; the payload fields below are
indexed for filtering. Each point has a dense vector (the embedding of
``text``) and a sparse BM25 vector (of ``lexical``), and records the machine
that wrote it (``host``).
"""

from __future__ import annotations

import _thread
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from selfreflect.memory import MemoryPolicy
    from selfreflect.settings import Settings

# payload field -> index kind (keyword, datetime). Only what filters and
# facets lean on: every index costs memory in the segment being written and
# pages read when the store opens. Other fields (kind, git_branch, ordinal)
# still filter, by reading the payload of the candidates an indexed
# condition leaves.
INDEXED_FIELDS = {
    "project": "keyword",
    "project_path": "keyword",
    "session_id": "keyword",
    "transcript": "keyword",
    # the importer drops the tail of a re-chunked exchange after most batches:
    # without this index that reads the payload of every chunk of the transcript
    "exchange": "keyword",
    "file_suffixes": "keyword",
    # `search --tool`: a tool that matches nothing is told the tools there are (a facet)
    "tools": "keyword",
    "timestamp": "datetime",
    # "main" or "sidechain", excluded from every default search: a keyword,
    # because qdrant-edge-py 0.9 turns a bool MatchValue into an integer that
    # never matches a bool payload.
    "thread": "keyword",
    "host": "keyword",  # the machine that wrote the point: many can share a server collection
    # a search looks up the prompts of its history.jsonl hits among the conversations (a facet)
    "prompt_key": "keyword",
}


@dataclass(frozen=True)
class Record:
    """One point to write: deterministic id, dense vector, BM25 text, payload."""

    id: str
    vector: Sequence[float]
    lexical: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchFilter:
    """Which points a search or listing may return. Empty means no limit.

    Attributes:
        projects: project names (last folder of ``cwd``) or full paths.
        since, until: ISO 8601 bounds on the chunk's timestamp.
        session_id, transcript: one session, one transcript file (absolute path).
        file: a path or path suffix the conversation read or edited.
        git_branch, tool: exact values.
        include_sidechains: sub-agent and sidechain conversations too.
        kinds: ``conversation``, ``reflection``, ``history``.
        host: only points this machine wrote (``Settings.machine``).
        prompt_keys: points that open with one of these prompts (``prompt_key``).
    """

    projects: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    session_id: str | None = None
    transcript: str | None = None
    file: str | None = None
    git_branch: str | None = None
    tool: str | None = None
    include_sidechains: bool = True
    kinds: tuple[str, ...] = ()
    host: str | None = None
    prompt_keys: tuple[str, ...] = ()


# ("match", key, value) | ("any", key, values) | ("since", key, gte, lt) | ("either", [conditions])
Condition = tuple[Any, ...]


def conditions(where: SearchFilter) -> tuple[list[Condition], list[Condition]]:
    """What ``where`` asks of a point, as (must, must not) conditions that
    each store turns into its engine's filter: one place decides what a
    filter means."""
    must: list[Condition] = []
    must_not: list[Condition] = []
    if where.projects:
        names = list(where.projects)
        must.append(("either", [("any", "project", names), ("any", "project_path", names)]))
    if where.since or where.until:
        must.append(("since", "timestamp", where.since, where.until))
    for key, value in (
        ("session_id", where.session_id),
        ("transcript", where.transcript),
        ("git_branch", where.git_branch),
        ("tools", where.tool),
        ("host", where.host),
    ):
        if value:
            must.append(("match", key, value))
    if where.file:
        must.append(("match", "file_suffixes", where.file.strip("/")))
    if where.kinds:
        must.append(("any", "kind", list(where.kinds)))
    if where.prompt_keys:
        must.append(("any", "prompt_key", list(where.prompt_keys)))
    if not where.include_sidechains:
        must_not.append(("match", "thread", "sidechain"))
    return must, must_not


@dataclass(frozen=True)
class RawPoint:
    """A point as stored, vectors and all: what a migration copies."""

    id: str
    dense: list[float]
    sparse: tuple[list[int], list[float]]  # BM25: token ids, weights
    payload: dict[str, Any]


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class FusionPlan:
    """How the dense and BM25 lists are fused (RRF).

    Attributes:
        depth: candidates each list contributes.
        k: the RRF constant: score = sum(weight / (k + rank)).
        dense_weight, lexical_weight: the weight of each list.
        phrasings_k: the RRF constant where a query's alternatives add lists
            (two a phrasing): a small one lets a hit that some phrasing ranks
            near the top beat one that every list holds at a middling rank.
        alternative_lexical_weight: the weight of an alternative's BM25 list
            (the query's own keeps ``lexical_weight``): alternatives carry the
            words of the time (identifiers, error text, a keyword form), the
            user's later words mostly ordinary ones.
    """

    depth: int = 40
    k: int = 60
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    phrasings_k: int = 10
    alternative_lexical_weight: float = 1.5


class Store(Protocol):
    """What the importer and the search core need from a store."""

    id: str  # the store's own id: the state records which store it describes
    model: str
    dim: int

    @property
    def writes(self) -> int | None:
        """How many writes this process made to the store (what :func:`remembered`
        keys on); ``None`` where others write too (a server): nothing is remembered."""
        ...

    remembered: dict[str, tuple[int, float, Any]]
    """:func:`remembered`'s answers: name -> (``writes``, when, the answer)."""

    def upsert(self, records: Sequence[Record]) -> None: ...

    def text_hashes(self, ids: Sequence[str]) -> dict[str, str]: ...

    def vectors(self, ids: Sequence[str]) -> dict[str, list[float]]: ...

    def delete(self, where: SearchFilter) -> int: ...

    def delete_transcript(self, transcript: str) -> None: ...

    def delete_exchange_tail(self, transcript: str, exchange: str, keep: int) -> None: ...

    def set_title(self, session_id: str, title: str) -> None: ...

    def hybrid(
        self, vector: Sequence[float], text: str, where: SearchFilter, limit: int, plan: FusionPlan
    ) -> list[Hit]: ...

    def dense(self, vector: Sequence[float], where: SearchFilter, limit: int) -> list[Hit]: ...

    def lexical(self, text: str, where: SearchFilter, limit: int) -> list[Hit]: ...

    def scroll(self, where: SearchFilter, limit: int) -> list[dict[str, Any]]: ...

    def count(self, where: SearchFilter) -> int: ...

    def facet(self, key: str, where: SearchFilter, limit: int, exact: bool = True) -> list[tuple[Any, int]]:
        """The values of ``key`` among the points ``where`` selects, with
        their counts (``exact=False``: the counts are estimates, the values
        are the same, and it is much faster on a big store)."""
        ...

    def latest(self, where: SearchFilter) -> dict[str, Any] | None: ...

    def recent(self, where: SearchFilter, limit: int) -> list[dict[str, Any]]: ...

    def size_bytes(self) -> int: ...

    def key(self, id: str) -> str:
        """The id under which the point a writer calls ``id`` is stored (a
        shared collection keeps each machine's points apart)."""
        ...

    def dump(self, after: str | None, limit: int) -> tuple[list[RawPoint], str | None]:
        """Up to ``limit`` points in id order from ``after`` (exclusive of
        what came before), and where to go on (``None``: the end)."""
        ...

    def load(self, points: Sequence[RawPoint]) -> None:
        """Write points as they are (no embedding): a migration's writes."""
        ...

    def get(self, ids: Sequence[str]) -> list[RawPoint]:
        """The points with these (stored) ids that exist, vectors and all."""
        ...

    def needs_compaction(self) -> bool:
        """Searches would get much faster from :meth:`compact`."""
        ...

    def compact(self) -> tuple[int, int]:
        """Merge small segments into big ones; the segments before and after
        (a server merges its own: nothing to do)."""
        ...

    memory: MemoryPolicy
    """The process's memory policy: it decides when memory is given back."""

    def release_memory(self) -> None:
        """Give back memory the store holds but does not need (cheap when idle);
        called by the memory policy."""
        ...

    def close(self) -> None: ...


T = TypeVar("T")


REFRESH_WITHIN = 6  # an answer this many times older than it may lag is computed in the request
_refreshing: set[tuple[int, str]] = set()  # (id of the answers' dict, name) being computed in the background
_refreshing_lock = _thread.allocate_lock()  # not threading's: the CLI's way to the daemon imports this module


def remembered(store: Store, name: str, compute: Callable[[], T], stale_for: float = 0.0) -> T:
    """``compute()``, or what it gave the last time if the store was not
    written to since, or, with ``stale_for``, if that was less than
    ``stale_for`` seconds ago (an answer that may lag the writes by that
    much). Computed every time where others write to the store too.

    With ``stale_for``, an answer up to ``REFRESH_WITHIN`` times older is
    still given at once, and computed again in the background (one at a
    time) for the next ask: who asks often (the status of a daemon that is
    writing) does not wait for it. Older than that, it is computed now."""
    if store.writes is None:
        return compute()
    kept_in = store.remembered  # a forget puts a new one in its place: what is computed for the old one is dropped
    kept = kept_in.get(name)
    age = time.monotonic() - kept[1] if kept is not None else 0.0
    if kept is not None and (kept[0] == store.writes or age < stale_for):
        return kept[2]  # type: ignore[no-any-return]
    if kept is not None and age < stale_for * REFRESH_WITHIN:
        _refresh(store, kept_in, name, compute)
        return kept[2]  # type: ignore[no-any-return]
    return _compute(store, kept_in, name, compute)


def _compute(store: Store, kept_in: dict[str, tuple[int, float, Any]], name: str, compute: Callable[[], T]) -> T:
    writes = store.writes  # before computing: a write meanwhile makes it stale
    now = time.monotonic()
    answer = compute()
    kept_in[name] = (writes or 0, now, answer)
    return answer


def _refresh(store: Store, kept_in: dict[str, tuple[int, float, Any]], name: str, compute: Callable[[], Any]) -> None:
    key = (id(kept_in), name)
    with _refreshing_lock:
        if key in _refreshing:
            return
        _refreshing.add(key)

    import logging
    import threading

    def run() -> None:
        try:
            _compute(store, kept_in, name, compute)
        except Exception as exc:  # the store closed meanwhile, a server that went away: the next ask tries again
            logging.getLogger("selfreflect").debug("computing %s again failed: %s", name, exc)
        finally:
            with _refreshing_lock:
                _refreshing.discard(key)

    threading.Thread(target=run, name=f"refresh-{name}", daemon=True).start()


def open_store(
    settings: Settings, model: str, dim: int, command: str = "(library)", memory: MemoryPolicy | None = None
) -> Store:
    """Open the store the settings choose (the embedded one by default).

    ``command`` names this process to whoever is refused the store meanwhile;
    ``memory`` is the process's memory policy (none: the store's own, no cap).

    Raises:
        StoreLocked, ModelMismatch: as the store reports them.
        ConfigError: the data folder cannot be used (a file, read-only, ...).
    """
    settings.ensure_data_dir()
    if settings.qdrant_url:
        try:
            from selfreflect.store.server import ServerStore
        except ImportError as exc:
            from selfreflect.errors import ConfigError

            raise ConfigError(
                f"QDRANT_URL is set, but the Qdrant client is not installed ({exc}): pip install 'selfreflect[server]'"
            ) from exc

        return ServerStore.from_settings(settings, model, dim, command, memory).open()
    from selfreflect.store.edge import EdgeStore

    return EdgeStore(
        settings.store_dir,
        model,
        dim,
        settings.segment_points,
        command,
        settings.machine,
        settings.merge_points,
        memory,
    ).open()
