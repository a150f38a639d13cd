"""Search: the one function every face (CLI, HTTP, MCP) calls.

Hybrid retrieval: the query is embedded with the same model as the chunks,
and the dense list and the BM25 list are fused with reciprocal rank fusion
(RRF) inside the engine. The result is the stable JSON of DESIGN.md.

Prompts of Claude Code's ``history.jsonl`` (kind ``history``) are a memory
of last resort: one whose conversation is in the index is not shown (the
conversation is), the others rank below conversations that match as well
(:func:`weigh_history`).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from selfreflect.embed import Embedder
from selfreflect.errors import ConfigError
from selfreflect.lexical import lexical_text
from selfreflect.projects import display_names, not_found, resolve
from selfreflect.query import (  # noqa: F401  (Decay, parse_when: the search API in one import)
    MAX_ALTERNATIVES,
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
from selfreflect.store import FusionPlan, Hit, SearchFilter, Store, remembered
from selfreflect.windows import FIELD, WIDTH, flatten, tiles, unpack

MAX_PROJECTS = 10_000
MAX_NAMES = 100_000  # sessions or tools listed to resolve a filter that matched nothing as given

# a history.jsonl prompt's fused score is multiplied by this: at the top of a list, as if it had
# ranked about three places lower in both rankings (1,1 -> between 4,4 and 5,5)
HISTORY_WEIGHT = 0.95
SNIPPET_CHARS = WIDTH
# word-pieces embedded per search to place snippets by meaning, for chunks stored
# without their window vectors (an older version, Voyage AI): a bit over one
# chunk's worth (chunks hold up to 256), the best-ranked first; ~20 ms on 2 cores
MEANING_TOKENS = 320
_WORD = re.compile(r"[\w./@:-]{2,}", re.U)
_STOP_WORDS = set(
    "the and for with that this what how why when did was were are you your have has had from into about can "
    "not but its our out all any who which there their them then than they been also just some more most very "
    "is it in on of to a an be do does so if or as at by we i my me".split()
)


def search(store: Store, embedder: Embedder, query: SearchQuery, plan: FusionPlan | None = None) -> SearchResponse:
    """Run a hybrid search: the dense and BM25 lists of the query, and of
    each of its alternatives, fused into one ranking (:func:`fuse`).

    Args:
        store: an open store.
        embedder: the store's model.
        query: what to look for and where.
        plan: fusion depth and weights (defaults: :class:`FusionPlan`).
    """
    started = time.perf_counter()
    phrasings = query.phrasings()
    paths = project_paths(store)
    query = replace(query, where=resolve_names(store, resolve_projects(query.where, paths)))
    hits: list[Hit] = []
    found_by: dict[str, list[int]] = {}
    relevance: dict[str, float] = {}
    vectors = np.zeros((0, embedder.dim), dtype=np.float32)
    plan = plan or FusionPlan()
    if phrasings and query.limit > 0:
        vectors = embedder.embed_queries(phrasings)  # one call for all: cheaper than one each
        # deeper than asked: copies of one exchange collapse into one result; with decay, an
        # older top hit may fall below a newer one
        fetch = max(query.limit * 3, 30) if query.decay else max(query.limit * 2, 20)
        if len(phrasings) == 1:  # the engine fuses the dense and BM25 lists itself
            found = store.hybrid(vectors[0].tolist(), lexical_text(phrasings[0]), query.where, fetch, plan)
            hit_lists = [(0, 1.0, found)]
        else:  # every phrasing's dense and BM25 list, fused here: so each hit says who found it
            hit_lists = []
            for i, (p, v) in enumerate(zip(phrasings, vectors, strict=True)):
                lexical_weight = plan.alternative_lexical_weight if i else plan.lexical_weight
                hit_lists.append((i, plan.dense_weight, store.dense(v.tolist(), query.where, plan.depth)))
                hit_lists.append((i, lexical_weight, store.lexical(lexical_text(p), query.where, plan.depth)))
        hits, found_by = fuse(hit_lists, plan.phrasings_k)
        hits = weigh_history(store, hits)[:fetch]
    if query.decay and hits:
        newest = parse_instant((store.latest(SearchFilter()) or {}).get("timestamp"))
        decay = query.decay
        hits = [Hit(h.id, h.score * decay.factor(h.payload.get("timestamp"), newest), h.payload) for h in hits]
        hits.sort(key=lambda h: h.score, reverse=True)
    if hits and query.min_score is not None:  # the filter needs every hit's relevance
        relevance = relevance_of(hits, vectors, phrasings, store)
        hits = [h for h in hits if relevance[h.id] >= query.min_score]
    kept = collapse(hits)[: query.limit]
    if kept and not relevance:  # else only what is shown
        relevance = relevance_of([h for h, _ in kept], vectors, phrasings, store)
    names = display_names(paths)
    first = [found_by[h.id][0] for h, _ in kept]  # the phrasing that ranked each best
    shown = snippets(
        [str(h.payload.get("text", "")) for h, _ in kept],
        [phrasings[i] for i in first],
        [vectors[i] for i in first],
        embedder,
        [h.payload.get(FIELD) for h, _ in kept],
    )
    results = [
        to_result(
            h,
            phrasings[i],
            copies,
            names,
            relevance.get(h.id, 0.0),
            piece,
            [phrasings[j] for j in found_by[h.id]] if len(phrasings) > 1 else [],
        )
        for (h, copies), i, piece in zip(kept, first, shown, strict=True)
    ]
    return SearchResponse(query.text, round((time.perf_counter() - started) * 1000, 2), results, list(phrasings[1:]))


def project_paths(store: Store) -> list[str]:
    """The indexed projects' paths, as of the store's last write (a facet
    over every segment: a few ms on a big store, so not every search)."""

    def ask() -> list[str]:  # the values only: an exact facet counts every point, 10-200 ms on a big store
        return [str(v) for v, _ in store.facet("project_path", SearchFilter(), MAX_PROJECTS, exact=False)]

    return remembered(store, "project_paths", ask)


def fuse(lists: list[tuple[int, float, list[Hit]]], k: int) -> tuple[list[Hit], dict[str, list[int]]]:
    """One ranking from ranked lists, each from one phrasing (its index) with
    a weight: reciprocal rank fusion, ``score = sum(weight / (k + rank))`` over the lists
    that hold a hit, as the engine fuses one phrasing's lists (one list: its
    own scores, unchanged; tied hits in id order, since the engine returns
    them in any order, and the same search should answer the same). Also,
    for each hit, the phrasings that found it, the one that ranked it best
    first."""
    if len(lists) == 1:
        ranked = sorted(lists[0][2], key=lambda h: (-h.score, h.id))
        return ranked, {h.id: [lists[0][0]] for h in ranked}
    scores: dict[str, float] = {}
    ranks: dict[str, dict[int, int]] = {}
    first: dict[str, Hit] = {}
    for phrasing, weight, hits in lists:
        for rank, hit in enumerate(hits, 1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (k + rank)
            best = ranks.setdefault(hit.id, {})
            best[phrasing] = min(rank, best.get(phrasing, rank))
            first.setdefault(hit.id, hit)
    order = sorted(scores, key=lambda i: (-scores[i], min(ranks[i].values())))
    fused = [Hit(i, round(scores[i], 6), first[i].payload) for i in order]
    return fused, {i: sorted(ranks[i], key=lambda p: (ranks[i][p], p)) for i in order}


def weigh_history(store: Store, hits: list[Hit]) -> list[Hit]:
    """``hits`` without the ``history.jsonl`` prompts whose conversation is
    indexed (a conversation chunk of the same project opens with the same
    prompt: the same ``prompt_key``), and the other prompts' scores times
    ``HISTORY_WEIGHT``, so a conversation that matches as well ranks first."""
    prompts = [h for h in hits if h.payload.get("kind") == "history"]
    if not prompts:
        return hits
    keys = sorted({str(h.payload["prompt_key"]) for h in prompts if h.payload.get("prompt_key")})
    told: set[str] = set()
    if keys:
        where = SearchFilter(kinds=("conversation",), prompt_keys=tuple(keys))
        told = {str(value) for value, _ in store.facet("prompt_key", where, len(keys))}
    kept = [h for h in hits if h.payload.get("kind") != "history" or h.payload.get("prompt_key") not in told]
    weighed = [
        Hit(h.id, h.score * HISTORY_WEIGHT, h.payload) if h.payload.get("kind") == "history" else h for h in kept
    ]
    return sorted(weighed, key=lambda h: h.score, reverse=True)


def relevance_of(hits: list[Hit], vectors: Any, phrasings: list[str], store: Store) -> dict[str, float]:
    """How well each hit matches on its own, 0 to 1 (the fused score only
    ranks): ``0.7 * cosine + 0.3 * term coverage``, the cosine of the query's
    and the chunk's embeddings and the share of the query's words (stop words
    aside) in the chunk; with alternatives, the best over the phrasings.
    ``STRONG`` and up is a strong match; docs/search.md says how that was
    measured."""
    stored = store.vectors([h.id for h in hits])
    terms = [_terms(p) for p in phrasings]
    queries = np.asarray(vectors, dtype=np.float32).reshape(len(phrasings), -1)
    out = {}
    for hit in hits:
        chunk = stored.get(hit.id)
        cosines = queries @ np.asarray(chunk, dtype=np.float32) if chunk else np.zeros(len(phrasings))
        lowered = str(hit.payload.get("text", "")).lower()
        best = 0.0
        for cosine, words in zip(cosines, terms, strict=True):
            coverage = sum(1 for t in words if t in lowered) / len(words) if words else 0.0
            best = max(best, 0.7 * float(cosine) + 0.3 * coverage)
        out[hit.id] = round(min(1.0, best), 4)
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


def by_file(store: Store, path: str, limit: int = 10, alternatives: tuple[str, ...] = ()) -> SearchResponse:
    """Conversations that read or edited ``path`` (or one of its
    ``alternatives``: other spellings of the same file), newest first. A path
    is matched by suffix: ``src/app.py`` finds ``/home/x/proj/src/app.py``.
    Scores are 0: these are not ranked by relevance.

    Raises:
        ConfigError: a bad limit, no path, too many alternatives.
    """
    started = time.perf_counter()
    if not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    if len(alternatives) > MAX_ALTERNATIVES:
        raise ConfigError(f"give at most {MAX_ALTERNATIVES} alternative paths, not {len(alternatives)}")
    suffixes = list(dict.fromkeys(s for s in map(_suffix, (path, *alternatives)) if s))
    if not suffixes:
        raise ConfigError("give a file path, such as src/app.py")
    found: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for suffix in suffixes:
        for payload in store.recent(SearchFilter(file=suffix), limit):
            found.setdefault(payload["id"], (payload, []))[1].append(suffix)
    newest = sorted(found.values(), key=lambda f: str(f[0].get("timestamp") or ""), reverse=True)[:limit]
    results = [to_result(Hit(p["id"], 0.0, p), by[0], found_by=by if len(suffixes) > 1 else []) for p, by in newest]
    return SearchResponse(path, round((time.perf_counter() - started) * 1000, 2), results, suffixes[1:])


def _suffix(path: str) -> str:
    return "/".join(p for p in path.replace("\\", "/").split("/") if p and p != ".")


def to_result(
    hit: Hit,
    query: str,
    duplicates: list[str] | None = None,
    names: dict[str, str] | None = None,
    relevance: float = 0.0,
    shown: str | None = None,
    found_by: list[str] | None = None,
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
        snippet=snippet(text, query) if shown is None else shown,
        tools=list(p.get("tools", [])),
        files=list(p.get("files", [])),
        duplicates=duplicates or [],
        relevance=relevance,
        found_by=found_by or [],
        title=p.get("title") or "",
        sidechain=p.get("thread") == "sidechain",
        agent_id=p.get("agent_id"),
        parent_tool_use_id=p.get("parent_tool_use_id"),
        compact_summary=bool(p.get("compact_summary")),
    )


class WindowVectors:
    """The vectors of the windows embedded to place snippets (of chunks
    stored without their window vectors), most recently used kept (``size``
    windows at most, 1.5 KB each): a chunk that comes back in another search
    (an alternative phrasing, a follow-up question) is placed without the
    model. Keyed by the model's name and the window's text."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, window: str) -> np.ndarray | None:
        with self._lock:
            found = self._kept.get((model, window))
            if found is not None:
                self._kept.move_to_end((model, window))
            return found

    def put(self, model: str, window: str, vector: np.ndarray) -> None:
        with self._lock:
            self._kept[(model, window)] = np.asarray(vector, dtype=np.float32)
            self._kept.move_to_end((model, window))
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


WINDOWS = WindowVectors()


def snippets(
    texts: list[str],
    queries: list[str],
    vectors: Any,
    embedder: Embedder | None,
    stored: Sequence[Any] | None = None,
) -> list[str]:
    """For each text, the window that matched its query best (``queries``
    and their ``vectors``, one per text): the one that holds the most query
    words, or, where no window holds half of them (a question in other
    words), the one closest in meaning.

    The windows' vectors are the ones the importer kept (``stored``: each
    text's payload value of :data:`selfreflect.windows.FIELD`): no model
    call. A text without them (written by an older version, or by an
    embedder that gives none) has its windows embedded, ``MEANING_TOKENS``
    per search at most, the best ranked first; the texts past that budget
    fall back to words. Windows embedded before are not embedded again
    (:data:`WINDOWS`), but count against the budget as if they were: the
    same search places the same snippets whatever came before it."""
    chosen: list[str] = []
    placed: list[tuple[int, list[tuple[int, str]], np.ndarray | None]] = []  # by meaning: text, windows, stored
    known: dict[str, np.ndarray | None] = {}  # window -> its vector (None: to embed), in order
    budget = MEANING_TOKENS
    model = getattr(embedder, "name", "")
    for i, (text, query) in enumerate(zip(texts, queries, strict=True)):
        flat, terms = flatten(text), _terms(query)
        begin, found = _word_window(flat, terms)
        chosen.append(_cut(flat, begin))
        if len(flat) <= SNIPPET_CHARS or found * 2 >= len(terms) > 0:
            continue
        own = tiles(flat)
        ready = _stored(own, stored[i] if stored else None, len(vectors[i]))
        if ready is None:
            if embedder is None or budget <= 0:
                continue
            cost = sum(embedder.count_tokens([t for _, t in own]))
            if cost > budget:
                continue
            known.update((t, WINDOWS.get(model, t)) for _, t in own if t not in known)
            budget -= cost
        placed.append((i, own, ready))
    fresh = [t for t, v in known.items() if v is None]
    if fresh and embedder is not None:
        for tile, tile_vector in zip(fresh, embedder.embed(fresh), strict=True):
            known[tile] = tile_vector
            WINDOWS.put(model, tile, tile_vector)
    for i, own, ready in placed:
        terms, query_vector = _terms(queries[i]), np.asarray(vectors[i], dtype=np.float32)
        own_vectors = ready if ready is not None else [known[t] for _, t in own]
        best: tuple[float, int] | None = None
        for (start, tile), vector in zip(own, own_vectors, strict=True):
            lowered = tile.lower()
            coverage = sum(1 for t in terms if t in lowered) / len(terms) if terms else 0.0
            score = float(np.asarray(vector) @ query_vector) + 0.3 * coverage
            if best is None or score > best[0]:
                best = (score, start)
        if best is not None:
            chosen[i] = _cut(flatten(texts[i]), best[1])
    return chosen


def _stored(own: list[tuple[int, str]], value: Any, dim: int) -> np.ndarray | None:
    """The stored vectors of the windows ``own``, one row each; ``None``
    where none are stored, or they are for windows cut otherwise."""
    windows = unpack(value, dim) if value is not None else None
    if windows is None or windows.starts != [start for start, _ in own]:
        return None
    return windows.vectors


def snippet(text: str, query: str) -> str:
    """The window of ``text`` that holds the most query words."""
    flat = flatten(text)
    return _cut(flat, _word_window(flat, _terms(query) or {w.lower() for w in _WORD.findall(query)})[0])


def _terms(query: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(query)} - _STOP_WORDS


def _word_window(flat: str, words: set[str], width: int = SNIPPET_CHARS) -> tuple[int, int]:
    """Where the window with the most of ``words`` begins, and how many it holds."""
    best, best_hits = 0, 0
    lowered = flat.lower()
    starts = sorted({m.start() for w in words for m in re.finditer(re.escape(w), lowered)})
    for start in starts:
        begin = max(0, start - width // 4)
        window = lowered[begin : begin + width]
        hits = sum(1 for w in words if w in window)
        if hits > best_hits:
            best, best_hits = begin, hits
    return best, best_hits


def _cut(flat: str, best: int, width: int = SNIPPET_CHARS) -> str:
    """The ``width`` characters of ``flat`` from about ``best``, at word
    boundaries, with an ellipsis where text was left out."""
    if len(flat) <= width:
        return flat
    begin = flat.rfind(" ", 0, best) + 1 if best else 0
    piece = flat[begin : begin + width]
    cut = piece.rfind(" ")
    if begin + width < len(flat) and cut > width // 2:
        piece = piece[:cut]
    return ("…" if begin else "") + piece + ("…" if begin + len(piece) < len(flat) else "")
