"""The embedded store: a Qdrant Edge shard in the data folder.

Qdrant Edge must not be opened by two processes at once, so before opening the
shard we take the data dir's store lock (:mod:`selfreflect.lock`): a second
opener is told who owns it.
The model name and dimension are recorded in ``meta.json``; opening the store
with another model is refused.

Memory stays nearly flat as the store grows (about 0.15 MB per 1,000 points,
the engine's bookkeeping per sealed segment; see docs/benchmarks.md):

- Everything that can live on disk does (vectors, HNSW graphs, the BM25
  index, payloads, payload indexes, id trackers), read through the page cache.
- New points go to one appendable segment, whose structures are in memory.
  Every ``segment_points`` points the engine's optimizer turns it into an
  immutable, memory-mapped segment of its own, and the appendable segment
  starts empty.
- A search visits every segment, at a cost that grows far slower than the
  segment's size. So the optimizer also merges the smallest sealed
  segments, three or more at a time, into one of up to ``merge_points``
  points (``SELFREFLECT_MERGE_POINTS``, default ``MERGE_POINTS``; 0: never):
  a 250k store holds about 60 segments instead of 245, and at 30,000
  points the engine's hybrid query is twice as fast. A merge is a memory
  peak of its own, growing with its size: merges of 8,192 points took the
  daemon's backfill to 215 MB (the cap is 200 MB), of 4,096 to 193 MB,
  about 25 MB over sealing alone (docs/benchmarks.md). The engine holds the GIL while
  it merges (up to a few seconds). A store made before merging was the
  default keeps its segments unless merging is asked for: merging them all
  at once took 51 s and peaked at 494 MB at 100k points.
- A compaction (:meth:`EdgeStore.compact`: ``selfreflect compact``, and
  ``import`` after a big backfill) merges the small segments into segments
  of up to ``COMPACT_POINTS``: at 250k points 62 segments into 9 in about
  4 minutes, after which a search through the daemon takes 10-13 ms instead
  of 22 (docs/benchmarks.md). Its merges peak at about 145 MB anonymous
  memory without the model, so the daemon, under its 200 MB cap, leaves it
  to one-off commands.
- The dense vectors are searched through a 2-bit TurboQuant copy of them
  (104 bytes a vector: 25 MB at 250k points, 99 MB at 1M), and the
  candidates rescored with the full vectors on disk: measured on 30,000
  real MiniLM vectors, the same recall as searching the full vectors
  (0.99 of the exact ten nearest), without walking the full vectors' file
  (a 250k store's search mapped 330 MB of it). The copy is mapped from its
  file like the rest (``QUANTIZED_MEMORY``): a store that is written and
  not searched keeps none of it resident. Below ``QUANTIZED_FROM``
  points the full vectors are searched: cheap at that size, and exact. A
  store keeps the copy as it was made: without one (made before it), or
  on the heap (made before it was mapped); changing either rebuilt every
  segment at once (2-5 minutes and 1.2-1.4 GB at 250k points), so
  ``reindex`` makes a store with today's.
- :meth:`EdgeStore.release_memory` unmaps the file pages that reads and
  writes left resident; when that happens is the process's memory policy's
  decision (:class:`selfreflect.memory.MemoryPolicy`), which the store tells
  when it builds a segment.
- The engine writes through memory-mapped, sparse files: on a full disk a
  write does not fail, the process dies of SIGBUS. So before every write,
  and before opening (loading replays the log), the store checks that the
  disk has at least ``MIN_FREE_BYTES`` free (a compaction and a log file
  fit in it) and raises :class:`~selfreflect.errors.DiskFull` instead:
  nothing is written, the read positions do not move, and the same import
  picks up where it stopped once there is room.
- Writes go to the engine's write-ahead log, which makes them durable when
  they return; segments are flushed after each compaction, which keeps the
  log short. (A flush after every write was measured instead: it costs a
  pass over every segment, and with 50 segments it made the backfill 5
  times slower. Stores made without the log, by a development version, are
  still flushed after every write.)
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import qdrant_edge as qe

from selfreflect.errors import DiskFull, ModelMismatch, SelfReflectError, StoreLocked
from selfreflect.lock import StoreLock
from selfreflect.memory import MemoryPolicy, release_mapped_pages
from selfreflect.readahead import reading_ahead
from selfreflect.store import INDEXED_FIELDS, Condition, FusionPlan, Hit, RawPoint, Record, SearchFilter, conditions
from selfreflect.system import disk_bytes

MIN_FREE_BYTES = 64 << 20  # a sealed segment's files and a 32 MB log file, with room to spare

DENSE = "dense"
LEXICAL = "bm25"
SCHEMA = 1

_INDEX_PARAMS: dict[str, Callable[[], Any]] = {
    "keyword": lambda: qe.KeywordIndexParams(on_disk=True, memory=qe.Memory.Cold),
    "datetime": lambda: qe.DatetimeIndexParams(on_disk=True, memory=qe.Memory.Cold),
}

# Sealed segments are merged into segments of up to this many points (0: not
# merged): the memory a merge takes grows with it (8,192: ~50 MB over sealing
# alone in the daemon's backfill, over the 200 MB cap; 4,096: ~25 MB). The cap
# is half a segment more, so that merges of whole segments reach it.
MERGE_POINTS = 4096
# Merge whenever three small segments fit together under MERGE_POINTS (the
# engine merges when it holds more segments than this, smallest first).
_MERGE_BELOW = 2
_NO_MERGES = 64  # what a store that does not merge records in the same place
# A compaction (:meth:`EdgeStore.compact`) merges the small segments into
# segments of up to this many points: at 250k points, 9 segments instead of
# 62 and the engine's hybrid query 2.5 times faster (6.6 vs 16.9 ms), for a
# merge peak over the daemon's cap (docs/benchmarks.md), so one-off commands
# do it, not the daemon.
COMPACT_POINTS = 32768
# `import` compacts when the store holds more than this many segments over
# what a compacted store of its size holds.
COMPACT_SLACK = 8
# A compaction step merges up to this many segments into one (8 of the
# daemon's 4,096 points make one of COMPACT_POINTS).
COMPACT_GROUP = 8

_HNSW = dict(m=16, ef_construct=100, max_indexing_threads=1, on_disk=True, memory=qe.Memory.Cold)
# Below this many KB of (filtered) vectors a segment is scanned, above it the
# HNSW graph is searched: a graph touches far fewer pages than a scan.
_FULL_SCAN_KB = 1000
# Loading a segment, the engine reads every page of its null indexes (two
# sparse 1 MB flag files per indexed field) one fault at a time: ~36 ms a
# segment. A helper process reads them into the page cache ahead of the
# load when the store holds more segments than this (at 62 segments, 250k
# points: the store opens in 2.2 s instead of 3.3; docs/benchmarks.md).
_NULL_INDEX_FILES = "*/payload_index/*-null/*/flags_a.dat"
_READ_AHEAD_SEGMENTS = 8
# The shard a swap (:meth:`EdgeStore.swap_in`) replaces, until it is deleted.
_SWAPPED_OUT = "shard.old"


# Below this many points dense lists are searched on the full vectors: a small
# store's scan is cheap, and the quantized copy's candidates can leave out a
# hit at the tail of a 40-deep list (30,000 real vectors: 0.975 of the exact
# 40); above it, the copy makes the dense search about twice as fast.
QUANTIZED_FROM = 20_000
_FULL_VECTORS = qe.SearchParams(quantization=qe.QuantizationSearchParams(ignore=True))


# Where the quantized copy lives: mapped from its file like the rest (``Cold``),
# so a store that is written and not searched keeps none of it resident (25 MB
# at 250k points, 99 MB at 1M); searches map back the pages they read, and
# measured at 250k were no slower for it (docs/benchmarks.md). Stores made
# with it on the heap (``Pinned``) keep it there: moving it rebuilds every
# segment at once (5 minutes and 1.4 GB at 250k points).
QUANTIZED_MEMORY = qe.Memory.Cold
_MEMORY_NAMES = {"cold": qe.Memory.Cold, "cached": qe.Memory.Cached, "pinned": qe.Memory.Pinned}


def _quantized(memory: Any) -> Any:
    """The dense vectors' 2-bit copy (TurboQuant), in ``memory``. Searches
    rescore its candidates with the full vectors (the engine's default for
    TurboQuant)."""
    return qe.TurboQuantQuantizationConfig(bits=qe.TurboQuantBitSize.Bits2, memory=memory)


def saved_quantization(saved: dict[str, Any]) -> Any:
    """Where a store's saved configuration keeps its quantized copy; None: it
    has none (made before the copy)."""
    config = ((saved.get("vectors") or {}).get(DENSE) or {}).get("quantization_config")
    if not config:
        return None
    turbo = config.get("turbo") or {}  # the only kind a store is made with
    return _MEMORY_NAMES.get(str(turbo.get("memory", "")), qe.Memory.Pinned)


def shard_config(
    dim: int,
    segment_points: int,
    *,
    create: bool,
    merge_points: int = MERGE_POINTS,
    quantized: Any = QUANTIZED_MEMORY,
    merge_below: int = _MERGE_BELOW,
) -> qe.EdgeConfig:
    """The shard's configuration; ``create`` also fixes what cannot change later.

    The optimizer seals the appendable segment once it holds about
    ``segment_points`` points, and merges sealed segments into segments of up
    to ``merge_points`` points (0: never; its thresholds are in KB of dense
    vectors) while it holds more than ``merge_below`` segments.
    ``quantized``: where the dense vectors' quantized copy lives
    (:func:`_quantized`); None: no copy.
    """
    cold = qe.Memory.Cold
    segment_kb = max(1, segment_points * dim * 4 // 1024 - 1)
    if merge_points > segment_points:
        merged_kb, below = (merge_points + segment_points // 2) * dim * 4 // 1024, merge_below
    else:  # the first policy: a cap no two segments fit under, so no merges
        merged_kb, below = 2 * segment_kb, _NO_MERGES
    return qe.EdgeConfig(
        vectors={
            DENSE: qe.EdgeVectorParams(
                size=dim,
                distance=qe.Distance.Cosine,
                memory=cold,
                hnsw_config=qe.HnswIndexConfig(full_scan_threshold=_FULL_SCAN_KB, **_HNSW),  # type: ignore[arg-type]
                quantization_config=_quantized(quantized) if quantized is not None else None,
            )
        },
        sparse_vectors={LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf, on_disk=True, memory=cold)},
        hnsw_config=qe.HnswIndexConfig(full_scan_threshold=_FULL_SCAN_KB, **_HNSW),  # type: ignore[arg-type]
        payload_memory=cold,
        id_tracker_memory=cold,
        optimizers=qe.EdgeOptimizersConfig(
            indexing_threshold=segment_kb,
            max_segment_size=merged_kb,
            default_segment_number=below,
        ),
        wal_enabled=True if create else None,  # None when loading: fixed at creation
    )


class _Gate:
    """Many readers or one writer: searches, writes and compactions share the
    shard; releasing pages or closing it has it alone."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._writer = True
            self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class Journal:
    """What was written to a store since a copy of it was taken (while the
    copy is compacted elsewhere): the operations over a filter (forgetting,
    titles, an exchange re-chunked shorter), in order, and the ids of the
    points written or deleted by id. Only ids are kept for those, not the
    points: :meth:`EdgeStore.replay` reads them from the store at the end.

    Replaying the filter operations on the copy and then taking each noted
    point as the store holds it then (or deleting it) makes the copy equal
    the store: a point nobody wrote by id went through the same filter
    operations in both, from the same payload, and a noted point is taken
    whole.
    """

    operations: list[Any] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)

    def note(self, operation: Any, ids: Sequence[str] | None) -> None:
        if ids is None:
            self.operations.append(operation)
        else:
            self.ids.update(ids)


class EdgeStore:
    """A Qdrant Edge shard with a dense and a BM25 vector per point.

    Args:
        folder: the store folder (``<data dir>/store``).
        model: the embedding model's name, recorded with the store.
        dim: its dimension.
        segment_points: points written between compactions: the appendable
            segment's in-memory structures (BM25 postings, payload indexes)
            grow with it, by about 5 KB a point.
        merge_points: the most points a merge of sealed segments makes
            (0: no merging); ``None``: the store's own, ``MERGE_POINTS`` for
            a new store, none for a store made before merging was the
            default (merging it all at its next open would take minutes and
            peaked at 494 MB at 100k points).
        command: what this process is (``import``, ``serve``, ...), told to
            whoever is refused the store while it holds it.
        machine: this machine's name, recorded as ``host`` with each point.
    """

    def __init__(
        self,
        folder: Path,
        model: str,
        dim: int,
        segment_points: int = 1024,
        command: str = "(library)",
        machine: str = "",
        merge_points: int | None = None,
        memory: MemoryPolicy | None = None,
    ) -> None:
        self.folder = folder
        self.model = model
        self.dim = dim
        self.segment_points = segment_points
        self.merge_points = merge_points
        self.machine = machine
        self._shard: Any = None
        self._owner = StoreLock(folder.parent, command)
        self.id = ""  # the store's own id, from meta.json once open
        self._bm25 = qe.Bm25(qe.Bm25Config())
        self._gate = _Gate()
        self._written = 0  # points written since the last compaction
        self.writes = 0
        self.remembered: dict[str, tuple[int, float, Any]] = {}
        self._dense_params: Any = _FULL_VECTORS  # how dense lists are searched (see QUANTIZED_FROM)
        self._touched = False  # pages may have been mapped since the last release
        self._logged = True  # the shard has a write-ahead log
        self._journal: Journal | None = None  # what is written while a copy is compacted
        self.memory = memory or MemoryPolicy()  # the process's policy (none given: one of its own, no cap)
        self.memory.hold(self.release_memory)

    # -- lifecycle ---------------------------------------------------------

    def open(self) -> EdgeStore:
        """Take the lock, check the model, load or create the shard.

        Raises:
            StoreLocked: another process holds the store.
            ModelMismatch: the store was built with another model or dimension.
        """
        self._owner.acquire()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.check_room()
            self._check_meta()
            self._finish_swap()
            self._shard = self._load()
            self._touched = True  # loading maps the log and the payload indexes: ~100 MB at 250k points
            schema = self._shard.info().payload_schema
            missing = [name for name in INDEXED_FIELDS if name not in schema]
            for name in missing:
                self._shard.update(qe.UpdateOperation.create_field_index(name, _INDEX_PARAMS[INDEXED_FIELDS[name]]()))
            if missing:  # a flush passes over every segment: 1.4 s at 100k points, so only when needed
                self._shard.flush()
            self._compact()  # a store written by an older version may hold a big appendable segment
        except BaseException:
            self.close()
            raise
        return self

    def _load(self, merge_points: int | None = None, merge_below: int = _MERGE_BELOW) -> Any:
        """The shard, loaded or created; ``merge_points``, ``merge_below``:
        this load's merge policy instead of the store's own (a compaction
        step's)."""
        shard_dir = self.folder / "shard"
        try:
            if (shard_dir / "edge_config.json").exists():
                saved = orjson.loads((shard_dir / "edge_config.json").read_bytes())
                self._logged = saved.get("wal_enabled") is not False
                # a store keeps its quantized copy as it is, or goes without one if made before it:
                # adding or moving it rebuilds every segment at once (250k points: 2-5 minutes,
                # 1.2-1.4 GB); `reindex` makes a store with today's
                quantized = saved_quantization(saved)
                # a store merges unless it was made not to, or before merging was a policy (a compaction
                # cut short leaves its step's policy: merging)
                below = (saved.get("optimizers") or {}).get("default_segment_number")
                merging = below is not None and below != _NO_MERGES
                if merge_points is None:
                    own = MERGE_POINTS if merging else 0
                    merge_points = self.merge_points if self.merge_points is not None else own
                config = shard_config(
                    self.dim,
                    self.segment_points,
                    create=False,
                    merge_points=merge_points,
                    quantized=quantized,
                    merge_below=merge_below,
                )
                segments = shard_dir / "segments"
                many = _count_dirs(segments) > _READ_AHEAD_SEGMENTS
                with reading_ahead(segments, _NULL_INDEX_FILES) if many else nullcontext():
                    return qe.EdgeShard.load(str(shard_dir), config)
            merge_points = MERGE_POINTS if self.merge_points is None else self.merge_points
            config = shard_config(self.dim, self.segment_points, create=True, merge_points=merge_points)
            self._logged = config.wal_enabled is not False
            return qe.EdgeShard.create(str(shard_dir), config)
        except Exception as exc:  # the engine raises plain exceptions
            if "WouldBlock" in str(exc):
                raise StoreLocked(f"the store at {self.folder} is in use by another process") from exc
            raise SelfReflectError(
                f"cannot open the store at {shard_dir}: {exc} (`selfreflect reindex` rebuilds it)"
            ) from exc

    def close(self) -> None:
        with self._gate.exclusive():
            if self._shard is not None:
                self._shard.close()
                self._shard = None
        self._owner.release()

    def __enter__(self) -> EdgeStore:
        return self.open() if self._shard is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_meta(self) -> None:
        """Refuse a store of another model, or of a newer format; record
        model, dimension, format version and the store's id in a new one."""
        path = self.folder / "meta.json"
        if not path.exists():
            self.id = uuid.uuid4().hex
            meta = {"model": self.model, "dim": self.dim, "schema": SCHEMA, "id": self.id}
            path.write_bytes(orjson.dumps(meta))
            return
        try:
            meta = orjson.loads(path.read_bytes())
            if not isinstance(meta, dict):
                raise ValueError(f"a JSON {type(meta).__name__}, not an object")
        except (OSError, ValueError) as exc:
            raise SelfReflectError(
                f"the store's {path} is damaged ({exc}): run `selfreflect reindex` to rebuild the store"
            ) from exc
        if meta.get("model") != self.model or meta.get("dim") != self.dim:
            raise ModelMismatch(
                f"the store at {self.folder} was built with {meta.get('model')!r} "
                f"({meta.get('dim')} dimensions), not {self.model!r} ({self.dim}): "
                "run `selfreflect reindex` to rebuild it with this model, or use another --data-dir"
            )
        schema = meta.get("schema", 1)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise SelfReflectError(
                f"the store at {self.folder} was written by a newer selfreflect (format {schema!r}, "
                f"this version reads up to {SCHEMA}): upgrade selfreflect, or use another --data-dir"
            )
        if not isinstance(meta.get("id"), str):  # stores made before ids: give it one
            meta["id"] = uuid.uuid4().hex
            path.write_bytes(orjson.dumps(meta))
        self.id = str(meta["id"])

    # -- memory --------------------------------------------------------------

    @contextmanager
    def _use(self) -> Iterator[Any]:
        """The shard, shared with other readers and writers."""
        with self._gate.shared():
            if self._shard is None:
                raise SelfReflectError(f"the store at {self.folder} is closed")
            self._touched = True
            yield self._shard

    def _compact(self) -> None:
        """Seal the appendable segment into an immutable, memory-mapped one
        when it is big enough, flush, and hand back what that freed.

        Compaction is the process's memory peak: before building, the engine
        maps all of the new segment's BM25 store (a 32 MB page file) in. So
        the memory policy first gives back what it can.
        """
        self.check_room()  # building a segment writes a few MB through sparse mapped files
        with self._use() as shard:
            points = shard.info().points_count
        self._dense_params = None if points >= QUANTIZED_FROM else _FULL_VECTORS
        self.memory.before_peak()
        with self._use() as shard:
            sealed = shard.optimize()
            if sealed or self._written:
                shard.flush()  # lets the engine drop its log up to here
        self._written = 0
        if sealed:
            self.memory.after_peak()

    def segments(self) -> int:
        """How many segments the shard holds (a search visits each)."""
        with self._use() as shard:
            return int(shard.info().segments_count)

    def needs_compaction(self) -> bool:
        """The store holds many more segments than a compacted one of its size."""
        with self._use() as shard:
            info = shard.info()
        return bool(info.segments_count > info.points_count // COMPACT_POINTS + COMPACT_SLACK)

    def compact(self, points: int | None = None, progress: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Merge the small segments into segments of up to ``points`` points
        (``COMPACT_POINTS``); returns the segments before and after;
        ``progress`` is told how many segments are left after each step.

        In steps: the shard is loaded again with that merge cap, allowed to
        merge ``COMPACT_GROUP`` segments into one (the optimizer merges the
        smallest, as many as fit), and the file pages the merge mapped are
        handed back before the next step (in one go, merging 62 segments
        into 9 mapped the whole 1.4 GB store). Once nothing is left to
        merge, the shard is loaded with its own policy, which leaves the big
        segments alone (they are over its cap). Searches and writes go on
        during the merges and wait for the loads (about 1 s each at 250k
        points). A merge of ``points`` points is a memory peak of its own
        (32,768: 85-110 MB over the store alone), and holds Python's lock
        for its whole length (45 s for a step at 250k points): a daemon
        compacts a copy in another process instead
        (:mod:`selfreflect.compaction`). An interrupted compaction loses
        nothing: the engine swaps a merged segment in only once it is built.
        """
        before = self.segments()
        try:
            while True:
                self.check_room(self.merge_bytes(points or COMPACT_POINTS))
                self._reload(points or COMPACT_POINTS, max(1, self.segments() - COMPACT_GROUP + 1))
                self.memory.before_peak()
                with self._use() as shard:
                    merged = shard.optimize()
                    if merged:
                        shard.flush()
                self.memory.after_peak()
                if not merged:
                    break
                if progress:
                    progress(self.segments())
        finally:
            self._reload(None)
        return before, self.segments()

    def flush(self) -> None:
        """Write everything the shard holds to its files (a copy of them is then the store)."""
        with self._use() as shard:
            shard.flush()

    def swap_in(self, other: Path) -> None:
        """Replace the shard with the one in the store folder ``other`` (a
        compacted copy of this one, brought up to date). Searches and writes
        wait for the load; if it fails, the shard is put back as it was and
        the error raised. The old shard is moved into ``other``, for the
        caller to delete (at 250k points that takes seconds)."""
        shard, old = self.folder / "shard", self.folder / _SWAPPED_OUT
        with self._gate.exclusive():
            self._shard.close()
            self._shard = None
            shard.rename(old)
            (other / "shard").rename(shard)
            try:
                self._shard = self._load()
            except BaseException:
                shard.rename(other / "shard")
                old.rename(shard)
                self._shard = self._load()
                raise
        old.rename(other / _SWAPPED_OUT)

    def _finish_swap(self) -> None:
        """A process stopped in :meth:`swap_in`: keep the new shard if it is
        in place, else put the old one back."""
        old = self.folder / _SWAPPED_OUT
        if not old.exists():
            return
        if (self.folder / "shard").exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(self.folder / "shard")

    def _reload(self, merge_points: int | None, merge_below: int = _MERGE_BELOW) -> None:
        with self._gate.exclusive():
            self._shard.close()
            self._shard = None
            self._shard = self._load(merge_points, merge_below)

    def start_journal(self) -> None:
        """Note what is written from now on (a copy of the store was just
        taken): :meth:`replay` brings the copy up to date."""
        self._journal = Journal()

    def stop_journal(self) -> Journal | None:
        """Stop noting; what was noted (None: nothing was being noted)."""
        journal, self._journal = self._journal, None
        return journal

    def replay(self, journal: Journal, into: EdgeStore, batch: int = 256) -> int:
        """Write into ``into`` (a copy of this store taken when ``journal``
        started) what was written here since; returns how many points were
        copied or deleted. Nothing may be written here meanwhile."""
        for operation in journal.operations:
            into._write(operation)
        ids = sorted(journal.ids)
        for start in range(0, len(ids), batch):
            some: list[Any] = ids[start : start + batch]
            into._write(qe.UpdateOperation.delete_points(some), ids=some)  # then those still here, as they are
            into.load(self.get(some))
        return len(ids)

    def release_memory(self) -> None:
        """Unmap the store's file pages that reads and writes left resident."""
        if not self._touched:
            return
        with self._gate.exclusive():
            self._touched = False
            release_mapped_pages(os.path.realpath(self.folder))

    # -- writes --------------------------------------------------------------

    def check_room(self, more: int = 0) -> None:
        """Raise :class:`DiskFull` unless the disk has room for a write (and
        ``more`` bytes).

        Raises:
            DiskFull: less than ``MIN_FREE_BYTES`` (and ``more``) free.
        """
        free = shutil.disk_usage(self.folder).free
        if free < MIN_FREE_BYTES + more:
            raise DiskFull(
                f"the disk holding {self.folder} has {free / 2**20:.0f} MB free; the store needs "
                f"{(MIN_FREE_BYTES + more) / 2**20:.0f} MB to write safely: free some space and run the command "
                "again (nothing was lost: reading resumes where it stopped)",
                free=free,
            )

    def merge_bytes(self, points: int = COMPACT_POINTS) -> int:
        """About what a merge of ``points`` points writes before the segments
        it merges are deleted (the store's bytes a point, on disk)."""
        with self._use() as shard:
            count = shard.info().points_count
        return disk_bytes(self.folder) * min(points, count) // max(count, 1)

    def _write(self, operation: Any, points: int = 0, ids: Sequence[str] | None = None) -> None:
        """Apply an update: when this returns, it is on disk (in the log).
        ``ids``: the points it writes or deletes, when it names them (else
        it is an operation over a filter).

        Raises:
            DiskFull: no room on the disk (nothing was written).
        """
        self.check_room()
        with self._use() as shard:
            shard.update(operation)
            if not self._logged:
                shard.flush()
            self.writes += 1  # after: an answer computed meanwhile is not kept as the new one
            journal = self._journal  # once: a failed compaction drops it from its own thread
            if journal is not None:
                journal.note(operation, ids)
        self._written += points
        if self._written >= self.segment_points:
            self._compact()

    def upsert(self, records: Sequence[Record]) -> None:
        self.load(
            [
                RawPoint(r.id, [float(x) for x in r.vector], sparse(self._bm25.embed_document(r.lexical)), r.payload)
                for r in records
            ]
        )

    def load(self, points: Sequence[RawPoint]) -> None:
        written = [
            qe.Point(
                p.id,
                {DENSE: p.dense, LEXICAL: qe.SparseVector(indices=p.sparse[0], values=p.sparse[1])},
                {**p.payload, "host": self.machine} if self.machine and "host" not in p.payload else p.payload,
            )
            for p in points
        ]
        if written:
            self._write(qe.UpdateOperation.upsert_points(written), len(written), [p.id for p in points])

    def key(self, id: str) -> str:
        return id

    def dump(self, after: str | None, limit: int) -> tuple[list[RawPoint], str | None]:
        with self._use() as shard:
            records, following = shard.scroll(
                qe.ScrollRequest(limit=limit, offset=after, with_payload=True, with_vector=True)
            )
        return [_raw(r) for r in records], (str(following) if following is not None else None)

    def get(self, ids: Sequence[str]) -> list[RawPoint]:
        if not ids:
            return []
        with self._use() as shard:
            return [_raw(r) for r in shard.retrieve(list(ids), with_payload=True, with_vector=True)]

    def text_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        with self._use() as shard:
            found = shard.retrieve(list(ids), with_payload=qe.PayloadSelector.Include(["text_hash"]), with_vector=False)
        return {str(r.id): (r.payload or {}).get("text_hash", "") for r in found}

    def vectors(self, ids: Sequence[str]) -> dict[str, list[float]]:
        """The dense vector of each point (for a hit's own relevance)."""
        if not ids:
            return {}
        with self._use() as shard:
            found = shard.retrieve(list(ids), with_payload=False, with_vector=True)
        return {str(r.id): list((r.vector or {}).get(DENSE) or []) for r in found}

    def delete(self, where: SearchFilter) -> int:
        """Delete every point ``where`` selects; returns how many there were."""
        flt = to_filter(where)
        if flt is None:
            raise SelfReflectError("refusing to delete everything: give what to delete")
        count = self.count(where)
        self._write(qe.UpdateOperation.delete_points_by_filter(flt))
        self.remembered = {}  # what was forgotten is gone from every answer at once, lagging or not
        return count

    def delete_transcript(self, transcript: str) -> None:
        self._write(qe.UpdateOperation.delete_points_by_filter(qe.Filter(must=[_match("transcript", transcript)])))

    def delete_exchange_tail(self, transcript: str, exchange: str, keep: int) -> None:
        """Drop chunks ``keep..`` of an exchange that was re-chunked shorter."""
        self._write(
            qe.UpdateOperation.delete_points_by_filter(
                qe.Filter(
                    must=[
                        _match("transcript", transcript),
                        _match("exchange", exchange),
                        qe.FieldCondition("ordinal", range=qe.RangeFloat(gte=keep)),
                    ]
                )
            )
        )

    def set_title(self, session_id: str, title: str) -> None:
        """Give every chunk of a session its title (a title line can come
        after the chunks it names)."""
        flt = qe.Filter(must=[_match("session_id", session_id)])
        self._write(qe.UpdateOperation.set_payload_by_filter(flt, {"title": title}))

    # -- reads ---------------------------------------------------------------

    def hybrid(
        self, vector: Sequence[float], text: str, where: SearchFilter, limit: int, plan: FusionPlan
    ) -> list[Hit]:
        flt = to_filter(where)
        dense = qe.Query.Nearest(list(vector), using=DENSE)
        prefetches = [qe.Prefetch(limit=plan.depth, query=dense, filter=flt, params=self._dense_params)]
        weights = [plan.dense_weight]
        sparse = self._bm25.embed_query(text)
        if sparse.indices:
            prefetches.append(qe.Prefetch(limit=plan.depth, query=qe.Query.Nearest(sparse, using=LEXICAL), filter=flt))
            weights.append(plan.lexical_weight)
        request = qe.QueryRequest(
            limit=limit,
            prefetches=prefetches,
            query=qe.Fusion.Rrf(k=plan.k, weights=weights),  # type: ignore[arg-type]  # stub lists Fusion, not Rrf
            filter=flt,
            with_payload=True,
        )
        return self._query(request)

    def dense(self, vector: Sequence[float], where: SearchFilter, limit: int) -> list[Hit]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(list(vector), using=DENSE),
            filter=to_filter(where),
            with_payload=True,
            params=self._dense_params,
        )
        return self._query(request)

    def lexical(self, text: str, where: SearchFilter, limit: int) -> list[Hit]:
        sparse = self._bm25.embed_query(text)
        if not sparse.indices:
            return []
        request = qe.QueryRequest(
            limit=limit, query=qe.Query.Nearest(sparse, using=LEXICAL), filter=to_filter(where), with_payload=True
        )
        return self._query(request)

    def _query(self, request: qe.QueryRequest) -> list[Hit]:
        with self._use() as shard:
            return [_hit(p) for p in shard.query(request)]

    def scroll(self, where: SearchFilter, limit: int) -> list[dict[str, Any]]:
        with self._use() as shard:
            records, _ = shard.scroll(
                qe.ScrollRequest(limit=limit, filter=to_filter(where), with_payload=True, with_vector=False)
            )
        return [dict(r.payload or {}, id=str(r.id)) for r in records]

    def count(self, where: SearchFilter) -> int:
        flt = to_filter(where)
        with self._use() as shard:
            if flt is None:  # the segments' own tally (exact here: merges run only inside optimize())
                return int(shard.info().points_count)  # 0.4 ms at 250k points, against 37 ms counting them
            return int(shard.count(qe.CountRequest(exact=True, filter=flt)))

    def facet(self, key: str, where: SearchFilter, limit: int, exact: bool = True) -> list[tuple[Any, int]]:
        with self._use() as shard:
            response = shard.facet(qe.FacetRequest(key=key, limit=limit, exact=exact, filter=to_filter(where)))
        return [(hit.value, hit.count) for hit in response.hits]

    def latest(self, where: SearchFilter) -> dict[str, Any] | None:
        newest = self.recent(where, 1)
        return newest[0] if newest else None

    def recent(self, where: SearchFilter, limit: int) -> list[dict[str, Any]]:
        """Payloads newest first."""
        with self._use() as shard:
            records, _ = shard.scroll(
                qe.ScrollRequest(
                    limit=limit,
                    filter=to_filter(where),
                    with_payload=True,
                    order_by=qe.OrderBy("timestamp", direction=qe.Direction.Desc),
                )
            )
        return [dict(r.payload or {}, id=str(r.id)) for r in records]

    def size_bytes(self) -> int:
        """Bytes on disk (the engine preallocates sparse files: count blocks, not lengths)."""
        return disk_bytes(self.folder)


def _count_dirs(folder: Path) -> int:
    """How many folders ``folder`` holds (0 if it cannot be listed)."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for entry in entries if entry.is_dir())
    except OSError:
        return 0


def to_filter(where: SearchFilter) -> qe.Filter | None:
    """The Qdrant Edge filter for a :class:`SearchFilter` (``None`` when unrestricted)."""
    must, must_not = conditions(where)
    if not must and not must_not:
        return None
    return qe.Filter(must=[_condition(c) for c in must] or None, must_not=[_condition(c) for c in must_not] or None)


def _condition(condition: Condition) -> Any:
    kind, key, *rest = condition
    if kind == "either":
        return qe.Filter(should=[_condition(c) for c in key])
    if kind == "since":
        return qe.FieldCondition(key, range=qe.RangeDateTime(gte=rest[0], lt=rest[1]))
    if kind == "any":
        return _any(key, rest[0])
    return _match(key, rest[0])


def _raw(record: Any) -> RawPoint:
    vectors = record.vector or {}
    lexical = vectors.get(LEXICAL)
    words = sparse(lexical) if lexical is not None else ([], [])
    return RawPoint(str(record.id), [float(x) for x in vectors.get(DENSE) or []], words, dict(record.payload or {}))


def sparse(vector: Any) -> tuple[list[int], list[float]]:
    """A BM25 sparse vector as (token ids, weights)."""
    return list(vector.indices), [float(v) for v in vector.values]


def _match(key: str, value: str) -> qe.FieldCondition:
    return qe.FieldCondition(key, match=qe.MatchValue(value))


def _any(key: str, values: list[str]) -> qe.FieldCondition:
    return qe.FieldCondition(key, match=qe.MatchAny(values))


def _hit(point: Any) -> Hit:
    return Hit(id=str(point.id), score=float(point.score), payload=dict(point.payload or {}))
