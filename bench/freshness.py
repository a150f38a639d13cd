"""Freshness: append a line to a live transcript -> searchable through the daemon.

    python bench/freshness.py [--appends 200] [--backlog-mb 150]

Runs the real daemon on a fresh Claude home. Phase 1: the daemon is idle;
each append of a user line with a unique code word is timed until
``/api/search`` returns it. Phase 2: the same while the daemon backfills a
generated backlog (bench/generate_corpus.py). Baseline, same run: one
``/api/search`` round trip for a word already indexed, the floor of what
this measurement can see.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus import default_shared  # noqa: E402
from generate_corpus import generate  # noqa: E402
from served import address  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Daemon:
    def __init__(self, claude: Path, data: Path) -> None:
        env = {**os.environ, "CLAUDE_CONFIG_DIR": str(claude), "SELFREFLECT_HOME": str(data)}
        (data / "daemon.json").unlink(missing_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "selfreflect", "serve", "--port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = address(data, self.proc)

    def get(self, path: str, **params: str) -> dict:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        return json.load(urllib.request.urlopen(self.url + path + query))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)


def code_line(label: str, i: int) -> tuple[str, bytes]:
    """A user line of a live session with a code word of its own: (the word, the line)."""
    word = f"{label}codeword{i:04d}"
    record = {
        "type": "user",
        "uuid": f"{label}-{i}",
        "sessionId": "live",
        "cwd": "/home/dev/live",
        "timestamp": "2026-11-27T10:00:00Z",
        "message": {"role": "user", "content": f"remember {word}: the deploy failed on step {i}"},
    }
    return word, json.dumps(record).encode() + b"\n"


def append_and_time(daemon: Daemon, live: Path, n: int, label: str) -> list[float]:
    latencies = []
    for i in range(n):
        word, line = code_line(label, i)
        started = time.perf_counter()
        with open(live, "ab") as handle:
            handle.write(line)
        while True:
            results = daemon.get("/api/search", q=word, limit="1")["results"]
            if results and word in results[0]["text"]:
                break
            if time.perf_counter() - started > 30:
                raise TimeoutError(word)
            time.sleep(0.005)
        latencies.append(time.perf_counter() - started)
        time.sleep(0.02)
    return latencies


def report(label: str, values: list[float]) -> None:
    ordered = sorted(values)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    print(
        f"{label:<34} n={len(values):<4} p50 {statistics.median(values) * 1000:6.0f} ms   "
        f"p95 {p95 * 1000:6.0f} ms   max {ordered[-1] * 1000:6.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--backlog-mb", type=int, default=150)
    parser.add_argument("--shared", type=Path, default=default_shared(), help="optional extra transcripts")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="selfreflect-fresh-"))
    try:
        measure(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the generated backlog and its store: hundreds of MB


def measure(args: argparse.Namespace, root: Path) -> None:
    """Appends timed until searchable, idle and then during a backfill of a generated backlog."""
    claude, data = root / "claude", root / "data"
    live = claude / "projects" / "-home-dev-live" / "live.jsonl"
    live.parent.mkdir(parents=True)
    live.write_bytes(b"")

    daemon = Daemon(claude, data)
    idle = append_and_time(daemon, live, args.appends, "idle")
    floor = []
    for i in range(50):
        started = time.perf_counter()
        daemon.get("/api/search", q=f"idlecodeword{i:04d}", limit="1")
        floor.append(time.perf_counter() - started)
    daemon.stop()

    files, size = generate(root / "backlog", args.backlog_mb, seed=7, shared=args.shared)
    (root / "backlog" / "projects").rename(claude / "projects-backlog")
    for folder in (claude / "projects-backlog").iterdir():
        folder.rename(claude / "projects" / folder.name)
    daemon = Daemon(claude, data)
    before = daemon.get("/healthz")
    busy = append_and_time(daemon, live, args.appends, "busy")
    after = daemon.get("/healthz")
    daemon.stop()

    print(f"backlog: {files} generated transcripts, {size / 2**20:.0f} MB")
    report("baseline: search round trip", floor)
    report("append -> searchable, idle", idle)
    report("append -> searchable, backfilling", busy)
    print(
        f"  backlog while measuring: {before['files_pending']} files pending at the start, "
        f"{after['files_pending']} at the end, {after['chunks_indexed']} chunks indexed meanwhile"
    )


if __name__ == "__main__":
    main()
