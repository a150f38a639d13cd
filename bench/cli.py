"""The CLI through a running daemon: wall time of ``selfreflect search`` and
``selfreflect status`` against a bare Python start, and where the start goes.

    python bench/cli.py [--rounds 20] [--files N] [--against OTHER/src]

Makes a Claude home of the repository's transcripts (``tests/corpus/real``;
the N smallest with ``--files``),
starts ``selfreflect serve --port 0`` on a fresh data dir and waits until
it has read them. Then, in rounds, runs each command once, interleaved so
that a busy moment of the machine falls on all of them alike:

- ``python -c pass`` (the baseline: a bare interpreter start);
- ``python -c "import click"`` (the CLI's framework alone);
- ``selfreflect search "docker memory limit"`` and ``selfreflect status``,
  through the script pip installed beside this Python, as users run them;
- with ``--against``, the same two commands with another checkout's
  ``src`` folder first on ``PYTHONPATH`` (a version before a change).

Prints each one's median and lowest wall time, and the median CPU time of
the process (user + system; it leaves out the daemon's share and most of
what other work on the machine costs it), then the biggest imports of one
``selfreflect search`` (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from corpus import smallest
from served import address, caught_up

SCRIPT = shutil.which("selfreflect", path=os.path.dirname(sys.executable))
SELFREFLECT = [SCRIPT] if SCRIPT else [sys.executable, "-m", "selfreflect"]


def run(args: list[str], env: dict[str, str]) -> tuple[float, float | None]:
    """Wall ms of one run of ``args``, and its CPU ms where the platform reports it."""
    started = time.perf_counter()
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(child.pid, 0)
        code, cpu = os.waitstatus_to_exitcode(status), (usage.ru_utime + usage.ru_stime) * 1000
        child.returncode = code
    else:  # Windows
        code, cpu = child.wait(), None
    if code != 0:
        raise SystemExit(f"{' '.join(args)} failed (exit {code})")
    return (time.perf_counter() - started) * 1000, cpu


def biggest_imports(env: dict[str, str], count: int = 10) -> list[tuple[float, str]]:
    """The top-level imports of one ``selfreflect search`` that took longest (ms, cumulative)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "selfreflect", "search", "docker memory limit"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    found = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        _, cumulative, name = line.split("|")
        if len(name) - len(name.lstrip()) <= 3:  # the top level and what it imports directly
            found.append((int(cumulative) / 1000, name.rstrip()))
    return sorted(found, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--files", type=int, help="only the N smallest transcripts (a quicker start)")
    parser.add_argument("--against", type=Path, help="another checkout's src folder, timed the same way")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="selfreflect-cli-"))
    claude, data = work / "claude", work / "data"
    (claude / "projects" / "-bench").mkdir(parents=True)
    for path in smallest(args.files):
        shutil.copyfile(path, claude / "projects" / "-bench" / path.name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "SELFREFLECT_CONFIG")}
    env |= {"CLAUDE_CONFIG_DIR": str(claude), "SELFREFLECT_HOME": str(data), "XDG_CONFIG_HOME": str(work / "config")}
    with open(work / "serve.log", "wb") as log:
        daemon = subprocess.Popen([*SELFREFLECT, "serve", "--port", "0"], env=env, stdout=log, stderr=log)
    try:
        url = address(data, daemon)
        caught_up(url)
        time.sleep(5)  # caught up: let it finish what follows (archiving, handing pages back)
        with urllib.request.urlopen(f"{url}/api/status", timeout=30) as answer:
            chunks = json.load(answer)["chunks"]
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "import click": ([sys.executable, "-c", "import click"], env),
            "selfreflect search": ([*SELFREFLECT, "search", "docker memory limit"], env),
            "selfreflect status": ([*SELFREFLECT, "status"], env),
        }
        if args.against:
            before = {**env, "PYTHONPATH": str(args.against.resolve())}
            commands["search, --against"] = ([*SELFREFLECT, "search", "docker memory limit"], before)
            commands["status, --against"] = ([*SELFREFLECT, "status"], before)
        for argv, command_env in commands.values():  # once untimed: write the bytecode an install has
            run(argv, command_env)
        walls: dict[str, list[float]] = {name: [] for name in commands}
        cpus: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (argv, command_env) in commands.items():
                wall, cpu = run(argv, command_env)
                walls[name].append(wall)
                if cpu is not None:
                    cpus[name].append(cpu)
        print(f"daemon on {chunks} chunks; {args.rounds} rounds, interleaved; load average {os.getloadavg()[0]:.1f}")
        print(f"{'':22} {'wall p50':>9} {'wall min':>9} {'CPU p50':>9}   (ms)")
        for name in commands:
            cpu_p50 = f"{statistics.median(cpus[name]):9.0f}" if cpus[name] else f"{'-':>9}"
            print(f"{name:22} {statistics.median(walls[name]):9.0f} {min(walls[name]):9.0f} {cpu_p50}")
        print("biggest imports of one `selfreflect search` (cumulative ms, -X importtime):")
        for took, name in biggest_imports(env):
            print(f"  {took:6.1f}  {name}")
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
