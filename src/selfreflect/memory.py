"""Giving memory back to the system: freed heap, and mapped file pages.

glibc keeps freed heap for reuse (:func:`malloc_trim` returns it) and gives
every thread its own arena (:func:`limit_malloc_arenas`).

A memory-mapped store counts every page it has touched as resident memory of
the process (RSS), although those pages are page cache that the kernel can
take back at any time. :func:`release_mapped_pages` unmaps them from the
process (``madvise(MADV_DONTNEED)``): the data stays in the page cache and in
the file, and the next read maps it back with a minor fault.

Only *shared* file mappings are touched: for them ``MADV_DONTNEED`` can lose
nothing (written pages are in the page cache already). Private mappings are
left alone. Linux only; elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

MADV_DONTNEED = 4


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


_LIBC = _libc()
_MADVISE: Any = getattr(_LIBC, "madvise", None) if sys.platform.startswith("linux") else None
if _MADVISE is not None:
    _MADVISE.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    _MADVISE.restype = ctypes.c_int


def malloc_trim() -> None:
    """Hand freed heap back to the system (glibc; a no-op elsewhere)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives every thread that allocates its own heap arena, and freed
    memory in one is not reused by another: with the importer, the watcher and
    HTTP worker threads that inflates RSS. Two arenas are plenty here."""
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is not None:
        mallopt(-8, arenas)  # M_ARENA_MAX


def release_mapped_pages(folder: str) -> int:
    """Unmap the resident pages of shared mappings of files under ``folder``.

    The caller must make sure nothing maps or unmaps files of ``folder``
    meanwhile (the store holds its exclusive lock). Returns the number of
    mappings released.
    """
    if _MADVISE is None:
        return 0
    prefix = folder.rstrip("/") + "/"
    released = 0
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.readlines()
    except OSError:
        return 0
    for line in lines:
        # address perms offset dev inode path
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith(prefix) or fields[1][3:4] != "s":
            continue
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if _MADVISE(start, end - start, MADV_DONTNEED) == 0:
            released += 1
    return released
