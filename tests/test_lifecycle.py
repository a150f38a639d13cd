"""Who owns the store when, and every face finding its way to it: real
daemons, real MCP clients over stdio, real CLI processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import TextContent

from selfreflect.daemon import INFO_FILE, running_daemon
from selfreflect.embed import OnnxEmbedder
from selfreflect.importer import Importer
from selfreflect.state import State
from selfreflect.store.edge import EdgeStore

from conftest import REAL, make_settings
from daemon_process import DaemonProcess, eventually
from daemon_process import run_cli as cli

pytestmark = pytest.mark.timeout(300)

TINY = "obra__episodic-memory__tiny-conversation.jsonl"
SESSION = "67a8478e-78dc-44ab-82ea-f65c8ead85f6"


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A Claude home with one real transcript; stops any daemon a test left."""
    folder = tmp_path / "claude" / "projects" / "-work"
    folder.mkdir(parents=True)
    shutil.copyfile(REAL / TINY, folder / TINY)
    yield tmp_path / "claude"
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "selfreflect" in cmdline and str(tmp_path) in cmdline and proc.pid != os.getpid():
            proc.kill()


def env_for(home: Path, data: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "CLAUDE_CONFIG_DIR": str(home), "SELFREFLECT_HOME": str(data), **extra}


def imported(home: Path, data: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(data.parent / "settings", claude_dir=home, data_dir=data)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        Importer(settings, store, embedder, State.load(settings.state_file)).run()


def mcp_server(home: Path, data: Path, **extra: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "selfreflect", "mcp"],
        env=env_for(home, data, **extra),
        cwd=str(data.parent),
    )


async def call(session: ClientSession, tool: str, **args: Any) -> tuple[Any, str, bool]:
    result = await session.call_tool(tool, args)
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    return result.structured_content, text, bool(result.is_error)


def mcp_process(data: Path) -> psutil.Process:
    """The stdio MCP server serving ``data`` (the client spawned it)."""
    for proc in psutil.process_iter(["cmdline"]):
        if (proc.info["cmdline"] or [])[-3:] == ["-m", "selfreflect", "mcp"]:
            try:
                if proc.environ().get("SELFREFLECT_HOME") == str(data):
                    return proc
            except psutil.Error:
                continue
    raise AssertionError("no MCP server process")


def zombies_of(pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children() if c.status() == psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def test_mcp_answers_at_once_when_the_daemon_cannot_start(tmp_path: Path, home: Path, embedder: OnnxEmbedder) -> None:
    """An import holds the store, and the configured port is taken: the
    daemon the MCP server starts exits at once, and the server says why
    instead of waiting; once the import is done, the same session works."""
    data = tmp_path / "data"
    imported(home, data, embedder)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    holder = EdgeStore(data / "store", embedder.name, embedder.dim, command="import").open()

    async def scenario() -> None:
        port = str(taken.getsockname()[1])
        async with stdio_client(mcp_server(home, data, SELFREFLECT_PORT=port)) as (read, write):
            async with ClientSession(read, write) as session:
                with anyio.fail_after(20):  # it waited 61 s before; Claude Code gives a server about 30
                    await session.initialize()
                    _, text, error = await call(session, "status")
                assert error and "in use by `selfreflect import`" in text
                mcp_pid = mcp_process(data).pid
                eventually(lambda: not zombies_of(mcp_pid))  # the child that exited was reaped
                holder.close()  # the import is done
                found, _, error = await call(session, "reflect_on_past", query="Proactiveness", project="all")
                assert not error and found["results"]

    try:
        anyio.run(scenario)
    finally:
        holder.close()
        taken.close()


def test_mcp_session_survives_its_daemon_being_killed(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "data"

    async def scenario() -> None:
        async with stdio_client(mcp_server(home, data)) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                with anyio.fail_after(120):
                    while True:
                        report, _, error = await call(session, "status")
                        if not error and report["chunks"] and report["daemon"]["files_pending"] == 0:
                            break
                        await anyio.sleep(0.2)
                first = report["daemon"]["pid"]
                os.kill(first, signal.SIGKILL)
                eventually(lambda: running_daemon(data) is None, timeout=30)
                found, text, error = await call(session, "reflect_on_past", query="Proactiveness", project="all")
                assert not error, text
                assert found["results"]
                report, _, error = await call(session, "status")
                assert not error and report["daemon"]["pid"] != first  # a new daemon took over

    anyio.run(scenario)


def test_the_daemon_an_mcp_server_starts_in_a_project_folder_runs(tmp_path: Path, home: Path) -> None:
    """Claude Code runs the MCP server in the project's folder; `python -m`
    puts the working folder first on sys.path, so a project's ``token.py``
    or ``secrets.py`` would stand in for the standard library's in the
    daemon the server starts, and the daemon would not start."""
    data, project = tmp_path / "data", tmp_path / "project"
    project.mkdir()
    for name in ("token.py", "secrets.py", "uuid.py"):
        (project / name).write_text("raise SystemExit('the project folder was on sys.path')\n")
    script = shutil.which("selfreflect", path=os.path.dirname(sys.executable))
    command, args = (script, ["mcp"]) if script else (sys.executable, ["-m", "selfreflect", "mcp"])
    params = StdioServerParameters(command=command, args=args, env=env_for(home, data), cwd=str(project))

    async def scenario() -> None:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                with anyio.fail_after(120):
                    while True:
                        report, text, error = await call(session, "status")
                        assert not error, text
                        daemon = report.get("daemon") or {}
                        if daemon.get("pid") and report["chunks"] and daemon.get("files_pending") == 0:
                            break
                        await anyio.sleep(0.2)
                found, text, error = await call(session, "reflect_on_past", query="Proactiveness", project="all")
                assert not error and found["results"], text

    anyio.run(scenario)
    assert "the project folder was on sys.path" not in (data / "serve.log").read_text()


def test_a_stale_daemon_json_is_not_trusted(tmp_path: Path, home: Path, embedder: OnnxEmbedder) -> None:
    """After a kill -9 the pid in daemon.json can belong to another program:
    it is not taken for the daemon, and the CLI opens the store itself."""
    data = tmp_path / "data"
    imported(home, data, embedder)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        fake = {"pid": stranger.pid, "port": listener.getsockname()[1], "started": time.time(), "version": "0"}
        fake |= {"instance": "x", "process_started": time.time() - 3600, "started_by": "serve"}
        (data / INFO_FILE).write_text(json.dumps(fake))
        assert running_daemon(data) is None
        found = cli(home, data, "search", "--json", "Proactiveness")
        assert found.returncode == 0, found.stderr
        assert json.loads(found.stdout)["results"]
        status = cli(home, data, "status")
        assert status.returncode == 0 and "daemon:      not running" in status.stdout
        listener.close()
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"\xff\xfe{}",
        b"[1, 2]",
        b'{"pid": 1}',
        b'{"pid": 1, "port": 2, "started": 0, "version": "x", "new": 1}',
    ],
    ids=["empty", "torn", "not-utf8", "not-an-object", "fields-missing", "unknown-field"],
)
def test_a_daemon_json_that_cannot_be_read_names_no_daemon(tmp_path: Path, content: bytes) -> None:
    (tmp_path / INFO_FILE).write_bytes(content)
    assert running_daemon(tmp_path) is None


def test_import_show_status_and_stop_while_serve_runs(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "data"
    with DaemonProcess(home, data) as daemon:
        daemon.wait_idle()
        staged = tmp_path / "later.jsonl"
        shutil.copyfile(REAL / "marot__spotter__short.jsonl", staged)
        staged.replace(home / "projects" / "-work" / "later.jsonl")
        done = cli(home, data, "import")
        assert done.returncode == 0, done.stderr
        assert f"The daemon (pid {daemon.proc.pid}" in done.stderr  # type: ignore[union-attr]
        assert done.stdout.startswith(("Imported by the daemon:", "Nothing new:"))
        assert daemon.get("/healthz")["files_pending"] == 0  # it waited until the daemon caught up
        assert any(r["transcript"].endswith("later.jsonl") for r in daemon.search("model", limit=50))

        shown = cli(home, data, "show", SESSION, "--line", "2", "--context", "0")
        assert shown.returncode == 0, shown.stderr
        assert ">     2  assistant" in shown.stdout and "Proactiveness" in shown.stdout

        status = cli(home, data, "status")
        assert status.returncode == 0 and f"daemon:      pid {daemon.proc.pid}" in status.stdout  # type: ignore[union-attr]
        assert "started by serve, ok" in status.stdout

        stopped = cli(home, data, "stop")
        assert stopped.returncode == 0 and f"Stopped the daemon (pid {daemon.proc.pid}" in stopped.stdout  # type: ignore[union-attr]
        assert daemon.proc is not None and daemon.proc.wait(timeout=60) == 0
    again = cli(home, data, "stop")
    assert again.returncode == 0 and "No daemon is running" in again.stdout


def test_a_cli_import_holding_the_store_is_named_with_when_it_started(
    tmp_path: Path, home: Path, embedder: OnnxEmbedder
) -> None:
    data = tmp_path / "data"
    imported(home, data, embedder)
    with EdgeStore(data / "store", embedder.name, embedder.dim, command="import").open():
        for args in (["search", "x"], ["status"], ["import"]):
            result = cli(home, data, *args)
            assert result.returncode == 3, (args, result.stderr)
            assert f"in use by `selfreflect import` (pid {os.getpid()}, since " in result.stderr
            assert "Traceback" not in result.stderr
        served = cli(home, data, "serve", "--port", "0", "--started-by", "mcp (pid 1)")
        assert served.returncode == 3 and "selfreflect import" in served.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0, reason="mounts a read-only tmpfs")
def test_a_read_only_data_dir_is_a_message_everywhere(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(data)], check=True)
    try:
        for args in (["import"], ["serve", "--port", "0"]):
            result = cli(home, data, *args)
            assert result.returncode == 1, (args, result.stderr)
            assert f"cannot write to the data folder {data}" in result.stderr
            assert "Traceback" not in result.stderr
        result = cli(home, data, "search", "x")
        assert result.returncode == 1 and "nothing is indexed yet" in result.stderr
        result = cli(home, data, "status")
        assert result.returncode == 0 and "Nothing indexed yet" in result.stdout

        async def scenario() -> None:
            async with stdio_client(mcp_server(home, data)) as (read, write):
                async with ClientSession(read, write) as session:
                    with anyio.fail_after(30):
                        await session.initialize()
                        _, text, error = await call(session, "reflect_on_past", query="x")
                    assert error and f"cannot write to the data folder {data}" in text

        anyio.run(scenario)
    finally:
        subprocess.run(["umount", str(data)], check=True)


def test_a_data_dir_that_is_a_file_is_a_message(tmp_path: Path, home: Path) -> None:
    data = tmp_path / "a-file"
    data.write_text("not a folder")
    for args in (["import"], ["serve"]):
        result = cli(home, data, *args)
        assert result.returncode == 1, result.stderr
        assert f"the data folder {data} is a file, not a folder" in result.stderr and "Traceback" not in result.stderr


def test_read_conversation_edges(tmp_path: Path, home: Path) -> None:
    import httpx

    with DaemonProcess(home, tmp_path / "data") as daemon:
        daemon.wait_idle()
        saved = httpx.post(daemon.url + "/api/reflections", json={"content": "Use RRF", "tags": ["search"]}).json()
        around = daemon.get("/api/conversation", session_id="reflections", line=saved["line_start"])
        (entry,) = [x for x in around["lines"] if x["line"] == saved["line_start"]]
        assert entry["kind"] == "reflection" and entry["text"] == "Reflection [search]: Use RRF"

        empty = httpx.get(daemon.url + "/api/conversation", params={"session_id": "", "line": 1})
        assert empty.status_code == 404 and "give a session id" in empty.json()["error"]

        (home / "projects" / "-work" / TINY).unlink()  # Claude Code's clean-up
        gone = httpx.get(daemon.url + "/api/conversation", params={"session_id": SESSION, "line": 2})
        assert gone.status_code == 404 and "no longer on disk" in gone.json()["error"]
        assert daemon.search("Proactiveness")  # what was indexed stays findable
        assert daemon.stop() == 0
