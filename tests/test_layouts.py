"""Every layout of ``reference/claude-code-transcripts.md`` (§2, §7), end to
end: real transcripts where the corpus has them, else files derived from real
lines with the shapes the reference documents, imported with the real model
into a real store, searched and read back."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson

from selfreflect.embed import OnnxEmbedder
from selfreflect.importer import Importer
from selfreflect.query import SearchQuery
from selfreflect.search import search
from selfreflect.settings import Settings
from selfreflect.state import State
from selfreflect.status import status_report, status_text
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore

from conftest import REAL, make_settings

TINY = REAL / "obra__episodic-memory__tiny-conversation.jsonl"
TINY_SESSION = "67a8478e-78dc-44ab-82ea-f65c8ead85f6"
SUBAGENT = REAL / "marot__spotter__agent-a2898e3.jsonl"
SUBAGENT_SESSION = "4d5611e5-241a-462a-8d15-5122611a9569"
INLINE = REAL / "d-kimuson__claude-code-viewer__fe5e1c67-53e7-4862-81ae-d0e013e3270b.jsonl"


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def write(path: Path, *parts: bytes | dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(p if isinstance(p, bytes) else orjson.dumps(p) + b"\n" for p in parts))
    then = time.time() - 3600  # nobody writes it: archived whole
    os.utime(path, (then, then))
    return path


def append(path: Path, *records: dict[str, Any]) -> None:
    with open(path, "ab") as handle:
        handle.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
    then = time.time() - 3000
    os.utime(path, (then, then))


def reimport(settings: Settings, embedder: OnnxEmbedder) -> list[dict[str, Any]]:
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        Importer(settings, store, embedder, State.load(settings.state_file)).run()
        return store.scroll(SearchFilter(), 100_000)


def found(settings: Settings, embedder: OnnxEmbedder, query: str, **where: Any) -> list[Any]:
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        return search(store, embedder, SearchQuery(query, SearchFilter(**where), limit=10)).results


def test_a_2_1_sub_agent_is_linked_to_the_call_that_started_it(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """``<session>/subagents/agent-<id>.jsonl`` with its ``.meta.json``
    (``toolUseId``, the SDK's sidecar): searchable by default, flagged, left
    out by --no-sidechains, linked to its parent session and call; the link
    survives Claude Code deleting the session (the sidecar is archived too)."""
    settings = make_settings(tmp_path)
    folder = settings.projects_dir / "-home-marco-projects-spotter" / SUBAGENT_SESSION / "subagents"
    agent = write(folder / SUBAGENT.name.split("__")[-1], *lines(SUBAGENT))
    (folder / "agent-a2898e3.meta.json").write_text(
        '{"agentType":"general-purpose","description":"Explore the transcript renderer","toolUseId":"toolu_01Spawn"}'
    )
    points = [p for p in reimport(settings, embedder) if p["transcript"] == str(agent)]
    assert points and {(p["thread"], p["agent_id"], p["parent_tool_use_id"]) for p in points} == {
        ("sidechain", "a2898e3", "toolu_01Spawn")
    }
    hits = found(settings, embedder, "to_relative_path")
    assert hits and all(h.sidechain and h.session_id == SUBAGENT_SESSION for h in hits)
    assert hits[0].about() == "sub-agent a2898e3, started by toolu_01Spawn"
    assert found(settings, embedder, "to_relative_path", include_sidechains=False) == []
    shutil.rmtree(settings.projects_dir / "-home-marco-projects-spotter")
    shutil.rmtree(settings.store_dir)
    again = [p for p in reimport(settings, embedder) if p["transcript"] == str(agent)]
    assert {p["parent_tool_use_id"] for p in again} == {"toolu_01Spawn"} and len(again) == len(points)


def test_inline_1_0_sidechains_are_linked_to_their_task_calls(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """1.0.x wrote sub-agent turns into the session's own file, each starting
    with the prompt of the Task call that started it (the kimuson sample: 5)."""
    settings = make_settings(tmp_path)
    session = write(settings.projects_dir / "-path-to-Demo" / INLINE.name.split("__")[-1], *lines(INLINE))
    calls = {}
    for raw in lines(INLINE):
        for block in (orjson.loads(raw).get("message") or {}).get("content") or []:
            if isinstance(block, dict) and block.get("name") == "Task":
                calls[block["id"]] = block["input"]["prompt"]
    points = [p for p in reimport(settings, embedder) if p["transcript"] == str(session)]
    sidechains = [p for p in points if p["thread"] == "sidechain"]
    assert {p["parent_tool_use_id"] for p in sidechains} == set(calls) and len(calls) == 5
    for p in sidechains:  # each is the work its call asked for
        assert calls[p["parent_tool_use_id"]][:40] in p["text"] or p["ordinal"] > 0
    assert {p["parent_tool_use_id"] for p in points if p["thread"] == "main"} == {None}
    hit = found(settings, embedder, "useTodos custom hook with useReducer")[0]
    assert hit.sidechain and hit.parent_tool_use_id == "toolu_017rjDpjVPeNFmAEXNTkoP55"


def test_a_2_0_agent_file_leaves_its_warmup_out(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """2.0.x ``agent-<id>.jsonl`` beside the session opens with a ``Warmup``
    prompt and a greeting (the fasthooks sample's first two lines, §7)."""
    settings = make_settings(tmp_path)
    base = {"isSidechain": True, "userType": "external", "cwd": "/workspace", "sessionId": "c45af7b1",
            "version": "2.0.76", "gitBranch": "", "agentId": "af1ff21"}  # fmt: skip
    warmup = {**base, "parentUuid": None, "type": "user", "uuid": "w1", "timestamp": "2026-01-02T19:11:22.139Z",
              "message": {"role": "user", "content": "Warmup"}}  # fmt: skip
    greeting = {**base, "parentUuid": "w1", "type": "assistant", "uuid": "w2", "timestamp": "2026-01-02T19:11:25Z",
                "message": {"id": "msg_w", "role": "assistant", "type": "message", "content": [
                    {"type": "text", "text": "I'm Claude Code, Anthropic's file search specialist CLI. How can I "
                     "assist you today?"}]}}  # fmt: skip
    agent = write(settings.projects_dir / "-workspace" / "agent-af1ff21.jsonl", warmup, greeting, *lines(SUBAGENT))
    points = [p for p in reimport(settings, embedder) if p["transcript"] == str(agent)]
    assert points and min(p["line_start"] for p in points) == 3
    assert not any("file search specialist" in p["text"] for p in points)
    assert {p["thread"] for p in points} == {"sidechain"}


def test_a_compaction_summary_is_indexed_once_and_marked(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """``compact_boundary`` then an ``isCompactSummary`` line (§7); the
    compaction agent's own transcript (``agent-acompact-*``) holds the same
    summary, and is archived but not indexed."""
    settings = make_settings(tmp_path)
    summary = (
        "This session is being continued from a previous conversation that ran out of context. The "
        "conversation is summarized below:\nAnalysis: the user asked why the quokka importer stalls on "
        "torn lines; we made the tail hold them back."
    )
    tail = orjson.loads(lines(TINY)[-1])
    boundary = {
        "type": "system",
        "subtype": "compact_boundary",
        "parentUuid": None,
        "logicalParentUuid": tail["uuid"],
        "content": "Conversation compacted",
        "compactMetadata": {"trigger": "auto", "preTokens": 170251},
        "sessionId": TINY_SESSION,
        "uuid": "cb1",
        "timestamp": "2025-09-19T18:00:00Z",
        "isSidechain": False,
    }
    summarised = {"type": "user", "isCompactSummary": True, "isVisibleInTranscriptOnly": True, "parentUuid": "cb1",
                  "sessionId": TINY_SESSION, "uuid": "cs1", "timestamp": "2025-09-19T18:00:01Z", "isSidechain": False,
                  "message": {"role": "user", "content": summary}}  # fmt: skip
    after = {"type": "user", "parentUuid": "cs1", "sessionId": TINY_SESSION, "uuid": "u9", "isSidechain": False,
             "timestamp": "2025-09-19T18:01:00Z",
             "message": {"role": "user", "content": "go on with the tests"}}  # fmt: skip
    main = write(settings.projects_dir / "-p" / f"{TINY_SESSION}.jsonl", *lines(TINY), boundary, summarised, after)
    agent = {"type": "assistant", "isSidechain": True, "agentId": "acompact-e1f845", "sessionId": TINY_SESSION,
             "uuid": "ac1", "parentUuid": None, "timestamp": "2025-09-19T17:59:59Z",
             "message": {"id": "msg_ac", "role": "assistant",
                         "content": [{"type": "text", "text": summary}]}}  # fmt: skip
    compactor = write(main.with_suffix("") / "subagents" / "agent-acompact-e1f845.jsonl", agent)
    points = reimport(settings, embedder)
    with_summary = [p for p in points if "quokka" in p["text"]]
    assert [(p["transcript"], p["line_start"], p["compact_summary"]) for p in with_summary] == [(str(main), 9, True)]
    assert with_summary[0]["text"].startswith("Summary of earlier conversation:")
    assert not any(p["compact_summary"] for p in points if p is not with_summary[0])
    assert (settings.archive_dir / "-p" / TINY_SESSION / "subagents" / (compactor.name + ".zst")).is_file()
    hit = found(settings, embedder, "why does the quokka importer stall on torn lines")[0]
    assert hit.compact_summary and hit.line_start == 9 and "summary of the compacted conversation" in hit.about()
    # a compaction agent's transcript without its session (copied alone, or the session's file gone and
    # never archived): it is all there is of that conversation, so it is indexed
    alone = "0b0e0000-0000-4000-8000-00000000a10e"
    orphan = agent | {"sessionId": alone, "uuid": "ac2"}
    orphan["message"] = {
        "id": "msg_ac2",
        "role": "assistant",
        "content": [{"type": "text", "text": "the wombat cache"}],
    }
    orphan_file = write(settings.projects_dir / "-p" / alone / "subagents" / "agent-acompact-0a0b0c.jsonl", orphan)
    assert [p["transcript"] for p in reimport(settings, embedder) if "wombat" in p["text"]] == [str(orphan_file)]


def test_session_titles_name_every_chunk_of_the_session(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """``ai-title`` (rewritten, last wins), ``custom-title`` (/rename: wins
    over the AI's), pre-2.0 ``summary`` lines (no session id: the file's
    session). A title line comes after the chunks it names."""
    settings = make_settings(tmp_path)
    session = write(settings.projects_dir / "-p" / f"{TINY_SESSION}.jsonl", *lines(TINY))
    large = REAL / "obra__episodic-memory__large-conversation.jsonl"
    write(settings.projects_dir / "-q" / large.name, *lines(large))

    def titles() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for p in reimport(settings, embedder):
            out.setdefault(p["session_id"], set()).add(p["title"])
        return out

    assert titles()[TINY_SESSION] == {""}
    assert titles()["0fae0449-64d3-4788-8622-d3a47d82c14b"] == {  # the last of its two summary lines
        "Clarifying AI Assistant's Action-Taking Guidelines"
    }
    append(session, {"type": "ai-title", "aiTitle": "Why the assistant asks first", "sessionId": TINY_SESSION})
    assert titles()[TINY_SESSION] == {"Why the assistant asks first"}
    append(session, {"type": "custom-title", "customTitle": "Proactiveness rules", "sessionId": TINY_SESSION})
    append(session, {"type": "ai-title", "aiTitle": "Tentative assistant behaviour", "sessionId": TINY_SESSION})
    assert titles()[TINY_SESSION] == {"Proactiveness rules"}
    hit = found(settings, embedder, "Proactiveness", session_id=TINY_SESSION)[0]
    assert hit.title == "Proactiveness rules" and hit.about() == "“Proactiveness rules”"
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        report = status_report(settings, store)
    (project,) = report["projects"]  # both sessions ran in one project: its latest is shown
    assert (project["last_session"], project["last_title"]) == (
        "0fae0449-64d3-4788-8622-d3a47d82c14b",
        "Clarifying AI Assistant's Action-Taking Guidelines",
    )
    assert "  Clarifying AI Assistant's Action-Taking\n" in status_text(report) + "\n"  # its first 40 characters


def test_persisted_output_is_read_from_tool_results(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """2.1.2+ saves a large tool output to ``<session>/tool-results/<id>.txt``
    and leaves ``<persisted-output>`` with a 2 KB preview inline (§2): the
    output is indexed like inline output (its head), from the file, or from
    the preview once the file is gone (a reindex from the archive)."""
    settings = make_settings(tmp_path)
    sid = "5a1f0000-0000-4000-8000-000000000001"
    output = "".join(f"{n:05d} quokka-build step {n} compiled crates/engine/src/lib.rs\n" for n in range(2000))
    saved = settings.projects_dir / "-p" / sid / "tool-results" / "toolu_01Big.txt"
    saved.parent.mkdir(parents=True)
    saved.write_text(output)
    persisted = (
        "<persisted-output>\nOutput too large (118.0KB). Full output saved to: "
        f"/Users/someone/.claude/projects/-p/{sid}/tool-results/toolu_01Big.txt\n\n"
        f"Preview (first 2KB):\n{output[:2000]}\n</persisted-output>"
    )
    base = {"sessionId": sid, "cwd": "/home/me/engine", "isSidechain": False}
    records = [
        {**base, "type": "user", "uuid": "u1", "timestamp": "2026-03-01T10:00:00Z",
         "message": {"role": "user", "content": "build the engine and show me the log"}},
        {**base, "type": "assistant", "uuid": "a1", "timestamp": "2026-03-01T10:00:02Z",
         "message": {"id": "m1", "role": "assistant", "content": [
             {"type": "tool_use", "id": "toolu_01Big", "name": "Bash", "input": {"command": "cargo build -vv"}}]}},
        {**base, "type": "user", "uuid": "u2", "timestamp": "2026-03-01T10:00:09Z",
         "message": {"role": "user", "content": [
             {"type": "tool_result", "tool_use_id": "toolu_01Big", "content": persisted}]}},
    ]  # fmt: skip
    transcript = write(settings.projects_dir / "-p" / f"{sid}.jsonl", *records)
    (text,) = {p["text"] for p in reimport(settings, embedder) if p["transcript"] == str(transcript)}
    assert "[Bash output] 00000 quokka-build step 0 compiled" in text
    assert "persisted-output" not in text and "Output too large" not in text and "Preview" not in text
    assert "00007 quokka-build" not in text  # the head only, as inline output (300 characters)
    shutil.rmtree(settings.projects_dir / "-p")
    shutil.rmtree(settings.store_dir)
    (again,) = {p["text"] for p in reimport(settings, embedder) if p["transcript"] == str(transcript)}
    assert again == text  # from the archived transcript's preview: the same head
