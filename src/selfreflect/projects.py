"""Project identity: a session belongs to the project it was started in.

Claude Code keeps each session in a folder named after the directory
``claude`` was started in (every character that is not a letter or a digit
becomes ``-``: ``/home/me/app`` is ``-home-me-app``), and every record
carries the ``cwd`` of the moment, which changes when Claude ``cd``s into a
subfolder. The project of a session is therefore its first ``cwd`` (where it
was started), never each record's; without any ``cwd`` it is the folder's
name decoded. Never a hash of a name.

A project is named by the last part of its path, made longer only where two
projects would share a name (``a/app`` and ``b/app``). What a user or Claude
types to choose a project (a name, a path with or without a trailing slash,
the Claude folder's name, in any case, or a folder inside a project) is
resolved against the projects that are indexed; a name that matches none is
an error that names the closest ones.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable

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
