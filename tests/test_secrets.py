"""Planted secrets: hundreds of fake secrets of every format imported, then
every file of the data dir read byte by byte, every search answer, every
excerpt (from the transcript, then from its archive) and every log line:
none of them is found again. The archive itself is a copy of the transcript
as Claude Code wrote it, secrets included, like the transcript it keeps
(README, "The archive"): it is not read for them, what is read from it is."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from planted import FORMATS, found_in, plant, transcript

from daemon_process import DaemonProcess

pytestmark = pytest.mark.timeout(600)


def test_no_planted_secret_is_found_anywhere(tmp_path: Path) -> None:
    planted = plant(per_format=8)
    assert len(planted) == 8 * len(FORMATS) >= 200
    home, data = tmp_path / "claude", tmp_path / "data"
    session = home / "projects" / "-home-dev-vault" / "5ec4e700-0000-4000-8000-00000000feed.jsonl"
    session.parent.mkdir(parents=True)
    records = transcript(planted)
    session.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    then = time.time() - 3600  # nobody writes it: archived whole
    os.utime(session, (then, then))
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home), "SELFREFLECT_HOME": str(data)}
    imported = subprocess.run(
        [sys.executable, "-m", "selfreflect", "-vv", "import"], env=env, capture_output=True, timeout=400
    )
    assert imported.returncode == 0, imported.stderr
    haystacks = {"import stdout": imported.stdout, "import log": imported.stderr}

    with DaemonProcess(home, data) as daemon:
        daemon.wait_idle()
        for name in FORMATS:  # search with the words around each secret, and for the format itself
            for query in (name.replace("-", " "), "key token password secret", "cat .env", "private key"):
                answer = httpx.get(daemon.url + "/api/search", params={"q": query, "limit": 50})
                haystacks[f"search {query!r}"] = answer.content
        for where in ("transcript", "archive"):  # every line, as read_conversation shows it
            for line in range(1, len(records) + 1, 101):
                answer = httpx.get(
                    daemon.url + "/api/conversation",
                    params={"session_id": records[0]["sessionId"], "line": line, "before": 50, "after": 50},
                )
                assert answer.status_code == 200
                haystacks[f"excerpt around {line} from the {where}"] = answer.content
            session.unlink(missing_ok=True)  # Claude Code's clean-up: read from the archive from now on
        saved = httpx.post(
            daemon.url + "/api/reflections",
            json={"content": f"the key is {planted[0].secret}", "tags": [planted[1].secret]},
        )
        assert saved.status_code == 200
        haystacks["reflection answer"] = saved.content
        assert daemon.stop() == 0
    haystacks["serve log"] = daemon.log.read_bytes()
    assert (data / "archive" / "-home-dev-vault" / (session.name + ".zst")).is_file()
    for path in data.rglob("*"):
        if path.is_file() and "archive" not in path.relative_to(data).parts:
            haystacks[str(path.relative_to(data))] = path.read_bytes()
    assert len([k for k in haystacks if "/" in k or "." in k]) > 20  # the store's files were read
    assert found_in(planted, haystacks) == {}
    # and what was masked is still there to find
    texts = b" ".join(v for k, v in haystacks.items() if k.startswith("search"))
    assert b"[REDACTED:" in texts and b"SESSION_SECRET=" in texts and b"mysqldump -u root -p" in texts
