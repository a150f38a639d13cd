"""The Qdrant server store through the command line and the daemon.

``QDRANT_URL`` names a server; a folder there is ``qdrant-client``'s local
mode, the same API without a server, which is what these tests use (no
Qdrant server runs here). The store-level contract is test_store_contract.py.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest

from conftest import REAL
from daemon_process import DaemonProcess, run_cli

pytestmark = pytest.mark.timeout(600)

TINY = "obra__episodic-memory__tiny-conversation.jsonl"
LS = "d-kimuson__claude-code-viewer__1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl"


def home(root: Path, *names: str) -> Path:
    folder = root / "claude" / "projects" / "-work"
    folder.mkdir(parents=True)
    for name in names:
        shutil.copyfile(REAL / name, folder / name)
    return root / "claude"


def test_import_search_status_reindex_on_a_server(tmp_path: Path) -> None:
    claude, data = home(tmp_path, TINY, LS), tmp_path / "data"
    server = {"QDRANT_URL": str(tmp_path / "qdrant"), "SELFREFLECT_MACHINE": "laptop-1"}
    done = run_cli(claude, data, "import", **server)
    assert done.returncode == 0, done.stderr
    found = run_cli(claude, data, "search", "--json", "--limit", "2", "Proactiveness", **server)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0]["transcript"].endswith(TINY)
    mine = run_cli(claude, data, "search", "--json", "Proactiveness", "--host", "laptop-1", **server)
    theirs = run_cli(claude, data, "search", "--json", "Proactiveness", "--host", "laptop-2", **server)
    assert json.loads(mine.stdout)["results"] and not json.loads(theirs.stdout)["results"]
    status = run_cli(claude, data, "status", **server)
    assert (
        f"store:       Qdrant {tmp_path / 'qdrant'}, collection selfreflect, this machine laptop-1: " in status.stdout
    )
    assert not (data / "store").exists()  # nothing embedded
    again = run_cli(claude, data, "reindex", **server)
    assert again.returncode == 0 and "Rebuilt this machine's points (laptop-1;" in again.stdout
    chunks = json.loads(run_cli(claude, data, "status", "--json", **server).stdout)["chunks"]
    assert chunks == json.loads(status_json := run_cli(claude, data, "status", "--json", **server).stdout)["chunks"]
    assert status_json and chunks > 0


def test_migrate_to_a_server_and_back(tmp_path: Path) -> None:
    claude, data = home(tmp_path, TINY, LS), tmp_path / "data"
    assert run_cli(claude, data, "import").returncode == 0
    before = json.loads(run_cli(claude, data, "search", "--json", "ls -la").stdout)["results"]
    url = str(tmp_path / "qdrant")
    moved = run_cli(claude, data, "migrate", "--to", url, SELFREFLECT_MACHINE="laptop-1")
    assert moved.returncode == 0, moved.stderr
    assert "sampled points equal" in moved.stdout and "Copied " in moved.stdout
    # the read positions hold for the copy: nothing to read again
    again = run_cli(claude, data, "import", QDRANT_URL=url, SELFREFLECT_MACHINE="laptop-1")
    assert again.returncode == 0 and again.stdout.startswith("Nothing new"), again.stdout + again.stderr
    # the server answers the same; then into a new embedded store on another data dir
    on_server = run_cli(claude, data, "search", "--json", "ls -la", QDRANT_URL=url, SELFREFLECT_MACHINE="laptop-1")
    assert [r["line_start"] for r in json.loads(on_server.stdout)["results"]] == [r["line_start"] for r in before]
    back = run_cli(claude, tmp_path / "other", "migrate", "--from", url, SELFREFLECT_MACHINE="laptop-1")
    assert back.returncode == 0, back.stderr
    after = run_cli(claude, tmp_path / "other", "search", "--json", "ls -la")
    assert [r["line_start"] for r in json.loads(after.stdout)["results"]] == [r["line_start"] for r in before]
    wrong = run_cli(claude, data, "migrate", "--to", url, "--from", url)
    assert wrong.returncode == 1 and "exactly one of --to URL and --from URL" in wrong.stderr


def test_the_daemon_streams_into_a_server(tmp_path: Path) -> None:
    claude, data = home(tmp_path, TINY), tmp_path / "data"
    server = {"QDRANT_URL": str(tmp_path / "qdrant"), "SELFREFLECT_MACHINE": "laptop-1"}
    with DaemonProcess(claude, data, **server) as daemon:
        daemon.wait_idle()
        before = daemon.get("/api/status")["chunks"]
        shutil.copyfile(REAL / LS, claude / "projects" / "-work" / LS)
        deadline = time.monotonic() + 60
        while daemon.get("/api/status")["chunks"] == before and time.monotonic() < deadline:
            time.sleep(0.1)
        daemon.wait_idle()
        hits = daemon.search("ls -la", limit=3)
        assert hits and hits[0]["transcript"].endswith(LS)
        assert daemon.get("/healthz")["status"] == "ok"
        # the data folder is this daemon's: a second one, or an import beside it, is told who has it
        second = run_cli(claude, data, "serve", "--port", "0", **server)
        assert second.returncode == 3 and "already running" in second.stderr
        assert daemon.stop() == 0


def test_a_server_that_cannot_be_reached_is_said_plainly(tmp_path: Path) -> None:
    claude, data = home(tmp_path, TINY), tmp_path / "data"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = run_cli(claude, data, "import", QDRANT_URL=f"http://127.0.0.1:{port}")
    assert done.returncode != 0
    assert f"the Qdrant server at http://127.0.0.1:{port} cannot be reached" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_search_while_the_server_is_down_is_a_503() -> None:
    from selfreflect.errors import StoreUnavailable
    from selfreflect.http import answer

    def down() -> None:
        raise StoreUnavailable("the Qdrant server at http://qdrant:6333 cannot be reached")

    response = answer(down)
    assert response.status_code == 503 and b"cannot be reached" in response.body
