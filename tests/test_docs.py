"""The docs stay true: README's commands, CI, and --help."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from selfreflect.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def setup_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert block and README.index("```sh") < 40, "README must open with its set-up commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_a_run_and_a_test_command() -> None:
    run, test = setup_commands()
    assert "pip install ." in run and "selfreflect import" in run and "selfreflect search" in run
    assert "pip install '.[test]'" in test and "pytest" in test


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    _, test = setup_commands()
    assert test in ci
    assert '"$status" -eq 5' in ci  # no tests collected is a failure


def test_readme_documents_every_search_option() -> None:
    result = CliRunner().invoke(cli, ["search", "--help"])
    options = set(re.findall(r"(--[a-z][a-z-]+)", result.output)) - {"--help"}
    missing = [o for o in sorted(options) if o not in README]
    assert not missing, missing


def test_readme_documents_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    commands = re.findall(r"^  (\w+)\s", result.output.split("Commands:")[1], re.M)
    assert commands
    for command in commands:
        assert f"selfreflect {command}" in README


def test_the_corpus_is_in_the_repository_with_its_licences() -> None:
    corpus = ROOT / "tests" / "corpus"
    real = sorted(p.name for p in (corpus / "real").glob("*.jsonl"))
    assert len(real) >= 13 and not [n for n in real if "fasthooks" in n]  # not redistributable
    sources = (corpus / "README.md").read_text()
    notice = (corpus / "NOTICE").read_text()
    for name in real:
        owner, repo, _ = name.split("__", 2)
        assert f"`{name}`" in sources  # each file is in the sources table
        licence = corpus / "LICENSES" / f"{owner}-{repo}.txt"
        assert licence.read_text().startswith("MIT License") and f"LICENSES/{licence.name}" in notice
    assert (ROOT / "bench" / "eval" / "queries-dev.jsonl").is_file()


def test_nothing_requires_the_shared_folder() -> None:
    """The source never names it; tests reach it only through conftest's
    ``unlicensed()``, which skips without it; CI switches it off."""
    for path in (ROOT / "src").rglob("*.py"):
        assert "SELFREFLECT_SHARED" not in path.read_text() and "../shared" not in path.read_text(), path
    for path in (ROOT / "tests").glob("*.py"):
        if path.name not in ("conftest.py", "test_docs.py"):
            assert "shared_folder" not in path.read_text() and "SELFREFLECT_SHARED" not in path.read_text(), path
    assert "export SELFREFLECT_SHARED=none" in (ROOT / ".ci" / "run").read_text()
