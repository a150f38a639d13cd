"""The embedded store on its own: compaction into sealed segments, giving
mapped pages back, durability of a returned write, and stores of older
versions (made with the engine's write-ahead log)."""

from __future__ import annotations

import random
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import qdrant_edge as qe

from selfreflect.store import FusionPlan, Record, SearchFilter, edge, remembered
from selfreflect.store.edge import DENSE, LEXICAL, SCHEMA, EdgeStore

from conftest import resident_kb
from daemon_process import eventually

DIM = 384
MODEL = "test-model"


def records(start: int, n: int, seed: int = 0) -> list[Record]:
    """Points with a random unit vector and a word of their own (``wordN``)."""
    out = []
    for i in range(start, start + n):
        vector = np.random.default_rng([seed, i]).standard_normal(DIM).astype(np.float32)
        vector /= np.linalg.norm(vector)
        text = f"word{i} shared text about docker memory limits"
        payload = {"text": text, "project": "p", "transcript": f"/t/{i % 7}.jsonl", "thread": "main", "n": i}
        out.append(Record(f"00000000-0000-4000-8000-{i:012d}", vector.tolist(), text, payload))
    return out


def find_word(store: EdgeStore, i: int) -> list[int]:
    return [hit.payload["n"] for hit in store.lexical(f"word{i}", SearchFilter(), 3)]


def segments(folder: Path) -> int:
    return sum(1 for p in (folder / "shard" / "segments").iterdir() if p.is_dir())


def test_writes_are_sealed_into_segments_and_nothing_is_lost(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    written = 0
    with EdgeStore(folder, MODEL, DIM, segment_points=64, merge_points=0) as store:  # sealed, not merged
        for _ in range(6):
            store.upsert(records(written, 40))
            written += 40
        # re-writing points (an exchange re-chunked as it grows) keeps one copy each
        store.upsert(records(0, 40))
        assert store.count(SearchFilter()) == written
        assert segments(folder) >= 3  # sealed ones plus the appendable one
        for i in random.Random(1).sample(range(written), 12):
            assert find_word(store, i)[0] == i
        probe = records(77, 1)[0]
        hits = store.hybrid(probe.vector, "word77", SearchFilter(), 5, FusionPlan())
        assert hits[0].payload["n"] == 77
    with EdgeStore(folder, MODEL, DIM, segment_points=64) as store:
        assert store.count(SearchFilter()) == written
        assert find_word(store, written - 1) == [written - 1]


def test_sealed_segments_are_merged_up_to_a_bound(tmp_path: Path) -> None:
    """A search visits every segment: small sealed segments are merged into
    bigger ones, none bigger than ``merge_points``, and nothing is lost."""
    folder = tmp_path / "store"
    with EdgeStore(folder, MODEL, DIM, segment_points=64, merge_points=256) as store:
        for start in range(0, 768, 64):
            store.upsert(records(start, 64))
        assert store.count(SearchFilter()) == 768
        assert segments(folder) <= 6  # 12 sealed segments without merging
        for i in random.Random(2).sample(range(768), 12):
            assert find_word(store, i)[0] == i
    with EdgeStore(folder, MODEL, DIM, segment_points=64, merge_points=256) as store:
        assert store.count(SearchFilter()) == 768


def test_merging_follows_the_setting_of_each_open(tmp_path: Path) -> None:
    """Opened with ``merge_points`` 0, sealed segments stay as they are;
    opened with merging, the store merges what it holds, and keeps every point."""
    folder = tmp_path / "store"
    with EdgeStore(folder, MODEL, DIM, segment_points=64, merge_points=0) as store:
        for start in range(0, 640, 64):
            store.upsert(records(start, 64))
    before = segments(folder)
    assert before >= 10
    with EdgeStore(folder, MODEL, DIM, segment_points=64, merge_points=256) as store:
        store.upsert(records(640, 64))
        assert store.count(SearchFilter()) == 704
        assert find_word(store, 3)[0] == 3
    assert segments(folder) < before


def test_unless_told_a_store_keeps_its_own_segment_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new store merges (up to ``MERGE_POINTS``: whole segments reach
    it); one made before merging was the default stays unmerged, since
    merging all it holds at one open is minutes and a memory peak."""
    monkeypatch.setattr(edge, "MERGE_POINTS", 256)
    merged, sealed = tmp_path / "merged", tmp_path / "sealed"
    with EdgeStore(merged, MODEL, DIM, segment_points=64) as store:
        for start in range(0, 1024, 64):
            store.upsert(records(start, 64))
    assert segments(merged) <= 5  # 16 segments of 64 merged four at a time (and the writable one)
    with EdgeStore(sealed, MODEL, DIM, segment_points=64, merge_points=0) as store:
        for start in range(0, 640, 64):
            store.upsert(records(start, 64))
    before = segments(sealed)
    with EdgeStore(sealed, MODEL, DIM, segment_points=64) as store:  # merge_points not given
        store.upsert(records(640, 64))
        assert store.count(SearchFilter()) == 704
    assert segments(sealed) == before + 1
    with EdgeStore(merged, MODEL, DIM, segment_points=64) as store:
        for start in range(1024, 1536, 64):
            store.upsert(records(start, 64))
        assert store.count(SearchFilter()) == 1536
    assert segments(merged) <= 7


def test_compaction_merges_small_segments_into_big_ones_and_keeps_every_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``compact`` merges what the store's own policy left small, searches
    find the same, and the store then goes on with its own policy: new
    segments merge up to its cap, the big ones stay."""
    monkeypatch.setattr(edge, "COMPACT_SLACK", 2)
    monkeypatch.setattr(edge, "COMPACT_POINTS", 640)
    folder = tmp_path / "store"
    with EdgeStore(folder, MODEL, DIM, segment_points=64, merge_points=128) as store:
        for start in range(0, 1280, 64):
            store.upsert(records(start, 64))
        probe = records(900, 1)[0]
        dense_before = [h.id for h in store.dense(probe.vector, SearchFilter(), 10)]
        assert store.needs_compaction()  # about 10 segments for 1,280 points
        before, after = store.compact()
        assert after == store.segments() and after < before / 2
        assert not store.needs_compaction()
        assert store.count(SearchFilter()) == 1280
        assert [h.id for h in store.dense(probe.vector, SearchFilter(), 10)] == dense_before
        for i in random.Random(3).sample(range(1280), 12):
            assert find_word(store, i)[0] == i
        store.upsert(records(1280, 512))  # its own policy again: merged up to 128 points, not 640
        assert store.segments() > after
        assert store.count(SearchFilter()) == 1792
    with EdgeStore(folder, MODEL, DIM, segment_points=64, merge_points=128) as store:
        assert store.count(SearchFilter()) == 1792
        assert store.segments() > after
        assert find_word(store, 1791)[0] == 1791


def test_a_compaction_goes_on_beside_searches_and_writes(tmp_path: Path) -> None:
    """Searches and writes from other threads during a compaction neither fail nor lose anything."""
    import threading

    folder = tmp_path / "store"
    failures: list[BaseException] = []
    with EdgeStore(folder, MODEL, DIM, segment_points=64, merge_points=128) as store:
        for start in range(0, 1024, 64):
            store.upsert(records(start, 64))
        done = threading.Event()

        def search() -> None:
            while not done.is_set():
                try:
                    assert find_word(store, 5)[0] == 5
                except BaseException as exc:  # noqa: BLE001  # reported below
                    failures.append(exc)
                    return

        def write() -> None:
            try:
                for start in range(1024, 1536, 32):
                    store.upsert(records(start, 32))
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

        threads = [threading.Thread(target=search), threading.Thread(target=write)]
        for t in threads:
            t.start()
        store.compact(points=512)
        threads[1].join()
        done.set()
        threads[0].join()
        assert not failures
        assert store.count(SearchFilter()) == 1536
        assert find_word(store, 1535)[0] == 1535


def store_resident_kb(folder: Path) -> int:
    """KB of the store's mapped files resident in this process."""
    prefix = str(folder.resolve()) + "/"
    return resident_kb("self", lambda _perms, path: path.startswith(prefix))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_release_memory_unmaps_the_pages_reads_and_writes_touched(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    with EdgeStore(folder, MODEL, DIM, segment_points=64) as store:
        for start in range(0, 300, 50):
            store.upsert(records(start, 50))
        for i in range(0, 300, 10):
            find_word(store, i)
        assert store_resident_kb(folder) > 0
        store.release_memory()
        assert store_resident_kb(folder) == 0
        # and the store reads on, from the page cache
        assert find_word(store, 123) == [123]
        assert store_resident_kb(folder) > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_opening_leaves_no_page_of_the_store_mapped(tmp_path: Path) -> None:
    """Loading maps the log and the payload indexes (about 100 MB at 250k
    points): given back before the daemon loads its model on top."""
    folder = tmp_path / "store"
    with EdgeStore(folder, MODEL, DIM, segment_points=64) as store:
        for start in range(0, 200, 50):
            store.upsert(records(start, 50))
    with EdgeStore(folder, MODEL, DIM, segment_points=64) as store:
        assert store_resident_kb(folder) == 0
        assert find_word(store, 123) == [123]


_SHARD_CONFIG = edge.shard_config


def without_log(dim: int, segment_points: int, *, create: bool, **policy: Any) -> qe.EdgeConfig:
    """The configuration of an early version's stores: no write-ahead log."""
    c = _SHARD_CONFIG(dim, segment_points, create=create, **policy)
    return qe.EdgeConfig(
        vectors=c.vectors,
        sparse_vectors=c.sparse_vectors,
        hnsw_config=c.hnsw_config,
        payload_memory=c.payload_memory,
        id_tracker_memory=c.id_tracker_memory,
        optimizers=c.optimizers,
        wal_enabled=False if create else None,
    )


@pytest.mark.parametrize("log", [True, False], ids=["with log", "without log"])
def test_a_write_is_on_disk_when_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log: bool) -> None:
    """What a crash leaves: the files as they are, the process gone (the page
    cache survives a kill -9, so a copy of the files is that state)."""
    if not log:
        monkeypatch.setattr(edge, "shard_config", without_log)
    folder = tmp_path / "store"
    crashed = tmp_path / "crashed"
    with EdgeStore(folder, MODEL, DIM, segment_points=64) as store:
        store.upsert(records(0, 100))
        store.delete_transcript("/t/3.jsonl")
        store.upsert(records(100, 30))
        expected = store.count(SearchFilter())
        shutil.copytree(folder, crashed)
    with EdgeStore(crashed, MODEL, DIM, segment_points=64) as store:
        assert store.count(SearchFilter()) == expected
        assert store.count(SearchFilter(transcript="/t/3.jsonl")) == sum(1 for i in range(100, 130) if i % 7 == 3)
        assert find_word(store, 129) == [129]


def test_a_store_made_with_the_write_ahead_log_opens_and_grows(tmp_path: Path) -> None:
    """Stores of earlier versions: default engine settings, log on."""
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "meta.json").write_bytes(orjson.dumps({"model": MODEL, "dim": DIM, "schema": SCHEMA}))
    config = qe.EdgeConfig(
        vectors={DENSE: qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine)},
        sparse_vectors={LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
    )
    shard = qe.EdgeShard.create(str(folder / "shard"), config)
    bm25 = qe.Bm25(qe.Bm25Config())
    old = records(0, 20)
    shard.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(r.id, {DENSE: list(r.vector), LEXICAL: bm25.embed_document(r.lexical)}, r.payload) for r in old]
        )
    )
    shard.close()
    with EdgeStore(folder, MODEL, DIM, segment_points=64) as store:
        store.upsert(records(20, 100))
        assert store.count(SearchFilter()) == 120
        assert find_word(store, 5) == [5]
        assert store.facet("transcript", SearchFilter(), 10)  # indexes were added


def test_an_answer_is_remembered_until_the_store_is_written(tmp_path: Path) -> None:
    """What a search asks of every segment (the projects' paths) is asked
    again only after a write, any write: a new project is found at once."""
    asked: list[int] = []

    def projects() -> list[str]:
        asked.append(1)
        return sorted(str(v) for v, _ in store.facet("project", SearchFilter(), 100, exact=False))

    with EdgeStore(tmp_path / "store", MODEL, DIM).open() as store:
        store.upsert(records(0, 3))
        assert remembered(store, "projects", projects) == ["p"]
        assert remembered(store, "projects", projects) == ["p"] and len(asked) == 1
        newcomer = records(3, 1)[0]
        store.upsert([Record(newcomer.id, newcomer.vector, newcomer.lexical, {**newcomer.payload, "project": "q"})])
        assert remembered(store, "projects", projects) == ["p", "q"] and len(asked) == 2
        store.delete(SearchFilter(projects=("q",)))
        assert remembered(store, "projects", projects) == ["p"] and len(asked) == 3
        # an answer that may lag: kept for stale_for seconds whatever is written
        assert remembered(store, "lagging", projects, stale_for=3600) == ["p"] and len(asked) == 4
        store.upsert(records(10, 1))
        store.set_title("s", "a title")
        assert remembered(store, "lagging", projects, stale_for=3600) == ["p"] and len(asked) == 4
        assert remembered(store, "lagging", projects, stale_for=0) == ["p"] and len(asked) == 5
        store.upsert([Record(newcomer.id, newcomer.vector, newcomer.lexical, {**newcomer.payload, "project": "q"})])
        assert remembered(store, "lagging", projects, stale_for=3600) == ["p"]
        store.delete(SearchFilter(projects=("q",)))  # forgetting is never lagged
        assert remembered(store, "lagging", projects, stale_for=3600) == ["p"] and len(asked) == 6


def test_a_lagging_answer_past_its_time_is_given_while_it_is_computed_again(tmp_path: Path) -> None:
    """An answer that may lag (the status's per-project table), older than
    ``stale_for`` with the store written since: the old one is given at
    once and the new one computed in the background, once however many ask
    meanwhile, and given from then on. Much older, it is computed now. An
    answer a forget overtook while it was computed is dropped."""
    asked: list[int] = []
    hold = threading.Event()

    def projects() -> list[str]:
        asked.append(1)
        if len(asked) > 1:
            hold.wait(10)
        return sorted(str(v) for v, _ in store.facet("project", SearchFilter(), 100, exact=False))

    def write(project: str, n: int) -> None:
        point = records(n, 1)[0]
        store.upsert([Record(point.id, point.vector, point.lexical, {**point.payload, "project": project})])

    def computing() -> bool:
        return any(t.name == "refresh-lagging" for t in threading.enumerate())

    with EdgeStore(tmp_path / "store", MODEL, DIM).open() as store:
        store.upsert(records(0, 3))
        assert remembered(store, "lagging", projects, stale_for=0.5) == ["p"] and len(asked) == 1
        write("q", 3)
        time.sleep(0.6)
        assert remembered(store, "lagging", projects, stale_for=0.5) == ["p"]  # at once: computed meanwhile
        assert remembered(store, "lagging", projects, stale_for=0.5) == ["p"]
        assert eventually(lambda: len(asked) == 2) and computing()  # once
        hold.set()
        eventually(lambda: remembered(store, "lagging", projects, stale_for=0.5) == ["p", "q"])
        assert len(asked) == 2 and not computing()
        # much older than stale_for: computed now
        write("r", 4)
        time.sleep(0.6)
        assert remembered(store, "lagging", projects, stale_for=0.05) == ["p", "q", "r"] and len(asked) == 3
        # forgotten while it was computed again: what that gave is dropped
        hold.clear()
        write("s", 5)
        time.sleep(0.6)
        assert remembered(store, "lagging", projects, stale_for=0.5) == ["p", "q", "r"]
        eventually(lambda: len(asked) == 4)
        store.delete(SearchFilter(projects=("s",)))
        hold.set()
        eventually(lambda: not computing())
        assert "lagging" not in store.remembered
        assert remembered(store, "lagging", projects, stale_for=0.5) == ["p", "q", "r"] and len(asked) == 5


def test_the_unfiltered_count_is_every_point_once(tmp_path: Path) -> None:
    """The count of everything is the segments' own tally (no point read):
    each point once, through overwrites across sealed segments, merges and
    deletes, as reading every id gives."""

    def ids() -> int:
        return len({row["id"] for row in store.scroll(SearchFilter(), 100_000)})

    with EdgeStore(tmp_path / "store", MODEL, DIM, segment_points=64, merge_points=256) as store:
        for start in range(0, 640, 64):
            store.upsert(records(start, 64))
        store.upsert(records(0, 200))  # written again: the copies in sealed segments go
        assert store.segments() > 1 and store.count(SearchFilter()) == ids() == 640
        store.delete(SearchFilter(transcript="/t/3.jsonl"))
        store.upsert(records(600, 100))
        kept = {i for i in range(640) if i % 7 != 3} | set(range(600, 700))
        assert store.count(SearchFilter()) == ids() == len(kept)


def test_nothing_is_remembered_of_a_store_others_write_to(tmp_path: Path) -> None:
    class Shared:
        writes = None
        remembered: dict = {}

    answers = iter(range(10))
    assert [remembered(Shared(), "n", lambda: next(answers)) for _ in range(3)] == [0, 1, 2]  # type: ignore[arg-type]


def quantized_segments(folder: Path) -> int:
    return len(list((folder / "shard" / "segments").glob("*/vector_storage-dense/quantized.data")))


@pytest.mark.parametrize("quantized_from", [0, edge.QUANTIZED_FROM], ids=["through the copy", "small: full vectors"])
def test_dense_search_goes_through_the_quantized_copy_and_finds_the_nearest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quantized_from: int
) -> None:
    """Sealed segments hold a 2-bit copy of the dense vectors; searching
    through it (rescored with the full vectors) finds what an exact scan
    finds, as the full vectors do (a store below ``QUANTIZED_FROM`` points)."""
    monkeypatch.setattr(edge, "QUANTIZED_FROM", quantized_from)
    folder = tmp_path / "store"
    points = records(0, 3072)
    with EdgeStore(folder, MODEL, DIM, segment_points=1024, merge_points=0) as store:
        for start in range(0, 3072, 1024):  # each sealed into a segment of its own
            store.upsert(points[start : start + 1024])
        assert quantized_segments(folder) >= 2
        found = exact = 0
        for q in range(20):
            query = np.asarray(points[q * 97].vector) + np.random.default_rng(q).normal(0, 0.05, DIM)
            nearest = np.argsort(-np.asarray([p.vector for p in points]) @ query)[:10]
            hits = store.dense(query.tolist(), SearchFilter(), 10)
            found += len({h.payload["n"] for h in hits} & set(nearest.tolist()))
            exact += 10
        assert found / exact >= 0.9  # both through HNSW graphs: near, not always exact
        assert (store._dense_params is None) == (quantized_from == 0)


def quantized_placement(folder: Path) -> str:
    saved = orjson.loads((folder / "shard" / "edge_config.json").read_bytes())
    return str(saved["vectors"]["dense"]["quantization_config"]["turbo"]["memory"])


def mapped_copy_kb(folder: Path) -> int | None:
    """Resident KB of this process's mappings of the store's quantized
    copies; None: none mapped."""
    prefix = str(folder.resolve()) + "/"
    copy = lambda _perms, path: path.startswith(prefix) and "quantized" in path  # noqa: E731
    maps = Path("/proc/self/maps").read_text().splitlines()
    mapped = any(copy("", line.split(maxsplit=5)[-1]) for line in maps)
    return resident_kb("self", copy) if mapped else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_the_quantized_copy_is_mapped_and_handed_back_with_the_rest(tmp_path: Path) -> None:
    """A new store maps its quantized copy from its file: searches map it in,
    and the memory policy's release hands it back like the other pages (a
    store that is only written keeps none of it resident)."""
    folder = tmp_path / "store"
    points = records(0, 3072)
    with EdgeStore(folder, MODEL, DIM, segment_points=1024, merge_points=0) as store:
        for start in range(0, 3072, 1024):
            store.upsert(points[start : start + 1024])
        assert quantized_placement(folder) == "cold"
        store._dense_params = None  # through the copy, as above QUANTIZED_FROM
        for q in range(20):
            store.dense(points[q * 97].vector, SearchFilter(), 10)
        assert (mapped_copy_kb(folder) or 0) > 0
        store.release_memory()
        assert mapped_copy_kb(folder) == 0
        assert [h.payload["n"] for h in store.dense(points[5].vector, SearchFilter(), 1)] == [5]


def test_a_store_with_its_quantized_copy_on_the_heap_keeps_it_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Moving the copy rebuilds every segment at once: a store made with it
    on the heap goes on with it there, and loses nothing."""
    folder = tmp_path / "store"
    pinned = lambda *a, **k: _SHARD_CONFIG(*a, **{**k, "quantized": qe.Memory.Pinned})  # noqa: E731
    monkeypatch.setattr(edge, "shard_config", pinned)
    with EdgeStore(folder, MODEL, DIM, segment_points=1024, merge_points=0) as store:
        store.upsert(records(0, 2500))
    monkeypatch.setattr(edge, "shard_config", _SHARD_CONFIG)
    sealed = {p.parent.parent.name for p in (folder / "shard" / "segments").glob("*/vector_storage-dense/matrix.dat")}
    assert sealed
    with EdgeStore(folder, MODEL, DIM, segment_points=1024, merge_points=0) as store:
        assert store.count(SearchFilter()) == 2500
        assert find_word(store, 1234) == [1234]
        store.upsert(records(2500, 1100))
        assert store.count(SearchFilter()) == 3600
    assert quantized_placement(folder) == "pinned"
    assert sealed <= {p.name for p in (folder / "shard" / "segments").iterdir()}  # none rebuilt


def test_a_store_made_before_the_quantized_copy_opens_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding the quantized copy to an existing store would rebuild every
    segment at once: an older store goes on without it, and loses nothing."""
    folder = tmp_path / "store"
    plain = lambda *a, **k: _SHARD_CONFIG(*a, **{**k, "quantized": None})  # noqa: E731
    monkeypatch.setattr(edge, "shard_config", plain)
    with EdgeStore(folder, MODEL, DIM, segment_points=1024, merge_points=0) as store:
        store.upsert(records(0, 2500))
    monkeypatch.setattr(edge, "shard_config", _SHARD_CONFIG)
    assert quantized_segments(folder) == 0
    with EdgeStore(folder, MODEL, DIM, segment_points=1024, merge_points=0) as store:
        assert store.count(SearchFilter()) == 2500
        assert find_word(store, 1234) == [1234]
        store.upsert(records(2500, 1100))  # sealed like the rest
        assert store.count(SearchFilter()) == 3600
    assert quantized_segments(folder) == 0
    saved = orjson.loads((folder / "shard" / "edge_config.json").read_bytes())
    assert not saved["vectors"]["dense"].get("quantization_config")
