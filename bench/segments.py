"""The store alone at scale: fill time, peak memory, how long the engine
holds the GIL, opening time and engine query time, for a segment policy.

    python bench/segments.py --points 100000                        # merging (the default bound)
    python bench/segments.py --points 100000 --merge-points 0       # sealing alone
    python bench/segments.py --folder DIR --reuse                   # measure a store filled before

The fill is the scale benchmark's stand-in (real chunk payloads, random unit
vectors, written through ``EdgeStore.load``); queries are the labeled
queries' words with random unit vectors (the engine's cost does not depend
on what a vector means). No daemon, no model: the engine alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import qdrant_edge as qe

sys.path.remove(str(Path(__file__).resolve().parent))  # bench/secrets.py would hide the standard library's
sys.path.append(str(Path(__file__).resolve().parent))

from scale import percentile, pool, standin_payload, unit  # noqa: E402

from selfreflect.embed import OnnxEmbedder  # noqa: E402
from selfreflect.lexical import lexical_text  # noqa: E402
from selfreflect.store import FusionPlan, RawPoint, SearchFilter  # noqa: E402
from selfreflect.store.edge import EdgeStore, sparse  # noqa: E402

from corpus import QUERY_SETS  # noqa: E402
from proc import memory_mb  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--merge-points", type=int, default=8192, help="0: seal without merging")
    parser.add_argument("--folder", type=Path, help="the store's data folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="measure the store in --folder as it is")
    args = parser.parse_args()
    embedder = OnnxEmbedder()
    root = args.folder or Path(tempfile.mkdtemp(prefix="selfreflect-segments-"))
    store_dir = root / "store"
    longest = [0.0]

    def ticker() -> None:  # a Python thread: how long the engine kept it from running
        last = time.perf_counter()
        while True:
            time.sleep(0.001)
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last)
            last = now

    threading.Thread(target=ticker, daemon=True).start()
    if not args.reuse:
        shutil.rmtree(store_dir, ignore_errors=True)
        with tempfile.TemporaryDirectory() as scratch:
            payloads = pool(Path(scratch), embedder)
        rng, bm25, base = np.random.default_rng(args.points), qe.Bm25(qe.Bm25Config()), time.time() - 365 * 86400
        started, longest[0] = time.perf_counter(), 0.0
        with EdgeStore(store_dir, embedder.name, embedder.dim, merge_points=args.merge_points) as store:
            batch = store.segment_points
            for first in range(0, args.points, batch):
                count = min(batch, args.points - first)
                vectors = unit(rng, count, embedder.dim)
                points = []
                for offset in range(count):
                    i = first + offset
                    payload = standin_payload(payloads, i, args.points, base)
                    words = sparse(bm25.embed_document(lexical_text(payload["text"])))
                    points.append(
                        RawPoint(
                            str(uuid.uuid5(uuid.NAMESPACE_OID, f"point-{i}")), vectors[offset].tolist(), words, payload
                        )
                    )
                store.load(points)
        took = time.perf_counter() - started
        print(
            f"fill {args.points:,} points: {took:.0f} s, {args.points / took:.0f}/s; the engine held the GIL "
            f"for up to {longest[0]:.2f} s; {memory_mb()}; load average {os.getloadavg()[0]:.1f}"
        )
    started = time.perf_counter()
    with EdgeStore(store_dir, embedder.name, embedder.dim, merge_points=args.merge_points) as store:
        info = store._shard.info()
        print(
            f"opens in {time.perf_counter() - started:.2f} s: "
            f"{info.segments_count} segments, {info.points_count:,} points"
        )
        queries = [json.loads(line)["query"] for path in QUERY_SETS for line in path.open()]
        vectors = unit(np.random.default_rng(1), len(queries), embedder.dim)
        timings: dict[str, list[float]] = {"hybrid": [], "dense": [], "bm25": [], "hybrid, one project": []}
        one = SearchFilter(projects=("/home/dev/project-3",), include_sidechains=False)
        runs = {
            "hybrid": lambda q, v: store.hybrid(v, lexical_text(q), SearchFilter(), 20, FusionPlan()),
            "dense": lambda q, v: store.dense(v, SearchFilter(), 40),
            "bm25": lambda q, v: store.lexical(lexical_text(q), SearchFilter(), 40),
            "hybrid, one project": lambda q, v: store.hybrid(v, lexical_text(q), one, 20, FusionPlan()),
        }
        for query, vector in zip(queries[:5], vectors, strict=False):
            runs["hybrid"](query, vector.tolist())  # warm
        for query, vector in zip(queries, vectors, strict=True):
            for name, run in runs.items():
                began = time.perf_counter()
                run(query, vector.tolist())
                timings[name].append((time.perf_counter() - began) * 1000)
        print(
            "engine p50 / p95 ms: "
            + "; ".join(f"{n} {percentile(t, 0.5):.1f} / {percentile(t, 0.95):.1f}" for n, t in timings.items())
            + f"; {memory_mb()}; load average {os.getloadavg()[0]:.1f}"
        )
    size = sum(f.stat().st_blocks * 512 for f in store_dir.rglob("*") if f.is_file())
    print(f"disk {size / 2**20:.0f} MB")
    if not args.folder:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
