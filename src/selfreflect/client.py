"""Talking to a running daemon: the CLI's way in while the daemon owns the store."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from selfreflect.errors import SelfReflectError, TranscriptNotFound


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
