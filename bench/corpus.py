"""Where the benchmarks find their transcripts and labeled queries.

The corpus lives in the repository (``tests/corpus/``) and the labeled dev
queries next to the benchmarks (``bench/eval/``). ``--shared FOLDER`` (or
``SELFREFLECT_SHARED``) adds the transcripts of ``FOLDER/corpus/<kind>/``
that the repository may not carry (their sources have no licence); it is
never required.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from selfreflect.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
QUERY_SETS = [ROOT / "bench" / "eval" / "queries-dev.jsonl", ROOT / "bench" / "eval" / "queries-paraphrase.jsonl"]


def default_shared() -> Path | None:
    """``SELFREFLECT_SHARED`` when it names a folder (``none`` switches it off)."""
    named = os.environ.get("SELFREFLECT_SHARED", "")
    return Path(named) if named and named.lower() != "none" else None


def corpus_files(kind: str, shared: Path | None = None) -> list[Path]:
    """The ``kind`` ("real" or "edge-cases") transcripts: the repository's,
    plus those of ``shared`` it does not hold, by file name."""
    files = {p.name: p for p in sorted((CORPUS / kind).glob("*.jsonl"))}
    if shared is not None:
        for extra in sorted((shared / "corpus" / kind).glob("*.jsonl")):
            files.setdefault(extra.name, extra)
    return sorted(files.values(), key=lambda p: p.name)


def smallest(count: int | None, kind: str = "real", shared: Path | None = None) -> list[Path]:
    """The ``count`` smallest of the ``kind`` transcripts (:func:`corpus_files`),
    for a quicker run; all of them when ``count`` is None."""
    return sorted(corpus_files(kind, shared), key=lambda p: p.stat().st_size)[:count]


def claude_home(folder: Path, kind: str = "real", sources: list[Path] | None = None) -> Path:
    """A Claude home made in ``folder``: ``sources`` (default: the
    repository's ``kind`` transcripts), copied into one project. Returns the home."""
    project = folder / "claude" / "projects" / "-corpus"
    project.mkdir(parents=True)
    for path in sorted((CORPUS / kind).glob("*.jsonl")) if sources is None else sources:
        shutil.copyfile(path, project / path.name)
    return project.parent.parent


def corpus_settings(root: Path, sources: list[Path]) -> Settings:
    """Settings for a Claude home made in ``root`` of ``sources``
    (:func:`claude_home`), with its data dir beside it and no config file or
    environment."""
    home = claude_home(root, sources=sources)
    (root / "config.toml").write_text("")
    return Settings.load({"claude_dir": home, "data_dir": root / "data"}, env={}, config_file=root / "config.toml")
