"""The query every face fills in: what to look for, where, how many.

CLI options, HTTP parameters and MCP arguments all become one
:class:`SearchRequest`, validated in one place (:meth:`SearchRequest.query`),
and travel to the daemon as the same parameters (:meth:`SearchRequest.params`,
:meth:`SearchRequest.from_params`). Light on purpose: no model, no store, so
a client that only asks the daemon stays quick to start.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from selfreflect.errors import ConfigError, NoMatch
from selfreflect.store import SearchFilter

MAX_LIMIT = 200
MAX_ALTERNATIVES = 3  # other phrasings of one need a search takes
STRONG = 0.32  # relevance from which a hit is a strong match (measured: docs/search.md)
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdwy])\s*$", re.I)
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_TRUE = {"1", "true", "yes", "on"}


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
        moment = parse_instant(timestamp)
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
    alternatives: tuple[str, ...] = ()  # other phrasings of the same need

    def phrasings(self) -> list[str]:
        """The query, then its alternatives: stripped, the empty and repeated left out."""
        seen: dict[str, None] = {}
        for text in (self.text, *self.alternatives):
            if text.strip():
                seen.setdefault(text.strip(), None)
        return list(seen)


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
    duplicates: list[str] = field(default_factory=list)  # other places the same text is, as transcript:start-end
    relevance: float = 0.0  # how well it matches on its own, 0 to 1 (search.relevance_of); score only ranks
    found_by: list[str] = field(default_factory=list)  # with alternatives: the phrasings that found it, best first
    title: str = ""  # the session's title (custom-title, ai-title or summary line), "" when it has none
    sidechain: bool = False  # sub-agent work (a sub-agent file, or an inline sidechain of 1.0.x)
    agent_id: str | None = None  # the sub-agent; its session_id is its parent session's
    parent_tool_use_id: str | None = None  # the Task/Agent call in the parent session that started it
    compact_summary: bool = False  # the summary Claude Code wrote when it compacted the conversation

    def about(self) -> str:
        """What the hit belongs to, in words: the session's title, whether it
        is a sub-agent's work (and which call started it), a compaction summary."""
        said = [f"“{self.title}”"] if self.title else []
        if self.sidechain:
            agent = f"sub-agent {self.agent_id}" if self.agent_id else "sub-agent"
            said.append(f"{agent}, started by {self.parent_tool_use_id}" if self.parent_tool_use_id else agent)
        if self.compact_summary:
            said.append("summary of the compacted conversation")
        return " · ".join(said)


@dataclass(frozen=True)
class SearchResponse:
    query: str
    took_ms: float
    results: list[SearchResult]
    alternatives: list[str] = field(default_factory=list)  # the other phrasings searched

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SearchResponse:
        return cls(
            doc["query"], doc["took_ms"], [SearchResult(**r) for r in doc["results"]], doc.get("alternatives", [])
        )


@dataclass(frozen=True)
class SearchRequest:
    """A search as a face received it, before validation.

    Attributes:
        text: the words.
        limit: results at most (1..200).
        projects: project names or paths; empty: all.
        since, until: dates or durations (``2026-01-31``, ``7d``).
        session, file, branch, tool: exact filters (``file``: a path suffix).
        host: only what this machine wrote (a store shared by many machines).
        include_sidechains: sub-agent conversations too.
        min_score: drop results whose relevance (0 to 1) is under this.
        decay: favour recent conversations (the settings' half-life and weight).
        alternatives: up to 3 other phrasings of the same need, each searched
            with the same filters, the lists fused.
    """

    text: str
    limit: int = 10
    projects: tuple[str, ...] = ()
    since: str | None = None
    until: str | None = None
    session: str | None = None
    file: str | None = None
    branch: str | None = None
    tool: str | None = None
    host: str | None = None
    include_sidechains: bool = True
    min_score: float | None = None
    decay: bool = False
    alternatives: tuple[str, ...] = ()

    def query(self, decay: Decay) -> SearchQuery:
        """The validated query (``decay``: the recency decay to apply if asked):
        the one place a face's values are checked and converted.

        Raises:
            ConfigError: a value that cannot be used (a bad date, a bad limit).
        """
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ConfigError(f"limit must be between 1 and {MAX_LIMIT}, not {self.limit}")
        if len(self.alternatives) > MAX_ALTERNATIVES:
            raise ConfigError(f"give at most {MAX_ALTERNATIVES} alternative phrasings, not {len(self.alternatives)}")
        where = SearchFilter(
            projects=tuple(p for p in self.projects if p),
            since=parse_when(self.since),
            until=parse_when(self.until),
            session_id=self.session or None,
            file=self.file or None,
            git_branch=self.branch or None,
            tool=self.tool or None,
            include_sidechains=self.include_sidechains,
            host=self.host or None,
        )
        return SearchQuery(
            self.text, where, self.limit, self.min_score, decay if self.decay else None, tuple(self.alternatives)
        )

    def params(self) -> list[tuple[str, str]]:
        """As ``/api/search`` parameters (the alternatives: more ``q``)."""
        out = (
            [("q", self.text)]
            + [("q", a) for a in self.alternatives]
            + [("limit", str(self.limit))]
            + [("project", p) for p in self.projects]
        )
        for name in ("since", "until", "session", "file", "branch", "tool", "host"):
            value = getattr(self, name)
            if value:
                out.append((name, value))
        if self.min_score is not None:
            out.append(("min_score", repr(self.min_score)))
        if not self.include_sidechains:
            out.append(("no_sidechains", "1"))
        if self.decay:
            out.append(("decay", "1"))
        return out

    @classmethod
    def from_params(cls, get: Callable[[str], str | None], getlist: Callable[[str], list[str]]) -> SearchRequest:
        """From ``/api/search`` parameters: the first ``q`` is the query,
        any more are its alternatives.

        Raises:
            ConfigError: a number that is not one.
        """
        try:
            limit = int(get("limit") or "10")
            min_score = float(get("min_score")) if get("min_score") else None  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigError(f"limit and min_score must be numbers: {exc}") from exc
        phrasings = getlist("q") or [""]
        return cls(
            text=phrasings[0],
            alternatives=tuple(phrasings[1:]),
            limit=limit,
            projects=tuple(getlist("project")),
            since=get("since"),
            until=get("until"),
            session=get("session"),
            file=get("file"),
            branch=get("branch"),
            tool=get("tool"),
            host=get("host"),
            include_sidechains=(get("no_sidechains") or "").lower() not in _TRUE,
            min_score=min_score,
            decay=(get("decay") or "").lower() in _TRUE,
        )


def pick(given: str, known: Sequence[str], what: str, prefix: bool = False) -> str:
    """The one name of ``known`` (most used first) that ``given`` means: itself;
    else the same in another case (``edit`` is ``Edit``); else, with
    ``prefix``, the one it is the start of (a short session id).

    Raises:
        NoMatch: it names none (with the closest names), or several (with them).
    """
    if given in known:
        return given
    lowered = given.lower()
    found = [k for k in known if k.lower() == lowered]
    if not found and prefix:
        found = sorted(k for k in known if k.lower().startswith(lowered))
    if len(found) == 1:
        return found[0]
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise NoMatch(f"{given!r} is the start of {len(found)} {what}s ({shown}): give more of it", found[:5], True)
    # a typo: compare with as much of each name as was given, when a start is enough
    heads = {(k[: len(given)] if prefix else k).lower(): k for k in reversed(known)}
    import difflib  # only when a name matched nothing: not on the way of every CLI call

    close = [heads[c] for c in difflib.get_close_matches(lowered, list(heads), n=3, cutoff=0.6)]
    suggestions = close or ([] if prefix else list(known[:5]))  # the most used tools; random ids help no one
    if not known:
        hint = " (none is indexed)"
    elif close:
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?"
    else:
        hint = f"; the most used are {', '.join(repr(k) for k in suggestions)}" if suggestions else ""
    raise NoMatch(f"no indexed {what} matches {given!r}{hint}", suggestions)


def parse_instant(value: str | None) -> datetime | None:
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
        ConfigError: the value is neither, or reaches outside years 1 to 9999.
    """
    if not value:
        return None
    now = now or datetime.now(timezone.utc)
    relative = _RELATIVE.match(value)
    try:
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
    except (OverflowError, ValueError):
        raise ConfigError(f"{value!r} reaches outside the calendar (years 1 to 9999)") from None
