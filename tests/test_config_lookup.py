"""Configs found by name (``pgvault run app``) and by ``$PGVAULT_CONFIG``; paths work as before."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pgvault.config_lookup import find_config, search_path, with_default_config
from pgvault.exceptions import ConfigError
from tests.conftest import pgvault_cli

COMMANDS = {"run", "list", "show", "verify"}


@pytest.fixture
def named(tmp_path: Path, make_config: Callable[..., Path]) -> tuple[Path, Path]:
    """A pipeline config installed as ``etc/app.toml`` in a search folder; (folder, file)."""
    folder = tmp_path / "etc"
    folder.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "file.txt").write_text("payload")
    config = folder / "app.toml"
    make_config({"type": "files", "paths": [str(data)]}, name="app").rename(config)
    return folder, config


def test_default_search_path_is_the_users_then_the_systems(tmp_path: Path) -> None:
    """Without PGVAULT_CONFIG_PATH, ~/.config/pgvault (or $XDG_CONFIG_HOME/pgvault) then
    /etc/pgvault are searched."""
    assert search_path({"HOME": str(tmp_path)}) == [
        tmp_path / ".config" / "pgvault",
        Path("/etc/pgvault"),
    ]
    assert search_path({"HOME": "/nowhere", "XDG_CONFIG_HOME": str(tmp_path)})[0] == (
        tmp_path / "pgvault"
    )


def test_a_name_is_found_in_the_first_folder_that_has_it(tmp_path: Path) -> None:
    """PGVAULT_CONFIG_PATH folders are searched in order; the first app.toml wins."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (second / "app.toml").write_text("")
    env = {"PGVAULT_CONFIG_PATH": f"{first}:{second}"}
    assert find_config("app", env) == second / "app.toml"
    (first / "app.toml").write_text("")
    assert find_config("app", env) == first / "app.toml"


def test_a_path_is_taken_as_given(tmp_path: Path) -> None:
    """Anything with a folder or a .toml suffix is a path, returned for load_config to judge."""
    env = {"PGVAULT_CONFIG_PATH": str(tmp_path)}
    (tmp_path / "app.toml").write_text("")
    assert find_config("missing.toml", env) == Path("missing.toml")
    assert find_config("./app", env) == Path("app")


def test_an_unknown_name_is_one_line_listing_every_place_looked(tmp_path: Path) -> None:
    """The error names the config and each file it tried."""
    env = {"HOME": str(tmp_path)}
    with pytest.raises(ConfigError) as info:
        find_config("nosuch", env)
    message = str(info.value)
    assert "\n" not in message
    assert "'nosuch'" in message
    assert str(tmp_path / ".config" / "pgvault" / "nosuch.toml") in message
    assert "/etc/pgvault/nosuch.toml" in message


def test_env_default_goes_in_only_when_no_config_is_given(named: tuple[Path, Path]) -> None:
    """With PGVAULT_CONFIG set, `list` gets it; `list app` and `list FILE` keep theirs."""
    folder, config = named
    env = {"PGVAULT_CONFIG": "other", "PGVAULT_CONFIG_PATH": str(folder)}
    assert with_default_config(["-q", "list"], COMMANDS, env) == ["-q", "list", "other"]
    assert with_default_config(["show", "latest"], COMMANDS, env) == ["show", "other", "latest"]
    assert with_default_config(["list", "app"], COMMANDS, env) == ["list", "app"]
    assert with_default_config(["list", str(config)], COMMANDS, env) == ["list", str(config)]
    assert with_default_config(["keygen", "--out", "k"], COMMANDS, env) == ["keygen", "--out", "k"]
    assert with_default_config(["list"], COMMANDS, {}) == ["list"]


def test_cli_runs_a_pipeline_found_by_name(named: tuple[Path, Path], tmp_path: Path) -> None:
    """`pgvault run app` backs up with etc/app.toml; `PGVAULT_CONFIG=app pgvault list` lists it."""
    folder, _ = named
    env = {"PGVAULT_CONFIG_PATH": str(folder)}
    done = pgvault_cli("run", "app", env=env)
    assert done.returncode == 0, done.stderr
    backup_id = done.stdout.split()[-1]
    listed = pgvault_cli("list", "--json", env={**env, "PGVAULT_CONFIG": "app"})
    assert listed.returncode == 0, listed.stderr
    assert [b["backup_id"] for b in json.loads(listed.stdout)] == [backup_id]


def test_cli_unknown_name_exits_2_with_one_line(tmp_path: Path) -> None:
    """An unknown name is a usage error (exit 2): one stderr line naming the places looked."""
    done = pgvault_cli("list", "nosuch", env={"PGVAULT_CONFIG_PATH": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert str(tmp_path / "nosuch.toml") in done.stderr
