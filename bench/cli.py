"""The CLI through a running daemon: wall time of ``selfreflect search`` and
``selfreflect status`` against a bare Python start, and where the start goes.

    python bench/cli.py [--rounds 20] [--files N] [--against OTHER/src]

Makes a Claude home of the repository's transcripts (``tests/corpus/real``;
the N smallest with ``--files``; with ``--many N``, N more of one line each
over 60 projects, last written 1 to 30 days ago: a heavy user's thousands
of files, archived, some due for Claude Code's clean-up, with nothing to
embed), starts ``selfreflect serve --port 0`` on a fresh data dir and waits until
it has read them. Then, in rounds, runs each command once, interleaved so
that a busy moment of the machine falls on all of them alike:

- ``python -c pass`` (the baseline: a bare interpreter start);
- ``python -c "import click"`` (the CLI's framework alone);
- ``selfreflect search "docker memory limit"`` and ``selfreflect status``,
  through the script pip installed beside this Python, as users run them;
- with ``--against``, the same two commands with another checkout's
  ``src`` folder first on ``PYTHONPATH`` (a version before a change),
  through a daemon of that version (on a data dir of its own).

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

import psutil

from corpus import smallest
from served import SELFREFLECT, address, caught_up, daemons, serve


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


def many(projects: Path, count: int) -> None:
    """``count`` transcripts of one line (a session's title) over 60
    projects, last written 1 to 30 days ago."""
    now = time.time()
    for n in range(count):
        path = projects / f"-home-user-project{n % 60}" / f"{n:08d}-0000-4000-8000-000000000000.jsonl"
        path.parent.mkdir(exist_ok=True)
        record = {"type": "summary", "summary": f"Session {n}", "leafUuid": f"{n:08d}-1111-4000-8000-000000000000"}
        path.write_text(json.dumps(record) + "\n")
        then = now - (1 + n % 30) * 86400  # Claude Code deletes them after 30 (its default)
        os.utime(path, (then, then))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--files", type=int, help="only the N smallest transcripts (a quicker start)")
    parser.add_argument("--against", type=Path, help="another checkout's src folder, timed the same way")
    parser.add_argument("--many", type=int, default=0, help="N more transcripts of one line each (a heavy user's)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="selfreflect-cli-"))
    claude, data = work / "claude", work / "data"
    (claude / "projects" / "-bench").mkdir(parents=True)
    for path in smallest(args.files):
        shutil.copyfile(path, claude / "projects" / "-bench" / path.name)
    many(claude / "projects", args.many)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "SELFREFLECT_CONFIG")}
    env |= {"CLAUDE_CONFIG_DIR": str(claude), "SELFREFLECT_HOME": str(data), "XDG_CONFIG_HOME": str(work / "config")}
    with daemons(work) as started:
        began = time.perf_counter()
        started.append(serve(env, work / "serve.log"))
        if args.against:  # the version before, client and daemon, on a data dir of its own
            before = {**env, "PYTHONPATH": str(args.against.resolve()), "SELFREFLECT_HOME": str(work / "data-against")}
            started.append(serve(before, work / "serve-against.log"))
        url = address(data, started[0])
        caught_up(url)
        reading = time.perf_counter() - began
        if args.against:
            caught_up(address(work / "data-against", started[1]))
        time.sleep(5)  # caught up: let it finish what follows (archiving, handing pages back)
        with urllib.request.urlopen(f"{url}/api/status", timeout=30) as answer:
            report = json.load(answer)
        chunks, transcripts = report["chunks"], report["transcripts"]
        resident = psutil.Process(started[0].pid).memory_info().rss / 2**20
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "import click": ([sys.executable, "-c", "import click"], env),
            "selfreflect search": ([*SELFREFLECT, "search", "docker memory limit"], env),
            "selfreflect status": ([*SELFREFLECT, "status"], env),
        }
        if args.against:
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
        print(
            f"daemon on {chunks} chunks, {transcripts} transcripts ({report['archive']['transcripts']} archived,"
            f" {report['cleanup']['due']} due for the clean-up); {args.rounds} rounds, interleaved;"
            f" load average {os.getloadavg()[0]:.1f}"
        )
        print(f"the daemon read them all in {reading:.1f} s; resident 5 s later: {resident:.0f} MB")
        print(f"{'':22} {'wall p50':>9} {'wall min':>9} {'CPU p50':>9}   (ms)")
        for name in commands:
            cpu_p50 = f"{statistics.median(cpus[name]):9.0f}" if cpus[name] else f"{'-':>9}"
            print(f"{name:22} {statistics.median(walls[name]):9.0f} {min(walls[name]):9.0f} {cpu_p50}")
        print("biggest imports of one `selfreflect search` (cumulative ms, -X importtime):")
        for took, name in biggest_imports(env):
            print(f"  {took:6.1f}  {name}")


if __name__ == "__main__":
    main()
