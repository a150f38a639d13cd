"""Project identity: a session belongs to the project it was started in.

Claude Code keeps each session in a folder named after the directory
``claude`` was started in (every character that is not a letter or a digit
becomes ``-``: ``/home/me/app`` is ``-home-me-app``), and every record
carries the ``cwd`` of the moment, which changes when Claude ``cd``s into a
subfolder. The project of a session is therefore its first ``cwd`` (where it
was started), never each record's; without any ``cwd`` it is the folder's
name decoded. Never a hash of a name.

Where that folder lies in a git repository that still exists on this
machine, the project is the repository's main working tree: a session
started in a subfolder, or in a linked worktree (``git worktree add``), is
the repository's (``group_repositories``, on by default).

A project is named by the last part of its path, made longer only where two
projects would share a name (``a/app`` and ``b/app``). What a user or Claude
types to choose a project (a name, a path with or without a trailing slash,
the Claude folder's name, in any case, or a folder inside a project) is
resolved against the projects that are indexed; a name that matches none is
an error that names the closest ones.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

from selfreflect.errors import ConfigError
from selfreflect.system import path_name

_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


class ProjectNotFound(ConfigError):
    """No indexed project matches what was asked for."""

    def __init__(self, message: str, suggestions: list[str]) -> None:
        super().__init__(message)
        self.suggestions = suggestions


def folder_name(path: str) -> str:
    """The name Claude Code gives the project folder of ``path``."""
    return _NOT_ALNUM.sub("-", path)


def project_path(first_cwd: str, folder: str) -> str:
    """The project of a session: where it started, else its folder decoded."""
    if first_cwd:
        return _strip(first_cwd) or first_cwd
    return "/" + folder.lstrip("-").replace("-", "/") if folder.startswith("-") else folder


@functools.lru_cache(maxsize=1024)
def repository_root(path: str) -> str | None:
    """The main working tree of the git repository ``path`` lies in (a
    linked worktree's too), or ``None``: not a folder here, not in a
    repository, or no git."""
    if not path or not os.path.isdir(path):
        return None
    try:
        found = subprocess.run(
            ["git", "-C", path, "rev-parse", "--git-common-dir", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=5,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = found.stdout.split("\n")
    if found.returncode != 0 or len(lines) < 2 or not lines[1].strip():
        return None
    common = Path(path, lines[0].strip()).resolve() if not os.path.isabs(lines[0].strip()) else Path(lines[0].strip())
    top = lines[1].strip()
    root = str(common.parent) if common.name == ".git" else top  # a bare repository's worktrees: their own top
    return _strip(root)


def display_names(paths: Iterable[str]) -> dict[str, str]:
    """Each path's readable name: its last part, with as many parents as it
    takes to tell it from the others."""
    paths = sorted(set(paths))
    names: dict[str, str] = {}
    depth = {p: 1 for p in paths}
    while True:
        names = {p: _tail(p, depth[p]) for p in paths}
        clashes = {n for n in names.values() if list(names.values()).count(n) > 1}
        grown = False
        for p in paths:
            if names[p] in clashes and depth[p] < len(_parts(p)):
                depth[p] += 1
                grown = True
        if not grown:
            return names


def resolve(given: str, paths: Iterable[str]) -> list[str]:
    """The indexed project paths ``given`` names (empty: none).

    Tried in order: the path itself (any case, trailing separators and ``~``
    aside); the Claude folder's name; the display name or the last part of a
    path (any case); else the project a given folder lies inside (the
    deepest one).
    """
    paths = list(dict.fromkeys(paths))
    wanted = _strip(os.path.expanduser(given.strip()))
    lowered = wanted.lower()
    found = [p for p in paths if _strip(p).lower() == lowered]
    if not found:
        found = [p for p in paths if folder_name(_strip(p)).lower() == lowered]
    if not found:
        names = display_names(paths)
        found = [p for p in paths if names[p].lower() == lowered or path_name(p).lower() == lowered]
    if not found and ("/" in wanted or "\\" in wanted):
        inside = [p for p in paths if lowered.startswith(_strip(p).lower() + "/")]
        found = sorted(inside, key=len)[-1:]
    if not found and ("/" in wanted or "\\" in wanted):
        root = repository_root(wanted)  # a worktree of an indexed repository
        if root is not None and _strip(root) != wanted:
            found = resolve(root, paths)
    return found


def suggest(given: str, paths: Iterable[str], limit: int = 5) -> list[str]:
    """The indexed projects closest to ``given`` (names, then paths)."""
    names = display_names(paths)
    by_name = {n.lower(): n for n in names.values()}
    close = difflib.get_close_matches(given.lower(), list(by_name), n=limit, cutoff=0.5)
    return [by_name[c] for c in close] or sorted(names.values())[:limit]


def not_found(given: str, paths: Iterable[str]) -> ProjectNotFound:
    paths = list(paths)
    close = suggest(given, paths)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else " (nothing is indexed yet)"
    return ProjectNotFound(f"no indexed project matches {given!r}{hint}", close)


def _strip(path: str) -> str:
    return path.rstrip("/\\") if len(path) > 1 else path


def _parts(path: str) -> list[str]:
    return [p for p in re.split(r"[/\\]", _strip(path)) if p]


def _tail(path: str, depth: int) -> str:
    parts = _parts(path)
    return "/".join(parts[-depth:]) if parts else path
