"""Takes orders from no one else: the local API refuses other hosts, other
origins and cross-site posts; a token guards a daemon bound elsewhere; the
data dir is the user's alone; forgetting removes and keeps out."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from daemon_process import DaemonProcess, eventually

pytestmark = pytest.mark.timeout(300)

REAL = Path(__file__).resolve().parent / "corpus" / "real"
TINY = REAL / "obra__episodic-memory__tiny-conversation.jsonl"
SESSION = "67a8478e-78dc-44ab-82ea-f65c8ead85f6"

# every route, as (method, path, JSON body for a POST)
ROUTES = [
    ("GET", "/healthz", None),
    ("GET", "/metrics", None),
    ("GET", "/api/search?q=Proactiveness", None),
    ("GET", "/api/status", None),
    ("GET", "/api/by-file?path=a.py", None),
    ("GET", f"/api/conversation?session_id={SESSION}&line=2", None),
    ("POST", "/api/reflections", {"content": "an injected memory", "tags": []}),
    ("POST", "/api/import", {}),
    ("POST", "/api/compact", {"if_needed": True}),
    ("POST", "/api/forget", {"kind": "session", "value": "nothing-such"}),
    ("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    ("GET", "/mcp", None),
]
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def quiet(path: Path) -> None:
    """Last written an hour ago: archived whole when it is read."""
    then = time.time() - 3600
    os.utime(path, (then, then))


def home_with_tiny(tmp_path: Path) -> Path:
    home = tmp_path / "claude"
    (home / "projects" / "-p").mkdir(parents=True)
    shutil.copyfile(TINY, home / "projects" / "-p" / "a.jsonl")
    return home


def send(url: str, method: str, path: str, body: object, **headers: str) -> httpx.Response:
    content = orjson.dumps(body) if body is not None else None
    base = {"Content-Type": "application/json", **MCP_HEADERS} if method == "POST" else dict(MCP_HEADERS)
    return httpx.request(method, url + path, content=content, headers={**base, **headers}, timeout=30)


def test_every_route_refuses_forged_host_origin_and_content_type(tmp_path: Path) -> None:
    """DNS rebinding (a foreign Host), a cross-site request (a foreign
    Origin) and a "simple" cross-site POST (text/plain) are refused on every
    route; nothing an attacker sent was stored."""
    tried = 0
    with DaemonProcess(home_with_tiny(tmp_path), tmp_path / "data") as daemon:
        daemon.wait_idle()
        port = daemon.url.rsplit(":", 1)[1]
        for method, path, body in ROUTES:
            for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "192.168.1.5"):
                assert send(daemon.url, method, path, body, Host=host).status_code == 421, (path, host)
                tried += 1
            for origin in ("http://evil.example", "https://evil.example:443", "null", "http://127.0.0.1.evil.example"):
                answer = send(daemon.url, method, path, body, Origin=origin)
                assert answer.status_code == 403, (path, origin, answer.status_code)
                tried += 1
            if method == "POST":
                for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
                    assert send(daemon.url, method, path, body, **{"Content-Type": kind}).status_code == 415
                    tried += 1
            legit = send(daemon.url, method, path, body, Origin=f"http://localhost:{port}")
            assert legit.status_code not in (401, 403, 415, 421), (path, legit.status_code, legit.text)
            for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
                assert send(daemon.url, method, path, body, Host=host).status_code not in (403, 415, 421)
        assert httpx.options(daemon.url + "/api/search", headers={"Origin": "http://evil.example"}).status_code in (
            403,
            405,
        )
        assert "access-control-allow-origin" not in {
            k.lower() for k in send(daemon.url, "GET", "/healthz", None).headers
        }
        stored = (tmp_path / "data" / "reflections.jsonl").read_bytes().splitlines()
        assert len(stored) == 3  # the three local posts above; none of the forged ones
        assert daemon.stop() == 0
    print(f"routes x forged headers tried: {tried}")
    assert tried >= 100


def test_a_token_guards_every_route_and_the_clients_carry_it(tmp_path: Path) -> None:
    home = home_with_tiny(tmp_path)
    token = "correct-horse-battery-staple-42"
    with DaemonProcess(home, tmp_path / "data", SELFREFLECT_TOKEN=token) as daemon:
        eventually(
            lambda: (
                httpx.get(daemon.url + "/healthz", headers={"Authorization": f"Bearer {token}"}).json()["files_pending"]
                == 0
            ),
            60,
        )
        for method, path, body in ROUTES:
            for auth in (None, "Bearer wrong", f"Basic {token}", token):
                headers = {"Authorization": auth} if auth else {}
                assert send(daemon.url, method, path, body, **headers).status_code == 401, (path, auth)
            ok = send(daemon.url, method, path, body, Authorization=f"Bearer {token}", Host="anything.example")
            assert ok.status_code not in (401, 403, 415, 421), (path, ok.status_code)
        env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home), "SELFREFLECT_HOME": str(tmp_path / "data")}
        found = subprocess.run(
            [sys.executable, "-m", "selfreflect", "search", "--json", "Proactiveness"],
            env={**env, "SELFREFLECT_TOKEN": token},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert found.returncode == 0 and orjson.loads(found.stdout)["results"], found.stderr
        assert daemon.stop() == 0


def test_listening_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home_with_tiny(tmp_path)), "SELFREFLECT_HOME": str(tmp_path / "d")}
    refused = subprocess.run(
        [sys.executable, "-m", "selfreflect", "serve", "--port", "0"],
        env={**env, "SELFREFLECT_HOST": "0.0.0.0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "set SELFREFLECT_TOKEN" in refused.stderr
    assert not (tmp_path / "d" / "daemon.json").exists()


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_the_data_dir_is_the_users_alone_whatever_the_umask(tmp_path: Path) -> None:
    home = home_with_tiny(tmp_path)
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "old.log").write_text("made by an older version")
    (data / "old.log").chmod(0o644)
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home), "SELFREFLECT_HOME": str(data)}

    def loose_umask() -> None:
        os.umask(0o022)

    subprocess.run(
        [sys.executable, "-m", "selfreflect", "import"], env=env, check=True, timeout=120, preexec_fn=loose_umask
    )
    with DaemonProcess(home, data) as daemon:
        daemon.wait_idle()
        httpx.post(daemon.url + "/api/reflections", json={"content": "kept private", "tags": []}).raise_for_status()
        assert daemon.stop() == 0
    checked = 0
    for path in [data, *data.rglob("*")]:
        if path.is_symlink():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path}: {oct(mode)}"
        checked += 1
    assert checked > 40  # store segments, the log, the state, reflections, daemon files
    print(f"files and folders checked: {checked}")


def test_forget_removes_and_keeps_out(tmp_path: Path) -> None:
    home = home_with_tiny(tmp_path)
    spotter = home / "projects" / "-q"
    spotter.mkdir()
    shutil.copyfile(REAL / "marot__spotter__short.jsonl", spotter / "b.jsonl")
    data = tmp_path / "data"
    env = {**os.environ, "CLAUDE_CONFIG_DIR": str(home), "SELFREFLECT_HOME": str(data)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "selfreflect", *args], env=env, capture_output=True, text=True, timeout=180
        )

    for path in (home / "projects" / "-p" / "a.jsonl", spotter / "b.jsonl"):
        quiet(path)
    assert run("import").returncode == 0
    archived = data / "archive" / "-p" / "a.jsonl.zst"
    assert archived.is_file() and (data / "archive" / "-q" / "b.jsonl.zst").is_file()
    assert orjson.loads(run("search", "--json", "Proactiveness").stdout)["results"]
    done = run("forget", "--session", SESSION)
    assert done.returncode == 0 and done.stdout.startswith("Forgot ") and " 0 chunks" not in done.stdout
    assert " and 1 archived transcript of session " in done.stdout and not archived.exists()
    assert not [
        r
        for r in orjson.loads(run("search", "--json", "Proactiveness").stdout)["results"]
        if r["session_id"] == SESSION
    ]
    assert run("reindex").returncode == 0  # read again: the tombstone keeps it out, of the archive too
    assert not archived.exists()
    assert not [
        r
        for r in orjson.loads(run("search", "--json", "Proactiveness").stdout)["results"]
        if r["session_id"] == SESSION
    ]
    assert run("forget", "--project", "nope", "--session", "x").returncode == 1  # exactly one

    with DaemonProcess(home, data) as daemon:  # through the daemon: new lines of a forgotten project stay out
        daemon.wait_idle()
        answer = httpx.post(
            daemon.url + "/api/forget", json={"kind": "project", "value": "/home/marco/projects/spotter"}
        )
        assert answer.status_code == 200 and answer.json()["removed"] > 0
        assert answer.json()["archived_removed"] == 1 and not (data / "archive" / "-q" / "b.jsonl.zst").exists()
        with open(spotter / "b.jsonl", "ab") as handle:
            handle.write(
                orjson.dumps(
                    {
                        "type": "user",
                        "uuid": "late",
                        "sessionId": "s2",
                        "cwd": "/home/marco/projects/spotter",
                        "message": {"role": "user", "content": "zanzibar quokka"},
                    }
                )
                + b"\n"
            )
        quiet(spotter / "b.jsonl")
        time.sleep(1.5)
        daemon.wait_idle()
        assert not daemon.search("zanzibar quokka", limit=20)
        assert not (data / "archive" / "-q" / "b.jsonl.zst").exists()
        assert daemon.stop() == 0


def test_excluded_projects_and_private_markers_stay_out(tmp_path: Path) -> None:
    home = home_with_tiny(tmp_path)
    other = home / "projects" / "-secret"
    other.mkdir()
    record = {
        "type": "user",
        "uuid": "u1",
        "sessionId": "s",
        "cwd": "/home/me/secret-work",
        "message": {"role": "user", "content": "plan the quarterly numbers"},
    }
    (other / "s.jsonl").write_bytes(orjson.dumps(record) + b"\n")
    marked = {
        **record,
        "uuid": "u2",
        "cwd": "/home/me/app",
        "message": {"role": "user", "content": "deploy it <private>the vault code is zebra-quasar-7741</private> now"},
    }
    (home / "projects" / "-p" / "m.jsonl").write_bytes(orjson.dumps(marked) + b"\n")
    for path in (other / "s.jsonl", home / "projects" / "-p" / "m.jsonl"):
        quiet(path)  # archived as they are read
    data = tmp_path / "data"
    env = {
        **os.environ,
        "CLAUDE_CONFIG_DIR": str(home),
        "SELFREFLECT_HOME": str(data),
        "SELFREFLECT_EXCLUDE_PROJECTS": "*/secret-*",
    }
    assert subprocess.run([sys.executable, "-m", "selfreflect", "import"], env=env, timeout=180).returncode == 0
    found = subprocess.run(
        [sys.executable, "-m", "selfreflect", "search", "--json", "quarterly numbers vault code"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    results = orjson.loads(found.stdout)["results"]
    assert not [r for r in results if "quarterly" in r["text"]]
    texts = " ".join(r["text"] for r in results)
    assert "deploy it [PRIVATE] now" in texts and "zebra-quasar" not in texts
    assert b"zebra-quasar" not in b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    assert (data / "archive" / "-p" / "m.jsonl.zst").is_file()  # with the marked text masked
    assert not (data / "archive" / "-secret").exists()  # an excluded project is not copied either
