"""Property-based fuzzing of the pipeline: random and mutated records through
tail -> parse -> assemble -> chunk -> redact -> the tokenizer -> the payload
encoder, and a few through the whole importer with the real model and store.

Properties: no exception escapes, and every prompt of the real transcript
the junk was mixed into is still indexed.

Profiles (``HYPOTHESIS_PROFILE``): ``ci`` (the default, bounded for CI) and
``long`` (on demand: ``HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py``).
Failures found are kept below as ``@example`` cases.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from selfreflect.assemble import Assembler
from selfreflect.chunk import chunk_exchange
from selfreflect.embed import OnnxEmbedder
from selfreflect.importer import Importer
from selfreflect.parse import parse_line
from selfreflect.redact import redact
from selfreflect.state import State
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore
from selfreflect.tail import read_lines

from conftest import REAL, make_settings

settings.register_profile(
    "ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile(
    "long", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BASE = (REAL / "obra__episodic-memory__tiny-conversation.jsonl").read_bytes().splitlines()
SOURCES = [
    line
    for name in (
        "marot__spotter__tool_heavy.jsonl",
        "d-kimuson__claude-code-viewer__1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl",
    )
    for line in (REAL / name).read_bytes().splitlines()
]
BASE_UUIDS = {orjson.loads(line)["uuid"] for line in BASE}
PROMPTS = [
    record["message"]["content"]
    for record in map(orjson.loads, BASE)
    if record["type"] == "user" and isinstance(record["message"]["content"], str)
]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["type", "uuid", "message", "content", "role", "cwd", "timestamp", "sessionId", "isSidechain", "id", "name"]


def _mutate_fields(record: Any, rnd: random.Random, value: Any) -> Any:
    """Put ``value`` (any JSON) in place of a field somewhere in ``record``."""
    stack = [record]
    targets = []
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            targets += [(node, k) for k in node if k in FIELDS or rnd.random() < 0.1]
            stack += list(node.values())
        elif isinstance(node, list):
            stack += node
    if targets:
        node, key = rnd.choice(targets)
        node[key] = value
    return record


@st.composite
def junk_line(draw: st.DrawFn) -> bytes:
    """One line of junk: random bytes, or a real line broken in one of many ways."""
    source = draw(st.sampled_from(SOURCES))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    kind = draw(
        st.sampled_from(
            ["bytes", "bitflip", "truncate", "utf8", "surrogate", "nul", "deep", "huge", "number", "fields", "json"]
        )
    )
    if kind == "bytes":
        line = draw(st.binary(max_size=300))
    elif kind == "bitflip":
        data = bytearray(source)
        for _ in range(draw(st.integers(1, 8))):
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
        line = bytes(data)
    elif kind == "truncate":
        line = source[: rnd.randrange(len(source))]
    elif kind == "utf8":
        i = rnd.randrange(len(source))
        line = source[:i] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])) + source[i:]
    elif kind == "surrogate":
        i = source.find(b'"text":"')
        escape = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\ud83d", b"\\ude00x", b"\\ud800\\ud800"]))
        line = source[: i + 8] + escape + source[i + 8 :] if i >= 0 else source.replace(b'":"', b'":"' + escape, 1)
    elif kind == "nul":
        i = rnd.randrange(len(source))
        line = source[:i] + b"\x00" * draw(st.integers(1, 300)) + source[i:]
    elif kind == "deep":
        depth = draw(st.integers(500, 5000))
        line = b'{"type":"user","message":{"role":"user","content":' + b"[" * depth + b"]" * depth + b"}}"
    elif kind == "huge":
        line = orjson.dumps(
            {"type": "user", "message": {"role": "user", "content": "x" * draw(st.integers(0, 300_000))}}
        )
    elif kind == "number":
        digits = b"9" * draw(st.integers(300, 5000))
        line = (
            b'{"type":"assistant","message":{"id":' + digits + b',"content":[{"type":"text","text":' + digits + b"}]}}"
        )
    elif kind == "fields":
        record = orjson.loads(source)
        line = json.dumps(_mutate_fields(record, rnd, draw(JSON))).encode()  # stdlib: integers of any size
    else:
        line = json.dumps(draw(JSON)).encode()
    return line.replace(b"\n", b" ")


def mixed(junk: list[bytes], seed: int) -> bytes:
    """The real transcript with the junk lines mixed in, in any order relative
    to each other, the real lines keeping theirs."""
    rnd = random.Random(seed)
    lines = list(BASE)
    for piece in junk:
        lines.insert(rnd.randrange(len(lines) + 1), piece)
    return b"\n".join(lines) + b"\n"


def claims_a_real_uuid(line: bytes) -> bool:
    """A junk line that is a record with a real line's uuid is a replay of it
    (kept once, by design), not junk: the property does not hold for it."""
    record = parse_line(line)
    return isinstance(record, dict) and isinstance(record.get("uuid"), str) and record["uuid"] in BASE_UUIDS


def assert_prompts_in(texts: str) -> None:
    """Every prompt of the real transcript is in ``texts`` (spacing aside)."""
    flat = " ".join(texts.split())
    for prompt in PROMPTS:
        assert " ".join(redact(prompt).split())[:60] in flat


@pytest.fixture(scope="module")
def tokenizer() -> OnnxEmbedder:
    model = OnnxEmbedder()
    model.load()
    return model


@given(junk=st.lists(junk_line(), max_size=12), seed=st.integers(0, 1000))
@example(junk=[b'{"type":"user","message":{"role":"user","content":"hi \\ud800"}}'], seed=0)
@example(junk=[b'{"type":"user","message":{"content":' + b"[" * 1100 + b"]" * 1100 + b"}}"], seed=0)
def test_the_pipeline_takes_any_line(tokenizer: OnnxEmbedder, junk: list[bytes], seed: int) -> None:
    assume(not any(claims_a_real_uuid(line) for line in junk))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.jsonl"
        path.write_bytes(mixed(junk, seed))
        assembler = Assembler("s")
        exchanges = []
        for line in read_lines(path, max_line_bytes=1 << 20, final=True):
            record = None if line.oversized else parse_line(line.data)
            if isinstance(record, dict) and (closed := assembler.feed(line.number, line.start, record)):
                exchanges.append(closed)
        if assembler.open is not None:
            exchanges.append(assembler.open)
    texts = []
    for exchange in exchanges:
        for chunk in chunk_exchange(exchange, 254, tokenizer.count_tokens, tokenizer.token_spans):
            text = redact(chunk.text)
            orjson.dumps({"text": text, "session": exchange.session_id, "cwd": exchange.cwd})  # what the store encodes
            texts.append(text)
    assert_prompts_in(" ".join(texts))


@settings(max_examples=int(os.environ.get("FUZZ_IMPORTS", "12")))
@given(junk=st.lists(junk_line(), min_size=1, max_size=8), seed=st.integers(0, 1000))
def test_the_importer_takes_any_line(tmp_path_factory: pytest.TempPathFactory, junk: list[bytes], seed: int) -> None:
    """The whole importer, with the real model and store."""
    assume(not any(claims_a_real_uuid(line) for line in junk))
    root = tmp_path_factory.mktemp("fuzz")
    settings_ = make_settings(root, max_line_mb=1)
    (settings_.projects_dir / "-p").mkdir(parents=True)
    (settings_.projects_dir / "-p" / "s.jsonl").write_bytes(mixed(junk, seed))
    model = _shared_model()
    with EdgeStore(settings_.store_dir, model.name, model.dim).open() as store:
        summary = Importer(settings_, store, model, State.load(settings_.state_file)).run()
        stored = " ".join(p["text"] for p in store.scroll(SearchFilter(), 10_000))
    assert summary.failed_files == []
    assert_prompts_in(stored)


_MODEL: list[OnnxEmbedder] = []


def _shared_model() -> OnnxEmbedder:
    if not _MODEL:
        model = OnnxEmbedder()
        model.load()
        _MODEL.append(model)
    return _MODEL[0]
