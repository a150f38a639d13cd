"""settings.Settings.load: flags > environment > TOML file > defaults.

Every test passes an explicit ``env`` so the real environment cannot leak in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from selfreflect.errors import ConfigError
from selfreflect.settings import Settings


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        'claude_dir = "/from/file/claude"\n'
        'data_dir = "/from/file/data"\n'
        "chunk_size = 11\n"
        "watch_interval = 11.5\n"
        "max_memory_mb = 111\n",
        encoding="utf-8",
    )
    return path


ENV = {
    "CLAUDE_CONFIG_DIR": "/from/env/claude",
    "SELFREFLECT_HOME": "/from/env/data",
    "CHUNK_SIZE": "22",
    "WATCH_INTERVAL": "22.5",
    "MAX_MEMORY_MB": "222",
}
FLAGS = {
    "claude_dir": Path("/from/flags/claude"),
    "data_dir": Path("/from/flags/data"),
    "chunk_size": 33,
    "watch_interval": 33.5,
    "max_memory_mb": 333,
}


def values(settings: Settings) -> tuple[object, ...]:
    return (
        settings.claude_dir,
        settings.data_dir,
        settings.chunk_size,
        settings.watch_interval,
        settings.max_memory_mb,
    )


def test_flags_win_over_env_and_file(config: Path) -> None:
    settings = Settings.load(FLAGS, env=ENV, config_file=config)
    assert values(settings) == (Path("/from/flags/claude"), Path("/from/flags/data"), 33, 33.5, 333)


def test_env_wins_over_file(config: Path) -> None:
    settings = Settings.load({}, env=ENV, config_file=config)
    assert values(settings) == (Path("/from/env/claude"), Path("/from/env/data"), 22, 22.5, 222)


def test_file_wins_over_defaults(config: Path) -> None:
    settings = Settings.load({}, env={}, config_file=config)
    assert values(settings) == (Path("/from/file/claude"), Path("/from/file/data"), 11, 11.5, 111)


def test_each_setting_falls_through_on_its_own(config: Path) -> None:
    settings = Settings.load(
        {"chunk_size": 33, "watch_interval": None},  # None: not given on the command line
        env={"WATCH_INTERVAL": "22.5", "MAX_MEMORY_MB": ""},  # empty: not set
        config_file=config,
    )
    assert values(settings) == (Path("/from/file/claude"), Path("/from/file/data"), 33, 22.5, 111)


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    settings = Settings.load({}, env={}, config_file=empty)
    assert settings.claude_dir == Path.home() / ".claude"
    assert settings.projects_dir == Path.home() / ".claude" / "projects"
    assert (settings.chunk_size, settings.watch_interval, settings.max_memory_mb) == (32, 60.0, 200)
    assert settings.data_dir.is_absolute()


def test_selfreflect_config_env_points_at_the_file(config: Path) -> None:
    settings = Settings.load({}, env={"SELFREFLECT_CONFIG": str(config)})
    assert values(settings) == (Path("/from/file/claude"), Path("/from/file/data"), 11, 11.5, 111)


def test_home_in_paths_is_expanded(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('claude_dir = "~/elsewhere/.claude"\n', encoding="utf-8")
    settings = Settings.load({}, env={"SELFREFLECT_HOME": "~/data"}, config_file=path)
    assert settings.claude_dir == Path.home() / "elsewhere" / ".claude"
    assert settings.data_dir == Path.home() / "data"


def test_unknown_key_in_the_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("chunk_size = 8\nchunksize = 16\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="chunksize"):
        Settings.load({}, env={}, config_file=path)


@pytest.mark.parametrize(
    ("flags", "env", "toml"),
    [
        ({}, {}, "chunk_size = 0\n"),
        ({}, {}, "max_memory_mb = -5\n"),
        ({}, {}, 'chunk_size = "abc"\n'),
        ({}, {"CHUNK_SIZE": "abc"}, ""),
        ({}, {"CHUNK_SIZE": "0"}, ""),
        ({}, {"WATCH_INTERVAL": "soon"}, ""),
        ({}, {"MAX_MEMORY_MB": "1.5GB"}, ""),
        ({"chunk_size": 0}, {}, ""),
        ({}, {"SELFREFLECT_MERGE_POINTS": "-1"}, ""),
    ],
)
def test_bad_value_is_an_error(tmp_path: Path, flags: dict[str, object], env: dict[str, str], toml: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError):
        Settings.load(flags, env=env, config_file=path)


def test_merging_is_the_stores_own_unless_set(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("", encoding="utf-8")
    assert Settings.load({}, env={}, config_file=path).merge_points is None
    assert Settings.load({}, env={"SELFREFLECT_MERGE_POINTS": "0"}, config_file=path).merge_points == 0
    assert Settings.load({}, env={"SELFREFLECT_MERGE_POINTS": "8192"}, config_file=path).merge_points == 8192


def test_config_file_that_is_not_toml_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("chunk_size = = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        Settings.load({}, env={}, config_file=path)


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load({}, env={}, config_file=tmp_path / "nope.toml")


def test_voyage_settings_and_the_key_never_shown(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    settings = Settings.load(
        {}, env={"PREFER_LOCAL_EMBEDDINGS": "false", "VOYAGE_API_KEY": "pa-one"}, config_file=empty
    )
    assert (settings.prefer_local_embeddings, settings.voyage_key, settings.voyage_model) == (
        False,
        "pa-one",
        "voyage-4-lite",
    )
    both = {"VOYAGE_KEY": "pa-two", "VOYAGE_API_KEY": "pa-one", "VOYAGE_MODEL": "voyage-4", "VOYAGE_BASE_URL": "x"}
    settings = Settings.load({}, env={**both, "SELFREFLECT_TOKEN": "t0ken"}, config_file=empty)
    assert (settings.voyage_key, settings.voyage_model, settings.voyage_url) == ("pa-two", "voyage-4", "x")
    assert "pa-two" not in repr(settings) and "t0ken" not in repr(settings)
    empty.write_text('voyage_key = "pa-file"\n', encoding="utf-8")
    assert Settings.load({}, env={}, config_file=empty).voyage_key == "pa-file"
