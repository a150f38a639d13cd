"""Voyage AI embeddings (PREFER_LOCAL_EMBEDDINGS=false): the official client
against a real HTTP server on 127.0.0.1 that answers as Voyage AI's API does
(``voyage_fake``), through the embedder, the CLI and the daemon."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from planted import found_in, plant, transcript

from selfreflect.cli import cli
from selfreflect.embed import OnnxEmbedder, VoyageEmbedder, make_embedder
from selfreflect.errors import ConfigError, EmbedderUnavailable
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore
from selfreflect.windows import FIELD

from conftest import REAL, make_settings
from daemon_process import DaemonProcess, eventually, run_cli
from voyage_fake import KEY, FakeVoyage, fake_vector

pytestmark = pytest.mark.timeout(300)

TINY = REAL / "obra__episodic-memory__tiny-conversation.jsonl"
SHORT = REAL / "marot__spotter__short.jsonl"
VOYAGE_STORE = ("voyageai/voyage-4-lite", 1024)


@pytest.fixture
def voyage() -> Iterator[FakeVoyage]:
    with FakeVoyage() as fake:
        yield fake


def model(fake: FakeVoyage, **options: object) -> VoyageEmbedder:
    return VoyageEmbedder(KEY, base_url=fake.url, **{"attempts": 1, **options})  # type: ignore[arg-type]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def home() -> Path:
    """Two real transcripts in the env's CLAUDE_CONFIG_DIR."""
    folder = Path(os.environ["CLAUDE_CONFIG_DIR"]) / "projects" / "-workspace"
    folder.mkdir(parents=True)
    for source in (TINY, SHORT):
        shutil.copyfile(source, folder / source.name)
    return folder


def use_voyage(monkeypatch: pytest.MonkeyPatch, fake: FakeVoyage) -> None:
    monkeypatch.setenv("PREFER_LOCAL_EMBEDDINGS", "false")
    monkeypatch.setenv("VOYAGE_KEY", KEY)
    monkeypatch.setenv("VOYAGE_BASE_URL", fake.url)


def stored(name: str, dim: int) -> list[dict]:
    with EdgeStore(Path(os.environ["SELFREFLECT_HOME"]) / "store", name, dim).open() as store:
        return store.scroll(SearchFilter(), 100_000)


# -- the embedder ------------------------------------------------------------------


def test_documents_and_queries_are_sent_as_such_with_the_key_as_bearer(voyage: FakeVoyage) -> None:
    embedder = model(voyage)
    documents = embedder.embed(["the importer survives restarts", "raise the docker memory limit"])
    (query,) = embedder.embed_queries(["how did we fix the docker memory limit"])
    assert [r["body"]["input_type"] for r in voyage.requests] == ["document", "query"]
    assert [r["authorization"] for r in voyage.requests] == [f"Bearer {KEY}"] * 2
    assert {r["body"]["model"] for r in voyage.requests} == {"voyage-4-lite"}
    assert documents.shape == (2, 1024) and documents.dtype == np.float32
    assert np.allclose(documents[1], fake_vector("raise the docker memory limit"), atol=1e-6)
    assert np.allclose(np.linalg.norm(documents, axis=1), 1.0, atol=1e-5)
    assert float(query @ documents[1]) > float(query @ documents[0])


def test_requests_stay_within_voyage_limits_and_keep_the_order(voyage: FakeVoyage) -> None:
    embedder = model(voyage)
    short = [f"note {i} about the rollout" for i in range(300)]
    vectors = embedder.embed(short)
    assert [len(r["body"]["input"]) for r in voyage.requests] == [128, 128, 44]  # texts a request
    assert all(np.allclose(v, fake_vector(t), atol=1e-6) for v, t in zip(vectors, short, strict=True))
    voyage.requests.clear()
    long = [f"text {i} " + "word " * 1000 for i in range(130)]  # about 1,000 word-pieces each
    assert len(embedder.embed(long)) == 130
    assert [len(r["body"]["input"]) for r in voyage.requests] == [59, 59, 12]  # word-pieces a request
    assert embedder.embed([]).shape == (0, 1024) and len(voyage.requests) == 3


def test_chunks_are_sized_by_the_bundled_tokenizer(voyage: FakeVoyage) -> None:
    bundled, remote = OnnxEmbedder(), model(voyage)
    text = "The importer survives restarts: positions are saved after each batch."
    assert remote.count_tokens([text]) == bundled.count_tokens([text])
    assert remote.token_spans(text) == bundled.token_spans(text)
    assert (remote.max_tokens, remote.dim, remote.name) == (bundled.max_tokens, 1024, "voyageai/voyage-4-lite")
    assert voyage.requests == []  # sizing chunks asks nothing of Voyage AI


def test_a_refused_key_is_a_clear_error_without_the_key(voyage: FakeVoyage) -> None:
    wrong = "pa-wrong-key-9876543210"
    with pytest.raises(EmbedderUnavailable) as refused:
        VoyageEmbedder(wrong, base_url=voyage.url, attempts=1).embed(["hello"])
    message = str(refused.value)
    assert "refused the API key (401: Provided API key is invalid.): check VOYAGE_KEY" in message
    assert wrong not in message and voyage.requests[0]["authorization"] == f"Bearer {wrong}"


def test_rate_limits_and_server_errors_are_clear_errors(voyage: FakeVoyage) -> None:
    embedder = model(voyage)
    voyage.failures = [(429, {"detail": "You have exceeded your rate limit."}), (500, {"detail": "oops"})]
    with pytest.raises(EmbedderUnavailable, match=r"is over its rate limit \(429: You have exceeded"):
        embedder.embed(["hello"])
    with pytest.raises(EmbedderUnavailable, match=r"Voyage AI at http://127\.0\.0\.1:\d+/v1 failed \(500"):
        embedder.embed_queries(["hello"])
    voyage.failures = [(503, {"detail": "overloaded"})]  # the client tries again after a 503, then answers
    assert model(voyage, attempts=2).embed(["hello"]).shape == (1, 1024)
    voyage.dim = 512  # a model of other dimensions than selfreflect expects
    with pytest.raises(EmbedderUnavailable, match=r"shape \(1, 512\) for 1 texts, not the 1024 dimensions"):
        embedder.embed(["hello"])


def test_a_slow_or_unreachable_service_is_a_clear_error(voyage: FakeVoyage) -> None:
    voyage.delay = 1.5
    with pytest.raises(EmbedderUnavailable, match=r"did not answer within 0\.5 s"):
        model(voyage, timeout=0.5).embed(["hello"])
    closed = VoyageEmbedder(KEY, base_url="http://127.0.0.1:9/v1", attempts=1)
    with pytest.raises(EmbedderUnavailable, match=r"cannot reach Voyage AI at http://127\.0\.0\.1:9/v1"):
        closed.embed(["hello"])


def test_the_settings_choose_the_embedder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_embedder(make_settings(tmp_path)), OnnxEmbedder)
    with pytest.raises(ConfigError, match="PREFER_LOCAL_EMBEDDINGS=false embeds with Voyage AI: set VOYAGE_KEY"):
        make_embedder(make_settings(tmp_path, prefer_local_embeddings=False))
    chosen = make_embedder(make_settings(tmp_path, prefer_local_embeddings=False, voyage_key=KEY))
    assert isinstance(chosen, VoyageEmbedder) and (chosen.name, chosen.dim) == VOYAGE_STORE
    older = make_embedder(
        make_settings(tmp_path, prefer_local_embeddings=False, voyage_key=KEY, voyage_model="voyage-3-lite")
    )
    assert (older.name, older.dim) == ("voyageai/voyage-3-lite", 512)
    monkeypatch.setitem(sys.modules, "voyageai", None)  # as if the package were not installed
    with pytest.raises(ConfigError, match=r"pip install 'selfreflect\[voyage\]'"):
        make_embedder(make_settings(tmp_path, prefer_local_embeddings=False, voyage_key=KEY))


# -- through the CLI ---------------------------------------------------------------


def test_import_and_search_with_voyage(home: Path, voyage: FakeVoyage, monkeypatch: pytest.MonkeyPatch) -> None:
    use_voyage(monkeypatch, voyage)
    code, out, err = run("import")
    assert code == 0, err
    points = stored(*VOYAGE_STORE)
    assert points and sorted(p["text"] for p in points) == sorted(voyage.inputs("document"))  # each chunk once
    assert not any(FIELD in p for p in points)  # no word-piece states, no window vectors: search embeds windows
    assert voyage.inputs("query") == []
    code, out, err = run("search", "--json", "Proactiveness")
    assert code == 0, err
    assert json.loads(out)["results"][0]["transcript"].endswith(TINY.name)
    assert voyage.inputs("query") == ["Proactiveness"]
    code, out, _ = run("status", "--json")
    assert (json.loads(out)["model"], json.loads(out)["dim"]) == VOYAGE_STORE


def test_only_redacted_text_is_sent(home: Path, voyage: FakeVoyage, monkeypatch: pytest.MonkeyPatch) -> None:
    planted = plant(per_format=1)
    lines = [json.dumps(record) for record in transcript(planted)]
    (home / "5ec4e700-0000-4000-8000-00000000feed.jsonl").write_text("\n".join(lines) + "\n")
    use_voyage(monkeypatch, voyage)
    code, _, err = run("import")
    assert code == 0, err
    sent = json.dumps([r["body"] for r in voyage.requests]).encode()
    assert len(voyage.inputs("document")) > 10
    assert found_in(planted, {"sent to Voyage AI": sent}) == {}


def test_switching_models_asks_for_a_reindex(home: Path, voyage: FakeVoyage, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("import")[0] == 0  # the bundled model
    use_voyage(monkeypatch, voyage)
    code, out, err = run("search", "Proactiveness")
    assert code == 1 and voyage.requests == []
    assert (
        "was built with 'sentence-transformers/all-MiniLM-L6-v2 (int8 onnx)' (384 dimensions), "
        "not 'voyageai/voyage-4-lite' (1024): run `selfreflect reindex`" in err
    )
    code, out, err = run("reindex")
    assert code == 0, err
    code, out, err = run("search", "--json", "Proactiveness")
    assert code == 0 and json.loads(out)["results"][0]["transcript"].endswith(TINY.name)
    monkeypatch.setenv("PREFER_LOCAL_EMBEDDINGS", "true")  # and back
    code, out, err = run("search", "Proactiveness")
    assert code == 1 and "was built with 'voyageai/voyage-4-lite' (1024 dimensions), not 'sentence-transformers" in err


# -- through the daemon ------------------------------------------------------------


def test_the_daemon_pauses_while_voyage_fails_and_loses_nothing(tmp_path: Path, voyage: FakeVoyage) -> None:
    """An embedding service that fails is a pause, as a full disk is: the
    positions do not move, and once it answers the index is a clean one."""
    claude = tmp_path / "claude"
    (claude / "projects" / "-p").mkdir(parents=True)
    env = {"PREFER_LOCAL_EMBEDDINGS": "false", "VOYAGE_KEY": KEY, "VOYAGE_BASE_URL": voyage.url}
    voyage.down = (429, {"detail": "You have exceeded your rate limit."})
    with DaemonProcess(claude, tmp_path / "data", **env) as daemon:
        shutil.copyfile(TINY, claude / "projects" / "-p" / "a.jsonl")
        failing = eventually(lambda: (r := httpx.get(daemon.url + "/healthz")).status_code == 503 and r, 60)
        problems = failing.json()["problems"]
        assert any("writing paused: embedding failed: Voyage AI at" in p and "rate limit (429" in p for p in problems)
        assert failing.json()["chunks_indexed"] == 0
        searched = httpx.get(daemon.url + "/api/search", params={"q": "Proactiveness"})
        assert searched.status_code == 503 and "rate limit" in searched.json()["error"]
        voyage.down = None
        eventually(lambda: httpx.get(daemon.url + "/healthz").status_code == 200, 60)
        eventually(lambda: daemon.search("Proactiveness"), 30)
        assert daemon.stop() == 0
    clean = run_cli(claude, tmp_path / "clean", "import", **env)
    assert clean.returncode == 0, clean.stderr
    with EdgeStore(tmp_path / "data" / "store", *VOYAGE_STORE).open() as a:
        after = {p["id"]: p["text"] for p in a.scroll(SearchFilter(), 100_000)}
    with EdgeStore(tmp_path / "clean" / "store", *VOYAGE_STORE).open() as b:
        assert after == {p["id"]: p["text"] for p in b.scroll(SearchFilter(), 100_000)}
    assert KEY not in daemon.log.read_text() and KEY not in clean.stderr
