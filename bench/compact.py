"""A compaction through the running daemon, on a big store: what searches
get meanwhile, what it costs, and what it buys.

    python bench/compact.py --store FOLDER

FOLDER is a store folder (``meta.json`` and ``shard/``), for example the
one ``bench/scale.py --work DIR`` keeps in ``DIR/filled-250000`` (62
segments, as the daemon's own merges leave 250k chunks). It is copied
(holes kept) into a fresh data dir, and a daemon started on it. Then:

- the baseline: ``/api/search`` over the labeled queries, one after the
  other, on the store as it is (each query searched once before, so both
  sides read pages already in the page cache);
- ``POST /api/compact``, and while the daemon compacts: the same searches
  in a loop (wall time, errors, and how long the longest took); a line
  appended to a live transcript every second or so, each timed until a
  search finds it (the baseline: the same before the compaction); the
  daemon's resident memory and the compacting process's, read every
  0.1 s; and how long each phase took;
- the same searches on the compacted store, and a restart of the daemon
  until ``/healthz`` answers, against its first start on the store as it was.

The daemons run with ``SELFREFLECT_AUTO_COMPACT=false``, so that the store
is measured as it was before it is compacted (the daemon would start the
same compaction on its own).

Linux (memory from ``/proc``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.remove(str(Path(__file__).resolve().parent))  # bench/secrets.py would hide the standard library's
sys.path.append(str(Path(__file__).resolve().parent))

import psutil  # noqa: E402
from freshness import code_line  # noqa: E402

from corpus import QUERY_SETS  # noqa: E402
from proc import memory_mb  # noqa: E402
from served import percentile, start  # noqa: E402


def search(url: str, query: str) -> tuple[float, int]:
    """Wall ms of one ``/api/search`` and its HTTP status."""
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(f"{url}/api/search?{urllib.parse.urlencode({'q': query})}", timeout=120) as r:
            r.read()
            status = r.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return (time.perf_counter() - started) * 1000, status


def fresh(url: str, live: Path, n: int) -> float:
    """Append a user line with a word of its own to ``live``: seconds until a search finds it."""
    word, line = code_line("compaction", n)
    started = time.perf_counter()
    with open(live, "ab") as handle:
        handle.write(line)
    query = urllib.parse.urlencode({"q": word, "limit": 10})
    while time.perf_counter() - started < 300:
        with urllib.request.urlopen(f"{url}/api/search?{query}", timeout=120) as answer:
            results = json.load(answer)["results"]
        if any(word in result["text"] for result in results):
            return time.perf_counter() - started
        time.sleep(0.05)  # a search at 250k holds Python's lock for ~20 ms: polling harder slows the importer
    print(f"  not found in 300 s: {word}; {[r['text'][:60] for r in results]}; {health(url)}", flush=True)
    return float("inf")


def spread(seconds: list[float]) -> str:
    lost = sum(s == float("inf") for s in seconds)
    return (
        f"{len(seconds)} lines ({lost} not found in 300 s), p50 {percentile(seconds, 0.5) * 1000:.0f} ms, "
        f"p95 {percentile(seconds, 0.95) * 1000:.0f} ms, longest {max(seconds, default=0) * 1000:.0f} ms"
    )


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/healthz", timeout=120) as answer:
        return dict(json.load(answer))


def sequential(url: str, queries: list[str]) -> str:
    walls = [search(url, q)[0] for q in queries]
    return f"p50 {percentile(walls, 0.5):.1f} ms, p95 {percentile(walls, 0.95):.1f} ms ({len(walls)} queries)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="a store folder (meta.json, shard/)")
    args = parser.parse_args()
    if not (args.store / "meta.json").is_file():
        raise SystemExit(f"{args.store} is not a store folder (no meta.json)")
    queries = [json.loads(line)["query"] for path in QUERY_SETS for line in path.open()]
    work = Path(tempfile.mkdtemp(prefix="selfreflect-compact-"))
    claude, data = work / "claude", work / "data"
    (claude / "projects" / "-live").mkdir(parents=True)
    live = claude / "projects" / "-live" / "live.jsonl"
    data.mkdir()
    subprocess.run(["cp", "-a", "--sparse=always", str(args.store), str(data / "store")], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "SELFREFLECT_CONFIG")}
    env.update(CLAUDE_CONFIG_DIR=str(claude), SELFREFLECT_HOME=str(data), XDG_CONFIG_HOME=str(work / "config"))
    env["SELFREFLECT_AUTO_COMPACT"] = "false"
    log = open(data / "serve.log", "ab")  # noqa: SIM115  (open for both daemons)
    daemon, _, _ = start(data, env, log)  # the first start replays what the engine's log holds
    daemon.terminate()
    daemon.wait(timeout=120)
    daemon, url, ready = start(data, env, log)
    try:
        for query in queries:  # each once: both sides then read pages the page cache holds
            search(url, query)
        print(f"load average {os.getloadavg()[0]:.1f}; {len(queries)} labeled queries")
        print(f"  daemon ready on the store as it was: {ready:.2f} s")
        print(f"  /api/search before: {sequential(url, queries)}")
        print(f"  a new line until found, before: {spread([fresh(url, live, n) for n in range(10)])}")

        walls: list[float] = []
        errors = 0
        phases: dict[str, float] = {}
        peaks = {"daemon": 0, "daemon anonymous": 0, "compacting process": 0}
        done = threading.Event()

        def searching() -> None:
            nonlocal errors
            i = 0
            while not done.is_set():
                wall, status = search(url, queries[i % len(queries)])
                i += 1
                walls.append(wall)
                errors += status != 200

        def sampling() -> None:
            proc = psutil.Process(daemon.pid)
            while not done.is_set():
                now = memory_mb(daemon.pid)
                peaks["daemon"] = max(peaks["daemon"], now.get("VmRSS", 0))
                peaks["daemon anonymous"] = max(peaks["daemon anonymous"], now.get("RssAnon", 0))
                for child in proc.children():
                    try:
                        rss = child.memory_info().rss >> 20
                    except psutil.Error:
                        continue
                    peaks["compacting process"] = max(peaks["compacting process"], rss)
                time.sleep(0.1)

        lines: list[float] = []

        def writing() -> None:
            n = 10
            while not done.is_set():
                lines.append(fresh(url, live, n))
                n += 1
                done.wait(1.0)

        threads = [threading.Thread(target=f) for f in (searching, sampling, writing)]
        request = urllib.request.Request(
            f"{url}/api/compact", data=b"{}", method="POST", headers={"Content-Type": "application/json"}
        )
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as answer:
            job = json.load(answer)["compaction"]
        for thread in threads:
            thread.start()
        phase, since = job["phase"], started
        while job["phase"] in ("copying", "compacting", "swapping"):
            time.sleep(0.1)
            job = health(url)["compaction"]
            if job["phase"] != phase:
                now = time.perf_counter()
                phases[phase] = now - since
                phase, since = job["phase"], now
        took = time.perf_counter() - started
        done.set()
        for thread in threads:
            thread.join()
        if job["phase"] != "done":
            raise SystemExit(f"the compaction {job['phase']}: {job['error']}")
        print(
            f"  compaction through the daemon: {job['segments_before']} segments into {job['segments']} in "
            f"{took:.1f} s ({', '.join(f'{name} {seconds:.1f} s' for name, seconds in phases.items())}); "
            f"{job['caught_up']} chunks written meanwhile, then into the copy"
        )
        print(f"  a new line until found, meanwhile: {spread(lines)}")
        print(
            f"  searches meanwhile: {len(walls)}, {errors} errors, p50 {percentile(walls, 0.5):.1f} ms, "
            f"p95 {percentile(walls, 0.95):.1f} ms, longest {max(walls, default=0):.0f} ms"
        )
        print(
            f"  peak resident memory meanwhile: the daemon {peaks['daemon']} MB "
            f"({peaks['daemon anonymous']} anonymous), the compacting process {peaks['compacting process']} MB"
        )
        for query in queries:
            search(url, query)
        print(f"  /api/search after: {sequential(url, queries)}")
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
    daemon, url, ready = start(data, env, log)
    daemon.terminate()
    daemon.wait(timeout=120)
    log.close()
    print(f"  daemon ready on the compacted store: {ready:.2f} s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
