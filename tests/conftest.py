"""Fixtures: a Claude home built from the test corpus, the real model, a
real Qdrant Edge store on tmp dirs.

The corpus lives in ``tests/corpus/``. ``SELFREFLECT_SHARED`` names an
optional extra folder (default: ``../shared`` next to the repository; ``none``
switches it off) holding transcripts that may not be redistributed; the few
tests that need one of those skip, saying why, without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import filelock
import orjson
import pytest

from selfreflect.compaction import copy_store
from selfreflect.embed import OnnxEmbedder
from selfreflect.importer import Importer, ImportSummary
from selfreflect.settings import Settings
from selfreflect.state import State
from selfreflect.store.edge import EdgeStore

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus"
REAL = CORPUS / "real"
EDGE = CORPUS / "edge-cases"
REFERENCE_EMBEDDINGS = ROOT / "tests" / "reference-embeddings.json"


def shared_folder() -> Path | None:
    """The optional shared folder, or None when it is switched off or absent."""
    named = os.environ.get("SELFREFLECT_SHARED", "")
    if named.lower() == "none":
        return None
    folder = Path(named) if named else ROOT.parent / "shared"
    return folder if folder.is_dir() else None


UNLICENSED = (
    "oneryalcin__fasthooks__sample_agent_sidechain.jsonl",
    "oneryalcin__fasthooks__sample_main_transcript.jsonl",
)


def _not_here(name: str) -> str:
    return (
        f"{name} is not redistributable (its source has no licence), so it is not in tests/corpus/; "
        "set SELFREFLECT_SHARED to a folder holding corpus/real/ to run this test"
    )


def every_real_transcript() -> list[Any]:
    """Parameters for a test over every real transcript: the corpus's, and
    the unlicensed ones from the shared folder (skipped, saying why, without it)."""
    params = [pytest.param(p, id=p.name) for p in sorted(REAL.glob("*.jsonl"))]
    folder = shared_folder()
    for name in UNLICENSED:
        path = folder / "corpus" / "real" / name if folder else Path(name)
        missing = not path.is_file()
        params.append(pytest.param(path, id=name, marks=pytest.mark.skipif(missing, reason=_not_here(name))))
    return params


def unlicensed(name: str) -> Path:
    """A real transcript whose source carries no licence, so it is not in
    ``tests/corpus/``: read from the shared folder, or skip the test."""
    folder = shared_folder()
    path = folder / "corpus" / "real" / name if folder else None
    if path is None or not path.is_file():
        pytest.skip(_not_here(name))
    return path


def resident_kb(pid: int | str, mapped: Callable[[str, str], bool]) -> int:
    """KB resident in process ``pid`` ("self": this one) of the mappings
    whose (perms, path) ``mapped`` accepts."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if fields and "-" in fields[0] and not fields[0].endswith(":"):
            inside = mapped(fields[1], fields[5] if len(fields) == 6 else "")
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.fixture(autouse=True)
def env_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every folder at tmp dirs, so no test touches a real home."""
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "claude"))
    monkeypatch.setenv("SELFREFLECT_HOME", str(tmp_path / "data"))
    (tmp_path / "config.toml").write_text("")
    monkeypatch.setenv("SELFREFLECT_CONFIG", str(tmp_path / "config.toml"))
    for name in ("QDRANT_URL", "CHUNK_SIZE", "MAX_MEMORY_MB", "WATCH_INTERVAL", "SELFREFLECT_MAX_LINE_MB"):
        monkeypatch.delenv(name, raising=False)
    for name in ("PREFER_LOCAL_EMBEDDINGS", "VOYAGE_KEY", "VOYAGE_API_KEY", "VOYAGE_MODEL", "VOYAGE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def first_session_id(path: Path) -> str:
    for raw in path.read_bytes().split(b"\n"):
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("sessionId"):
            return str(record["sessionId"])
    return path.stem


def write_session(folder: Path, session_id: str, prompt: str) -> Path:
    """A two-line transcript (a prompt and its answer), named as Claude Code names it."""
    records = [
        {"type": "user", "uuid": f"{session_id}-u", "sessionId": session_id, "cwd": "/home/me/app",
         "timestamp": "2026-03-01T10:00:00Z", "message": {"role": "user", "content": prompt}},
        {"type": "assistant", "uuid": f"{session_id}-a", "sessionId": session_id, "cwd": "/home/me/app",
         "timestamp": "2026-03-01T10:00:05Z",
         "message": {"id": f"m-{session_id}", "role": "assistant", "content": [{"type": "text", "text": "Done."}]}},
    ]  # fmt: skip
    path = folder / f"{session_id}.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def build_claude_home(root: Path) -> dict[str, Path]:
    """A Claude home laid out as Claude Code lays it out, from the corpus.

    Each source repository is a project folder; 2.1.x sub-agent transcripts go
    under ``<session>/subagents/``; the edge cases are one more project.
    Returns each corpus file name -> where it now lives.
    """
    projects = root / "projects"
    placed: dict[str, Path] = {}
    for source in sorted(REAL.glob("*.jsonl")):
        owner, repo, name = source.name.split("__", 2)
        folder = projects / f"-home-dev-{owner}-{repo}"
        if name.startswith("agent-a") and "spotter" in repo:
            target = folder / first_session_id(source) / "subagents" / name
        else:
            target = folder / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        placed[source.name] = target
    for source in sorted(EDGE.glob("*.jsonl")):
        target = projects / "-home-dev-edge-cases" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        placed[source.name] = target
    return placed


@pytest.fixture(scope="session")
def embedder() -> OnnxEmbedder:
    model = OnnxEmbedder()
    model.load()
    return model


class Corpus:
    """The shared corpus imported once: its settings, files and first summary."""

    def __init__(self, settings: Settings, files: dict[str, Path], summary: ImportSummary) -> None:
        self.settings = settings
        self.files = files
        self.summary = summary

    def open(self, embedder: OnnxEmbedder) -> EdgeStore:
        return EdgeStore(self.settings.store_dir, embedder.name, embedder.dim).open()


def import_corpus(root: Path, embedder: OnnxEmbedder) -> Corpus:
    """The whole shared corpus laid out under ``root`` and imported there."""
    files = build_claude_home(root / "claude")
    settings = make_settings(root)
    with EdgeStore(settings.store_dir, embedder.name, embedder.dim).open() as store:
        summary = Importer(settings, store, embedder, State.load(settings.state_file)).run()
    return Corpus(settings, files, summary)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory, embedder: OnnxEmbedder, worker_id: str) -> Corpus:
    """The whole shared corpus, imported with the real model into a real store.

    Imported once for all of pytest-xdist's workers (half a minute of the
    model each): the first builds it, the others wait for it; each worker
    then reads the same transcripts and gets a copy of the data folder of
    its own (a store has one owner at a time; tests import into it again).
    """
    if worker_id == "master":  # no workers: this process alone
        return import_corpus(tmp_path_factory.mktemp("corpus"), embedder)
    shared = tmp_path_factory.getbasetemp().parent / "corpus"  # this run's, beside the workers' own
    with filelock.FileLock(f"{shared}.lock"):
        if not (shared / "summary.json").exists():
            made = import_corpus(shared, embedder)
            kept = {"files": {name: str(path) for name, path in made.files.items()}, "summary": asdict(made.summary)}
            (shared / "summary.json").write_bytes(orjson.dumps(kept))
    kept = orjson.loads((shared / "summary.json").read_bytes())
    root = tmp_path_factory.mktemp("corpus")
    copy_store(shared / "data", root / "data")  # sparse: the engine's files are mostly holes
    settings = make_settings(root, claude_dir=shared / "claude")
    summary = ImportSummary(**kept["summary"])
    summary.skipped = [(path, why) for path, why in summary.skipped]  # JSON made them lists
    return Corpus(settings, {name: Path(path) for name, path in kept["files"].items()}, summary)


@pytest.fixture
def corpus_store(corpus: Corpus, embedder: OnnxEmbedder) -> Iterator[EdgeStore]:
    with corpus.open(embedder) as store:
        yield store


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for folders under ``tmp_path``, blind to the environment and
    to any config file of the machine's user."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    empty = tmp_path / "empty-config.toml"
    empty.write_text("")
    values = {"claude_dir": tmp_path / "claude", "data_dir": tmp_path / "data", **overrides}
    return Settings.load(values, env={}, config_file=empty)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 200 MB ext4 file system on a loop device: a disk that fills up
    (tmpfs would not do: it backs the engine's sparse files with memory)."""
    root_on_linux = sys.platform.startswith("linux") and hasattr(os, "geteuid") and os.geteuid() == 0
    if not root_on_linux or not shutil.which("mkfs.ext4"):
        pytest.skip("needs root on Linux and mkfs.ext4 to make a small disk")
    image, mount = tmp_path / "disk.img", tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["truncate", "-s", "200M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    if subprocess.run(["mount", "-o", "loop", str(image), str(mount)]).returncode != 0:
        pytest.skip("no loop device to mount a small disk on")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)
