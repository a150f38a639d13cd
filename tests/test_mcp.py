"""MCP with the official client of the SDK, over stdio and streamable HTTP."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from selfreflect.mcp import Conversation, _conversation

from conftest import REAL, write_session
from daemon_process import DaemonProcess, run_cli

pytestmark = pytest.mark.timeout(300)

FILES = (
    "d-kimuson__claude-code-viewer__1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl",
    "obra__episodic-memory__tiny-conversation.jsonl",
    "d-kimuson__claude-code-viewer__5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl",
)
TOOLS = {"reflect_on_past", "store_reflection", "search_by_file", "read_conversation", "status"}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A Claude home of three real transcripts; stops any daemon a test started."""
    folder = tmp_path / "claude" / "projects" / "-workspace"
    folder.mkdir(parents=True)
    for name in FILES:
        shutil.copyfile(REAL / name, folder / name)
    yield tmp_path / "claude"
    info = tmp_path / "data" / "daemon.json"
    if info.exists():
        pid = json.loads(info.read_text())["pid"]
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGTERM)
            psutil.Process(pid).wait(timeout=60)


def server(home: Path, data: Path, *args: str, cwd: Path | None = None) -> StdioServerParameters:
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home), "SELFREFLECT_HOME": str(data), "SELFREFLECT_PORT": "0"}
    return StdioServerParameters(
        command=sys.executable, args=["-m", "selfreflect", "mcp", *args], env=env, cwd=str(cwd or data.parent)
    )


async def call(session: ClientSession, tool: str, **args: Any) -> tuple[Any, str, bool]:
    result = await session.call_tool(tool, args)
    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
    return result.structured_content, text, bool(result.is_error)


async def wait_indexed(session: ClientSession) -> dict[str, Any]:
    with anyio.fail_after(120):
        while True:
            report, _, _ = await call(session, "status")
            if report["chunks"] and report.get("daemon", {}).get("files_pending", 0) == 0:
                return dict(report)
            await anyio.sleep(0.2)


def cited_text(result: dict[str, Any]) -> str:
    lines = Path(result["transcript"]).read_bytes().split(b"\n")[result["line_start"] - 1 : result["line_end"]]
    return " ".join(json.dumps(orjson.loads(raw)) for raw in lines if raw.strip())


def test_stdio_tools_end_to_end(tmp_path: Path, home: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    record = {
        "type": "user",
        "uuid": "m1",
        "sessionId": "mine-1",
        "cwd": str(mine),
        "timestamp": "2026-03-01T10:00:00Z",
        "message": {"role": "user", "content": "in my project, run ls -la on the build folder"},
    }
    (home / "projects" / "-mine").mkdir()
    (home / "projects" / "-mine" / "mine-1.jsonl").write_bytes(orjson.dumps(record) + b"\n")

    async def scenario() -> None:
        async with stdio_client(server(home, tmp_path / "data", cwd=mine)) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {t.name: t for t in (await session.list_tools()).tools}
                assert set(tools) == TOOLS
                schema = tools["reflect_on_past"].input_schema
                assert schema["required"] == ["query"] and schema["properties"]["limit"]["default"] == 5
                assert {"project", "since", "min_score", "use_decay", "alternatives"} <= set(schema["properties"])
                assert schema["properties"]["alternatives"]["anyOf"][0]["maxItems"] == 3
                described = tools["reflect_on_past"].description or ""
                assert "alternatives" in described and "keyword" in described and "at the time" in described
                assert tools["reflect_on_past"].output_schema is not None
                report = await wait_indexed(session)
                assert report["daemon"]["pid"] != os.getpid()  # the daemon it started serves the calls

                found, text, error = await call(
                    session, "reflect_on_past", query="list all files in the current directory", project="all"
                )
                assert (
                    not error
                    and found["results"]
                    and set(found) == {"query", "took_ms", "results", "alternatives", "note", "left_out"}
                )
                top = found["results"][0]
                assert top["transcript"].endswith(FILES[0]) and "ls -la" in cited_text(top)
                assert f"{top['transcript']}:{top['line_start']}-{top['line_end']}" in text
                assert all(len(r["text"]) <= 600 for r in found["results"])

                # alternatives: each phrasing searched, the lists fused, each hit says which found it
                also = ["ls -la", "directory listing command"]
                fused, text, error = await call(
                    session, "reflect_on_past", query="show me what is in the folder", alternatives=also, project="all"
                )
                assert not error and fused["alternatives"] == also and "found by: 'ls -la'" in text
                assert all(set(r["found_by"]) <= {"show me what is in the folder", *also} for r in fused["results"])
                _, text, error = await call(session, "reflect_on_past", query="x", alternatives=["a", "b", "c", "d"])
                assert error and "3" in text

                # the client's folder is its project by default; "all" widens it
                scoped, text, _ = await call(session, "reflect_on_past", query="ls -la")
                assert 'project="all"' in text and 'project="all"' in scoped["note"]  # Claude Code shows this one
                assert {r["project"] for r in scoped["results"]} == {"mine"}
                # nothing strong in the client's project: it says so and widens to all projects
                wide, text, _ = await call(
                    session, "reflect_on_past", query="Proactiveness section of the instructions"
                )
                assert "no strong match in " in text and "searched all projects instead" in wide["note"]
                # the budget holds for what Claude Code gives the model: the structured results, not the text
                roomy, _, _ = await call(
                    session, "reflect_on_past", query="ls -la", project="all", limit=20, max_tokens=20000
                )
                tight, _, _ = await call(
                    session, "reflect_on_past", query="ls -la", project="all", limit=20, max_tokens=600
                )
                assert roomy["left_out"] == 0 and len(tight["results"]) + tight["left_out"] == len(roomy["results"])
                assert tight["left_out"] > 0 and sum(len(orjson.dumps(r)) for r in tight["results"]) <= 600 * 4
                assert wide["results"][0]["project"] != "mine" and wide["results"][0]["relevance"] >= 0.32
                # a project that is not indexed: an error naming the close ones
                _, text, error = await call(session, "reflect_on_past", query="ls -la", project="/nowhere")
                assert error and "no indexed project matches '/nowhere'; did you mean" in text

                by_file, _, error = await call(
                    session, "search_by_file", path="todo-app/package.json", alternatives=["old/name.json"]
                )
                assert not error and by_file["results"] and by_file["alternatives"] == ["old/name.json"]
                assert all(any(f.endswith("todo-app/package.json") for f in r["files"]) for r in by_file["results"])

                first = found["results"][0]
                around, text, error = await call(
                    session, "read_conversation", session_id=first["session_id"], line=first["line_start"], before=1
                )
                assert not error and around["transcript"] == first["transcript"]
                assert [x["line"] for x in around["lines"]][0] == max(1, first["line_start"] - 1)

                saved, _, error = await call(
                    session,
                    "store_reflection",
                    content="Cerulean-walrus rule: fuse BM25 and dense with RRF",
                    tags=["search"],
                )
                assert not error and saved["transcript"].endswith("reflections.jsonl")
                again, _, _ = await call(session, "store_reflection", content="Cerulean-walrus rule, second note")
                assert again["id"] != saved["id"]
                hits, _, _ = await call(
                    session, "reflect_on_past", query="cerulean walrus rule", project="all", limit=3
                )
                assert {r["line_start"] for r in hits["results"] if r["session_id"] == "reflections"} == {1, 2}

                # only what is indexed can be read: not a path outside, nor a real file that is not indexed
                for bad in ("../../../etc/passwd", "/etc/passwd", str(REAL / FILES[0]), "no-such-session"):
                    _, text, error = await call(session, "read_conversation", session_id=bad, line=1)
                    assert error and "no indexed transcript" in text

    anyio.run(scenario)


def test_stdout_carries_protocol_only(tmp_path: Path, home: Path) -> None:
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "status", "arguments": {}}},
    ]
    params = server(home, tmp_path / "data", "--no-daemon")
    with open(tmp_path / "stderr.log", "wb") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "selfreflect", "-vv", "mcp", "--no-daemon"],
            env=params.env,
            cwd=params.cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
        assert proc.stdin is not None and proc.stdout is not None
        for message in messages:
            proc.stdin.write(json.dumps(message).encode() + b"\n")
            proc.stdin.flush()
        answers = [json.loads(proc.stdout.readline()) for _ in range(3)]  # every line must be JSON-RPC
        proc.stdin.close()
        rest = proc.stdout.read()
        proc.stdout.close()
        proc.wait(timeout=60)
    assert [a["id"] for a in answers] == [1, 2, 3] and all(a["jsonrpc"] == "2.0" for a in answers)
    assert {t["name"] for t in answers[1]["result"]["tools"]} == TOOLS
    assert all(json.loads(line)["jsonrpc"] == "2.0" for line in rest.splitlines() if line.strip())
    assert not (tmp_path / "data" / "daemon.json").exists()  # --no-daemon: none was started
    assert b"DEBUG" in (tmp_path / "stderr.log").read_bytes()  # the logs went to stderr


def test_streamable_http_on_the_daemon(tmp_path: Path, home: Path) -> None:
    with DaemonProcess(home, tmp_path / "data") as daemon:
        daemon.wait_idle()

        async def scenario() -> None:
            async with streamable_http_client(daemon.url + "/mcp") as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    assert {t.name for t in (await session.list_tools()).tools} == TOOLS
                    found, _, error = await call(session, "reflect_on_past", query="Proactiveness")
                    assert not error and found["results"]  # no client folder over HTTP: all projects
                    top = found["results"][0]
                    assert "Proactiveness" in cited_text(top)
                    around, _, error = await call(session, "read_conversation", session_id=top["session_id"], line=2)
                    assert not error and any(x["line"] == 2 for x in around["lines"])
                    await a_wide_window_keeps_to_its_budget(
                        session, daemon, home / "projects" / "-workspace" / FILES[0]
                    )

        anyio.run(scenario)
        assert daemon.stop() == 0


async def a_wide_window_keeps_to_its_budget(session: ClientSession, daemon: DaemonProcess, transcript: Path) -> None:
    """read_conversation's answer keeps to its token budget (counted on the
    JSON Claude Code gives the model): the cited line and the run of lines
    nearest it, the rest counted; a budget big enough gives the whole window,
    as ``/api/conversation`` does, and the default window fits the default."""
    line, wide, name = len(transcript.read_bytes().splitlines()) // 2, {"before": 50, "after": 50}, str(transcript)
    window = daemon.get("/api/conversation", session_id=name, line=line, **wide)["lines"]
    numbers = [x["line"] for x in window]
    whole, _, _ = await call(session, "read_conversation", session_id=name, line=line, max_tokens=20000, **wide)
    assert whole["lines"] == window and whole["left_out"] == 0
    budget = max(200, sum(len(orjson.dumps(x)) for x in window) // 4 // 3)  # a third of the window
    cut, text, error = await call(session, "read_conversation", session_id=name, line=line, max_tokens=budget, **wide)
    kept = [x["line"] for x in cut["lines"]]
    assert not error and cut["left_out"] > 0 and len(kept) + cut["left_out"] == len(window)
    assert line in kept and kept == numbers[numbers.index(kept[0]) : numbers.index(kept[-1]) + 1]  # one run
    assert sum(len(orjson.dumps(x)) for x in cut["lines"]) <= budget * 4 < sum(len(orjson.dumps(x)) for x in window)
    assert f"{cut['left_out']} lines left out for the token budget" in text
    shows = lambda x: any(f"\n{m}{x['line']} {x['kind']} {(x['timestamp'] or '')[:16]}\n" in text for m in " >")  # noqa: E731
    assert all(shows(x) for x in cut["lines"]) and not any(shows(x) for x in window if x["line"] not in kept)
    default, _, _ = await call(session, "read_conversation", session_id=name, line=line)
    assert default["left_out"] == 0
    assert default["lines"] == daemon.get("/api/conversation", session_id=name, line=line)["lines"]


@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=40),
    data=st.data(),
    tokens=st.integers(200, 20000),
)
def test_a_window_kept_to_its_budget_is_the_run_of_lines_nearest_the_cited_ones(
    sizes: list[int], data: st.DataObject, tokens: int
) -> None:
    """Whatever the lines' sizes: one run of lines with the first cited line
    in it, within the budget unless that line alone is over it, the rest
    counted, and neither line beside the run would have fit."""
    first = data.draw(st.integers(1, len(sizes)))
    last = data.draw(st.integers(first, len(sizes)))
    lines = [{"line": n, "kind": "user", "timestamp": None, "text": "x" * size} for n, size in enumerate(sizes, 1)]
    window = Conversation(session_id="s", transcript="t.jsonl", line=first, line_end=last, lines=lines)  # type: ignore[arg-type]
    kept = _conversation(window, tokens).structured_content
    assert kept is not None
    numbers = [x["line"] for x in kept["lines"]]
    assert first in numbers and numbers == list(range(numbers[0], numbers[-1] + 1))
    assert kept["left_out"] == len(sizes) - len(numbers)
    room = tokens * 4 - len("t.jsonl around " + (f"line {first}:" if first == last else f"lines {first}-{last}:"))
    used = sum(len(orjson.dumps(x)) for x in kept["lines"])
    assert len(numbers) == 1 or used <= room
    for beside in (numbers[0] - 1, numbers[-1] + 1):
        if 1 <= beside <= len(sizes):
            assert used + len(orjson.dumps(lines[beside - 1])) > room


def test_the_status_tool_names_as_many_projects_as_its_text(tmp_path: Path, home: Path) -> None:
    """Claude Code gives the model a tool's structured content in place of
    its text: the status tool's names the 10 most recently active projects
    and the first 10 transcripts due for the clean-up, and says how many
    there are, as its text does; ``status --json`` has them all."""
    old = time.time() - 28 * 86400  # Claude Code deletes these in 2 days (30 by default)
    for n in range(12):
        folder = home / "projects" / f"-p{n}"
        folder.mkdir()
        record = {
            "type": "user",
            "uuid": f"u{n}",
            "sessionId": f"s{n}",
            "cwd": f"/home/dev/p{n}",
            "timestamp": f"2026-03-{n + 1:02d}T10:00:00Z",
            "message": {"role": "user", "content": f"project {n}: set up the build"},
        }
        (folder / f"s{n}.jsonl").write_bytes(orjson.dumps(record) + b"\n")
        os.utime(folder / f"s{n}.jsonl", (old, old))

    async def scenario() -> tuple[dict[str, Any], str, dict[str, Any]]:
        async with stdio_client(server(home, tmp_path / "data")) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                await wait_indexed(session)
                with anyio.fail_after(60):
                    while True:  # the table lags the writes by up to 10 s
                        report, text, _ = await call(session, "status")
                        full = json.loads(run_cli(home, tmp_path / "data", "status", "--json").stdout)
                        if report["projects_total"] == len(full["projects"]) > 12:  # the corpus's and these
                            return report, text, full
                        await anyio.sleep(0.5)

    report, text, full = anyio.run(scenario)
    assert [p["project"] for p in report["projects"]] == [f"p{n}" for n in range(11, 1, -1)]
    assert f"... and {len(full['projects']) - 10} more projects" in text
    assert report["projects"] == full["projects"][:10]
    assert report["cleanup"]["due"] == full["cleanup"]["due"] == 12
    assert report["cleanup"]["transcripts"] == full["cleanup"]["transcripts"][:10]
    assert len(full["cleanup"]["transcripts"]) == 12


def test_the_stdio_server_asks_the_daemon_without_the_model_or_the_store(tmp_path: Path, home: Path) -> None:
    """Claude Code starts one ``selfreflect mcp`` a session: with a daemon
    running, it only asks it, and loads neither numpy, the model, the
    store's engine nor SQLite (83 MB of memory a session with them, 69
    without)."""
    heavy = {"numpy", "onnxruntime", "tokenizers", "qdrant_edge", "sqlite3", "zstandard"}
    log = tmp_path / "imports.txt"
    with DaemonProcess(home, tmp_path / "data") as daemon:
        daemon.wait_idle()
        params = server(home, tmp_path / "data")
        params.args = ["-X", "importtime", *params.args]

        async def scenario() -> None:
            with open(log, "w") as errlog:
                async with stdio_client(params, errlog=errlog) as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        found, _, error = await call(session, "reflect_on_past", query="Proactiveness", project="all")
                        assert not error and found["results"]
                        report, _, error = await call(session, "status")
                        assert not error and report["daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]

        anyio.run(scenario)
        assert daemon.stop() == 0
    imported = {
        line.rsplit("|", 1)[1].strip() for line in log.read_text().splitlines() if line.startswith("import time:")
    }
    assert "selfreflect.client" in imported and not imported & heavy


def test_several_stdio_clients_share_one_daemon(tmp_path: Path, home: Path) -> None:
    pids: list[int] = []

    async def client() -> None:
        async with stdio_client(server(home, tmp_path / "data")) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                report, _, _ = await call(session, "status")
                pids.append(report["daemon"]["pid"])

    async def scenario() -> None:
        async with anyio.create_task_group() as group:
            for _ in range(3):
                group.start_soon(client)

    anyio.run(scenario)
    assert len(pids) == 3 and len(set(pids)) == 1
    serving = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "serve" in (p.info["cmdline"] or []) and str(tmp_path / "data") in " ".join(p.info["cmdline"] or [])
    ]
    assert [p.pid for p in serving] == pids[:1]
    log = (tmp_path / "data" / "serve.log").read_text()
    assert "error:" not in log and "Traceback" not in log  # the daemons that lost the race exit quietly


def test_citations_and_answers_read_right_over_mcp_http_and_cli(tmp_path: Path, home: Path) -> None:
    folder = home / "projects" / "-workspace"
    write_session(folder, "abcd1111-0000-4000-8000-000000000001", "configure the walrus cache")
    write_session(folder, "abcd2222-0000-4000-8000-000000000002", "configure the walrus queue")
    data = tmp_path / "data"
    with DaemonProcess(home, data) as daemon:
        daemon.wait_idle()
        top = daemon.search("list all files in the current directory", limit=1)[0]
        start, end = top["line_start"], top["line_end"]
        citation = f"{top['transcript']}:{start}-{end}"
        count = len(Path(top["transcript"]).read_bytes().splitlines())

        async def scenario() -> None:
            async with streamable_http_client(daemon.url + "/mcp") as (read, write):
                async with ClientSession(read, write) as session:
                    hello = await session.initialize()
                    assert hello.server_info.version == importlib.metadata.version("selfreflect")

                    found, text, _ = await call(
                        session, "reflect_on_past", query="list all files in the current directory"
                    )
                    assert found["results"][0]["transcript"] == top["transcript"] and citation in text
                    # the citation as printed: those lines, no line argument needed
                    around, text, error = await call(
                        session, "read_conversation", session_id=citation, after=0, before=0
                    )
                    assert not error and [x["line"] for x in around["lines"]] == list(range(start, end + 1))
                    assert (around["line"], around["line_end"]) == (start, end) and f"lines {start}-{end}" in text
                    around, _, error = await call(
                        session, "read_conversation", session_id=top["session_id"][:8], line=16, before=0, after=0
                    )
                    assert not error and around["transcript"] == top["transcript"]
                    assert [x["line"] for x in around["lines"]] == [16]
                    _, text, error = await call(session, "read_conversation", session_id="abcd")
                    assert error and "'abcd' is the start of 2 sessions" in text
                    _, text, error = await call(session, "read_conversation", session_id="abce1111")
                    assert error and "did you mean 'abcd1111-0000-4000-8000-000000000001'" in text
                    _, text, error = await call(
                        session, "read_conversation", session_id=f"{top['transcript']}:{count + 1}"
                    )
                    assert error and f"has {count} lines: line {count + 1} is past its end" in text

                    saved, text, _ = await call(session, "store_reflection", content="walrus caches need a TTL")
                    assert f"reflections.jsonl:{saved['line_start']})" in text
                    around, _, error = await call(
                        session, "read_conversation", session_id=f"reflections.jsonl:{saved['line_start']}"
                    )
                    assert not error and around["lines"][-1]["text"] == "Reflection: walrus caches need a TTL"

                    by_file, text, _ = await call(session, "search_by_file", path="todo-app/package.json")
                    assert by_file["results"] and text.startswith("newest first")
                    assert "relevance" not in text and "0.00" not in text

                    report, text, _ = await call(session, "status")
                    assert report["chunks"] and report["projects"] and report["daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]
                    assert len(text) < 1000 and "{" not in text  # a summary to read, not the JSON
                    assert f"{report['chunks']} chunks" in text and "daemon:      pid" in text

        anyio.run(scenario)

        # HTTP takes the same citations and names
        around = daemon.get("/api/conversation", session_id=citation, before=0, after=0)
        assert [x["line"] for x in around["lines"]] == list(range(start, end + 1))
        results = daemon.search("list all files", tool="bash", session=top["session_id"][:4])
        assert results and all("Bash" in r["tools"] and r["session_id"] == top["session_id"] for r in results)
        wrong = httpx.get(daemon.url + "/api/search", params={"q": "list", "tool": "Bsh"})
        assert wrong.status_code == 400 and wrong.json()["suggestions"] == ["Bash"]
        # and so does the CLI through the daemon
        shown = run_cli(home, data, "show", citation, "--context", "0")
        assert shown.returncode == 0 and shown.stdout.splitlines()[0] == top["transcript"]
        assert [int(x[1:7]) for x in shown.stdout.splitlines() if x.startswith(">")] == list(range(start, end + 1))
        shown = run_cli(home, data, "show", "abcd")
        assert shown.returncode == 1 and "'abcd' is the start of 2 sessions" in shown.stderr
        assert daemon.stop() == 0
