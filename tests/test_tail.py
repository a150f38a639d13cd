"""tail.read_lines: complete lines, their numbers and byte offsets, torn tails,
resuming, oversized lines, and separators that are not newlines."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from selfreflect.tail import BLOCK, FileIdentity, Line, read_lines

from conftest import EDGE, REAL, every_real_transcript

TINY = REAL / "obra__episodic-memory__tiny-conversation.jsonl"
TRUNCATED = EDGE / "truncated-last-line__obra__episodic-memory__tiny-conversation.jsonl"
NUL_PADDED = EDGE / "nul-padded-tail__obra__episodic-memory__tiny-conversation.jsonl"


def assert_lines_match_file(lines: list[Line], content: bytes, first_line: int = 1, offset: int = 0) -> None:
    """Numbers count up from ``first_line``; each line's bytes sit at start..end."""
    assert [line.number for line in lines] == list(range(first_line, first_line + len(lines)))
    expected_start = offset
    for line in lines:
        assert line.start == expected_start
        assert content[line.start : line.end] == line.data + b"\n"
        assert not line.oversized
        expected_start = line.end


@pytest.mark.parametrize("path", every_real_transcript())
def test_complete_lines_have_numbers_and_offsets_that_match_the_file(path: Path) -> None:
    content = path.read_bytes()
    lines = list(read_lines(path))
    assert_lines_match_file(lines, content)
    assert len(lines) == content.count(b"\n")
    assert lines[-1].end == len(content)  # every real file ends with a newline


def test_torn_last_line_of_the_real_edge_case_is_held_back() -> None:
    lines = list(read_lines(TRUNCATED))
    content = TRUNCATED.read_bytes()
    assert len(lines) == 6
    assert_lines_match_file(lines, content)
    assert lines[-1].end == content.rindex(b"\n") + 1 < len(content)
    assert [line.data for line in lines] == TINY.read_bytes().split(b"\n")[:6]


def test_torn_last_line_appears_once_when_completed(tmp_path: Path) -> None:
    original = TINY.read_bytes()
    torn = TRUNCATED.read_bytes()
    assert original.startswith(torn)
    path = tmp_path / "session.jsonl"
    shutil.copyfile(TRUNCATED, path)

    held = list(read_lines(path))
    resume_at, next_number = held[-1].end, held[-1].number + 1
    assert list(read_lines(path, resume_at, next_number)) == []  # still nothing to give

    with open(path, "ab") as handle:
        handle.write(original[len(torn) :])
    completed = list(read_lines(path, resume_at, next_number))

    assert len(completed) == 1
    assert completed[0].number == 7
    assert completed[0].data == original.split(b"\n")[6]
    assert held + completed == list(read_lines(path))


def test_nul_padded_tail_is_held_back_like_a_torn_line() -> None:
    lines = list(read_lines(NUL_PADDED))
    assert [line.data for line in lines] == [line.data for line in read_lines(TINY)]
    assert lines[-1].end == TINY.stat().st_size
    assert not any(b"\x00" in line.data for line in lines)


def test_nul_run_becomes_its_own_line_once_writing_resumes(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    shutil.copyfile(NUL_PADDED, path)
    with open(path, "ab") as handle:
        handle.write(b'\n{"type":"user"}\n')
    lines = list(read_lines(path))
    assert [line.number for line in lines] == list(range(1, 10))
    assert lines[7].data == b"\x00" * 256
    assert lines[8].data == b'{"type":"user"}'
    assert_lines_match_file(lines, path.read_bytes())


@pytest.mark.parametrize(
    "path",
    [TINY, REAL / "obra__episodic-memory__medium-conversation.jsonl"],
    ids=lambda p: p.name,
)
def test_resuming_from_every_line_gives_the_same_lines_as_a_full_read(path: Path) -> None:
    full = list(read_lines(path))
    for k, line in enumerate(full):
        assert list(read_lines(path, line.start, line.number)) == full[k:]


def test_resuming_inside_a_file_of_many_blocks() -> None:
    path = REAL / "obra__episodic-memory__large-conversation.jsonl"
    assert path.stat().st_size > 10 * BLOCK
    full = list(read_lines(path))
    for k in (1, len(full) // 3, len(full) // 2, len(full) - 1):
        resumed = list(read_lines(path, full[k].start, full[k].number))
        assert resumed == full[k:]


def test_line_longer_than_the_limit_is_skipped_and_later_lines_keep_their_numbers(tmp_path: Path) -> None:
    rows = [
        b'{"n": 1}',
        b'{"big": "' + b"x" * (3 * BLOCK + 100) + b'"}',
        b'{"n": 3}',
        b"y" * (2 * BLOCK),
        b'{"n": 5}',
    ]
    content = b"".join(row + b"\n" for row in rows)
    path = tmp_path / "big.jsonl"
    path.write_bytes(content)

    lines = list(read_lines(path, max_line_bytes=1000))

    assert [line.number for line in lines] == [1, 2, 3, 4, 5]
    assert [line.oversized for line in lines] == [False, True, False, True, False]
    assert [line.data for line in lines] == [rows[0], b"", rows[2], b"", rows[4]]
    ends = [sum(len(r) + 1 for r in rows[: i + 1]) for i in range(len(rows))]
    assert [line.end for line in lines] == ends
    assert [line.start for line in lines] == [0, *ends[:-1]]


def test_line_over_the_limit_within_one_block_is_oversized(tmp_path: Path) -> None:
    # The limit is the line's length, not how many blocks it spans.
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"z" * 5000 + b"\n" + b'{"n": 2}\n')
    first, second = read_lines(path, max_line_bytes=1000)
    assert first.oversized and first.data == b""
    assert (first.start, first.end) == (0, 5001)
    assert second == Line(2, 5001, 5010, b'{"n": 2}')


def test_unicode_separators_inside_a_json_string_do_not_split_a_line(tmp_path: Path) -> None:
    # str.splitlines() would split on every one of these.
    separators = ["\u2028", "\u2029", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\r"]
    record = ('{"text": "' + "|".join(f"a{s}b" for s in separators) + '"}').encode()
    raw_nel = b'{"text": "latin-1 NEL \x85 here"}'
    path = tmp_path / "session.jsonl"
    path.write_bytes(record + b"\n" + raw_nel + b"\n")

    lines = list(read_lines(path))

    assert [line.data for line in lines] == [record, raw_nel]
    assert [line.number for line in lines] == [1, 2]


def test_file_identity_tells_growth_from_replacement(tmp_path: Path) -> None:
    path = tmp_path / "session.jsonl"
    path.write_bytes(b'{"n": 1}\n')
    before = FileIdentity.of(path)
    st = os.stat(path)
    assert (before.inode, before.device, before.size) == (st.st_ino, st.st_dev, 9)

    with open(path, "ab") as handle:
        handle.write(b'{"n": 2}\n')
    grown = FileIdentity.of(path)
    assert (grown.inode, grown.device) == (before.inode, before.device)
    assert grown.size == 18

    replacement = tmp_path / "new.jsonl"
    replacement.write_bytes(b'{"n": 1}\n')
    os.replace(replacement, path)
    assert FileIdentity.of(path).inode != before.inode
