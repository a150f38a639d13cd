"""Migrate: copy an index between stores, vectors and all (no embedding).

``selfreflect migrate --to URL`` copies the embedded store into a Qdrant
server collection; ``--from URL`` copies a collection into the embedded
store. Points are read in id order in batches and written as they are; after
each batch a checkpoint in the data folder records where to go on, so an
interrupted migration resumes (writes are idempotent: a point copied twice is
the same point). At the end, counts and a sample of points (payload and
vectors) are compared.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from selfreflect.errors import SelfReflectError
from selfreflect.store import RawPoint, SearchFilter, Store

BATCH = 256
SAMPLE = 50


@dataclass(frozen=True)
class Migration:
    """What a migration did: points copied (this run and resumed ones), the
    counts compared, and how many sampled points matched."""

    copied: int
    resumed_from: int
    source_count: int
    target_count: int
    sampled: int
    matched: int


def checkpoint_file(data_dir: Path, direction: str, location: str) -> Path:
    digest = hashlib.sha1(f"{direction}|{location}".encode()).hexdigest()[:12]
    return data_dir / f"migrate-{direction}-{digest}.json"


def migrate(
    source: Store,
    target: Store,
    machine: str,
    checkpoint: Path,
    progress: Callable[[int], None] | None = None,
) -> Migration:
    """Copy every point of ``source`` into ``target``, then verify.

    Points this machine wrote (or with no machine recorded) are keyed in the
    target by the writer's own id, so the importer keeps recognising them;
    other machines' points keep their ids.

    Raises:
        SelfReflectError: the copy does not match (the checkpoint is kept).
    """
    saved = orjson.loads(checkpoint.read_bytes()) if checkpoint.exists() else {}
    after: str | None = saved.get("after")
    copied = int(saved.get("copied", 0))
    resumed_from = copied
    while True:
        points, following = source.dump(after, BATCH)
        target.load([_moved(p, target, machine) for p in points])
        copied += len(points)
        after = following
        _save(checkpoint, {"after": after, "copied": copied})
        if progress:
            progress(copied)
        if following is None:
            break
    sampled, matched = _verify(source, target, machine)
    source_count, target_count = source.count(SearchFilter()), target.count(SearchFilter())
    if target_count < source_count or matched < sampled:
        raise SelfReflectError(
            f"the copy does not match: {source_count} points in the source, {target_count} in the target, "
            f"{matched} of {sampled} sampled points equal; run the migration again to resume"
        )
    checkpoint.unlink(missing_ok=True)
    return Migration(copied - resumed_from, resumed_from, source_count, target_count, sampled, matched)


def _moved(point: RawPoint, target: Store, machine: str) -> RawPoint:
    host = point.payload.get("host") or machine
    writer = str(point.payload.get("source_id") or point.id)
    key = target.key(writer) if host == machine else point.id
    return RawPoint(key, point.dense, point.sparse, {**point.payload, "host": host, "source_id": writer})


def _verify(source: Store, target: Store, machine: str) -> tuple[int, int]:
    """Sample points of the source; how many are in the target, equal."""
    pool: list[RawPoint] = []
    after: str | None = None
    while len(pool) < SAMPLE * 20:  # a sample from the first pages is enough to catch a broken copy
        points, after = source.dump(after, BATCH)
        pool += points
        if after is None:
            break
    chosen = [_moved(p, target, machine) for p in random.sample(pool, min(SAMPLE, len(pool)))]
    copies = {p.id: p for p in target.get([p.id for p in chosen])}
    return len(chosen), sum(1 for p in chosen if p.id in copies and _same(p, copies[p.id]))


def _same(a: RawPoint, b: RawPoint) -> bool:
    """Equal payloads and vectors (cosine vectors may come back normalised)."""
    if a.payload != b.payload or len(a.dense) != len(b.dense) or a.sparse[0] != b.sparse[0]:
        return False
    norm = math.sqrt(sum(x * x for x in a.dense)) or 1.0
    return all(abs(x / norm - y) < 1e-4 or abs(x - y) < 1e-4 for x, y in zip(a.dense, b.dense, strict=True))


def _save(path: Path, state: dict[str, object]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(orjson.dumps(state))
    os.replace(temporary, path)
