"""The command line: exit codes, output, and what ends up in the store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from selfreflect.cli import cli
from selfreflect.embed import OnnxEmbedder
from selfreflect.store import SearchFilter
from selfreflect.store.edge import EdgeStore

from conftest import REAL, build_claude_home

RESULT_KEYS = {
    "duplicates",
    "found_by",
    "relevance",
    "score",
    "project",
    "session_id",
    "transcript",
    "line_start",
    "line_end",
    "timestamp",
    "git_branch",
    "text",
    "snippet",
    "tools",
    "files",
}


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def small_home(tmp_path: Path) -> Path:
    """A Claude home with three real transcripts, in the env's CLAUDE_CONFIG_DIR."""
    folder = Path(os.environ["CLAUDE_CONFIG_DIR"]) / "projects" / "-workspace"
    folder.mkdir(parents=True)
    for name in (
        "d-kimuson__claude-code-viewer__1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl",
        "obra__episodic-memory__tiny-conversation.jsonl",
        "marot__spotter__short.jsonl",
    ):
        shutil.copyfile(REAL / name, folder / name)
    return folder


def store_points(embedder: OnnxEmbedder) -> list[dict]:
    data = Path(os.environ["SELFREFLECT_HOME"])
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        return store.scroll(SearchFilter(), 100_000)


def test_import_indexes_then_reports_nothing_new(small_home: Path, embedder: OnnxEmbedder) -> None:
    code, out, _ = run("import")
    assert code == 0
    assert out.startswith("Imported 3 of 3 files: 51 new lines, ") and " chunks in " in out
    points = store_points(embedder)
    assert {Path(p["transcript"]).name for p in points} == {p.name for p in small_home.iterdir()}
    assert f"{len(points)} chunks" in out
    code, out, _ = run("import")
    assert code == 0 and out.startswith("Nothing new: 3 transcripts already indexed (")
    assert len(store_points(embedder)) == len(points)


def test_search_json_is_exactly_the_result_schema(small_home: Path) -> None:
    run("import")
    code, out, _ = run("search", "--json", "--limit", "3", "--", "run", "a", "command", "ls", "-la")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"query", "took_ms", "results", "alternatives"}
    assert doc["query"] == "run a command ls -la" and doc["alternatives"] == []
    assert 1 <= len(doc["results"]) <= 3
    for result in doc["results"]:
        assert set(result) == RESULT_KEYS
        assert Path(result["transcript"]).parent == small_home
    assert doc["results"][0]["session_id"] == "1af7fc5e-8455-4414-9ccd-011d40f70b2a"


def test_search_human_output_and_filters(small_home: Path) -> None:
    run("import")
    code, out, err = run("search", "Proactiveness", "--limit", "2")
    assert code == 0
    assert "/obra__episodic-memory__tiny-conversation.jsonl:2-2" in out and "No strong match" not in err
    code, out, err = run("search", "kubernetes helm chart ingress annotations")
    assert code == 0 and "No strong match: the best relevance is 0." in err
    code, out, err = run("search", "Proactiveness", "--project", "no-such-project")
    assert code == 1 and "no indexed project matches 'no-such-project'; did you mean" in err
    code, out, _ = run("search", "Proactiveness", "--project", "STREAMING/")  # a name, any case, a trailing slash
    assert code == 0 and "tiny-conversation.jsonl:2-2" in out
    code, out, _ = run("search", "--json", "anything", "--since", "2026-01-01")
    assert all(r["timestamp"] >= "2026-01-01" for r in json.loads(out)["results"])
    code, out, _ = run("search", "x", "--since", "someday")
    assert code == 1 and "not a date or a duration" in out + _


def test_search_also_searches_other_phrasings(small_home: Path) -> None:
    run("import")
    question = "why does it keep asking me before it repairs things"
    also = ["Proactiveness section of CLAUDE.md", "asks permission before fixing"]
    code, out, _ = run("search", "--json", "--limit", "3", question, "--also", also[0], "--also", also[1])
    doc = json.loads(out)
    assert code == 0 and doc["query"] == question and doc["alternatives"] == also
    assert doc["results"] and all(r["found_by"] and set(r["found_by"]) <= {question, *also} for r in doc["results"])
    assert doc["results"][0]["transcript"].endswith("tiny-conversation.jsonl")
    code, out, _ = run("search", "--limit", "1", question, "--also", also[0])
    assert code == 0 and "    found by: " in out
    code, out, err = run("search", "q", "--also", "a", "--also", "b", "--also", "c", "--also", "d")
    assert code == 1 and "at most 3 alternative phrasings" in out + err


def test_status_per_project(small_home: Path) -> None:
    code, out, _ = run("status")
    assert code == 0 and "Nothing indexed yet" in out
    run("import")
    code, out, _ = run("status", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["chunks"] > 0 and report["transcripts"] == 3 and report["dim"] == 384
    projects = {p["path"]: p for p in report["projects"]}
    assert projects["/path/to/Demo"]["sessions"] == 1
    assert projects["/path/to/Demo"]["last_activity"].startswith("2025-09-03")
    assert sum(p["chunks"] for p in projects.values()) == report["chunks"]
    code, out, _ = run("status")
    assert "Demo" in out and "chunks" in out


def test_show_prints_the_lines_around(small_home: Path) -> None:
    run("import")
    code, out, _ = run("show", "1af7fc5e-8455-4414-9ccd-011d40f70b2a", "--line", "16", "--context", "1")
    assert code == 0
    assert "1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl" in out.splitlines()[0]
    assert ">    16  assistant" in out and "$ ls -la" in out
    assert "    15 " in out and "    17 " in out and "    18 " not in out
    code, out, _ = run("show", str(small_home / "marot__spotter__short.jsonl"), "--line", "2", "--context", "0")
    assert code == 0 and ">     2" in out
    code, out, err = run("show", "no-such-session")
    assert code == 1 and "no transcript for 'no-such-session'" in out + err


def test_missing_claude_dir_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    env = dict(os.environ, CLAUDE_CONFIG_DIR=str(tmp_path / "nowhere"))
    proc = subprocess.run(
        [sys.executable, "-m", "selfreflect", "import"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "no Claude Code transcripts at" in proc.stderr and "Traceback" not in proc.stderr


def test_second_owner_of_the_store_is_refused(small_home: Path, embedder: OnnxEmbedder) -> None:
    run("import")
    data = Path(os.environ["SELFREFLECT_HOME"])
    with EdgeStore(data / "store", embedder.name, embedder.dim).open():
        code, out, err = run("search", "anything")
    assert code == 3
    assert f"in use by `selfreflect (library)` (pid {os.getpid()}, since " in out + err


def test_other_model_is_refused(small_home: Path) -> None:
    run("import")
    meta = Path(os.environ["SELFREFLECT_HOME"]) / "store" / "meta.json"
    meta.write_bytes(orjson.dumps({"model": "voyage-3", "dim": 1024, "schema": 1}))
    code, out, err = run("search", "anything")
    assert code == 1 and "built with 'voyage-3' (1024 dimensions)" in out + err
    assert "`selfreflect reindex`" in out + err  # the message names the way out


def test_reindex_rebuilds_transcripts_and_reflections(small_home: Path, embedder: OnnxEmbedder) -> None:
    from selfreflect.reflection import store_reflection

    run("import")
    before = store_points(embedder)
    data = Path(os.environ["SELFREFLECT_HOME"])
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        saved = store_reflection(store, embedder, data, "cerulean walrus rule", ["team"], "/home/me/app")
    (data / "store" / "meta.json").write_bytes(b"[]")  # damaged
    code, out, err = run("search", "anything")
    assert code == 1 and "`selfreflect reindex`" in err
    code, out, err = run("reindex")
    assert code == 0, err
    assert out.startswith(f"Rebuilt the index: 3 transcripts, {len(before)} chunks, 1 reflections in ")
    after = store_points(embedder)
    assert {p["id"] for p in after} == {p["id"] for p in before} | {saved["id"]}  # same ids: nothing duplicated
    assert not list(data.glob("store.old-*"))
    code, out, _ = run("search", "--json", "cerulean walrus")
    assert json.loads(out)["results"][0]["session_id"] == "reflections"


def test_bad_lines_are_counted_in_summary_and_status(tmp_path: Path) -> None:
    build_claude_home(Path(os.environ["CLAUDE_CONFIG_DIR"]))
    code, out, _ = run("import")
    assert code == 0 and "3 bad lines skipped" in out
    code, out, _ = run("status", "--json")
    assert json.loads(out)["bad_lines"] == 3


def test_help_lists_every_command() -> None:
    code, out, _ = run("--help")
    assert code == 0
    for command in ("import", "search", "status", "show"):
        assert f"  {command}" in out


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_service_install_writes_only_when_asked(tmp_path: Path, platform: str) -> None:
    from selfreflect.service import install, service_file
    from selfreflect.settings import Settings

    settings = Settings.load({"port": 9999}, config_file=Path(os.environ["SELFREFLECT_CONFIG"]))
    unit = service_file(settings, platform=platform, home=tmp_path / "home")
    assert not unit.path.exists()
    assert str(unit.path).startswith(str(tmp_path / "home"))
    for word in (sys.executable, "serve", "--port", "9999", str(settings.data_dir), str(settings.claude_dir)):
        assert word in unit.text
    install(unit)
    assert unit.path.read_text() == unit.text
    assert ("systemctl --user" if platform == "linux" else "launchctl load") in unit.enable
    # another daemon holding the store (exit 3) is not a failure to restart in a loop
    assert ("RestartPreventExitStatus=3" if platform == "linux" else "<string>--if-not-running</string>") in unit.text
    assert str(settings.config_file) in unit.text  # the settings the user chose go along
    voyage = Settings.load({"prefer_local_embeddings": False, "voyage_key": "pa-secret-key"})
    unit = service_file(voyage, platform=platform, home=tmp_path / "home")
    assert "PREFER_LOCAL_EMBEDDINGS" in unit.text and "voyage-4-lite" in unit.text and "pa-secret" not in unit.text


def test_service_install_command_prints_what_it_wrote(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    code, out, _ = run("service", "install", "--print")
    assert code == 0 and "selfreflect" in out and "serve" in out
    assert not (tmp_path / "home").exists()
    code, out, _ = run("service", "install")
    assert code == 0 and out.startswith("Wrote ")
    written = Path(out.split()[1].rstrip(":"))
    assert written.is_file() and str(written).startswith(str(tmp_path / "home"))
