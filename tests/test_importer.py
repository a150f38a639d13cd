"""The importer over the real corpus, with the real model and real Qdrant Edge."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from selfreflect.discover import discover
from selfreflect.embed import OnnxEmbedder
from selfreflect.importer import Importer, ImportSummary
from selfreflect.state import State
from selfreflect.store import RawPoint, SearchFilter
from selfreflect.store.edge import EdgeStore
from selfreflect.windows import FIELD, WIDTH, flatten, tiles

from conftest import EDGE, REAL, Corpus, make_settings

# what chunk rendering adds: "Assistant (thinking): ...", "[TodoWrite output] ..."
LABEL = re.compile(r"^\[[\w.-]+(?: output| error)?\] ", re.M)
LABEL_WORDS = {"assistant", "thinking", "summary", "earlier", "conversation", "redacted"}


def all_points(store: EdgeStore, where: SearchFilter | None = None) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in store.scroll(where or SearchFilter(), 100_000)}


def import_once(settings: Any, embedder: OnnxEmbedder) -> ImportSummary:
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        return Importer(settings, store, embedder, State.load(settings.state_file)).run()


def strings_of(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings_of(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings_of(v)]
    return []


def test_every_transcript_is_read_without_a_crash(corpus: Corpus) -> None:
    summary = corpus.summary
    assert summary.failed_files == []
    assert summary.files == len(corpus.files)
    assert summary.files_read == len(corpus.files)
    # the three non-object lines of the hand-made fixture, nothing in the real files
    assert summary.bad_lines == 3
    assert summary.chunks > 300


def test_every_conversation_file_has_chunks(corpus: Corpus, corpus_store: EdgeStore) -> None:
    indexed = {str(v) for v, _ in corpus_store.facet("transcript", SearchFilter(), 1000)}
    for name, path in corpus.files.items():
        if name == "obra__episodic-memory__medium-conversation.jsonl":
            assert str(path) not in indexed  # only file-history snapshots and a summary
        else:  # the compaction agent's transcript too: its session is not in the corpus
            assert str(path) in indexed, name


def test_chunk_lines_hold_the_chunk_text(corpus: Corpus, corpus_store: EdgeStore) -> None:
    """Most long words of each chunk occur in the lines it cites."""
    lines_of = {str(p): p.read_bytes().split(b"\n") for p in corpus.files.values()}
    checked = 0
    for point in corpus_store.scroll(SearchFilter(), 100_000):
        lines = lines_of[point["transcript"]][point["line_start"] - 1 : point["line_end"]]
        source = " ".join(s for raw in lines for s in strings_of(orjson.loads(raw))).lower()
        text = LABEL.sub(" ", point["text"])
        words = {w.lower() for w in re.findall(r"[A-Za-z]{7,}", text)} - LABEL_WORDS
        if len(words) < 3:
            continue
        found = sum(1 for w in words if w in source)
        missing = sorted(w for w in words if w not in source)
        assert found / len(words) >= 0.95, (point["transcript"], point["line_start"], point["line_end"], missing)
        checked += 1
    assert checked > 300


def test_second_import_adds_nothing(corpus: Corpus, embedder: OnnxEmbedder) -> None:
    with corpus.open(embedder) as store:
        before = all_points(store)
    again = import_once(corpus.settings, embedder)
    assert (again.chunks, again.lines, again.bad_lines) == (0, 0, 0)
    with corpus.open(embedder) as store:
        assert all_points(store) == before


def test_duplicate_record_is_indexed_once(corpus: Corpus, corpus_store: EdgeStore) -> None:
    def texts(name: str) -> list[str]:
        where = SearchFilter(transcript=str(corpus.files[name]))
        return sorted(p["text"] for p in corpus_store.scroll(where, 1000))

    original = texts("obra__episodic-memory__tiny-conversation.jsonl")
    assert texts("duplicate-last-line__obra__episodic-memory__tiny-conversation.jsonl") == original
    assert texts("nul-padded-tail__obra__episodic-memory__tiny-conversation.jsonl") == original


def test_torn_last_line_is_held_back_then_indexed_once(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    torn = EDGE / "truncated-last-line__obra__episodic-memory__tiny-conversation.jsonl"
    full = (REAL / "obra__episodic-memory__tiny-conversation.jsonl").read_bytes()
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    shutil.copyfile(torn, target)
    import_once(settings, embedder)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        assert max(p["line_end"] for p in all_points(store).values()) == 6
    state = State.load(settings.state_file).get(str(target))
    assert state.end == full.rfind(b"\n", 0, len(full) - 1) + 1  # up to the last complete line
    target.write_bytes(full)  # the writer finishes the line
    import_once(settings, embedder)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        points = all_points(store)
    assert max(p["line_end"] for p in points.values()) == 7
    clean = tmp_path / "clean"
    clean_settings = make_settings(clean)
    (clean_settings.projects_dir / "-p").mkdir(parents=True)
    (clean_settings.projects_dir / "-p" / "s.jsonl").write_bytes(full)
    import_once(clean_settings, embedder)
    with EdgeStore(clean_settings.store_dir, embedder.name, embedder.dim).open() as store:
        assert comparable(all_points(store)) == comparable(points)


def comparable(points: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Points without the fields that name the folder they were imported from."""
    return {
        pid: (p["text"], p["line_start"], p["line_end"], p["session_id"], p["exchange"], p["ordinal"])
        for pid, p in points.items()
    }


@pytest.mark.parametrize(
    "name",
    [
        "marot__spotter__tool_heavy.jsonl",  # several exchanges, one a single line
        "marot__spotter__agent-a2898e3.jsonl",  # one long exchange: sealed as it goes
    ],
)
def test_import_in_pieces_equals_clean_import(tmp_path: Path, embedder: OnnxEmbedder, name: str) -> None:
    """A transcript imported while it was being written, several times, ends
    up exactly as a clean import of the finished file: nothing lost, nothing
    duplicated, every chunk cut the same way."""
    full = (REAL / name).read_bytes()
    settings = make_settings(tmp_path / "pieces", chunk_size=4)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    mid_exchange = False
    for fraction in (0.2, 0.35, 0.5, 0.83, 1.0):
        target.write_bytes(full[: int(len(full) * fraction)])  # mostly mid-line: a torn tail
        import_once(settings, embedder)
        position = State.load(settings.state_file).get(str(target))
        mid_exchange |= position.context is not None
    clean = make_settings(tmp_path / "clean")
    (clean.projects_dir / "-p").mkdir(parents=True)
    (clean.projects_dir / "-p" / "s.jsonl").write_bytes(full)
    import_once(clean, embedder)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as a:
        pieces = all_points(a)
    with EdgeStore(clean.store_dir, embedder.name, embedder.dim).open() as b:
        whole = all_points(b)
    assert comparable(pieces) == comparable(whole)
    if "agent-" in name:
        assert mid_exchange  # the long exchange was resumed from inside, not from its start


def test_replaced_file_is_indexed_again_without_stale_chunks(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    shutil.copyfile(REAL / "marot__spotter__tool_heavy.jsonl", target)
    import_once(settings, embedder)
    replacement = tmp_path / "new.jsonl"
    shutil.copyfile(REAL / "obra__episodic-memory__tiny-conversation.jsonl", replacement)
    replacement.replace(target)  # a new inode at the same path
    import_once(settings, embedder)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        texts = " ".join(p["text"] for p in all_points(store).values())
    assert "Proactiveness" in texts
    assert "phx.server" not in texts


def test_vanished_file_is_reported_and_the_rest_goes_on(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    folder = settings.projects_dir / "-p"
    folder.mkdir(parents=True)
    shutil.copyfile(REAL / "obra__episodic-memory__tiny-conversation.jsonl", folder / "a.jsonl")
    shutil.copyfile(REAL / "marot__spotter__short.jsonl", folder / "b.jsonl")
    files = discover(settings.projects_dir)
    (folder / "a.jsonl").unlink()
    summary = ImportSummary()
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        importer = Importer(settings, store, embedder, State.load(settings.state_file))
        for transcript in files:
            importer.import_file(transcript, summary)
        indexed = {v for v, _ in store.facet("transcript", SearchFilter(), 10)}
    assert summary.failed_files == [str(folder / "a.jsonl")]
    assert indexed == {str(folder / "b.jsonl")}


def test_giant_line_is_streamed_past_and_reported(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path, max_line_mb=1)
    lines = (REAL / "obra__episodic-memory__tiny-conversation.jsonl").read_bytes().split(b"\n")
    giant = orjson.dumps({"type": "user", "uuid": "giant", "message": {"role": "user", "content": "x" * (3 << 20)}})
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\n".join(lines[:3] + [giant] + lines[3:]))
    summary = import_once(settings, embedder)
    assert summary.oversized_lines == 1
    assert summary.bad_lines == 0
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        points = all_points(store).values()
    assert max(p["line_end"] for p in points) == 8  # the lines after the giant one are in
    assert all("xxxxxxxx" not in p["text"] for p in points)


def test_payload_carries_project_identity_from_cwd(corpus: Corpus, corpus_store: EdgeStore) -> None:
    path = corpus.files["marot__spotter__tool_heavy.jsonl"]
    points = corpus_store.scroll(SearchFilter(transcript=str(path)), 1000)
    assert {p["project_path"] for p in points} == {"/home/marco/projects/spotter"}
    assert {p["project"] for p in points} == {"spotter"}
    assert {p["session_id"] for p in points} == {"d6e0bada-1959-4eec-a9d2-0bfade768d8f"}


def test_subagent_transcripts_are_marked(corpus: Corpus, corpus_store: EdgeStore) -> None:
    path = corpus.files["marot__spotter__agent-a2898e3.jsonl"]
    assert "subagents" in path.parts
    points = corpus_store.scroll(SearchFilter(transcript=str(path)), 1000)
    assert points and {p["thread"] for p in points} == {"sidechain"}
    assert {p["agent_id"] for p in points} == {"a2898e3"}
    main_only = corpus_store.scroll(SearchFilter(transcript=str(path), include_sidechains=False), 1000)
    assert main_only == []


def test_secrets_are_masked_before_storing(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    secret = "sk-ant-api03-" + "Q7x" * 15
    record = {
        "type": "user",
        "uuid": "u1",
        "sessionId": "s",
        "cwd": "/home/me/app",
        "timestamp": "2026-01-01T00:00:00Z",
        "message": {"role": "user", "content": f"my key is {secret}, and DB_PASSWORD=correcthorsebattery"},
    }
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    target.write_bytes(orjson.dumps(record) + b"\n")
    import_once(settings, embedder)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        (point,) = all_points(store).values()
    assert secret not in point["text"] and "correcthorsebattery" not in point["text"]
    assert "DB_PASSWORD=" in point["text"] and "[REDACTED" in point["text"]


@pytest.mark.parametrize("quiet", [True, False])
def test_last_line_without_newline_is_used_only_once_the_file_is_quiet(
    tmp_path: Path, embedder: OnnxEmbedder, quiet: bool
) -> None:
    settings = make_settings(tmp_path)
    full = (REAL / "obra__episodic-memory__tiny-conversation.jsonl").read_bytes().rstrip(b"\n")
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    target.write_bytes(full)  # the writer never wrote the last newline
    if quiet:
        os.utime(target, (time.time() - 3600, time.time() - 3600))
    import_once(settings, embedder)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        last = max(p["line_end"] for p in all_points(store).values())
    assert last == (7 if quiet else 6)
    # the newline arrives later: nothing is indexed twice
    target.write_bytes(full + b"\n")
    import_once(settings, embedder)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        points = all_points(store)
    assert max(p["line_end"] for p in points.values()) == 7
    texts = [p["text"] for p in points.values()]
    assert len(texts) == len(set(texts))


def test_a_read_stopped_early_is_not_taken_as_finished(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    from selfreflect.discover import discover
    from selfreflect.importer import is_current

    settings = make_settings(tmp_path, chunk_size=4)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    target.write_bytes((REAL / "obra__episodic-memory__tiny-conversation.jsonl").read_bytes())
    os.utime(target, (time.time() - 3600, time.time() - 3600))  # quiet: read as finished
    import_once(settings, embedder)
    with open(target, "ab") as handle:
        handle.write((REAL / "marot__spotter__tool_heavy.jsonl").read_bytes())
    os.utime(target, (time.time() - 3600, time.time() - 3600))
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        importer = Importer(settings, store, embedder, State.load(settings.state_file))
        (transcript,) = discover(settings.projects_dir)
        assert importer.import_file(transcript, ImportSummary(), max_batches=1)  # more to read
        position = importer.state.get(str(target))
        assert not is_current(position, transcript.size, transcript.mtime)
        while importer.import_file(transcript, ImportSummary(), max_batches=1):
            pass
        assert is_current(importer.state.get(str(target)), transcript.size, transcript.mtime)


@pytest.mark.parametrize("batch_chunks", [1, 2, 3, 5, 8])
def test_reading_a_few_batches_at_a_time_equals_clean_import(
    tmp_path: Path, embedder: OnnxEmbedder, batch_chunks: int
) -> None:
    """The daemon reads a long file a few batches per turn: however the turns
    fall, the end result is a clean import (the last exchange included)."""
    from selfreflect.discover import discover

    full = (REAL / "d-kimuson__claude-code-viewer__5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl").read_bytes()
    settings = make_settings(tmp_path / "turns")
    (settings.projects_dir / "-p").mkdir(parents=True)
    (settings.projects_dir / "-p" / "s.jsonl").write_bytes(full)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        importer = Importer(settings, store, embedder, State.load(settings.state_file))
        (transcript,) = discover(settings.projects_dir)
        while importer.import_file(transcript, ImportSummary(), max_batches=1, batch_chunks=batch_chunks):
            pass
        importer.import_file(transcript, ImportSummary())  # what a later rescan would do: nothing left
        turns = all_points(store)
    clean = make_settings(tmp_path / "clean")
    (clean.projects_dir / "-p").mkdir(parents=True)
    (clean.projects_dir / "-p" / "s.jsonl").write_bytes(full)
    import_once(clean, embedder)
    with EdgeStore(clean.store_dir, embedder.name, embedder.dim).open() as store:
        assert comparable(turns) == comparable(all_points(store))


def test_window_vectors_are_kept_outside_the_text_hash(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """Each chunk longer than a snippet carries the vectors of its windows.
    They are not hashed with the chunk: a store written before them is not
    embedded again when its transcripts are read again (``reindex`` adds them)."""
    settings = make_settings(tmp_path)
    (settings.projects_dir / "-p").mkdir(parents=True)
    shutil.copyfile(REAL / "marot__spotter__tool_heavy.jsonl", settings.projects_dir / "-p" / "s.jsonl")
    import_once(settings, embedder)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        points = all_points(store).values()
        longer = [p for p in points if len(flatten(p["text"])) > WIDTH]
        assert longer and all(p[FIELD]["starts"] == [s for s, _ in tiles(flatten(p["text"]))] for p in longer)
        assert all(FIELD not in p for p in points if len(flatten(p["text"])) <= WIDTH)
        raw, _ = store.dump(None, 10_000)
        store.load([RawPoint(p.id, p.dense, p.sparse, {k: v for k, v in p.payload.items() if k != FIELD}) for p in raw])
    settings.state_file.unlink()
    again = import_once(settings, embedder)
    assert again.lines > 0 and again.chunks == 0  # read again, nothing embedded
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        assert not any(FIELD in p for p in all_points(store).values())
