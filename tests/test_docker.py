"""The Docker files say what the README says. No Docker engine runs in the
tests (nor in CI): the files are read and their facts checked, the settings
they give are loaded, and the image's health check is run against a real
daemon. (Linted by hand with hadolint and, for compose.yaml, the compose-spec
JSON schema: README, "Docker".)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from selfreflect.errors import ConfigError
from selfreflect.settings import Settings

from daemon_process import DaemonProcess

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def runtime_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last:]


def healthcheck_command() -> list[str]:
    (check,) = [args for op, args in runtime_stage() if op == "HEALTHCHECK"]
    return list(json.loads(check.split("CMD", 1)[1]))


def compose_environment() -> dict[str, str]:
    environment = COMPOSE["services"]["selfreflect"]["environment"]
    return {k: str(v) for k, v in environment.items()}


def test_the_image_is_built_in_two_stages_and_runs_as_a_user() -> None:
    stages = [args for op, args in instructions() if op == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS builder") and stages[1] == "python:3.11-slim"
    runtime = runtime_stage()
    assert ("COPY", "--from=builder /opt/selfreflect /opt/selfreflect") in runtime  # only the virtualenv
    (user,) = [args for op, args in runtime if op == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert re.search(r"ARG SELFREFLECT_UID=(\d+)", DOCKERFILE).group(1) != "0"  # type: ignore[union-attr]
    assert runtime[-1] == ("CMD", '["selfreflect", "serve"]')
    env = " ".join(args for op, args in runtime if op == "ENV")
    for setting in ("SELFREFLECT_HOST=0.0.0.0", "SELFREFLECT_HOME=/data", "CLAUDE_CONFIG_DIR=/claude"):
        assert setting in env
    copied = {p for op, args in instructions() if op == "COPY" and "--from" not in args for p in args.split()[:-1]}
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :][:3] == ["!pyproject.toml", "!README.md", "!src/"]
    assert copied == {"pyproject.toml", "README.md", "src"}


def test_the_health_check_asks_the_daemon_with_its_token(tmp_path: Path) -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"] and "127.0.0.1:" in command[2] and "/healthz" in command[2]
    claude = tmp_path / "claude"
    (claude / "projects").mkdir(parents=True)
    token = "healthcheck-token"
    env = {"SELFREFLECT_HOST": "0.0.0.0", "SELFREFLECT_TOKEN": token}
    with DaemonProcess(claude, tmp_path / "data", **env) as daemon:
        port = daemon.url.rsplit(":", 1)[1]

        def check(with_token: str) -> int:
            env = {"SELFREFLECT_PORT": port, "SELFREFLECT_TOKEN": with_token, "PATH": ""}
            return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode

        assert check(token) == 0
        assert check("not-the-token") != 0
        assert daemon.stop() == 0
    assert check(token) != 0  # no daemon


def test_compose_mounts_claude_read_only_and_keeps_data_in_a_volume() -> None:
    service = COMPOSE["services"]["selfreflect"]
    env = compose_environment()
    (claude,) = [v for v in service["volumes"] if isinstance(v, dict) and v["target"] == env["CLAUDE_CONFIG_DIR"]]
    assert claude["type"] == "bind" and claude["read_only"] is True and claude["source"].endswith("~/.claude}")
    data = [v for v in service["volumes"] if isinstance(v, str) and v.endswith(":" + env["SELFREFLECT_HOME"])]
    assert len(data) == 1 and data[0].split(":")[0] in COMPOSE["volumes"]  # a named volume


def test_compose_caps_memory_under_the_container_limit() -> None:
    service = COMPOSE["services"]["selfreflect"]
    number, unit = re.fullmatch(r"(\d+)([kmg])", service["mem_limit"]).groups()  # type: ignore[union-attr]
    limit_mb = int(number) * {"k": 1 / 1024, "m": 1, "g": 1024}[unit]
    cap_mb = int(compose_environment()["MAX_MEMORY_MB"])
    assert 171 < cap_mb and cap_mb * 2 <= limit_mb  # over the measured peak; room for page cache and bursts


def test_compose_reaches_qdrant_inside_and_publishes_on_loopback_only() -> None:
    services = COMPOSE["services"]
    env = compose_environment()
    assert env["QDRANT_URL"] == "http://qdrant:6333" and "qdrant" in services
    assert env["PREFER_LOCAL_EMBEDDINGS"] == "true"
    assert all(str(p).startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))
    image = services["qdrant"]["image"]
    assert re.fullmatch(r"qdrant/qdrant:v\d+\.\d+\.\d+", image)  # pinned
    assert any(str(v).endswith(":/qdrant/storage") for v in services["qdrant"]["volumes"])
    assert env["SELFREFLECT_TOKEN"].startswith("${SELFREFLECT_TOKEN:?")  # compose refuses to start without it


def test_the_compose_environment_is_settings_selfreflect_accepts(tmp_path: Path) -> None:
    env: dict[str, Any] = {**compose_environment(), "SELFREFLECT_TOKEN": "t0ken"}
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    settings = Settings.load({}, env=env, config_file=empty)
    assert (settings.claude_dir, settings.data_dir) == (Path("/claude"), Path("/data"))
    assert (settings.host, settings.token, settings.max_memory_mb) == ("0.0.0.0", "t0ken", 200)
    assert settings.qdrant_url == "http://qdrant:6333" and settings.prefer_local_embeddings
    with pytest.raises(ConfigError, match="set SELFREFLECT_TOKEN"):
        Settings.load({}, env={**env, "SELFREFLECT_TOKEN": ""}, config_file=empty)
