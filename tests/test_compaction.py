"""Compaction while the daemon serves (``selfreflect.compaction``): real
daemons, the real engine, the real ``selfreflect`` command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from selfreflect.compaction import WORK_DIR, copy_sparse
from selfreflect.embed import OnnxEmbedder
from selfreflect.errors import SelfReflectError
from selfreflect.store import SearchFilter, edge
from selfreflect.store.edge import EdgeStore
from selfreflect.system import disk_bytes

from conftest import REAL
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


def test_the_daemon_compacts_while_it_serves_and_loses_nothing(
    tmp_path: Path, home: Path, embedder: OnnxEmbedder
) -> None:
    data = tmp_path / "data"
    appended = home / "projects" / "-work" / "written-meanwhile.jsonl"
    with DaemonProcess(home, data, **MANY_SEGMENTS) as daemon:
        daemon.wait_idle()
        before = found(daemon, "spotter")
        assert before
        compact = compact_command(home, data, "import")  # it compacts: many small segments
        during, refused = [], None
        while compact.poll() is None:
            if phase(daemon) == "compacting":
                during.append(found(daemon, "spotter"))
                if refused is None:  # written meanwhile: the importer waits, a reflection is told to retry
                    shutil.copyfile(REAL / "marot__spotter__short.jsonl", appended)
                    refused = httpx.post(
                        daemon.url + "/api/reflections", json={"content": "cerulean walrus", "tags": []}, timeout=30
                    )
            time.sleep(0.02)
        out, err = compact.communicate()
        assert compact.returncode == 0, err
        assert "searches go on, new lines wait" in err
        assert out.startswith("Nothing new: 3 transcripts already indexed"), out
        compacted = re.search(r"^Compacted the store: (\d+) segments into (\d+) in ", out, re.M)
        assert compacted, out
        segments_before, segments_after = int(compacted[1]), int(compacted[2])
        assert segments_before > edge.COMPACT_SLACK >= segments_after
        assert during and all(ids == before for ids in during)  # the store as it was answered meanwhile
        assert refused is not None and refused.status_code == 503
        assert "the store is being compacted" in refused.json()["error"]
        assert {hit for hit in found(daemon, "spotter") if hit[0] != str(appended)} == before
        daemon.wait_idle()  # what was written meanwhile is read once it is done
        eventually(lambda: any(r["transcript"] == str(appended) for r in daemon.search("spotter", limit=50)))
        assert not (data / WORK_DIR).exists() and not (data / "store" / "shard.old").exists()
        assert daemon.stop() == 0
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        assert store.segments() < segments_before / 2  # the compacted shard, and what was written after it
    assert snapshot(data, embedder) == clean_import(home, tmp_path / "clean", embedder)


def test_a_daemon_stopped_while_compacting_ends_it_and_keeps_the_store(
    tmp_path: Path, home: Path, embedder: OnnxEmbedder
) -> None:
    data = tmp_path / "data"
    with DaemonProcess(home, data) as daemon:
        daemon.wait_idle()
        segments = len([p for p in (data / "store" / "shard" / "segments").iterdir() if p.is_dir()])
        compact = compact_command(home, data)
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
