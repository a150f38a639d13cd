"""Discover: the transcript files under Claude Code's ``projects/`` folder.

Layouts (``reference/claude-code-transcripts.md`` §2):
``projects/<dir>/<session>.jsonl`` (a session), ``projects/<dir>/agent-<id>.jsonl``
(2.0.x sub-agents) and ``projects/<dir>/<session>/subagents/**/agent-<id>.jsonl``
(2.1.x sub-agents, workflows nested deeper). Not transcripts: ``journal.jsonl``
(workflow journals) and ``history.jsonl`` (prompt history).

Anything can appear under ``~/.claude``; the walk never stops, hangs or
recurses on it. It is iterative and bounded in depth (``MAX_DEPTH`` folders
below a session). It does not enter symlinked folders (no loops), and takes
only regular files: a FIFO, a socket or a folder named ``*.jsonl`` is not a
transcript. A symlinked transcript is read when it points at a regular file
inside the projects folder (cited by the link's own path); one pointing
outside, or in a loop, is skipped. A name that is not valid UTF-8 cannot be
stored or cited, so it is skipped too. Everything skipped, and every folder
that cannot be read, is reported to ``report`` (path, reason) once per walk.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from selfreflect.errors import ClaudeDirMissing

ACTIVE_SECONDS = 300  # a file written in the last 5 minutes is a live session
CLEANUP_DAYS = 30  # Claude Code deletes transcripts older than this by default (reference §2)
NOT_TRANSCRIPTS = {"journal.jsonl", "history.jsonl"}
MAX_DEPTH = 32  # folders below <session>/subagents/ that are still walked

Report = Callable[[str, str], None]  # (path, why it was skipped)


@dataclass(frozen=True, slots=True)
class TranscriptFile:
    """One transcript on disk (a daemon holds one for each: 3,000 of them
    took 2.4 MB with their paths made at once, 1.0 MB now).

    Attributes:
        projects_dir: the projects folder it is under.
        key: path relative to the projects folder (stable name for ids).
        session_id: the file stem, or the parent session for 2.1.x sub-agents
            (records may say otherwise; theirs wins).
        agent_id: set for sub-agent transcripts.
        archived: the file is gone (Claude Code's clean-up deleted it): it is
            read from the archive (:mod:`selfreflect.archive`), still cited by
            its own path.
    """

    projects_dir: Path
    key: str
    session_id: str
    agent_id: str | None
    mtime: float
    size: int
    archived: bool = False

    @property
    def path(self) -> Path:
        """The absolute path (made when asked: most are never asked for it)."""
        return self.projects_dir / self.key

    def active(self, now: float) -> bool:
        return now - self.mtime < ACTIVE_SECONDS

    @property
    def tool_results(self) -> Path:
        """``<session>/tool-results/``: where Claude Code 2.1.2+ keeps the
        session's oversized tool output (reference §2)."""
        parts = Path(self.key).parts
        return self.path.parents[len(parts) - 1] / parts[0] / self.session_id / "tool-results"


def discover(projects_dir: Path, now: float | None = None, report: Report | None = None) -> list[TranscriptFile]:
    """Every transcript, live sessions first, then newest first.

    Args:
        projects_dir: Claude Code's ``projects/`` folder.
        now: the time that tells live sessions (default: now).
        report: told of every entry skipped and folder unreadable (path, reason).

    Raises:
        ClaudeDirMissing: ``projects_dir`` does not exist.
    """
    if not projects_dir.is_dir():
        raise ClaudeDirMissing(
            f"no Claude Code transcripts at {projects_dir}: set --claude-dir or "
            "CLAUDE_CONFIG_DIR to the folder that holds projects/"
        )
    now = time.time() if now is None else now
    found = list(_Walk(projects_dir, report or (lambda _path, _why: None)).transcripts())
    found.sort(key=lambda f: (not f.active(now), -f.mtime, f.key))
    return found


def describe(projects_dir: Path, path: Path, st: os.stat_result | None = None) -> TranscriptFile | None:
    """The :class:`TranscriptFile` for ``path``, or ``None`` if it is not one
    (not a regular file, not where transcripts live, vanished)."""
    try:
        rel = path.relative_to(projects_dir)
    except ValueError:
        return None
    if path.suffix != ".jsonl" or path.name in NOT_TRANSCRIPTS or len(rel.parts) < 2:
        return None
    try:
        if st is None and path.is_symlink() and not _inside(projects_dir, path):
            return None
        st = st or path.stat()
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return named(projects_dir, rel.as_posix(), st.st_mtime, st.st_size)


def named(projects_dir: Path, key: str, mtime: float, size: int, archived: bool = False) -> TranscriptFile | None:
    """The :class:`TranscriptFile` at ``key`` (its path under the projects
    folder), or ``None`` if no transcript is named so; the file itself is
    not looked at."""
    parts = key.split("/")  # strings, not paths: a walk of 3,000 transcripts took 56 ms, most of it in pathlib
    if "" in parts or "." in parts or "\\" in key:  # not as the walk writes keys: as a path reads it
        relative = Path(key)
        if relative.anchor:  # "/x.jsonl", "//x.jsonl", a drive on Windows: not under the projects folder
            return None
        key = relative.as_posix()
        parts = key.split("/")
    name = parts[-1]
    stem = name[: -len(".jsonl")]
    if not name.endswith(".jsonl") or not stem or name in NOT_TRANSCRIPTS or len(parts) < 2 or ".." in parts:
        return None
    agent_id = stem[len("agent-") :] if stem.startswith("agent-") else None
    if len(parts) == 2:
        session = stem
    elif "subagents" in parts[2:-1] and agent_id:
        session = parts[1]
    else:
        return None
    return TranscriptFile(projects_dir, key, session, agent_id, mtime, size, archived)


class _Walk:
    """One walk of the projects folder (iterative: no recursion, no loops)."""

    def __init__(self, projects_dir: Path, report: Report) -> None:
        self.root = projects_dir
        self.prefix = os.path.join(projects_dir, "")  # what every path the walk finds starts with
        self.report = report

    def transcripts(self) -> Iterator[TranscriptFile]:
        for project in self._entries(self.root):
            if not _is_dir(project):
                continue
            for entry in self._entries(Path(project.path)):
                if _is_dir(entry):
                    subagents = Path(entry.path) / "subagents"
                    if subagents.is_dir() and not subagents.is_symlink():
                        yield from self._subagents(subagents)
                elif entry.name.endswith(".jsonl"):
                    found = self._transcript(entry)
                    if found:
                        yield found

    def _subagents(self, top: Path) -> Iterator[TranscriptFile]:
        pending: list[tuple[Path, int]] = [(top, 0)]
        while pending:
            folder, depth = pending.pop()
            for entry in self._entries(folder):
                if _is_dir(entry):
                    if depth + 1 > MAX_DEPTH:
                        self.report(entry.path, f"folders nested deeper than {MAX_DEPTH} levels are not walked")
                    else:
                        pending.append((Path(entry.path), depth + 1))
                elif entry.name.startswith("agent-") and entry.name.endswith(".jsonl"):
                    found = self._transcript(entry)
                    if found:
                        yield found

    def _transcript(self, entry: os.DirEntry[str]) -> TranscriptFile | None:
        path = entry.path
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            self.report(repr(os.fsencode(path))[2:-1], "the file name is not valid UTF-8: it cannot be stored or cited")
            return None
        try:
            if entry.is_symlink() and not _inside(self.root, Path(path)):
                self.report(path, f"a symlink to {os.path.realpath(path)}, outside the projects folder")
                return None
            st = os.stat(path)  # follows a symlink: a loop raises ELOOP here
        except (OSError, ValueError) as exc:
            self.report(path, f"cannot be read ({getattr(exc, 'strerror', None) or exc})")
            return None
        if not stat.S_ISREG(st.st_mode):
            self.report(path, "not a regular file (a FIFO, a socket, a device or a folder)")
            return None
        if not path.startswith(self.prefix):
            return describe(self.root, Path(path), st)
        return named(self.root, path[len(self.prefix) :].replace(os.sep, "/"), st.st_mtime, st.st_size)

    def _entries(self, folder: Path) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(folder) as entries:
                return sorted(entries, key=lambda e: e.name)
        except FileNotFoundError:
            return []  # vanished mid-walk: the next scan sees what replaced it
        except OSError as exc:
            self.report(str(folder), f"the folder cannot be read ({exc.strerror or exc})")
            return []


def _inside(projects_dir: Path, link: Path) -> bool:
    """``link`` resolves to somewhere inside the projects folder."""
    root, target = os.path.realpath(projects_dir), os.path.realpath(link)
    return os.path.commonpath([root, target]) == root


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """A real folder (a symlinked one is not entered: it could loop)."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def cleanup_period(claude_dir: Path) -> tuple[int, str]:
    """How many days Claude Code keeps a transcript after its last change,
    and where that was read: ``cleanupPeriodDays`` in
    ``<claude dir>/settings.json`` (read, never written), else the default
    of 30 days (also for a value Claude Code rejects: under 1)."""
    path = claude_dir / "settings.json"
    try:
        settings: Any = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return CLEANUP_DAYS, "the default"
    except (OSError, orjson.JSONDecodeError) as exc:
        return CLEANUP_DAYS, f"the default ({path} cannot be read: {getattr(exc, 'strerror', None) or exc})"
    days = settings.get("cleanupPeriodDays") if isinstance(settings, dict) else None
    if days is None:
        return CLEANUP_DAYS, "the default"
    if isinstance(days, bool) or not isinstance(days, (int, float)) or days < 1:
        return CLEANUP_DAYS, f"the default (cleanupPeriodDays {days!r} in {path} is not a number of days)"
    return int(days), str(path)
