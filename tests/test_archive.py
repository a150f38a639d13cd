"""The archive: a compressed copy of every transcript, byte for byte, kept in
step with the read positions, read when Claude Code has deleted the file."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard

from selfreflect.archive import FRAME_BYTES, Archive
from selfreflect.backend import LocalBackend, held
from selfreflect.discover import describe
from selfreflect.embed import OnnxEmbedder
from selfreflect.importer import Importer, ImportSummary
from selfreflect.settings import Settings
from selfreflect.state import State
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore

from conftest import REAL, build_claude_home, make_settings
from daemon_process import run_cli

TINY = REAL / "obra__episodic-memory__tiny-conversation.jsonl"
HEAVY = REAL / "marot__spotter__tool_heavy.jsonl"


def quiet(*paths: Path) -> None:
    """Last written an hour ago: nobody is writing these (archived whole)."""
    then = time.time() - 3600
    for path in paths:
        os.utime(path, (then, then))


def every_transcript(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jsonl"))


def unpack(archived: Path) -> tuple[bytes, int]:
    """An archive decompressed as zstd decompresses it, and how many frames it holds."""
    data, out, frames = archived.read_bytes(), b"", 0
    while data:
        frame = zstandard.ZstdDecompressor().decompressobj()
        out += frame.decompress(data)
        data, frames = frame.unused_data, frames + 1
    return out, frames


def import_once(settings: Settings, embedder: OnnxEmbedder) -> ImportSummary:
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        return Importer(settings, store, embedder, State.load(settings.state_file)).run()


def points(settings: Settings, embedder: OnnxEmbedder) -> dict[str, tuple[Any, ...]]:
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        found = store.scroll(SearchFilter(), 100_000)
    return {p["id"]: (p["transcript"], p["text"], p["line_start"], p["line_end"], p["title"]) for p in found}


def archive_of(settings: Settings, transcript: Path) -> Path:
    return settings.archive_dir / (transcript.relative_to(settings.projects_dir).as_posix() + ".zst")


def test_every_transcript_is_archived_byte_for_byte(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    build_claude_home(settings.claude_dir)
    files = every_transcript(settings.projects_dir)
    quiet(*files)
    import_once(settings, embedder)
    packed = 0
    for path in files:
        data, frames = unpack(archive_of(settings, path))
        assert data == path.read_bytes(), path
        assert frames == 1  # a file nobody writes is archived whole, in one frame
        packed += archive_of(settings, path).stat().st_size
    assert packed * 4 < sum(p.stat().st_size for p in files)
    state = State.load(settings.state_file)
    assert {e.archived for e in state.archive.values()} == {p.stat().st_size for p in files} - {0}


def test_appended_lines_go_into_new_frames_and_only_they(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    lines = HEAVY.read_bytes().splitlines(keepends=True)
    written = b""
    for cut in (10, 25, len(lines)):
        with open(target, "ab") as handle:
            handle.write(b"".join(lines[len(written.splitlines()) : cut]))
        written = b"".join(lines[:cut])
        quiet(target)
        import_once(settings, embedder)
    assert unpack(archive_of(settings, target)) == (HEAVY.read_bytes(), 3)


def test_a_session_being_written_is_archived_in_steps_then_whole(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """Frames of a few lines compress badly: a live session waits for 1 MB
    more, or for the file to go quiet."""
    settings = make_settings(tmp_path)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    shutil.copyfile(HEAVY, target)  # written just now
    import_once(settings, embedder)
    assert not archive_of(settings, target).exists()
    big = REAL / "obra__episodic-memory__large-conversation.jsonl"
    assert big.stat().st_size > FRAME_BYTES
    with open(target, "ab") as handle:
        handle.write(big.read_bytes())
    import_once(settings, embedder)
    data, frames = unpack(archive_of(settings, target))  # a step of 1 MB of complete lines
    assert frames == 1 and len(data) >= FRAME_BYTES and data.endswith(b"\n") and target.read_bytes().startswith(data)
    with open(target, "ab") as handle:
        handle.write(TINY.read_bytes())
    import_once(settings, embedder)
    assert unpack(archive_of(settings, target)) == (data, 1)  # under 1 MB more: not yet
    quiet(target)
    import_once(settings, embedder)  # nothing new to index; the archive catches up
    assert unpack(archive_of(settings, target)) == (target.read_bytes(), 2)


@pytest.mark.parametrize("torn", [False, True])
def test_a_frame_written_after_the_last_save_is_not_kept_twice(
    tmp_path: Path, embedder: OnnxEmbedder, torn: bool
) -> None:
    """What a kill -9 between writing a frame and saving the positions leaves
    (the frame whole, or torn mid-write): the next run writes those bytes
    again, once."""
    settings = make_settings(tmp_path)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    lines = HEAVY.read_bytes().splitlines(keepends=True)
    target.write_bytes(b"".join(lines[:20]))
    quiet(target)
    import_once(settings, embedder)
    with open(target, "ab") as handle:
        handle.write(b"".join(lines[20:]))
    quiet(target)
    # the crash: a frame is written and synced, the process dies before the state is saved
    saved = State.load(settings.state_file).archive["-p/s.jsonl"]
    transcript = describe(settings.projects_dir, target)
    assert transcript is not None
    unsaved = Archive(settings.archive_dir, settings.projects_dir).append(transcript, saved, target.stat().st_size)
    assert unsaved.size > saved.size and State.load(settings.state_file).archive["-p/s.jsonl"] == saved
    if torn:
        with open(archive_of(settings, target), "r+b") as handle:
            handle.truncate(saved.size + (unsaved.size - saved.size) // 2)
    # read meanwhile (show, a reindex): the whole lines there are, the torn frame ends the data
    read = [line.data for line in Archive(settings.archive_dir, settings.projects_dir).read_lines("-p/s.jsonl")]
    whole = [line.rstrip(b"\n") for line in lines]
    assert len(read) >= 20 and read[:-1] == whole[: len(read) - 1] and whole[len(read) - 1].startswith(read[-1])
    import_once(settings, embedder)
    assert unpack(archive_of(settings, target)) == (HEAVY.read_bytes(), 2)


def test_a_damaged_archive_is_written_anew(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    lines = HEAVY.read_bytes().splitlines(keepends=True)
    target.write_bytes(b"".join(lines[:20]))
    quiet(target)
    import_once(settings, embedder)
    archive_of(settings, target).write_bytes(b"")  # shorter than the state says
    with open(target, "ab") as handle:
        handle.write(b"".join(lines[20:]))
    quiet(target)
    import_once(settings, embedder)
    assert unpack(archive_of(settings, target)) == (HEAVY.read_bytes(), 1)


def test_a_replaced_transcript_is_archived_anew(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    shutil.copyfile(HEAVY, target)
    quiet(target)
    import_once(settings, embedder)
    staged = tmp_path / "staged.jsonl"
    shutil.copyfile(TINY, staged)
    staged.replace(target)  # a new file (another inode) at the same path
    quiet(target)
    import_once(settings, embedder)
    assert unpack(archive_of(settings, target)) == (TINY.read_bytes(), 1)


def place(settings: Settings, *sources: Path) -> None:
    """``sources`` as transcripts of projects of their own, nobody writing them."""
    for source in sources:
        target = settings.projects_dir / f"-home-dev-{source.stem.split('__')[1]}" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        quiet(target)


def test_deleted_transcripts_stay_searchable_and_readable(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path)
    place(settings, HEAVY, TINY)  # the other project stays on disk
    import_once(settings, embedder)
    before = points(settings, embedder)
    target = next(p for p in every_transcript(settings.projects_dir) if p.name == HEAVY.name)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        backend = LocalBackend(settings, embedder, lambda: held(store))
        on_disk = backend.read_conversation(f"{target}:12-13", None, 2, 2)
        shutil.rmtree(target.parent)  # Claude Code's clean-up took the project
        archived = backend.read_conversation(f"{target}:12-13", None, 2, 2)
    assert archived == on_disk and [x["line"] for x in archived["lines"]] == [10, 11, 12, 13, 14, 15]
    assert "Phoenix server is starting" in archived["lines"][2]["text"]
    summary = import_once(settings, embedder)  # the importer notices nothing to do, deletes nothing
    assert summary.lines == 0 and points(settings, embedder) == before


def test_reindex_rebuilds_the_index_from_the_archive_alone(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """Claude Code deleted every transcript: `reindex` reads them all from
    the archive, cited by their own paths and lines; reflections come back too."""
    claude, data = tmp_path / "claude", tmp_path / "data"
    build_claude_home(claude)
    files = every_transcript(claude / "projects")
    quiet(*files)
    assert run_cli(claude, data, "import").returncode == 0
    settings = make_settings(tmp_path)
    before = points(settings, embedder)
    shutil.rmtree(claude / "projects")
    done = run_cli(claude, data, "reindex")
    assert done.returncode == 0, done.stderr
    assert f"Rebuilt the index: {len(files)} transcripts" in done.stdout
    after = points(settings, embedder)
    assert after == before
    shown = run_cli(claude, data, "show", f"{claude / 'projects' / '-home-dev-marot-spotter' / HEAVY.name}:12")
    assert shown.returncode == 0, shown.stderr
    assert "Phoenix server is starting" in shown.stdout


def test_no_archive_when_it_is_switched_off(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    settings = make_settings(tmp_path, archive=False)
    place(settings, HEAVY, TINY)
    assert import_once(settings, embedder).lines > 0
    assert not settings.archive_dir.exists()
    assert State.load(settings.state_file).archive == {}


def test_the_daemon_archives_and_reads_deleted_transcripts(tmp_path: Path) -> None:
    """Over HTTP and MCP: a transcript Claude Code deleted stays searchable,
    its lines are read from the archive, and status tells the archive and the
    clean-up to come."""
    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.types import TextContent

    from daemon_process import DaemonProcess, eventually

    home = tmp_path / "claude"
    folder = home / "projects" / "-live"
    folder.mkdir(parents=True)
    target, other = folder / HEAVY.name, folder / TINY.name
    shutil.copyfile(HEAVY, target)
    shutil.copyfile(TINY, other)
    quiet(other)
    old = time.time() - 28 * 86400  # Claude Code deletes it in 2 days (cleanupPeriodDays 30)
    os.utime(target, (old, old))
    with DaemonProcess(home, tmp_path / "data", WATCH_INTERVAL="1") as daemon:
        daemon.wait_idle()
        status = daemon.get("/api/status")
        assert status["archive"]["transcripts"] == 2 and status["archive"]["only_in_archive"] == 0
        assert (status["cleanup"]["period_days"], status["cleanup"]["due"], status["cleanup"]["archived"]) == (30, 1, 1)
        assert status["cleanup"]["transcripts"][0]["transcript"] == str(target)
        target.unlink()
        time.sleep(1.0)  # the deletion's file event is handled
        assert daemon.get("/healthz")["status"] == "ok"
        assert any(r["transcript"] == str(target) for r in daemon.search("Phoenix server background", limit=20))
        answer = daemon.get("/api/conversation", session_id=f"{target}:12", before=0, after=0)
        assert [x["line"] for x in answer["lines"]] == [12] and "Phoenix server" in answer["lines"][0]["text"]
        assert daemon.get("/api/status")["archive"]["only_in_archive"] == 1

        async def over_mcp() -> tuple[Any, str]:
            async with streamable_http_client(daemon.url + "/mcp") as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    read_back = await session.call_tool("read_conversation", {"session_id": f"{target}:12-13"})
                    assert not read_back.is_error
                    status = await session.call_tool("status", {})
                    text = "\n".join(c.text for c in status.content if isinstance(c, TextContent))
                    return read_back.structured_content, text

        around, text = anyio.run(over_mcp)
        assert [x["line"] for x in around["lines"]][5:7] == [12, 13]
        assert "archive:     " in text and "1 only there (deleted by Claude Code)" in text
        assert "clean-up:    Claude Code deletes after 30 days (the default): none within 7 days" in text
        # a new session is archived once nobody writes it any more
        fresh = folder / "fresh.jsonl"
        shutil.copyfile(TINY, fresh)
        eventually(lambda: any(r["transcript"] == str(fresh) for r in daemon.search("Proactiveness", limit=20)))
        archived = archive_of(make_settings(tmp_path), fresh)
        assert not archived.exists()
        live = folder / "live.jsonl"  # deleted while it is written, before it is archived: its chunks stay
        shutil.copyfile(HEAVY, live)
        eventually(lambda: any(r["transcript"] == str(live) for r in daemon.search("Phoenix server", limit=20)))
        live.unlink()
        gone = httpx.get(daemon.url + "/api/conversation", params={"session_id": f"{live}:12"}, timeout=30)
        assert gone.status_code == 404 and "no longer on disk" in gone.json()["error"]
        assert "and not archived" in gone.json()["error"]
        assert any(r["transcript"] == str(live) for r in daemon.search("Phoenix server", limit=20))
        quiet(fresh)
        eventually(lambda: archived.exists() and unpack(archived) == (TINY.read_bytes(), 1))
        assert daemon.stop() == 0


def test_the_daemons_status_follows_the_file_events_between_its_scans(tmp_path: Path) -> None:
    """A daemon's status reads the transcripts as its importer knows them (no
    walk a call): a deletion and a new transcript show before the next full
    scan (an hour away here), and the archive's size, as the state records
    it, is the archive files' on disk."""
    from daemon_process import DaemonProcess, eventually

    home = tmp_path / "claude"
    folder = home / "projects" / "-p"
    folder.mkdir(parents=True)
    for name, age in [("kept.jsonl", 3600), ("due.jsonl", 28 * 86400)]:  # deleted in 2 days (30 by default)
        shutil.copyfile(TINY, folder / name)
        os.utime(folder / name, (time.time() - age, time.time() - age))
    on_disk = tmp_path / "data" / "archive"

    def status() -> dict[str, Any]:
        return dict(daemon.get("/api/status"))

    def as_on_disk(report: dict[str, Any]) -> bool:  # once nothing is being archived
        archives = list(on_disk.rglob("*.zst"))
        return (report["archive"]["transcripts"], report["archive"]["bytes"]) == (
            len(archives),
            sum(a.stat().st_size for a in archives),
        )

    def scans() -> int:
        return int(daemon.get("/metrics").split("\nselfreflect_rescans_total ")[1].split()[0])

    with DaemonProcess(home, tmp_path / "data", WATCH_INTERVAL="3600") as daemon:
        daemon.wait_idle()
        eventually(lambda: scans() >= 2)  # at start, and when the watcher watches: from then on, its events
        first = status()
        assert (first["archive"]["transcripts"], first["archive"]["only_in_archive"]) == (2, 0) and as_on_disk(first)
        assert [Path(t["transcript"]).name for t in first["cleanup"]["transcripts"]] == ["due.jsonl"]
        (folder / "due.jsonl").unlink()  # Claude Code's clean-up
        eventually(lambda: status()["archive"]["only_in_archive"] == 1)
        assert status()["cleanup"]["due"] == 0
        late = tmp_path / "late.jsonl"  # a session last written 27 days ago, moved in
        shutil.copyfile(TINY, late)
        os.utime(late, (time.time() - 27 * 86400, time.time() - 27 * 86400))
        late.rename(folder / late.name)
        eventually(lambda: status()["archive"]["transcripts"] == 3)
        assert as_on_disk(status())
        cleanup = status()["cleanup"]
        assert [(Path(t["transcript"]).name, t["archived"]) for t in cleanup["transcripts"]] == [("late.jsonl", True)]
        assert scans() == 2
        assert daemon.stop() == 0


def test_status_tells_what_the_clean_up_will_delete_and_if_it_is_archived(tmp_path: Path) -> None:
    """``cleanupPeriodDays`` from Claude Code's settings.json (read, never
    written): transcripts past it within 7 days, and whether each is archived."""
    import json

    from click.testing import CliRunner

    from selfreflect.cli import cli

    claude = Path(os.environ["CLAUDE_CONFIG_DIR"])
    folder = claude / "projects" / "-p"
    folder.mkdir(parents=True)
    settings_file = claude / "settings.json"
    settings_file.write_text('{"cleanupPeriodDays": 10, "model": "opus"}')
    ages = {"overdue.jsonl": 12, "soon.jsonl": 5, "recent.jsonl": 1}
    for name, days in ages.items():
        shutil.copyfile(TINY, folder / name)
        then = time.time() - days * 86400
        os.utime(folder / name, (then, then))
    assert CliRunner().invoke(cli, ["import"]).exit_code == 0
    late = folder / "late.jsonl"  # written since the import: not archived yet
    shutil.copyfile(TINY, late)
    then = time.time() - 4 * 86400
    os.utime(late, (then, then))
    result = CliRunner().invoke(cli, ["status", "--json"])
    cleanup = json.loads(result.stdout)["cleanup"]
    assert (cleanup["period_days"], cleanup["period_from"]) == (10, str(settings_file))
    assert (cleanup["due"], cleanup["archived"], cleanup["not_archived"]) == (3, 2, 1)
    listed = {Path(t["transcript"]).name: t["archived"] for t in cleanup["transcripts"]}
    assert listed == {"overdue.jsonl": True, "soon.jsonl": True, "late.jsonl": False}
    text = CliRunner().invoke(cli, ["status"]).stdout
    assert f"Claude Code deletes after 10 days (cleanupPeriodDays in {settings_file})" in text
    assert ": 3 transcripts within 7 days, 2 archived, 1 not yet" in text
    assert settings_file.read_text() == '{"cleanupPeriodDays": 10, "model": "opus"}'  # never written
    settings_file.write_text('{"cleanupPeriodDays": 0}')  # rejected by Claude Code: its default holds
    cleanup = json.loads(CliRunner().invoke(cli, ["status", "--json"]).stdout)["cleanup"]
    assert cleanup["period_days"] == 30 and "is not a number of days" in cleanup["period_from"]
    assert cleanup["due"] == 0


def test_an_archive_that_cannot_be_written_does_not_stop_the_index(
    tmp_path: Path, embedder: OnnxEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    shutil.copyfile(HEAVY, target)
    quiet(target)
    settings.data_dir.mkdir(parents=True)
    settings.archive_dir.write_text("not a folder")  # as a full disk or a read-only folder would refuse it
    summary = import_once(settings, embedder)
    assert summary.chunks > 0 and summary.failed_files == []
    assert "cannot archive it" in caplog.text
    assert State.load(settings.state_file).archive == {}  # nothing recorded: the next read tries again
    settings.archive_dir.unlink()
    import_once(settings, embedder)
    assert unpack(archive_of(settings, target)) == (HEAVY.read_bytes(), 1)


PRIVATE_PROMPTS = [
    "deploy it <private>the vault code is zebra-quasar-7741</private> now",
    'quote <PRIVATE>say "zebra-quasar" \\ twice</Private> and go on',
    "an unclosed <private>zebra-quasar to the end of the prompt",
]


def test_what_is_marked_private_stays_out_of_the_archive(tmp_path: Path, embedder: OnnxEmbedder) -> None:
    """As it stays out of the index: each byte of a <private> span becomes
    ``*`` (the same length: offsets and line numbers are the transcript's),
    and every line is still the JSON it was."""
    import orjson

    settings = make_settings(tmp_path)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    prompts = [
        {"type": "user", "uuid": f"u{n}", "sessionId": "s", "cwd": "/home/me/app", "timestamp": "2026-03-01T10:00:00Z",
         "message": {"role": "user", "content": text}}
        for n, text in enumerate(PRIVATE_PROMPTS)
    ]  # fmt: skip
    target.write_bytes(TINY.read_bytes() + b"".join(orjson.dumps(p) + b"\n" for p in prompts))
    quiet(target)
    import_once(settings, embedder)
    archived, _ = unpack(archive_of(settings, target))
    original = target.read_bytes()
    assert len(archived) == len(original) and b"zebra-quasar" in original and b"zebra-quasar" not in archived
    assert archived.startswith(TINY.read_bytes())
    texts = [orjson.loads(line)["message"]["content"] for line in archived.splitlines()[-3:]]
    assert texts[0] == "deploy it <private>" + "*" * len("the vault code is zebra-quasar-7741") + "</private> now"
    assert texts[1].startswith("quote <PRIVATE>*") and texts[1].endswith("*</Private> and go on")
    assert texts[2] == "an unclosed <private>" + "*" * len("zebra-quasar to the end of the prompt")
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        backend = LocalBackend(settings, embedder, lambda: held(store))
        target.unlink()
        shown = backend.read_conversation(f"{target}:8-10", None, 0, 0)
    assert [x["text"] for x in shown["lines"]] == [
        "User: deploy it [PRIVATE] now",
        "User: quote [PRIVATE] and go on",
        "User: an unclosed [PRIVATE]",
    ]


def test_the_private_mask_does_not_care_where_blocks_end() -> None:
    from selfreflect.archive import PrivateMask

    raw = b"".join(
        b'{"a":"x<private>s\\"ecret\\\\</private>y","b":"<Private>open"}\n{"c":"<priv ate>z"}\n' for _ in range(3)
    )
    whole = PrivateMask().mask(raw, last=True)
    assert len(whole) == len(raw) and b"ecret" not in whole and b"open" not in whole and b"<priv ate>z" in whole
    for size in (1, 2, 3, 5, 9, 10, 11, 64):
        mask = PrivateMask()
        pieces = [mask.mask(raw[i : i + size]) for i in range(0, len(raw), size)]
        assert b"".join(pieces) + mask.mask(b"", last=True) == whole, size


def test_a_damaged_archive_of_a_deleted_transcript_is_read_up_to_the_damage(
    tmp_path: Path, embedder: OnnxEmbedder
) -> None:
    from selfreflect.errors import TranscriptNotFound

    settings = make_settings(tmp_path)
    target = settings.projects_dir / "-p" / "s.jsonl"
    target.parent.mkdir(parents=True)
    shutil.copyfile(HEAVY, target)
    quiet(target)
    import_once(settings, embedder)
    target.unlink()
    archived = archive_of(settings, target)
    damaged = bytearray(archived.read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 64] = b"\xff" * 64
    archived.write_bytes(bytes(damaged))
    shutil.rmtree(settings.store_dir)  # a reindex: read what can be read, from the archive
    summary = import_once(settings, embedder)
    assert summary.failed_files == [] and summary.files == 1
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        backend = LocalBackend(settings, embedder, lambda: held(store))
        try:
            backend.read_conversation(f"{target}:30", None, 0, 0)
        except TranscriptNotFound as exc:
            assert "past its end" in str(exc) or "not a Claude Code transcript" in str(exc)
    archived.write_bytes(b"not zstd at all\n")
    shutil.rmtree(settings.store_dir)
    assert import_once(settings, embedder).failed_files == []
