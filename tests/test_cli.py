"""The command line: exit codes, output, and what ends up in the store."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from selfreflect.cli import cli
from selfreflect.embed import OnnxEmbedder
from selfreflect.store import SearchFilter, edge
from selfreflect.store.edge import EdgeStore

from conftest import EDGE, REAL, write_session

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
    "title",
    "sidechain",
    "agent_id",
    "parent_tool_use_id",
    "compact_summary",
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


def test_import_compacts_a_store_of_many_small_segments(
    small_home: Path, embedder: OnnxEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store left in many small segments (here: sealed every 4 points,
    never merged) is compacted at the end of `import`, and by `compact` on
    request; searches find what was imported."""
    for name in (
        "d-kimuson__claude-code-viewer__5c0375b4-57a5-4f26-b12d-d022ee4e51b7.jsonl",
        "obra__episodic-memory__medium-conversation.jsonl",
        "marot__spotter__tool_heavy.jsonl",
    ):
        shutil.copyfile(REAL / name, small_home / name)
    monkeypatch.setenv("SELFREFLECT_SEGMENT_POINTS", "4")
    monkeypatch.setenv("SELFREFLECT_MERGE_POINTS", "0")
    monkeypatch.setenv("CHUNK_SIZE", "4")  # a batch of 4 chunks, a segment of 4 points
    code, out, err = run("import")
    assert code == 0 and "Compacting the store" in err
    assert out.startswith("Imported ")
    compacted = re.search(r"^Compacted the store: (\d+) segments into (\d+) in ", out, re.M)
    assert compacted, out
    before, after = int(compacted[1]), int(compacted[2])
    assert after < before / 4
    data = Path(os.environ["SELFREFLECT_HOME"])
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        assert store.segments() == after
    code, out, _ = run("search", "--json", "spotter")
    assert code == 0 and json.loads(out)["results"]
    assert "selfreflect compact" not in run("status")[1]
    slack = edge.COMPACT_SLACK
    monkeypatch.setattr(edge, "COMPACT_SLACK", -after)  # as if it still held many small segments
    code, out, _ = run("status")
    assert code == 0 and "chunks in many small segments: `selfreflect compact` makes searches faster" in out
    monkeypatch.setattr(edge, "COMPACT_SLACK", slack)
    monkeypatch.setenv("SELFREFLECT_SEGMENT_POINTS", "1024")
    code, out, _ = run("compact")
    assert code == 0 and out.startswith(f"Compacted the store: {after} segments into ")
    code, out, _ = run("import")
    assert code == 0 and out.startswith("Nothing new: ") and "Compacted" not in out


def test_compact_without_a_store_says_so(tmp_path: Path) -> None:
    code, out, _ = run("compact")
    assert code == 0 and out == "Nothing indexed yet: nothing to compact\n"


def test_bad_lines_are_counted_in_summary_and_status(tmp_path: Path) -> None:
    folder = Path(os.environ["CLAUDE_CONFIG_DIR"]) / "projects" / "-home-dev-edge-cases"
    folder.mkdir(parents=True)
    for source in EDGE.glob("*.jsonl"):  # the corpus's bad lines are all in these
        shutil.copyfile(source, folder / source.name)
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
    # run in /, not the home folder: a token.py there would stand in for the standard library's
    in_root = "WorkingDirectory=/\n" if platform == "linux" else "<key>WorkingDirectory</key><string>/</string>"
    assert in_root in unit.text
    relative = Settings.load({"data_dir": "rel/data", "claude_dir": "rel/claude"})
    text = service_file(relative, platform=platform, home=tmp_path / "home").text
    assert os.path.abspath("rel/data") in text and os.path.abspath("rel/claude") in text
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


def cited_lines(out: str) -> list[int]:
    """The lines ``show`` marks as cited (``>``)."""
    return [int(line[1:7]) for line in out.splitlines() if line.startswith(">")]


def test_show_follows_every_citation_as_search_prints_it(small_home: Path, embedder: OnnxEmbedder) -> None:
    from selfreflect.reflection import store_reflection

    write_session(small_home, "abcd1111-0000-4000-8000-000000000001", "configure the walrus cache")
    write_session(small_home, "abcd2222-0000-4000-8000-000000000002", "configure the walrus queue")
    run("import")
    code, out, _ = run("search", "--json", "--limit", "1", "list all files in the current directory")
    top = json.loads(out)["results"][0]
    assert top["line_end"] > top["line_start"]
    citation = f"{top['transcript']}:{top['line_start']}-{top['line_end']}"
    assert citation in run("search", "--limit", "1", "list all files in the current directory")[1]

    code, out, _ = run("show", citation, "--context", "1")  # the range, and the context around it
    assert code == 0 and out.splitlines()[0] == top["transcript"]
    assert cited_lines(out) == list(range(top["line_start"], top["line_end"] + 1))
    assert f"  {top['line_start'] - 1:>4}  " in out and f"  {top['line_end'] + 1:>4}  " in out
    code, out, _ = run("show", f"{top['transcript']}:16", "--context", "0")  # path:line
    assert code == 0 and cited_lines(out) == [16] and "$ ls -la" in out
    name = Path(top["transcript"]).name
    code, out, _ = run("show", f"{name}:16", "--context", "0")  # the file name alone
    assert code == 0 and cited_lines(out) == [16]
    code, out, _ = run("show", top["session_id"][:8] + ":16", "--context", "0")  # the start of a session id
    assert code == 0 and out.splitlines()[0] == top["transcript"] and cited_lines(out) == [16]

    code, out, err = run("show", "abcd")  # the start of two sessions: say which
    assert code == 1 and "'abcd' is the start of 2 sessions" in err
    assert "abcd1111-0000-4000-8000-000000000001" in err and "abcd2222-0000-4000-8000-000000000002" in err
    code, out, _ = run("show", "abcd2", "--context", "0")
    assert code == 0 and out.splitlines()[0].endswith("abcd2222-0000-4000-8000-000000000002.jsonl")
    code, out, err = run("show", "abce1111")  # a typo: the close ones
    assert code == 1 and "no transcript for 'abce1111'; did you mean 'abcd1111-0000-4000-8000-000000000001'" in err
    code, out, err = run("show", f"{top['transcript']}:9-3")
    assert code == 1 and "the range runs backwards" in err

    data = Path(os.environ["SELFREFLECT_HOME"])
    with EdgeStore(data / "store", embedder.name, embedder.dim).open() as store:
        saved = store_reflection(store, embedder, data, "the walrus cache needs a TTL", ["cache"])
    code, out, _ = run("search", "walrus cache TTL", "--limit", "1")
    assert f"reflections.jsonl:{saved['line_start']}-{saved['line_start']}" in out
    code, out, _ = run("show", f"reflections.jsonl:{saved['line_start']}")  # as store_reflection cites it
    assert code == 0 and "Reflection [cache]: the walrus cache needs a TTL" in out


def test_show_at_the_edges_of_a_file_and_of_what_a_transcript_is(small_home: Path, tmp_path: Path) -> None:
    transcript = small_home / "marot__spotter__short.jsonl"
    count = len(transcript.read_bytes().splitlines())
    code, out, _ = run("show", str(transcript), "--line", str(count), "--context", "0")
    assert code == 0 and cited_lines(out) == [count]
    for past in (count + 1, 5000):  # one past the end is as much an error as far past it
        code, out, err = run("show", str(transcript), "--line", str(past))
        assert code == 1 and out == ""
        assert f"{transcript} has {count} lines: line {past} is past its end" in err
    code, out, err = run("show", f"{transcript}:{count + 1}-{count + 3}")
    assert code == 1 and f"has {count} lines" in err

    notes = tmp_path / "notes.txt"
    notes.write_text("root:x:0:0:root:/root:/bin/bash\nnot json either\n")
    for path in [notes] + [Path("/etc/passwd")] * Path("/etc/passwd").is_file():
        code, out, err = run("show", str(path))
        assert code == 1 and out == "" and f"{path} is not a Claude Code transcript" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    code, out, err = run("show", str(empty))
    assert code == 1 and f"{empty} is empty" in err


def test_tool_and_session_filters_never_answer_with_a_silent_empty(small_home: Path) -> None:
    run("import")
    query = ["list all files in the current directory", "--json"]
    code, out, _ = run("search", *query, "--tool", "bash")  # any case
    results = json.loads(out)["results"]
    assert code == 0 and results and all("Bash" in r["tools"] for r in results)
    code, out, err = run("search", *query, "--tool", "Bsh")
    assert code == 1 and "no indexed tool matches 'Bsh'; did you mean 'Bash'?" in err
    code, out, err = run("search", *query, "--tool", "Nothing")
    assert code == 1 and "no indexed tool matches 'Nothing'; the most used are 'Bash'" in err

    session = "1af7fc5e-8455-4414-9ccd-011d40f70b2a"
    code, out, _ = run("search", *query, "--session", session[:6])  # the start of a session id
    results = json.loads(out)["results"]
    assert code == 0 and results and {r["session_id"] for r in results} == {session}
    code, out, err = run("search", *query, "--session", "1af8fc5e")
    assert code == 1 and f"no indexed session matches '1af8fc5e'; did you mean '{session}'?" in err
    code, out, err = run("search", *query, "--session", "zzzz")
    assert code == 1 and "no indexed session matches 'zzzz'" in err


def test_a_second_import_says_what_it_holds_back_and_why(tmp_path: Path) -> None:
    folder = Path(os.environ["CLAUDE_CONFIG_DIR"]) / "projects" / "-work"
    folder.mkdir(parents=True)
    torn = folder / "truncated-last-line__obra__episodic-memory__tiny-conversation.jsonl"
    shutil.copyfile(EDGE / torn.name, torn)
    os.utime(torn, (1e9, 1e9))  # quiet for years: its last line will not be finished
    writing = write_session(folder, "abcd1111-0000-4000-8000-000000000001", "the walrus")
    with open(writing, "ab") as handle:
        handle.write(b'{"type": "user", "message": {"role": "user", "content": "half a li')  # being written now
    code, out, _ = run("import")
    assert code == 0 and out.startswith("Imported 2 of 2 files: 8 new lines, ")
    for _ in range(2):
        assert "Held back: 1 transcript still being written: an unfinished last line is read once it ends" in out
        assert "1 transcript ends in a torn line (no newline, not a whole record)" in out
        code, out, _ = run("import")
        assert code == 0 and out.startswith("Nothing new: 2 transcripts already indexed (")
    with open(writing, "ab") as handle:
        handle.write(b'ne"}}\n')
    code, out, _ = run("import")
    assert out.startswith("Imported 1 of 2 files: 1 new lines, ") and "still being written" not in out
    assert "Held back: 1 transcript ends in a torn line" in out


def test_a_query_that_starts_with_a_dash_is_told_how(small_home: Path) -> None:
    code, out, err = run("search", "-la")
    assert code == 2 and "No such option" in err
    assert "To search for text that starts with '-', put -- before it: selfreflect search -- -la" in err
    code, out, err = run("search", "--limit", "2", "ls", "-la")
    assert code == 2 and "selfreflect search --limit 2 ls -- -la" in err
    code, out, err = run("search", "--limt", "2", "ls")  # a typo of an option is not words
    assert code == 2 and "Did you mean '--limit'?" in err and "put -- before it" not in err


def test_a_bad_setting_is_named_as_the_user_set_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CHUNK_SIZE", "abc")
    code, out, err = run("status")
    assert code == 1 and "error: the environment variable CHUNK_SIZE='abc': must be a whole number" in err
    monkeypatch.delenv("CHUNK_SIZE")
    config = Path(os.environ["SELFREFLECT_CONFIG"])
    config.write_text("chunk_size = 0\n")
    code, out, err = run("status")
    assert code == 1 and f"error: chunk_size = 0 in {config}: must be 1 or more" in err


def test_the_client_path_loads_no_model_and_no_store() -> None:
    """Asking the daemon (search, status, show) must start quickly: the CLI,
    the connection to the daemon and the status's text import neither numpy,
    the model's runtime, the store's engine nor the archive's compression;
    only a local fallback does."""
    heavy = (
        "numpy",
        "onnxruntime",
        "tokenizers",
        "qdrant_edge",
        "qdrant_client",
        "mcp",
        "starlette",
        "filelock",
        "zstandard",
        "sqlite3",
        "http.client",
        "subprocess",
        "tomllib",
        "orjson",
    ) + (("psutil",) if sys.platform.startswith("linux") else ())  # Linux reads start times from /proc
    code = (
        "import sys; import selfreflect.cli, selfreflect.connect, selfreflect.client, selfreflect.running, "
        "selfreflect.status; "
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
