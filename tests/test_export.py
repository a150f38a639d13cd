"""A Claude.ai / Claude Desktop export: read as a stream, branches once each,
chunked and redacted like transcripts, cited, shown, imported once."""

from __future__ import annotations

import json
import os
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from selfreflect.embed import OnnxEmbedder
from selfreflect.export import Export, ExportError, export_reference
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore

from conftest import CORPUS
from daemon_process import DaemonProcess, run_cli

EXPORT = CORPUS / "claude-ai"
DOCKER = "3f1c9a52-7d1e-4b8a-9c3e-5a2b7e8d1f40"
CRAWLER = "6d2e8b17-4c5a-4f3e-8d21-9b0c1e7a3f55"
UVICORN = "9a4b7c21-8e3f-4d6a-b5c2-7f1e0d9c8b63"
SECRET = "s3cr3tCobaltWalrus42"


def zipped(folder: Path) -> Path:
    """The fixture as the export's ZIP: its three files in the archive."""
    path = folder / "data-2025-06-03-10-00-00-batch-0000.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("conversations.json", "projects.json", "users.json"):
            archive.write(EXPORT / name, name)
    return path


def points(data: Path, embedder: OnnxEmbedder) -> list[dict[str, Any]]:
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        return store.scroll(SearchFilter(), 10_000)


def test_conversations_are_read_in_tree_order_with_their_projects() -> None:
    with Export(EXPORT / "conversations.json") as export:
        found = {c.uuid: c for c in export.conversations()}
    assert list(found) == [DOCKER, CRAWLER, UVICORN, "0b1c2d3e-4f50-4617-8829-3a4b5c6d7e8f"]  # no uuid: left out
    assert [c.project_path for c in found.values()] == [
        "claude.ai",
        "claude.ai/Search engine",
        "claude.ai/Web server",
        "claude.ai",
    ]
    crawler = found[CRAWLER]
    # the edited prompt (5) after the branch it replaced (3, 4); the retried reply (7) after the first (6)
    assert [m.uuid[-3:] for m in crawler.messages] == ["101", "102", "103", "104", "105", "107", "106"]
    assert [m.number for m in crawler.messages] == list(range(1, 8))
    exchanges = crawler.exchanges()
    assert [(e.key[-3:], e.start_line, [p.line_start for p in e.parts]) for e in exchanges] == [
        ("101", 1, [1, 1, 2]),
        ("103", 3, [3, 4]),
        ("105", 5, [5, 6, 7, 7]),
    ]
    assert [p.role for p in exchanges[0].parts] == ["title", "user", "assistant"]
    assert [p.role for p in exchanges[2].parts] == ["user", "assistant", "thinking", "assistant"]
    docker = found[DOCKER]
    first = docker.messages[0]
    assert [(p.role, p.files) for p in first.parts] == [
        ("user", ()),
        ("attachment", ("docker-compose.yml",)),
        ("attachment", ("oom-dmesg.png",)),
    ]
    assert docker.messages[2].parts[0].text.startswith("Raised it to 1g")  # empty content: its text
    assert [(m.sender, m.timestamp) for m in docker.messages[:2]] == [
        ("human", "2024-11-05T09:12:31.402Z"),
        ("assistant", "2024-11-05T09:12:52.933Z"),
    ]
    tools = [(p.role, p.tool) for p in found[UVICORN].messages[1].parts]
    assert tools == [("tool", "web_search"), ("result", "web_search"), ("assistant", None)]


def test_fields_of_any_shape_where_a_parent_should_be_are_no_parent(tmp_path: Path) -> None:
    """A hand-made export (labelled as such): ``parent_message_uuid`` holding
    a list, an object, a number: those messages are roots, nothing fails."""
    messages = [
        {"uuid": f"m{i}", "sender": "human" if i % 2 == 0 else "assistant", "text": f"message {i}",
         "created_at": f"2025-01-01T00:00:0{i}Z", "parent_message_uuid": parent}
        for i, parent in enumerate([None, "m0", ["m1"], {"uuid": "m1"}, 7])
    ]  # fmt: skip
    conversation = {"uuid": "c0ffee00-0000-4000-8000-000000000001", "name": "odd", "chat_messages": messages}
    (tmp_path / "conversations.json").write_text(json.dumps([conversation]), encoding="utf-8")
    with Export(tmp_path / "conversations.json") as export:
        (found,) = list(export.conversations())
    assert sorted(m.uuid for m in found.messages) == ["m0", "m1", "m2", "m3", "m4"]
    assert [m.uuid for m in found.messages][:2] == ["m0", "m1"]  # the one real link kept


def test_a_file_that_is_no_export_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.json").write_text('{"not": "a list"')
    with pytest.raises(ExportError, match="not a Claude.ai export"), Export(tmp_path / "notes.json") as export:
        list(export.conversations())
    (tmp_path / "chatgpt.json").write_text('[{"title": "x", "mapping": {}}]')
    with (
        pytest.raises(ExportError, match="none of its 1 items has a uuid"),
        Export(tmp_path / "chatgpt.json") as export,
    ):
        list(export.conversations())
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ExportError, match="holds no conversations.json"), Export(tmp_path / "other.zip"):
        pass
    assert export_reference(f"/x/conversations.json:{CRAWLER}:3") is None  # a line range is the citation's
    assert export_reference(f"/x/conversations.json:{CRAWLER}") == (Path("/x/conversations.json"), CRAWLER, None)


def test_a_large_export_is_read_as_a_stream(tmp_path: Path) -> None:
    """About 40 MB of conversations: Python never holds more than one."""
    path = tmp_path / "conversations.json"
    words = " ".join(f"word{i}" for i in range(2000))  # ~18 KB a message
    with open(path, "wb") as handle:
        handle.write(b"[")
        for n in range(200):
            messages = [
                {"uuid": f"{n:08d}-0000-4000-8000-{m:012d}", "sender": "human" if m % 2 == 0 else "assistant",
                 "text": words, "content": [{"type": "text", "text": words}], "created_at": "2025-01-01T00:00:00Z"}
                for m in range(10)
            ]  # fmt: skip
            conversation = {"uuid": f"{n:08d}-0000-4000-8000-000000000000", "name": f"c{n}", "chat_messages": messages}
            handle.write((b"," if n else b"") + orjson.dumps(conversation))
        handle.write(b"]")
    assert path.stat().st_size > 35 << 20
    tracemalloc.start()
    try:
        with Export(path) as export:
            count = sum(1 for _ in export.conversations())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 200 and peak < 4 << 20, f"peak {peak / 2**20:.1f} MB"


def test_cli_imports_a_zipped_export_once_searches_and_shows_it(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    claude, data = tmp_path / "claude", tmp_path / "data"  # no Claude Code folder at all: not needed
    archive = zipped(tmp_path)
    done = run_cli(claude, data, "import", "--claude-export", str(archive))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Imported 4 conversations of {archive}: 13 messages, 6 new chunks in ")
    stored = points(data, embedder)
    assert len(stored) == 6 and not [p for p in stored if SECRET in json.dumps(p)]
    assert {p["project"] for p in stored} == {"claude.ai", "Search engine", "Web server"}
    assert {p["transcript"].rsplit(":", 1)[0] for p in stored} == {str(archive)}
    crawler = sorted((p for p in stored if p["session_id"] == CRAWLER), key=lambda p: p["line_start"])
    assert [(p["line_start"], p["line_end"]) for p in crawler] == [(1, 2), (3, 4), (5, 7)]
    assert "Conversation: Dedupe URLs in the crawler" in crawler[0]["text"]
    docker = next(p for p in stored if p["session_id"] == DOCKER and p["line_start"] == 1)
    assert docker["files"] == ["docker-compose.yml", "oom-dmesg.png"] and "[REDACTED:secret]" in docker["text"]

    # again, and from the unzipped file: the same points, nothing twice
    again = run_cli(claude, data, "import", "--claude-export", str(archive))
    assert again.returncode == 0 and ": 13 messages, 0 new chunks in " in again.stdout
    plain = run_cli(claude, data, "import", "--claude-export", str(EXPORT / "conversations.json"))
    assert plain.returncode == 0, plain.stderr
    assert sorted(p["id"] for p in points(data, embedder)) == sorted(p["id"] for p in stored)

    found = run_cli(claude, data, "search", "--json", "--limit", "1", "a cuckoo filter that supports deleting URLs")
    (top,) = json.loads(found.stdout)["results"]
    citation = f"{EXPORT / 'conversations.json'}:{CRAWLER}:5-7"
    assert f"{top['transcript']}:{top['line_start']}-{top['line_end']}" == citation
    assert (top["project"], top["session_id"], top["timestamp"]) == (
        "Search engine",
        CRAWLER,
        "2025-02-14T16:20:00.000Z",
    )

    shown = run_cli(claude, data, "show", citation, "--context", "1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{EXPORT / 'conversations.json'}:{CRAWLER}"
    assert [line[:20] for line in lines if line[1:7].strip().isdigit()] == [
        "      4  assistant  ",
        ">     5  human      ",
        ">     6  assistant  ",
        ">     7  assistant  ",
    ]
    assert "User: Actually, I need to delete URLs too." in shown.stdout and "12-bit fingerprints" in shown.stdout
    by_message = run_cli(claude, data, "show", f"conversations.json:{CRAWLER}:d4c3b2a1-2222-4b2b-9b2b-000000000104")
    assert by_message.returncode == 0 and ">     4  assistant  2025-02-14 16:05:30" in by_message.stdout
    by_session = run_cli(claude, data, "show", DOCKER[:8], "--context", "0")
    assert by_session.returncode == 0 and "DB_PASSWORD=[REDACTED:secret]" in by_session.stdout
    assert SECRET not in by_session.stdout
    past = run_cli(claude, data, "show", f"{EXPORT / 'conversations.json'}:{CRAWLER}:9")
    assert past.returncode == 1 and "has 7 messages: 9 is past its end" in past.stderr

    # a rebuilt index holds the exports imported before
    (claude / "projects").mkdir(parents=True)
    rebuilt = run_cli(claude, data, "reindex")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert ", 0 reflections, 8 conversations of 2 exports in " in rebuilt.stdout
    assert sorted(p["id"] for p in points(data, embedder)) == sorted(p["id"] for p in stored)


def test_the_daemon_shows_export_citations_and_asks_to_be_stopped_for_an_import(
    tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    claude, data = tmp_path / "claude", tmp_path / "data"
    (claude / "projects").mkdir(parents=True)
    archive = zipped(tmp_path)
    assert run_cli(claude, data, "import", "--claude-export", str(archive)).returncode == 0
    with DaemonProcess(claude, data) as daemon:
        daemon.wait_idle()
        refused = run_cli(claude, data, "import", "--claude-export", str(archive))
        assert refused.returncode == 3 and "run `selfreflect stop`, import the export" in refused.stderr
        top = daemon.search("container exit code 137 out of memory", limit=1)[0]
        assert top["transcript"] == f"{archive}:{DOCKER}" and top["project"] == "claude.ai"
        citation = f"{top['transcript']}:{top['line_start']}-{top['line_end']}"

        async def scenario() -> None:
            async with streamable_http_client(daemon.url + "/mcp") as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    result = await session.call_tool("read_conversation", {"session_id": citation, "after": 1})
                    assert not result.is_error
                    around = result.structured_content
                    assert around is not None and (around["line"], around["line_end"]) == (1, 2)
                    assert [(x["line"], x["kind"]) for x in around["lines"]] == [
                        (1, "human"),
                        (2, "assistant"),
                        (3, "human"),
                    ]
                    assert "mem_limit: 256m" in around["lines"][1]["text"]

        anyio.run(scenario)
        os.rename(archive, tmp_path / "moved.zip")
        gone = httpx.get(daemon.url + "/api/conversation", params={"session_id": citation}, timeout=30)
        assert gone.status_code == 404 and "no longer on disk" in gone.json()["error"]
        assert daemon.stop() == 0
