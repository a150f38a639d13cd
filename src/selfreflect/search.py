"""Search: the one function every face (CLI, HTTP, MCP) calls.

Hybrid retrieval: the query is embedded with the same model as the chunks,
and the dense list and the BM25 list are fused with reciprocal rank fusion
(RRF) inside the engine. The result is the stable JSON of DESIGN.md.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import replace
from typing import Any

import numpy as np

from selfreflect.embed import Embedder
from selfreflect.errors import ConfigError
from selfreflect.lexical import lexical_text
from selfreflect.projects import display_names, not_found, resolve
from selfreflect.query import (  # noqa: F401  (Decay, parse_when: the search API in one import)
    MAX_LIMIT,
    STRONG,
    Decay,
    SearchQuery,
    SearchResponse,
    SearchResult,
    parse_instant,
    parse_when,
    pick,
)
from selfreflect.store import FusionPlan, Hit, SearchFilter, Store

MAX_PROJECTS = 10_000
MAX_NAMES = 100_000  # sessions or tools listed to resolve a filter that matched nothing as given

SNIPPET_CHARS = 240
_WORD = re.compile(r"[\w./@:-]{2,}", re.U)
_STOP_WORDS = set(
    "the and for with that this what how why when did was were are you your have has had from into about can "
    "not but its our out all any who which there their them then than they been also just some more most very "
    "is it in on of to a an be do does so if or as at by we i my me".split()
)


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
    paths = [str(v) for v, _ in store.facet("project_path", SearchFilter(), MAX_PROJECTS)]
    query = replace(query, where=resolve_names(store, resolve_projects(query.where, paths)))
    hits: list[Hit] = []
    relevance: dict[str, float] = {}
    if text and query.limit > 0:
        vector = embedder.embed([text])[0]
        # deeper than asked: copies of one exchange collapse into one result; with decay, an
        # older top hit may fall below a newer one
        fetch = max(query.limit * 3, 30) if query.decay else max(query.limit * 2, 20)
        hits = store.hybrid(vector.tolist(), lexical_text(text), query.where, fetch, plan or FusionPlan())
    if query.decay and hits:
        newest = parse_instant((store.latest(SearchFilter()) or {}).get("timestamp"))
        decay = query.decay
        hits = [Hit(h.id, h.score * decay.factor(h.payload.get("timestamp"), newest), h.payload) for h in hits]
        hits.sort(key=lambda h: h.score, reverse=True)
    if hits and query.min_score is not None:  # the filter needs every hit's relevance
        relevance = relevance_of(hits, vector, text, store)
        hits = [h for h in hits if relevance[h.id] >= query.min_score]
    kept = collapse(hits)[: query.limit]
    if kept and not relevance:  # else only what is shown
        relevance = relevance_of([h for h, _ in kept], vector, text, store)
    names = display_names(paths)
    results = [to_result(h, text, copies, names, relevance.get(h.id, 0.0)) for h, copies in kept]
    return SearchResponse(query.text, round((time.perf_counter() - started) * 1000, 2), results)


def relevance_of(hits: list[Hit], vector: Any, text: str, store: Store) -> dict[str, float]:
    """How well each hit matches on its own, 0 to 1 (the fused score only
    ranks): ``0.7 * cosine + 0.3 * term coverage``, the cosine of the query's
    and the chunk's embeddings and the share of the query's words (stop words
    aside) in the chunk. ``STRONG`` and up is a strong match; docs/search.md
    says how that was measured."""
    vectors = store.vectors([h.id for h in hits])
    terms = {w.lower() for w in _WORD.findall(text)} - _STOP_WORDS
    query_vector = np.asarray(vector, dtype=np.float32)
    out = {}
    for hit in hits:
        chunk = vectors.get(hit.id)
        cosine = float(np.asarray(chunk, dtype=np.float32) @ query_vector) if chunk else 0.0
        lowered = str(hit.payload.get("text", "")).lower()
        coverage = sum(1 for t in terms if t in lowered) / len(terms) if terms else 0.0
        out[hit.id] = round(max(0.0, min(1.0, 0.7 * cosine + 0.3 * coverage)), 4)
    return out


def resolve_projects(where: SearchFilter, paths: list[str]) -> SearchFilter:
    """``where`` with the projects asked for (names, paths, Claude folder
    names, any case) turned into the indexed project paths they name.

    Raises:
        ProjectNotFound: one names no indexed project (with the closest ones).
    """
    if not where.projects:
        return where
    matched: list[str] = []
    for given in where.projects:
        found = resolve(given, paths)
        if not found:
            raise not_found(given, paths)
        matched += found
    return replace(where, projects=tuple(dict.fromkeys(matched)))


def resolve_names(store: Store, where: SearchFilter) -> SearchFilter:
    """``where`` with its session and tool as indexed: a tool in any case
    (``edit`` is ``Edit``), a session by the start of its id.

    Raises:
        NoMatch: one names nothing indexed (with the closest names), or a
            session start names several sessions (with them).
    """
    if where.session_id and not store.count(SearchFilter(session_id=where.session_id)):  # not as given
        sessions = [str(v) for v, _ in store.facet("session_id", SearchFilter(), MAX_NAMES)]
        where = replace(where, session_id=pick(where.session_id, sessions, "session", prefix=True))
    if where.tool and not store.count(SearchFilter(tool=where.tool)):
        tools = [str(v) for v, _ in store.facet("tools", SearchFilter(), MAX_NAMES)]
        where = replace(where, tool=pick(where.tool, tools, "tool"))
    return where


def collapse(hits: list[Hit]) -> list[tuple[Hit, list[str]]]:
    """Hits with the same text (a resumed or copied session holds the same
    exchanges) as one: the best, with where the others are."""
    kept: dict[str, tuple[Hit, list[str]]] = {}
    for hit in hits:
        key = hashlib.sha1(" ".join(str(hit.payload.get("text", "")).split()).encode("utf-8", "replace")).hexdigest()
        if key in kept:
            p = hit.payload
            kept[key][1].append(f"{p.get('transcript', '')}:{p.get('line_start', 0)}-{p.get('line_end', 0)}")
        else:
            kept[key] = (hit, [])
    return list(kept.values())


def by_file(store: Store, path: str, limit: int = 10) -> SearchResponse:
    """Conversations that read or edited ``path``, newest first. The path is
    matched by suffix: ``src/app.py`` finds ``/home/x/proj/src/app.py``.
    Scores are 0: these are not ranked by relevance."""
    started = time.perf_counter()
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    suffix = "/".join(p for p in path.replace("\\", "/").split("/") if p and p != ".")
    if not suffix:
        raise ConfigError("give a file path, such as src/app.py")
    hits = [Hit(p["id"], 0.0, p) for p in store.recent(SearchFilter(file=suffix), limit)]
    results = [to_result(h, suffix) for h in hits]
    return SearchResponse(path, round((time.perf_counter() - started) * 1000, 2), results)


def to_result(
    hit: Hit,
    query: str,
    duplicates: list[str] | None = None,
    names: dict[str, str] | None = None,
    relevance: float = 0.0,
) -> SearchResult:
    p = hit.payload
    text = p.get("text", "")
    return SearchResult(
        score=round(hit.score, 6),
        project=(names or {}).get(p.get("project_path", ""), p.get("project", "")),
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
        duplicates=duplicates or [],
        relevance=relevance,
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
