"""Service files: run ``selfreflect serve`` at login, only when the user asks.

A systemd user unit on Linux, a launchd agent on macOS. Writing the file is
all we do: enabling it stays the user's command (printed for them), because
nothing here changes a user's setup on its own.

Neither restarts in a loop when another daemon holds the store (one an MCP
client started, exit code 3): systemd is told so (``RestartPreventExitStatus``),
and under launchd ``serve --if-not-running`` exits 0, which its ``KeepAlive``
takes as done. Both pass on the settings the user chose: the Claude folder,
the data folder, the config file.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from selfreflect.errors import SelfReflectError
from selfreflect.running import serve_command
from selfreflect.settings import Settings

LABEL = "dev.selfreflect.serve"


@dataclass(frozen=True)
class ServiceFile:
    path: Path
    text: str
    enable: str  # the command that starts it now and at every login


def service_file(settings: Settings, platform: str = sys.platform, home: Path | None = None) -> ServiceFile:
    """The service definition for this platform, running this Python's selfreflect.

    Raises:
        SelfReflectError: no service manager we know on this platform.
    """
    home = home or Path.home()
    argv = serve_command(settings, "--port", str(settings.port), "--started-by", "service")  # run in /
    environment = {"MAX_MEMORY_MB": str(settings.max_memory_mb), "WATCH_INTERVAL": str(settings.watch_interval)}
    if not settings.archive:
        environment["SELFREFLECT_ARCHIVE"] = "false"
    if not settings.prefer_local_embeddings:  # the key is a secret: never in this file (README: the config file)
        environment.update(PREFER_LOCAL_EMBEDDINGS="false", VOYAGE_MODEL=settings.voyage_model)
        if settings.voyage_url:
            environment["VOYAGE_BASE_URL"] = settings.voyage_url
    if platform.startswith("linux"):
        lines = [
            "[Unit]",
            "Description=selfreflect: searchable memory of Claude Code conversations",
            "",
            "[Service]",
            f"ExecStart={shlex.join(argv)}",
            "WorkingDirectory=/",
            *(f"Environment={key}={value}" for key, value in environment.items()),
            "Restart=on-failure",
            "RestartSec=5",
            "RestartPreventExitStatus=3",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
        return ServiceFile(
            home / ".config" / "systemd" / "user" / "selfreflect.service",
            "\n".join(lines),
            "systemctl --user daemon-reload && systemctl --user enable --now selfreflect",
        )
    if platform == "darwin":
        args = "".join(f"\n    <string>{escape(a)}</string>" for a in [*argv, "--if-not-running"])
        env = "".join(f"\n    <key>{k}</key><string>{escape(v)}</string>" for k, v in environment.items())
        log = escape(str(settings.data_dir / "serve.log"))
        text = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>{LABEL}</string>
  <key>ProgramArguments</key>
  <array>{args}
  </array>
  <key>EnvironmentVariables</key>
  <dict>{env}
  </dict>
  <key>WorkingDirectory</key><string>/</string>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>ThrottleInterval</key><integer>10</integer>
  <key>StandardErrorPath</key><string>{log}</string>
</dict>
</plist>
"""
        path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        return ServiceFile(path, text, f"launchctl load -w {shlex.quote(str(path))}")
    raise SelfReflectError(f"no service manager known on {platform}: run `selfreflect serve` yourself")


def install(service: ServiceFile) -> None:
    """Write the service file (replacing an older one of ours)."""
    service.path.parent.mkdir(parents=True, exist_ok=True)
    service.path.write_text(service.text, encoding="utf-8")
