"""Snippets placed by meaning: window vectors kept at import against windows
embedded at search time.

    python bench/snippets.py [--shared FOLDER] [--rounds 3] [--queries N] [--files N]

Indexes the real transcripts of ``tests/corpus/real/`` with the real
pipeline (as ``bench/retrieval.py`` does; ``--files N``: the N smallest), which keeps each chunk's window
vectors in its payload (pooled from the model call that embeds the chunk).
The baseline, in the same run: a copy of the same points without them (what
a store written by the version before holds), whose snippets search places
by embedding the windows, as before.

Over every labeled query of ``bench/eval/queries-*.jsonl`` (the query
alone, limit 5), for each shown result whose snippet is placed by meaning
(no window holds half of the query's words): the window the code before
picks (each window embedded alone; here with no budget), and the window
picked from the pooled vectors as float32, as int8 (384 bytes a window), as
sign bits (48 bytes) and as what ships (sign bits of each vector less the
chunk's mean, and a scale: about 50 bytes): how often it is the same window,
and the cosine to the query (windows embedded alone) of the window picked,
against the best window's. Then the payload bytes each adds per chunk, and
the time of ``search()`` per query on both stores, the queries interleaved,
each search as the first of its kind (no window kept from an earlier one).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from selfreflect.embed import OnnxEmbedder
from selfreflect.importer import Importer
from selfreflect.search import (
    MEANING_TOKENS,
    SNIPPET_CHARS,
    WINDOWS,
    SearchQuery,
    _terms,
    _word_window,
    search,
    snippet,
)
from selfreflect.state import State
from selfreflect.store import RawPoint
from selfreflect.store.edge import EdgeStore
from selfreflect.windows import FIELD, Windows, flatten, pack, tiles, unpack

from corpus import QUERY_SETS, corpus_settings, default_shared, smallest


def int8(windows: Windows) -> np.ndarray:
    """Each unit vector as int8 (scaled by its largest component), read back as a unit vector."""
    scale = 127 / np.clip(np.abs(windows.vectors).max(axis=1, keepdims=True), 1e-12, None)
    quantised = np.round(windows.vectors * scale).astype(np.int8).astype(np.float32)
    return quantised / np.clip(np.linalg.norm(quantised, axis=1, keepdims=True), 1e-12, None)


def signs(windows: Windows) -> np.ndarray:
    """Each unit vector's signs alone (1 bit a dimension), read back as a unit vector."""
    return np.where(windows.vectors > 0, 1.0, -1.0).astype(np.float32) / np.sqrt(windows.vectors.shape[1])


def shipped(windows: Windows) -> np.ndarray:
    """What search reads back from the payload (:func:`pack`, then :func:`unpack`)."""
    back = unpack(orjson.loads(orjson.dumps(pack(windows))), windows.vectors.shape[1])
    assert back is not None
    return back.vectors


ENCODINGS: dict[str, Callable[[Windows], np.ndarray]] = {
    "float32": lambda w: w.vectors,
    "int8": int8,
    "signs": signs,
    "centred signs + scale": shipped,
}


def sizes(value: dict[str, Any]) -> dict[str, int]:
    """JSON bytes of the payload value in each encoding (the starts are the same in all)."""
    count, dim = len(value["starts"]), value["dim"]
    plain = {"starts": value["starts"], "dim": dim}
    return {
        "int8": len(orjson.dumps({**plain, "int8": base64.b64encode(bytes(count * dim)).decode()})),
        "signs": len(orjson.dumps({**plain, "signs": value["signs"]})),
        "centred signs + scale": len(orjson.dumps(value)),
    }


def pick(own: list[tuple[int, str]], vectors: np.ndarray, query: np.ndarray, terms: set[str]) -> int:
    """The index of the window search shows: the best vector @ query + 0.3 * word coverage."""
    scores = []
    for (_, tile), vector in zip(own, vectors, strict=True):
        lowered = tile.lower()
        coverage = sum(1 for t in terms if t in lowered) / len(terms) if terms else 0.0
        scores.append(float(vector @ query) + 0.3 * coverage)
    return int(np.argmax(scores))


def by_meaning(text: str, query: str) -> bool:
    """Search places this text's snippet by meaning (where the budget allows)."""
    flat, terms = flatten(text), _terms(query)
    found = _word_window(flat, terms)[1]
    return len(flat) > SNIPPET_CHARS and not found * 2 >= len(terms) > 0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=default_shared(), help="optional extra transcripts")
    parser.add_argument("--rounds", type=int, default=3, help="timed searches per query and store")
    parser.add_argument("--queries", type=int, help="only the first N labeled queries (default: all)")
    parser.add_argument("--files", type=int, help="only the N smallest real transcripts (a quicker run)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    queries = list(dict.fromkeys(q["query"] for path in QUERY_SETS for q in map(json.loads, path.open())))
    queries = queries[: args.queries] if args.queries else queries
    sources = smallest(args.files, "real", args.shared)
    embedder = OnnxEmbedder()
    embedder.load()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = corpus_settings(root, sources)
        with (
            EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store,
            EdgeStore(root / "before", embedder.name, embedder.dim).open() as before,
        ):
            Importer(settings, store, embedder, State.load(settings.state_file)).run()
            imported = time.perf_counter() - started
            points, _ = store.dump(None, 1_000_000)
            without = [{k: v for k, v in p.payload.items() if k != FIELD} for p in points]
            before.load([RawPoint(p.id, p.dense, p.sparse, w) for p, w in zip(points, without, strict=True)])
            kept = [p.payload[FIELD] for p in points if FIELD in p.payload]
            longer = sum(1 for p in points if len(flatten(str(p.payload.get("text", "")))) > SNIPPET_CHARS)
            payload = statistics.mean(len(orjson.dumps(p.payload)) for p in points)

            # which window each way picks, for every shown result placed by meaning
            same = dict.fromkeys(ENCODINGS, 0)
            picked: dict[str, list[float]] = {"before, no budget": [], **{k: [] for k in ENCODINGS}}
            missed: dict[str, list[tuple[float, float]]] = {k: [] for k in ENCODINGS}  # (its cosine, the best's)
            best: list[float] = []
            words: list[float] = []
            seen: dict[str, list[float]] = {"before": [], "after": []}  # the snippet search shows, embedded
            shown = placed = in_budget = same_shown = unpooled = 0
            for query in queries:
                vector = embedder.embed_queries([query])[0]
                WINDOWS.clear()
                old = search(before, embedder, SearchQuery(query, limit=5)).results
                new = search(store, embedder, SearchQuery(query, limit=5)).results
                shown += len(old)
                budget = MEANING_TOKENS
                for result, now in zip(old, new, strict=True):
                    if not by_meaning(result.text, query):
                        continue
                    placed += 1
                    own, terms = tiles(flatten(result.text)), _terms(query)
                    cost = sum(embedder.count_tokens([t for _, t in own]))
                    if 0 < budget and cost <= budget:  # the code before placed it by meaning too
                        budget -= cost
                        in_budget += 1
                        same_shown += now.snippet == result.snippet
                    alone = embedder.embed([t for _, t in own])  # as the code before embeds them
                    cosines = alone @ vector
                    current = pick(own, alone, vector, terms)
                    best.append(float(cosines.max()))
                    picked["before, no budget"].append(float(cosines[current]))
                    for name, result_shown in (("before", result), ("after", now)):
                        seen[name].append(float(embedder.embed([result_shown.snippet.strip("…")])[0] @ vector))
                    words.append(float(embedder.embed([snippet(result.text, query).strip("…")])[0] @ vector))
                    _, (windows,) = embedder.embed_windows([result.text])
                    if not windows.starts:  # none pooled: search embeds the windows alone, as before
                        unpooled += 1
                        windows = Windows([s for s, _ in own], alone)
                    for name, encode in ENCODINGS.items():
                        chosen = pick(own, encode(windows), vector, terms)
                        same[name] += chosen == current
                        picked[name].append(float(cosines[chosen]))
                        if chosen != current:
                            missed[name].append((float(cosines[chosen]), float(cosines.max())))
            # time: each query on both stores, interleaved
            took: dict[str, list[float]] = {"before (windows embedded)": [], "after (windows stored)": []}
            load_at_start = os.getloadavg()[0]
            for _ in range(args.rounds):
                for query in queries:
                    for name, where in zip(took, (before, store), strict=True):
                        WINDOWS.clear()
                        began = time.perf_counter()
                        search(where, embedder, SearchQuery(query, limit=5))
                        took[name].append((time.perf_counter() - began) * 1000)
            load_at_end = os.getloadavg()[0]
    print(f"{len(queries)} queries over {len(sources)} transcripts, {len(points)} chunks, imported in {imported:.0f} s")
    print(f"\nshown results (limit 5): {shown}; snippet placed by meaning: {placed}")
    print(f"  the code before placed {in_budget} of them by meaning (its budget), the rest by words")
    print(f"  of those {in_budget}, the same snippet shown now (search() on both stores): {same_shown}")
    print(f"  texts without pooled windows (embedded alone, as before): {unpooled}")
    print("\nthe window picked from the pooled vectors vs from the windows embedded alone (the code before):")
    for name, count in same.items():
        tail = ""
        if missed[name]:
            mine, top = (statistics.mean(c) for c in zip(*missed[name], strict=True))
            tail = f"; where not, its cosine {mine:.3f}, the best window's {top:.3f} (means)"
        print(f"  {name:22} same window {count:3} of {placed} ({count / max(placed, 1):.0%}){tail}")
    print("mean cosine to the query (windows embedded alone) of the window shown, over those results:")
    print(f"  {'the best window':26} {statistics.mean(best):.3f}")
    for name, cosines in picked.items():
        print(f"  {name:26} {statistics.mean(cosines):.3f}")
    print(f"  {'by words':26} {statistics.mean(words):.3f}")
    print("mean cosine to the query of the snippet search() shows (embedded as shown), over those results:")
    print(f"  before (its budget) {statistics.mean(seen['before']):.3f}, after {statistics.mean(seen['after']):.3f}")
    print(f"\nchunks with window vectors: {len(kept)} of {len(points)} ({longer} longer than one window)")
    each = statistics.mean(len(v["starts"]) for v in kept)
    print(f"  {each:.1f} windows each; payload per chunk {payload:.0f} bytes")
    print("  bytes the field adds to a chunk that has it, and over every chunk:")
    for name in ("int8", "signs", "centred signs + scale"):
        each = statistics.mean(sizes(v)[name] for v in kept)
        print(f"    {name:22} {each:5.0f}  {each * len(kept) / len(points):5.0f}")
    print(f"\nsearch() time, limit 5, {args.rounds} x {len(queries)} queries on each store, interleaved (ms)")
    print(f"load average {load_at_start:.1f} at the start, {load_at_end:.1f} at the end")
    for name, values in took.items():
        print(f"  {name:28} median {statistics.median(values):5.1f}  p95 {percentile(values, 0.95):5.1f}")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
