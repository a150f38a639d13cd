"""Backfill benchmark: `import` of the whole test corpus against the bare
embedder on the same chunks, measured in the same run.

    python bench/import_corpus.py [--rounds 1] [--files N] [--shared FOLDER]

Prints the import's wall time and chunk rate, the bare embedder's rate on the
exact texts the import stored (same model, same batching), and their ratio
(the design's bar: the pipeline keeps >= 85 % of the bare embedder's rate).
``--files N`` imports only the N smallest real transcripts (and the edge
cases), for a quicker run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from selfreflect.embed import OnnxEmbedder, embed_batched
from selfreflect.importer import Importer
from selfreflect.settings import Settings
from selfreflect.state import State
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore

from corpus import corpus_files, default_shared, smallest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=default_shared(), help="optional extra transcripts")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--files", type=int, help="only the N smallest real transcripts (a quicker run)")
    args = parser.parse_args()
    embedder = OnnxEmbedder()
    embedder.load()
    embedder.embed(["warm up"])
    for round_no in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for kind in ("real", "edge-cases"):
                folder = root / "claude" / "projects" / f"-corpus-{kind}"
                folder.mkdir(parents=True)
                sources = smallest(args.files, kind, args.shared) if kind == "real" else corpus_files(kind, args.shared)
                for source in sources:
                    shutil.copyfile(source, folder / source.name)
            empty = root / "config.toml"
            empty.write_text("")
            settings = Settings.load(
                {"claude_dir": root / "claude", "data_dir": root / "data"}, env={}, config_file=empty
            )
            size = sum(p.stat().st_size for p in (root / "claude").rglob("*.jsonl"))
            with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
                started = time.perf_counter()
                summary = Importer(settings, store, embedder, State.load(settings.state_file)).run()
                import_s = time.perf_counter() - started
                texts = [p["text"] for p in store.scroll(SearchFilter(), 1_000_000)]
            started = time.perf_counter()
            for i in range(0, len(texts), settings.chunk_size):  # the import's batches
                embed_batched(embedder, texts[i : i + settings.chunk_size])
            bare_s = time.perf_counter() - started
            print(
                f"round {round_no}: {summary.files} files, {size / 1e6:.1f} MB, "
                f"{summary.lines} lines, {summary.chunks} chunks"
            )
            print(f"  import          {import_s:7.1f} s   {summary.chunks / import_s:6.1f} chunks/s")
            print(f"  bare embedder   {bare_s:7.1f} s   {len(texts) / bare_s:6.1f} chunks/s  (same {len(texts)} texts)")
            print(f"  import / bare   {bare_s / import_s:7.1%}   (bar: >= 85 %)")


if __name__ == "__main__":
    main()
