"""Resident memory of a process as Linux reports it (``/proc/<pid>/status``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def memory_mb(pid: int | str = "self") -> dict[str, int]:
    """Now (``VmRSS``), the peak (``VmHWM``), and the anonymous and
    file-backed parts of now, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in FIELDS:
            out[key] = int(value.split()[0]) // 1024
    return out


def watch(pid: int, going: Callable[[], object], every: float = 0.02) -> tuple[dict[str, int], list[int]]:
    """Read ``memory_mb(pid)`` every ``every`` seconds while ``going()``
    holds (or until the process is gone): the highest value of each field,
    and every ``VmRSS`` read."""
    peak = dict.fromkeys(FIELDS, 0)
    samples: list[int] = []
    while going():
        try:
            now = memory_mb(pid)
        except OSError:
            break
        if "VmRSS" not in now:  # exited, not yet reaped: no memory left to read
            break
        samples.append(now["VmRSS"])
        for key in peak:
            peak[key] = max(peak[key], now.get(key, 0))
        time.sleep(every)
    return peak, samples
