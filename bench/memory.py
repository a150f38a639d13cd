"""Daemon memory while backfilling a large generated corpus.

    python bench/generate_corpus.py /tmp/big --mb 520
    python bench/memory.py /tmp/big [--max-memory-mb 200]

(Files written in the last 5 minutes are live sessions: the archive takes
them in 1 MB steps. ``find /tmp/big -name '*.jsonl' -exec touch -d '-1 hour' {} +``
first makes them quiet, archived whole as they are read.)

Starts the real daemon (model, store, HTTP: all in one process) on a fresh
data dir, samples its resident memory every half second until the backfill
is done, and prints the peak, the steady level (median of the second half)
and the median level over each quarter of the chunks, next to a baseline
measured in the same run: a bare process that only loads the model and
embeds, in calls like the daemon's.
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
import urllib.request
from pathlib import Path

from proc import memory_mb
from served import address

BARE = """
from selfreflect.embed import OnnxEmbedder, embed_batched
m = OnnxEmbedder(); m.load()
for _ in range(20):
    embed_batched(m, ["word " * 250] * 4)  # in model calls as the daemon makes them
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("claude_dir", type=Path)
    parser.add_argument("--max-memory-mb", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=7200)
    args = parser.parse_args()
    corpus_bytes = sum(p.stat().st_size for p in args.claude_dir.rglob("*.jsonl"))
    bare = int(subprocess.run([sys.executable, "-c", BARE], capture_output=True, text=True, check=True).stdout) // 1024

    data = Path(tempfile.mkdtemp(prefix="selfreflect-bench-"))
    try:
        backfill(args, data, corpus_bytes, bare)
    finally:
        shutil.rmtree(data, ignore_errors=True)  # the store of a 520 MB corpus is 600 MB


def backfill(args: argparse.Namespace, data: Path, corpus_bytes: int, bare: int) -> None:
    """The daemon on ``data`` reads the corpus; its memory is sampled and reported."""
    corpus_mb = corpus_bytes / 2**20
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(args.claude_dir), "SELFREFLECT_HOME": str(data)}
    env["MAX_MEMORY_MB"] = str(args.max_memory_mb)
    log = open(data / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfreflect", "serve", "--port", "0"], env=env, stdout=log, stderr=log
    )
    url = address(data, proc)
    started = time.monotonic()
    samples: list[tuple[float, int, int, int]] = []  # seconds, chunks, rss MB, anonymous MB
    try:
        while time.monotonic() - started < args.timeout:
            health = json.load(urllib.request.urlopen(url + "/healthz"))
            now = memory_mb(proc.pid)
            samples.append((time.monotonic() - started, health["chunks_indexed"], now["VmRSS"], now["RssAnon"]))
            if len(samples) % 120 == 0:  # a progress line a minute
                print(
                    f"  {samples[-1][0]:.0f} s: {health['chunks_indexed']} chunks, {now}", file=sys.stderr, flush=True
                )
            if health["files_pending"] == 0 and health["chunks_indexed"] > 0:
                break
            time.sleep(0.5)
        final = memory_mb(proc.pid)
        metrics = urllib.request.urlopen(url + "/metrics").read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    seconds, chunks = samples[-1][0], samples[-1][1]
    second_half = [rss for t, _, rss, _ in samples if t >= seconds / 2]
    print(f"corpus: {corpus_mb:.0f} MB; backfill: {chunks} chunks in {seconds:.0f} s ({chunks / seconds:.1f} chunks/s)")
    print(f"baseline, bare model process (load + embed):  peak {bare} MB")
    print(
        f"daemon, cap {args.max_memory_mb} MB:  peak {final['VmHWM']} MB, steady (median, 2nd half) "
        f"{statistics.median(second_half):.0f} MB, end {final['VmRSS']} MB "
        f"(anon {final['RssAnon']} MB, file-backed {final['RssFile']} MB)"
    )
    for quarter in (1, 2, 3, 4):  # samples by the share of the chunks done
        low, high = chunks * (quarter - 1) / 4, chunks * quarter / 4
        part = [(rss, anon) for _, done, rss, anon in samples if low < done <= high] or [samples[-1][2:]]
        print(
            f"  quarter {quarter} (to {high:.0f} chunks): median {statistics.median(r for r, _ in part):.0f} MB "
            f"(anon {statistics.median(a for _, a in part):.0f} MB), max of the samples {max(r for r, _ in part)} MB"
        )
    packed = sum(p.stat().st_size for p in (data / "archive").rglob("*.zst"))
    if packed:
        print(
            f"archive: {packed / 2**20:.1f} MB for {corpus_mb:.0f} MB of transcripts "
            f"({corpus_bytes / packed:.1f}x smaller)"
        )
    pauses = [line for line in metrics.splitlines() if line.startswith("selfreflect_memory_pauses_total")]
    oversized = [line for line in metrics.splitlines() if line.startswith("selfreflect_oversized_lines_total")]
    print("  " + "; ".join(pauses + oversized))


if __name__ == "__main__":
    main()
