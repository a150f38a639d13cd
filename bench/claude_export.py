"""Importing a large Claude.ai export: time and peak memory.

    python bench/claude_export.py /tmp/export --mb 110            # generate, then import
    python bench/claude_export.py /tmp/export --mb 110 --read-only  # generate, then only read and chunk

Generates ``conversations.json`` of about ``--mb`` MB in the export's shape
(reference/claude-code-transcripts.md §10; see tests/corpus/claude-ai):
conversations of 2 to 40 messages, short prompts and long replies of
varied words, one prompt in five with an attached file's extracted text
(20 to 200 KB: most of an export's bytes), one conversation in ten with an
edited prompt (a branch). Zipped like the real export (``--zip``) or not.

Then runs ``selfreflect import --claude-export`` as its own process on a
fresh data dir, sampling its resident memory every half second, and prints
the wall time, the chunks and the peak RSS. ``--read-only`` instead reads
and chunks every conversation in this process (no embedding, no store):
the cost of the stream itself.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import orjson
import psutil

WORDS = (
    "the a to of and in is it that for on with as this be by are from at or an not we can but if you "
    "function error cache memory docker container limit query index search vector store token model "
    "request response server client thread lock queue retry timeout config file path module import test "
    "build deploy branch merge commit review schema table column migrate backup restore stream buffer "
    "parse chunk embed redact offset line session project daemon socket port header cookie session"
).split()


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def generate(folder: Path, mb: float, seed: int = 7) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "conversations.json"
    target = int(mb * 1024 * 1024)
    with open(path, "wb") as handle:
        handle.write(b"[")
        n = 0
        while handle.tell() < target:
            uid = f"{n:08x}-0000-4000-8000-{0:012x}"
            messages = []
            parent = "00000000-0000-4000-8000-000000000000"
            for m in range(rng.randint(2, 40)):
                human = m % 2 == 0
                body = text(rng, rng.randint(8, 60) if human else rng.randint(60, 500))
                message = {
                    "uuid": f"{n:08x}-{m:04x}-4000-8000-{m:012x}",
                    "parent_message_uuid": parent,
                    "text": body,
                    "content": [{"type": "text", "text": body}],
                    "sender": "human" if human else "assistant",
                    "created_at": f"2025-01-{1 + n % 28:02d}T10:{m % 60:02d}:00.000000Z",
                    "attachments": [],
                    "files": [],
                }
                if human and rng.random() < 0.2:
                    dump = text(rng, rng.randint(3_000, 30_000))
                    message["attachments"] = [{"file_name": f"notes-{n}-{m}.md", "extracted_content": dump}]
                messages.append(message)
                parent = message["uuid"]
            if len(messages) > 3 and rng.random() < 0.1:  # an edited prompt: a sibling of message 3
                edit = dict(messages[2], uuid=f"{n:08x}-ffff-4000-8000-{0:012x}", text="Edited: " + messages[2]["text"])
                messages.append(edit)
            conversation = {
                "uuid": uid,
                "name": text(rng, 5),
                "created_at": "2025-01-01T10:00:00.000000Z",
                "updated_at": "2025-01-01T10:00:00.000000Z",
                "account": {"uuid": "a1b2c3d4-0000-4000-8000-00000000beef"},
                "chat_messages": messages,
            }
            handle.write((b",\n" if n else b"") + orjson.dumps(conversation))
            n += 1
        handle.write(b"]\n")
    return path


def run_import(export: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SELFREFLECT_HOME": str(Path(tmp) / "data"), "CLAUDE_CONFIG_DIR": str(Path(tmp) / "c")}
        env["SELFREFLECT_CONFIG"] = str(Path(tmp) / "config.toml")
        Path(env["SELFREFLECT_CONFIG"]).write_text("")
        started = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-m", "selfreflect", "import", "--claude-export", str(export)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        peak = 0
        process = psutil.Process(child.pid)
        while child.poll() is None:
            try:
                peak = max(peak, process.memory_info().rss)
            except psutil.Error:
                break
            time.sleep(0.5)
        out, err = child.communicate()
        seconds = time.monotonic() - started
        print(out.strip() or err.strip())
        print(f"wall {seconds:.0f} s, peak RSS {peak / 2**20:.0f} MB (sampled every 0.5 s)")


def read_only(export: Path) -> None:
    from selfreflect.embed import OnnxEmbedder
    from selfreflect.export import Export
    from selfreflect.importer import Importer

    embedder = OnnxEmbedder()
    embedder.load()
    chunker = Importer.__new__(Importer)  # only its chunking: no store, no state
    chunker.embedder, chunker.budget = embedder, embedder.max_tokens - 2
    started = time.monotonic()
    conversations = chunks = 0
    with Export(export) as stream:
        for conversation in stream.conversations():
            conversations += 1
            chunks += sum(len(chunker._chunk(e)) for e in conversation.exchanges())
    seconds = time.monotonic() - started
    peak = psutil.Process().memory_info().rss
    print(
        f"read and chunked {conversations} conversations, {chunks} chunks in {seconds:.0f} s; RSS {peak / 2**20:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--mb", type=float, default=110)
    parser.add_argument("--zip", action="store_true", help="import the export's ZIP instead")
    parser.add_argument("--read-only", action="store_true", help="only read and chunk (no embedding, no store)")
    args = parser.parse_args()
    export = args.folder / "conversations.json"
    if not export.exists() or abs(export.stat().st_size / 2**20 - args.mb) > 2:
        export = generate(args.folder, args.mb)
    print(f"{export}: {export.stat().st_size / 2**20:.0f} MB")
    if args.zip:
        archive = args.folder / "export.zip"
        if not archive.exists():
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
                zipped.write(export, "conversations.json")
        export = archive
        print(f"{export}: {export.stat().st_size / 2**20:.0f} MB")
    if args.read_only:
        read_only(export)
    else:
        run_import(export)


if __name__ == "__main__":
    main()
