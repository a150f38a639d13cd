"""The archive's size against the transcripts, and what a frame's size costs.

    python bench/archive.py [CLAUDE_DIR]   # default: tests/corpus/real as one project

Archives every transcript under CLAUDE_DIR/projects with the real archive
(``selfreflect.archive.Archive.append``, as the importer calls it for a
transcript nobody writes: the whole file, one frame) into a temporary folder,
and prints each file's size, its archive's, the time and the process's peak
resident memory. Then, for the same bytes cut at line ends into frames of a
given size (a live session archived as it grows), the ratio each frame size
gives.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import zstandard

from selfreflect.archive import LEVEL, Archive
from selfreflect.discover import discover

from corpus import claude_home

FRAMES = {"a line": 1, "16 KB": 16 << 10, "64 KB": 64 << 10, "1 MB": 1 << 20}


def framed(data: bytes, size: int) -> int:
    """Bytes of ``data`` compressed as frames of at least ``size`` bytes, cut at line ends."""
    compressor, total, start = zstandard.ZstdCompressor(level=LEVEL), 0, 0
    while start < len(data):
        cut = data.find(b"\n", start + size - 1)
        end = len(data) if cut < 0 else cut + 1
        total += len(compressor.compress(data[start:end]))
        start = end
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("claude_dir", type=Path, nargs="?")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="selfreflect-archive-"))
    claude = args.claude_dir
    if claude is None:  # the in-repo corpus, laid out as one project
        claude = claude_home(scratch)
    archive = Archive(scratch / "archive", claude / "projects")
    files = sorted(discover(claude / "projects"), key=lambda t: -t.size)
    raw = packed = 0
    seconds = 0.0
    for transcript in files:
        started = time.perf_counter()
        entry = archive.append(transcript, None, transcript.size)
        took = time.perf_counter() - started
        seconds += took
        raw, packed = raw + transcript.size, packed + entry.size
        print(f"{transcript.key}: {transcript.size / 2**20:.2f} MB -> {entry.size / 2**20:.3f} MB ({took:.2f} s)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(
        f"total: {len(files)} transcripts, {raw / 2**20:.2f} MB -> {packed / 2**20:.2f} MB "
        f"({raw / packed:.1f}x smaller), {raw / 2**20 / seconds:.0f} MB/s; peak RSS {peak} MB"
    )
    for name, size in FRAMES.items():
        small = sum(framed(t.path.read_bytes(), size) for t in files)
        print(f"frames of {name}: {raw / small:.1f}x smaller")
    shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
