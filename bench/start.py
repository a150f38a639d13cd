"""A start on a big store: the shard's load with and without reading its null
indexes ahead, and the daemon's time until it answers.

    python bench/start.py --store FOLDER [--rounds 3] [--against OTHER/src]

FOLDER is a store folder (``meta.json`` and ``shard/``), for example the
one ``bench/scale.py --work DIR`` keeps in ``DIR/filled-250000``. It is
copied once (holes kept) into a fresh data dir; then, in rounds, each in a
process of its own:

- ``EdgeStore.open`` with the helper that reads the null indexes ahead of
  the engine's load turned off (the baseline), and as shipped;
- ``selfreflect serve`` until ``/healthz`` answers, and its peak resident
  memory by then (``VmHWM``, Linux), then stopped;
- with ``--against``, the same daemon start with another checkout's ``src``
  first on ``PYTHONPATH`` (a version before a change).

Prints the median and range of each, with the load average.
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
from pathlib import Path

from proc import memory_mb
from served import start

OPEN = """
import json, sys, time
from pathlib import Path
from selfreflect.store import edge
if sys.argv[2] == "off":
    edge._READ_AHEAD_SEGMENTS = 1 << 30
folder = Path(sys.argv[1])
meta = json.loads((folder / "meta.json").read_text())
started = time.perf_counter()
store = edge.EdgeStore(folder, meta["model"], meta["dim"]).open()
took = time.perf_counter() - started
print(json.dumps({"seconds": took, "segments": store.segments()}))
store.close()
"""


def open_store(folder: Path, read_ahead: str, env: dict[str, str]) -> tuple[float, int]:
    """Seconds ``EdgeStore.open`` took in a fresh process, and the segments."""
    out = subprocess.run(
        [sys.executable, "-c", OPEN, str(folder), read_ahead], env=env, check=True, capture_output=True, text=True
    ).stdout
    answer = json.loads(out.splitlines()[-1])
    return answer["seconds"], answer["segments"]


def start_daemon(claude: Path, data: Path, env: dict[str, str]) -> tuple[float, int]:
    """Seconds from ``selfreflect serve`` to an answer on ``/healthz``, and the
    daemon's peak resident MB by then."""
    env = {**env, "CLAUDE_CONFIG_DIR": str(claude), "SELFREFLECT_HOME": str(data)}
    env["SELFREFLECT_AUTO_COMPACT"] = "false"  # started again on the store as it was
    with open(data / "serve.log", "ab") as log:
        daemon, _, ready = start(data, env, log)
    try:
        peak = memory_mb(daemon.pid).get("VmHWM", 0)
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
    return ready, peak


def spread(values: list[float], unit: str, digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} {unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True, help="a store folder (meta.json, shard/)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another checkout's src folder: its daemon's start too")
    args = parser.parse_args()
    if not (args.store / "meta.json").is_file():
        raise SystemExit(f"{args.store} is not a store folder (no meta.json)")
    work = Path(tempfile.mkdtemp(prefix="selfreflect-start-"))
    claude, data = work / "claude", work / "data"
    (claude / "projects").mkdir(parents=True)
    data.mkdir()
    try:
        subprocess.run(["cp", "-a", "--sparse=always", str(args.store), str(data / "store")], check=True)
    except (OSError, subprocess.CalledProcessError):  # not GNU cp: a copy without holes opens the same
        shutil.copytree(args.store, data / "store")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "SELFREFLECT_CONFIG")}
    env["XDG_CONFIG_HOME"] = str(work / "config")
    runs: dict[str, list[float]] = {"open, no read-ahead": [], "open": [], "daemon ready": []}
    peaks: dict[str, list[float]] = {"daemon ready": []}
    before = {**env, "PYTHONPATH": str(args.against.resolve())} if args.against else None
    if before is not None:
        runs["daemon ready, --against"] = []
        peaks["daemon ready, --against"] = []
    segments = 0
    try:
        for _ in range(args.rounds):
            seconds, segments = open_store(data / "store", "off", env)
            runs["open, no read-ahead"].append(seconds)
            runs["open"].append(open_store(data / "store", "on", env)[0])
            ready, peak = start_daemon(claude, data, env)
            runs["daemon ready"].append(ready)
            peaks["daemon ready"].append(peak)
            if before is not None:
                ready, peak = start_daemon(claude, data, before)
                runs["daemon ready, --against"].append(ready)
                peaks["daemon ready, --against"].append(peak)
        print(f"{segments} segments; {args.rounds} rounds, interleaved; load average {os.getloadavg()[0]:.1f}")
        for name, values in runs.items():
            peak = f"; peak {spread(peaks[name], 'MB', 0)}" if name in peaks else ""
            print(f"  {name:26} {spread(values, 's')}{peak}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
