"""The CLI's HTTP client, against real sockets on loopback answering what a
daemon (or something broken in its place) might answer."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from selfreflect.client import DaemonUnavailable, get_json, post_json
from selfreflect.errors import SelfReflectError, TranscriptNotFound


@contextmanager
def answering(answer: bytes, family: int = socket.AF_INET) -> Iterator[tuple[str, list[bytes]]]:
    """A server on loopback that reads one request, sends ``answer`` and
    closes; yields its base URL and the requests it got."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    server = socket.socket(family, socket.SOCK_STREAM)
    server.bind((host, 0))
    server.listen()
    got: list[bytes] = []

    def serve() -> None:
        connection, _ = server.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            head, _, body = request.partition(b"\r\n\r\n")
            length = next(
                (int(f.split(b":")[1]) for f in head.split(b"\r\n") if f.lower().startswith(b"content-length:")), 0
            )
            while len(body) < length:
                body += connection.recv(4096)
            got.append(head + b"\r\n\r\n" + body)
            connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    name = f"[{host}]" if family == socket.AF_INET6 else host
    try:
        yield f"http://{name}:{server.getsockname()[1]}", got
    finally:
        thread.join(5)
        server.close()


def http(status: str, body: bytes, length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    return f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n".encode() + body


def test_a_whole_answer_is_decoded_and_the_request_is_plain_http() -> None:
    with answering(http("200 OK", b'{"results": [1, 2]}')) as (url, got):
        found = get_json(url, "/api/search", [("q", "docker memory"), ("limit", "3")], token="t0k")
    assert found == {"results": [1, 2]}
    request = got[0].decode()
    assert request.startswith("GET /api/search?q=docker+memory&limit=3 HTTP/1.0\r\n")
    assert f"Host: 127.0.0.1:{url.rsplit(':', 1)[1]}\r\n" in request and "Authorization: Bearer t0k\r\n" in request
    with answering(http("200 OK", b'{"ok": true}')) as (url, got):
        assert post_json(url, "/api/forget", {"kind": "session", "value": "é"}) == {"ok": True}
    head, _, body = got[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /api/forget HTTP/1.0") and json.loads(body) == {"kind": "session", "value": "é"}


def test_an_answer_over_ipv6_loopback_names_its_host_in_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        context = answering(http("200 OK", b"{}"), socket.AF_INET6)
        with context as (url, got):
            assert get_json(url, "/healthz") == {}
    except OSError as exc:  # an IPv6 stack without ::1
        pytest.skip(f"no IPv6 loopback: {exc}")
    assert b"Host: [::1]:" in got[0]


def test_error_statuses_say_what_the_daemon_said() -> None:
    with answering(http("404 Not Found", b'{"error": "no session abc"}')) as (url, _):
        with pytest.raises(TranscriptNotFound, match="no session abc"):
            get_json(url, "/api/conversation")
    with answering(http("400 Bad Request", b"not json")) as (url, _):
        with pytest.raises(SelfReflectError, match="HTTP 400 Bad Request"):
            get_json(url, "/api/search")
    with answering(http("503 Service Unavailable", b'{"problems": ["lag"]}')) as (url, _):
        assert get_json(url, "/healthz", accept=(503,)) == {"problems": ["lag"]}


@pytest.mark.parametrize(
    "answer",
    [
        http("200 OK", b'{"results": []}', length=400),  # the daemon died mid-answer
        b"HTTP/1.1 200 OK\r\ncontent-length: 2",  # mid-headers
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",  # something else took the port
        b"",  # closed at once
    ],
    ids=["cut-body", "cut-headers", "not-http", "nothing"],
)
def test_a_broken_answer_is_no_answer(answer: bytes) -> None:
    with answering(answer) as (url, _):
        with pytest.raises(DaemonUnavailable, match="no answer from"):
            get_json(url, "/api/status")


def test_nobody_listening_is_no_answer() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed
    with pytest.raises(DaemonUnavailable, match="no answer from"):
        get_json(f"http://127.0.0.1:{port}", "/api/status", timeout=5)


def test_a_token_with_a_line_break_sends_nothing() -> None:
    with answering(http("200 OK", b"{}")) as (url, got):
        with pytest.raises(DaemonUnavailable, match="line break"):
            get_json(url, "/api/status", token="t0k\r\nX-Forwarded-For: 10.0.0.1")
        assert get_json(url, "/api/status") == {}  # the server's one request is still unanswered
    assert b"X-Forwarded-For" not in got[0]
