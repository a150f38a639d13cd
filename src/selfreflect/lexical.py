"""Lexical: the text the BM25 index sees, shaped for code identifiers.

The BM25 tokenizer splits on every non-alphanumeric character, so
``to_relative_path`` becomes three common words and an exact-identifier
search loses to any chunk about "relative paths". We add each compound
identifier once more as one joined token (``torelativepath``), and split
camelCase ones into their words (``useSimpleTodos`` -> ``use simple todos``),
to chunks and queries alike: the joined token is rare, so an exact match
ranks first, and the parts still match a looser query.
"""

from __future__ import annotations

import re

# snake_case, dotted.names, kebab-case, path/parts, Module::fn, ERR_CODES
_COMPOUND = re.compile(r"[A-Za-z0-9]+(?:(?:[_.\-/]|::)[A-Za-z0-9]+)+")
_CAMEL = re.compile(r"\b[a-z]+[A-Z][A-Za-z0-9]*\b|\b[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*\b")
_CAMEL_PART = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
MAX_EXTRA = 2000  # extra terms per text at most: a dump of paths must not swamp the prose


def lexical_text(text: str) -> str:
    """``text`` plus joined compound identifiers and split camelCase words."""
    extra: dict[str, None] = {}
    for match in _COMPOUND.finditer(text):
        token = match.group(0)
        if any(c.isalpha() for c in token):
            extra[re.sub(r"[^A-Za-z0-9]", "", token)] = None
            if len(extra) >= MAX_EXTRA:
                break
    for match in _CAMEL.finditer(text):
        extra[" ".join(_CAMEL_PART.findall(match.group(0)))] = None
        if len(extra) >= MAX_EXTRA:
            break
    return f"{text}\n{' '.join(extra)}" if extra else text
