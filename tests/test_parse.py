"""parse.parse_line: a record, a BadLine with its reason, or None for blank."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfreflect.parse import BadLine, parse_line
from selfreflect.tail import read_lines

from conftest import EDGE, every_real_transcript


@pytest.mark.parametrize("data", [b"", b"   ", b"\t\r", b"\r\n"])
def test_blank_line_is_not_a_record(data: bytes) -> None:
    assert parse_line(data) is None


@pytest.mark.parametrize("data", [b"\x00" * 256, b"\x00", b"\x00\x00 \x00"], ids=["256", "one", "spaced"])
def test_line_of_nuls_is_bad(data: bytes) -> None:
    result = parse_line(data)
    assert isinstance(result, BadLine)
    assert result.reason


def test_nul_tail_of_the_real_edge_case_is_bad() -> None:
    content = (EDGE / "nul-padded-tail__obra__episodic-memory__tiny-conversation.jsonl").read_bytes()
    tail = content[content.rindex(b"\n") + 1 :]
    assert isinstance(parse_line(tail), BadLine)


@pytest.mark.parametrize("data", [b"42", b"[1]", b'"str"', b"null", b"true"])
def test_json_that_is_not_an_object_is_bad_with_a_reason(data: bytes) -> None:
    result = parse_line(data)
    assert isinstance(result, BadLine)
    not_json = parse_line(b"{not json")
    assert isinstance(not_json, BadLine)
    assert result.reason and result.reason != not_json.reason


@pytest.mark.parametrize("data", [b"{not json", b'{"a": 1', b'{"type":"user"}{"type":"user"}'])
def test_broken_json_is_bad(data: bytes) -> None:
    result = parse_line(data)
    assert isinstance(result, BadLine)
    assert result.reason


def test_invalid_utf8_inside_a_string_still_parses() -> None:
    result = parse_line(b'{"type": "user", "text": "caf\xe9 \xff\xfe ok"}')
    assert isinstance(result, dict)
    assert result["type"] == "user"
    assert result["text"].startswith("caf") and result["text"].endswith(" ok")


def test_lone_surrogate_escape_parses() -> None:
    result = parse_line(b'{"type": "assistant", "text": "half \\ud83d of an emoji"}')
    assert isinstance(result, dict)
    assert result["type"] == "assistant"
    assert result["text"].startswith("half ") and result["text"].endswith(" of an emoji")


def test_unicode_separators_inside_a_string_are_kept() -> None:
    result = parse_line('{"text": "a\u2028b\u0085c"}'.encode())
    assert result == {"text": "a\u2028b\u0085c"}


def test_trailing_carriage_return_is_tolerated() -> None:
    assert parse_line(b'{"type": "user"}\r') == {"type": "user"}


@pytest.mark.parametrize("path", every_real_transcript())
def test_every_line_of_every_real_transcript_is_a_record(path: Path) -> None:
    lines = list(read_lines(path))
    assert lines
    bad = {line.number: parse_line(line.data) for line in lines if not isinstance(parse_line(line.data), dict)}
    assert bad == {}


def test_edge_case_fixture_skips_what_is_not_an_object() -> None:
    path = EDGE / "daaain__claude-code-log__edge_cases.jsonl"
    results = {line.number: parse_line(line.data) for line in read_lines(path)}
    bad = {number for number, result in results.items() if isinstance(result, BadLine)}
    raw = path.read_bytes().split(b"\n")
    assert bad == {i + 1 for i, data in enumerate(raw) if data.strip()[:1] not in (b"{", b"")}
    assert bad  # the fixture does hold lines that are not objects
    assert all(isinstance(r, dict) for n, r in results.items() if n not in bad)
