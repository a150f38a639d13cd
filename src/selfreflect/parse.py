"""Parse: one transcript line to one record (a JSON object), tolerantly.

A line that is not a JSON object is bad: it is reported with its reason, and
the caller counts it and goes on. Blank lines are not records and not bad.

What orjson refuses, the standard library gets a second try at: invalid
UTF-8 (decoded with replacement) and lone surrogate escapes (``"\\ud800"``,
which no tokenizer or JSON encoder downstream accepts: each becomes U+FFFD
here). Nesting deeper than the standard library's recursion allows is a bad
line, not a crash.
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
        # orjson refuses invalid UTF-8, lone surrogates and nesting past 1024
        # levels; the stdlib takes the first two once the bytes are decoded
        # with replacement.
        try:
            record = json.loads(stripped.decode("utf-8", errors="replace"))
        except RecursionError:
            return BadLine("nested too deep")
        except ValueError:
            return BadLine("not JSON")
        if isinstance(record, dict):
            record = _without_lone_surrogates(record)
    if not isinstance(record, dict):
        return BadLine(f"not an object ({type(record).__name__})")
    return record


def clean_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (a valid string is
    returned as it is)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _without_lone_surrogates(record: dict[str, Any]) -> dict[str, Any]:
    """Every string of ``record`` (keys too) cleaned, walking without recursion."""
    root: list[Any] = [record]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        value = container[key]
        if isinstance(value, str):
            container[key] = clean_text(value)
        elif isinstance(value, list):
            stack.extend((value, i) for i in range(len(value)))
        elif isinstance(value, dict):
            cleaned = {clean_text(k): v for k, v in value.items()}
            if cleaned.keys() != value.keys():
                value.clear()
                value.update(cleaned)
            stack.extend((value, k) for k in value)
    return root[0]  # type: ignore[no-any-return]
