"""Talking to a running daemon: the CLI's way in while the daemon owns the store."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from selfreflect.errors import SelfReflectError, TranscriptNotFound

if TYPE_CHECKING:  # searches alone need them: `status` goes without
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
    where = urlsplit(base_url)
    try:
        status, reason, data = exchange(
            where.hostname or "127.0.0.1", where.port or 80, method, path, body, headers, timeout
        )
    except (OSError, ValueError) as exc:
        raise DaemonUnavailable(f"no answer from {base_url}: {exc}") from exc
    if status < 400 or status in accept:
        return json.loads(data)
    try:
        answer = json.loads(data)
        message = str(answer.get("error") or f"HTTP {status} {reason}")
    except (ValueError, AttributeError):
        answer, message = {}, f"HTTP {status} {reason}"
    if answer.get("kind") == "unknown-project":
        from selfreflect.projects import ProjectNotFound

        raise ProjectNotFound(message, list(answer.get("suggestions") or []))
    raise (TranscriptNotFound if status == 404 else SelfReflectError)(message)


def exchange(
    host: str, port: int, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float
) -> tuple[int, str, bytes]:
    """One HTTP/1.0 request to the daemon and its whole answer: status, reason, body.

    HTTP/1.0 by hand over a socket, not ``http.client``: the CLI's way to the
    daemon is on every command's path, and ``http.client``'s imports (ssl,
    the email parser) were a fifth of a ``selfreflect search``. An HTTP/1.0
    answer has no chunks and ends with the connection; a ``Content-Length``
    it gives is checked.

    Raises:
        OSError: no connection, a timeout, or an answer cut short.
        ValueError: an answer that is not HTTP; a request line or header with
            a line break in it (nothing is sent).
    """
    where = f"[{host}]" if ":" in host else host
    lines = [f"{method} {path} HTTP/1.0", f"Host: {where}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    if any("\r" in line or "\n" in line for line in lines):  # a token with a line break would add headers
        raise ValueError("a line break in the request's path or headers")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
    # the host as bytes (getaddrinfo takes them; typeshed says str): a str
    # goes through the idna codec, another 5 ms of imports
    address = (host.encode("ascii"), port)
    with socket.create_connection(address, timeout=timeout) as connection:  # type: ignore[arg-type]
        connection.sendall(request)
        parts = []
        while part := connection.recv(1 << 16):
            parts.append(part)
    head, ended, data = b"".join(parts).partition(b"\r\n\r\n")
    if not ended:
        raise OSError("the answer ended before its headers did")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    version, status, *reason = status_line.split(" ", 2)
    if not version.startswith("HTTP/"):
        raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
    for field in fields:
        name, _, value = field.partition(":")
        if name.strip().lower() == "content-length" and len(data) < int(value):
            raise OSError(f"the answer was cut short: {len(data)} of {int(value)} bytes")
    return int(status), "".join(reason), data


class DaemonBackend:
    """The core, answered by the running daemon at ``url`` (with ``token``, if it wants one)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.token = token

    def search(self, request: SearchRequest) -> SearchResponse:
        from selfreflect.query import SearchResponse

        return SearchResponse.from_json(self._get("/api/search", request.params()))

    def by_file(self, path: str, limit: int, alternatives: tuple[str, ...] = ()) -> SearchResponse:
        from selfreflect.query import SearchResponse

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
