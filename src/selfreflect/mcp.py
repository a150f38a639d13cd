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
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field

from selfreflect.backend import Backend
from selfreflect.errors import SelfReflectError
from selfreflect.search import Decay, SearchResponse, SearchResult, make_query
from selfreflect.settings import Settings

log = logging.getLogger("selfreflect")

CHARS_PER_TOKEN = 4
TEXT_CHARS = 600  # chunk text per result in MCP answers: the snippet says where, show expands
INSTRUCTIONS = """\
selfreflect searches the user's past Claude Code conversations.
- reflect_on_past: search by meaning or exact words (an error, a function, a command).
  Defaults to the current project; pass project="all" to search every project.
- search_by_file: conversations that read or edited a file (a path suffix is enough).
- read_conversation: the lines around a hit (session_id and line from a result).
- store_reflection: save an insight worth finding again; it is searchable at once.
- status: what is indexed and how far behind the indexer is.
Cite hits as project, date, transcript:line."""


class Results(BaseModel):
    """The result JSON of DESIGN.md, as the tools' output schema."""

    query: str
    took_ms: float
    results: list[SearchResult]


class Line(BaseModel):
    line: int
    kind: str
    timestamp: str | None
    text: str


class Conversation(BaseModel):
    session_id: str
    transcript: str
    line: int
    lines: list[Line]


class Stored(BaseModel):
    id: str
    timestamp: str
    transcript: str
    line_start: int
    tags: list[str]
    text: str


def build_server(backend: Backend, cwd: Callable[[], str | None], decay: Decay) -> MCPServer:
    """The MCP server over a backend.

    Args:
        backend: where the work happens (this process, or the daemon).
        cwd: the client's working directory when known (stdio: the process's),
            the default project of ``reflect_on_past``.
        decay: the recency decay ``use_decay=True`` applies.
    """
    server = MCPServer("selfreflect", instructions=INSTRUCTIONS)

    @server.tool()
    def reflect_on_past(
        query: str,
        limit: Annotated[int, Field(ge=1, le=50)] = 5,
        project: str | None = None,
        since: str | None = None,
        min_score: float | None = None,
        use_decay: bool | None = None,
        max_tokens: Annotated[int, Field(ge=200, le=20000)] = 2000,
    ) -> Annotated[CallToolResult, Results]:
        """Search past conversations by meaning and by exact words (hybrid).

        Args:
            query: what to look for: a question, an error message, a function name, a command.
            limit: results at most.
            project: a project name or path, or "all". Default: the current project.
            since: only after this date or duration ago (2026-01-31, 7d, 12h).
            min_score: drop results below this fused score (about 0.033 at best).
            use_decay: favour recent conversations (recency decay; off by default).
            max_tokens: budget for the whole answer.
        """
        scope, note = _scope(project, cwd())
        recency = decay if use_decay else None
        try:
            response = backend.search(
                make_query(query, limit=limit, projects=scope, since=since, min_score=min_score, decay=recency)
            )
            if not response.results and scope and project is None:
                note = f"nothing in {scope[0]}; searched all projects instead"
                response = backend.search(
                    make_query(query, limit=limit, since=since, min_score=min_score, decay=recency)
                )
        except SelfReflectError as exc:
            raise ToolError(str(exc)) from exc
        return _results(response, max_tokens, note)

    @server.tool()
    def search_by_file(path: str, limit: Annotated[int, Field(ge=1, le=50)] = 10) -> Annotated[CallToolResult, Results]:
        """Conversations that read or edited a file, newest first.

        Args:
            path: the file; a suffix is enough (src/app.py finds /home/x/proj/src/app.py).
            limit: results at most.
        """
        try:
            response = backend.by_file(path, limit)
        except SelfReflectError as exc:
            raise ToolError(str(exc)) from exc
        return _results(response, 2000, "" if response.results else f"no indexed conversation touched {path}")

    @server.tool()
    def read_conversation(
        session_id: str,
        line: Annotated[int, Field(ge=1)],
        before: Annotated[int, Field(ge=0, le=50)] = 5,
        after: Annotated[int, Field(ge=0, le=50)] = 5,
    ) -> Annotated[CallToolResult, Conversation]:
        """The conversation around a line of an indexed session (expand a search hit).

        Args:
            session_id: the session_id of a search result.
            line: the line to centre on (line_start of a result).
            before: lines before it.
            after: lines after it.
        """
        try:
            found = backend.read_conversation(session_id, line, before, after)
        except SelfReflectError as exc:
            raise ToolError(str(exc)) from exc
        conversation = Conversation.model_validate(found)
        text = [f"{conversation.transcript} around line {line}:"]
        for entry in conversation.lines:
            marker = ">" if entry.line == line else " "
            text.append(f"{marker}{entry.line} {entry.kind} {(entry.timestamp or '')[:16]}\n{entry.text}")
        return _answer("\n".join(text), conversation)

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
    def status() -> dict[str, Any]:
        """What is indexed (per project), the model, and how far behind the indexer is."""
        try:
            return backend.status()
        except SelfReflectError as exc:
            raise ToolError(str(exc)) from exc

    return server


def _scope(project: str | None, cwd: str | None) -> tuple[tuple[str, ...], str]:
    if project and project.strip().lower() == "all":
        return (), ""
    if project:
        return (project.strip(),), ""
    if cwd:
        return (cwd,), f'searched the current project {cwd}; pass project="all" to search every project'
    return (), ""


def _results(response: SearchResponse, max_tokens: int, note: str) -> CallToolResult:
    """Structured results and a readable block, within ``max_tokens``."""
    budget = max_tokens * CHARS_PER_TOKEN
    kept: list[SearchResult] = []
    lines = [note] if note else []
    for n, r in enumerate(response.results, start=1):
        when = (r.timestamp or "")[:16].replace("T", " ")
        entry = (
            f"{n}. [{r.score:.4f}] {r.project} · {when} · session {r.session_id} · "
            f"{r.transcript}:{r.line_start}-{r.line_end}\n   {r.snippet}"
        )
        cost = len(entry) + min(len(r.text), TEXT_CHARS)
        if kept and cost > budget:
            lines.append(f"({len(response.results) - len(kept)} more left out for the token budget)")
            break
        budget -= cost
        kept.append(r)
        lines.append(entry)
    if not kept:
        lines.append(f"No results for {response.query!r}.")
    results = Results(
        query=response.query,
        took_ms=response.took_ms,
        results=[replace(r, text=r.text[:TEXT_CHARS]) for r in kept],
    )
    return _answer("\n".join(lines), results)


def _answer(text: str, structured: BaseModel) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=structured.model_dump(mode="json")
    )


# -- stdio: `selfreflect mcp` -------------------------------------------------


def stdio_backend(settings: Settings, start_daemon: bool) -> Backend:
    """The daemon when it runs (started, detached, when it does not and
    ``start_daemon``); otherwise this process, opening the store per call."""
    from selfreflect.backend import DaemonBackend
    from selfreflect.daemon import running_daemon

    info = running_daemon(settings.data_dir)
    if info is None and start_daemon:
        info = _start_daemon(settings)
    if info is not None:
        return DaemonBackend(info.url)
    return _local_backend(settings)


def _local_backend(settings: Settings) -> Backend:
    from contextlib import contextmanager

    from selfreflect.backend import LocalBackend
    from selfreflect.embed import OnnxEmbedder
    from selfreflect.store import open_store

    embedder = OnnxEmbedder()
    embedder.load()

    @contextmanager
    def briefly() -> Any:
        store = open_store(settings, embedder.name, embedder.dim)  # the lock, only for this call
        try:
            yield store
        finally:
            store.close()

    return LocalBackend(settings, embedder, briefly)


def _start_daemon(settings: Settings, timeout: float = 60.0) -> Any:
    """Start ``selfreflect serve`` detached and wait for it. Several clients
    starting at once are safe: the store lock lets one daemon win, the others
    exit, and every client finds the winner in ``daemon.json``."""
    from selfreflect.daemon import running_daemon

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "selfreflect", "--claude-dir", str(settings.claude_dir)]
    argv += ["--data-dir", str(settings.data_dir), "serve", "--port", str(settings.port)]
    with open(settings.data_dir / "serve.log", "ab") as log_file:
        subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True, close_fds=True
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = running_daemon(settings.data_dir)
        if info is not None:
            return info
        time.sleep(0.1)
    log.warning("the daemon did not start within %.0f s (see %s)", timeout, settings.data_dir / "serve.log")
    return None


def run_stdio(settings: Settings, start_daemon: bool) -> None:
    """``selfreflect mcp``: serve MCP over stdin/stdout."""
    backend = stdio_backend(settings, start_daemon)
    workdir = str(Path(os.getcwd()))
    build_server(backend, lambda: workdir, Decay(settings.decay_half_life_days, settings.decay_weight)).run()
