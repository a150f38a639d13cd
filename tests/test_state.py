"""state.State on SQLite: versioned, migrated from state.json, damage moved
aside and rebuilt (never silently), tied to the store it describes."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest

from selfreflect.embed import OnnxEmbedder
from selfreflect.errors import SelfReflectError
from selfreflect.importer import Importer
from selfreflect.state import FORMAT, State, TranscriptPosition
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore

from conftest import REAL, make_settings
from daemon_process import eventually


def test_positions_round_trip_and_only_changes_are_written(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    state = State.load(path)
    state.set("/a.jsonl", TranscriptPosition(offset=10, line=3, end=20, size=20, mtime=1.5, context={"k": 1}))
    state.set("/b.jsonl", TranscriptPosition(offset=5, end=5))
    state.save()
    again = State.load(path)
    assert again.positions == state.positions
    again.forget("/b.jsonl")
    again.save()
    assert set(State.load(path).positions) == {"/a.jsonl"}
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT


@pytest.mark.parametrize(
    ("content", "kept"),
    [
        (orjson.dumps({"version": 1, "positions": {"/a.jsonl": {"offset": 7, "end": 7, "line": 2}}}), 1),
        (b"[]", 0),
        (b'{"positions": "oops"}', 0),
        (b"\x00garbage", 0),
    ],
    ids=["valid", "a list", "wrong shape", "not JSON"],
)
def test_state_json_of_an_older_version_is_migrated_or_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, kept: int
) -> None:
    legacy = tmp_path / "state.json"
    legacy.write_bytes(content)
    with caplog.at_level(logging.INFO, "selfreflect"):
        state = State.load(tmp_path / "state.sqlite3")
    assert len(state.positions) == kept
    assert not legacy.exists()  # never read twice
    if kept:
        assert (tmp_path / "state.json.migrated").exists() and state.get("/a.jsonl").offset == 7
    else:
        (aside,) = tmp_path.glob("state.json.damaged-*")
        assert aside.read_bytes() == content
        assert "cannot be used" in caplog.text  # said, not silent


def test_a_damaged_database_is_moved_aside_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with caplog.at_level(logging.WARNING, "selfreflect"):
        state = State.load(path)
    assert state.positions == {} and "not a state database" in caplog.text
    assert list(tmp_path.glob("state.sqlite3.damaged-*"))
    state.set("/a.jsonl", TranscriptPosition(offset=1, end=1))
    state.save()
    assert State.load(path).get("/a.jsonl").offset == 1


def test_a_database_damaged_past_its_first_rows_gives_none_of_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The rows are read one by one; a damaged page halfway through moves the
    whole state aside, and none of the rows read before it are kept."""
    path = tmp_path / "state.sqlite3"
    state = State.load(path)
    for n in range(3000):
        state.set(f"/p/{n:06d}.jsonl", TranscriptPosition(offset=n, end=n, size=n))
    state.save()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = path.stat().st_size // 4096
    with open(path, "r+b") as f:
        f.seek(pages * 7 // 10 * 4096)
        f.write(b"\xff" * 4096)
    with caplog.at_level(logging.WARNING, "selfreflect"):
        loaded = State.load(path)
    assert loaded.positions == {} and "malformed" in caplog.text
    assert list(tmp_path.glob("state.sqlite3.damaged-*"))


def test_a_locked_state_is_an_error_and_stays_where_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state another process holds locked cannot be read now: that is an
    error, and the state is neither moved aside nor read again from scratch."""
    path = tmp_path / "state.sqlite3"
    state = State.load(path)
    state.set("/a.jsonl", TranscriptPosition(offset=5, end=5))
    state.save()
    monkeypatch.setattr("selfreflect.state.BUSY_SECONDS", 0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO meta VALUES ('held', 'by another process')")
    with pytest.raises(SelfReflectError, match="cannot read the state at .*: database is locked"):
        State.load(path)
    holder.rollback()
    holder.close()
    assert not list(tmp_path.glob("*.damaged-*"))
    assert State.load(path).get("/a.jsonl").offset == 5


def test_damaged_rows_are_dropped_and_read_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state.sqlite3"
    state = State.load(path)
    state.set("/good.jsonl", TranscriptPosition(offset=3, end=3))
    state.save()
    with sqlite3.connect(path) as db:
        for key, blob in [("/neg.jsonl", '{"offset": -5, "end": 0}'), ("/list.jsonl", "[1]"), ("/x.jsonl", "{")]:
            db.execute("INSERT INTO positions VALUES (?, ?)", (key, blob))
    with caplog.at_level(logging.WARNING, "selfreflect"):
        loaded = State.load(path)
    assert set(loaded.positions) == {"/good.jsonl"}
    assert caplog.text.count("is damaged") == 3
    loaded.save()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM positions").fetchone()[0] == 1


def test_a_newer_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    State.load(path).save()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    with pytest.raises(SelfReflectError, match="newer selfreflect"):
        State.load(path)


def test_a_deleted_store_is_filled_again(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """Deleting the store (as an error message may ask) used to leave an
    index that never refilled: the state still said everything was read."""
    settings = make_settings(tmp_path)
    (settings.projects_dir / "-p").mkdir(parents=True)
    shutil.copyfile(REAL / "marot__spotter__tool_heavy.jsonl", settings.projects_dir / "-p" / "s.jsonl")

    def import_and_count() -> int:
        with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
            Importer(settings, store, embedder, State.load(settings.state_file)).run()
            return store.count(SearchFilter())

    first = import_and_count()
    assert first > 0
    shutil.rmtree(settings.store_dir)
    assert import_and_count() == first
    assert State.load(settings.state_file).store_id  # the state names its store


def test_the_lock_outlives_a_deleted_store_folder(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    from selfreflect.errors import StoreLocked

    folder = tmp_path / "data" / "store"
    with EdgeStore(folder, embedder.name, embedder.dim, command="serve").open():
        shutil.rmtree(folder)
        with pytest.raises(StoreLocked, match=r"in use by `selfreflect serve`"):
            EdgeStore(folder, embedder.name, embedder.dim, command="import").open()


def test_a_damaged_store_meta_is_a_message(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    folder = tmp_path / "data" / "store"
    EdgeStore(folder, embedder.name, embedder.dim).open().close()
    for damage in (b"[]", b"{nope"):
        (folder / "meta.json").write_bytes(damage)
        with pytest.raises(SelfReflectError, match="is damaged"):
            EdgeStore(folder, embedder.name, embedder.dim).open()


def test_a_failing_worker_is_reported_by_healthz_and_restarted(tmp_path: Path) -> None:
    """The daemon's threads are supervised: one that fails makes /healthz
    answer 503 with the reason until it is running again, and counts."""
    import threading

    from starlette.testclient import TestClient

    from selfreflect.daemon import Daemon, Worker
    from selfreflect.http import create_app

    settings = make_settings(tmp_path, port=0)
    settings.projects_dir.mkdir(parents=True)
    daemon = Daemon(settings)
    sock = daemon.startup()
    release = threading.Event()
    calls = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise RuntimeError(f"boom {len(calls)}")
        release.wait()

    try:
        assert {w.name for w in daemon.workers} == {"importer", "watcher"}
        daemon.start_worker(Worker("flaky", flaky))
        with TestClient(create_app(daemon), base_url="http://127.0.0.1") as client:
            down = eventually(lambda: (r := client.get("/healthz")).status_code == 503 and r)
            body = down.json()
            assert body["status"] == "failing"
            assert any("the flaky thread failed (RuntimeError: boom" in p for p in body["problems"])
            # healthy again once the second restart holds (between the two failures it is briefly up)
            eventually(lambda: client.get("/healthz").json()["restarts"].get("flaky") == 2, timeout=15)
            eventually(lambda: client.get("/healthz").status_code == 200, timeout=15)
            up = client.get("/healthz").json()
            assert up["restarts"]["flaky"] == 2 and up["problems"] == []
            assert "\nselfreflect_worker_restarts_total 2\n" in client.get("/metrics").text
    finally:
        release.set()
        daemon.shutdown()
        sock.close()
