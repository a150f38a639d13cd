"""selfreflect: a searchable memory of Claude Code's own past conversations."""

__version__ = "0.1.0"
