"""MCP face: Claude searches its own past.

Tool names are Claude Self-Reflect's, so existing prompts keep working:
``reflect_on_past``, ``store_reflection``, ``search_by_file``, plus
``read_conversation`` and ``status``. Every tool returns structured content
(the result JSON of DESIGN.md for searches) and a compact readable text block,
within a token budget. Served over stdio (``selfreflect mcp``) and over
streamable HTTP at ``/mcp`` on the daemon. The stdio server writes nothing
but protocol to stdout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from selfreflect import __version__
from selfreflect.errors import SelfReflectError
from selfreflect.projects import ProjectNotFound
from selfreflect.query import MAX_ALTERNATIVES, STRONG, SearchRequest, SearchResponse, SearchResult
from selfreflect.settings import Settings
from selfreflect.status import status_text

if TYPE_CHECKING:  # the backend's module brings the model's and the store's: the stdio server asks a daemon
    from selfreflect.backend import Backend

log = logging.getLogger("selfreflect")

CHARS_PER_TOKEN = 4
BY_FILE_TOKENS = 5000  # search_by_file's budget: its 10 results
# read_conversation's default budget: the default window (5 lines each side) of the real transcripts
# takes 3.2k chars of JSON at the median, 9.4k at most; a window of 50 each side 26k, 49k at most.
CONVERSATION_TOKENS = 4000
TEXT_CHARS = 600  # chunk text per result in MCP answers: the snippet says where, show expands
# The status a tool gives names this many projects and transcripts due for the clean-up, in its text
# and in its structured content (which Claude Code gives the model in place of the text): a heavy
# user's whole report (hundreds of projects, 50 transcripts due) would fill Claude's context.
STATUS_PROJECTS = 10
INSTRUCTIONS = """\
selfreflect searches the user's past Claude Code conversations.
- reflect_on_past: search by meaning or exact words (an error, a function, a command).
  Ask in the user's words, and pass alternatives: how it was likely written at the
  time (error text, file, command, function names) and a 4-8 word keyword form.
  Defaults to the current project; pass project="all" to search every project.
- search_by_file: conversations that read or edited a file (a path suffix is enough).
- read_conversation: the lines around a hit (session_id and line from a result, or its transcript:lines citation).
- store_reflection: save an insight worth finding again; it is searchable at once.
- status: what is indexed and how far behind the indexer is.
Cite hits as project, date, transcript:line."""


class Results(BaseModel):
    """The result JSON of DESIGN.md, as the tools' output schema."""

    query: str
    took_ms: float
    results: list[SearchResult]
    alternatives: list[str] = []
    note: str = ""  # what the text says first: which projects were searched, how strong the best match is
    left_out: int = 0  # results left out for the token budget (a bigger max_tokens gives them)


class Line(BaseModel):
    line: int
    kind: str
    timestamp: str | None
    text: str


class Conversation(BaseModel):
    session_id: str
    transcript: str
    line: int
    line_end: int
    lines: list[Line]
    left_out: int = 0  # lines of the window left out for the token budget, the farthest from the cited ones


class Stored(BaseModel):
    id: str
    timestamp: str
    transcript: str
    line_start: int
    tags: list[str]
    text: str


def build_server(backend: Backend, cwd: Callable[[], str | None]) -> MCPServer:
    """The MCP server over a backend.

    Args:
        backend: where the work happens (a :class:`~selfreflect.connect.Connection`
            over stdio, the daemon's own store over HTTP).
        cwd: the client's working directory when known (stdio: the process's),
            the default project of ``reflect_on_past``.
    """
    server = MCPServer("selfreflect", instructions=INSTRUCTIONS, version=__version__)

    @server.tool()
    def reflect_on_past(
        query: str,
        alternatives: Annotated[list[str] | None, Field(max_length=MAX_ALTERNATIVES)] = None,
        limit: Annotated[int, Field(ge=1, le=50)] = 5,
        project: str | None = None,
        since: str | None = None,
        min_score: float | None = None,
        use_decay: bool | None = None,
        max_tokens: Annotated[int, Field(ge=200, le=20000)] = 3000,  # 5 results: 1,700 on average, 2,100 at most
    ) -> Annotated[CallToolResult, Results]:
        """Search past conversations by meaning and by exact words (hybrid).

        Give the need in the user's words as query, and up to 3 alternatives;
        each is searched and the results fused. Good alternatives: how it was
        likely written at the time (the error message, file and function
        names, the command), and a short keyword form (4-8 words).
        E.g. query "how did we stop the container running out of memory",
        alternatives ["docker OOMKilled exit code 137 mem_limit", "docker memory limit compose"].

        Args:
            query: what to look for, in the user's words: a question, an error message, a function, a command.
            alternatives: other phrasings of the same need (see above); found_by says which found a hit.
            limit: results at most.
            project: a project name or path, or "all". Default: the current project.
            since: only after this date or duration ago (2026-01-31, 7d, 12h).
            min_score: drop results whose relevance (0 to 1) is below this; 0.32 and up is a strong match.
            use_decay: favour recent conversations (recency decay; off by default).
            max_tokens: budget for the whole answer.
        """
        scope, note = _scope(project, cwd())
        request = SearchRequest(
            query,
            limit=limit,
            projects=scope,
            since=since,
            min_score=min_score,
            decay=bool(use_decay),
            alternatives=tuple(alternatives or ()),
        )
        try:
            try:
                response = backend.search(request)
            except ProjectNotFound:
                if project is not None:
                    raise
                response = SearchResponse(
                    query, 0.0, [], list(request.alternatives)
                )  # the folder is no indexed project
            strong = response.results and response.results[0].relevance >= STRONG
            if not strong and scope and project is None:
                found = "nothing" if not response.results else "no strong match"
                note = f"{found} in {scope[0]}; searched all projects instead"
                response = backend.search(replace(request, projects=()))
            elif not strong and response.results:
                note = f"no strong match (best relevance {response.results[0].relevance:.2f}, strong is {STRONG})"
        except SelfReflectError as exc:
            raise ToolError(str(exc)) from exc
        return _results(response, max_tokens, note)

    @server.tool()
    def search_by_file(
        path: str,
        alternatives: Annotated[list[str] | None, Field(max_length=MAX_ALTERNATIVES)] = None,
        limit: Annotated[int, Field(ge=1, le=50)] = 10,
    ) -> Annotated[CallToolResult, Results]:
        """Conversations that read or edited a file, newest first.

        Args:
            path: the file; a suffix is enough (src/app.py finds /home/x/proj/src/app.py).
            alternatives: up to 3 other paths of the same file (before a rename, another spelling).
            limit: results at most.
        """
        try:
            response = backend.by_file(path, limit, tuple(alternatives or ()))
        except SelfReflectError as exc:
            raise ToolError(str(exc)) from exc
        note = "newest first" if response.results else f"no indexed conversation touched {path}"
        return _results(response, BY_FILE_TOKENS, note, ranked=False)

    @server.tool()
    def read_conversation(
        session_id: str,
        line: Annotated[int | None, Field(ge=1)] = None,
        before: Annotated[int, Field(ge=0, le=50)] = 5,
        after: Annotated[int, Field(ge=0, le=50)] = 5,
        max_tokens: Annotated[int, Field(ge=200, le=20000)] = CONVERSATION_TOKENS,
    ) -> Annotated[CallToolResult, Conversation]:
        """The conversation around a line of an indexed session (expand a search hit).

        Args:
            session_id: the session_id of a search result (or its start), or a
                citation as results print it: transcript:line_start-line_end.
            line: the line to centre on (line_start of a result). Default: the
                cited lines, else line 1.
            before: lines before it.
            after: lines after it.
            max_tokens: budget for the whole answer; the lines farthest from
                the cited ones are left out first (left_out counts them).
        """
        try:
            found = backend.read_conversation(session_id, line, before, after)
        except SelfReflectError as exc:
            raise ToolError(str(exc)) from exc
        return _conversation(Conversation.model_validate(found), max_tokens)

    @server.tool()
    def store_reflection(content: str, tags: list[str] | None = None) -> Annotated[CallToolResult, Stored]:
        """Save an insight so a later search finds it (ranked with conversations, marked as a reflection).

        Args:
            content: the insight, in words a later search would use.
            tags: optional labels.
        """
        try:
            saved = backend.store_reflection(content, list(tags or []), cwd())
        except SelfReflectError as exc:
            raise ToolError(str(exc)) from exc
        stored = Stored.model_validate(saved)
        return _answer(f"Stored reflection {stored.id} ({stored.transcript}:{stored.line_start}).", stored)

    @server.tool()
    def status() -> Annotated[CallToolResult, dict[str, Any]]:
        """What is indexed (per project), the model, and how far behind the indexer is."""
        try:
            report = backend.status()
        except SelfReflectError as exc:
            raise ToolError(str(exc)) from exc
        text = status_text(report, max_projects=STATUS_PROJECTS)
        cleanup = report["cleanup"]
        shown = dict(
            report,
            projects=report["projects"][:STATUS_PROJECTS],
            projects_total=len(report["projects"]),
            cleanup=dict(cleanup, transcripts=cleanup["transcripts"][:STATUS_PROJECTS]),
        )
        return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=shown)

    return server


def _scope(project: str | None, cwd: str | None) -> tuple[tuple[str, ...], str]:
    if project and project.strip().lower() == "all":
        return (), ""
    if project:
        return (project.strip(),), ""
    if cwd:
        return (cwd,), f'searched the current project {cwd}; pass project="all" to search every project'
    return (), ""


def _results(response: SearchResponse, max_tokens: int, note: str, ranked: bool = True) -> CallToolResult:
    """Structured results and a readable block, within ``max_tokens``
    (``ranked``: by relevance, which is shown; else newest first, no score).
    A result costs what the longer of its two forms costs: Claude Code gives
    the model the structured one in place of the text, and its JSON is about
    three times the text's."""
    budget = max_tokens * CHARS_PER_TOKEN
    kept: list[SearchResult] = []
    lines = [note] if note else []
    for n, r in enumerate(response.results, start=1):
        when = (r.timestamp or "")[:16].replace("T", " ")
        copies = f" (also in {len(r.duplicates)} other places)" if r.duplicates else ""
        score = f"[relevance {r.relevance:.2f}] " if ranked else ""
        about = f"\n   {r.about()}" if r.about() else ""
        entry = (
            f"{n}. {score}{r.project} · {when} · session {r.session_id} · "
            f"{r.transcript}:{r.line_start}-{r.line_end}{copies}{about}\n   {r.snippet}"
        )
        if response.alternatives and r.found_by:
            entry += "\n   found by: " + " | ".join(repr(p) for p in r.found_by)
        shown = replace(r, text=r.text[:TEXT_CHARS])
        cost = max(len(entry) + len(shown.text), len(orjson.dumps(shown)))
        if kept and cost > budget:
            lines.append(f"({len(response.results) - len(kept)} more left out for the token budget)")
            break
        budget -= cost
        kept.append(shown)
        lines.append(entry)
    if not kept:
        lines.append(f"No results for {response.query!r}.")
    results = Results(
        query=response.query,
        took_ms=response.took_ms,
        results=kept,
        alternatives=response.alternatives,
        note=note,
        left_out=len(response.results) - len(kept),
    )
    return _answer("\n".join(lines), results)


def _conversation(c: Conversation, max_tokens: int) -> CallToolResult:
    """A window of a conversation and its readable block, within
    ``max_tokens``: the cited lines first (at least one), then the nearest
    on either side, so that what is kept is one run of lines. A line costs
    what the longer of its two forms costs (its JSON, as for search results)."""
    cited = f"line {c.line}" if c.line == c.line_end else f"lines {c.line}-{c.line_end}"
    head = f"{c.transcript} around {cited}:"
    entries = [
        f"{'>' if c.line <= x.line <= c.line_end else ' '}{x.line} {x.kind} {(x.timestamp or '')[:16]}\n{x.text}"
        for x in c.lines
    ]
    costs = [max(len(e), len(orjson.dumps(x.model_dump()))) for e, x in zip(entries, c.lines, strict=True)]
    budget = max_tokens * CHARS_PER_TOKEN - len(head)
    inside = [i for i, x in enumerate(c.lines) if c.line <= x.line <= c.line_end]
    if not inside and c.lines:
        inside = [min(range(len(c.lines)), key=lambda i: abs(c.lines[i].line - c.line))]
    lo, hi = (inside[0], inside[-1] + 1) if inside else (0, 0)
    first = last = lo  # the kept run: lines[first:last]
    closed: set[str] = set()
    for i in _nearest_first(len(c.lines), lo, hi):
        side = "before" if i < lo else "after"  # the cited lines and those after them: one side
        if side in closed:
            continue
        if last > first and costs[i] > budget:
            closed.add(side)
            continue
        budget -= costs[i]
        first, last = min(first, i), max(last, i + 1)
    kept = c.model_copy(update={"lines": c.lines[first:last], "left_out": len(c.lines) - (last - first)})
    text = [head, *entries[first:last]]
    if kept.left_out:
        text.append(f"({kept.left_out} lines left out for the token budget: a bigger max_tokens gives them)")
    return _answer("\n".join(text), kept)


def _nearest_first(count: int, lo: int, hi: int) -> Iterator[int]:
    """The indices of ``count`` lines: ``lo`` to ``hi`` (the cited ones) in
    order, then outwards by distance from them, the line after first on a tie."""
    yield from range(lo, hi)
    before, after = lo - 1, hi
    while before >= 0 or after < count:
        if after < count and (before < 0 or after - hi < lo - before):
            yield after
            after += 1
        else:
            yield before
            before -= 1


def _answer(text: str, structured: BaseModel) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=structured.model_dump(mode="json")
    )


# -- stdio: `selfreflect mcp` -------------------------------------------------


def run_stdio(settings: Settings, start_daemon: bool) -> None:
    """``selfreflect mcp``: serve MCP over stdin/stdout.

    The server answers ``initialize`` at once; the store is found (the
    daemon verified or started, else opened here) in the background and on
    every call again (:mod:`selfreflect.connect`), so neither a daemon that
    cannot start nor one that dies leaves the client stuck.
    """
    from selfreflect.connect import Connection

    connection = Connection(settings, "mcp", start_daemon=start_daemon)
    connection.warm_up()
    workdir = str(Path(os.getcwd()))
    build_server(connection, lambda: workdir).run()
