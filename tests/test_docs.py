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
