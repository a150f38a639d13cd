"""The archive's size against the transcripts, and what a frame's size costs.

    python bench/archive.py [CLAUDE_DIR]   # default: tests/corpus/real as one project

Archives every transcript under CLAUDE_DIR/projects with the real archive
(``selfreflect.archive.Archive.append``, as the importer calls it for a
transcript nobody writes: the whole file, one frame) into a temporary folder,
and prints each file's size, its archive's, the time and the process's peak
resident memory. Then, for the same bytes cut at line ends into frames of a
given size (a live session archived as it grows), the ratio each frame size
gives.

With ``--long MB``, reading a window of a long transcript (the corpus's
transcripts one after another until it is that big), as ``show`` and
``read_conversation`` do: five lines around its first, middle and last
line, from the file and from its archive, against reading every line of it
without parsing any (the floor: a window's lines are found by counting).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import zstandard

from selfreflect.archive import LEVEL, Archive, transcript_lines
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
    parser.add_argument("--long", type=int, default=0, metavar="MB", help="also time windows of a transcript this big")
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
    if args.long:
        windows(scratch, [t.path for t in files], args.long)
    shutil.rmtree(scratch)


def windows(scratch: Path, sources: list[Path], megabytes: int) -> None:
    """Time excerpts of a long transcript made of ``sources``, on disk and archived."""
    from selfreflect.conversation import excerpt
    from selfreflect.discover import describe
    from selfreflect.tail import read_lines

    projects = scratch / "long" / "projects"
    path = projects / "-long" / "long.jsonl"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as out:
        while out.tell() < megabytes << 20:
            for source in sources:
                out.write(source.read_bytes())
    transcript = describe(projects, path)
    assert transcript is not None
    archive = Archive(scratch / "long" / "archive", projects)
    archive.append(transcript, None, transcript.size)
    lines = sum(1 for _ in read_lines(path, final=True))
    print(f"a long transcript: {transcript.size / 2**20:.0f} MB, {lines:,} lines (best of 3, ms)")
    moved = path.with_suffix(".gone")

    def best(read: Callable[[], object]) -> float:
        took = []
        for _ in range(3):
            started = time.perf_counter()
            read()
            took.append((time.perf_counter() - started) * 1000)
        return min(took)

    for where in ("the file", "its archive"):
        if where == "its archive":
            path.rename(moved)  # gone from disk: read from the archive
        every = best(lambda: sum(1 for _ in transcript_lines(path, archive)))
        shown = [best(lambda n=n: excerpt(path, n, 2, 2, archive=archive)) for n in (3, lines // 2, lines - 2)]
        print(
            f"  from {where}: every line unparsed {every:.0f}; five around the first / middle / last"
            f" {shown[0]:.0f} / {shown[1]:.0f} / {shown[2]:.0f}"
        )
    moved.rename(path)


if __name__ == "__main__":
    main()
