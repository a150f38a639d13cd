"""Talking to a running daemon: the CLI's way in while the daemon owns the store."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from selfreflect.errors import SelfReflectError


class DaemonUnavailable(SelfReflectError):
    """The daemon did not answer."""


def get_json(base_url: str, path: str, params: list[tuple[str, str]] | None = None, timeout: float = 30.0) -> Any:
    """GET ``path`` from the daemon and decode its JSON.

    Raises:
        DaemonUnavailable: no answer (not running, starting, gone).
        SelfReflectError: the daemon refused the request (its message).
    """
    url = f"{base_url}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", str(exc))
        except (ValueError, AttributeError):
            message = str(exc)
        raise SelfReflectError(message) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DaemonUnavailable(f"no answer from {base_url}: {exc}") from exc
