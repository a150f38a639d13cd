"""Retrieval quality on labeled queries over the real transcripts.

    python bench/retrieval.py [--queries bench/eval/queries-dev.jsonl] [--shared FOLDER]

Indexes the real transcripts of ``tests/corpus/real/`` with the real
pipeline (each file a transcript, keyed by its file name; ``--shared`` adds
those of ``FOLDER/corpus/real/`` that the repository may not carry), runs
every query through the search core the CLI uses, and reports Recall@1,
Recall@5 and MRR@10, overall and per kind; then the same with each query's
two alternative phrasings from ``bench/eval/alternatives.jsonl`` (written
from the query alone, as Claude would pass them to ``reflect_on_past``);
with the alternatives of ``alternatives-from-description.jsonl`` (written
from the query and the tool's description only: is the description
followed, and does it pay); and the search's latency with 0 to 3 alternatives. A hit is a result from the
query's ``file`` whose [line_start, line_end] contains one of its
``relevant_lines``. Queries about a transcript that is not in the corpus are
left out and counted; a query about a transcript of the corpus that the
index does not hold is counted as a miss (and said). Each table is given for
each query set and for both together ("overall"). Baselines in the same run, over the same corpus: the
anchor's dense-only recipe (text blocks only, "role: text" joined,
1600-character chunks with 300 overlap, MiniLM cut at 128 tokens, cosine)
and BM25 over those same chunks; and, for insight, our own chunks searched
dense-only and BM25-only.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from selfreflect.embed import OnnxEmbedder, embed_batched
from selfreflect.importer import Importer
from selfreflect.lexical import lexical_text
from selfreflect.search import WINDOWS, Decay, SearchQuery, search
from selfreflect.state import State
from selfreflect.store import FusionPlan, Hit, Record, SearchFilter
from selfreflect.store.edge import EdgeStore

from corpus import QUERY_SETS, corpus_files, corpus_settings, default_shared

Ranked = list[tuple[str, int, int]]  # (file name, line_start, line_end), best first
EVAL = Path(__file__).parent / "eval"


def anchor_chunks(path: Path) -> list[tuple[str, int, int]]:
    """The anchor's recipe: text blocks only, "role: text", 1600 chars, 300 overlap."""
    messages: list[tuple[int, str]] = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        message = record.get("message") if isinstance(record, dict) else None
        if not isinstance(message, dict) or record.get("type") not in ("user", "assistant"):
            continue
        content = message.get("content")
        texts = (
            [content]
            if isinstance(content, str)
            else [b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]
        )
        text = "\n".join(t for t in texts if t)
        if text:
            messages.append((number, f"{message.get('role', record['type'])}: {text}"))
    joined, starts = "", []  # (character offset where a message starts, its line)
    for number, text in messages:
        starts.append((len(joined), number))
        joined += text + "\n\n"
    chunks = []
    for begin in range(0, len(joined), 1600 - 300):
        piece = joined[begin : begin + 1600]
        if not piece.strip():
            continue
        # lines: the message the chunk starts inside, through the last one starting in it
        first = max(n for offset, n in starts if offset <= begin)
        last = max(n for offset, n in starts if offset < begin + len(piece))
        chunks.append((piece, first, last))
        if begin + 1600 >= len(joined):
            break
    return chunks


def once(run: Callable[[dict[str, Any]], Ranked]) -> Callable[[dict[str, Any]], Ranked]:
    """``run``, searching each labeled query once (by its id)."""
    seen: dict[str, Ranked] = {}
    return lambda q: seen[q["id"]] if q["id"] in seen else seen.setdefault(q["id"], run(q))


def evaluate(queries: list[dict[str, Any]], run: Callable[[dict[str, Any]], Ranked]) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, list[float]]] = {}
    for q in queries:
        ranked = run(q)[:10]
        rank = next(
            (
                i
                for i, (name, start, end) in enumerate(ranked, 1)
                if name == q["file"] and any(start <= line <= end for line in q["relevant_lines"])
            ),
            None,
        )
        for kind in ("all", q["kind"]):
            row = rows.setdefault(kind, {"r1": [], "r5": [], "mrr": []})
            row["r1"].append(1.0 if rank == 1 else 0.0)
            row["r5"].append(1.0 if rank is not None and rank <= 5 else 0.0)
            row["mrr"].append(1.0 / rank if rank else 0.0)
    return {kind: {k: sum(v) / len(v) for k, v in row.items()} for kind, row in rows.items()}


def latency(store: EdgeStore, embedder: OnnxEmbedder, queries: list[dict[str, Any]], extra: int) -> tuple[float, float]:
    """p50 and p95 in ms of ``search`` (limit 5, as MCP asks) with ``extra``
    alternatives: the written ones, and for a third, the two joined (timing only).
    Each search as the first of its kind: no snippet window kept from before."""
    took = []
    for q in queries:
        written = q["alternatives"]
        alternatives = (written + [" ".join(written)])[:extra]
        WINDOWS.clear()
        started = time.perf_counter()
        search(store, embedder, SearchQuery(q["query"], limit=5, alternatives=tuple(alternatives)))
        took.append((time.perf_counter() - started) * 1000)
    took.sort()
    return took[len(took) // 2], took[int(len(took) * 0.95)]


def names(hits: list[Hit]) -> Ranked:
    return [(Path(h.payload["transcript"]).name, h.payload["line_start"], h.payload["line_end"]) for h in hits]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=default_shared(), help="optional extra transcripts")
    parser.add_argument(
        "--queries",
        type=Path,
        action="append",
        help="a labeled query file (repeatable; default: every set in bench/eval/)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the shipped configurations and baselines only, no latency"
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    sources = corpus_files("real", args.shared)
    query_sets: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, list[str]] = {}
    left_out = 0
    written = {a["id"]: a["alternatives"] for a in map(json.loads, (EVAL / "alternatives.jsonl").open())}
    told = {a["id"]: a["alternatives"] for a in map(json.loads, (EVAL / "alternatives-from-description.jsonl").open())}
    for path in args.queries or QUERY_SETS:
        labeled = [
            {**q, "alternatives": written.get(q["id"], []), "told": told.get(q["id"], [])}
            for q in map(json.loads, path.open())
        ]
        query_sets[path.name] = [q for q in labeled if q["file"] in {p.name for p in sources}]
        left_out += len(labeled) - len(query_sets[path.name])
    started = time.perf_counter()
    embedder = OnnxEmbedder()
    embedder.load()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = corpus_settings(root, sources)
        folder = settings.projects_dir / "-corpus"
        anchor = OnnxEmbedder(max_tokens=128)
        anchor.load()
        with (
            EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store,
            EdgeStore(root / "anchor", anchor.name, anchor.dim).open() as baseline,
        ):
            Importer(settings, store, embedder, State.load(settings.state_file)).run()
            pieces = [(path.name, c) for path in sorted(folder.glob("*.jsonl")) for c in anchor_chunks(path)]
            vectors = embed_batched(anchor, [text for _, (text, _, _) in pieces])
            baseline.upsert(
                [
                    Record(
                        str(uuid.uuid4()),
                        v.tolist(),
                        text,
                        {"transcript": str(folder / name), "line_start": first, "line_end": last, "text": text},
                    )
                    for (name, (text, first, last)), v in zip(pieces, vectors, strict=True)
                ]
            )
            everything = SearchFilter()

            # a transcript of the corpus the index does not hold: its queries are misses, said below
            indexed = {Path(str(t)).name for t, _ in store.facet("transcript", everything, 10_000)}
            for name, queries in query_sets.items():
                skipped[name] = [q["file"] for q in queries if q["file"] not in indexed]
            # how several phrasings' lists were fused before (k 60, every list weight 1), and k 10 alone
            before = FusionPlan(phrasings_k=60, alternative_lexical_weight=1.0)
            k10 = FusionPlan(alternative_lexical_weight=1.0)

            def ours(
                q: dict[str, Any], alternatives: str = "", decay: Decay | None = None, plan: FusionPlan | None = None
            ) -> Ranked:
                also = tuple(q[alternatives]) if alternatives else ()
                query = SearchQuery(q["query"], limit=10, decay=decay, alternatives=also)
                return [
                    (Path(r.transcript).name, r.line_start, r.line_end)
                    for r in search(store, embedder, query, plan).results
                ]

            runs: dict[str, Callable[[dict[str, Any]], Ranked]] = {
                "hybrid (selfreflect search)": ours,
                "hybrid + 2 alternatives": lambda q: ours(q, "alternatives"),
                "  fused as before (k 60, BM25 1)": lambda q: ours(q, "alternatives", plan=before),
                "  k 10 alone": lambda q: ours(q, "alternatives", plan=k10),
                "hybrid + as told by the tool": lambda q: ours(q, "told"),
                "  told, fused as before": lambda q: ours(q, "told", plan=before),
                "  told, k 10 alone": lambda q: ours(q, "told", plan=k10),
                "hybrid + decay (30 d, weight 0.3)": lambda q: ours(q, decay=Decay()),
                "baseline: anchor dense-only": lambda q: names(
                    baseline.dense(anchor.embed([q["query"]])[0].tolist(), everything, 10)
                ),
                "baseline: BM25 on anchor chunks": lambda q: names(baseline.lexical(q["query"], everything, 10)),
                "ours, dense only": lambda q: names(
                    store.dense(embedder.embed([q["query"]])[0].tolist(), everything, 10)
                ),
                "ours, BM25 only": lambda q: names(store.lexical(lexical_text(q["query"]), everything, 10)),
            }
            if args.quick:  # the variants measured against the shipped fusion, and decay, left out
                runs = {label: run for label, run in runs.items() if not label.startswith(" ") and "decay" not in label}
            runs = {label: once(run) for label, run in runs.items()}  # the overall table reuses each set's
            query_sets["overall (both sets)"] = [q for queries in query_sets.values() for q in queries]
            results = {
                name: {label: evaluate(queries, run) for label, run in runs.items()}
                for name, queries in query_sets.items()
            }
            every = [q for q in query_sets["overall (both sets)"] if q["alternatives"]]
            timings = {} if args.quick else {extra: latency(store, embedder, every, extra) for extra in range(4)}
    kinds = ["all", "semantic", "keyword", "mixed"]
    total = len(query_sets["overall (both sets)"])
    print(f"{total} queries over {len(sources)} transcripts, {time.perf_counter() - started:.0f} s")
    if left_out:
        print(f"{left_out} queries left out: their transcript is not in the corpus (pass --shared to add it)")
    for name, files in skipped.items():
        if files:
            held = ", ".join(sorted(set(files)))
            print(f"{name}: {len(files)} queries count as misses: the index does not hold {held}")
    for name, tables in results.items():
        print(f"\n{name}: {len(query_sets[name])} queries")
        print(f"{'':34}" + "".join(f"{k:>24}" for k in kinds))
        print(f"{'':34}" + "".join(f"{'R@1  R@5  MRR@10':>24}" for _ in kinds))
        for label, table in tables.items():
            cells = "".join(
                f"{table[k]['r1']:>12.2f}{table[k]['r5']:>5.2f}{table[k]['mrr']:>7.2f}" if k in table else f"{'-':>24}"
                for k in kinds
            )
            print(f"{label:34}{cells}")
    if timings:
        print(f"\nsearch latency, limit 5, over {len(every)} queries (ms):")
    for extra, (p50, p95) in timings.items():
        print(f"  {extra} alternatives: p50 {p50:.1f}  p95 {p95:.1f}")


if __name__ == "__main__":
    main()
