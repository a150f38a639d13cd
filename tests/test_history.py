"""history.jsonl: prompts that outlive their transcripts, indexed, cited,
hidden where their conversation is indexed, and streamed by the daemon."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from selfreflect.assemble import Assembler, prompt_digest
from selfreflect.embed import OnnxEmbedder
from selfreflect.history import parse_entry
from selfreflect.importer import Importer, ImportSummary
from selfreflect.parse import parse_line
from selfreflect.query import SearchQuery
from selfreflect.search import HISTORY_WEIGHT, search, weigh_history
from selfreflect.state import State
from selfreflect.store import Hit, SearchFilter
from selfreflect.store.edge import EdgeStore
from selfreflect.tail import read_lines

from conftest import Corpus, make_settings, write_session
from daemon_process import DaemonProcess, eventually, run_cli

SESSION = "5e551011-0000-4000-8000-000000000001"
GONE = "90e00000-0000-4000-8000-000000000002"


def entry(display: str, project: str = "/home/me/app", session: str | None = SESSION, millis: int = 1772359200000,
          **extra: Any) -> dict[str, Any]:  # fmt: skip
    found = {"display": display, "pastedContents": {}, "timestamp": millis, "project": project, **extra}
    return {**found, "sessionId": session} if session else found


def write_history(claude: Path, *entries: dict[str, Any], tail: bytes = b"") -> Path:
    path = claude / "history.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in entries) + tail)
    return path


@pytest.fixture
def claude(tmp_path: Path) -> Path:
    """A Claude home: one session in /home/me/app, and a history.jsonl holding
    its prompt, a bare /clear, the prompt of a session whose transcript is
    gone, and a last line still being written."""
    home = tmp_path / "claude"
    folder = home / "projects" / "-home-me-app"
    folder.mkdir(parents=True)
    write_session(folder, SESSION, "why does the walrus cache evict entries too early")
    write_history(
        home,
        entry("why does the walrus cache evict entries too early"),
        entry("/clear"),
        entry("migrate the walrus cache to redis with an LRU policy", session=GONE, millis=1769680800000),
        tail=b'{"display": "still being typed", "project": "/home/me/app", "timestamp": 1772359250000',
    )
    return home


def test_entries_put_pastes_back_and_leave_bare_commands_out(tmp_path: Path) -> None:
    (tmp_path / "paste-cache").mkdir()
    (tmp_path / "paste-cache" / "ab12cd.txt").write_text("cached\nlines")
    pasted = {
        "1": {"id": 1, "type": "text", "content": "inline log"},
        "2": {"id": 2, "type": "text", "contentHash": "ab12cd"},
        "3": {"id": 3, "type": "text", "contentHash": "../../etc/passwd"},
    }
    record = entry("look [Pasted text #1 +3 lines] and [Pasted text #2 +9 lines] and [Pasted text #3]",
                   pastedContents=pasted)  # fmt: skip
    found = parse_entry(record, tmp_path)
    assert found is not None
    assert found.prompt == "look inline log and cached\nlines and [Pasted text #3]"
    assert (found.timestamp, found.project, found.session_id) == ("2026-03-01T10:00:00.000Z", "/home/me/app", SESSION)
    assert parse_entry(entry("/clear"), tmp_path) is None and parse_entry(entry("  "), tmp_path) is None
    assert parse_entry(entry("/review the auth module"), tmp_path) is not None  # a command with words says something
    older = parse_entry(entry("no session id yet", session=None, millis=0), tmp_path)
    assert older is not None and older.session_id == "" and older.timestamp is None


@pytest.mark.parametrize(
    ("content", "display"),
    [
        ("fix   the login\n\ntest", "Fix the login test"),
        ("<command-message>review</command-message>\n<command-name>/review</command-name>\n"
         "<command-args>the auth module</command-args>", "/review the auth module"),
        ("<bash-input>ls -la</bash-input>", "!ls -la"),
        ([{"type": "text", "text": "what is in this screenshot [Image #1]"}, {"type": "image", "source": {}}],
         "what is in this screenshot [Image #1]"),
    ],
)  # fmt: skip
def test_a_transcript_prompt_and_its_history_entry_get_one_digest(content: Any, display: str) -> None:
    assembler = Assembler("s")
    assembler.feed(1, 0, {"type": "user", "uuid": "u1", "message": {"role": "user", "content": content}})
    assert assembler.open is not None and assembler.open.prompt == prompt_digest(display) != ""


def test_history_is_indexed_cited_and_hidden_beside_its_conversation(
    claude: Path, tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    settings = make_settings(tmp_path)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        summary = Importer(settings, store, embedder, State.load(settings.state_file)).run()
        assert (summary.prompts, summary.bad_lines) == (3, 0)  # the torn last line is held back, not bad
        prompts = sorted(store.scroll(SearchFilter(kinds=("history",)), 100), key=lambda p: p["line_start"])
        assert [(p["line_start"], p["session_id"], p["project_path"]) for p in prompts] == [
            (1, SESSION, "/home/me/app"),
            (3, GONE, "/home/me/app"),
        ]
        assert all(p["transcript"] == str(claude / "history.jsonl") and p["thread"] == "main" for p in prompts)
        assert prompts[1]["text"] == "User: migrate the walrus cache to redis with an LRU policy"
        (chunk,) = store.scroll(SearchFilter(kinds=("conversation",)), 100)
        assert chunk["prompt_key"] == prompts[0]["prompt_key"] != prompts[1]["prompt_key"]

        # its conversation is indexed: the conversation is the answer, the history entry is not shown
        found = search(store, embedder, SearchQuery("why does the walrus cache evict entries too early"))
        cited = [(r.transcript, r.line_start) for r in found.results]
        assert cited[0] == (str(claude / "projects" / "-home-me-app" / f"{SESSION}.jsonl"), 1)
        assert (str(claude / "history.jsonl"), 1) not in cited
        # its transcript is gone: the history entry is the answer
        found = search(store, embedder, SearchQuery("switch to redis with an LRU policy"))
        top = found.results[0]
        assert (top.transcript, top.line_start, top.session_id) == (str(claude / "history.jsonl"), 3, GONE)


def test_a_prompt_ranks_below_a_conversation_that_matches_as_well(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        prompt = {"kind": "history", "prompt_key": "k1", "text": "User: x"}
        hits = [Hit("h", 0.03, prompt), Hit("c", 0.03, {"kind": "conversation", "text": "User: x"})]
        weighed = weigh_history(store, hits)
        assert [(h.id, h.score) for h in weighed] == [("c", 0.03), ("h", 0.03 * HISTORY_WEIGHT)]
        # in the same project, a prompt that matched best stays below a conversation that matched a bit less
        claude = tmp_path / "claude"
        (claude / "projects" / "-home-me-app").mkdir(parents=True)
        write_session(claude / "projects" / "-home-me-app", "c0ffee00-0000-4000-8000-000000000003",
                      "tune the otter queue retry backoff")  # fmt: skip
        write_history(claude, entry("tune the otter queue retry backoff", project="/home/me/other", session=GONE))
        Importer(settings, store, embedder, State.load(settings.state_file)).run()
        found = search(store, embedder, SearchQuery("tune the otter queue retry backoff"))
        assert [Path(r.transcript).name for r in found.results[:2]] == [
            "c0ffee00-0000-4000-8000-000000000003.jsonl",
            "history.jsonl",
        ]


def test_appends_are_read_from_the_saved_offset_and_a_replaced_file_from_the_top(
    claude: Path, tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    settings = make_settings(tmp_path)
    history = claude / "history.jsonl"
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        importer = Importer(settings, store, embedder, State.load(settings.state_file))
        importer.run()
        assert importer.history_changed()  # its last line is not finished: it is looked at again
        again = ImportSummary()
        importer.import_history(again)
        assert (again.prompts, again.chunks) == (0, 0)
        # the last line ends, one more prompt arrives, and a damaged line
        with open(history, "ab") as handle:
            handle.write(b"}\n" + orjson.dumps(entry("count the narwhal tokens", millis=1772359300000)) + b"\n{bad\n")
        assert importer.history_changed()
        summary = ImportSummary()
        importer.import_history(summary)
        assert (summary.prompts, summary.bad_lines) == (3, 1)
        lines = sorted(p["line_start"] for p in store.scroll(SearchFilter(kinds=("history",)), 100))
        assert lines == [1, 3, 4, 5]
        # Claude Code rewrites the file shorter: what was indexed from it goes, the new file is read
        write_history(claude, entry("only this one now", millis=1772359400000))
        importer.import_history(ImportSummary())
        texts = [p["text"] for p in store.scroll(SearchFilter(kinds=("history",)), 100)]
        assert texts == ["User: only this one now"]
        assert State.load(settings.state_file).get(str(history)).offset == history.stat().st_size


def test_history_can_be_turned_off(claude: Path, tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path, index_history=False)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        summary = Importer(settings, store, embedder, State.load(settings.state_file)).run()
        assert summary.prompts == 0 and not store.count(SearchFilter(kinds=("history",)))


def test_cli_imports_searches_and_shows_history(claude: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = run_cli(claude, data, "import", SELFREFLECT_INDEX_HISTORY="off")
    assert done.returncode == 0 and "history.jsonl" not in done.stdout
    done = run_cli(claude, data, "import")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Imported 3 new lines of history.jsonl, 2 chunks in ")
    found = run_cli(claude, data, "search", "switch to redis with an LRU policy", "--limit", "1")
    assert f"{claude / 'history.jsonl'}:3-3" in found.stdout
    shown = run_cli(claude, data, "show", "history.jsonl:3", "--context", "1")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == str(claude / "history.jsonl")
    assert lines[3].startswith(">     3  history    2026-01-29 10:00:00")
    assert lines[4].strip() == "Prompt (in /home/me/app): migrate the walrus cache to redis with an LRU policy"
    assert lines[2].strip() == "Prompt: /clear" and lines[6].strip() == "(unreadable line: not JSON)"


def test_the_daemon_streams_appended_prompts_and_mcp_reads_them(claude: Path, tmp_path: Path) -> None:
    history = claude / "history.jsonl"
    with DaemonProcess(claude, tmp_path / "data") as daemon:
        daemon.wait_idle()
        assert daemon.search("switch to redis with an LRU policy")[0]["line_start"] == 3
        with open(history, "ab") as handle:
            handle.write(b"}\n" + orjson.dumps(entry("sharpen the beluga lexer", session=GONE)) + b"\n")

        def streamed() -> list[dict[str, Any]]:
            return [r for r in daemon.search("sharpen the beluga lexer", limit=3) if r["line_start"] == 5]

        (found,) = eventually(streamed, timeout=30)
        assert found["transcript"] == str(history)

        async def scenario() -> None:
            async with streamable_http_client(daemon.url + "/mcp") as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    result = await session.call_tool(
                        "read_conversation", {"session_id": "history.jsonl:5", "before": 1, "after": 0}
                    )
                    assert not result.is_error
                    around = result.structured_content
                    assert around is not None and [x["line"] for x in around["lines"]] == [4, 5]
                    assert around["lines"][1]["text"] == "Prompt (in /home/me/app): sharpen the beluga lexer"
                    text = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
                    assert "beluga" in text

        anyio.run(scenario)
        assert daemon.stop() == 0


def test_prompts_of_the_corpus_are_hidden_beside_their_conversations(
    corpus: Corpus, tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    """Measured: a history.jsonl written as Claude Code writes it for every
    typed prompt of the corpus's sessions; each entry should find its
    conversation by ``prompt_key`` (and so not be shown beside it)."""
    entries = []
    for path in sorted((corpus.settings.projects_dir).rglob("*.jsonl")):
        if "subagents" in path.parts or path.name.startswith("agent-"):
            continue
        cwd = ""
        for line in read_lines(path, final=True):
            record = parse_line(line.data)
            if not isinstance(record, dict):
                continue
            cwd = cwd or (record.get("cwd") if isinstance(record.get("cwd"), str) else "")
            display = typed_prompt(record)
            if display and cwd:
                entries.append(entry(display, project=cwd, session=str(record.get("sessionId") or path.stem)))
    assert len(entries) >= 50
    claude = tmp_path / "claude"
    write_history(claude, *entries)
    settings = make_settings(tmp_path, claude_dir=claude, data_dir=corpus.settings.data_dir)
    store = corpus.open(embedder)
    try:
        Importer(settings, store, embedder, State.load(tmp_path / "history-state.sqlite3")).import_history(
            ImportSummary()
        )
        keys = [p["prompt_key"] for p in store.scroll(SearchFilter(kinds=("history",)), 10_000)]
        told = {str(v) for v, _ in store.facet("prompt_key", SearchFilter(kinds=("conversation",)), 100_000)}
        matched = sum(k in told for k in keys)
        print(f"\n{matched} of {len(keys)} corpus prompts found their conversation")
        assert keys and matched / len(keys) >= 0.95
    finally:
        store.delete(SearchFilter(kinds=("history",)))
        store.close()


def typed_prompt(record: dict[str, Any]) -> str:
    """What history.jsonl shows for a transcript record the user typed ("": none)."""
    message = record.get("message")
    if record.get("type") != "user" or record.get("isMeta") or record.get("isCompactSummary"):
        return ""
    if record.get("isSidechain") or not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, list):
        texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        if not texts or any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content):
            return ""
        content = "\n".join(str(t) for t in texts)
    if not isinstance(content, str) or content.startswith(("[Request interrupted", "<local-command-stdout>")):
        return ""
    if "<command-name>" in content:
        name = content.split("<command-name>", 1)[1].split("</command-name>", 1)[0]
        args = (
            content.split("<command-args>", 1)[1].split("</command-args>", 1)[0] if "<command-args>" in content else ""
        )
        return f"{name} {args}".strip()
    return content


def test_no_test_reads_a_real_history() -> None:
    assert Path(os.environ["CLAUDE_CONFIG_DIR"]).name == "claude"  # the autouse fixture's tmp dir
