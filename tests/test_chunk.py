"""chunk.chunk_exchange with the real bundled tokenizer: chunks fit the model's
window and know the lines they came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfreflect.assemble import Assembler, Exchange, Part
from selfreflect.chunk import Chunk, chunk_exchange
from selfreflect.embed import OnnxEmbedder
from selfreflect.parse import parse_line
from selfreflect.tail import read_lines

from conftest import every_real_transcript

BUDGET = 254  # 256 word-pieces minus [CLS] and [SEP]


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    model = OnnxEmbedder()
    model.load()
    return model


def exchanges_of(path: Path) -> list[Exchange]:
    assembler = Assembler(path.stem)
    exchanges = []
    for line in read_lines(path):
        record = parse_line(line.data)
        if isinstance(record, dict) and (closed := assembler.feed(line.number, line.start, record)):
            exchanges.append(closed)
    if assembler.open is not None:
        exchanges.append(assembler.open)
    return exchanges


def chunks_of(exchange: Exchange, embedder: OnnxEmbedder) -> list[Chunk]:
    return chunk_exchange(exchange, BUDGET, embedder.count_tokens, embedder.token_spans)


def exchange(*parts: Part) -> Exchange:
    return Exchange(
        key="u-1",
        start_offset=0,
        start_line=parts[0].line_start,
        session_id="s-1",
        cwd="/workspace",
        git_branch="main",
        timestamp="2026-01-02T19:18:31.028Z",
        sidechain=False,
        agent_id=None,
        parts=list(parts),
    )


@pytest.mark.parametrize("path", every_real_transcript())
def test_every_chunk_of_a_real_transcript_fits_the_model_window(path: Path, embedder: OnnxEmbedder) -> None:
    too_long = {}
    for ex in exchanges_of(path):
        chunks = chunks_of(ex, embedder)
        for chunk, size in zip(chunks, embedder.count_tokens([c.text for c in chunks]), strict=True):
            if size > BUDGET:
                too_long[(ex.key, chunk.ordinal)] = size
    assert too_long == {}


@pytest.mark.parametrize("path", every_real_transcript())
def test_chunks_of_a_real_transcript_are_numbered_and_within_their_exchange(path: Path, embedder: OnnxEmbedder) -> None:
    for ex in exchanges_of(path):  # medium-conversation holds none: only snapshots
        chunks = chunks_of(ex, embedder)
        assert chunks
        assert [c.ordinal for c in chunks] == list(range(len(chunks)))
        assert all(c.exchange == ex.key and c.text for c in chunks)
        for chunk in chunks:
            assert ex.start_line <= chunk.line_start <= chunk.line_end <= ex.line_end


def test_part_far_longer_than_the_budget_is_split_and_every_piece_keeps_its_line(embedder: OnnxEmbedder) -> None:
    words = " ".join(["the importer reads each transcript line once and remembers where it stopped"] * 120)
    assert embedder.count_tokens([words])[0] > 4 * BUDGET
    ex = exchange(Part("user", "why is the import slow", 7, 7), Part("assistant", words, 9, 9, "msg_1"))

    chunks = chunks_of(ex, embedder)
    from_long_part = [c for c in chunks if c.line_end == 9]

    assert len(from_long_part) >= 4
    assert all(c.line_start == c.line_end == 9 for c in from_long_part)
    assert all(size <= BUDGET for size in embedder.count_tokens([c.text for c in chunks]))
    assert " ".join(c.text for c in from_long_part).split()[-len(words.split()) :] == words.split()


def test_small_parts_share_one_chunk_with_their_tools_and_files(embedder: OnnxEmbedder) -> None:
    ex = exchange(
        Part("user", "read the readme", 2, 2),
        Part("tool", "/workspace/README.md", 3, 3, "msg_1", tool="Read", files=("/workspace/README.md",)),
        Part("result", "# fasthooks", 4, 4, tool="Read"),
        Part("assistant", "It is a hooks library.", 5, 6, "msg_2"),
    )
    (chunk,) = chunks_of(ex, embedder)
    assert (chunk.line_start, chunk.line_end) == (2, 6)
    assert chunk.tools == ("Read",)
    assert chunk.files == ("/workspace/README.md",)
    for text in ("read the readme", "[Read] /workspace/README.md", "[Read output] # fasthooks", "hooks library"):
        assert text in chunk.text
