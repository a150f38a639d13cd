"""assemble.Assembler: real transcripts, read with tail and parse, to exchanges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from selfreflect.assemble import Assembler, Exchange, Part, title_of
from selfreflect.parse import parse_line
from selfreflect.tail import read_lines

from conftest import EDGE, REAL, unlicensed

MAIN = REAL / "marot__spotter__tool_heavy.jsonl"
PERMISSIONS = REAL / "d-kimuson__claude-code-viewer__1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl"
TINY = REAL / "obra__episodic-memory__tiny-conversation.jsonl"
DUPLICATE = EDGE / "duplicate-last-line__obra__episodic-memory__tiny-conversation.jsonl"


def records(path: Path) -> list[tuple[int, int, dict[str, Any]]]:
    """(line number, byte offset, record) of every record of ``path``."""
    out = []
    for line in read_lines(path):
        record = parse_line(line.data)
        if isinstance(record, dict):
            out.append((line.number, line.start, record))
    return out


def assemble(path: Path, rows: list[tuple[int, int, dict[str, Any]]] | None = None) -> list[Exchange]:
    assembler = Assembler(path.stem)
    exchanges = [closed for row in (rows or records(path)) if (closed := assembler.feed(*row))]
    if assembler.open is not None:
        exchanges.append(assembler.open)
    return exchanges


def parts_at(exchanges: list[Exchange], line: int) -> list[Part]:
    return [p for e in exchanges for p in e.parts if p.line_start <= line <= p.line_end]


def blocks(record: dict[str, Any]) -> list[dict[str, Any]]:
    content = (record.get("message") or {}).get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def test_streamed_reply_lines_are_covered_by_parts_of_that_message() -> None:
    message_id = "msg_019BN3FRqb7NU4DgBN5jdsym"
    lines = {n for n, _, r in records(MAIN) if (r.get("message") or {}).get("id") == message_id}
    assert lines == {34, 37}  # a tool result comes between the two lines of one reply

    parts = [p for e in assemble(MAIN) for p in e.parts if p.message_id == message_id]

    assert [p.role for p in parts] == ["tool", "tool"]
    assert {n for p in parts for n in range(p.line_start, p.line_end + 1)} == lines
    assert [p.tool for p in parts] == ["Read", "WebFetch"]
    assert parts[0].files == ("/home/marco/projects/spotter/assets/js/app.js",)


@pytest.mark.parametrize("path", [MAIN, PERMISSIONS], ids=lambda p: p.name)
def test_tool_results_are_named_after_their_tool_use(path: Path) -> None:
    rows = records(path)
    tool_names = {b["id"]: b["name"] for _, _, r in rows for b in blocks(r) if b.get("type") == "tool_use"}
    results = [(n, b) for n, _, r in rows for b in blocks(r) if b.get("type") == "tool_result" and b.get("content")]
    assert len(results) >= 6  # an empty result adds nothing to find
    exchanges = assemble(path)

    for line, block in results:
        (part,) = parts_at(exchanges, line)
        assert part.tool == tool_names[block["tool_use_id"]]
        assert part.role == ("error" if block.get("is_error") else "result")


@pytest.mark.parametrize("path", [MAIN, PERMISSIONS], ids=lambda p: p.name)
def test_an_excerpt_of_one_line_names_its_results_after_calls_made_long_before(path: Path) -> None:
    """An excerpt parses only the lines before its window that hold a tool
    call (the rest of a long transcript is read, not parsed): each result
    in a one-line window is still named after its call, however far back."""
    from selfreflect.conversation import excerpt

    rows = records(path)
    tool_names = {b["id"]: b["name"] for _, _, r in rows for b in blocks(r) if b.get("type") == "tool_use"}
    results = [(n, b) for n, _, r in rows for b in blocks(r) if b.get("type") == "tool_result" and b.get("content")]
    for line, block in results:
        (shown,) = excerpt(path, line, before=0, after=0)
        label = "error" if block.get("is_error") else "output"
        assert shown.text.startswith(f"[{tool_names[block['tool_use_id']]} {label}]"), (line, shown.text[:80])


def test_a_refused_tool_call_is_an_error_part() -> None:
    errors = [p for e in assemble(PERMISSIONS) for p in e.parts if p.role == "error"]
    assert [p.tool for p in errors] == ["Write"]
    assert "requested permissions to write" in errors[0].text


def test_project_is_the_records_cwd_not_the_file_name() -> None:
    rows = records(MAIN)
    moved = [(n, o, {**r, "cwd": "/srv/elsewhere"} if n >= 22 else r) for n, o, r in rows]

    exchanges = assemble(MAIN, moved)

    assert {e.start_line: e.cwd for e in exchanges} == {
        4: "/home/marco/projects/spotter",
        21: "/home/marco/projects/spotter",
        22: "/srv/elsewhere",
        26: "/srv/elsewhere",
    }
    assert all(e.session_id == "d6e0bada-1959-4eec-a9d2-0bfade768d8f" for e in exchanges)


def test_compact_summary_line_is_a_summary_part() -> None:
    compacted = unlicensed("oneryalcin__fasthooks__sample_main_transcript.jsonl")  # the only real /compact
    (summary_line,) = [n for n, _, r in records(compacted) if r.get("isCompactSummary")]
    exchanges = assemble(compacted)
    parts = parts_at(exchanges, summary_line)
    assert [p.role for p in parts] == ["summary"]
    assert [e.start_line for e in exchanges if e.compact_summary] == [summary_line]
    assert parts[0].text.startswith("This session is being continued from a previous conversation")


def test_duplicated_last_line_adds_nothing() -> None:
    original, duplicated = assemble(TINY), assemble(DUPLICATE)
    assert len(records(DUPLICATE)) == len(records(TINY)) + 1
    assert [(e.key, e.start_line, e.parts) for e in duplicated] == [(e.key, e.start_line, e.parts) for e in original]
    assert sum(len(e.parts) for e in original) > 0


def test_sidechain_records_make_sidechain_exchanges() -> None:
    exchanges = assemble(REAL / "marot__spotter__agent-a2898e3.jsonl")  # 2.1.x <session>/subagents/
    assert exchanges
    assert all(e.sidechain and e.agent_id == "a2898e3" for e in exchanges)
    assert [p.role for p in exchanges[0].parts][:3] == ["user", "assistant", "tool"]
    assert not any(e.sidechain for e in assemble(MAIN))


def test_a_2_0_agent_file_leaves_its_warmup_out() -> None:
    path = unlicensed("oneryalcin__fasthooks__sample_agent_sidechain.jsonl")  # 2.0.x agent-*.jsonl
    rows = records(path)
    assert [r["message"]["content"] for _, _, r in rows][:1] == ["Warmup"] and len(rows) == 2
    assert assemble(path) == []  # a Warmup prompt and its greeting are all it holds (§7)


def test_tool_results_continue_an_exchange_and_typed_prompts_start_one() -> None:
    rows = records(MAIN)
    prompts = {
        n
        for n, _, r in rows
        if r.get("type") == "user" and isinstance(r["message"]["content"], str) and not r.get("isMeta")
    }
    only_results = {
        n
        for n, _, r in rows
        if r.get("type") == "user" and blocks(r) and all(b["type"] == "tool_result" for b in blocks(r))
    }
    assert len(prompts) == 4 and len(only_results) == 6

    exchanges = assemble(MAIN)

    assert {e.start_line for e in exchanges} == prompts
    for line in only_results:
        (owner,) = [e for e in exchanges if e.start_line < line <= e.line_end]
        assert owner.parts[0].role in ("user", "summary")
    assert [e.key for e in exchanges] == [r["uuid"] for n, _, r in rows if n in prompts]


def test_feed_hands_back_an_exchange_when_the_next_prompt_arrives() -> None:
    assembler = Assembler(MAIN.stem)
    closed_at = {}
    for number, offset, record in records(MAIN):
        closed = assembler.feed(number, offset, record)
        if closed is not None:
            closed_at[number] = closed.start_line
            assert assembler.open is not None and assembler.open.start_line == number
            assert assembler.open.start_offset == offset
    assert closed_at == {21: 4, 22: 21, 26: 22}


def test_a_malformed_record_does_not_claim_the_uuid_of_the_valid_one_after_it() -> None:
    """daaain's edge cases, lines 11-12: line 11 has the uuid of line 12 and a
    message that is a string; line 12 must not be dropped as its replay."""
    path = EDGE / "daaain__claude-code-log__edge_cases.jsonl"
    rows = records(path)
    assert [r["uuid"] for n, _, r in rows if n in (11, 12)] == ["edge_011", "edge_011"]
    (part,) = parts_at(assemble(path), 12)
    assert "Testing special characters" in part.text


@pytest.mark.parametrize("kind", [["summary"], {"t": 1}, 7, None, "ai-title"])
def test_a_title_line_of_any_shape_is_a_title_or_nothing(kind: Any) -> None:
    """``type`` may hold any JSON (a list, an object: found by the importer's
    fuzz test); only a known title type with a title string is a title."""
    record = {"type": kind, "aiTitle": "Why the tail holds torn lines", "summary": "x"}
    found = title_of(record)
    if kind == "ai-title":
        assert found is not None and found[1] == "Why the tail holds torn lines"
    else:
        assert found is None
    assert title_of({"type": "ai-title", "aiTitle": ["not", "a", "string"]}) is None
