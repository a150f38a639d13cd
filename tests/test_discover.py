"""discover.discover / describe: which files under projects/ are transcripts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from selfreflect.discover import NOT_TRANSCRIPTS as NOT_NAMES
from selfreflect.discover import TranscriptFile, describe, discover, named
from selfreflect.errors import ClaudeDirMissing

NOW = 1_750_000_000.0
SESSION = "0bdd2740-b6f7-4e7b-b1c9-f159cc83b104"
PROJECT = "-home-dev-app"

TRANSCRIPTS = {
    # key -> (session_id, agent_id)
    f"{PROJECT}/{SESSION}.jsonl": (SESSION, None),
    f"{PROJECT}/agent-af1ff21.jsonl": ("agent-af1ff21", "af1ff21"),
    f"{PROJECT}/{SESSION}/subagents/agent-a2898e3.jsonl": (SESSION, "a2898e3"),
    f"{PROJECT}/{SESSION}/subagents/workflows/run-7/agent-b77.jsonl": (SESSION, "b77"),
    "-home-dev-other/c45af7b1-cb7c-4e51-93db-8cbb250a877a.jsonl": ("c45af7b1-cb7c-4e51-93db-8cbb250a877a", None),
}
NOT_TRANSCRIPTS = [
    f"{PROJECT}/history.jsonl",
    f"{PROJECT}/journal.jsonl",
    f"{PROJECT}/{SESSION}/subagents/workflows/run-7/journal.jsonl",
    f"{PROJECT}/notes.txt",
    f"{PROJECT}/{SESSION}.jsonl.bak",
    f"{PROJECT}/{SESSION}/tool-results/out.jsonl",
    "history.jsonl",
    "stray.jsonl",
]


def touch(projects: Path, key: str, mtime: float = NOW - 3600) -> Path:
    path = projects / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b'{"type":"user"}\n')
    os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def projects(tmp_path: Path) -> Path:
    root = tmp_path / "claude" / "projects"
    root.mkdir(parents=True)
    for key in [*TRANSCRIPTS, *NOT_TRANSCRIPTS]:
        touch(root, key)
    return root


def test_finds_every_transcript_layout_and_nothing_else(projects: Path) -> None:
    found = discover(projects, now=NOW)
    assert {f.key: (f.session_id, f.agent_id) for f in found} == TRANSCRIPTS
    assert all(f.path == projects / f.key and f.path.is_absolute() for f in found)
    assert all(f.size == len(b'{"type":"user"}\n') and f.mtime == NOW - 3600 for f in found)


def test_recently_written_files_come_first_then_newest_first(projects: Path) -> None:
    keys = list(TRANSCRIPTS)
    ages = {keys[0]: 7200, keys[1]: 60, keys[2]: 900, keys[3]: 240, keys[4]: 30}
    for key, age in ages.items():
        touch(projects, key, NOW - age)

    found = discover(projects, now=NOW)

    assert [f.key for f in found] == sorted(ages, key=ages.__getitem__)
    assert {f.key: f.active(NOW) for f in found} == {key: age < 300 for key, age in ages.items()}


def test_now_decides_what_counts_as_active(projects: Path) -> None:
    found = discover(projects, now=NOW - 3600 + 10)
    assert all(f.active(NOW - 3600 + 10) for f in found)
    assert not any(f.active(NOW) for f in discover(projects, now=NOW))


def test_describe_agrees_with_discover(projects: Path) -> None:
    for found in discover(projects, now=NOW):
        assert describe(projects, found.path) == found


@pytest.mark.parametrize("key", NOT_TRANSCRIPTS)
def test_describe_rejects_what_is_not_a_transcript(projects: Path, key: str) -> None:
    assert describe(projects, projects / key) is None


def test_describe_rejects_files_outside_projects_and_missing_files(projects: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / f"{SESSION}.jsonl"
    outside.parent.mkdir()
    outside.write_bytes(b"{}\n")
    assert describe(projects, outside) is None
    assert describe(projects, projects / PROJECT / "gone.jsonl") is None


def test_empty_projects_dir_has_no_transcripts(tmp_path: Path) -> None:
    assert discover(tmp_path, now=NOW) == []


@pytest.mark.parametrize("make", ["missing", "file"])
def test_missing_projects_dir_raises(tmp_path: Path, make: str) -> None:
    projects = tmp_path / "claude" / "projects"
    if make == "file":
        projects.parent.mkdir()
        projects.write_text("not a folder")
    with pytest.raises(ClaudeDirMissing):
        discover(projects, now=NOW)


@given(
    st.lists(
        st.sampled_from(["p", "-home-dev-app", "subagents", "agent-x", "s", "..", ".", "", "a.b", "run-7"]),
        max_size=4,
    ),
    st.sampled_from(
        ["s.jsonl", "agent-af1.jsonl", "agent-.jsonl", ".jsonl", "x.jsonl.bak", "history.jsonl", "a.b.jsonl", "n"]
    ),
)
@example(["", ""], "s.jsonl")  # "//s.jsonl": a path's anchor on POSIX, not a key under the projects folder
@example([""], "s.jsonl")
def test_a_key_is_read_by_its_strings_as_a_path_would_read_it(folders: list[str], name: str) -> None:
    """The walk names thousands of transcripts by string operations (pathlib
    was most of its time): for any key, what :func:`named` makes of it is
    what reading the key as a path makes of it."""
    key = "/".join([*folders, name])
    projects = Path("/claude/projects")
    assert named(projects, key, 1.0, 2) == read_as_a_path(projects, key)


def read_as_a_path(projects: Path, key: str) -> TranscriptFile | None:
    """What :func:`named` made of a key when it read it with pathlib."""
    rel = Path(key)
    if rel.anchor or rel.suffix != ".jsonl" or rel.name in NOT_NAMES or len(rel.parts) < 2 or ".." in rel.parts:
        return None
    agent_id = rel.stem[len("agent-") :] if rel.stem.startswith("agent-") else None
    if len(rel.parts) == 2:
        session = rel.stem
    elif "subagents" in rel.parts[2:-1] and agent_id:
        session = rel.parts[1]
    else:
        return None
    return TranscriptFile(projects, rel.as_posix(), session, agent_id, 1.0, 2, False)
