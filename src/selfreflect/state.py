"""State: how far each transcript has been indexed.

Saved only after the store confirmed a batch, atomically (temp file, fsync,
rename), so after a crash the state never claims more than the store holds.
Reading resumes at the start of the last exchange that was still open; its
chunks are rebuilt under the same ids, so a replay overwrites instead of
duplicating (at-least-once reading + idempotent writes).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import orjson


@dataclass
class TranscriptPosition:
    """Where to resume one transcript.

    Attributes:
        offset: byte offset of the first line not yet final in the store (the
            start of the open exchange); reading resumes here.
        line: the line number at ``offset``.
        end: bytes of complete lines read so far (``end >= offset``).
        inode, device, size, mtime: the file as last seen, to tell growth
            from replacement or truncation.
        bad_lines: lines that were not JSON objects (NUL, torn, not objects).
        oversized_lines: lines skipped for being longer than the limit.
        final: the last read took the file as finished (it had stopped
            growing), so an unterminated last line was used if it was whole.
        context: where the open exchange stands when ``offset`` is inside it
            (its final chunks are written): :meth:`Assembler.snapshot`.
        done: the last read went to the end of the file and wrote the open
            exchange too; a read that stopped early (the daemon's turns) has
            read lines whose exchange is not written yet.
    """

    offset: int = 0
    line: int = 1
    end: int = 0
    inode: int = 0
    device: int = 0
    size: int = 0
    mtime: float = 0.0
    bad_lines: int = 0
    oversized_lines: int = 0
    final: bool = False
    context: dict[str, Any] | None = None
    done: bool = False


class State:
    """The positions of all transcripts, keyed by absolute path."""

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self.positions: dict[str, TranscriptPosition] = {}

    @classmethod
    def load(cls, path: Path) -> State:
        state = cls(path)
        try:
            raw = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return state
        except orjson.JSONDecodeError:
            # Written atomically, so this is damage from outside: start over
            # (idempotent writes make a full re-read safe, only slower).
            return state
        known = {f.name for f in fields(TranscriptPosition)}
        for key, value in raw.get("positions", {}).items():
            state.positions[key] = TranscriptPosition(**{k: v for k, v in value.items() if k in known})
        return state

    def get(self, path: str) -> TranscriptPosition:
        return self.positions.get(path) or TranscriptPosition()

    def set(self, path: str, position: TranscriptPosition) -> None:
        self.positions[path] = position

    def forget(self, path: str) -> None:
        self.positions.pop(path, None)

    def save(self) -> None:
        """Write atomically: a reader sees the old state or the new one, whole."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps({"version": self.VERSION, "positions": {k: asdict(v) for k, v in self.positions.items()}})
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
