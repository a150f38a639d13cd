"""Discover: the transcript files under Claude Code's ``projects/`` folder.

Layouts (``reference/claude-code-transcripts.md`` §2):
``projects/<dir>/<session>.jsonl`` (a session), ``projects/<dir>/agent-<id>.jsonl``
(2.0.x sub-agents) and ``projects/<dir>/<session>/subagents/**/agent-<id>.jsonl``
(2.1.x sub-agents, workflows nested deeper). Not transcripts: ``journal.jsonl``
(workflow journals) and ``history.jsonl`` (prompt history).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from selfreflect.errors import ClaudeDirMissing

ACTIVE_SECONDS = 300  # a file written in the last 5 minutes is a live session
NOT_TRANSCRIPTS = {"journal.jsonl", "history.jsonl"}


@dataclass(frozen=True)
class TranscriptFile:
    """One transcript on disk.

    Attributes:
        path: absolute path.
        key: path relative to the projects folder (stable name for ids).
        session_id: the file stem, or the parent session for 2.1.x sub-agents
            (records may say otherwise; theirs wins).
        agent_id: set for sub-agent transcripts.
    """

    path: Path
    key: str
    session_id: str
    agent_id: str | None
    mtime: float
    size: int

    def active(self, now: float) -> bool:
        return now - self.mtime < ACTIVE_SECONDS


def discover(projects_dir: Path, now: float | None = None) -> list[TranscriptFile]:
    """Every transcript, live sessions first, then newest first.

    Raises:
        ClaudeDirMissing: ``projects_dir`` does not exist.
    """
    if not projects_dir.is_dir():
        raise ClaudeDirMissing(
            f"no Claude Code transcripts at {projects_dir}: set --claude-dir or "
            "CLAUDE_CONFIG_DIR to the folder that holds projects/"
        )
    now = time.time() if now is None else now
    found = list(_walk(projects_dir))
    found.sort(key=lambda f: (not f.active(now), -f.mtime, f.key))
    return found


def describe(projects_dir: Path, path: Path) -> TranscriptFile | None:
    """The :class:`TranscriptFile` for ``path``, or ``None`` if it is not one."""
    try:
        rel = path.relative_to(projects_dir)
    except ValueError:
        return None
    if path.suffix != ".jsonl" or path.name in NOT_TRANSCRIPTS or len(rel.parts) < 2:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    agent_id = path.stem[len("agent-") :] if path.stem.startswith("agent-") else None
    if len(rel.parts) == 2:
        session = path.stem
    elif "subagents" in rel.parts[2:-1] and agent_id:
        session = rel.parts[1]
    else:
        return None
    return TranscriptFile(path, rel.as_posix(), session, agent_id, st.st_mtime, st.st_size)


def _walk(projects_dir: Path) -> Iterator[TranscriptFile]:
    for project in _scandir(projects_dir):
        if not project.is_dir():
            continue
        for entry in _scandir(Path(project.path)):
            if entry.is_file() and entry.name.endswith(".jsonl"):
                found = describe(projects_dir, Path(entry.path))
                if found:
                    yield found
            elif entry.is_dir():
                subagents = Path(entry.path) / "subagents"
                if subagents.is_dir():
                    for path in sorted(subagents.rglob("agent-*.jsonl")):
                        found = describe(projects_dir, path)
                        if found:
                            yield found


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError:
        return []  # vanished or unreadable: the next scan sees it again
