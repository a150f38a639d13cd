"""One contract every store passes: Qdrant Edge (embedded), and a Qdrant
server through ``qdrant-client`` in its local mode (on disk and in memory),
which speaks the server's API. The same real transcripts are imported into
each with the real pipeline; the same inputs must give the same points,
payloads and result order (within ties) as the embedded store.

A real server is tried only when asked: ``RUN_INTEGRATION_TESTS=1
QDRANT_URL=http://...``. No Qdrant server runs where CI runs, so there the
server case is skipped with that message, not faked.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from selfreflect.embed import OnnxEmbedder
from selfreflect.errors import ModelMismatch, SelfReflectError, StoreUnavailable
from selfreflect.importer import Importer
from selfreflect.migrate import checkpoint_file, migrate
from selfreflect.search import SearchQuery, search
from selfreflect.settings import Settings
from selfreflect.state import State
from selfreflect.store import FusionPlan, Hit, SearchFilter, Store
from selfreflect.store.edge import EdgeStore
from selfreflect.store.server import ServerStore
from selfreflect.windows import FIELD

from conftest import REAL, make_settings

pytestmark = pytest.mark.timeout(600)

FILES = {
    "-home-dev-viewer": [
        "d-kimuson__claude-code-viewer__1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl",
        "d-kimuson__claude-code-viewer__5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl",
    ],
    "-home-dev-episodic": ["obra__episodic-memory__tiny-conversation.jsonl"],
    "-home-dev-spotter": ["marot__spotter__tool_heavy.jsonl", "marot__spotter__agent-a2898e3.jsonl"],
}
QUERIES = [
    "ls -la",
    "Proactiveness",
    "why does the assistant keep asking permission before fixing obvious problems",
    "useSimpleTodos",
    "launch the web app's server as a background process",
    "to_relative_path",
]
MACHINE = "laptop-1"
SERVER = os.environ.get("QDRANT_URL", "") if os.environ.get("RUN_INTEGRATION_TESTS") == "1" else ""
KINDS = ["edge", "qdrant-local", "qdrant-memory", "qdrant-server"]


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    """The real model on one thread: its sums then come out the same every
    time, so stores filled one after the other hold the same vectors."""
    model = OnnxEmbedder(threads=1)
    model.load()
    return model


@dataclass
class Filled:
    store: Store
    settings: Settings


def make_store(kind: str, folder: Path, embedder: OnnxEmbedder, machine: str = MACHINE, dim: int = 0) -> Store:
    dim = dim or embedder.dim
    if kind == "edge":
        return EdgeStore(folder / "store", embedder.name, dim, machine=machine).open()
    if kind == "qdrant-server":
        if not SERVER:
            pytest.skip(
                "no Qdrant server here: the server store runs against qdrant-client's local mode instead; "
                "set RUN_INTEGRATION_TESTS=1 QDRANT_URL=http://... to run this against a real server"
            )
        name = f"selfreflect-test-{folder.name}-{uuid.uuid4().hex[:8]}"
        return ServerStore(
            SERVER, embedder.name, dim, machine, collection=name, api_key=os.environ.get("QDRANT_API_KEY")
        ).open()
    location = ":memory:" if kind == "qdrant-memory" else str(folder / "qdrant")
    return ServerStore(location, embedder.name, dim, machine).open()


def fill(kind: str, root: Path, embedder: OnnxEmbedder, machine: str = MACHINE, at: Path | None = None) -> Filled:
    settings = make_settings(root, machine=machine)
    for folder, names in FILES.items():
        (settings.projects_dir / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copyfile(REAL / name, settings.projects_dir / folder / name)
    store = make_store(kind, at or root, embedder, machine)
    Importer(settings, store, embedder, State.load(settings.state_file)).run()
    return Filled(store, settings)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, embedder: OnnxEmbedder) -> Iterator[Filled]:
    """The embedded store, filled: what every store must match."""
    filled = fill("edge", tmp_path_factory.mktemp("reference"), embedder)
    yield filled
    filled.store.close()


@pytest.fixture(scope="module", params=KINDS)
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, embedder: OnnxEmbedder
) -> Iterator[Filled]:
    """Each store, filled the same way (in a folder of the same name, so
    transcripts have the same paths as the reference's)."""
    root = tmp_path_factory.mktemp("reference", numbered=True)
    filled = fill(request.param, root, embedder)
    yield filled
    filled.store.close()


def ident(payload: dict[str, Any]) -> tuple[str, str, int]:
    """A chunk the same in every store: its transcript (by name), exchange and ordinal."""
    return Path(payload["transcript"]).name, str(payload["exchange"]), int(payload["ordinal"])


SAME = 1e-4  # engines compute scores in their own float order: equal within this


def ranking(hits: list[Hit]) -> list[tuple[float, frozenset[tuple[str, str, int]]]]:
    """Hits as groups of equal score (ties may come in any order): each
    hit within ``SAME`` of its group's first. (Rounding scores to 4 places
    split the same score where it sat on a rounding boundary: about 0.20095,
    rounded to 0.201 from one engine and to 0.2009 from the other.)"""
    groups: list[tuple[float, set[tuple[str, str, int]]]] = []
    for hit in hits:
        if groups and abs(groups[-1][0] - hit.score) <= SAME:
            groups[-1][1].add(ident(hit.payload))
        else:
            groups.append((hit.score, {ident(hit.payload)}))
    return [(score, frozenset(members)) for score, members in groups[:-1]]  # the last may be cut by the limit


def assert_same_ranking(ours: list[Hit], theirs: list[Hit]) -> None:
    mine, other = ranking(ours), ranking(theirs)
    assert [members for _, members in mine] == [members for _, members in other]
    assert len(ours) == len(theirs)
    assert all(abs(a.score - b.score) <= SAME for a, b in zip(ours, theirs, strict=True))


def comparable(payload: dict[str, Any]) -> dict[str, Any]:
    """A payload without what differs by store by design (ids, paths of the test folder)."""
    out = {k: v for k, v in payload.items() if k not in ("id", "source_id", "transcript", "text_hash")}
    return {**out, "transcript": Path(payload["transcript"]).name}


def test_the_same_points_and_payloads(filled: Filled, reference: Filled) -> None:
    ours = {ident(p): comparable(p) for p in filled.store.scroll(SearchFilter(), 100_000)}
    theirs = {ident(p): comparable(p) for p in reference.store.scroll(SearchFilter(), 100_000)}
    assert ours == theirs and len(ours) > 50
    assert {p["host"] for p in ours.values()} == {MACHINE}
    # the same ids as the writer gave them, each found again by that id
    points = filled.store.scroll(SearchFilter(), 100_000)
    writer_ids = {str(p.get("source_id") or p["id"]): p["text_hash"] for p in points}
    assert set(writer_ids) == {p["id"] for p in reference.store.scroll(SearchFilter(), 100_000)}
    assert filled.store.text_hashes(list(writer_ids)) == writer_ids
    assert {p["id"] for p in points} == {filled.store.key(i) for i in writer_ids}
    assert filled.store.count(SearchFilter()) == reference.store.count(SearchFilter()) == len(ours)


@pytest.mark.parametrize("query", QUERIES)
def test_the_same_ranking(filled: Filled, reference: Filled, embedder: OnnxEmbedder, query: str) -> None:
    from selfreflect.lexical import lexical_text

    vector = embedder.embed([query])[0].tolist()
    words = lexical_text(query)
    everything = SearchFilter()
    for run in (lambda s: s.dense(vector, everything, 20), lambda s: s.lexical(words, everything, 20)):
        ours, theirs = run(filled.store), run(reference.store)
        assert_same_ranking(ours, theirs)
    # fused by rank: where a list holds a tie, either order is right and moves a fused
    # score by at most 1/61 - 1/62, so fused scores agree within that
    ours, theirs = (s.hybrid(vector, words, everything, 20, FusionPlan()) for s in (filled.store, reference.store))
    tie = 1 / 61 - 1 / 62
    for mine, other in zip(ours[:-3], theirs[:-3], strict=True):
        assert abs(mine.score - other.score) <= tie
        assert any(ident(h.payload) == ident(mine.payload) and abs(h.score - mine.score) <= tie for h in theirs)
    # and through the search core: the same results, vectors and all
    ours_found = search(filled.store, embedder, SearchQuery(query, limit=5, alternatives=("how was it done",)))
    theirs_found = search(reference.store, embedder, SearchQuery(query, limit=5, alternatives=("how was it done",)))
    assert [(Path(r.transcript).name, r.line_start, r.relevance, r.snippet) for r in ours_found.results] == [
        (Path(r.transcript).name, r.line_start, r.relevance, r.snippet) for r in theirs_found.results
    ]
    top = filled.store.dense(vector, everything, 3)
    again = filled.store.vectors([h.id for h in top])
    assert all(abs(sum(a * b for a, b in zip(again[h.id], vector, strict=True)) - h.score) < 1e-3 for h in top)


FILTERS: list[Callable[[Filled], SearchFilter]] = [
    lambda f: SearchFilter(projects=("streaming",)),
    lambda f: SearchFilter(projects=("episodic-memory-nope",)),
    lambda f: SearchFilter(since="2025-10-01T00:00:00Z"),
    lambda f: SearchFilter(until="2025-10-01T00:00:00Z"),
    lambda f: SearchFilter(session_id="1af7fc5e-8455-4414-9ccd-011d40f70b2a"),
    lambda f: SearchFilter(
        transcript=str(
            f.settings.projects_dir / "-home-dev-episodic" / "obra__episodic-memory__tiny-conversation.jsonl"
        )
    ),
    lambda f: SearchFilter(file="package.json"),
    lambda f: SearchFilter(tool="Bash"),
    lambda f: SearchFilter(git_branch="main"),
    lambda f: SearchFilter(include_sidechains=False),
    lambda f: SearchFilter(kinds=("conversation",)),
    lambda f: SearchFilter(host=MACHINE),
    lambda f: SearchFilter(host="another-machine"),
]


@pytest.mark.parametrize("where", FILTERS)
def test_the_same_filters(filled: Filled, reference: Filled, where: Callable[[Filled], SearchFilter]) -> None:
    ours, theirs = where(filled), where(reference)
    assert filled.store.count(ours) == reference.store.count(theirs)
    assert {ident(p) for p in filled.store.scroll(ours, 10_000)} == {
        ident(p) for p in reference.store.scroll(theirs, 10_000)
    }
    assert filled.store.facet("project", ours, 100) == reference.store.facet("project", theirs, 100)
    newest = [p["timestamp"] for p in filled.store.recent(ours, 7)]
    assert newest == [p["timestamp"] for p in reference.store.recent(theirs, 7)] and newest == sorted(
        newest, reverse=True
    )
    latest = filled.store.latest(ours)
    assert (latest or {}).get("timestamp") == (reference.store.latest(theirs) or {}).get("timestamp")


@pytest.mark.parametrize("kind", KINDS)
def test_deletes_and_model_check(kind: str, tmp_path: Path, embedder: OnnxEmbedder) -> None:
    filled = fill(kind, tmp_path, embedder)
    store, projects = filled.store, filled.settings.projects_dir
    try:
        session = "1af7fc5e-8455-4414-9ccd-011d40f70b2a"  # a title line comes after the chunks it names
        store.set_title(session, "Listing the files")
        titles = {p["session_id"]: p["title"] for p in store.scroll(SearchFilter(), 100_000)}
        assert titles.pop(session) == "Listing the files" and "Listing the files" not in titles.values()
        total = store.count(SearchFilter())
        tiny = str(projects / "-home-dev-episodic" / "obra__episodic-memory__tiny-conversation.jsonl")
        in_tiny = store.count(SearchFilter(transcript=tiny))
        store.delete_transcript(tiny)
        assert store.count(SearchFilter()) == total - in_tiny and in_tiny > 0
        longest = max((p for p in store.scroll(SearchFilter(), 100_000)), key=lambda p: (p["ordinal"], p["exchange"]))
        exchange, transcript = longest["exchange"], longest["transcript"]
        before = store.count(SearchFilter(transcript=transcript))
        store.delete_exchange_tail(transcript, exchange, 1)
        assert store.count(SearchFilter(transcript=transcript)) == before - longest["ordinal"]
        assert store.delete(SearchFilter(projects=("spotter",))) > 0
        assert store.count(SearchFilter(projects=("spotter",))) == 0
        with pytest.raises(SelfReflectError, match="refusing to delete everything"):
            store.delete(SearchFilter())
    finally:
        store.close()
    if kind != "qdrant-memory":  # the same place, another model: refused, with what to do
        with pytest.raises(ModelMismatch, match="was built with"):
            make_store(kind, tmp_path, embedder, dim=embedder.dim + 1).close()


def test_machines_share_a_collection_without_colliding(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """Two machines write the same transcripts into one collection: two sets
    of points, each machine's deletes touch only its own."""
    first = fill("qdrant-local", tmp_path / "laptop-1", embedder, machine="laptop-1", at=tmp_path)
    one = first.store.count(SearchFilter())
    first.store.close()
    second = fill("qdrant-local", tmp_path / "laptop-2", embedder, machine="laptop-2", at=tmp_path)
    try:
        assert second.store.count(SearchFilter()) == 2 * one
        assert second.store.count(SearchFilter(host="laptop-1")) == second.store.count(SearchFilter(host="laptop-2"))
        assert second.store.key("x") != ServerStore(":memory:", embedder.name, embedder.dim, "laptop-1").key("x")
        tiny = ("-home-dev-episodic", "obra__episodic-memory__tiny-conversation.jsonl")
        theirs, mine = (str(f.settings.projects_dir.joinpath(*tiny)) for f in (first, second))
        before = second.store.count(SearchFilter(transcript=theirs, host="laptop-1"))
        second.store.delete_transcript(mine)
        second.store.delete(SearchFilter(transcript=theirs))  # another machine's transcript: not this one's to delete
        assert second.store.count(SearchFilter(transcript=mine)) == 0
        assert second.store.count(SearchFilter(transcript=theirs, host="laptop-1")) == before > 0
    finally:
        second.store.close()


def test_an_unreachable_server_is_said_plainly(embedder: OnnxEmbedder) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = ServerStore(f"http://127.0.0.1:{port}", embedder.name, embedder.dim, MACHINE, timeout=2)
    with pytest.raises(StoreUnavailable, match=f"the Qdrant server at http://127.0.0.1:{port} cannot be reached"):
        store.open()


@pytest.mark.parametrize(("source_kind", "target_kind"), [("edge", "qdrant-local"), ("qdrant-local", "edge")])
def test_migration_both_ways_resumes_and_verifies(
    source_kind: str, target_kind: str, tmp_path: Path, embedder: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import selfreflect.migrate

    monkeypatch.setattr(selfreflect.migrate, "BATCH", 20)
    source = fill(source_kind, tmp_path / "source", embedder)
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    checkpoint = checkpoint_file(target_dir, "to", "somewhere")
    target = make_store(target_kind, target_dir, embedder)
    try:
        # the target goes away after two batches: the migration stops, the checkpoint stays
        with pytest.raises(SelfReflectError):
            migrate(source.store, target, MACHINE, checkpoint, lambda n: target.close() if n >= 40 else None)
        assert checkpoint.exists()
        target = make_store(target_kind, target_dir, embedder)
        done = migrate(source.store, target, MACHINE, checkpoint)
        assert done.resumed_from == 40 and done.copied == done.source_count - 40
        assert done.target_count == done.source_count and done.matched == done.sampled > 0
        assert not checkpoint.exists()
        # the copy searches like the original, and the importer finds its points: nothing to embed again
        query = SearchQuery("ls -la", limit=5)
        assert [(r.transcript, r.line_start) for r in search(target, embedder, query).results] == [
            (r.transcript, r.line_start) for r in search(source.store, embedder, query).results
        ]
        writer_ids = [p["source_id"] for p in target.scroll(SearchFilter(), 100_000)]
        assert len(target.text_hashes(writer_ids)) == done.source_count
        # the snippet windows' vectors travel in the payloads: nothing to embed for them either
        windows = [
            sorted(orjson.dumps(p.get(FIELD)) for p in s.scroll(SearchFilter(), 100_000))
            for s in (source.store, target)
        ]
        assert windows[0] == windows[1] and any(b"signs" in w for w in windows[0])
    finally:
        target.close()
        source.store.close()
