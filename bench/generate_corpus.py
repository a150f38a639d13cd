"""Generate a large Claude home from the real transcripts of the test corpus.

    python bench/generate_corpus.py OUT_DIR [--mb 520] [--seed 1] [--shared FOLDER]

Sessions are recombined from real exchanges (a user prompt and the lines
that answer it), with new uuids, message ids and session ids, shifted times
and their own project folders. It always writes one transcript of about
100 MB, and a few sessions holding single lines of 5, 12, 25 and 50 MB (a
giant tool output, as Claude Code writes them).
"""

from __future__ import annotations

import argparse
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from corpus import corpus_files, default_shared

GIANT_LINES_MB = (5, 12, 25, 50)


def load_exchanges(real: list[Path]) -> list[list[dict[str, Any]]]:
    """Every real exchange: its user/assistant records, in file order."""
    exchanges: list[list[dict[str, Any]]] = []
    for path in real:
        current: list[dict[str, Any]] = []
        for raw in path.read_bytes().split(b"\n"):
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(record, dict) or record.get("type") not in ("user", "assistant"):
                continue
            content = (record.get("message") or {}).get("content")
            prompt = record["type"] == "user" and (
                isinstance(content, str) or any(b.get("type") == "text" for b in content or [] if isinstance(b, dict))
            )
            if prompt and current:
                exchanges.append(current)
                current = []
            current.append(record)
        if current:
            exchanges.append(current)
    return exchanges


class Session:
    """One generated transcript being written."""

    def __init__(self, path: Path, rng: random.Random, start: datetime) -> None:
        self.path = path
        self.rng = rng
        self.id = str(uuid.UUID(int=rng.getrandbits(128)))
        self.clock = start
        self.parent: str | None = None
        self.size = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "wb")

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record) + b"\n"
        self.handle.write(line)
        self.size += len(line)

    def add_exchange(self, records: list[dict[str, Any]], cwd: str) -> None:
        ids: dict[str, str] = {}
        for original in records:
            record = orjson.loads(orjson.dumps(original))  # a deep copy
            new_uuid = str(uuid.UUID(int=self.rng.getrandbits(128)))
            if isinstance(record.get("uuid"), str):
                ids[record["uuid"]] = new_uuid
            record["uuid"] = new_uuid
            record["parentUuid"] = self.parent
            record["sessionId"] = self.id
            record["cwd"] = cwd
            self.clock += timedelta(seconds=self.rng.randint(1, 90))
            record["timestamp"] = self.clock.isoformat().replace("+00:00", "Z")
            message = record.get("message")
            if isinstance(message, dict) and isinstance(message.get("id"), str):
                message["id"] = "msg_" + ids.setdefault(message["id"], uuid.UUID(int=self.rng.getrandbits(128)).hex)
            self.write(record)
            self.parent = new_uuid

    def add_giant_line(self, megabytes: int, cwd: str) -> None:
        tool_id = "toolu_" + uuid.UUID(int=self.rng.getrandbits(128)).hex
        use = {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": "cat build.log"}}
        self.add_exchange([{"type": "assistant", "message": {"role": "assistant", "content": [use]}}], cwd)
        block = "".join(self.rng.choice("abcdefghij \n") for _ in range(4096))
        output = block * (megabytes * 1024 * 1024 // len(block))
        result = {"type": "tool_result", "tool_use_id": tool_id, "content": output}
        self.add_exchange([{"type": "user", "message": {"role": "user", "content": [result]}}], cwd)

    def close(self) -> None:
        self.handle.close()


def generate(out: Path, megabytes: int, seed: int, shared: Path | None = None) -> tuple[int, int]:
    """Write the corpus; return (files, bytes)."""
    rng = random.Random(seed)
    exchanges = load_exchanges(corpus_files("real", shared))
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    projects = out / "projects"
    total, files, n = 0, 0, 0

    def session(target_mb: float, giant: int | None = None) -> int:
        nonlocal n, files
        n += 1
        project = f"proj-{n % 23}"
        s = Session(projects / f"-home-dev-{project}" / f"{n:05d}.jsonl", rng, start + timedelta(hours=n))
        cwd = f"/home/dev/{project}"
        if giant:
            s.add_exchange(rng.choice(exchanges), cwd)
            s.add_giant_line(giant, cwd)
        while s.size < target_mb * 1024 * 1024:
            s.add_exchange(rng.choice(exchanges), cwd)
        s.close()
        files += 1
        return s.size

    total += session(100)
    for mb in GIANT_LINES_MB:
        total += session(mb + 0.5, giant=mb)
    while total < megabytes * 1024 * 1024:
        total += session(rng.uniform(0.2, 12))
    return files, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--mb", type=int, default=520)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shared", type=Path, default=default_shared(), help="optional extra transcripts")
    args = parser.parse_args()
    files, size = generate(args.out, args.mb, args.seed, args.shared)
    print(f"wrote {files} transcripts, {size / 2**20:.0f} MB, under {args.out / 'projects'}")


if __name__ == "__main__":
    main()
