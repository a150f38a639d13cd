"""A Qdrant server (or cluster) store, through the official ``qdrant-client``.

The same collection as the embedded store: a dense vector (cosine) and a BM25
sparse vector with the IDF modifier per point (the sparse vectors are made
here, by the same BM25 as the embedded store, so both rank alike), the same
payload and payload indexes, the same fusion, filters and results. Chosen by
``QDRANT_URL``; ``qdrant-client``'s local mode (a path or ``:memory:``)
speaks the same API, which is how the tests run it.

Many machines may write into one collection. Each point records the machine
that wrote it (``host``) and the writer's own id (``source_id``), and is
stored under an id made from both (:meth:`ServerStore.key`), so two machines
never overwrite each other; every delete the importer makes touches only this
machine's points. Read positions stay in each machine's own data folder.

The model and dimension are recorded in the collection's metadata; another
model is refused, as by the embedded store. A server that cannot be reached
raises :class:`~selfreflect.errors.StoreUnavailable`: the daemon keeps its
positions and retries with backoff (nothing is lost while it is down).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import httpx
import qdrant_edge as qe
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from selfreflect.errors import ConfigError, ModelMismatch, SelfReflectError, StoreUnavailable
from selfreflect.lock import StoreLock
from selfreflect.memory import MemoryPolicy
from selfreflect.settings import Settings
from selfreflect.store import INDEXED_FIELDS, Condition, FusionPlan, Hit, RawPoint, Record, SearchFilter, conditions
from selfreflect.store.edge import DENSE, LEXICAL, SCHEMA, sparse

KEY_NAMESPACE = uuid.UUID("0c9e6f55-3c55-4b43-a1a4-0a6f3b8f2d71")
_UNAVAILABLE = {502, 503, 504}
T = TypeVar("T")


class ServerStore:
    """One collection on a Qdrant server, or in ``qdrant-client``'s local mode.

    Args:
        location: ``http(s)://host:port`` of a server, a folder (local
            mode, on disk) or ``:memory:``.
        model, dim: the embedding model, recorded with the collection.
        machine: this machine's name (``host`` of the points it writes).
        collection: the collection's name.
        api_key: the server's API key.
        shards, replicas, write_consistency: the collection's layout on a
            cluster, used when this store creates it.
        on_disk: vectors and payloads on disk.
        quantization: ``none`` or ``int8``.
        timeout: seconds per request.
        lock: the data folder's store lock, held while open: one process at
            a time writes this machine's points and read positions.
    """

    def __init__(
        self,
        location: str,
        model: str,
        dim: int,
        machine: str,
        collection: str = "selfreflect",
        api_key: str | None = None,
        shards: int = 1,
        replicas: int = 1,
        write_consistency: int = 1,
        on_disk: bool = True,
        quantization: str = "none",
        timeout: float = 10.0,
        lock: StoreLock | None = None,
        memory: MemoryPolicy | None = None,
    ) -> None:
        if not machine:
            raise ConfigError("a shared store needs this machine's name: set SELFREFLECT_MACHINE")
        self.location = location
        self.model = model
        self.dim = dim
        self.machine = machine
        self.collection = collection
        self.id = ""
        self.writes: int | None = None  # other machines write to the collection too
        self.remembered: dict[str, tuple[int, float, Any]] = {}
        self.memory = memory or MemoryPolicy()  # the process's (the server holds the data: nothing mapped here)
        self._api_key = api_key
        self._layout = (shards, replicas, write_consistency, on_disk, quantization)
        self._timeout = timeout
        self._lock = lock
        self._client: QdrantClient | None = None
        self._bm25 = qe.Bm25(qe.Bm25Config())

    @classmethod
    def from_settings(
        cls, settings: Settings, model: str, dim: int, command: str | None = None, memory: MemoryPolicy | None = None
    ) -> ServerStore:
        """The store the settings name; with ``command``, holding the data
        folder's lock under that name while open; ``memory``: the process's
        memory policy."""
        return cls(
            str(settings.qdrant_url),
            model,
            dim,
            settings.machine,
            settings.qdrant_collection,
            settings.qdrant_api_key,
            settings.qdrant_shards,
            settings.qdrant_replicas,
            settings.qdrant_write_consistency,
            settings.qdrant_on_disk,
            settings.qdrant_quantization,
            lock=StoreLock(settings.data_dir, command) if command else None,
            memory=memory,
        )

    # -- lifecycle ---------------------------------------------------------

    @property
    def remote(self) -> bool:
        """A server, not ``qdrant-client``'s local mode."""
        return self.location.startswith(("http://", "https://"))

    def open(self) -> ServerStore:
        """Connect, create the collection if it is new, check its model.

        Raises:
            StoreUnavailable: the server cannot be reached.
            ModelMismatch: the collection holds another model's vectors.
            StoreLocked: another process holds this data folder.
        """
        if self._lock is not None:
            self._lock.acquire()
        if self.remote:
            self._client = QdrantClient(
                url=self.location, api_key=self._api_key, timeout=int(self._timeout), check_compatibility=False
            )
        elif self.location == ":memory:":
            self._client = QdrantClient(location=":memory:")
        else:
            self._client = QdrantClient(path=self.location)
        try:
            self._call(self._prepare)
        except BaseException:
            self.close()
            raise
        return self

    def _prepare(self, client: QdrantClient) -> None:
        if not client.collection_exists(self.collection):
            shards, replicas, consistency, on_disk, quantization = self._layout
            client.create_collection(
                self.collection,
                vectors_config={
                    DENSE: models.VectorParams(size=self.dim, distance=models.Distance.COSINE, on_disk=on_disk)
                },
                sparse_vectors_config={
                    LEXICAL: models.SparseVectorParams(
                        modifier=models.Modifier.IDF, index=models.SparseIndexParams(on_disk=on_disk)
                    )
                },
                shard_number=shards,
                replication_factor=replicas,
                write_consistency_factor=consistency,
                on_disk_payload=on_disk,
                quantization_config=(
                    models.ScalarQuantization(
                        scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
                    )
                    if quantization == "int8"
                    else None
                ),
                metadata={"model": self.model, "dim": self.dim, "schema": SCHEMA, "id": uuid.uuid4().hex},
            )
            for name, kind in INDEXED_FIELDS.items() if self.remote else ():  # local mode has no payload indexes
                schema = models.PayloadSchemaType.DATETIME if kind == "datetime" else models.PayloadSchemaType.KEYWORD
                client.create_payload_index(self.collection, name, field_schema=schema)
        meta = client.get_collection(self.collection).config.metadata or {}
        if meta.get("model") != self.model or meta.get("dim") != self.dim:
            raise ModelMismatch(
                f"the collection {self.collection!r} at {self.location} was built with {meta.get('model')!r} "
                f"({meta.get('dim')} dimensions), not {self.model!r} ({self.dim}): "
                "set QDRANT_COLLECTION to another collection, or run `selfreflect reindex` to rebuild it"
            )
        self.id = str(meta.get("id", ""))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> ServerStore:
        return self.open() if self._client is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, work: Callable[[QdrantClient], T]) -> T:
        """Run ``work`` on the client; a server that cannot be reached is
        :class:`StoreUnavailable`, other refusals a :class:`SelfReflectError`."""
        if self._client is None:
            raise SelfReflectError(f"the store at {self.location} is closed")
        try:
            return work(self._client)
        except (ResponseHandlingException, httpx.TransportError) as exc:
            raise StoreUnavailable(f"the Qdrant server at {self.location} cannot be reached: {exc}") from exc
        except UnexpectedResponse as exc:
            if exc.status_code in _UNAVAILABLE:
                raise StoreUnavailable(f"the Qdrant server at {self.location} is not ready: {exc}") from exc
            raise SelfReflectError(f"the Qdrant server at {self.location} refused: {exc}") from exc

    # -- writes --------------------------------------------------------------

    def key(self, id: str) -> str:
        return str(uuid.uuid5(KEY_NAMESPACE, f"{self.machine}|{id}"))

    def upsert(self, records: Sequence[Record]) -> None:
        self.load(
            [
                RawPoint(
                    self.key(r.id),
                    [float(x) for x in r.vector],
                    sparse(self._bm25.embed_document(r.lexical)),
                    {**r.payload, "host": self.machine, "source_id": r.id},
                )
                for r in records
            ]
        )

    def load(self, points: Sequence[RawPoint]) -> None:
        written = [
            models.PointStruct(
                id=p.id,
                vector={
                    DENSE: p.dense,
                    LEXICAL: models.SparseVector(indices=p.sparse[0], values=p.sparse[1]),
                },
                payload={**p.payload, "host": p.payload.get("host") or self.machine},
            )
            for p in points
        ]
        if written:
            self._call(lambda c: c.upsert(self.collection, written, wait=True))

    def text_hashes(self, ids: Sequence[str]) -> dict[str, str]:
        if not ids:
            return {}
        keys = {self.key(i): i for i in ids}
        found = self._call(lambda c: c.retrieve(self.collection, list(keys), with_payload=["text_hash"]))
        return {keys[str(r.id)]: (r.payload or {}).get("text_hash", "") for r in found}

    def vectors(self, ids: Sequence[str]) -> dict[str, list[float]]:
        if not ids:
            return {}
        found = self._call(lambda c: c.retrieve(self.collection, list(ids), with_vectors=[DENSE]))
        return {str(r.id): list(_named(r.vector).get(DENSE) or []) for r in found}

    def delete(self, where: SearchFilter) -> int:
        """Delete this machine's points that ``where`` selects; how many."""
        if to_filter(where) is None:
            raise SelfReflectError("refusing to delete everything: give what to delete")
        mine = _own(where, self.machine)
        count = self.count(mine)
        self._delete(to_filter(mine))
        return count

    def delete_transcript(self, transcript: str) -> None:
        self._delete(to_filter(SearchFilter(transcript=transcript, host=self.machine)))

    def delete_exchange_tail(self, transcript: str, exchange: str, keep: int) -> None:
        self._delete(
            models.Filter(
                must=[
                    _match("transcript", transcript),
                    _match("host", self.machine),
                    _match("exchange", exchange),
                    models.FieldCondition(key="ordinal", range=models.Range(gte=keep)),
                ]
            )
        )

    def set_title(self, session_id: str, title: str) -> None:
        """Give every chunk of a session this machine wrote its title."""
        flt = to_filter(SearchFilter(session_id=session_id, host=self.machine))
        assert flt is not None  # a session: never everything
        selector = models.FilterSelector(filter=flt)
        self._call(lambda c: c.set_payload(self.collection, payload={"title": title}, points=selector, wait=True))

    def _delete(self, flt: models.Filter | None) -> None:
        assert flt is not None  # never everything
        selector = models.FilterSelector(filter=flt)
        self._call(lambda c: c.delete(self.collection, points_selector=selector, wait=True))

    # -- reads ---------------------------------------------------------------

    def hybrid(
        self, vector: Sequence[float], text: str, where: SearchFilter, limit: int, plan: FusionPlan
    ) -> list[Hit]:
        flt = to_filter(where)
        prefetch = [models.Prefetch(query=list(vector), using=DENSE, limit=plan.depth, filter=flt)]
        weights = [plan.dense_weight]
        words = self._bm25.embed_query(text)
        if words.indices:
            query = models.SparseVector(indices=list(words.indices), values=[float(v) for v in words.values])
            prefetch.append(models.Prefetch(query=query, using=LEXICAL, limit=plan.depth, filter=flt))
            weights.append(plan.lexical_weight)
        fusion = models.RrfQuery(rrf=models.Rrf(k=plan.k, weights=weights))
        return self._query(
            lambda c: c.query_points(
                self.collection, prefetch=prefetch, query=fusion, limit=limit, query_filter=flt, with_payload=True
            )
        )

    def dense(self, vector: Sequence[float], where: SearchFilter, limit: int) -> list[Hit]:
        flt = to_filter(where)
        return self._query(
            lambda c: c.query_points(
                self.collection, query=list(vector), using=DENSE, limit=limit, query_filter=flt, with_payload=True
            )
        )

    def lexical(self, text: str, where: SearchFilter, limit: int) -> list[Hit]:
        words = self._bm25.embed_query(text)
        if not words.indices:
            return []
        query = models.SparseVector(indices=list(words.indices), values=[float(v) for v in words.values])
        flt = to_filter(where)
        return self._query(
            lambda c: c.query_points(
                self.collection, query=query, using=LEXICAL, limit=limit, query_filter=flt, with_payload=True
            )
        )

    def _query(self, work: Callable[[QdrantClient], Any]) -> list[Hit]:
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in self._call(work).points]

    def scroll(self, where: SearchFilter, limit: int) -> list[dict[str, Any]]:
        flt = to_filter(where)
        records, _ = self._call(lambda c: c.scroll(self.collection, scroll_filter=flt, limit=limit, with_payload=True))
        return [dict(r.payload or {}, id=str(r.id)) for r in records]

    def count(self, where: SearchFilter) -> int:
        flt = to_filter(where)
        return int(self._call(lambda c: c.count(self.collection, count_filter=flt, exact=True)).count)

    def facet(self, key: str, where: SearchFilter, limit: int, exact: bool = True) -> list[tuple[Any, int]]:
        flt = to_filter(where)
        response = self._call(lambda c: c.facet(self.collection, key, facet_filter=flt, limit=limit, exact=exact))
        return [(hit.value, hit.count) for hit in response.hits]

    def latest(self, where: SearchFilter) -> dict[str, Any] | None:
        newest = self.recent(where, 1)
        return newest[0] if newest else None

    def recent(self, where: SearchFilter, limit: int) -> list[dict[str, Any]]:
        flt = to_filter(where)
        order = models.OrderBy(key="timestamp", direction=models.Direction.DESC)
        records, _ = self._call(
            lambda c: c.scroll(self.collection, scroll_filter=flt, limit=limit, with_payload=True, order_by=order)
        )
        return [dict(r.payload or {}, id=str(r.id)) for r in records]

    def dump(self, after: str | None, limit: int) -> tuple[list[RawPoint], str | None]:
        records, following = self._call(
            lambda c: c.scroll(self.collection, limit=limit, offset=after, with_payload=True, with_vectors=True)
        )
        return [_raw(r) for r in records], (str(following) if following is not None else None)

    def get(self, ids: Sequence[str]) -> list[RawPoint]:
        if not ids:
            return []
        found = self._call(lambda c: c.retrieve(self.collection, list(ids), with_payload=True, with_vectors=True))
        return [_raw(r) for r in found]

    def size_bytes(self) -> int:
        """Not known here: the server keeps the bytes."""
        return 0

    def needs_compaction(self) -> bool:
        return False

    def compact(self) -> tuple[int, int]:
        """Nothing to do: the server's optimizer merges its segments."""
        return 0, 0

    def release_memory(self) -> None:
        """Nothing to give back: the server holds the data."""


def _own(where: SearchFilter, machine: str) -> SearchFilter:
    return replace(where, host=machine)


def _raw(record: Any) -> RawPoint:
    vectors = _named(record.vector)
    words = vectors.get(LEXICAL)
    lexical = (list(words.indices), [float(v) for v in words.values]) if words is not None else ([], [])
    return RawPoint(str(record.id), [float(x) for x in vectors.get(DENSE) or []], lexical, dict(record.payload or {}))


def _named(vector: Any) -> dict[str, Any]:
    return vector if isinstance(vector, dict) else {}


def _instant(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def to_filter(where: SearchFilter) -> models.Filter | None:
    """The Qdrant filter for a :class:`SearchFilter` (``None`` when unrestricted)."""
    must, must_not = conditions(where)
    if not must and not must_not:
        return None
    return models.Filter(must=[_condition(c) for c in must] or None, must_not=[_condition(c) for c in must_not] or None)


def _condition(condition: Condition) -> Any:
    kind, key, *rest = condition
    if kind == "either":
        return models.Filter(should=[_condition(c) for c in key])
    if kind == "since":
        return models.FieldCondition(key=key, range=models.DatetimeRange(gte=_instant(rest[0]), lt=_instant(rest[1])))
    if kind == "any":
        return _any(key, rest[0])
    return _match(key, rest[0])


def _match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _any(key: str, values: list[str]) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchAny(any=values))
