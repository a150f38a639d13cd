"""Parse: one transcript line to one record (a JSON object), tolerantly.

A line that is not a JSON object is bad: it is reported with its reason, and
the caller counts it and goes on. Blank lines are not records and not bad.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class BadLine:
    """Why a line could not be used (``reason`` is short, for logs and counts)."""

    reason: str


def parse_line(data: bytes) -> dict[str, Any] | BadLine | None:
    """The record on a line, a :class:`BadLine`, or ``None`` for a blank line."""
    stripped = data.strip()
    if not stripped:
        return None
    if stripped.strip(b"\x00") == b"" or stripped.startswith(b"\x00"):
        # strip() leaves NULs: an unclean shutdown pads the tail with them.
        return BadLine("NUL bytes")
    try:
        record = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        # orjson refuses invalid UTF-8 and lone surrogates; the stdlib takes
        # both once the bytes are decoded with replacement.
        try:
            record = json.loads(stripped.decode("utf-8", errors="replace"))
        except ValueError:
            return BadLine("not JSON")
    if not isinstance(record, dict):
        return BadLine(f"not an object ({type(record).__name__})")
    return record
