"""Chunk: an exchange cut into pieces the embedder sees whole.

all-MiniLM-L6-v2 silently drops every word-piece past its window (256 with
[CLS] and [SEP]), so chunks are sized in the model's own word-pieces, not in
characters. Parts are packed in order; a part longer than a chunk is split at
word-piece boundaries. Every chunk knows the lines its text came from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from selfreflect.assemble import Exchange, Part

LABELS = {
    "user": "User",
    "assistant": "Assistant",
    "thinking": "Assistant (thinking)",
    "summary": "Summary of earlier conversation",
    "note": "Note",
    "title": "Conversation",  # a Claude.ai conversation's name (selfreflect.export)
    "attachment": "Attached",  # files attached to a Claude.ai message
}

TokenCounter = Callable[[Sequence[str]], list[int]]
TokenSpans = Callable[[str], list[tuple[int, int]]]


@dataclass(frozen=True)
class Chunk:
    """What is embedded and stored: text plus where it came from."""

    exchange: str
    ordinal: int
    text: str
    line_start: int
    line_end: int
    tools: tuple[str, ...]
    files: tuple[str, ...]
    first_part: int = 0  # index in the exchange's parts of the part it starts with
    starts_part: bool = True  # it starts with the beginning of that part, not a later piece


def render(part: Part) -> str:
    """The text of one part as it appears in a chunk."""
    if part.role == "tool":
        return f"[{part.tool}] {part.text}".rstrip()
    if part.role == "result":
        return f"[{part.tool} output] {part.text}"
    if part.role == "error":
        return f"[{part.tool} error] {part.text}"
    return f"{LABELS.get(part.role, part.role)}: {part.text}"


def split_text(text: str, budget: int, count_tokens: TokenCounter, token_spans: TokenSpans) -> list[tuple[str, int]]:
    """Cut a text longer than ``budget`` word-pieces into pieces that fit,
    cutting between words: a word cut in half tokenizes into more pieces."""
    spans = token_spans(text)
    pieces: list[tuple[str, int]] = []
    i = 0
    while i < len(spans):
        j = min(i + budget, len(spans))
        while True:
            cut = j
            # back off to a word boundary (a gap before the next word-piece)
            while cut < len(spans) and cut > i + budget // 2 and spans[cut][0] == spans[cut - 1][1]:
                cut -= 1
            piece = text[spans[i][0] : spans[cut - 1][1]]
            (size,) = count_tokens([piece])
            if size <= budget or cut - i <= 1:
                break
            j = max(i + 1, cut - (size - budget))  # still too long: drop the surplus, retry
        pieces.append((piece, size))
        i = cut
    return pieces


def chunk_exchange(exchange: Exchange, budget: int, count_tokens: TokenCounter, token_spans: TokenSpans) -> list[Chunk]:
    """Cut ``exchange`` into chunks of at most ``budget`` word-pieces each.

    Args:
        exchange: the exchange.
        budget: word-pieces per chunk, without [CLS] and [SEP].
        count_tokens: word-pieces of each of a list of texts.
        token_spans: character span of each word-piece of a text.
    """
    texts = [render(p) for p in exchange.parts]
    sizes = count_tokens(texts) if texts else []
    # (part index, first piece of its part?, text, word-pieces)
    pieces: list[tuple[int, bool, str, int]] = []
    for index, (text, size) in enumerate(zip(texts, sizes, strict=True)):
        if size <= budget:
            pieces.append((index, True, text, size))
            continue
        split = split_text(text, budget, count_tokens, token_spans)
        pieces += [(index, n == 0, piece, count) for n, (piece, count) in enumerate(split)]

    chunks: list[Chunk] = []
    group: list[tuple[int, bool, str, int]] = []
    used = 0

    def close() -> None:
        parts = [exchange.parts[i] for i in dict.fromkeys(i for i, _, _, _ in group)]
        chunks.append(
            Chunk(
                exchange=exchange.key,
                ordinal=exchange.ordinal_base + len(chunks),
                text="\n".join(t for _, _, t, _ in group),
                line_start=min(p.line_start for p in parts),
                line_end=max(p.line_end for p in parts),
                tools=tuple(dict.fromkeys(p.tool for p in parts if p.tool and p.role == "tool")),
                files=tuple(dict.fromkeys(f for p in parts for f in p.files)),
                first_part=group[0][0],
                starts_part=group[0][1],
            )
        )

    for piece in pieces:
        # +1: the newline that joins pieces is a word-piece boundary, not a token,
        # but keep a margin for the tokenizer merging across the seam.
        if group and used + piece[3] + 1 > budget:
            close()
            group, used = [], 0
        group.append(piece)
        used += piece[3] + 1
    if group:
        close()
    return chunks


def seal(exchange: Exchange, chunks: list[Chunk]) -> int:
    """How many leading chunks of a still-open exchange are final.

    Packing is greedy and only the last part can still grow (a streamed reply
    merging its next line), so a chunk boundary is final where the next chunk
    starts a part of its own, on a line of its own: a re-read from that line,
    with the exchange's identity and ordinal carried over, rebuilds exactly
    the chunks a read from the exchange's start would. Returns 0 when there is
    no such boundary (re-read from the exchange's start).
    """
    for c in range(len(chunks) - 1, 0, -1):
        chunk = chunks[c]
        p = chunk.first_part
        if chunk.starts_part and p > 0 and exchange.parts[p - 1].line_end < exchange.parts[p].line_start:
            return c
    return 0
