"""Resident memory of each face: the daemon idle, after searches, serving
MCP over HTTP (``/mcp``); the stdio MCP server (``selfreflect mcp``) with the
daemon running, and without one (``--no-daemon``).

    python bench/faces.py [CLAUDE_DIR]

Without CLAUDE_DIR, a Claude home is made of the repository's corpus
(``tests/corpus/``). Imports it into a fresh data dir, starts ``selfreflect
serve --port 0``, drives each face with real clients, and reads VmRSS (now)
and VmHWM (peak) from ``/proc/<pid>/status`` after each step (Linux only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.remove(str(Path(__file__).resolve().parent))  # bench/secrets.py would hide the standard library's

import anyio  # noqa: E402
import psutil  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))
from served import address, caught_up  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus"

QUERIES = [
    "list all files in the current directory",
    "why does the assistant keep asking permission",
    "useSimpleTodos",
    "to_relative_path",
    "mix phx.server doesnt start",
]


def memory(pid: int) -> str:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return f"RSS {fields['VmRSS']:5.0f} MB, peak {fields['VmHWM']:5.0f} MB"


def get(url: str, path: str, **params: Any) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}{path}{query}", timeout=60) as answer:
        return json.load(answer)


async def use_tools(session: ClientSession) -> None:
    await session.initialize()
    await session.list_tools()
    for _ in range(2):
        for query in QUERIES:
            await session.call_tool("reflect_on_past", {"query": query, "project": "all"})
    await session.call_tool("search_by_file", {"path": "package.json"})
    await session.call_tool("status", {})


async def over_http(url: str) -> None:
    async with streamable_http_client(url + "/mcp") as (read, write), ClientSession(read, write) as session:
        await use_tools(session)


async def over_stdio(env: dict[str, str], *args: str) -> str:
    params = StdioServerParameters(command=sys.executable, args=["-m", "selfreflect", "mcp", *args], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await use_tools(session)
        (server,) = [
            p for p in psutil.Process().children(recursive=True) if "mcp" in p.cmdline() and "serve" not in p.cmdline()
        ]
        return memory(server.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("claude_dir", type=Path, nargs="?")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="selfreflect-faces-"))
    claude = args.claude_dir
    if claude is None:
        claude = work / "claude"
        (claude / "projects" / "-bench").mkdir(parents=True)
        for path in sorted(CORPUS.glob("*/*.jsonl")):
            shutil.copyfile(path, claude / "projects" / "-bench" / path.name)
    data = work / "data"
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(claude), "SELFREFLECT_HOME": str(data)}
    subprocess.run([sys.executable, "-m", "selfreflect", "import"], env=env, check=True, stdout=subprocess.DEVNULL)
    with open(work / "serve.log", "wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "selfreflect", "serve", "--port", "0"], env=env, stdout=log, stderr=log
        )
    try:
        url = address(data, daemon)
        caught_up(url)
        time.sleep(5)  # caught up: it hands back what start-up mapped in
        print(f"corpus: {get(url, '/api/status')['chunks']} chunks; daemon pid {daemon.pid}")
        print(f"daemon, idle:                        {memory(daemon.pid)}")
        for _ in range(4):
            for query in QUERIES:
                get(url, "/api/search", q=query)
        print(f"daemon, after 20 searches (/api):    {memory(daemon.pid)}")
        anyio.run(over_http, url)
        print(f"daemon, after MCP calls over /mcp:   {memory(daemon.pid)}")
        stdio = anyio.run(over_stdio, env)
        print(f"stdio MCP server (the daemon runs): {stdio}")
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
    stdio = anyio.run(over_stdio, env, "--no-daemon")
    print(f"stdio MCP server --no-daemon:       {stdio}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
