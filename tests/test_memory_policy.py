"""The memory policy: one owner of the cap and of when memory is given back.

It reads this process's real resident memory and sets caps around it.
"""

from __future__ import annotations

import mmap
import sys
import threading
from pathlib import Path

import pytest

from selfreflect.memory import MemoryPolicy, release_mapped_pages

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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="file pages are told apart on Linux only")
def test_over_the_cap_by_file_pages_a_search_keeps_mapped_intake_does_not_pause(tmp_path: Path) -> None:
    """Searches running map the store's pages again as soon as they are
    given back: a pause would hold back new lines and bring nothing back."""
    size = 96 * MB
    path = tmp_path / "segment.dat"
    path.write_bytes(b"\1" * size)
    with path.open("rb") as file, mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) as mapped:
        assert sum(mapped[i] for i in range(0, size, mmap.PAGESIZE)) == size // mmap.PAGESIZE  # mapped, kept
        policy = MemoryPolicy(int((MemoryPolicy().own() + size // 2) / MB))  # over it only with the mapped pages
        assert policy.rss() > policy.cap  # type: ignore[operator]
        stop = threading.Event()
        stop.set()  # a pause would end at once: what is asserted is whether there was one
        assert policy.guard(stop) is False
        assert policy.batch_limit == 1  # near the cap all the same: the smallest batches


def test_over_the_cap_intake_pauses_once_and_then_goes_on_with_the_smallest_batches() -> None:
    policy = MemoryPolicy(max(1, int(MemoryPolicy().own() / 3 / MB)))  # the process alone is over it
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
