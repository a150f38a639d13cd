"""Claude's way in: one MCP call after another, over HTTP (``/mcp``) and over
stdio (``selfreflect mcp``), against ``/api/search`` in the same run.

    python bench/mcp_calls.py [--calls 40] [--files N] [--against OTHER/src]

Makes a Claude home of the repository's transcripts (``tests/corpus/real``;
the N smallest with ``--files``), starts ``selfreflect serve --port 0`` on
a fresh data dir and waits until it has read them. Then, for each way in,
``--calls`` searches of the benchmark's labeled queries, one after
another, each timed from the call to its answer (after one untimed round):

- ``/api/search``: the baseline, a new connection per request (``urllib``);
- ``/mcp``: ``reflect_on_past`` through the MCP SDK's client, one session,
  its connection kept alive (as an MCP client over HTTP keeps it);
- ``selfreflect mcp``: the stdio server Claude Code starts, which asks the
  running daemon;
- with ``--against``, ``/mcp`` again through a daemon of another checkout
  (its ``src`` first on ``PYTHONPATH``, on a data dir of its own).

Prints each one's median and 95th percentile, and an MCP ``ping`` over the
kept-alive connection (the protocol's floor).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.remove(str(Path(__file__).resolve().parent))  # bench/secrets.py would hide the standard library's

import anyio  # noqa: E402
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parent))
from corpus import QUERY_SETS, smallest  # noqa: E402
from served import SELFREFLECT, address, caught_up, daemons, serve  # noqa: E402


def over_api(url: str, queries: list[str]) -> list[float]:
    walls = []
    for query in queries:
        started = time.perf_counter()
        params = urllib.parse.urlencode({"q": query, "limit": 5})
        with urllib.request.urlopen(f"{url}/api/search?{params}", timeout=60) as answer:
            answer.read()
        walls.append((time.perf_counter() - started) * 1000)
    return walls


async def calls(session: ClientSession, queries: list[str]) -> tuple[list[float], list[float]]:
    """Each query through ``reflect_on_past``, then as many pings: wall ms."""
    await session.initialize()
    walls, pings = [], []
    for query in queries:
        started = time.perf_counter()
        result = await session.call_tool("reflect_on_past", {"query": query, "limit": 5, "project": "all"})
        walls.append((time.perf_counter() - started) * 1000)
        if result.is_error:
            raise SystemExit(f"reflect_on_past failed: {result.content}")
        started = time.perf_counter()
        await session.send_ping()
        pings.append((time.perf_counter() - started) * 1000)
    return walls, pings


def over_http(url: str) -> Callable[[list[str]], Awaitable[tuple[list[float], list[float]]]]:
    async def run(queries: list[str]) -> tuple[list[float], list[float]]:
        async with streamable_http_client(f"{url}/mcp") as (read, write, *_):
            async with ClientSession(read, write) as session:
                return await calls(session, queries)

    return run


def over_stdio(env: dict[str, str]) -> Callable[[list[str]], Awaitable[tuple[list[float], list[float]]]]:
    async def run(queries: list[str]) -> tuple[list[float], list[float]]:
        server = StdioServerParameters(command=SELFREFLECT[0], args=[*SELFREFLECT[1:], "mcp"], env=env)
        async with stdio_client(server) as (read, write):
            async with ClientSession(read, write) as session:
                return await calls(session, queries)

    return run


def line(name: str, walls: list[float]) -> str:
    p95 = sorted(walls)[max(0, round(len(walls) * 0.95) - 1)]
    return f"{name:34} {statistics.median(walls):8.1f} {p95:8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--files", type=int, help="only the N smallest transcripts (a quicker start)")
    parser.add_argument("--against", type=Path, help="another checkout's src folder: its daemon's /mcp, the same way")
    args = parser.parse_args()
    queries = [json.loads(line)["query"] for path in QUERY_SETS for line in path.open()][: args.calls]
    work = Path(tempfile.mkdtemp(prefix="selfreflect-mcp-"))
    claude, data = work / "claude", work / "data"
    (claude / "projects" / "-bench").mkdir(parents=True)
    for path in smallest(args.files):
        shutil.copyfile(path, claude / "projects" / "-bench" / path.name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "SELFREFLECT_CONFIG")}
    env |= {"CLAUDE_CONFIG_DIR": str(claude), "SELFREFLECT_HOME": str(data), "XDG_CONFIG_HOME": str(work / "config")}
    with daemons(work) as started:
        started.append(serve(env, work / "serve.log"))
        if args.against:
            before = {**env, "PYTHONPATH": str(args.against.resolve()), "SELFREFLECT_HOME": str(work / "data-against")}
            started.append(serve(before, work / "serve-against.log"))
        url = address(data, started[0])
        caught_up(url)
        ways: dict[str, Callable[[list[str]], Any]] = {
            "/api/search (a connection each)": lambda q: (over_api(url, q), []),
            "/mcp (one session, kept alive)": lambda q: anyio.run(over_http(url), q),
            "selfreflect mcp (stdio)": lambda q: anyio.run(over_stdio(env), q),
        }
        if args.against:
            other = address(work / "data-against", started[1])
            caught_up(other)
            ways["/mcp, --against"] = lambda q: anyio.run(over_http(other), q)
        time.sleep(3)  # caught up: let it finish what follows (archiving, handing pages back)
        print(f"{len(queries)} calls one after another, each way; load average {os.getloadavg()[0]:.1f}")
        print(f"{'':34} {'p50':>8} {'p95':>8}   (ms)")
        for name, way in ways.items():
            way(queries[:5])  # untimed: connections made, code and pages read
            walls, pings = way(queries)
            print(line(name, walls))
            if pings:
                print(line("  its ping", pings))


if __name__ == "__main__":
    main()
