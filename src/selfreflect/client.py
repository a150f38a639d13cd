"""Talking to a running daemon: the CLI's way in while the daemon owns the store."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from selfreflect.errors import SelfReflectError, TranscriptNotFound
from selfreflect.query import SearchRequest, SearchResponse


class DaemonUnavailable(SelfReflectError):
    """The daemon did not answer."""


def post_json(base_url: str, path: str, body: Any, timeout: float = 30.0, token: str | None = None) -> Any:
    """POST JSON to the daemon and decode its JSON answer (errors as :func:`get_json`)."""
    headers = {"Content-Type": "application/json", **_auth(token)}
    request = urllib.request.Request(f"{base_url}{path}", data=json.dumps(body).encode(), headers=headers)
    return _fetch(request, base_url, timeout)


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
    url = f"{base_url}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    return _fetch(urllib.request.Request(url, headers=_auth(token)), base_url, timeout, accept)


def _auth(token: str | None) -> dict[str, str]:
    """The daemon's token, when it has one (``SELFREFLECT_TOKEN``)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _fetch(request: urllib.request.Request, base_url: str, timeout: float, accept: tuple[int, ...] = ()) -> Any:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code in accept:
            return json.loads(exc.read())
        try:
            body = json.loads(exc.read())
            message = body.get("error", str(exc))
        except (ValueError, AttributeError):
            body, message = {}, str(exc)
        if body.get("kind") == "unknown-project":
            from selfreflect.projects import ProjectNotFound

            raise ProjectNotFound(message, list(body.get("suggestions") or [])) from exc
        raise (TranscriptNotFound if exc.code == 404 else SelfReflectError)(message) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DaemonUnavailable(f"no answer from {base_url}: {exc}") from exc


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
