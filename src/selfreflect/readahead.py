"""Reading the store's files into the page cache in a helper process, while
the engine loads them.

The embedded engine reads every page of some of its files when it loads a
segment (the null indexes: two 1 MB flag files per indexed field, mostly
holes), one page fault at a time: ~36 ms a segment, 2.2 s of a 62-segment
store's load. Pages already in the page cache fault in far faster. The
load holds Python's lock from start to end, so a thread cannot read ahead
of it; a process can: :func:`reading_ahead` starts one
(``python -m selfreflect.readahead FOLDER PATTERN``) and stops it when the
load is done. Plain reads, so it works alike wherever it runs (not on
Windows: :data:`selfreflect.system.READ_AHEAD`); what cannot be read is
skipped, and a helper that cannot start only costs the speed-up.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


@contextmanager
def reading_ahead(folder: Path, pattern: str) -> Iterator[Any]:
    """Read ``folder``'s regular files that match the glob ``pattern`` in a
    helper process while the body runs. Yields the helper (a ``Popen``; None
    where there is none), stopped when the body ends."""
    from selfreflect.system import READ_AHEAD

    helper = None
    if READ_AHEAD:
        import subprocess

        try:
            helper = subprocess.Popen(
                [sys.executable, "-m", "selfreflect.readahead", ".", pattern],
                cwd=folder,  # what `-m` puts first on sys.path: the engine's folders, no module to shadow ours
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:  # no folder, no interpreter to start (an embedded Python), no processes left
            import logging

            logging.getLogger(__name__).debug("cannot read ahead of the store's load: %s", exc)
    try:
        yield helper
    finally:
        if helper is not None:
            helper.kill()  # what it has not read yet, nobody waits for any more
            helper.wait()


def read_files(folder: Path, pattern: str) -> int:
    """Read every regular file under ``folder`` that matches ``pattern`` once;
    the bytes read. What cannot be read (gone, no permission) is skipped."""
    buffer = bytearray(_CHUNK)
    read = 0
    for path in folder.glob(pattern):
        if not path.is_file():  # a FIFO would block; a symlink loop is no file
            continue
        try:
            with open(path, "rb", buffering=0) as file:
                while n := file.readinto(buffer):
                    read += n
        except OSError:
            continue
    return read


if __name__ == "__main__":
    read_files(Path(sys.argv[1]), sys.argv[2])
