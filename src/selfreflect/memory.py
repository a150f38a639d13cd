"""Memory: the process's policy (:class:`MemoryPolicy`), and the ways of
giving memory back to the system it uses: freed heap, mapped file pages.

Every decision about memory is :class:`MemoryPolicy`'s: when freed heap and
mapped pages are given back (after a batch, when idle, around a store's
compaction), and the cap (``MAX_MEMORY_MB``): near it memory is given back,
and if that is not enough batches shrink; over it intake pauses. The daemon
makes one and hands it to the store and the streamer; a one-off command's
store makes its own, with no cap. The store only knows *how* to unmap its
pages (``release_memory``), never *when*.

Platform limits: resident memory is read through psutil everywhere.
Giving memory back is glibc's ``malloc_trim`` and Linux's ``madvise``; on
macOS and Windows they are no-ops (their allocators return freed memory by
themselves, and mapped pages stay counted until the system takes them), so
there the cap can only shrink batches and pause intake.

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
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

log = logging.getLogger("selfreflect")

MADV_DONTNEED = 4
NEAR_CAP = 0.85  # of the cap: from here on, one chunk a batch and memory given back before each
PAUSE_SECONDS = 5.0  # the longest intake pauses for memory to come back
NO_PAUSE_SECONDS = 60.0  # after a pause that brought nothing back, none for this long


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
    read-only. So which mappings are clean is asked of ``smaps`` only when
    one appeared that was not seen before: reading ``smaps`` walks the page
    tables of every mapping, the store's thousands included (60 ms at 250k
    chunks in 62 segments, against 8 ms for ``maps``). Returns the number
    of mappings released.
    """
    if _MADVISE is None:
        return 0
    code = [key for line in _proc_lines("maps") if _read_only_private(line) and (key := _code(_mapping(line)))]
    if any(key not in _CLEAN_CODE for key in code):
        _CLEAN_CODE.clear()
        _CLEAN_CODE.update(_clean_code())
    return sum(
        _MADVISE(start, end - start, MADV_DONTNEED) == 0
        for start, end, path in code
        if _CLEAN_CODE.get((start, end, path))
    )


# (start, end, path) of each read-only private file mapping in ``smaps`` when last read: whether it holds only the
# file's content
_CLEAN_CODE: dict[tuple[int, int, str], bool] = {}


def _read_only_private(line: str) -> bool:  # a quick test before parsing (5,700 lines at 250k chunks)
    return " r--p " in line or " r-xp " in line


def _code(mapping: tuple[int, int, str, str] | None) -> tuple[int, int, str] | None:
    """(start, end, path) of a read-only private file mapping (:func:`_mapping`); None for others."""
    if mapping is None:
        return None
    start, end, perms, path = mapping
    return (start, end, path) if path.startswith("/") and perms[1] == "-" and perms[3] == "p" else None


def _clean_code() -> dict[tuple[int, int, str], bool]:
    """Each read-only private file mapping in ``smaps``: whether none of its pages was written."""
    clean: dict[tuple[int, int, str], bool] = {}
    current = None  # the mapping the lines read belong to, if it is one of those
    for line in _proc_lines("smaps"):
        mapping = _mapping(line)
        if mapping is not None:  # a mapping's first line
            current = _code(mapping)
            if current is not None:
                clean[current] = True
        elif current is not None and line.startswith("Anonymous:") and line.split()[1] != "0":
            clean[current] = False
    return clean


class MemoryPolicy:
    """When this process gives memory back, and how it stays under its cap.

    Args:
        cap_mb: the cap (``MAX_MEMORY_MB``); ``None``: no cap, memory is
            still given back at the same moments.
    """

    def __init__(self, cap_mb: int | None = None) -> None:
        self.cap = cap_mb * 1024 * 1024 if cap_mb else None
        self.batch_limit: int | None = None  # chunks per batch while near the cap (None: no limit)
        self._holders: list[Callable[[], None]] = []  # give back mapped pages (a store's release_memory)
        self._no_pause_until = 0.0
        self._process = psutil.Process()

    def hold(self, release: Callable[[], None]) -> None:
        """Something that maps files (a store): ``release`` unmaps its pages."""
        self._holders.append(release)

    def rss(self) -> int:
        """Resident memory of the process, in bytes."""
        return int(self._process.memory_info().rss)

    def own(self) -> int:
        """Resident memory of the process but file pages (Linux: the
        anonymous part; elsewhere all of it), in bytes."""
        info = self._process.memory_info()
        return int(info.rss - getattr(info, "shared", 0))

    def _release(self, *, heap: bool = True, code: bool = False, collect: bool = False) -> None:
        if collect:
            gc.collect()
        if heap:
            malloc_trim()
        if code:
            release_code_pages()
        for release in self._holders:
            release()

    def after_batch(self) -> None:
        """A batch was written: the heap it freed (~5 MB) and the pages it mapped."""
        self._release()

    def idle(self, first: bool) -> None:
        """Nothing to do: pages that searches mapped; on ``first`` (just
        caught up), also library code that start-up or the work mapped in."""
        self._release(heap=False, code=first)

    def before_peak(self) -> None:
        """A store is about to build a segment, the process's memory peak:
        give back first what can be (freed heap, mapped pages, library code)."""
        self._release(code=True)

    def after_peak(self) -> None:
        """A segment was built: what building it freed."""
        self._release(collect=True)

    def guard(self, stop: threading.Event) -> bool:
        """Before a batch. Near the cap: memory given back first (mapped
        pages that searches left count in resident memory, and go at once);
        still near it: smaller batches (:attr:`batch_limit`); over it: pause
        until back under (at most ``PAUSE_SECONDS``, or until ``stop``),
        unless the process's own memory (:meth:`own`) is under the cap: the
        rest are file pages that searches map as they run (given back a
        moment ago), and a pause would hold back new lines and bring none
        back. A pause that brings nothing back (the model and the store
        alone are over the cap) is not repeated for a minute: intake goes on
        with the smallest batches rather than stall. Returns whether it
        paused."""
        if self.cap is None:
            return False
        rss = self.rss()
        if rss >= NEAR_CAP * self.cap:
            self._release(code=True, collect=True)
            rss = self.rss()
        if rss < NEAR_CAP * self.cap:
            self.batch_limit = None
            return False
        self.batch_limit = 1
        if rss <= self.cap or time.monotonic() < self._no_pause_until:
            return False
        if self.own() <= self.cap:
            return False
        log.warning("memory %.0f MB over the %.0f MB cap: pausing intake", rss / 2**20, self.cap / 2**20)
        deadline = time.monotonic() + PAUSE_SECONDS
        while self.rss() > self.cap and time.monotonic() < deadline and not stop.is_set():
            stop.wait(0.2)
            self._release(heap=True, collect=True)
        if self.rss() > 0.95 * rss:
            log.warning(
                "memory stays at %.0f MB, over the %.0f MB cap, while idle: going on with the smallest batches "
                "(raise MAX_MEMORY_MB)",
                self.rss() / 2**20,
                self.cap / 2**20,
            )
            self._no_pause_until = time.monotonic() + NO_PAUSE_SECONDS
        return True
