"""Giving memory back to the system: freed heap, and mapped file pages.

glibc keeps freed heap for reuse (:func:`malloc_trim` returns it) and gives
every thread its own arena (:func:`limit_malloc_arenas`).

A memory-mapped store counts every page it has touched as resident memory of
the process (RSS), although those pages are page cache that the kernel can
take back at any time. :func:`release_mapped_pages` unmaps them from the
process (``madvise(MADV_DONTNEED)``): the data stays in the page cache and in
the file, and the next read maps it back with a minor fault.

Only *shared* file mappings are touched: for them ``MADV_DONTNEED`` can lose
nothing (written pages are in the page cache already).

Libraries count the same way: onnxruntime's start-up (its kernel registry)
maps 17-21 MB of its code, and inference runs about 7 MB of it.
:func:`release_code_pages` unmaps the pages of read-only library mappings
that hold nothing but the file's content, so that only the code in use maps
back. Linux only; elsewhere these are no-ops.
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


def _proc_lines(name: str) -> list[str]:
    try:
        with open(f"/proc/self/{name}", encoding="utf-8", errors="replace") as proc:
            return proc.readlines()
    except OSError:
        return []


def _mapping(line: str) -> tuple[int, int, str, str] | None:
    """(start, end, perms, path) of a mapping's line in ``/proc/self/maps``
    or ``smaps``; None for smaps' other lines."""
    fields = line.split(maxsplit=5)  # address perms offset dev inode [path]
    if len(fields) < 5 or fields[0].endswith(":"):
        return None
    start, end = (int(x, 16) for x in fields[0].split("-"))
    return start, end, fields[1], fields[5].rstrip("\n") if len(fields) == 6 else ""


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
    for line in _proc_lines("maps"):
        mapping = _mapping(line) if prefix in line else None
        if mapping is None:
            continue
        start, end, perms, path = mapping
        if path.startswith(prefix) and perms[3] == "s" and _MADVISE(start, end - start, MADV_DONTNEED) == 0:
            released += 1
    return released


def release_code_pages() -> int:
    """Unmap the resident pages of read-only private file mappings (library
    code and constants) that hold only the file's content.

    A private page that was ever written (a relocated one) shows in the
    mapping's ``Anonymous`` count; such mappings are skipped, since
    ``MADV_DONTNEED`` would put the file's content back in its place. A
    read-only mapping cannot be written later without ``mprotect``, which
    the dynamic loader only does while loading, before the mapping is
    read-only. Returns the number of mappings released.
    """
    if _MADVISE is None:
        return 0
    clean: list[tuple[int, int]] = []
    current = False  # the last mapping read is the last of ``clean``
    for line in _proc_lines("smaps"):
        mapping = _mapping(line)
        if mapping is not None:
            start, end, perms, path = mapping
            current = path.startswith("/") and perms[1] == "-" and perms[3] == "p"
            if current:
                clean.append((start, end))
        elif current and line.startswith("Anonymous:") and line.split()[1] != "0":
            clean.pop()
            current = False
    return sum(_MADVISE(start, end - start, MADV_DONTNEED) == 0 for start, end in clean)
