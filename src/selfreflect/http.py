"""HTTP face of the daemon, on 127.0.0.1 only.

``GET /healthz``, ``GET /metrics`` (Prometheus text), ``GET /api/search``
(the parameters and JSON of ``selfreflect search --json``) and
``GET /api/status`` (the JSON of ``selfreflect status --json``). Thin: it
translates parameters and formats results; the search core does the work.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from selfreflect.daemon import Daemon
from selfreflect.errors import SelfReflectError
from selfreflect.search import make_query, search
from selfreflect.status import status_report

log = logging.getLogger("selfreflect")

TRUE = {"1", "true", "yes", "on"}


def create_app(daemon: Daemon) -> Starlette:
    """The routes over a started daemon."""

    def healthz(request: Request) -> JSONResponse:
        return JSONResponse(daemon.health())

    def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse(daemon.metrics(), media_type="text/plain; version=0.0.4")

    def api_search(request: Request) -> JSONResponse:
        params = request.query_params
        try:
            query = make_query(
                params.get("q", ""),
                limit=int(params.get("limit", "10")),
                projects=params.getlist("project"),
                since=params.get("since"),
                until=params.get("until"),
                session=params.get("session"),
                file=params.get("file"),
                branch=params.get("branch"),
                tool=params.get("tool"),
                include_sidechains=params.get("no_sidechains", "").lower() not in TRUE,
                min_score=float(params["min_score"]) if params.get("min_score") else None,
            )
        except (SelfReflectError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        assert daemon.store is not None
        return JSONResponse(search(daemon.store, daemon.embedder, query).to_json())

    def api_status(request: Request) -> JSONResponse:
        assert daemon.store is not None
        report = status_report(daemon.settings, daemon.store)
        report["daemon"] = daemon.health()
        return JSONResponse(report)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/api/search", api_search),
            Route("/api/status", api_status),
        ]
    )


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
        config = uvicorn.Config(create_app(daemon), log_level=log_level, access_log=False, lifespan="off")
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
