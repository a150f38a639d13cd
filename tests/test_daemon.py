"""The real daemon in a subprocess: streaming, file changes, lifecycle, HTTP."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import zstandard

from selfreflect.assemble import Assembler
from selfreflect.embed import OnnxEmbedder
from selfreflect.importer import Importer
from selfreflect.state import State
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore

from conftest import REAL, build_claude_home, make_settings, resident_kb
from daemon_process import DaemonProcess, eventually, run_cli

pytestmark = pytest.mark.timeout(300)


def covers(results: list[dict], path: Path, line: int) -> bool:
    return any(r["transcript"] == str(path) and r["line_start"] <= line <= r["line_end"] for r in results)


def mentions(results: list[dict], path: Path, words: str) -> bool:
    return any(r["transcript"] == str(path) and words in r["text"] for r in results)


def in_session(daemon: DaemonProcess, words: str, session: str) -> list[dict]:
    """Results for ``words`` in ``session``; none while the session is not indexed yet (a 400 that says so)."""
    answer = httpx.get(daemon.url + "/api/search", params={"q": words, "session": session, "limit": 20}, timeout=30)
    if answer.status_code == 400 and f"no indexed session matches {session!r}" in answer.json()["error"]:
        return []
    answer.raise_for_status()
    return list(answer.json()["results"])


def snapshot(data_dir: Path, embedder: OnnxEmbedder) -> dict[str, tuple]:
    """Every point in a store as (text, lines, exchange, ordinal), by id."""
    with EdgeStore(data_dir / "store", embedder.name, embedder.dim).open() as store:
        points = store.scroll(SearchFilter(), 1_000_000)
    return {
        p["id"]: (p["transcript"], p["text"], p["line_start"], p["line_end"], p.get("exchange"), p.get("ordinal"))
        for p in points
    }


def clean_import(claude_dir: Path, tmp: Path, embedder: OnnxEmbedder) -> dict[str, tuple]:
    settings = make_settings(tmp, claude_dir=claude_dir)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        Importer(settings, store, embedder, State.load(settings.state_file)).run()
    return snapshot(settings.data_dir, embedder)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "claude" / "projects" / "-live").mkdir(parents=True)
    return tmp_path / "claude"


@pytest.mark.parametrize("name", ["obra__episodic-memory__tiny-conversation.jsonl", "marot__spotter__short.jsonl"])
def test_each_appended_line_becomes_searchable(tmp_path: Path, home: Path, name: str) -> None:
    target = home / "projects" / "-live" / "session.jsonl"
    target.touch()
    assembler = Assembler("session")
    with DaemonProcess(home, tmp_path / "data") as daemon:
        for number, raw in enumerate((REAL / name).read_bytes().splitlines(keepends=True), start=1):
            with open(target, "ab") as handle:
                handle.write(raw)
            record = orjson.loads(raw)
            parts = assembler.parts_of(number, record)
            if not parts:
                continue  # metadata, progress: nothing to find
            words = " ".join(parts[0].text.split()[:12])
            session = record.get("sessionId", "session")
            eventually(lambda w=words, s=session, n=number: covers(in_session(daemon, w, s), target, n))
        assert daemon.stop() == 0


def test_torn_line_waits_and_is_indexed_once(tmp_path: Path, home: Path, embedder: OnnxEmbedder) -> None:
    lines = (REAL / "obra__episodic-memory__tiny-conversation.jsonl").read_bytes().splitlines(keepends=True)
    target = home / "projects" / "-live" / "session.jsonl"
    target.write_bytes(b"".join(lines[:4]) + lines[4][:200])  # line 5 half written
    with DaemonProcess(home, tmp_path / "data") as daemon:
        eventually(lambda: covers(daemon.search("fix the instructions"), target, 3))
        time.sleep(1.0)
        assert not covers(daemon.search("bureaucrat tentative annoyingly", limit=50), target, 5)
        with open(target, "ab") as handle:
            handle.write(lines[4][200:])
        eventually(lambda: covers(daemon.search("bureaucrat tentative annoyingly", limit=50), target, 5))
        with open(target, "ab") as handle:
            handle.write(b"".join(lines[5:]))
        daemon.wait_idle()
        assert daemon.stop() == 0
    assert snapshot(tmp_path / "data", embedder) == clean_import(home, tmp_path / "clean", embedder)


def test_truncated_replaced_and_deleted_files(tmp_path: Path, home: Path) -> None:
    folder = home / "projects" / "-live"
    first, second = folder / "a.jsonl", folder / "b.jsonl"
    shutil.copyfile(REAL / "obra__episodic-memory__tiny-conversation.jsonl", first)
    shutil.copyfile(REAL / "marot__spotter__short.jsonl", second)
    with DaemonProcess(home, tmp_path / "data") as daemon:
        eventually(
            lambda: daemon.search("Proactiveness", limit=20) and covers(daemon.search("Proactiveness"), first, 2)
        )
        # replaced: a new file (new inode) renamed over the old one
        staged = folder / "staged.tmp"
        shutil.copyfile(REAL / "d-kimuson__claude-code-viewer__1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl", staged)
        staged.replace(first)
        eventually(lambda: covers(daemon.search("list all files in current directory ls -la", limit=5), first, 16))
        eventually(lambda: not mentions(daemon.search("Proactiveness", limit=50), first, "Proactiveness"))
        # truncated in place, then rewritten shorter
        with open(first, "r+b") as handle:
            handle.truncate(0)
            handle.write((REAL / "obra__episodic-memory__tiny-conversation.jsonl").read_bytes())
        eventually(lambda: covers(daemon.search("Proactiveness", limit=20), first, 2))
        eventually(lambda: not mentions(daemon.search("list all files ls -la", limit=50), first, "ls -la"))
        # deleted: what was indexed stays findable, and the daemon stays up
        before = daemon.search("spotter", limit=50)
        assert any(r["transcript"] == str(second) for r in before)
        second.unlink()
        time.sleep(1.0)
        assert daemon.get("/healthz")["status"] == "ok"
        assert any(r["transcript"] == str(second) for r in daemon.search("spotter", limit=50))
        assert daemon.stop() == 0


def test_second_daemon_is_refused_naming_the_first(tmp_path: Path, home: Path) -> None:
    with DaemonProcess(home, tmp_path / "data") as first:
        second = DaemonProcess(home, tmp_path / "data").start(wait=False)
        assert second.proc is not None
        code = second.proc.wait(timeout=60)
        port = first.url.rsplit(":", 1)[1]
        assert code == 3
        log = second.log.read_text()
        assert f"already running for {tmp_path / 'data'} (pid {first.proc.pid}, port {port})" in log
        assert first.get("/healthz")["status"] == "ok"


def test_a_command_that_needs_the_store_alone_is_refused_while_the_daemon_runs(tmp_path: Path, home: Path) -> None:
    with DaemonProcess(home, tmp_path / "data") as daemon:
        done = run_cli(home, tmp_path / "data", "reindex")
        assert done.returncode == 3, done.stderr
        assert f"the daemon (pid {daemon.proc.pid}) owns the store: run `selfreflect stop` first" in done.stderr
        assert daemon.get("/healthz")["status"] == "ok"


def test_health_metrics_status_and_search_parameters(tmp_path: Path, home: Path) -> None:
    build_claude_home(home)
    with DaemonProcess(home, tmp_path / "data") as daemon:
        health = daemon.wait_idle()
        assert health["status"] == "ok" and health["lag_seconds"] == 0 and health["files_pending"] == 0
        metrics = daemon.get("/metrics")
        for name in (
            "lines_read_total",
            "chunks_indexed_total",
            "bad_lines_total",
            "embed_seconds_total",
            "queue_depth",
            "lag_seconds",
            "rss_bytes",
        ):
            assert f"\nselfreflect_{name} " in "\n" + metrics
        assert "\nselfreflect_bad_lines_total 3\n" in "\n" + metrics
        status = daemon.get("/api/status")
        assert status["chunks"] > 300 and status["daemon"]["pid"] == daemon.proc.pid
        found = daemon.get("/api/search", q="ls -la", limit=2, project="spotter")
        assert set(found) == {"query", "took_ms", "results", "alternatives"} and len(found["results"]) == 2
        assert {r["project"] for r in found["results"]} == {"spotter"} and found["alternatives"] == []
        # more q: alternative phrasings of the same need, fused; each hit says which found it
        fused = daemon.get("/api/search", q=["list the files", "ls -la", "directory listing"], limit=3)
        assert fused["query"] == "list the files" and fused["alternatives"] == ["ls -la", "directory listing"]
        assert fused["results"] and all(r["found_by"] for r in fused["results"])
        assert "ls -la" in fused["results"][0]["found_by"]
        paths = {"path": ["todo-app/package.json", "no/such/file.py"], "limit": 50}
        files = __import__("httpx").get(daemon.url + "/api/by-file", params=paths).json()
        assert files["results"] and files["alternatives"] == ["no/such/file.py"]
        assert all(r["found_by"] == ["todo-app/package.json"] for r in files["results"])
        bad = __import__("httpx").get(daemon.url + "/api/search", params={"q": "x", "since": "someday"})
        assert bad.status_code == 400 and "not a date" in bad.json()["error"]
        assert daemon.stop() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/smaps")
def test_a_daemon_that_caught_up_hands_back_library_code(tmp_path: Path, home: Path) -> None:
    shutil.copyfile(REAL / "obra__episodic-memory__tiny-conversation.jsonl", home / "projects" / "-live" / "a.jsonl")
    with DaemonProcess(home, tmp_path / "data") as daemon:
        daemon.wait_idle()
        # onnxruntime's start-up alone maps about 17 MB of its code
        code = lambda perms, path: perms == "r-xp" and "onnxruntime" in path  # noqa: E731
        eventually(lambda: resident_kb(daemon.proc.pid, code) < 4 * 1024)
        assert daemon.search("episodic memory")  # and the model runs on, from the page cache
        assert daemon.stop() == 0


def test_a_starting_daemon_warms_up_the_engine_and_the_status(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """As it starts serving, the daemon runs one query through the engine
    and computes the status, so that neither the first search nor the first
    `status` pays for it (at 250k chunks: 260-300 ms and 375 ms): the
    status's per-project table is there before anyone asks."""
    import threading

    import numpy as np

    from selfreflect.daemon import Daemon
    from selfreflect.store import Record

    settings = make_settings(tmp_path, port=0)
    settings.projects_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim) as store:
        vectors = rng.standard_normal((3, embedder.dim)).astype(np.float32)
        store.upsert(
            [
                Record(f"00000000-0000-4000-8000-{i:012d}", (v / np.linalg.norm(v)).tolist(), f"chunk {i}", payload)
                for i, v in enumerate(vectors)
                for payload in [{"text": f"chunk {i}", "project_path": "/w/app", "session_id": "s", "thread": "main"}]
            ]
        )
    daemon = Daemon(settings)
    sock = daemon.startup()
    try:
        eventually(lambda: not any(t.name == "warm-up" for t in threading.enumerate()))
        assert daemon.store is not None
        _, _, table = daemon.store.remembered["projects"]
        assert [(p["path"], p["chunks"], p["sessions"]) for p in table] == [("/w/app", 3, 1)]
        assert "store_bytes" in daemon.store.remembered
    finally:
        daemon.shutdown()
        sock.close()


# what `selfreflect search` and `status` must not import on their way to the
# daemon: the model, the store, and the slower parts of the standard library
# (http.client's ssl and email parser, subprocess, the TOML reader without a
# config file, logging unless -v asks for it); each was several ms of a call
# that should take under 100
NOT_ON_THE_CLIENT_PATH = (
    "logging",
    "numpy",
    "onnxruntime",
    "qdrant_edge",
    "sqlite3",
    "http.client",
    "ssl",
    "email",
    "subprocess",
    "tomllib",
    "platformdirs",
    "orjson",
)


def test_cli_goes_through_the_running_daemon(tmp_path: Path, home: Path) -> None:
    """`search` and `status` ask the daemon, importing nothing they do not need for it."""
    shutil.copyfile(REAL / "obra__episodic-memory__tiny-conversation.jsonl", home / "projects" / "-live" / "a.jsonl")
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home), "SELFREFLECT_HOME": str(tmp_path / "data")}
    env.pop("SELFREFLECT_CONFIG", None)  # no config file: nothing to read TOML for
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")

    def cli(*args: str) -> tuple[Any, set[str]]:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "selfreflect", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        imported = {
            line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
        }
        return json.loads(done.stdout), imported

    with DaemonProcess(home, tmp_path / "data") as daemon:
        daemon.wait_idle()
        found, imported = cli("search", "--json", "Proactiveness")
        assert found["results"]
        assert "selfreflect.client" in imported and not imported & set(NOT_ON_THE_CLIENT_PATH)
        status, imported = cli("status", "--json")
        assert status["daemon"]["pid"] == daemon.proc.pid
        assert "selfreflect.client" in imported and not imported & set(NOT_ON_THE_CLIENT_PATH)
        assert not imported & {"selfreflect.query", "selfreflect.store"}  # a status has no search to check
        _, imported = cli("-v", "status", "--json")
        assert "logging" in imported  # asked for: what the client does is told
        assert daemon.stop() == 0


def test_sigterm_mid_backfill_leaves_a_consistent_state(tmp_path: Path, home: Path, embedder: OnnxEmbedder) -> None:
    build_claude_home(home)
    daemon = DaemonProcess(home, tmp_path / "data", CHUNK_SIZE="8")
    with daemon:
        eventually(lambda: daemon.get("/healthz")["chunks_indexed"] > 0, timeout=60)
        assert daemon.stop(signal.SIGTERM) == 0
    assert not (tmp_path / "data" / "daemon.json").exists()
    with DaemonProcess(home, tmp_path / "data", CHUNK_SIZE="8") as again:
        again.wait_idle()
        assert again.stop() == 0
    assert snapshot(tmp_path / "data", embedder) == clean_import(home, tmp_path / "clean", embedder)


def test_kill_9_at_random_points_loses_and_duplicates_nothing(
    tmp_path: Path, home: Path, embedder: OnnxEmbedder
) -> None:
    """kill -9 at 24 random moments (startup, backfill, while lines are being
    appended, mid-line, while the store seals a segment and reopens: small
    segments make that frequent; while a transcript is being archived),
    restart each time: the index ends up exactly as a clean import of the
    same files, and the archive holds each file byte for byte."""
    rng = random.Random(20261127)
    build_claude_home(home)
    then = time.time() - 3600  # nobody writes these: each is archived whole, in the first batch that reads it
    for path in home.rglob("*.jsonl"):
        os.utime(path, (then, then))
    live = home / "projects" / "-live" / "live.jsonl"
    pending = (REAL / "marot__spotter__tool_heavy.jsonl").read_bytes()
    live.write_bytes(b"")
    data = tmp_path / "data"
    for _ in range(24):
        daemon = DaemonProcess(home, data, CHUNK_SIZE="8", SELFREFLECT_SEGMENT_POINTS="48").start(wait=False)
        deadline = time.monotonic() + rng.uniform(0.2, 3.0)
        while time.monotonic() < deadline:
            if pending and rng.random() < 0.3:
                cut = min(len(pending), rng.randint(50, 3000))  # often mid-line
                with open(live, "ab") as handle:
                    handle.write(pending[:cut])
                pending = pending[cut:]
            time.sleep(rng.uniform(0.01, 0.2))
        assert daemon.proc is not None
        daemon.proc.kill()
        assert daemon.proc.wait(timeout=30) == -signal.SIGKILL
    with open(live, "ab") as handle:
        handle.write(pending)
    os.utime(live, (then, then))  # done: archived whole by the last run
    with DaemonProcess(home, data, CHUNK_SIZE="8", SELFREFLECT_SEGMENT_POINTS="48") as daemon:
        daemon.wait_idle(timeout=240)
        assert daemon.stop() == 0
    assert snapshot(data, embedder) == clean_import(home, tmp_path / "clean", embedder)
    for path in home.rglob("*.jsonl"):
        archived = data / "archive" / (path.relative_to(home / "projects").as_posix() + ".zst")
        unpacked = zstandard.ZstdDecompressor().stream_reader(archived.read_bytes(), read_across_frames=True)
        assert unpacked.read() == path.read_bytes(), path
