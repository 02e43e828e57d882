"""[[hook]] commands: run with the event's fields (never a secret) in their environment; a failing
or timed-out before_* hook stops the operation with its output; after_* hooks run regardless."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import pgvault
from pgvault.exceptions import ExecHookError
from tests.conftest import pgvault_cli

ConfigMaker = Callable[..., Path]


def hook(on: str, *command: str, timeout: str = "60s") -> str:
    quoted = ", ".join(f'"{c}"' for c in command)
    return f'[[hook]]\non = ["{on}"]\ncommand = [{quoted}]\ntimeout = "{timeout}"\n'


def record_env(to: Path) -> tuple[str, ...]:
    """A command writing its PGVAULT_* and SECRET_* variables to ``to``."""
    return ("sh", "-c", f"env | grep -E '^(PGVAULT_|HOOK_SECRET)' | sort > {to}")


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    return folder


def test_restore_hooks_get_the_fields_and_no_secret(
    make_config: ConfigMaker, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """before_restore and after_restore see the backup id, target and outcome; the variable a
    notifier reads its secret from is not passed on."""
    monkeypatch.setenv("HOOK_SECRET_URL", "https://hooks.example/T0k3n")
    extra = (
        hook("before_restore", *record_env(tmp_path / "before.env"))
        + hook("after_restore", *record_env(tmp_path / "after.env"))
        + '[[notify]]\ntype = "webhook"\nurl_env = "HOOK_SECRET_URL"\nevents = ["drill_failed"]\n'
    )
    config = pgvault.load_config(make_config({"type": "files", "paths": [str(data)]}, extra=extra))
    backup = pgvault.run(config).backup_id
    pgvault.restore(config, target_dir=tmp_path / "out")
    before, after = read_env(tmp_path / "before.env"), read_env(tmp_path / "after.env")
    assert before["PGVAULT_EVENT"] == "before_restore" and before["PGVAULT_BACKUP_ID"] == backup
    assert before["PGVAULT_PIPELINE"] == "test" and before["PGVAULT_TARGET"] == str(
        tmp_path / "out"
    )
    assert before["PGVAULT_CONFIG"] == str(config.path) and "PGVAULT_OUTCOME" not in before
    assert after["PGVAULT_OUTCOME"] == "succeeded" and after["PGVAULT_EVENT"] == "after_restore"
    assert not any(k.startswith("HOOK_SECRET") for k in {**before, **after})
    assert os.environ["HOOK_SECRET_URL"]  # it was set: the hook did not get it


def test_a_failing_before_backup_hook_stops_the_backup(
    make_config: ConfigMaker, data: Path, tmp_path: Path
) -> None:
    """Exit 3: no backup in the vault, one CLI error line with the command's output; the
    after_backup hook still ran and was told the backup failed."""
    extra = hook("before_backup", "sh", "-c", "echo starting; echo app will not stop >&2; exit 3")
    extra += hook("after_backup", *record_env(tmp_path / "after.env"))
    path = make_config({"type": "files", "paths": [str(data)]}, extra=extra)
    out = pgvault_cli("run", path)
    assert out.returncode == 1
    assert out.stderr == (
        "pgvault: error: before_backup hook `sh -c 'echo starting; echo app will not stop >&2; "
        "exit 3'` failed (exit 3): starting | app will not stop; backup not started\n"
    )
    assert pgvault.Vault.from_config(pgvault.load_config(path)).backups() == []
    after = read_env(tmp_path / "after.env")
    assert after["PGVAULT_OUTCOME"] == "failed" and "app will not stop" in after["PGVAULT_ERROR"]


def test_a_hook_that_hangs_is_stopped_at_its_timeout(make_config: ConfigMaker, data: Path) -> None:
    """A before_prune hook sleeping past its timeout fails the prune, saying so."""
    extra = "[retention]\nkeep_last = 1\n" + hook("before_prune", "sleep", "30", timeout="1s")
    config = pgvault.load_config(make_config({"type": "files", "paths": [str(data)]}, extra=extra))
    with pytest.raises(ExecHookError, match=r"before_prune hook `sleep 30` timed out after 1s"):
        pgvault.prune(config)
    pgvault.prune(config, dry_run=True)  # a dry run changes nothing and runs no hook


def test_a_failing_after_hook_is_logged_and_the_backup_stands(
    make_config: ConfigMaker, data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """after_backup exiting 1 is an ERROR record; the backup is listed all the same."""
    extra = hook("after_backup", "sh", "-c", "echo copy failed; exit 1")
    config = pgvault.load_config(make_config({"type": "files", "paths": [str(data)]}, extra=extra))
    manifest = pgvault.run(config)
    assert [m.backup_id for m in pgvault.Vault.from_config(config).backups()] == [
        manifest.backup_id
    ]
    [error] = [r for r in caplog.records if r.name == "pgvault.hooks" and r.levelname == "ERROR"]
    assert "after_backup hook `sh -c 'echo copy failed; exit 1'` failed (exit 1): copy failed" in (
        error.getMessage()
    )


def test_hook_table_mistakes_are_named(make_config: ConfigMaker, data: Path) -> None:
    """An unknown event and an empty command: errors naming the key."""
    with pytest.raises(
        pgvault.ConfigError, match=r"hook\[0\]\.on\[0\]: invalid value 'befor_restore'"
    ):
        pgvault.load_config(
            make_config({"type": "files", "paths": [str(data)]}, extra=hook("befor_restore", "x"))
        )
    with pytest.raises(pgvault.ConfigError, match=r"hook\[0\]: invalid value: command must not"):
        pgvault.load_config(
            make_config(
                {"type": "files", "paths": [str(data)]},
                extra='[[hook]]\non = ["after_backup"]\ncommand = []\n',
            )
        )
