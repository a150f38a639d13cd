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
from selfreflect.redact import redact
from selfreflect.store import Record, Store

MAX_CHARS = 8000
FILE = "reflections.jsonl"


def store_reflection(
    store: Store, embedder: Embedder, data_dir: Path, content: str, tags: list[str], cwd: str | None = None
) -> dict[str, Any]:
    """Record and index one reflection; return its payload (with ``id``).

    Raises:
        SelfReflectError: empty or oversized content.
    """
    text = redact(content.strip())
    if not text:
        raise SelfReflectError("a reflection needs some content")
    if len(text) > MAX_CHARS:
        raise SelfReflectError(f"a reflection holds at most {MAX_CHARS} characters, not {len(text)}")
    tags = [t.strip() for t in tags if t and t.strip()]
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    point_id = str(uuid.uuid4())
    path = data_dir / FILE
    line = _append(path, {"id": point_id, "timestamp": now, "content": text, "tags": tags, "cwd": cwd})
    shown = f"Reflection{' [' + ', '.join(tags) + ']' if tags else ''}: {text}"
    payload: dict[str, Any] = {
        "kind": "reflection",
        "project": Path(cwd).name if cwd else "",
        "project_path": cwd or "",
        "session_id": "reflections",
        "transcript": str(path),
        "line_start": line,
        "line_end": line,
        "timestamp": now,
        "git_branch": "",
        "thread": "main",
        "text": shown,
        "tools": [],
        "files": [],
        "file_suffixes": [],
        "tags": tags,
    }
    (vector,) = embedder.embed([shown])
    store.upsert([Record(point_id, vector.tolist(), lexical_text(shown), payload)])
    return {"id": point_id, **payload}


def _append(path: Path, entry: dict[str, Any]) -> int:
    """Append one line under an exclusive lock (another process may be
    appending too); return its line number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(f"{path}.lock", timeout=30, thread_local=False), open(path, "ab+") as handle:
        handle.seek(0)
        line = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) + 1
        handle.write(orjson.dumps(entry) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return line
