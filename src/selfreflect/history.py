"""History: the prompts Claude Code keeps after its transcripts are gone.

Claude Code appends every prompt typed at its input box to
``<claude dir>/history.jsonl`` (the up-arrow history, a format of its own,
``reference/claude-code-transcripts.md`` §2), one JSON object a line::

    {"display": "fix the login test [Pasted text #1 +12 lines]",
     "pastedContents": {"1": {"id": 1, "type": "text", "content": "..."}},
     "timestamp": 1759105062139, "project": "/home/me/app",
     "sessionId": "0fd6a5d1-..."}

``timestamp`` is in milliseconds since the epoch, ``project`` the folder
``claude`` was started in, ``sessionId`` written by newer versions only. A
paste is shown as ``[Pasted text #N ...]`` and kept in ``pastedContents``,
inline (``content``) or, in newer versions, in
``<claude dir>/paste-cache/<contentHash>.txt``; it is put back here, as the
transcript has it.

The transcripts are deleted after ``cleanupPeriodDays`` (30 by default);
this file is not. So each entry is indexed as a record of its own (kind
``history``), cited as ``history.jsonl:LINE``. A bare slash command
(``/clear``) says nothing and is left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from selfreflect.assemble import PART_CHARS

FILE = "history.jsonl"
_PASTE = re.compile(r"\[Pasted text #(\d+)(?: \+\d+ lines)?\]")
_BARE_COMMAND = re.compile(r"^/[\w:.-]+$")
_HASH = re.compile(r"^[A-Za-z0-9]{1,128}$")  # a paste-cache name we may open: no path in it


@dataclass(frozen=True)
class HistoryEntry:
    """One prompt of ``history.jsonl``.

    Attributes:
        prompt: the words typed, pastes put back.
        timestamp: ISO 8601 (UTC), or ``None`` when the line has none.
        project: the folder ``claude`` was started in (``""``: unknown).
        session_id: the session it was typed in (``""``: an older version).
        millis: the line's own timestamp (part of the entry's identity).
    """

    prompt: str
    timestamp: str | None
    project: str
    session_id: str
    millis: int


def parse_entry(record: dict[str, Any], claude_dir: Path) -> HistoryEntry | None:
    """The entry a ``history.jsonl`` record holds, or ``None`` when it holds
    no prompt worth keeping (no words, a bare slash command, not an entry)."""
    display = record.get("display")
    if not isinstance(display, str) or not display.strip() or _BARE_COMMAND.match(display.strip()):
        return None
    millis = record.get("timestamp")
    millis = int(millis) if isinstance(millis, (int, float)) and not isinstance(millis, bool) else 0
    project = record.get("project") if isinstance(record.get("project"), str) else ""
    session = record.get("sessionId") if isinstance(record.get("sessionId"), str) else ""
    prompt = _with_pastes(display, record.get("pastedContents"), claude_dir)[:PART_CHARS]
    return HistoryEntry(prompt.strip(), _instant(millis), str(project), str(session), millis)


def _with_pastes(display: str, pasted: Any, claude_dir: Path) -> str:
    """``display`` with each ``[Pasted text #N]`` replaced by what was pasted,
    where that is still known (else the marker stays)."""
    if not isinstance(pasted, dict) or not pasted:
        return display

    def paste(match: re.Match[str]) -> str:
        item = pasted.get(match[1])
        if not isinstance(item, dict):
            return match[0]
        if isinstance(item.get("content"), str):
            return str(item["content"])
        digest = item.get("contentHash")
        if isinstance(digest, str) and _HASH.match(digest):
            try:
                with open(claude_dir / "paste-cache" / f"{digest}.txt", "rb") as handle:
                    return handle.read(PART_CHARS * 4).decode("utf-8", "replace")
            except OSError:
                pass
        return match[0]

    return _PASTE.sub(paste, display)


def _instant(millis: int) -> str | None:
    if millis <= 0:
        return None
    try:
        moment = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_entry(record: dict[str, Any], claude_dir: Path) -> tuple[str | None, str]:
    """How ``show`` prints a ``history.jsonl`` line: its time and text."""
    entry = parse_entry(record, claude_dir)
    if entry is None:
        millis = record.get("timestamp")
        when = _instant(int(millis)) if isinstance(millis, (int, float)) and not isinstance(millis, bool) else None
        return when, f"Prompt: {record.get('display')}" if isinstance(record.get("display"), str) else "(not a prompt)"
    where = f" (in {entry.project})" if entry.project else ""
    return entry.timestamp, f"Prompt{where}: {entry.prompt}"
