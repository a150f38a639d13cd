"""The bundled model against fp32 reference embeddings (golden test)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from selfreflect.embed import OnnxEmbedder, bundled_model_dir
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore
from selfreflect.windows import flatten, tiles

from conftest import REFERENCE_EMBEDDINGS

REFERENCE = json.loads(REFERENCE_EMBEDDINGS.read_text())


def test_model_ships_inside_the_package_with_its_attribution() -> None:
    folder = bundled_model_dir()
    assert (folder / "model.onnx").stat().st_size > 20_000_000
    assert (folder / "tokenizer.json").is_file()
    assert "Apache License 2.0" in (folder / "README.md").read_text()


@pytest.mark.parametrize("item", [i for i in REFERENCE["items"] if i["text"]], ids=lambda i: i["text"][:30])
def test_embedding_matches_the_fp32_reference(embedder: OnnxEmbedder, item: dict) -> None:
    (vector,) = embedder.embed([item["text"]])
    reference = np.asarray(item["embedding"], dtype=np.float32)
    cosine = float(vector @ reference / np.linalg.norm(reference))
    assert cosine >= 0.98


def test_vectors_are_unit_length_and_batch_independent(embedder: OnnxEmbedder) -> None:
    texts = [i["text"] for i in REFERENCE["items"] if i["text"]]
    together = embedder.embed(texts)
    assert together.shape == (len(texts), embedder.dim)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.stack([embedder.embed([t])[0] for t in texts])
    # Dynamic int8 quantisation scales activations per batch, so a batch
    # shifts a vector slightly; padding itself must not change its meaning.
    # How slightly depends on the CPU's int8 kernels: 0.984 at worst on an
    # AVX2-only CPU (AMD EPYC) here, with onnxruntime 1.31 and 1.32 alike.
    assert (np.sum(together * alone, axis=1) >= 0.98).all()


def test_text_beyond_the_window_is_cut_not_an_error(embedder: OnnxEmbedder) -> None:
    long_text = "the importer survives restarts " * 400
    assert embedder.count_tokens([long_text])[0] > embedder.max_tokens
    (vector,) = embedder.embed([long_text])
    assert np.isfinite(vector).all()


def test_concurrent_callers_run_the_model_one_at_a_time(embedder: OnnxEmbedder) -> None:
    """Each model call holds its own buffers: many searches at once must not
    multiply them, so calls wait their turn (and all get their vectors)."""
    import threading
    import time
    from dataclasses import replace

    model = replace(embedder)  # the same session, a lock of its own
    real, inside, most = model._session, [0], [0]
    guard = threading.Lock()

    class Counting:
        def run(self, *args: object) -> object:
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.01)
            try:
                return real.run(*args)
            finally:
                with guard:
                    inside[0] -= 1

    model._session = Counting()
    out: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda: out.append(model.embed(["a search", "and another"]))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8 and all(v.shape == (2, embedder.dim) for v in out)
    assert most[0] == 1


def test_the_model_is_taken_in_the_order_it_was_asked_for() -> None:
    """A stream of searches must not starve the importer of the model."""
    import threading
    import time

    from selfreflect.embed import Turns

    turns, order = Turns(), []

    def take(n: int) -> None:
        with turns:
            order.append(n)

    with turns:
        threads = [threading.Thread(target=take, args=(n,)) for n in range(5)]
        for t in threads:
            t.start()
            time.sleep(0.05)  # each asks after the one before
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3, 4]


def test_the_tokenizer_reads_collapsed_whitespace_as_the_text(embedder: OnnxEmbedder, corpus_store: EdgeStore) -> None:
    """Window vectors place word-pieces by their offsets in the collapsed
    text (what snippets are cut from): it must give the same word-pieces.
    Whitespace only separates them, except the few characters Python splits
    on and the tokenizer drops as control characters."""
    texts = [str(p["text"]) for p in corpus_store.scroll(SearchFilter(), 100_000)]
    texts += [f"tabs\tand  spaces\n\nand{c}more" for c in ("\r\n", "\u00a0", "\u2028", "\u3000", " \t ")]
    for text in texts:
        assert embedder._tokenizer.encode(text).ids == embedder._tokenizer.encode(flatten(text)).ids, text[:80]
    for dropped in ("\x0c", "\x0b", "\x1c", "\x85"):
        text = f"a form{dropped}feed"
        assert embedder._tokenizer.encode(text).ids != embedder._tokenizer.encode(flatten(text)).ids
        assert embedder.embed_windows([text * 40])[1][0].starts == []  # so such a text gets no window vectors


def test_window_vectors_come_from_the_call_that_embeds_the_text(embedder: OnnxEmbedder) -> None:
    """One model call gives the text's vector, unchanged, and its windows':
    each close to its own window embedded alone, not to the others."""
    from dataclasses import replace

    topics = [
        "The container kept getting killed by the kernel, so we raised its memory limit to four gigabytes. ",
        "We renamed the settings page and moved its tabs around so the navigation reads better for users. ",
        "The flaky login test waited on a fixed sleep; it now polls for the session cookie before asserting. ",
    ]
    text = "\n\n".join(t * 2 for t in topics)
    model, calls = replace(embedder), []
    real = model._session

    class Counting:
        def run(self, *args: object) -> object:
            calls.append(1)
            return real.run(*args)

    model._session = Counting()
    vectors, (windows, short) = model.embed_windows([text, "a short one"])
    assert len(calls) == 1
    assert np.array_equal(vectors, embedder.embed([text, "a short one"]))
    own = tiles(flatten(text))
    assert windows.starts == [start for start, _ in own] and len(own) == 3 and short.starts == [0]
    assert np.allclose(np.linalg.norm(windows.vectors, axis=1), 1.0, atol=1e-5)
    alone = embedder.embed([t for _, t in own])
    assert (np.argmax(windows.vectors @ alone.T, axis=1) == [0, 1, 2]).all()


def test_a_text_past_the_model_gets_no_window_vectors(embedder: OnnxEmbedder) -> None:
    """The model does not see the end of it: none of its windows is pooled
    (search embeds them all alone, so their scores compare)."""
    long_text = "the importer survives restarts and keeps its place " * 60
    vectors, (windows,) = embedder.embed_windows([long_text])
    assert embedder.count_tokens([long_text])[0] > embedder.max_tokens and windows.starts == []
    assert np.array_equal(vectors, embedder.embed([long_text]))


def test_unloading_hands_the_model_back_and_the_next_call_loads_it_again() -> None:
    """`import` unloads the model before a compaction's merges: its session
    (weights and arena) goes, and a later call embeds the same as before."""
    code = """
import gc, json, sys
from pathlib import Path
from selfreflect.embed import OnnxEmbedder
from selfreflect.memory import malloc_trim

def anon_mb():
    try:
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("RssAnon:"))
    except OSError:  # not Linux
        return 0.0
    return int(line.split()[1]) / 1024

texts = [f"chunk {i}: how did we fix the docker memory limit " * 20 for i in range(16)]
e = OnnxEmbedder()
before = e.embed(texts)
loaded = anon_mb()
e.unload()
gc.collect()
malloc_trim()
unloaded = anon_mb()
again = e.embed(texts)
print(json.dumps({"freed": loaded - unloaded, "same": bool(abs(again - before).max() < 1e-6)}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["same"]
    if sys.platform.startswith("linux"):  # RssAnon, and malloc_trim, are Linux's
        assert result["freed"] > 20, result  # about 45 MB measured


def test_unloading_the_model_while_other_threads_embed_fails_no_call(embedder: OnnxEmbedder) -> None:
    """An unload between a call's start (model loaded, text tokenized) and its
    turn at the model used to leave that call without a model."""
    import threading

    errors: list[BaseException] = []
    done = threading.Event()
    text = "why does the importer stop on a FIFO under the projects folder " * 30

    def embed() -> None:
        while not done.is_set():
            try:
                embedder.embed([text])
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
                return

    threads = [threading.Thread(target=embed) for _ in range(2)]
    for thread in threads:
        thread.start()
    for _ in range(8):
        embedder.unload()
        done.wait(0.03)
    done.set()
    for thread in threads:
        thread.join()
    assert errors == []
    assert embedder.embed([text]).shape == (1, embedder.dim)
