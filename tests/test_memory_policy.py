"""The memory policy: one owner of the cap and of when memory is given back.

It reads this process's real resident memory and sets caps around it.
"""

from __future__ import annotations

import mmap
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from selfreflect.embed import OnnxEmbedder
from selfreflect.memory import PEAK_MB, MemoryPolicy, release_mapped_pages
from selfreflect.store import Record, SearchFilter

MB = 1024 * 1024


def test_no_cap_never_limits_batches_or_pauses() -> None:
    policy = MemoryPolicy()
    assert policy.cap is None
    assert policy.guard(threading.Event()) is False
    assert policy.batch_limit is None


def test_near_the_cap_batches_shrink_and_memory_is_given_back_without_a_pause() -> None:
    released: list[str] = []
    held = b"\1" * (64 * MB)  # the process's own memory, which nothing gives back
    given_back = MemoryPolicy()
    given_back.before_peak()  # what could be given back is (library code, freed heap, garbage)
    given_back.after_peak()
    rss = MemoryPolicy().rss()
    policy = MemoryPolicy(int(rss / 0.95 / MB) + 1)  # between 85 % of the cap and the cap
    policy.hold(lambda: released.append("store"))
    assert policy.guard(threading.Event()) is False
    assert policy.batch_limit == 1
    assert released  # the store was told to unmap its pages
    roomy = MemoryPolicy(int(rss * 4 / MB))
    roomy.batch_limit = 1
    assert roomy.guard(threading.Event()) is False
    assert roomy.batch_limit is None  # far from the cap again: batches grow back
    assert len(held) == 64 * MB


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pages are handed back on Linux only")
def test_near_the_cap_because_of_mapped_pages_batches_stay_whole(tmp_path: Path) -> None:
    """Pages that searches mapped count in resident memory but go at once:
    when giving them back brings the process well under the cap, batches
    stay whole (the guard used to shrink them to one chunk first)."""
    size = 96 * MB
    path = tmp_path / "segment.dat"
    path.write_bytes(b"\1" * size)
    with path.open("rb") as file, mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) as mapped:
        assert sum(mapped[i] for i in range(0, size, mmap.PAGESIZE)) == size // mmap.PAGESIZE  # a search's reads
        rss = MemoryPolicy().rss()
        policy = MemoryPolicy(int(rss / 0.95 / MB) + 1)  # mapped pages put it between 85 % of the cap and the cap
        policy.hold(lambda: release_mapped_pages(str(tmp_path)))
        policy.batch_limit = 1
        assert policy.guard(threading.Event()) is False
        assert policy.batch_limit is None
        assert policy.rss() < rss - size // 2  # given back
        assert mapped[size - 1] == 1  # and read again


def test_over_the_cap_intake_pauses_once_and_then_goes_on_with_the_smallest_batches() -> None:
    policy = MemoryPolicy(max(1, int(MemoryPolicy().rss() / 3 / MB)))  # the process alone is over it
    stop = threading.Event()
    stop.set()  # a pause ends at once when the daemon stops
    assert policy.guard(stop) is True
    assert policy.batch_limit == 1
    # nothing came back: no second pause for a while, intake goes on one chunk a batch
    assert policy.guard(stop) is False
    assert policy.batch_limit == 1


def test_the_store_gives_back_its_pages_when_the_policy_it_is_given_says(tmp_path) -> None:
    from selfreflect.store import SearchFilter
    from selfreflect.store.edge import EdgeStore

    policy = MemoryPolicy()
    with EdgeStore(tmp_path / "store", "model", 4, memory=policy) as store:
        assert store.memory is policy
        store.count(SearchFilter())  # a read maps the store's pages
        assert store._touched
        policy.after_batch()
        assert not store._touched  # unmapped, through the policy


def _settled_rss() -> int:
    """This process's resident memory once what can be given back is."""
    policy = MemoryPolicy()
    policy.before_peak()
    policy.after_peak()
    return policy.rss()


def test_a_segment_build_goes_without_the_model_only_when_it_could_pass_the_cap() -> None:
    dropped: list[str] = []
    rss = _settled_rss()
    for name, cap_mb in (("no cap", None), ("roomy", rss // MB + 2 * PEAK_MB), ("tight", rss // MB + 10)):
        policy = MemoryPolicy(cap_mb)
        policy.drop_before_peaks(lambda name=name: dropped.append(name))
        policy.before_peak()
    assert dropped == ["tight"]


def test_the_store_drops_the_model_before_building_a_segment_near_the_cap_and_it_loads_again(
    tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    from selfreflect.store.edge import EdgeStore

    query = embedder.embed(["how did we fix the docker memory limit"])
    texts = [f"chunk {i} about docker memory limits and compose files" for i in range(64)]
    points = [
        Record(f"00000000-0000-4000-8000-{i:012d}", v.tolist(), t, {"text": t, "n": i})
        for i, (t, v) in enumerate(zip(texts, embedder.embed(texts), strict=True))
    ]
    policy = MemoryPolicy(_settled_rss() // MB + 10)  # a segment build could pass it
    with EdgeStore(tmp_path / "store", embedder.name, embedder.dim, segment_points=64, memory=policy) as store:
        policy.drop_before_peaks(embedder.unload)
        store.upsert(points[:63])
        assert embedder._session is not None  # no segment built yet
        store.upsert(points[63:])  # the 64th point: the store builds a segment
        assert embedder._session is None
        again = embedder.embed(["how did we fix the docker memory limit"])  # loads the model again
        assert embedder._session is not None
        np.testing.assert_allclose(again, query, atol=1e-6)
        assert store.count(SearchFilter()) == 64


def test_dropping_the_model_while_other_threads_embed_fails_no_call(embedder: OnnxEmbedder) -> None:
    """A drop between a call's start (model loaded, text tokenized) and its
    turn at the model used to leave that call without a model."""
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
