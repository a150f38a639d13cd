"""HTTP face of the daemon, for local callers only.

Every route, ``/mcp`` included, sits behind :class:`Guard`: a web page the
user visits must not read the history or write into Claude's memory. So a
request is refused unless its ``Host`` is a loopback name (421: DNS
rebinding), any ``Origin`` it carries is a loopback origin (403: a
cross-site request), and a ``POST`` says ``Content-Type: application/json``
(415: a "simple" cross-site form post needs no preflight). There are no CORS
headers. With ``SELFREFLECT_TOKEN`` set, which listening on anything but
loopback requires, every request must carry ``Authorization: Bearer
<token>`` (401), and then any ``Host`` is taken. Sizes are bounded
(:class:`Limits`).

``GET /healthz`` (200 ``ok``, or 503 ``failing`` with the problems),
``GET /metrics`` (Prometheus text), ``GET /api/search`` (the parameters and
JSON of ``selfreflect search --json``), ``GET /api/status`` (the JSON of
``selfreflect status --json``), the MCP tools' calls (``/api/by-file``,
``POST /api/reflections``, ``/api/conversation``), ``POST /api/import``
(look for new lines now: ``selfreflect import`` while the daemon runs),
``POST /api/compact`` (compact the store in another process: ``selfreflect
compact`` while the daemon runs; ``{"if_needed": true}``: only if it holds
many small segments) and MCP itself over streamable HTTP at ``/mcp``.
Thin: it translates parameters and formats results; the core does the work.

The MCP server is built on the first request to ``/mcp``: the SDK and its
dependencies cost ~35 MB of memory that a daemon nobody talks MCP to over
HTTP does not pay (stdio clients use the ``/api`` routes).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from selfreflect.backend import LocalBackend, held
from selfreflect.daemon import Daemon
from selfreflect.errors import NoMatch, SelfReflectError, TranscriptNotFound, Unavailable
from selfreflect.projects import ProjectNotFound
from selfreflect.query import SearchRequest

log = logging.getLogger("selfreflect")

MAX_QUERY = 8 * 1024  # bytes of query string
MAX_BODY = 256 * 1024  # bytes of request body: a reflection holds 8,000 characters; MCP messages are small


def answer(work: Callable[[], Any]) -> JSONResponse:
    """Run a backend call; domain errors become 400/404 with ``{"error": ...}``,
    503 when something the call needs is out for now (the Qdrant server, the
    embedding service)."""
    try:
        return JSONResponse(work())
    except ProjectNotFound as exc:
        body = {"error": str(exc), "kind": "unknown-project", "suggestions": exc.suggestions}
        return JSONResponse(body, status_code=404)
    except NoMatch as exc:
        return JSONResponse({"error": str(exc), "suggestions": exc.suggestions}, status_code=400)
    except TranscriptNotFound as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)
    except Unavailable as exc:  # the embedding service is out: not the caller's fault
        return JSONResponse({"error": str(exc)}, status_code=503)
    except (SelfReflectError, ValueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)


def create_app(daemon: Daemon) -> Starlette:
    """The routes over a started daemon."""
    store = daemon.store
    assert store is not None
    streamer = daemon.streamer
    assert streamer is not None
    backend = LocalBackend(
        daemon.settings,
        daemon.embedder,
        lambda: held(store),
        daemon.health,
        streamer.importer.state,
        streamer.between_batches,
        streamer.transcripts,
    )

    def healthz(request: Request) -> JSONResponse:
        health = daemon.health()
        return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)

    def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse(daemon.metrics(), media_type="text/plain; version=0.0.4")

    def api_search(request: Request) -> JSONResponse:
        params = request.query_params
        return answer(lambda: backend.search(SearchRequest.from_params(params.get, params.getlist)).to_json())

    def api_status(request: Request) -> JSONResponse:
        return JSONResponse(backend.status())

    def api_by_file(request: Request) -> JSONResponse:
        params = request.query_params
        paths = params.getlist("path") or [""]
        return answer(lambda: backend.by_file(paths[0], int(params.get("limit", "10")), tuple(paths[1:])).to_json())

    async def api_reflections(request: Request) -> JSONResponse:
        try:
            content, tags, cwd = reflection_fields(await read_json(request))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return await run_in_threadpool(answer, lambda: backend.store_reflection(content, tags, cwd))

    def api_conversation(request: Request) -> JSONResponse:
        p = request.query_params
        line = p.get("line")
        return answer(
            lambda: backend.read_conversation(
                p.get("session_id", ""),
                int(line) if line else None,
                int(p.get("before", "5")),
                int(p.get("after", "5")),
            )
        )

    async def api_forget(request: Request) -> JSONResponse:
        try:
            body = await read_json(request)
            if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("kind", "value")):
                raise ValueError('expected {"kind": "project|session|transcript|before", "value": "..."}')
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return await run_in_threadpool(answer, lambda: backend.forget(body["kind"], body["value"]))

    def api_import(request: Request) -> JSONResponse:
        return JSONResponse(daemon.catch_up())

    async def api_compact(request: Request) -> JSONResponse:
        try:
            body = await read_json(request) if int(request.headers.get("content-length") or 0) else {}
            if not isinstance(body, dict):
                raise ValueError('expected {} or {"if_needed": true}')
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return await run_in_threadpool(answer, lambda: {"compaction": daemon.compact(bool(body.get("if_needed")))})

    def build_mcp() -> tuple[ASGIApp, Any]:
        from mcp.server.transport_security import TransportSecuritySettings

        from selfreflect.mcp import build_server

        mcp = build_server(backend, lambda: None)  # over HTTP the client's folder is unknown: all projects
        # Guard checks Host and Origin first; the SDK's own check (loopback names only) stays on unless a
        # token lets other hosts in.
        security = TransportSecuritySettings(enable_dns_rebinding_protection=False) if daemon.settings.token else None
        # Plain JSON answers, not an event stream per call: the tools send nothing before their result,
        # and 20 sessions at once got 89-96 calls a second this way against 76-78 (docs/benchmarks.md).
        app = mcp.streamable_http_app(streamable_http_path="/mcp", json_response=True, transport_security=security)
        return app, mcp.session_manager.run

    mcp_app = LazyMCP(build_mcp)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            mcp_app.tasks = tasks
            yield
            tasks.cancel_scope.cancel()

    return Starlette(
        lifespan=lifespan,
        middleware=[Middleware(Guard, token=daemon.settings.token), Middleware(Limits)],
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/api/search", api_search),
            Route("/api/status", api_status),
            Route("/api/by-file", api_by_file),
            Route("/api/reflections", api_reflections, methods=["POST"]),
            Route("/api/conversation", api_conversation),
            Route("/api/import", api_import, methods=["POST"]),
            Route("/api/compact", api_compact, methods=["POST"]),
            Route("/api/forget", api_forget, methods=["POST"]),
            Mount("/", app=mcp_app),  # serves /mcp; last, after the other routes
        ],
    )


async def read_json(request: Request) -> Any:
    """The request's JSON body, read up to ``MAX_BODY`` bytes.

    Raises:
        ValueError: too big, or not JSON.
    """
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > MAX_BODY:
            raise ValueError(f"the body is over {MAX_BODY // 1024} KB")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None


def reflection_fields(body: Any) -> tuple[str, list[str], str | None]:
    """``store_reflection``'s arguments from a JSON body, as the MCP tool types
    them: content a string, tags a list of strings, cwd a string or null.

    Raises:
        ValueError: anything else, saying what.
    """
    if not isinstance(body, dict) or not isinstance(body.get("content"), str):
        raise ValueError('expected {"content": "...", "tags": ["..."], "cwd": "..."}: content must be a string')
    tags, cwd = body.get("tags") or [], body.get("cwd")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError("tags must be a list of strings")
    if cwd is not None and not isinstance(cwd, str):
        raise ValueError("cwd must be a string or null")
    return body["content"], tags, cwd


LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class Guard:
    """Only local callers (or ones holding the token); see the module docstring."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                status, message = refusal
                await JSONResponse({"error": message}, status)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        if self.token is not None:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                return 401, "a token is required: Authorization: Bearer <SELFREFLECT_TOKEN>"
        elif _hostname(headers.get("host", "")) not in LOCAL_HOSTS:
            return 421, "only local callers: the Host must be 127.0.0.1, localhost or [::1]"
        origin = headers.get("origin")
        if origin is not None and _hostname(urlsplit(origin).netloc) not in LOCAL_HOSTS:
            return 403, "cross-origin requests are refused"
        if scope.get("method") == "POST":
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return 415, "POST takes Content-Type: application/json only"
        return None


def _hostname(host: str) -> str:
    """``127.0.0.1:7718`` -> ``127.0.0.1``; ``[::1]:7718`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Limits:
    """Bounded requests: a query string over ``MAX_QUERY`` bytes is a 414, a
    declared body over ``MAX_BODY`` a 413 (bodies are also cut off while read)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if len(scope.get("query_string", b"")) > MAX_QUERY:
                await JSONResponse({"error": f"the query string is over {MAX_QUERY} bytes"}, 414)(scope, receive, send)
                return
            length = dict(scope.get("headers") or []).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > MAX_BODY:
                await JSONResponse({"error": f"the body is over {MAX_BODY // 1024} KB"}, 413)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class LazyMCP:
    """The MCP app, built when ``/mcp`` is first asked for; its session manager
    then runs in the task group the lifespan gives (``tasks``) until shutdown
    (a mounted app's own lifespan does not run)."""

    def __init__(self, build: Callable[[], tuple[ASGIApp, Callable[[], Any]]]) -> None:
        self._build = build
        self._app: ASGIApp | None = None
        self._lock = anyio.Lock()
        self.tasks: anyio.abc.TaskGroup | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/mcp"):
            await PlainTextResponse("Not Found", status_code=404)(scope, receive, send)
            return
        async with self._lock:
            if self._app is None:
                assert self.tasks is not None, "the lifespan did not run"
                app, run_sessions = await run_in_threadpool(self._build)

                async def sessions(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                    async with run_sessions():
                        task_status.started()
                        await anyio.sleep_forever()

                await self.tasks.start(sessions)
                self._app = app
        await self._app(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn, with a second SIGINT/SIGTERM forcing the exit at once."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            log.warning("second signal: exiting now")
            os._exit(128 + sig)
        super().handle_exit(sig, frame)


def serve(daemon: Daemon, log_level: str = "warning") -> None:
    """Run the daemon until SIGTERM or SIGINT, then shut it down cleanly."""
    sock = daemon.startup()
    try:
        config = uvicorn.Config(create_app(daemon), log_level=log_level, access_log=False, lifespan="on")
        server = _Server(config)
        # uvicorn hands the signal it caught to the handler it found once it
        # has stopped: make that one harmless, so the shutdown below runs.
        signal.signal(signal.SIGINT, _noted)
        signal.signal(signal.SIGTERM, _noted)
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGINT, _force)  # a Ctrl-C during shutdown forces exit
        signal.signal(signal.SIGTERM, _force)
        daemon.shutdown()
        sock.close()


def _noted(sig: int, frame: Any) -> None:
    """Already handled by uvicorn (it stopped serving)."""


def _force(sig: int, frame: Any) -> None:
    os._exit(128 + sig)
