"""Conversation excerpts: the readable lines around a hit (``show``,
``read_conversation``, ``/api/conversation``).

Every face takes what search prints (:func:`parse_citation`): a transcript
path, ``path:line``, ``path:start-end``, a session id or the start of one,
``reflections.jsonl:N``, ``history.jsonl:N``, and a Claude.ai export's
``<export>:<conversation uuid>:<first>-<last>`` (message numbers; a message
uuid in their place centres on that message). Reads the transcript itself
(streamed, never whole), so an excerpt shows what is on disk now, line
numbers as in the file; once Claude Code has deleted it, its archive
(:mod:`selfreflect.archive`).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selfreflect.archive import Archive, transcript_lines
from selfreflect.assemble import Assembler, Part
from selfreflect.chunk import render
from selfreflect.discover import discover
from selfreflect.errors import NoMatch, TranscriptNotFound
from selfreflect.export import Export, ExportError, export_reference
from selfreflect.history import FILE as HISTORY
from selfreflect.history import render_entry
from selfreflect.parse import BadLine, parse_line
from selfreflect.query import pick
from selfreflect.redact import redact
from selfreflect.settings import Settings
from selfreflect.store import SearchFilter, Store

EXCERPT_CHARS = 2000
CALL = b'"tool_use"'  # in a line that holds a tool call (a result's line says "tool_use_id")
REFLECTIONS = "reflections.jsonl"  # selfreflect.reflection.FILE, cited by its name alone
MAX_NAMES = 100_000  # sessions or transcripts listed to resolve a start or a file name
_CITATION = re.compile(r"^(?P<name>.+?):(?P<first>\d+)(?:-(?P<last>\d+))?$")
_HOW = "give a session id (or its start) or a transcript path, as search prints it"


@dataclass(frozen=True)
class Citation:
    """A place in a transcript as search prints it.

    Attributes:
        name: a transcript path or file name, a session id or the start of one.
        first, last: the cited lines (``None``: none cited).
    """

    name: str
    first: int | None = None
    last: int | None = None


@dataclass(frozen=True)
class ExcerptLine:
    """One transcript line, readable: who, when, what."""

    line: int
    kind: str
    timestamp: str | None
    text: str


def parse_citation(text: str) -> Citation:
    """``path``, ``path:263`` or ``path:263-267`` (also after a session id).

    Raises:
        TranscriptNotFound: nothing given, or a range that runs backwards.
    """
    text = text.strip()
    cited = _CITATION.match(text)
    if cited is None:
        if not text:
            raise TranscriptNotFound(_HOW)
        return Citation(text)
    first = int(cited["first"])
    last = int(cited["last"]) if cited["last"] else first
    if first < 1:
        raise TranscriptNotFound(f"{text}: lines count from 1")
    if last < first:
        raise TranscriptNotFound(f"{text}: the range runs backwards (give it as {last}-{first})")
    return Citation(cited["name"], first, last)


def read_conversation(
    path: Path,
    target: str,
    line: int | None,
    before: int,
    after: int,
    max_line_bytes: int = 8 << 20,
    archive: Archive | None = None,
) -> dict[str, Any]:
    """The lines around ``line`` (default: the lines ``target`` cites, else
    line 1) of the transcript at ``path``, as every face answers them; read
    from ``archive`` when the file is gone.

    Raises:
        TranscriptNotFound: the file is gone (and not archived) or
            unreadable, is not a Claude Code transcript, or has no such line
            (the message says how many it has).
    """
    cited = parse_citation(target)
    first = max(1, line) if line is not None else cited.first or 1
    last = cited.last if line is None and cited.last is not None else first
    reference = export_reference(str(path))
    try:
        if reference is not None:
            export, conversation, message = reference
            given = export_reference(cited.name)
            message = message or (given[2] if given else None)
            first, last, lines = export_excerpt(
                export, conversation, message if line is None else None, first, last, before, after
            )
        else:
            lines = excerpt(path, first, before, after, max_line_bytes, last, archive)
    except FileNotFoundError:
        raise TranscriptNotFound(
            f"{path} is no longer on disk (deleted since it was indexed, perhaps by Claude Code's clean-up) "
            "and not archived: its search results still hold the indexed text"
        ) from None
    except OSError as exc:
        raise TranscriptNotFound(f"cannot read {path}: {exc.strerror or exc}") from exc
    return {
        "session_id": target,
        "transcript": str(path),
        "line": first,
        "line_end": last,
        "lines": [asdict(x) for x in lines],
    }


def excerpt(
    path: Path,
    line: int,
    before: int = 5,
    after: int = 5,
    max_line_bytes: int = 8 << 20,
    last: int | None = None,
    archive: Archive | None = None,
) -> list[ExcerptLine]:
    """Lines ``line - before .. last + after`` of a transcript, rendered
    (``last`` defaults to ``line``); from ``archive`` when the file is gone.

    Raises:
        TranscriptNotFound: ``line`` is past the end of the file, or the file
            holds no Claude Code record up to there (``/etc/passwd``).
        OSError: the transcript cannot be read.
    """
    first, end = max(1, line - before), max(line, last or line) + after
    assembler = Assembler(path.stem)
    lines: list[ExcerptLine] = []
    count, records = 0, False
    # final: a last line without its newline is on disk too, so it is shown (and counted)
    for entry in transcript_lines(path, archive, max_line_bytes):
        if entry.number > end:
            break
        count = entry.number
        if entry.number < first and records and CALL not in entry.data:
            continue  # nothing in it names a result: counted, not parsed
        record = None if entry.oversized else parse_line(entry.data)
        records = records or _is_record(record)
        if entry.number < first:  # only its calls, so the results in the window are named after them
            if isinstance(record, dict):
                assembler.note_calls(record)
            continue
        parts = assembler.parts_of(entry.number, record) if isinstance(record, dict) else []
        lines.append(_render(entry.number, record, parts, entry.oversized, path.parent))
    if count and not records:
        raise TranscriptNotFound(f"{path} is not a Claude Code transcript (no line of it is a transcript record)")
    if line > count:
        size = f"has {count} line{'s' if count != 1 else ''}" if count else "is empty"
        raise TranscriptNotFound(f"{path} {size}: line {line} is past its end")
    return lines


def export_excerpt(
    path: Path, uuid: str, message: str | None, first: int, last: int, before: int, after: int
) -> tuple[int, int, list[ExcerptLine]]:
    """Messages ``first - before .. last + after`` of the export conversation
    ``uuid`` (centred on ``message`` when given), numbered as search cites
    them; also the cited first and last.

    Raises:
        TranscriptNotFound: no such export, conversation, message or number.
        FileNotFoundError: the export is gone.
    """
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        with Export(path) as export:
            found = export.find(uuid)
    except ExportError as exc:
        raise TranscriptNotFound(str(exc)) from exc
    if found is None:
        raise TranscriptNotFound(f"{path} holds no conversation {uuid}")
    if message is not None:
        numbers = [m.number for m in found.messages if m.uuid == message]
        if not numbers:
            raise TranscriptNotFound(f"the conversation {uuid} of {path} has no message {message}")
        first = last = numbers[0]
    count = len(found.messages)
    if first > count:
        raise TranscriptNotFound(f"the conversation {uuid} of {path} has {count} messages: {first} is past its end")
    shown = found.messages[max(0, first - before - 1) : last + after]
    lines = [
        ExcerptLine(m.number, m.sender, m.timestamp, _cut(redact("\n".join(render(p) for p in m.parts)))) for m in shown
    ]
    return first, last, lines


def _is_record(record: object) -> bool:
    """A Claude Code record (every one has a ``type``), a stored reflection,
    or a ``history.jsonl`` prompt."""
    return isinstance(record, dict) and (
        "type" in record or ("content" in record and "id" in record) or "display" in record
    )


def _cut(text: str) -> str:
    return text[:EXCERPT_CHARS] + "…" if len(text) > EXCERPT_CHARS else text


def _render(number: int, record: object, parts: list[Part], oversized: bool, claude_dir: Path) -> ExcerptLine:
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
    if "type" not in record and "display" in record:  # history.jsonl
        when, text = render_entry(record, claude_dir)
        return ExcerptLine(number, "history", when, _cut(redact(text)))
    kind = str(record.get("type", "?"))
    timestamp = record.get("timestamp") if isinstance(record.get("timestamp"), str) else None
    if parts:
        text = "\n".join(render(p) for p in parts)
    elif kind == "summary":
        text = f"Summary: {record.get('summary', '')}"
    else:
        text = f"({kind} record)"
    text = redact(text)  # what leaves the process is masked like what is stored
    return ExcerptLine(number, kind, timestamp, _cut(text))


def find_transcript(settings: Settings, target: str, store: Store | None, on_disk: bool = True) -> Path:
    """The transcript ``target`` names: a path (``reflections.jsonl`` alone
    is the data dir's), a file name, a session id or the start of one, each
    with or without ``:lines``.

    Looks in the index first, then (``on_disk``) among the files on disk. A
    session's own file wins over its sub-agents' files. With ``on_disk``
    off, only indexed transcripts are found: what MCP clients may read.

    Raises:
        TranscriptNotFound: nothing matches (with the closest session ids).
        NoMatch: the start of a session id that several sessions share (with them).
    """
    name = parse_citation(target).name
    reference = export_reference(name)
    if reference is not None:
        name = f"{reference[0]}:{reference[1]}"  # the conversation (the message is found in it)
        if on_disk and Path(os.path.expanduser(str(reference[0]))).is_file():
            return Path(os.path.expanduser(name))  # read from the export itself
    if reference or any(sep in name for sep in "/\\") or name.endswith(".jsonl") or name.startswith("~"):
        return _find_file(settings, name, store, on_disk)
    return _find_session(settings, name, store, on_disk)


def _find_file(settings: Settings, name: str, store: Store | None, on_disk: bool) -> Path:
    path = Path(os.path.expanduser(name))
    alone = len(path.parts) == 1  # a file name, not a path
    if alone and path.name == REFLECTIONS:  # as store_reflection cites it
        path = settings.data_dir / REFLECTIONS
        alone = False
    elif alone and path.name == HISTORY:  # Claude Code's own, as search cites its prompts
        path = settings.history_file
        alone = False
    if on_disk and path.is_file():
        return path
    found: list[Path] = []
    if store is not None and alone:
        found = [Path(str(t)) for t, _ in store.facet("transcript", SearchFilter(), MAX_NAMES)]
    elif store is not None and path.is_absolute() and store.count(SearchFilter(transcript=str(path))):
        return path
    if on_disk and alone and settings.projects_dir.is_dir():
        found += [f.path for f in discover(settings.projects_dir)]
    found = sorted({p for p in found if p.name == path.name})
    if len(found) > 1:
        raise NoMatch(f"{len(found)} transcripts are named {name}: give the whole path", [str(p) for p in found], True)
    if found:
        return found[0]
    raise TranscriptNotFound(f"no {'' if on_disk else 'indexed '}transcript at {name} ({_HOW})")


def _find_session(settings: Settings, name: str, store: Store | None, on_disk: bool) -> Path:
    candidates = _session_files(settings, name, store, on_disk)
    if not candidates:  # the start of a session id (or of a sub-agent's file name)?
        known: list[str] = []
        if store is not None:
            known = [str(v) for v, _ in store.facet("session_id", SearchFilter(), MAX_NAMES)]
            known += [Path(str(t)).stem for t, _ in store.facet("transcript", SearchFilter(), MAX_NAMES)]
        if on_disk and settings.projects_dir.is_dir():
            known += [n for f in discover(settings.projects_dir) for n in (f.session_id, f.path.stem)]
        try:
            whole = pick(name, list(dict.fromkeys(known)), "session", prefix=True)
        except NoMatch as exc:
            if exc.several:
                raise  # several sessions start so: say which
            close = f"; did you mean {', '.join(repr(s) for s in exc.suggestions)}?" if exc.suggestions else ""
            raise TranscriptNotFound(
                f"no {'' if on_disk else 'indexed '}transcript for {name!r}{close or f' ({_HOW})'}"
            ) from None
        candidates = _session_files(settings, whole, store, on_disk)
    candidates.sort(key=lambda p: (p.stem != name, "subagents" in p.parts, p.stem.startswith("agent-"), str(p)))
    return candidates[0]


def _session_files(settings: Settings, name: str, store: Store | None, on_disk: bool) -> list[Path]:
    """The transcripts of session ``name`` (or named ``name``), indexed first."""
    if store is not None:
        # The session's own conversation first: sub-agent files carry the parent's session id.
        for where in (SearchFilter(session_id=name, include_sidechains=False), SearchFilter(session_id=name)):
            indexed = [Path(str(value)) for value, _ in store.facet("transcript", where, 100)]
            if indexed:
                return indexed
        named = [Path(str(t)) for t, _ in store.facet("transcript", SearchFilter(), MAX_NAMES)]
        named = [p for p in named if p.stem == name]
        if named:
            return named
    if on_disk and settings.projects_dir.is_dir():
        return [f.path for f in discover(settings.projects_dir) if name in (f.session_id, f.path.stem)]
    return []
