"""Domain errors. The library raises these; only the CLI turns them into
messages and exit codes."""

from __future__ import annotations


class SelfReflectError(Exception):
    """Base of every error selfreflect reports to a user."""


class ClaudeDirMissing(SelfReflectError):
    """There is no Claude Code folder (or no ``projects/`` in it) where we looked."""


class StoreLocked(SelfReflectError):
    """Another process owns the embedded store."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class ModelMismatch(SelfReflectError):
    """The store was built with another embedding model or dimension."""


class ConfigError(SelfReflectError):
    """A setting has a value we cannot use."""


class NoMatch(ConfigError):
    """A name (a session id or its start, a tool) names nothing indexed, or
    (``several``) more than one thing: ``suggestions`` are the closest names,
    or the candidates."""

    def __init__(self, message: str, suggestions: list[str], several: bool = False) -> None:
        super().__init__(message)
        self.suggestions = suggestions
        self.several = several


class TranscriptNotFound(SelfReflectError):
    """No transcript matches what was asked for, or it has no such line, or
    it is not a Claude Code transcript."""


class Unavailable(SelfReflectError):
    """Something indexing needs is out for now (nothing was written): the same
    work can be done again later, and the daemon pauses and retries it."""


class DiskFull(Unavailable):
    """Too little room on the disk to write safely (nothing was written)."""

    def __init__(self, message: str, free: int = 0) -> None:
        super().__init__(message)
        self.free = free


class EmbedderUnavailable(Unavailable):
    """The embedding service did not embed: unreachable, too slow, refused the
    key, over its rate limit, or failed (nothing was written)."""


class StoreUnavailable(Unavailable):
    """The Qdrant server cannot be reached (or answers that it is not ready)."""
