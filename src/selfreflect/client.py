"""Talking to a running daemon: the CLI's way in while the daemon owns the store."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlencode, urlsplit

from selfreflect.errors import SelfReflectError, TranscriptNotFound
from selfreflect.query import SearchRequest, SearchResponse


class DaemonUnavailable(SelfReflectError):
    """The daemon did not answer."""


def post_json(base_url: str, path: str, body: Any, timeout: float = 30.0, token: str | None = None) -> Any:
    """POST JSON to the daemon and decode its JSON answer (errors as :func:`get_json`)."""
    headers = {"Content-Type": "application/json", **_auth(token)}
    return _fetch("POST", base_url, path, json.dumps(body).encode(), headers, timeout)


def get_json(
    base_url: str,
    path: str,
    params: list[tuple[str, str]] | None = None,
    timeout: float = 30.0,
    accept: tuple[int, ...] = (),
    token: str | None = None,
) -> Any:
    """GET ``path`` from the daemon and decode its JSON (also the JSON of an
    error status in ``accept``: ``/healthz`` answers 503 with its problems).

    Raises:
        DaemonUnavailable: no answer (not running, starting, gone).
        TranscriptNotFound: the daemon found nothing to show (404).
        SelfReflectError: the daemon refused the request (its message).
    """
    if params:
        path += "?" + urlencode(params)
    return _fetch("GET", base_url, path, None, _auth(token), timeout, accept)


def _auth(token: str | None) -> dict[str, str]:
    """The daemon's token, when it has one (``SELFREFLECT_TOKEN``)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _fetch(
    method: str,
    base_url: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    timeout: float,
    accept: tuple[int, ...] = (),
) -> Any:
    # http.client, not urllib.request: the CLI's way to the daemon is on every
    # command's path, and urllib.request's imports cost it several ms
    where = urlsplit(base_url)
    connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        status, data = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise DaemonUnavailable(f"no answer from {base_url}: {exc}") from exc
    finally:
        connection.close()
    if status < 400 or status in accept:
        return json.loads(data)
    try:
        answer = json.loads(data)
        message = str(answer.get("error") or f"HTTP {status} {response.reason}")
    except (ValueError, AttributeError):
        answer, message = {}, f"HTTP {status} {response.reason}"
    if answer.get("kind") == "unknown-project":
        from selfreflect.projects import ProjectNotFound

        raise ProjectNotFound(message, list(answer.get("suggestions") or []))
    raise (TranscriptNotFound if status == 404 else SelfReflectError)(message)


class DaemonBackend:
    """The core, answered by the running daemon at ``url`` (with ``token``, if it wants one)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.token = token

    def search(self, request: SearchRequest) -> SearchResponse:
        return SearchResponse.from_json(self._get("/api/search", request.params()))

    def by_file(self, path: str, limit: int, alternatives: tuple[str, ...] = ()) -> SearchResponse:
        params = [("path", p) for p in (path, *alternatives)] + [("limit", str(limit))]
        return SearchResponse.from_json(self._get("/api/by-file", params))

    def store_reflection(self, content: str, tags: list[str], cwd: str | None) -> dict[str, Any]:
        body = {"content": content, "tags": tags, "cwd": cwd}
        return dict(post_json(self.url, "/api/reflections", body, token=self.token))

    def read_conversation(self, target: str, line: int | None, before: int, after: int) -> dict[str, Any]:
        params = [("session_id", target), ("before", str(before)), ("after", str(after))]
        params += [("line", str(line))] if line is not None else []
        return dict(self._get("/api/conversation", params))

    def status(self) -> dict[str, Any]:
        return dict(self._get("/api/status"))

    def forget(self, kind: str, value: str) -> dict[str, Any]:
        return dict(post_json(self.url, "/api/forget", {"kind": kind, "value": value}, token=self.token))

    def _get(self, path: str, params: list[tuple[str, str]] | None = None) -> Any:
        return get_json(self.url, path, params, token=self.token)
