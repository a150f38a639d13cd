"""What differs between Linux, macOS and Windows, in one place.

Everything else imports only what works everywhere. What this module does
per platform:

- processes: a pid is trusted only together with its start time (pids are
  reused after a process dies), read through psutil, except on Linux, where
  it is read from ``/proc`` as psutil reads it (importing psutil is 17 ms of
  a 100 ms CLI call);
- detaching a child (the daemon an MCP client starts): a new session on
  POSIX, a new process group without a console on Windows;
- reading the store's files ahead of its load in a helper process
  (:mod:`selfreflect.readahead`): not on Windows, where a file the helper
  holds open could not be deleted by the engine meanwhile;
- disk use: allocated blocks where the platform reports them, else sizes;
- where a user's data and config live by default (:func:`user_dirs`);
- the daemon's listening socket: ``SO_REUSEADDR`` on POSIX only
  (:func:`listening_socket`);
- path names: a path recorded on Windows (``C:\\Users\\me\\app``) is named
  by Windows rules wherever it is read.

Memory release (:mod:`selfreflect.memory`) is Linux-only and says so there.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

WINDOWS = sys.platform == "win32"
LINUX = sys.platform.startswith("linux")
# a file open in another process can be deleted (POSIX), so a helper may read the store's
READ_AHEAD = not WINDOWS


def user_dirs(env: Mapping[str, str] | None = None, platform: str = sys.platform) -> tuple[Path, Path]:
    """The user's folders for selfreflect's data and for its config file,
    by the platform's rules, written out here:

    - Windows: ``%LOCALAPPDATA%\\selfreflect`` for both (else
      ``~\\AppData\\Local\\selfreflect``);
    - macOS: ``~/Library/Application Support/selfreflect`` for both;
    - elsewhere: ``$XDG_DATA_HOME/selfreflect`` and ``$XDG_CONFIG_HOME/selfreflect``
      when they are absolute paths (the XDG rule), else ``~/.local/share/selfreflect``
      and ``~/.config/selfreflect``.

    These are platformdirs' answers as this project first took them. They are
    fixed here, not asked of platformdirs at each start, because a user's store
    must not move when a dependency is updated (platformdirs' newest versions
    follow the XDG variables on macOS too), and because importing platformdirs
    was a tenth of every ``selfreflect search``.
    """
    env = os.environ if env is None else env
    if platform == "win32":
        local = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return (Path(local) / "selfreflect",) * 2
    if platform == "darwin":
        return (Path.home() / "Library" / "Application Support" / "selfreflect",) * 2
    data, config = (_xdg(env.get(name, "")) for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME"))
    return (
        (data or Path.home() / ".local" / "share") / "selfreflect",
        (config or Path.home() / ".config") / "selfreflect",
    )


def _xdg(value: str) -> Path | None:
    """An XDG base folder: only an absolute path counts (the spec ignores others)."""
    return Path(value) if value.startswith("/") else None


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or ``None``
    when there is no such process, it has exited (a zombie its parent has
    not reaped yet), or it cannot be seen."""
    if LINUX:
        return _proc_started(pid)
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except (psutil.Error, OSError, ValueError):
        return None


def is_same_process(pid: int, started: float | None) -> bool:
    """``pid`` is alive and is the process that started at ``started``: a
    pid reused by another program after a crash does not pass."""
    if started is None:
        return False
    now = process_started(pid)
    return now is not None and abs(now - started) < 1.0


def _proc_started(pid: int) -> float | None:
    """``process_started`` from ``/proc``, as psutil computes it: the boot
    time plus the process's start in clock ticks after it (field 22 of
    ``/proc/PID/stat``; the command name before it may hold spaces and
    parentheses, so fields count from the last ``)``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        boot = next(line for line in Path("/proc/stat").read_bytes().splitlines() if line.startswith(b"btime "))
        fields = stat[stat.rindex(b")") + 2 :].split()
        if fields[0] == b"Z":
            return None
        return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def terminate(pid: int) -> None:
    """Ask process ``pid`` to stop (SIGTERM; on Windows the process ends)."""
    import psutil

    try:
        psutil.Process(pid).terminate()
    except psutil.NoSuchProcess:
        pass


def detached() -> dict[str, Any]:
    """``subprocess.Popen`` arguments that let a child outlive its parent and
    its parent's terminal."""
    if WINDOWS:
        import subprocess

        flags = getattr(subprocess, "DETACHED_PROCESS", 0) | getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
        return {"creationflags": flags, "close_fds": True}
    return {"start_new_session": True, "close_fds": True}


def disk_bytes(folder: Path) -> int:
    """Bytes the files under ``folder`` take on disk: their blocks (sparse,
    preallocated files count what they hold), or their size where blocks are
    not reported. One ``os.scandir`` walk: a stat per file on POSIX, none on
    Windows (the listing carries it). Entries that vanish meanwhile count 0."""
    total = 0
    folders = [str(folder)]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            folders.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            stat = entry.stat(follow_symlinks=False)
                            blocks = getattr(stat, "st_blocks", None)
                            total += int(blocks) * 512 if blocks is not None else int(stat.st_size)
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` and listening (``OSError`` if
    it cannot be bound).

    Made with its protocol named (``IPPROTO_TCP``): asyncio turns Nagle's
    algorithm off only on sockets that say so, and without that every
    request after the first on a kept-alive connection waited for the
    client's delayed ACK (40 ms on Linux). On POSIX ``SO_REUSEADDR`` lets a
    restarted daemon bind the port its last one left in ``TIME_WAIT``. Not
    on Windows, where it would let another process bind the same port and
    take its connections (Python's own servers leave it off there too)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if not WINDOWS:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def path_name(path: str) -> str:
    """The last part of a recorded path, by the rules of the platform that
    wrote it (a Windows path has a drive or backslashes)."""
    stripped = path.rstrip("/\\")
    if "\\" in stripped or (len(stripped) >= 2 and stripped[1] == ":"):
        return PureWindowsPath(stripped).name
    return PurePosixPath(stripped).name


def is_writable_dir(folder: Path) -> bool:
    """We can create files in ``folder`` (tried, not guessed from mode bits:
    a read-only mount or an ACL answers only to a real attempt)."""
    probe = folder / f".probe-{os.getpid()}"
    try:
        with open(probe, "wb"):
            pass
        probe.unlink()
        return True
    except OSError:
        return False


PRIVATE_UMASK = 0o077


def private_files() -> None:
    """From now on, files and folders this process creates are the user's
    alone (0600, 0700), whatever the umask was. No effect on Windows, where
    a user's profile folder is private already."""
    os.umask(PRIVATE_UMASK)


def make_private(folder: Path) -> int:
    """Take group and other permissions away from ``folder`` and everything
    in it (made by an older version, or under a looser umask). Symlinks are
    not followed. Returns how many entries were changed. POSIX only."""
    if WINDOWS or not folder.is_dir():
        return 0
    changed = 0
    for root, dirs, files in os.walk(folder):
        for name, private in [(root, 0o700)] + [(os.path.join(root, f), 0o600) for f in files]:
            try:
                st = os.lstat(name)
                if stat_is_link(st) or not st.st_mode & 0o077:
                    continue
                os.chmod(name, stat.S_IMODE(st.st_mode) & private)
                changed += 1
            except OSError:
                continue
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(root, d))]
    return changed


def stat_is_link(st: os.stat_result) -> bool:
    return stat.S_ISLNK(st.st_mode)


def sync_folder(folder: Path) -> None:
    """Make the entries of files just created in ``folder`` survive a power
    loss (POSIX: fsync the folder). Windows has no folder handle to sync;
    NTFS journals its metadata."""
    if WINDOWS:
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
