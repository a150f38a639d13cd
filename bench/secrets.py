"""Planted secrets, per format: how many are masked.

    python bench/secrets.py [--per-format 40] [--seeds 10]

Generates fake secrets of every format in ``tests/planted.py`` (random,
shaped like the real ones, each written into a conversation the way people
paste it) and runs each through the masking selfreflect applies before
anything is stored or shown. Prints, per format, how many were planted and
how many could still be found (any fragment: the whole secret, or a line of
a key block). Baseline in the same run: the masking of the first release
(the patterns it had, applied per chunk), on the same texts. The end-to-end
check (import, every store file, answers, excerpts, logs) is
``tests/test_secrets.py``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from planted import FORMATS, fragments, plant  # noqa: E402

from selfreflect.redact import redact  # noqa: E402

# The first release's masking, for the baseline: its patterns, as they were.
FIRST: list[re.Pattern[str]] = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
    re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{20,}"),
    re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_\-]{20,}"),
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})"),
    re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    re.compile(r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{20,}"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
    re.compile(r"(?<=Bearer )[A-Za-z0-9_\-.=+/]{16,}"),
    re.compile(r"(?<=Token )[A-Za-z0-9_\-.=+/]{16,}"),
]
_NAMED = re.compile(
    r"(\b[A-Za-z0-9_.\-]*(?:SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?)[A-Za-z0-9_]*"
    r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]{8,}",
    re.I,
)


def first_release(text: str) -> str:
    for pattern in FIRST:
        text = pattern.sub("[REDACTED]", text)
    return _NAMED.sub(lambda m: m[1] + "[REDACTED]", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-format", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    planted_n: Counter[str] = Counter()
    found: Counter[str] = Counter()
    found_first: Counter[str] = Counter()
    started = time.perf_counter()
    for seed in range(args.seeds):
        for item in plant(args.per_format, seed=seed):
            planted_n[item.format] += 1
            if any(f in redact(item.text) for f in fragments(item)):
                found[item.format] += 1
            if any(f in first_release(item.text) for f in fragments(item)):
                found_first[item.format] += 1
    seconds = time.perf_counter() - started
    print(f"{sum(planted_n.values())} fake secrets, {len(FORMATS)} formats, {seconds:.1f} s\n")
    print(f"{'format':<26}{'planted':>9}{'found':>7}{'first release':>15}")
    for name in FORMATS:
        print(f"{name:<26}{planted_n[name]:>9}{found[name]:>7}{found_first[name]:>15}")
    print(f"{'all':<26}{sum(planted_n.values()):>9}{sum(found.values()):>7}{sum(found_first.values()):>15}")


if __name__ == "__main__":
    main()
