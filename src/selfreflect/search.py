"""Search: the one function every face (CLI, HTTP, MCP) calls.

Hybrid retrieval: the query is embedded with the same model as the chunks,
and the dense list and the BM25 list are fused with reciprocal rank fusion
(RRF) inside the engine. The result is the stable JSON of DESIGN.md.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from selfreflect.embed import Embedder
from selfreflect.errors import ConfigError
from selfreflect.lexical import lexical_text
from selfreflect.store import FusionPlan, Hit, SearchFilter, Store

SNIPPET_CHARS = 240
MAX_LIMIT = 200
_WORD = re.compile(r"[\w./@:-]{2,}", re.U)
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdwy])\s*$", re.I)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Decay:
    """Recency decay, applied to the fused score::

        factor = (1 - weight) + weight * 0.5 ** (age_days / half_life_days)
        score  = rrf_score * factor

    ``age_days`` is counted back from the newest indexed chunk, not from now,
    so an index of old conversations is not penalised as a whole. A chunk
    with no timestamp gets the floor, ``1 - weight``. ``weight`` 0 turns it off.
    """

    half_life_days: float = 30.0
    weight: float = 0.3

    def factor(self, timestamp: str | None, newest: datetime | None) -> float:
        if self.weight <= 0:
            return 1.0
        moment = _parse_instant(timestamp)
        if moment is None or newest is None:
            return 1.0 - self.weight
        age_days = max(0.0, (newest - moment).total_seconds() / 86400)
        return (1.0 - self.weight) + self.weight * 0.5 ** (age_days / self.half_life_days)


@dataclass(frozen=True)
class SearchQuery:
    """A search: the words, where to look, how many results."""

    text: str
    where: SearchFilter = field(default_factory=SearchFilter)
    limit: int = 10
    min_score: float | None = None
    decay: Decay | None = None


@dataclass(frozen=True)
class SearchResult:
    """One hit with its citation (the result schema of DESIGN.md)."""

    score: float
    project: str
    session_id: str
    transcript: str
    line_start: int
    line_end: int
    timestamp: str | None
    git_branch: str
    text: str
    snippet: str
    tools: list[str]
    files: list[str]


@dataclass(frozen=True)
class SearchResponse:
    query: str
    took_ms: float
    results: list[SearchResult]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SearchResponse:
        return cls(doc["query"], doc["took_ms"], [SearchResult(**r) for r in doc["results"]])


def make_query(
    text: str,
    *,
    limit: int = 10,
    projects: tuple[str, ...] | list[str] = (),
    since: str | None = None,
    until: str | None = None,
    session: str | None = None,
    file: str | None = None,
    branch: str | None = None,
    tool: str | None = None,
    include_sidechains: bool = True,
    min_score: float | None = None,
    decay: Decay | None = None,
) -> SearchQuery:
    """A query from what a face received (CLI options, HTTP parameters, MCP
    arguments): one place that validates and converts them.

    Raises:
        ConfigError: a value that cannot be used (a bad date, a bad limit).
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    where = SearchFilter(
        projects=tuple(p for p in projects if p),
        since=parse_when(since),
        until=parse_when(until),
        session_id=session or None,
        file=file or None,
        git_branch=branch or None,
        tool=tool or None,
        include_sidechains=include_sidechains,
    )
    return SearchQuery(text, where, limit, min_score, decay)


def search(store: Store, embedder: Embedder, query: SearchQuery, plan: FusionPlan | None = None) -> SearchResponse:
    """Run a hybrid search.

    Args:
        store: an open store.
        embedder: the store's model.
        query: what to look for and where.
        plan: fusion depth and weights (defaults: :class:`FusionPlan`).
    """
    started = time.perf_counter()
    text = query.text.strip()
    hits: list[Hit] = []
    if text and query.limit > 0:
        vector = embedder.embed([text])[0]
        # with decay, re-rank a deeper list: an older top hit may fall below a newer one
        fetch = max(query.limit * 3, 30) if query.decay else query.limit
        hits = store.hybrid(vector.tolist(), lexical_text(text), query.where, fetch, plan or FusionPlan())
    if query.decay and hits:
        newest = _parse_instant((store.latest(SearchFilter()) or {}).get("timestamp"))
        decay = query.decay
        hits = [Hit(h.id, h.score * decay.factor(h.payload.get("timestamp"), newest), h.payload) for h in hits]
        hits.sort(key=lambda h: h.score, reverse=True)
    if query.min_score is not None:
        hits = [h for h in hits if h.score >= query.min_score]
    results = [to_result(h, text) for h in hits[: query.limit]]
    return SearchResponse(query.text, round((time.perf_counter() - started) * 1000, 2), results)


def by_file(store: Store, path: str, limit: int = 10) -> SearchResponse:
    """Conversations that read or edited ``path``, newest first. The path is
    matched by suffix: ``src/app.py`` finds ``/home/x/proj/src/app.py``.
    Scores are 0: these are not ranked by relevance."""
    started = time.perf_counter()
    suffix = "/".join(p for p in path.replace("\\", "/").split("/") if p and p != ".")
    if not suffix:
        raise ConfigError("give a file path, such as src/app.py")
    hits = [Hit(p["id"], 0.0, p) for p in store.recent(SearchFilter(file=suffix), limit)]
    results = [to_result(h, suffix) for h in hits]
    return SearchResponse(path, round((time.perf_counter() - started) * 1000, 2), results)


def to_result(hit: Hit, query: str) -> SearchResult:
    p = hit.payload
    text = p.get("text", "")
    return SearchResult(
        score=round(hit.score, 6),
        project=p.get("project", ""),
        session_id=p.get("session_id", ""),
        transcript=p.get("transcript", ""),
        line_start=int(p.get("line_start", 0)),
        line_end=int(p.get("line_end", 0)),
        timestamp=p.get("timestamp"),
        git_branch=p.get("git_branch", ""),
        text=text,
        snippet=snippet(text, query),
        tools=list(p.get("tools", [])),
        files=list(p.get("files", [])),
    )


def snippet(text: str, query: str, width: int = SNIPPET_CHARS) -> str:
    """The window of ``text`` that holds the most query words."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    words = {w.lower() for w in _WORD.findall(query)}
    best, best_hits = 0, -1
    if words:
        lowered = flat.lower()
        starts = sorted({m.start() for w in words for m in re.finditer(re.escape(w), lowered)})
        for start in starts:
            begin = max(0, start - width // 4)
            window = lowered[begin : begin + width]
            hits = sum(1 for w in words if w in window)
            if hits > best_hits:
                best, best_hits = begin, hits
    begin = flat.rfind(" ", 0, best) + 1 if best else 0
    piece = flat[begin : begin + width]
    cut = piece.rfind(" ")
    if begin + width < len(flat) and cut > width // 2:
        piece = piece[:cut]
    return ("…" if begin else "") + piece + ("…" if begin + len(piece) < len(flat) else "")


def _parse_instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_when(value: str | None, now: datetime | None = None) -> str | None:
    """An ISO 8601 instant from ``7d``, ``12h``, ``2w``, ``2026-01-31`` or a full timestamp.

    Raises:
        ConfigError: the value is neither.
    """
    if not value:
        return None
    now = now or datetime.now(timezone.utc)
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative[1]), relative[2].lower()
        delta = timedelta(days=365 * amount) if unit == "y" else timedelta(**{_UNITS[unit]: amount})
        return (now - delta).isoformat().replace("+00:00", "Z")
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"not a date or a duration: {value!r} (try 2026-01-31 or 7d)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
