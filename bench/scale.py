"""Scale: the daemon on stores of 100k to 1M chunks: search latency, memory,
start-up, disk, concurrent load.

    python bench/scale.py --sizes 100000 250000 [1000000] [--clients 20] [--seconds 15]

**The fill is a stand-in, clearly labelled.** Embedding 250k chunks with the
bundled model takes hours (about 30 chunks a second on 2 cores), and the
engine's cost does not depend on what the vectors mean. So the store is
filled with real chunk texts and payloads (the real pipeline run over the
real transcripts; each text joined with the head of another, so texts stay
distinct), copied into N points under new
ids, sessions, projects and timestamps, with unit vectors from a seeded
random generator in place of the model's (the dense vector, and the vectors
of the snippet windows the payload carries, packed as the importer packs
them, so payloads are of their real size). Everything after the fill is real:
the daemon (`selfreflect serve`), the bundled model embedding every query,
HTTP and MCP clients. Baselines in the same run: a bare Python start, the
same measures at each size.

Per size it reports: the fill; the daemon's start-up until it answers, and
its first search and first status after a second with nothing to do;
`/api/search` latency (wall, sequential, the labeled queries) and its split
(the model, the engine, the rest: one search timed from the inside) on the same store;
`selfreflect search` and `status` through the daemon against a bare Python
start; searches after a second with nothing to do (as Claude's come), against
this process's model embedding after the same pause; `status` (HTTP and the
CLI) while the daemon writes, against the same idle; 20 clients at once on
`/api/search` and on `/mcp`; the same load while the daemon backfills the
real transcripts (embedding them for real); resident memory (now and peak);
bytes on disk per chunk. All of it twice: on the store as filled, merged by the
daemon's own policy (what the daemon's backfill leaves), then after
`selfreflect compact` (what `import` leaves), with the compaction's time
and memory (`--compacted-only`: the second alone; `--as-filled-only`: the
first alone, to compare merge bounds set with ``SELFREFLECT_MERGE_POINTS``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

sys.path.remove(str(Path(__file__).resolve().parent))  # bench/secrets.py would hide the standard library's
sys.path.append(str(Path(__file__).resolve().parent))

from selfreflect.embed import OnnxEmbedder  # noqa: E402
from selfreflect.importer import Importer  # noqa: E402
from selfreflect.lexical import lexical_text  # noqa: E402
from selfreflect.search import SearchQuery, search  # noqa: E402
from selfreflect.settings import Settings  # noqa: E402
from selfreflect.state import State  # noqa: E402
from selfreflect.store import FusionPlan, RawPoint, SearchFilter  # noqa: E402
from selfreflect.store.edge import EdgeStore, sparse  # noqa: E402
from selfreflect.windows import FIELD, Windows, flatten, pack, tiles  # noqa: E402

from corpus import QUERY_SETS, default_shared, smallest  # noqa: E402
from proc import memory_mb, watch  # noqa: E402
from served import SELFREFLECT, percentile, start  # noqa: E402

PROJECTS = 40
PAUSE = 1.0  # seconds with nothing to do before each of the searches after a pause


def pool(root: Path, embedder: OnnxEmbedder) -> list[dict[str, Any]]:
    """Real chunk payloads: the pipeline over the real transcripts (texts as
    the importer makes them)."""
    claude = root / "pool" / "claude"
    copy_corpus(claude / "projects" / "-pool")
    (root / "pool" / "config.toml").write_text("")
    settings = Settings.load(
        {"claude_dir": claude, "data_dir": root / "pool" / "data"}, env={}, config_file=root / "pool" / "config.toml"
    )
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        Importer(settings, store, _Standin(embedder), State.load(settings.state_file)).run()
        return store.scroll(SearchFilter(), 10_000_000)


class _Standin:
    """The bundled model's tokenizer (so chunks are cut as for real), and
    seeded random unit vectors in place of its embeddings."""

    def __init__(self, model: OnnxEmbedder) -> None:
        self.model, self.name, self.dim, self.max_tokens = model, model.name, model.dim, model.max_tokens
        self.batch_tokens = getattr(model, "batch_tokens", 256)
        self.rng = np.random.default_rng(0)

    def load(self) -> None:
        self.model.load()

    def unload(self) -> None:
        """The model stays: the fill runs in the benchmark's own process."""

    def count_tokens(self, texts: Any) -> list[int]:
        return self.model.count_tokens(texts)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.model.token_spans(text)

    def embed(self, texts: Any) -> np.ndarray:
        return unit(self.rng, len(texts), self.dim)

    def embed_queries(self, texts: Any) -> np.ndarray:
        return self.embed(texts)


def copy_corpus(folder: Path, files: int | None = None) -> None:
    """The real transcripts (the ``files`` smallest) copied into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in smallest(files, "real", default_shared()):
        shutil.copyfile(source, folder / source.name)


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fill(data: Path, size: int, payloads: list[dict[str, Any]], embedder: OnnxEmbedder) -> float:
    """``size`` points copied from ``payloads`` (new ids, sessions, projects,
    times) with stand-in vectors; returns the seconds it took.

    The points go through the product's own store (:class:`EdgeStore`, its
    write-ahead log, compactions and, with ``SELFREFLECT_MERGE_POINTS`` set,
    merges, as the daemon configures it):
    written with :meth:`EdgeStore.load`, the BM25 vector computed here as
    ``upsert`` would, one segment's worth of points a call, the most the
    importer ever hands the store between two compactions. Only the model is
    left out."""
    rng = np.random.default_rng(size)
    bm25 = qe.Bm25(qe.Bm25Config())  # the store's own BM25 (EdgeStore.upsert)
    started = time.perf_counter()
    base = time.time() - 365 * 86400
    with EdgeStore(data / "store", embedder.name, embedder.dim, merge_points=merge_points()).open() as store:
        batch = store.segment_points
        for first in range(0, size, batch):
            count = min(batch, size - first)
            vectors = unit(rng, count, embedder.dim)
            points = []
            for offset in range(count):
                i = first + offset
                payload = standin_payload(payloads, i, size, base, embedder.dim)
                point = str(uuid.uuid5(uuid.NAMESPACE_OID, f"point-{i}"))
                words = sparse(bm25.embed_document(lexical_text(payload["text"])))
                points.append(RawPoint(point, vectors[offset].tolist(), words, payload))
            store.load(points)
            if first // batch % 50 == 49:
                print(f"  filled {first + count:,} of {size:,}, {time.perf_counter() - started:.0f} s", flush=True)
    return time.perf_counter() - started


def standin_payload(payloads: list[dict[str, Any]], i: int, size: int, base: float, dim: int = 384) -> dict[str, Any]:
    """Point ``i``'s payload: a real chunk's, in its own session (60 chunks
    each), one of ``PROJECTS`` projects, a time in the year before now, with
    stand-in vectors of its snippet windows (seeded random unit vectors, as
    the dense vectors are, packed as the importer packs the model's)."""
    source = payloads[i % len(payloads)]
    # a chunk and the head of another: distinct texts (copies would collapse into one
    # result) with the corpus's own words
    other = str(payloads[(i * 7919 + i // len(payloads)) % len(payloads)]["text"])[:300]
    session = str(uuid.uuid5(uuid.NAMESPACE_OID, f"session-{i // 60}"))
    project = f"/home/dev/project-{(i // 60) % PROJECTS}"
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + i * 365 * 86400 / size))
    text = f"{source['text']} {other}"
    starts = [start for start, _ in tiles(flatten(text))]
    windows = Windows(starts, unit(np.random.default_rng(i), len(starts), dim))
    return {
        **{k: v for k, v in source.items() if k != "id"},
        "project": Path(project).name,
        "project_path": project,
        "session_id": session,
        "transcript": f"/bench/{session}.jsonl",
        "exchange": f"{session}-{i // 3}",
        "timestamp": moment,
        "text": text,
        FIELD: pack(windows),
    }


class Daemon:
    def __init__(self, claude: Path, data: Path) -> None:
        self.env = {**os.environ, "CLAUDE_CONFIG_DIR": str(claude), "SELFREFLECT_HOME": str(data)}
        self.env["SELFREFLECT_AUTO_COMPACT"] = "false"  # each state measured as it is (compacted: `compact`)
        self.data = data
        self.log = open(data / "serve.log", "ab")
        self.proc, self.url, self.ready_seconds = start(data, self.env, self.log)

    def search(self, query: str) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        body = urllib.request.urlopen(
            self.url + "/api/search?" + urllib.parse.urlencode({"q": query, "limit": 5}), timeout=60
        )
        answer = json.loads(body.read())
        return (time.perf_counter() - started) * 1000, answer

    def timed(self, path: str) -> float:
        """Wall ms of one GET of ``path``."""
        started = time.perf_counter()
        urllib.request.urlopen(self.url + path, timeout=60).read()
        return (time.perf_counter() - started) * 1000

    def memory(self) -> dict[str, int]:
        return memory_mb(self.proc.pid)

    def health(self) -> dict[str, Any]:
        try:
            body = urllib.request.urlopen(self.url + "/healthz", timeout=60).read()
        except urllib.error.HTTPError as exc:  # 503 while it reports a problem: the same fields
            body = exc.read()
        return dict(json.loads(body))

    def wait(self, done: Any, timeout: float) -> float:
        """Seconds until ``done(health)`` holds (at most ``timeout``)."""
        started = time.perf_counter()
        while not done(self.health()) and time.perf_counter() - started < timeout:
            time.sleep(0.05)
        return time.perf_counter() - started

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)
        self.log.close()


def load(work: Any, clients: int, seconds: float) -> tuple[float, float, float, int]:
    """``clients`` threads calling ``work()`` for ``seconds``: throughput, p50, p95, errors."""
    took: list[float] = []
    errors = [0]
    stop = time.monotonic() + seconds

    def client() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                work()
                took.append((time.perf_counter() - started) * 1000)
            except Exception:
                errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(took) / seconds, percentile(took, 0.5), percentile(took, 0.95), errors[0]


def mcp_load(url: str, queries: list[str], clients: int, seconds: float) -> tuple[float, float, float, int]:
    """``clients`` MCP sessions over ``/mcp`` calling ``reflect_on_past`` for ``seconds``."""
    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    took: list[float] = []
    errors = [0]

    async def client(n: int) -> None:
        async with streamable_http_client(url + "/mcp") as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                i = n
                while time.monotonic() < stop:
                    started = time.perf_counter()
                    result = await session.call_tool(
                        "reflect_on_past", {"query": queries[i % len(queries)], "project": "all"}
                    )
                    if result.is_error:
                        errors[0] += 1
                    else:
                        took.append((time.perf_counter() - started) * 1000)
                    i += clients

    async def run() -> None:
        async with anyio.create_task_group() as group:
            for n in range(clients):
                group.start_soon(client, n)

    stop = time.monotonic() + seconds
    anyio.run(run)
    return len(took) / seconds, percentile(took, 0.5), percentile(took, 0.95), errors[0]


def cli_wall(env: dict[str, str], args: list[str], runs: int = 10, first: bool = True) -> float:
    """Median wall ms of ``args`` over ``runs``, after one run that is not
    counted (``first``): it writes the bytecode an installed package has (pip
    compiles it at install), which ``PYTHONDONTWRITEBYTECODE`` would leave unwritten."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if first:
        subprocess.run(args, env=env, capture_output=True, check=False)
    took = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, env=env, capture_output=True, check=False)
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


def paused_embedding(embedder: OnnxEmbedder, queries: list[str]) -> tuple[float, float]:
    """Median ms of the model embedding one query after ``PAUSE`` seconds of
    sleep, and back to back: what a pause costs any process on this machine."""
    after: list[float] = []
    hot: list[float] = []
    for query in queries:
        time.sleep(PAUSE)
        for took in (after, hot):
            started = time.perf_counter()
            embedder.embed_queries([query])
            took.append((time.perf_counter() - started) * 1000)
    return statistics.median(after), statistics.median(hot)


def measure_daemon(
    claude: Path,
    data: Path,
    queries: list[str],
    embedder: OnnxEmbedder,
    python: float,
    clients: int,
    seconds: float,
    backfill: str,
    paused: int,
    files: int | None,
) -> int:
    """The daemon on the filled store: start-up, latency, the CLI, load; the
    chunks it embedded during the backfill under load (of the real
    transcripts, or their ``files`` smallest, copied into project folder
    ``backfill``)."""
    daemon = Daemon(claude, data)
    try:
        print(f"daemon ready (answering /healthz) {daemon.ready_seconds:.2f} s after start; {daemon.memory()}")
        idle = daemon.wait(lambda h: not h["files_pending"], 600)  # what an earlier round left to read
        print(f"the importer idle {idle:.1f} s later")
        time.sleep(PAUSE)
        first = daemon.search("how did we fix the flaky login test")[0]  # none of the measured queries
        print(
            f"a fresh daemon, after {PAUSE:.0f} s with nothing to do: its first search {first:.0f} ms, "
            f"its first status {daemon.timed('/api/status'):.0f} ms"
        )
        for query in ("warm up", "the daemon's first searches", "load the pages", "docker", "memory"):
            daemon.search(query)  # not the measured queries: their snippet windows would be kept
        for label in ("first time", "again (their pages read before)"):
            walls, tooks = [], []
            for query in queries:
                wall, answer = daemon.search(query)
                walls.append(wall)
                tooks.append(answer["took_ms"])
            print(
                f"/api/search, sequential, {len(walls)} queries {label}: wall p50 {percentile(walls, 0.5):.1f} ms, "
                f"p95 {percentile(walls, 0.95):.1f} ms (in the daemon: p50 {percentile(tooks, 0.5):.1f}, "
                f"p95 {percentile(tooks, 0.95):.1f}); load average {os.getloadavg()[0]:.1f}; {daemon.memory()}"
            )
        cli = cli_wall(daemon.env, [*SELFREFLECT, "search", "docker memory limit"])
        cli_status = cli_wall(daemon.env, [*SELFREFLECT, "status"])
        print(f"CLI through the daemon: search {cli:.0f} ms, status {cli_status:.0f} ms (bare python {python:.0f} ms)")
        walls = []
        for query in queries[:paused]:  # how searches from Claude come: one now and then
            time.sleep(PAUSE)
            walls.append(daemon.search(query)[0])
        bare = paused_embedding(embedder, queries[:paused])
        print(
            f"/api/search after {PAUSE:.0f} s with nothing to do, {len(walls)} queries: wall p50 "
            f"{percentile(walls, 0.5):.1f} ms, p95 {percentile(walls, 0.95):.1f} ms (baseline, this process "
            f"embedding one query after the same pause: p50 {bare[0]:.1f} ms, without one {bare[1]:.1f} ms)"
        )
        quiet_backfill(daemon, claude / "projects" / f"{backfill}-quiet", files)
        status_while_writing(daemon, claude / "projects" / f"{backfill}-status", files)
        cycle = iter(queries * 1000)

        def one() -> None:
            daemon.search(next(cycle))

        rate, p50, p95, errors = load(one, clients, seconds)
        print(
            f"/api/search, {clients} clients, {seconds:.0f} s: {rate:.1f}/s, "
            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, {errors} errors; load average {os.getloadavg()[0]:.1f}; "
            f"{daemon.memory()}"
        )
        rate, p50, p95, errors = mcp_load(daemon.url, queries, clients, seconds)
        print(
            f"/mcp reflect_on_past, {clients} sessions, {seconds:.0f} s: {rate:.1f}/s, p50 {p50:.0f} ms, "
            f"p95 {p95:.0f} ms, {errors} errors; load average {os.getloadavg()[0]:.1f}; {daemon.memory()}"
        )
        copy_corpus(claude / "projects" / backfill, files)
        daemon.wait(lambda h: h["files_pending"], 30)  # the importer has seen them
        before = int(daemon.health()["chunks_indexed"])
        rate, p50, p95, errors = load(one, clients, seconds)
        chunks = int(daemon.health()["chunks_indexed"])
        print(
            f"/api/search while backfilling real transcripts ({chunks - before} chunks embedded meanwhile): "
            f"{rate:.1f}/s, "
            f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, {errors} errors; load average {os.getloadavg()[0]:.1f}; "
            f"{daemon.memory()}"
        )
        return chunks
    finally:
        daemon.stop()


def compact(claude: Path, data: Path) -> None:
    """`selfreflect compact` on the store, as `import` does at the end of a
    big backfill: its time, segments, and the process's memory (sampled
    every 20 ms: the anonymous part and all of it)."""
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(claude), "SELFREFLECT_HOME": str(data)}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfreflect", "compact"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    peak, _ = watch(proc.pid, lambda: proc.poll() is None)
    out = proc.communicate()[0].decode().strip()
    print(
        f"{out} ({time.perf_counter() - started:.0f} s with the process's start); peak memory of "
        f"`selfreflect compact`: {peak['VmHWM']} MB all in ({peak['RssAnon']} MB anonymous); "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def quiet_backfill(daemon: Daemon, folder: Path, files: int | None) -> None:
    """The daemon writing into the big store with no one searching: the real
    transcripts copied in, resident memory sampled every 20 ms until the
    importer is idle again (its merges included)."""
    before = int(daemon.health()["chunks_indexed"])
    copy_corpus(folder, files)
    daemon.wait(lambda h: h["files_pending"], 30)
    started = time.perf_counter()
    peak, samples = watch(
        daemon.proc.pid, lambda: daemon.health()["files_pending"] and time.perf_counter() - started < 600
    )
    chunks = int(daemon.health()["chunks_indexed"]) - before
    print(
        f"backfilling the real transcripts into the store, no searches: {chunks} chunks in "
        f"{time.perf_counter() - started:.0f} s; resident memory peak {peak['VmRSS']} MB all in "
        f"({peak['RssAnon']} MB anonymous), median {statistics.median(samples or [0]):.0f} MB; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def status_while_writing(daemon: Daemon, folder: Path, files: int | None) -> None:
    """`status` while the daemon writes (the real transcripts copied in):
    ``/api/status`` and ``selfreflect status``, one after the other once a
    second until the importer is idle; then the same five times, idle."""
    status = [*SELFREFLECT, "status"]
    copy_corpus(folder, files)
    daemon.wait(lambda h: h["files_pending"], 30)
    api, shell = [], []
    while daemon.health()["files_pending"]:
        api.append(daemon.timed("/api/status"))
        shell.append(cli_wall(daemon.env, status, runs=1, first=False))
        time.sleep(1.0)
    idle_api = [daemon.timed("/api/status") for _ in range(5)]
    idle_shell = [cli_wall(daemon.env, status, runs=1, first=False) for _ in range(5)]
    print(
        f"status while the daemon writes ({len(api)} times): /api/status p50 {percentile(api, 0.5):.0f} ms, "
        f"max {max(api, default=0):.0f} ms; `selfreflect status` p50 {percentile(shell, 0.5):.0f} ms, "
        f"max {max(shell, default=0):.0f} ms; idle: {percentile(idle_api, 0.5):.0f} and "
        f"{percentile(idle_shell, 0.5):.0f} ms; load average {os.getloadavg()[0]:.1f}"
    )


def engine_threads(store: EdgeStore, queries: list[str], vectors: list[list[float]]) -> None:
    """The engine's hybrid queries from one thread, then from two at once;
    and how fast a pure-Python thread counts meanwhile (against counting
    alone): whether the engine lets other Python threads run while it works."""

    def run() -> None:
        for vector, query in zip(vectors, queries, strict=True):
            store.hybrid(vector, lexical_text(query), SearchFilter(), 20, FusionPlan())

    run()  # the pages it reads, mapped once
    rates = []
    for threads in (1, 2):
        workers = [threading.Thread(target=run) for _ in range(threads)]
        started = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        rates.append(threads * len(queries) / (time.perf_counter() - started))
    counted, stop = [0], threading.Event()

    def count() -> None:
        while not stop.is_set():
            counted[0] += 1

    counter = threading.Thread(target=count)
    counter.start()
    time.sleep(1.0)
    alone, counted[0] = counted[0], 0
    started = time.perf_counter()
    run()
    beside = counted[0] / (time.perf_counter() - started)
    stop.set()
    counter.join()
    print(
        f"the engine's hybrid query: {rates[0]:.0f}/s from one thread, {rates[1]:.0f}/s from two at once; a Python "
        f"thread counting beside it runs at {beside / alone:.0%} of its speed alone"
    )


def merge_points() -> int | None:
    """The merge bound set for this run (``SELFREFLECT_MERGE_POINTS``), else the store's own."""
    value = os.environ.get("SELFREFLECT_MERGE_POINTS")
    return int(value) if value else None


class Clock:
    """The time spent inside the methods of the objects it wraps (the
    outermost call counted, so a method calling another counts once)."""

    def __init__(self) -> None:
        self.ms = 0.0
        self.depth = 0

    def wrap(self, target: Any) -> Any:
        return _Timed(target, self)


class _Timed:
    """``target`` with each of its method calls timed on ``clock``."""

    def __init__(self, target: Any, clock: Clock) -> None:
        self._target, self._clock = target, clock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value
        clock = self._clock

        def timed(*args: Any, **kwargs: Any) -> Any:
            clock.depth += 1
            started = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                clock.depth -= 1
                if not clock.depth:
                    clock.ms += (time.perf_counter() - started) * 1000

        return timed


def split(data: Path, queries: list[str], embedder: OnnxEmbedder) -> tuple[float, float, float]:
    """Median ms of ``search`` (in-process) in the model, in the engine,
    and in the rest (relevance, copies, snippets, formatting): one search
    timed from the inside, its embedder and engine wrapped in clocks."""
    embed_ms, engine_ms, rest_ms = [], [], []
    vectors: list[list[float]] = []
    started = time.perf_counter()
    # the daemon's bound: a store opened under another merges its segments to it at once
    with EdgeStore(data / "store", embedder.name, embedder.dim, merge_points=merge_points()).open() as store:
        opened = time.perf_counter() - started
        shard = store._shard
        print(f"the store alone opens in {opened:.2f} s: {shard.info().segments_count} segments")
        for query in queries:
            model, engine = Clock(), Clock()
            store._shard = engine.wrap(shard)
            started = time.perf_counter()
            search(store, model.wrap(embedder), SearchQuery(query, limit=5))
            total = (time.perf_counter() - started) * 1000
            store._shard = shard
            embed_ms.append(model.ms)
            engine_ms.append(engine.ms)
            rest_ms.append(total - model.ms - engine.ms)
            vectors.append(embedder.embed_queries([query])[0].tolist())
        engine_threads(store, queries, vectors)
    return statistics.median(embed_ms), statistics.median(engine_ms), statistics.median(rest_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 250_000])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--paused", type=int, default=10, help="searches after a pause (each after PAUSE s)")
    parser.add_argument("--compacted-only", action="store_true", help="measure the store once, compacted (--quick)")
    parser.add_argument(
        "--as-filled-only", action="store_true", help="measure the store once, as filled (to compare merge bounds)"
    )
    parser.add_argument("--files", type=int, help="backfill only the N smallest real transcripts (--quick)")
    parser.add_argument("--work", type=Path, help="keep the filled stores here and reuse them (default: removed)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    queries = [json.loads(line)["query"] for path in QUERY_SETS for line in path.open()]
    embedder = OnnxEmbedder()
    embedder.load()
    root = args.work or Path(tempfile.mkdtemp(prefix="selfreflect-scale-"))
    shutil.rmtree(root / "pool", ignore_errors=True)
    payloads = pool(root, embedder)
    python = cli_wall(dict(os.environ), [sys.executable, "-c", "pass"])
    print(f"stand-in fill from {len(payloads)} real chunk payloads; bare python start {python:.0f} ms")
    for size in args.sizes:
        data, claude = root / f"data-{size}", root / f"claude-{size}"
        shutil.rmtree(claude, ignore_errors=True)  # the backfill's transcripts, and their chunks in the store
        (claude / "projects").mkdir(parents=True)
        filled = root / f"filled-{size}"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        if args.work and filled.exists():  # the store as filled, without what the last run added
            subprocess.run(["cp", "-a", "--sparse=always", str(filled), str(data / "store")], check=True)
            print(f"\n== {size:,} chunks (stand-in vectors): the store filled before, copied")
        else:
            seconds = fill(data, size, payloads, embedder)
            print(f"\n== {size:,} chunks (stand-in vectors): filled in {seconds:.0f} s ({size / seconds:.0f} points/s)")
            if args.work:
                subprocess.run(["cp", "-a", "--sparse=always", str(data / "store"), str(filled)], check=True)
        print(f"load average {os.getloadavg()[0]:.1f}")
        chunks = 0
        for state, backfill in (("as filled (the daemon's own merges)", "-backfill"), ("compacted", "-backfill-2")):
            if backfill != "-backfill":
                if args.as_filled_only:
                    continue
                compact(claude, data)
            elif args.compacted_only:
                continue
            print(f"-- the store {state}")
            chunks += measure_daemon(
                claude, data, queries, embedder, python, args.clients, args.seconds, backfill, args.paused, args.files
            )
            embed, engine, rest = split(data, queries, embedder)
            print(f"search, in-process (median): model {embed:.1f} ms, engine {engine:.1f} ms, the rest {rest:.1f} ms")
            store_bytes = sum(f.stat().st_blocks * 512 for f in (data / "store").rglob("*") if f.is_file())
            print(f"disk: {store_bytes / 2**20:.0f} MB, {store_bytes / (size + chunks):.0f} bytes per chunk")
        if not args.work:
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(claude, ignore_errors=True)
    if not args.work:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
