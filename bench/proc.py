"""Resident memory of a process as Linux reports it (``/proc/<pid>/status``)."""

from __future__ import annotations

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
