"""Nothing stops the importer: hostile files, filesystem oddities, a full
disk, bad requests. Real files, real processes, a real small tmpfs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from selfreflect.embed import OnnxEmbedder
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore
from selfreflect.tail import read_lines

from conftest import REAL
from daemon_process import DaemonProcess, eventually
from daemon_process import run_cli as cli

pytestmark = pytest.mark.timeout(300)

TINY = REAL / "obra__episodic-memory__tiny-conversation.jsonl"
SHORT = REAL / "marot__spotter__short.jsonl"


def fill(disk: Path, leave_mb: int) -> Path:
    """Take all of ``disk``'s free space but ``leave_mb``; returns the filler."""
    filler = disk / "filler"
    size = shutil.disk_usage(disk).free - (leave_mb << 20)
    subprocess.run(["fallocate", "-l", str(size), str(filler)], check=True)
    return filler


def indexed_transcripts(data: Path, embedder: OnnxEmbedder) -> dict[str, int]:
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        return {str(v): n for v, n in store.facet("transcript", SearchFilter(), 1000)}


def hostile_home(root: Path) -> tuple[Path, list[Path]]:
    """A Claude home full of things that are not transcripts, and the real
    transcripts among them that must still be indexed."""
    home = root / "claude"
    project = home / "projects" / "-p"
    session = project / "0d5c4d0a-0000-4000-8000-000000000001"
    subagents = session / "subagents"
    subagents.mkdir(parents=True)
    good = [project / "a.jsonl", project / "we\nird name.jsonl", subagents / "agent-ok.jsonl"]
    for path in good:
        shutil.copyfile(TINY, path)
    (project / "n.jsonl").symlink_to("n.jsonl")  # a symlink loop named like a transcript
    (project / "loop").symlink_to(".")  # a folder loop
    (subagents / "back").symlink_to("..")  # another, below a session
    os.mkfifo(project / "fifo.jsonl")
    os.mkfifo(subagents / "agent-fifo.jsonl")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(project / "sock.jsonl"))
    sock.close()
    (project / "x.jsonl").mkdir()  # a folder named like a transcript
    (project / "gone.jsonl").symlink_to(root / "missing.jsonl")  # dangling
    outside = root / "outside.jsonl"
    shutil.copyfile(SHORT, outside)
    (project / "outside.jsonl").symlink_to(outside)  # points outside the projects folder
    (project / "inside.jsonl").symlink_to(project / "a.jsonl")  # points inside: read, cited as the link
    good.append(project / "inside.jsonl")
    fd = os.open(os.fsencode(project) + b"/bad-\xff\xfe.jsonl", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, TINY.read_bytes())
    os.close(fd)
    deep = str(subagents)
    for _ in range(1100):  # deeper than any walk goes, and than Python's recursion limit
        deep += "/d"
        os.mkdir(deep)  # one level at a time: makedirs itself recurses
    shutil.copyfile(TINY, Path(deep) / "agent-deep.jsonl")
    return home, good


def remove_deep(folder: Path) -> None:
    """Remove a tree deeper than ``shutil.rmtree`` (which recurses) can."""
    stack = [str(folder)]
    while stack:
        top = stack[-1]
        with os.scandir(top) as entries:
            children = list(entries)
        dirs = [e.path for e in children if e.is_dir(follow_symlinks=False)]
        for entry in children:
            if not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.path)
        if dirs:
            stack.extend(dirs)
        else:
            os.rmdir(stack.pop())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and sockets are POSIX")
def test_filesystem_oddities_are_skipped_and_reported(
    tmp_path: Path, embedder: OnnxEmbedder, request: pytest.FixtureRequest
) -> None:
    home, good = hostile_home(tmp_path)
    request.addfinalizer(lambda: remove_deep(home / "projects" / "-p"))
    data = tmp_path / "data"
    done = cli(home, data, "import")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "entries skipped (not transcripts we can read)" in done.stdout
    for reason in (
        "not a regular file",
        "outside the projects folder",
        "is not valid UTF-8",
        "cannot be read",
        "folders nested deeper than",
    ):
        assert reason in done.stderr, reason
    assert set(indexed_transcripts(data, embedder)) == {str(p) for p in good}
    again = cli(home, data, "import")  # and on every run after
    assert again.returncode == 0 and again.stdout.startswith("Nothing new: 4 transcripts")

    with DaemonProcess(home, tmp_path / "served") as daemon:  # the daemon starts and serves beside them
        health = daemon.wait_idle(timeout=120)
        assert health["status"] == "ok" and health["skipped_entries"] >= 8
        (home / "projects" / "-p" / "late-loop.jsonl").symlink_to("late-loop.jsonl")  # appearing while it runs
        os.mkfifo(home / "projects" / "-p" / "late-fifo.jsonl")
        shutil.copyfile(SHORT, home / "projects" / "-p" / "late.jsonl")
        eventually(lambda: any(r["transcript"].endswith("late.jsonl") for r in daemon.search("model", limit=50)))
        assert daemon.get("/healthz")["status"] == "ok"
        assert daemon.stop() == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_a_fifo_swapped_in_after_discovery_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "s.jsonl"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(OSError, match="not a regular file"):
        list(read_lines(fifo))
    assert time.monotonic() - started < 5


def test_hostile_lines_do_not_stop_the_lines_after_them(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    home = tmp_path / "claude"
    project = home / "projects" / "-p"
    project.mkdir(parents=True)
    lines = TINY.read_bytes().splitlines(keepends=True)
    hostile = [
        b'{"type":"user","uuid":"s1","sessionId":"x","message":{"role":"user","content":"hi \\ud800 there"}}\n',
        b'{"type":"user","message":{"content":' + b"[" * 1100 + b"]" * 1100 + b"}}\n",
        b'{"type":"assistant","uuid":"b1","message":{"content":"bad \xff\xfe bytes"}}\n',
        b"\x00" * 64 + b"\n",
        b'{"type":"user","uuid":7,"message":{"role":["x"],"content":{"a":1}},"cwd":12,"timestamp":[]}\n',
        b'{"type": "user", "message": "' + b"9" * 5000 + b'"}\n',
    ]
    (project / "s.jsonl").write_bytes(
        b"".join(hostile[:3]) + b"".join(lines[:3]) + b"".join(hostile[3:]) + b"".join(lines[3:])
    )
    done = cli(home, tmp_path / "data", "import")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    with EdgeStore(tmp_path / "data" / "store", embedder.name, embedder.dim).open() as store:
        texts = " ".join(p["text"] for p in store.scroll(SearchFilter(), 1000))
    assert "Proactiveness" in texts and "bureaucrat" in texts  # lines before and after the hostile ones
    assert "hi \ufffd" in texts and "bad \ufffd" in texts  # what cannot be text becomes U+FFFD, the rest stays


def test_a_full_disk_is_a_message_and_nothing_is_lost(tmp_path: Path, small_disk: Path, embedder: OnnxEmbedder) -> None:
    """No SIGBUS: the store checks for room before it writes; the positions
    do not move; once there is room the import ends as a clean one."""
    home = tmp_path / "claude"
    (home / "projects" / "-p").mkdir(parents=True)
    for source in sorted(REAL.glob("*.jsonl")):
        shutil.copyfile(source, home / "projects" / "-p" / source.name)
    data = small_disk / "data"
    filler = fill(small_disk, leave_mb=66)  # room for a few batches, then under the 64 MB the store asks for
    full = cli(home, data, "import", SELFREFLECT_SEGMENT_POINTS="48")
    assert full.returncode == 1, full.stderr
    assert "MB free; the store needs 64 MB to write safely" in full.stderr
    assert "Traceback" not in full.stderr
    for args in (["status"], ["search", "x"], ["import"]):
        answer = cli(home, data, *args)
        assert answer.returncode == 1 and "MB free" in answer.stderr, (args, answer.returncode, answer.stderr)
    filler.unlink()
    done = cli(home, data, "import", SELFREFLECT_SEGMENT_POINTS="48")
    assert done.returncode == 0, done.stderr
    clean = cli(home, tmp_path / "clean", "import", SELFREFLECT_SEGMENT_POINTS="48")
    assert clean.returncode == 0
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as a:
        after = {p["id"]: p["text"] for p in a.scroll(SearchFilter(), 100_000)}
    with EdgeStore(tmp_path / "clean" / "store", embedder.name, embedder.dim).open() as b:
        expected = {p["id"]: p["text"] for p in b.scroll(SearchFilter(), 100_000)}
    assert after == expected


def test_the_daemon_pauses_on_a_full_disk_and_says_so(tmp_path: Path, small_disk: Path) -> None:
    home = tmp_path / "claude"
    (home / "projects" / "-p").mkdir(parents=True)
    with DaemonProcess(home, small_disk / "data") as daemon:
        daemon.wait_idle()
        filler = fill(small_disk, leave_mb=40)
        shutil.copyfile(TINY, home / "projects" / "-p" / "a.jsonl")
        failing = eventually(lambda: (r := httpx.get(daemon.url + "/healthz")).status_code == 503 and r, 30)
        assert any("writing paused" in p and "MB free" in p for p in failing.json()["problems"])
        assert "\nselfreflect_store_faults_total 0\n" not in "\n" + daemon.get("/metrics")
        filler.unlink()
        eventually(lambda: httpx.get(daemon.url + "/healthz").status_code == 200, 60)
        eventually(lambda: daemon.search("Proactiveness"), 30)
        assert daemon.stop() == 0


def test_requests_out_of_bounds_are_400s_not_500s(tmp_path: Path) -> None:
    home = tmp_path / "claude"
    (home / "projects" / "-p").mkdir(parents=True)
    shutil.copyfile(TINY, home / "projects" / "-p" / "a.jsonl")
    with DaemonProcess(home, tmp_path / "data") as daemon:
        daemon.wait_idle()
        url = daemon.url
        for since in ("99999999999y", "0001-01-01T00:00:00+14:00", "someday"):
            answer = httpx.get(url + "/api/search", params={"q": "x", "since": since})
            assert answer.status_code == 400 and answer.json()["error"], since
        for body in ({"content": "x", "tags": [1, None]}, {"content": "x", "cwd": 123}, {"tags": []}, [1], "x"):
            answer = httpx.post(url + "/api/reflections", json=body)
            assert answer.status_code == 400, body
        answer = httpx.post(
            url + "/api/reflections", content=b"{" * 100_000, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400
        answer = httpx.post(url + "/api/reflections", json={"content": "x" * 300_000})
        assert answer.status_code == 413
        assert httpx.get(url + "/api/search", params={"q": "x" * 9000}).status_code == 414
        for params in ({"path": "a.py", "limit": "100000000"}, {"path": "a.py", "limit": "x"}):
            assert httpx.get(url + "/api/by-file", params=params).status_code == 400
        answer = httpx.get(url + "/api/conversation", params={"session_id": "x", "line": "nope"})
        assert answer.status_code == 400
        assert daemon.get("/healthz")["status"] == "ok"
        assert daemon.stop() == 0
