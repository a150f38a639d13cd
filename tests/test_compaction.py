"""Compaction while the daemon serves (``selfreflect.compaction``): real
daemons, the real engine, the real ``selfreflect`` command."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from selfreflect.compaction import WORK_DIR, copy_sparse, copy_store
from selfreflect.embed import OnnxEmbedder
from selfreflect.errors import SelfReflectError, Unavailable
from selfreflect.store import Record, SearchFilter, edge
from selfreflect.store.edge import EdgeStore
from selfreflect.stream import Turn
from selfreflect.system import disk_bytes

from conftest import REAL, make_settings
from daemon_process import DaemonProcess, eventually, run_cli
from test_daemon import clean_import, snapshot

pytestmark = pytest.mark.timeout(300)

THREE = (
    "d-kimuson__claude-code-viewer__5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl",
    "obra__episodic-memory__medium-conversation.jsonl",
    "marot__spotter__tool_heavy.jsonl",
)
# sealed every 2 points and never merged: a store of many small segments, as a big backfill leaves one
# (more than COMPACT_SLACK over a compacted store: `import` compacts it)
MANY_SEGMENTS = {"SELFREFLECT_SEGMENT_POINTS": "2", "SELFREFLECT_MERGE_POINTS": "0", "CHUNK_SIZE": "2"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / "claude" / "projects" / "-work"
    folder.mkdir(parents=True)
    for name in THREE:
        shutil.copyfile(REAL / name, folder / name)
    return tmp_path / "claude"


def compact_command(home: Path, data: Path, command: str = "compact") -> subprocess.Popen[str]:
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home), "SELFREFLECT_HOME": str(data)}
    return subprocess.Popen(
        [sys.executable, "-m", "selfreflect", command],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def found(daemon: DaemonProcess, words: str) -> set[tuple[str, int, int]]:
    """Every chunk a search finds (all of them: the order of ties may differ between segment layouts)."""
    return {(r["transcript"], r["line_start"], r["line_end"]) for r in daemon.search(words, limit=200)}


def leave(disk: Path, room: int) -> Path:
    """Take all of ``disk``'s free space but ``room`` bytes (room to write:
    ``MIN_FREE_BYTES``); returns the filler."""
    filler = disk / "filler"
    subprocess.run(["fallocate", "-l", str(shutil.disk_usage(disk).free - room), str(filler)], check=True)
    return filler


def many_segments(home: Path, data: Path) -> None:
    """Fill ``data`` with a store of many small segments, as a daemon that
    does not compact on its own leaves it after reading ``home``."""
    with DaemonProcess(home, data, SELFREFLECT_AUTO_COMPACT="off", **MANY_SEGMENTS) as daemon:
        daemon.wait_idle()
        assert daemon.stop() == 0


def reflected(daemon: DaemonProcess) -> bool:
    return any(r["text"] == "Reflection: cerulean walrus" for r in daemon.search("cerulean walrus", limit=5))


def phase(daemon: DaemonProcess) -> str:
    job = daemon.get("/healthz")["compaction"]
    return str(job["phase"]) if job else ""


def test_copy_sparse_keeps_the_content_and_the_holes(tmp_path: Path) -> None:
    source = tmp_path / "source"
    with open(source, "wb") as f:
        f.write(b"head" * 1000)
        f.seek(8 << 20, os.SEEK_CUR)
        f.write(b"tail")
        f.truncate(20 << 20)  # ends in a hole
    target = tmp_path / "target"
    copy_sparse(str(source), str(target))
    assert target.read_bytes() == source.read_bytes()
    if sys.platform != "win32":  # the engine's files hold ~4 times more holes than data
        assert target.stat().st_blocks * 512 < 1 << 20


def everything(store: EdgeStore) -> dict[str, tuple]:
    """Every point as the store holds it: payload, dense vector (rounded), BM25 vector."""
    points, after = [], None
    while True:
        some, after = store.dump(after, 100)
        points += some
        if after is None:
            break
    return {
        p.id: (sorted(p.payload.items()), [round(x, 5) for x in p.dense], sorted(zip(*p.sparse, strict=True)))
        for p in points
    }


@pytest.mark.parametrize("seed", range(6))
def test_what_is_written_during_a_compaction_is_replayed_into_the_copy(tmp_path: Path, seed: int) -> None:
    """Whatever mix of writes comes after the copy (points written, rewritten,
    deleted by filter, written again, titles, forgetting, an exchange's tail),
    the copy brought up to date equals the store."""
    rnd = random.Random(seed)
    words = "docker memory limit rrf fusion qdrant segment merge title walrus".split()

    def records(n: int) -> list[Record]:
        return [
            Record(
                str(uuid.UUID(int=rnd.randrange(60))),  # few ids: points are written again
                [rnd.random() + 0.01 for _ in range(4)],
                " ".join(rnd.choices(words, k=5)),
                {
                    "transcript": f"t{rnd.randrange(4)}",
                    "session_id": f"s{rnd.randrange(3)}",
                    "exchange": f"e{rnd.randrange(3)}",
                    "ordinal": rnd.randrange(6),
                },
            )
            for _ in range(n)
        ]

    def write(store: EdgeStore) -> None:
        kind = rnd.randrange(5)
        if kind <= 1:
            store.upsert(records(rnd.randrange(1, 8)))
        elif kind == 2:
            store.delete_transcript(f"t{rnd.randrange(4)}")
        elif kind == 3:
            store.set_title(f"s{rnd.randrange(3)}", rnd.choice(words))
        else:
            store.delete_exchange_tail(f"t{rnd.randrange(4)}", f"e{rnd.randrange(3)}", rnd.randrange(6))

    with EdgeStore(tmp_path / "data" / "store", "m", 4, segment_points=8) as store:
        store.upsert(records(40))
        for _ in range(10):
            write(store)
        store.flush()
        copy_store(store.folder, tmp_path / "copy" / "store")
        store.start_journal()
        for _ in range(30):
            write(store)
        if seed % 2:
            store.delete(SearchFilter(session_id="s1"))  # forget
        journal = store.stop_journal()
        assert journal is not None and store.stop_journal() is None
        with EdgeStore(tmp_path / "copy" / "store", "m", 4) as copy:
            assert everything(copy) != everything(store)  # the writes since made a difference
            store.replay(journal, copy)
            assert everything(copy) == everything(store)


def test_the_compacting_process_copies_the_store_then_compacts_the_copy(
    tmp_path: Path, home: Path, embedder: OnnxEmbedder
) -> None:
    """``python -m selfreflect.compaction STORE COPY PID``, as the daemon runs
    it: the copy is made there (it says when), then compacted; the store is
    left as it was. Started by a process that is not the daemon it names, it
    stops before it says the copy is made."""
    data = tmp_path / "data"
    many_segments(home, data)
    points = snapshot(data, embedder)
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        segments = store.segments()
    assert segments > edge.COMPACT_SLACK

    def helper(copy: Path, pid: int) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "selfreflect.compaction", str(data / "store"), str(copy), str(pid)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)

    done = helper(tmp_path / "copy" / "store", os.getpid())
    assert done.returncode == 0, done.stderr
    said = done.stdout.splitlines()
    assert said[0] == "copied" and said[1] == f"segments {segments}", said
    assert int(said[-1].split()[1]) <= edge.COMPACT_SLACK
    assert snapshot(tmp_path / "copy", embedder) == points
    assert snapshot(data, embedder) == points
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        assert store.segments() == segments

    stranger = helper(tmp_path / "other" / "store", os.getppid())  # not its parent: a daemon gone, a pid reused
    assert stranger.returncode == 1 and "is gone: stopping" in stranger.stderr, stranger.stderr
    assert "copied" not in stranger.stdout


def test_the_turn_refuses_others_and_keeps_the_importer_waiting_while_a_job_holds_it() -> None:
    turn, order = Turn(), []

    def importer() -> None:
        with turn.waiting():
            order.append("batch")

    with turn.held("the store is being copied"):
        with pytest.raises(Unavailable, match="the store is being copied"):
            with turn:
                pass
        waiting = threading.Thread(target=importer)
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive() and not order  # it waits, it is not refused
        order.append("job")
    waiting.join(5)
    assert order == ["job", "batch"]
    with turn:  # free again
        pass


def test_the_daemon_compacts_on_its_own_while_it_serves_and_reads(
    tmp_path: Path, home: Path, embedder: OnnxEmbedder
) -> None:
    """After its backfill, a store of many small segments is compacted without
    being asked. Meanwhile searches answer from the store as it is, new lines
    are read and found, a reflection is stored and a transcript forgotten; all
    of that is in the compacted store."""
    data = tmp_path / "data"
    appended = home / "projects" / "-work" / "written-meanwhile.jsonl"
    forgotten = home / "projects" / "-work" / THREE[1]
    with DaemonProcess(home, data, **MANY_SEGMENTS) as daemon:
        eventually(lambda: phase(daemon) == "compacting", timeout=120, every=0.01)
        (helper,) = psutil.Process(daemon.proc.pid).children()
        helper.suspend()  # the compaction stays under way while we write
        try:
            before = found(daemon, "spotter")
            assert before
            shutil.copyfile(REAL / "marot__spotter__short.jsonl", appended)
            stored = httpx.post(
                daemon.url + "/api/reflections", json={"content": "cerulean walrus", "tags": []}, timeout=30
            )
            assert stored.status_code == 200, stored.text
            gone = httpx.post(
                daemon.url + "/api/forget", json={"kind": "transcript", "value": str(forgotten)}, timeout=30
            )
            assert gone.status_code == 200, gone.text
            eventually(lambda: any(hit[0] == str(appended) for hit in found(daemon, "spotter")))
            during = found(daemon, "spotter")
            assert not any(hit[0] == str(forgotten) for hit in during)
            assert reflected(daemon)
            status = run_cli(home, data, "status")
            assert "compacting the store on its own (compacting: " in status.stdout, status.stdout
            assert "searches and reading go on" in status.stdout
            compact = compact_command(home, data)  # follows the compaction under way
            assert compact.stderr is not None
            said = next((line for line in compact.stderr if "Compacting the store" in line), "")
            assert said and phase(daemon) == "compacting", said
        finally:
            helper.resume()
        out, err = compact.communicate(timeout=120)
        assert compact.returncode == 0, err
        compacted = re.search(r"^Compacted the store: (\d+) segments into (\d+) in .*\((\d+) chunks written", out, re.M)
        assert compacted, out
        segments_before, segments_after, caught_up = (int(n) for n in compacted.groups())
        assert segments_before > edge.COMPACT_SLACK >= segments_after
        assert caught_up > 0
        job = daemon.get("/healthz")["compaction"]
        assert job["automatic"] and job["phase"] == "done" and job["caught_up"] == caught_up
        assert found(daemon, "spotter") == during
        assert reflected(daemon)
        assert not (data / WORK_DIR).exists() and not (data / "store" / "shard.old").exists()
        assert daemon.stop() == 0
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        assert store.segments() < segments_before / 2  # the compacted shard, and what was written after it
    indexed = {id: point for id, point in snapshot(data, embedder).items() if point[0].startswith(str(home))}
    forgotten.unlink()
    assert indexed == clean_import(home, tmp_path / "clean", embedder)


def test_a_daemon_stopped_while_compacting_ends_it_and_keeps_the_store(
    tmp_path: Path, home: Path, embedder: OnnxEmbedder
) -> None:
    """Not on its own (``auto_compact`` off): `import` compacts a store of many
    small segments, and the daemon stops meanwhile."""
    data = tmp_path / "data"
    with DaemonProcess(home, data, SELFREFLECT_AUTO_COMPACT="off", **MANY_SEGMENTS) as daemon:
        daemon.wait_idle()
        assert daemon.get("/healthz")["compaction"] is None
        segments = len([p for p in (data / "store" / "shard" / "segments").iterdir() if p.is_dir()])
        compact = compact_command(home, data, "import")
        eventually(lambda: phase(daemon) == "compacting", timeout=60, every=0.01)
        (helper,) = psutil.Process(daemon.proc.pid).children()
        assert daemon.stop() == 0
        helper.wait(timeout=30)  # killed, not left running (psutil.TimeoutExpired otherwise)
        assert not helper.is_running()
        _, err = compact.communicate(timeout=60)
        assert compact.returncode == 1 and "the daemon stopped while compacting" in err
    assert not (data / WORK_DIR).exists()
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        assert store.segments() == segments
    assert snapshot(data, embedder) == clean_import(home, tmp_path / "clean", embedder)


def test_a_daemon_killed_while_compacting_leaves_nothing_behind(
    tmp_path: Path, home: Path, embedder: OnnxEmbedder
) -> None:
    """kill -9 mid-compaction: its process stops by itself, the store is as it
    was, and the next daemon deletes the copy."""
    data = tmp_path / "data"
    with DaemonProcess(home, data, **MANY_SEGMENTS) as daemon:
        eventually(lambda: phase(daemon) == "compacting", timeout=120, every=0.01)
        (helper,) = psutil.Process(daemon.proc.pid).children()
        helper.suspend()  # mid-step
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        helper.resume()
        helper.wait(timeout=60)  # on its own, at its next step
    assert (data / WORK_DIR / "store").is_dir()
    assert f"the daemon (pid {daemon.proc.pid}) is gone: stopping" in (data / WORK_DIR / "compact.log").read_text()
    with DaemonProcess(home, data, SELFREFLECT_AUTO_COMPACT="off", **MANY_SEGMENTS) as daemon:
        daemon.wait_idle()
        assert not (data / WORK_DIR).exists()
        assert daemon.stop() == 0
    assert snapshot(data, embedder) == clean_import(home, tmp_path / "clean", embedder)


def test_a_swap_cut_short_is_finished_or_undone_when_the_store_opens(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    tiny = tmp_path / "claude" / "projects" / "-work"
    tiny.mkdir(parents=True)
    shutil.copyfile(REAL / "obra__episodic-memory__tiny-conversation.jsonl", tiny / "tiny.jsonl")
    points = len(clean_import(tmp_path / "claude", tmp_path, embedder))
    folder = tmp_path / "data" / "store"
    shard, old = folder / "shard", folder / "shard.old"
    with EdgeStore(tmp_path / "empty" / "store", embedder.name, embedder.dim):
        pass
    # stopped between its two renames: the shard is put back
    shard.rename(old)
    with EdgeStore(folder, embedder.name, embedder.dim) as store:
        assert store.count(SearchFilter()) == points
    assert shard.is_dir() and not old.exists()
    # stopped before the shard it replaced was deleted (here an empty one): that one goes
    shutil.copytree(tmp_path / "empty" / "store" / "shard", old)
    with EdgeStore(folder, embedder.name, embedder.dim) as store:
        assert store.count(SearchFilter()) == points
        # a copy that does not load: the shard is put back, and the error said
        broken = tmp_path / "broken"
        (broken / "shard").mkdir(parents=True)
        (broken / "shard" / "edge_config.json").write_text("not JSON")
        with pytest.raises(SelfReflectError, match="cannot open the store"):
            store.swap_in(broken)
        assert store.count(SearchFilter()) == points
    assert (broken / "shard" / "edge_config.json").read_text() == "not JSON"
    assert shard.is_dir() and not old.exists()


def test_no_room_for_the_copy_is_a_message_and_the_store_stays(
    tmp_path: Path, home: Path, small_disk: Path, embedder: OnnxEmbedder
) -> None:
    data = small_disk / "data"
    with DaemonProcess(home, data) as daemon:
        daemon.wait_idle()
        before = found(daemon, "spotter")
        filler = leave(small_disk, edge.MIN_FREE_BYTES + disk_bytes(data / "store") // 2)  # not for a copy
        done = run_cli(home, data, "compact")
        assert done.returncode == 1
        assert "compacting while the daemon runs needs a copy of the store" in done.stderr
        assert "(`selfreflect stop`, then `selfreflect compact` compacts it in place)" in done.stderr
        assert daemon.get("/healthz")["compaction"]["phase"] == "failed"
        assert found(daemon, "spotter") == before and not (data / WORK_DIR).exists()
        filler.unlink()
        done = run_cli(home, data, "compact")  # a store of few segments: nothing to merge, a copy all the same
        assert done.returncode == 0, done.stderr
        assert re.match(r"Compacted the store: (\d+) segments into \1 in ", done.stdout), done.stdout
        assert found(daemon, "spotter") == before
        done = run_cli(home, data, "import")  # nothing to compact: it does not
        assert done.returncode == 0 and "Compacting" not in done.stderr, done.stderr


def test_compact_in_place_without_room_for_a_merge_is_a_message(
    tmp_path: Path, home: Path, small_disk: Path, embedder: OnnxEmbedder
) -> None:
    """Without a daemon: each step checks for room for the segment it merges
    (the engine writes through mapped files, where a full disk is a SIGBUS)."""
    data = small_disk / "data"
    done = run_cli(home, data, "import")
    assert done.returncode == 0, done.stderr
    points = snapshot(data, embedder)
    # room to write, not for a merge of all of its few points: that writes about the store's size again
    filler = leave(small_disk, edge.MIN_FREE_BYTES + disk_bytes(data / "store") // 2)
    done = run_cli(home, data, "compact")
    assert done.returncode == 1 and "MB free; the store needs" in done.stderr, done.stderr
    assert snapshot(data, embedder) == points
    filler.unlink()
    done = run_cli(home, data, "compact")
    assert done.returncode == 0 and done.stdout.startswith("Compacted the store: "), done.stderr
    assert snapshot(data, embedder) == points


def test_the_daemon_looks_once_a_minute_and_tries_again_an_hour_after_it_failed(
    tmp_path: Path, home: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An automatic compaction that failed (no room for the copy) is not
    tried again within the hour, room or not; and the daemon looks at most
    once a minute. A daemon in this process, so the test can set the clock's
    two spans and the time of the last look."""
    from selfreflect import daemon as daemon_module

    data = small_disk / "data"
    many_segments(home, data)
    filler = leave(small_disk, edge.MIN_FREE_BYTES + disk_bytes(data / "store") // 2)  # not for a copy
    settings = make_settings(
        tmp_path, claude_dir=home, data_dir=data, port=0, segment_points=2, merge_points=0, chunk_size=2
    )
    assert settings.auto_compact
    monkeypatch.setattr(daemon_module, "AUTO_COMPACT_LOOK", 0.0)
    daemon = daemon_module.Daemon(settings)
    sock = daemon.startup()
    try:
        # caught up at once (nothing new): it tries on its own, and fails
        failed = eventually(lambda: (job := daemon.compaction) is not None and job.phase == "failed" and job)
        assert failed.automatic and "needs a copy of the store" in failed.error
        daemon._compact_on_its_own()
        assert daemon.compaction is failed  # within the hour
        filler.unlink()
        monkeypatch.setattr(daemon_module, "AUTO_COMPACT_LOOK", 60.0)
        daemon._compact_on_its_own()
        assert daemon.compaction is failed  # within the hour, with room now
        monkeypatch.setattr(daemon_module, "AUTO_COMPACT_RETRY", 0.0)  # the hour is over
        daemon._compact_on_its_own()
        assert daemon.compaction is failed  # but it looked a moment ago
        daemon._next_look = 0.0  # a minute later
        daemon._compact_on_its_own()
        again = daemon.compaction
        assert again is not failed and again.automatic
        eventually(lambda: not again.running, timeout=120)
        assert again.phase == "done", again.error
        assert again.segments_before > edge.COMPACT_SLACK >= again.segments
    finally:
        daemon.shutdown()
        sock.close()
