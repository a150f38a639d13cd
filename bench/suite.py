"""Every benchmark, one after the other, with one command.

    python bench/suite.py            # the whole suite (hours: 520 MB backfill, 250k and 1M chunks)
    python bench/suite.py --quick    # every benchmark small (the memory one on the repository's transcripts)
    python bench/suite.py --only retrieval scale

Each benchmark is its own script in ``bench/`` (run it alone for one
number); this runs them as separate processes, prints each one's command
and output as it comes, and ends with a table of what ran, how long it took
and whether it finished. Each script measures its own baseline in the same
run (a bare embedder, a bare Python start, the anchor's recipe, ...), so
numbers from a loaded machine stay comparable within a script. Generated
corpora go to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus import claude_home, smallest

BENCH = Path(__file__).resolve().parent
QUICK_FILES = 10  # of the repository's 13 real transcripts: all but the three over 700 KB


def steps(quick: bool, scratch: Path) -> dict[str, list[list[str]]]:
    """name -> the commands it runs (arguments after ``python``)."""
    corpus = str(scratch / "corpus")
    export = str(scratch / "export")
    # --quick: the snippets, the import, the daemon's faces and memory and the scale backfill
    # over the repository's smallest transcripts (each step embeds what it reads: most of its time)
    small = str(claude_home(scratch / "small", sources=smallest(QUICK_FILES))) if quick else ""
    kept = str(scratch / "scale")  # the stores scale.py fills, kept for start.py and compact.py
    return {
        "retrieval": [["retrieval.py", "--quick"] if quick else ["retrieval.py"]],
        "snippets": [
            ["snippets.py", "--rounds", "1", "--queries", "30", "--files", str(QUICK_FILES)]
            if quick
            else ["snippets.py"]
        ],
        "import": [["import_corpus.py", "--files", str(QUICK_FILES)] if quick else ["import_corpus.py"]],
        "freshness": [["freshness.py", "--appends", "30", "--backlog-mb", "10"] if quick else ["freshness.py"]],
        "archive": [["archive.py", "--long", "20" if quick else "100"]],
        "faces": [["faces.py", small] if quick else ["faces.py"]],
        "cli": [
            ["cli.py", "--rounds", "5", "--files", "3", "--many", "1000"] if quick else ["cli.py", "--many", "3000"]
        ],
        "mcp": [["mcp_calls.py", "--files", "3", "--calls", "20"] if quick else ["mcp_calls.py"]],
        "secrets": [["secrets.py", "--seeds", "2", "--per-format", "10"] if quick else ["secrets.py"]],
        "memory": [["memory.py", small]]
        if quick
        else [["generate_corpus.py", corpus, "--mb", "520"], ["memory.py", corpus]],
        "export": [["claude_export.py", export, "--mb", "5"] if quick else ["claude_export.py", export, "--zip"]],
        "scale": [
            [
                *("scale.py", "--sizes", "5000", "--seconds", "3", "--clients", "4", "--paused", "3"),
                *("--compacted-only", "--files", str(QUICK_FILES), "--work", kept),
            ]
            if quick
            else ["scale.py", "--sizes", "100000", "250000", "1000000", "--work", kept]
        ],
        "start": [
            ["start.py", "--store", f"{kept}/filled-{5000 if quick else 250000}", "--rounds", "1" if quick else "3"]
        ],
        "compact": [["compact.py", "--store", f"{kept}/filled-{5000 if quick else 250000}"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every benchmark small: under 5 minutes")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these benchmarks")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="selfreflect-suite-"))
    plan = steps(args.quick, scratch)
    unknown = set(args.only or ()) - set(plan)
    if unknown:
        parser.error(f"no benchmark named {', '.join(sorted(unknown))}; there are: {', '.join(plan)}")
    done: list[tuple[str, float, str]] = []
    started = time.monotonic()
    try:
        for name, commands in plan.items():
            if args.only and name not in args.only:
                continue
            began, outcome = time.monotonic(), "ok"
            for command in commands:
                print(f"\n=== {name}: python bench/{' '.join(command)}", flush=True)
                code = subprocess.call([sys.executable, str(BENCH / command[0]), *command[1:]], env=os.environ)
                if code != 0:
                    outcome = f"failed (exit {code})"
                    break
            done.append((name, time.monotonic() - began, outcome))
            print(f"=== {name}: {done[-1][1]:.0f} s, {outcome}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n=== the suite{' (--quick)' if args.quick else ''}: {time.monotonic() - started:.0f} s")
    for name, seconds, outcome in done:
        print(f"{name:12} {seconds:8.0f} s  {outcome}")
    sys.exit(0 if all(outcome == "ok" for _, _, outcome in done) else 1)


if __name__ == "__main__":
    main()
