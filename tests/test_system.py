"""What differs between platforms stays in selfreflect.system (and the
Linux-only memory calls, gated in selfreflect.memory)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfreflect.settings import Settings
from selfreflect.system import (
    disk_bytes,
    is_same_process,
    listening_socket,
    path_name,
    process_started,
    user_dirs,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "selfreflect"
POSIX_ONLY = {"fcntl", "resource", "pwd", "grp", "termios", "posix", "tty", "pty"}


def test_no_module_imports_what_only_posix_has() -> None:
    """Every store command failed at import time on Windows (`import fcntl`)."""
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in POSIX_ONLY]
    assert not found
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "os.pread" not in text and "os.pwrite" not in text and "st_blocks *" not in text, path


def test_project_names_follow_the_rules_of_the_platform_that_wrote_them() -> None:
    assert path_name("/home/me/app") == "app"
    assert path_name("/home/me/app/") == "app"
    assert path_name("C:\\Users\\me\\app") == "app"
    assert path_name("C:\\Users\\me\\app\\") == "app"
    assert path_name("D:/work/app") == "app"


def test_a_pid_is_trusted_only_with_its_start_time() -> None:
    me = process_started(os.getpid())
    assert me is not None and is_same_process(os.getpid(), me)
    assert not is_same_process(os.getpid(), me - 3600)  # a pid reused by another program
    assert not is_same_process(os.getpid(), None)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_started(child.pid) is None or not is_same_process(child.pid, time.time() - 7200)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="elsewhere it is psutil's own answer")
def test_on_linux_a_start_time_is_psutils_without_psutil(tmp_path: Path) -> None:
    """Read from /proc, the start time is the one psutil gives (a daemon.json
    written by either reads the same), a zombie has none, and a command
    name with spaces and parentheses does not shift the fields."""
    import psutil

    assert process_started(os.getpid()) == pytest.approx(psutil.Process().create_time(), abs=0.01)
    odd = tmp_path / "py (odd) name"
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import time; time.sleep(30)"])
    try:
        assert psutil.Process(child.pid).name() == "py (odd) name"
        assert process_started(child.pid) == pytest.approx(psutil.Process(child.pid).create_time(), abs=0.01)
        child.kill()
        deadline = time.monotonic() + 10
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process_started(child.pid) is None  # exited, not reaped yet
    finally:
        child.kill()
        child.wait()
    assert process_started(child.pid) is None


@pytest.mark.skipif(sys.platform == "win32", reason="Windows reports no blocks (sizes count) and links need rights")
def test_disk_bytes_counts_blocks_of_every_file_below_and_nothing_twice(tmp_path: Path) -> None:
    """A sparse file counts what it holds, not its length; nested folders are
    walked; a link is not followed (no file counted twice, no loop)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "full").write_bytes(b"x" * 100_000)
    with open(tmp_path / "a" / "b" / "sparse", "wb") as sparse:
        sparse.truncate(50_000_000)  # 50 MB long, nothing written
    (tmp_path / "a" / "b" / "loop").symlink_to(tmp_path / "a")
    counted = disk_bytes(tmp_path)
    assert 100_000 <= counted < 1_000_000
    assert disk_bytes(tmp_path / "missing") == 0


def test_user_folders_follow_each_platforms_rules_whatever_the_libraries_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    linux = user_dirs({}, "linux")
    assert linux == (tmp_path / ".local/share/selfreflect", tmp_path / ".config/selfreflect")
    xdg = {"XDG_DATA_HOME": "/x/data", "XDG_CONFIG_HOME": "/x/config"}
    assert user_dirs(xdg, "linux") == (Path("/x/data/selfreflect"), Path("/x/config/selfreflect"))
    assert user_dirs(xdg, "freebsd14") == (Path("/x/data/selfreflect"), Path("/x/config/selfreflect"))
    relative = {"XDG_DATA_HOME": "data", "XDG_CONFIG_HOME": ""}  # not absolute: the XDG rule ignores it
    assert user_dirs(relative, "linux") == linux
    mac = tmp_path / "Library/Application Support/selfreflect"
    assert user_dirs(xdg, "darwin") == (mac, mac)  # where macOS users' stores are, XDG or not
    local = {"LOCALAPPDATA": str(tmp_path / "Local")}
    assert user_dirs({**local, **xdg}, "win32") == (tmp_path / "Local/selfreflect",) * 2
    assert user_dirs({}, "win32") == (tmp_path / "AppData/Local/selfreflect",) * 2


def test_settings_default_to_the_user_folders(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    (tmp_path / "config/selfreflect").mkdir(parents=True)
    (tmp_path / "config/selfreflect/config.toml").write_text("chunk_size = 7\n")
    settings = Settings.load({}, env=env)
    assert settings.data_dir == user_dirs(env)[0] == tmp_path / "data/selfreflect"
    assert settings.config_file == tmp_path / "config/selfreflect/config.toml" and settings.chunk_size == 7


def test_the_daemons_socket_turns_nagle_off_on_what_it_accepts() -> None:
    """asyncio (uvicorn's loop) turns Nagle's algorithm off on an accepted
    connection only when the listening socket names its protocol. Without
    it, each request after the first on a kept-alive connection (MCP
    clients keep theirs) waited for the client's delayed ACK: 40 ms."""
    import asyncio
    import socket

    async def accepted() -> int:
        sock = listening_socket("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        got: asyncio.Future[int] = loop.create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                got.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

        server = await loop.create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        try:
            return await asyncio.wait_for(got, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted()) != 0


def test_a_port_in_use_is_refused() -> None:
    first = listening_socket("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()
