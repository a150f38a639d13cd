"""Settings: one typed object, built once at the entry point, passed down.

Precedence: command-line flags > environment > TOML config file > defaults.
Every environment name is resolved here and nowhere else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from selfreflect.errors import ConfigError

# setting name -> environment variable. The seed's names keep their meaning.
ENV = {
    "claude_dir": "CLAUDE_CONFIG_DIR",
    "data_dir": "SELFREFLECT_HOME",
    "chunk_size": "CHUNK_SIZE",
    "max_memory_mb": "MAX_MEMORY_MB",
    "watch_interval": "WATCH_INTERVAL",
    "prefer_local_embeddings": "PREFER_LOCAL_EMBEDDINGS",
    "voyage_key": "VOYAGE_KEY",
    "voyage_model": "VOYAGE_MODEL",
    "voyage_url": "VOYAGE_BASE_URL",
    "qdrant_url": "QDRANT_URL",
    "qdrant_api_key": "QDRANT_API_KEY",
    "qdrant_collection": "QDRANT_COLLECTION",
    "qdrant_shards": "QDRANT_SHARDS",
    "qdrant_replicas": "QDRANT_REPLICAS",
    "qdrant_write_consistency": "QDRANT_WRITE_CONSISTENCY",
    "qdrant_on_disk": "QDRANT_ON_DISK",
    "qdrant_quantization": "QDRANT_QUANTIZATION",
    "machine": "SELFREFLECT_MACHINE",
    "max_line_mb": "SELFREFLECT_MAX_LINE_MB",
    "port": "SELFREFLECT_PORT",
    "decay_half_life_days": "SELFREFLECT_DECAY_HALF_LIFE_DAYS",
    "decay_weight": "SELFREFLECT_DECAY_WEIGHT",
    "segment_points": "SELFREFLECT_SEGMENT_POINTS",
    "merge_points": "SELFREFLECT_MERGE_POINTS",
    "host": "SELFREFLECT_HOST",
    "token": "SELFREFLECT_TOKEN",
    "include_projects": "SELFREFLECT_INCLUDE_PROJECTS",
    "exclude_projects": "SELFREFLECT_EXCLUDE_PROJECTS",
    "group_repositories": "SELFREFLECT_GROUP_REPOSITORIES",
    "index_history": "SELFREFLECT_INDEX_HISTORY",
    "archive": "SELFREFLECT_ARCHIVE",
    "auto_compact": "SELFREFLECT_AUTO_COMPACT",
}
# other names a setting is read from when its own is unset: the official Voyage client's
ENV_ALSO = {"voyage_key": ("VOYAGE_API_KEY",)}

LOOPBACK = ("127.0.0.1", "localhost", "::1")

DEFAULT_PORT = 7718
_SWITCHES = (  # the settings that are on or off
    "prefer_local_embeddings",
    "group_repositories",
    "qdrant_on_disk",
    "index_history",
    "archive",
    "auto_compact",
)
_MADE_PRIVATE: set[Path] = set()


@dataclass(frozen=True)
class Settings:
    """Where things live and how much work one batch may hold.

    Attributes:
        claude_dir: Claude Code's folder (its ``projects/`` holds the transcripts).
        data_dir: our folder: the store, the read positions, the config.
        chunk_size: chunks embedded and written per batch (CHUNK_SIZE). Read
            positions are saved after each batch, so it also bounds the work
            redone after a crash.
        max_memory_mb: the daemon's memory cap (MAX_MEMORY_MB).
        watch_interval: seconds between full rescans in the daemon (WATCH_INTERVAL).
        prefer_local_embeddings: use the bundled model (PREFER_LOCAL_EMBEDDINGS);
            ``False`` embeds with Voyage AI, which needs ``voyage_key``.
        voyage_key: the Voyage AI API key (VOYAGE_KEY, or VOYAGE_API_KEY).
        voyage_model: the Voyage AI model (VOYAGE_MODEL).
        voyage_url: another endpoint speaking Voyage AI's API, such as a proxy
            (VOYAGE_BASE_URL; default: the official client's).
        qdrant_url: a Qdrant server instead of the embedded store (QDRANT_URL;
            ``https://`` for TLS).
        qdrant_api_key: the server's API key (QDRANT_API_KEY).
        qdrant_collection: the collection on the server (QDRANT_COLLECTION).
        qdrant_shards, qdrant_replicas, qdrant_write_consistency: the
            collection's shard_number, replication_factor and
            write_consistency_factor when selfreflect creates it (a cluster).
        qdrant_on_disk: vectors and payloads on disk, not in the server's RAM.
        qdrant_quantization: ``none`` or ``int8`` (scalar quantization of the
            dense vectors, kept in RAM, originals on disk).
        machine: this machine's name, recorded with every point it writes
            (SELFREFLECT_MACHINE; the host name by default): many machines
            can write into one server collection.
        max_line_mb: longer transcript lines are skipped and reported.
        port: the daemon's HTTP port on 127.0.0.1 (SELFREFLECT_PORT; 0 picks a free one).
        decay_half_life_days, decay_weight: recency decay, when a search asks
            for it (see :class:`selfreflect.search.Decay`).
        segment_points: points the store takes in memory before it seals
            them into an on-disk segment (SELFREFLECT_SEGMENT_POINTS).
        merge_points: the most points a merge of sealed segments makes
            (SELFREFLECT_MERGE_POINTS); 0 does not merge; unset, the store's
            own (4,096 for a new store; a store made before merging was the
            default stays as it is).
        config_file: the TOML file these settings were read from, if any
            (handed on to a daemon or service started for this user).
        host: the address the daemon listens on (SELFREFLECT_HOST; loopback
            by default; anything else needs ``token``).
        token: a secret every HTTP request must carry (SELFREFLECT_TOKEN), as
            ``Authorization: Bearer <token>``.
        include_projects, exclude_projects: globs over a project's path or
            name (SELFREFLECT_INCLUDE_PROJECTS / _EXCLUDE_PROJECTS, comma
            separated): only included projects are indexed (all when empty),
            and never an excluded one.
        group_repositories: a session started in a subfolder or a linked
            worktree of a git repository belongs to the repository's main
            working tree (SELFREFLECT_GROUP_REPOSITORIES; on).
        index_history: index the prompts of Claude Code's ``history.jsonl``,
            which outlive the transcripts (SELFREFLECT_INDEX_HISTORY; on).
        archive: keep a compressed copy of every transcript read, in
            ``<data dir>/archive/`` (SELFREFLECT_ARCHIVE; on): what Claude
            Code's clean-up deletes stays readable (:mod:`selfreflect.archive`).
        auto_compact: the daemon compacts the store on its own once reading
            has caught up and the store holds many small segments, as after
            a backfill (SELFREFLECT_AUTO_COMPACT; on): a copy is compacted by
            a process of its own while the daemon serves and reads
            (:mod:`selfreflect.compaction`).
    """

    claude_dir: Path
    data_dir: Path
    chunk_size: int = 32
    max_memory_mb: int = 200
    watch_interval: float = 60.0
    prefer_local_embeddings: bool = True
    voyage_key: str | None = field(default=None, repr=False)  # a secret: never in a log line
    voyage_model: str = "voyage-4-lite"
    voyage_url: str | None = None
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    qdrant_collection: str = "selfreflect"
    qdrant_shards: int = 1
    qdrant_replicas: int = 1
    qdrant_write_consistency: int = 1
    qdrant_on_disk: bool = True
    qdrant_quantization: str = "none"
    machine: str = ""
    max_line_mb: float = 8.0
    port: int = DEFAULT_PORT
    decay_half_life_days: float = 30.0
    decay_weight: float = 0.3
    segment_points: int = 1024
    merge_points: int | None = None
    config_file: Path | None = None
    host: str = "127.0.0.1"
    token: str | None = field(default=None, repr=False)
    include_projects: tuple[str, ...] = ()
    exclude_projects: tuple[str, ...] = ()
    group_repositories: bool = True
    index_history: bool = True
    archive: bool = True
    auto_compact: bool = True

    @property
    def projects_dir(self) -> Path:
        return self.claude_dir / "projects"

    @property
    def history_file(self) -> Path:
        return self.claude_dir / "history.jsonl"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def state_file(self) -> Path:
        return self.data_dir / "state.sqlite3"

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"

    @property
    def max_line_bytes(self) -> int:
        return int(self.max_line_mb * 1024 * 1024)

    def ensure_data_dir(self) -> Path:
        """The data folder, created if needed and checked writable.

        Raises:
            ConfigError: it is a file, or cannot be created or written, with
                what to do about it.
        """
        folder = self.data_dir
        choose = "choose another folder with --data-dir or SELFREFLECT_HOME"
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"the data folder {folder} is a file, not a folder: {choose}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the data folder {folder}: {exc.strerror or exc}; {choose}") from exc
        from selfreflect.system import is_writable_dir, make_private

        if not is_writable_dir(folder):
            raise ConfigError(f"cannot write to the data folder {folder} (read-only or not yours): {choose}")
        if folder not in _MADE_PRIVATE:  # once a process: new files are private by the umask (cli.main)
            make_private(folder)  # the history is private: 0700 folders, 0600 files, also those made before
            _MADE_PRIVATE.add(folder)
        return folder

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        config_file: Path | None = None,
    ) -> Settings:
        """Build the settings from flags, environment, config file and defaults.

        Args:
            flags: values given on the command line (``None`` values are ignored).
            env: the environment (``os.environ`` by default).
            config_file: a TOML file; default ``$SELFREFLECT_CONFIG`` or
                ``<user config dir>/selfreflect/config.toml`` when it exists.
        """
        env = os.environ if env is None else env
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        explicit = config_file or _path(env.get("SELFREFLECT_CONFIG"))
        path = explicit or _default_config_file(env)
        from_file: dict[str, Any] = {}
        if path.exists():
            tomllib = _toml()
            try:
                from_file = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        elif explicit is not None:
            raise ConfigError(f"config file {explicit} does not exist")
        values: dict[str, Any] = {"config_file": path if path.exists() else None}
        for f in fields(cls):
            if f.name == "config_file":
                continue
            if f.name in flags:
                raw, given = flags[f.name], f"--{f.name.replace('_', '-')} {flags[f.name]!r}"
            elif (named := _from_env(f.name, env)) is not None:
                raw, given = named, f"the environment variable {ENV[f.name]}={named!r}"
            elif f.name in from_file:
                raw, given = from_file[f.name], f"{f.name} = {from_file[f.name]!r} in {path}"
            else:
                continue
            try:
                values[f.name] = _convert(f.name, raw)
            except ValueError as exc:  # name what the user set, where they set it
                raise ConfigError(f"{given}: {exc}") from None
        values.setdefault("claude_dir", Path.home() / ".claude")
        values.setdefault("data_dir", _default_data_dir(env))
        values.setdefault("machine", _machine_name())
        unknown = set(from_file) - {f.name for f in fields(cls)} | ({"config_file"} & set(from_file))
        if unknown:
            raise ConfigError(f"unknown setting(s) in {path}: {', '.join(sorted(unknown))}")
        settings = cls(**values)
        if settings.host not in LOOPBACK and not settings.token:
            raise ConfigError(
                f"listening on {settings.host} lets other machines call the daemon: set SELFREFLECT_TOKEN "
                "(every request must then carry it), or keep the default host 127.0.0.1"
            )
        return settings


def _convert(name: str, raw: Any) -> Any:
    """The value of setting ``name`` from what was given.

    Raises:
        ValueError: it cannot be one, saying what it must be.
    """
    if name in ("claude_dir", "data_dir"):
        return Path(os.path.expanduser(str(raw)))
    if name in (
        "chunk_size",
        "max_memory_mb",
        "port",
        "segment_points",
        "merge_points",
        "qdrant_shards",
        "qdrant_replicas",
        "qdrant_write_consistency",
    ):
        value = _number(raw, int, "a whole number")
        if name == "port" and not 0 <= value <= 65535:
            raise ValueError("must be between 0 and 65535")
        if name == "merge_points" and value < 0:
            raise ValueError("must be 0 (no merging) or more")
        if name not in ("port", "merge_points") and value < 1:
            raise ValueError("must be 1 or more")
        return value
    if name == "decay_weight":
        weight = _number(raw, float, "a number")
        if not 0.0 <= weight <= 1.0:
            raise ValueError("must be between 0 and 1")
        return weight
    if name in ("include_projects", "exclude_projects"):
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())
    if name in ("watch_interval", "max_line_mb", "decay_half_life_days"):
        seconds_or_mb = _number(raw, float, "a number")
        if seconds_or_mb <= 0:
            raise ValueError("must be more than 0")
        return seconds_or_mb
    if name == "qdrant_quantization":
        if str(raw).lower() not in ("none", "int8"):
            raise ValueError("must be none or int8")
        return str(raw).lower()
    if name in _SWITCHES:
        if isinstance(raw, bool):
            return raw
        return str(raw).strip().lower() in ("1", "true", "yes", "on")
    return str(raw)


def _number(raw: Any, kind: type[Any], what: str) -> Any:
    if isinstance(raw, bool):
        raise ValueError(f"must be {what}")
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise ValueError(f"must be {what}") from None


def _machine_name() -> str:
    import socket

    return socket.gethostname() or "localhost"


def _from_env(name: str, env: Mapping[str, str]) -> str | None:
    """The setting's value in the environment: its variable, else an alias (``ENV_ALSO``)."""
    for variable in (ENV.get(name), *ENV_ALSO.get(name, ())):
        if variable and env.get(variable, "") != "":
            return env[variable]
    return None


def _path(value: str | None) -> Path | None:
    return Path(os.path.expanduser(value)) if value else None


def _toml() -> Any:
    """The TOML reader, imported only when there is a config file to read
    (its import is a twentieth of a ``selfreflect search``)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


def _default_data_dir(env: Mapping[str, str]) -> Path:
    from selfreflect.system import user_dirs

    return user_dirs(env)[0]


def _default_config_file(env: Mapping[str, str]) -> Path:
    from selfreflect.system import user_dirs

    return user_dirs(env)[1] / "config.toml"
