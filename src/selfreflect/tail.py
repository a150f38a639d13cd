"""Tail: complete lines of a transcript, read from a byte offset.

Lines are split on ``b"\\n"`` only (never ``str.splitlines``, which also splits
on U+2028 and friends inside JSON strings). A last line without its newline is
still being written, or was torn by a crash: it is held back, and the offset
does not move past it. A line longer than ``max_line_bytes`` is streamed past
in blocks and reported, never held in memory whole.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

BLOCK = 1 << 16


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class Line:
    """One complete line of a transcript.

    Attributes:
        number: 1-based physical line number in the file.
        start: byte offset of the line's first byte.
        end: byte offset just past its newline (where the next line starts).
        data: the bytes without the newline; empty when ``oversized``.
        oversized: the line was longer than the limit and was skipped.
        terminated: ``False`` for a last line without its newline (only
            yielded when asked for with ``final``).
    """

    number: int
    start: int
    end: int
    data: bytes
    oversized: bool = False
    terminated: bool = True


@dataclass(frozen=True)
class FileIdentity:
    """What tells a file that grew from a file that was replaced or cut."""

    inode: int
    device: int
    size: int
    mtime: float

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        st = os.stat(path)
        return cls(inode=st.st_ino, device=st.st_dev, size=st.st_size, mtime=st.st_mtime)


def read_lines(
    path: Path, offset: int = 0, first_line: int = 1, max_line_bytes: int = 8 << 20, final: bool = False
) -> Iterator[Line]:
    """Yield the complete lines of ``path`` from byte ``offset`` on.

    Args:
        path: the transcript.
        offset: byte offset of the start of a line (0 for the top).
        first_line: the line number of the line that starts at ``offset``.
        max_line_bytes: longer lines are yielded with ``oversized=True`` and no data.
        final: the file stopped growing: yield a last line that has no newline
            too (``terminated=False``), so a file whose writer died mid-line or
            never wrote the last newline still gives its last record.

    Raises:
        OSError: the file vanished, cannot be read, or is not a regular file
            (the caller reports it).
    """
    with open_regular(path) as handle:
        handle.seek(offset)
        yield from lines_of(handle, offset, first_line, max_line_bytes, final)


def lines_of(
    handle: Readable, offset: int = 0, first_line: int = 1, max_line_bytes: int = 8 << 20, final: bool = False
) -> Iterator[Line]:
    """The complete lines of a stream already at byte ``offset`` (a
    transcript, or its archive as it is decompressed): as :func:`read_lines`."""
    number, start, block_start = first_line, offset, offset
    pending = bytearray()
    skipping = False  # inside a line that outgrew max_line_bytes
    while True:
        block = handle.read(BLOCK)
        if not block:
            # No newline yet: still being written, or torn. Held back,
            # unless the caller knows the file stopped growing.
            if final and pending and not skipping:
                yield Line(number, start, start + len(pending), bytes(pending), terminated=False)
            return
        cut = 0
        while (newline := block.find(b"\n", cut)) >= 0:
            end = block_start + newline + 1
            if skipping or len(pending) + newline - cut > max_line_bytes:
                yield Line(number, start, end, b"", oversized=True)
            else:
                pending += block[cut:newline]
                yield Line(number, start, end, bytes(pending))
            number, start, cut = number + 1, end, newline + 1
            pending.clear()
            skipping = False
        if not skipping:
            pending += block[cut:]
            if len(pending) > max_line_bytes:
                pending.clear()
                skipping = True
        block_start += len(block)


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file. Opened without
    blocking, so a FIFO or a device named like a transcript (or swapped in
    after discovery saw a file) is refused instead of hanging the reader.

    Raises:
        OSError: it vanished, cannot be read, or is not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
