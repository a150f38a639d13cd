"""The package type-checks (mypy, settings in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import selfreflect


def test_package_type_checks() -> None:
    package = Path(selfreflect.__file__).parent
    config = Path(__file__).parents[1] / "pyproject.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), str(package)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
