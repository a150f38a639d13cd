"""Reflections: insights Claude stores on purpose (``store_reflection``).

Each one is appended to ``<data dir>/reflections.jsonl`` (the durable record:
the store can always be rebuilt from it) and indexed at once next to the
conversations, marked ``kind: reflection``, cited as ``reflections.jsonl:LINE``.
Ids are random, so two reflections written in the same second never
overwrite each other.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock
import orjson

from selfreflect.embed import Embedder
from selfreflect.errors import SelfReflectError
from selfreflect.lexical import lexical_text
from selfreflect.parse import clean_text, parse_line
from selfreflect.redact import redact
from selfreflect.store import Record, Store
from selfreflect.system import path_name
from selfreflect.tail import read_lines

MAX_CHARS = 8000
MAX_TAGS = 20
MAX_TAG_CHARS = 100
FILE = "reflections.jsonl"


def store_reflection(
    store: Store, embedder: Embedder, data_dir: Path, content: str, tags: list[str], cwd: str | None = None
) -> dict[str, Any]:
    """Record and index one reflection; return its payload (with ``id``).

    Raises:
        SelfReflectError: empty or oversized content, too many or too long
            tags, or the file cannot be written.
    """
    text = redact(clean_text(content).strip())
    if not text:
        raise SelfReflectError("a reflection needs some content")
    if len(text) > MAX_CHARS:
        raise SelfReflectError(f"a reflection holds at most {MAX_CHARS} characters, not {len(text)}")
    tags = [redact(clean_text(t).strip()) for t in tags if t and t.strip()]
    if len(tags) > MAX_TAGS or any(len(t) > MAX_TAG_CHARS for t in tags):
        raise SelfReflectError(f"at most {MAX_TAGS} tags of at most {MAX_TAG_CHARS} characters each")
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    entry = {"id": str(uuid.uuid4()), "timestamp": now, "content": text, "tags": tags, "cwd": clean_text(cwd or "")}
    path = data_dir / FILE
    line = _append(path, entry)
    return _index(store, embedder, path, [(line, entry)])[0]


def reindex_reflections(store: Store, embedder: Embedder, data_dir: Path) -> int:
    """Index every reflection of ``reflections.jsonl`` again (a rebuilt store);
    returns how many. Damaged lines are skipped."""
    path = data_dir / FILE
    if not path.exists():
        return 0
    entries = []
    for line in read_lines(path, final=True):
        record = parse_line(line.data)
        if isinstance(record, dict) and isinstance(record.get("id"), str) and isinstance(record.get("content"), str):
            entries.append((line.number, record))
    for start in range(0, len(entries), 32):
        _index(store, embedder, path, entries[start : start + 32])
    return len(entries)


def _index(
    store: Store, embedder: Embedder, path: Path, entries: list[tuple[int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Write reflections (line number, entry) to the store under their ids."""
    payloads = []
    for line, entry in entries:
        tags = [str(t) for t in entry.get("tags") or [] if isinstance(t, str)]
        cwd = entry.get("cwd") if isinstance(entry.get("cwd"), str) else ""
        shown = f"Reflection{' [' + ', '.join(tags) + ']' if tags else ''}: {entry['content']}"
        payloads.append(
            {
                "id": entry["id"],
                "kind": "reflection",
                "project": path_name(cwd) if cwd else "",
                "project_path": cwd or "",
                "session_id": "reflections",
                "transcript": str(path),
                "line_start": line,
                "line_end": line,
                "timestamp": entry.get("timestamp"),
                "git_branch": "",
                "thread": "main",
                "text": shown,
                "tools": [],
                "files": [],
                "file_suffixes": [],
                "tags": tags,
            }
        )
    vectors = embedder.embed([p["text"] for p in payloads])
    store.upsert(
        [
            Record(p["id"], v.tolist(), lexical_text(p["text"]), {k: x for k, x in p.items() if k != "id"})
            for p, v in zip(payloads, vectors, strict=True)
        ]
    )
    return payloads


def _append(path: Path, entry: dict[str, Any]) -> int:
    """Append one line under an exclusive lock (another process may be
    appending too); return its line number."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(f"{path}.lock", timeout=30, thread_local=False), open(path, "ab+") as handle:
            handle.seek(0)
            line = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) + 1
            handle.write(orjson.dumps(entry) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
    except (OSError, filelock.Timeout) as exc:
        raise SelfReflectError(
            f"cannot save the reflection in {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from exc
    return line
