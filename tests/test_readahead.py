"""Reading the store's files ahead of its load in a helper process: what the
helper reads and skips, that it ends with the load, and a store with many
segments loading with it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from selfreflect import readahead
from selfreflect.readahead import read_files, reading_ahead
from selfreflect.store import SearchFilter, edge
from selfreflect.store.edge import EdgeStore

from test_store import DIM, MODEL, find_word, records, segments

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="no helper on Windows (system.READ_AHEAD)")


def children() -> set[int]:
    return {child.pid for child in psutil.Process().children()}


def odd_folder(root: Path) -> int:
    """Files to read, and what a helper must skip; the bytes it should read."""
    (root / "a").mkdir(parents=True)
    (root / "a" / "flags.dat").write_bytes(b"x" * 3000)
    with open(root / "holes.dat", "wb") as sparse:  # mostly holes, as the engine's flag files
        sparse.truncate(2 << 20)
    (root / "other.txt").write_bytes(b"not matched" * 100)
    os.mkfifo(root / "fifo.dat")  # reading it would wait for a writer forever
    os.symlink(root / "loop.dat", root / "loop.dat")  # a symlink loop
    (root / "dir.dat").mkdir()
    return 3000 + (2 << 20)


@posix_only
def test_reads_the_matching_regular_files_and_skips_the_rest(tmp_path: Path) -> None:
    expected = odd_folder(tmp_path)
    assert read_files(tmp_path, "**/*.dat") == expected
    assert read_files(tmp_path / "gone", "**/*.dat") == 0


@posix_only
def test_the_helper_reads_in_a_process_of_its_own_and_ends(tmp_path: Path) -> None:
    odd_folder(tmp_path)
    with reading_ahead(tmp_path, "**/*.dat") as helper:
        assert helper is not None and helper.pid != os.getpid()
        assert helper.wait(timeout=60) == 0  # the FIFO and the loop did not hold it up
    assert helper.pid not in children()


@posix_only
def test_the_helper_is_stopped_when_the_body_ends_first(tmp_path: Path) -> None:
    for i in range(8):  # 4 GB of holes to read: it is still reading when the body ends
        with open(tmp_path / f"{i}.dat", "wb") as sparse:
            sparse.truncate(512 << 20)
    with pytest.raises(RuntimeError), reading_ahead(tmp_path, "*.dat") as helper:
        assert helper is not None
        raise RuntimeError("the load failed")
    assert helper.returncode is not None and helper.returncode != 0  # killed, not finished
    assert helper.pid not in children()


def test_no_folder_no_helper_and_the_body_runs(tmp_path: Path) -> None:
    ran = False
    with reading_ahead(tmp_path / "gone", "*.dat") as helper:
        ran = True
    assert ran and helper is None


@posix_only
def test_a_store_of_many_segments_loads_with_the_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "store"
    with EdgeStore(folder, MODEL, DIM, segment_points=64, merge_points=0) as store:  # sealed, not merged
        for start in range(0, 600, 60):
            store.upsert(records(start, 60))
    assert segments(folder) > 4
    monkeypatch.setattr(edge, "_READ_AHEAD_SEGMENTS", 4)
    helpers = []

    @contextmanager
    def spied(folder: Path, pattern: str) -> Iterator[Any]:  # the real helper, recorded
        with reading_ahead(folder, pattern) as helper:
            helpers.append(helper)
            yield helper

    monkeypatch.setattr(edge, "reading_ahead", spied)
    with EdgeStore(folder, MODEL, DIM, segment_points=64, merge_points=0) as store:
        assert store.count(SearchFilter()) == 600
        assert find_word(store, 123)[0] == 123
    assert len(helpers) == 1 and helpers[0] is not None and helpers[0].returncode is not None
    # what the helper is pointed at holds the engine's null-index flag files
    assert list((folder / "shard" / "segments").glob(edge._NULL_INDEX_FILES))
    assert helpers[0].pid not in children()
    assert readahead.read_files(folder / "shard" / "segments", edge._NULL_INDEX_FILES) > 0
