"""Conversation excerpts: the readable lines around a hit (``show``).

Reads the transcript itself (streamed, never whole), so an excerpt shows what
is on disk now, line numbers as in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from selfreflect.assemble import Assembler, Part
from selfreflect.chunk import render
from selfreflect.discover import discover
from selfreflect.errors import TranscriptNotFound
from selfreflect.parse import BadLine, parse_line
from selfreflect.redact import redact
from selfreflect.settings import Settings
from selfreflect.store import SearchFilter, Store
from selfreflect.tail import read_lines

EXCERPT_CHARS = 2000


@dataclass(frozen=True)
class ExcerptLine:
    """One transcript line, readable: who, when, what."""

    line: int
    kind: str
    timestamp: str | None
    text: str


def excerpt(path: Path, line: int, before: int = 5, after: int = 5, max_line_bytes: int = 8 << 20) -> list[ExcerptLine]:
    """Lines ``line - before .. line + after`` of a transcript, rendered.

    Raises:
        OSError: the transcript cannot be read.
    """
    first, last = max(1, line - before), line + after
    assembler = Assembler(path.stem)
    lines: list[ExcerptLine] = []
    for entry in read_lines(path, max_line_bytes=max_line_bytes):
        if entry.number > last:
            break
        record = None if entry.oversized else parse_line(entry.data)
        # Every record goes through the assembler, so results are named after their calls.
        parts = assembler.parts_of(entry.number, record) if isinstance(record, dict) else []
        if entry.number >= first:
            lines.append(_render(entry.number, record, parts, entry.oversized))
    return lines


def _render(number: int, record: object, parts: list[Part], oversized: bool) -> ExcerptLine:
    if oversized:
        return ExcerptLine(number, "skipped", None, "(line too long to show)")
    if record is None:
        return ExcerptLine(number, "blank", None, "")
    if isinstance(record, BadLine):
        return ExcerptLine(number, "bad", None, f"(unreadable line: {record.reason})")
    assert isinstance(record, dict)
    if "type" not in record and isinstance(record.get("content"), str) and "id" in record:  # reflections.jsonl
        tags = [str(t) for t in record.get("tags") or [] if isinstance(t, (str, int, float))]
        label = f"Reflection [{', '.join(tags)}]" if tags else "Reflection"
        when = record.get("timestamp") if isinstance(record.get("timestamp"), str) else None
        return ExcerptLine(number, "reflection", when, redact(f"{label}: {record['content']}")[:EXCERPT_CHARS])
    kind = str(record.get("type", "?"))
    timestamp = record.get("timestamp") if isinstance(record.get("timestamp"), str) else None
    if parts:
        text = "\n".join(render(p) for p in parts)
    elif kind == "summary":
        text = f"Summary: {record.get('summary', '')}"
    else:
        text = f"({kind} record)"
    text = redact(text)  # what leaves the process is masked like what is stored
    if len(text) > EXCERPT_CHARS:
        text = text[:EXCERPT_CHARS] + "…"
    return ExcerptLine(number, kind, timestamp, text)


def find_transcript(settings: Settings, target: str, store: Store | None, on_disk: bool = True) -> Path:
    """The transcript a session id (or a file name) names.

    Looks in the index first, then (``on_disk``) among the files on disk. A
    session's own file wins over its sub-agents' files. With ``on_disk``
    off, only indexed transcripts are found: what MCP clients may read.

    Raises:
        TranscriptNotFound: nothing matches.
    """
    candidates: list[Path] = []
    if store is not None:
        # The session's own conversation first: sub-agent files carry the parent's session id.
        for where in (
            SearchFilter(session_id=target, include_sidechains=False),
            SearchFilter(session_id=target),
            SearchFilter(transcript=target),
        ):
            candidates = [Path(str(value)) for value, _ in store.facet("transcript", where, 100)]
            if candidates:
                break
    if not candidates and on_disk and settings.projects_dir.is_dir():
        candidates = [
            f.path for f in discover(settings.projects_dir) if target in (f.session_id, f.path.stem, f.path.name)
        ]
    if not candidates:
        indexed = "indexed " if not on_disk else ""
        raise TranscriptNotFound(f"no {indexed}transcript for {target!r} (give a session id or a transcript path)")
    candidates.sort(key=lambda p: (p.stem != target, "subagents" in p.parts, p.stem.startswith("agent-"), str(p)))
    return candidates[0]
