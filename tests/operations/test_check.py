"""pgvault check: each threshold of [check] with its figure and threshold on its own line, Nagios
exit codes, an unreachable sink, free space, and a config error that is still CRITICAL."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.observability import read_metrics
from pgvault.operations.check import Status
from pgvault.vault.contents import Vault
from tests.conftest import pgvault_cli
from tests.fake_backups import daily_history, fake_backup

ConfigMaker = Callable[..., Path]
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def files_source(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "data").mkdir()
    return {"type": "files", "paths": [str(tmp_path / "data")]}


@pytest.fixture
def make(make_config: ConfigMaker, files_source: dict[str, Any]) -> Callable[..., Any]:
    def build(check: str = "", **kwargs: Any) -> pgvault.PipelineConfig:
        extra = f"[check]\n{check}\n" if check else ""
        return pgvault.load_config(make_config(files_source, extra=extra, **kwargs))

    return build


def test_an_empty_vault_is_critical(make: Callable[..., pgvault.PipelineConfig]) -> None:
    """No backup at all is the first thing a monitor must catch."""
    result = pgvault.check(make(), now=NOW)
    assert result.status is Status.CRITICAL
    assert result.lines() == [
        f"CRITICAL: no complete backup in vault 'test' at {result.location} (max_age 26h)"
    ]


def test_a_fresh_vault_is_ok(make: Callable[..., pgvault.PipelineConfig]) -> None:
    """A recent backup with defaults: OK, one summary line naming the newest backup."""
    config = make()
    backup_id = fake_backup(Vault.from_config(config), NOW - timedelta(hours=3))
    result = pgvault.check(config, now=NOW)
    assert result.ok and result.status is Status.OK
    [line] = result.lines()
    assert line.startswith("OK: vault 'test' at ") and f"newest {backup_id} (3h old" in line


def test_every_problem_on_its_own_line_with_figure_and_threshold(
    make: Callable[..., pgvault.PipelineConfig],
) -> None:
    """Stale, few, small and shrunk: four lines, worst first, each with its numbers."""
    config = make('max_age = "1d"\nmin_count = 5\nmin_size = "1MiB"\nmax_shrink = 40')
    vault = Vault.from_config(config)
    previous = fake_backup(vault, NOW - timedelta(days=4), size=10_000)
    newest = fake_backup(vault, NOW - timedelta(days=3, hours=2), size=4_000)
    result = pgvault.check(config, now=NOW)
    assert result.status is Status.CRITICAL
    assert result.lines() == [
        f"CRITICAL: newest complete backup {newest} is 3d 2h old (max_age 1d)",
        f"CRITICAL: newest backup {newest} is 3.9 KiB (4000 bytes) (min_size 1.0 MiB)",
        "WARNING: 2 complete backup(s) in the vault (min_count 5)",
        f"WARNING: newest backup {newest} is 3.9 KiB, 60.0% smaller than the previous "
        f"{previous} (9.8 KiB) (max_shrink 40%)",
    ]


def test_warn_age_is_a_warning_before_max_age(make: Callable[..., pgvault.PipelineConfig]) -> None:
    """Between warn_age and max_age the status is WARNING (exit 1), not CRITICAL."""
    config = make('max_age = "2d"\nwarn_age = "26h"')
    newest = fake_backup(Vault.from_config(config), NOW - timedelta(hours=30))
    result = pgvault.check(config, now=NOW)
    assert result.status is Status.WARNING
    assert result.lines() == [
        f"WARNING: newest complete backup {newest} is 1d 6h old (warn_age 26h)"
    ]


def test_shrink_within_the_threshold_is_fine(make: Callable[..., pgvault.PipelineConfig]) -> None:
    """A database that shrank 30% passes max_shrink = 50 (the default)."""
    config = make()
    vault = Vault.from_config(config)
    fake_backup(vault, NOW - timedelta(days=1, hours=3), size=10_000)
    fake_backup(vault, NOW - timedelta(hours=3), size=7_000)
    assert pgvault.check(config, now=NOW).ok


def test_an_unreachable_sink_is_critical(
    make_config: ConfigMaker, files_source: dict[str, Any], tmp_path: Path
) -> None:
    """A sink that cannot be listed (here: its folder is a file) is CRITICAL, saying why."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = pgvault.load_config(
        make_config(files_source, sink={"type": "local", "path": str(blocker)})
    )
    result = pgvault.check(config, now=NOW)
    assert result.lines() == [f"CRITICAL: sink unreachable: local sink: {blocker} is not a folder"]


def test_low_free_space_warns(make: Callable[..., pgvault.PipelineConfig]) -> None:
    """min_free as a share of the disk, and a next backup that cannot fit, both warn."""
    config = make('min_free = "100%"')
    fake_backup(Vault.from_config(config), NOW - timedelta(hours=1))
    result = pgvault.check(config, now=NOW)
    assert result.free_bytes is not None and result.total_bytes is not None
    [line] = result.lines()
    assert line.startswith("WARNING: ") and "free at" in line and "(min_free 100%, " in line

    config = make()
    fake_backup(Vault.from_config(config), NOW - timedelta(minutes=30), claimed_size=2**60)
    [line] = pgvault.check(config, now=NOW).lines()
    assert line.startswith("WARNING: ")
    assert "less than the newest backup (1048576.0 TiB): the next backup may not fit" in line


def test_safety_backups_do_not_hide_a_stopped_schedule(
    make: Callable[..., pgvault.PipelineConfig],
) -> None:
    """A restore's fresh safety backup does not make a 3-day-old scheduled backup look recent."""
    config = make()
    vault = Vault.from_config(config)
    scheduled = fake_backup(vault, NOW - timedelta(days=3))
    fake_backup(vault, NOW - timedelta(hours=1), kind="safety")
    [line] = pgvault.check(config, now=NOW).lines()
    assert line == f"CRITICAL: newest complete backup {scheduled} is 3d old (max_age 26h)"


def test_cli_exit_codes_and_json(make_config: ConfigMaker, files_source: dict[str, Any]) -> None:
    """check exits 2, 1, 0 as the vault goes from empty to few to healthy; --json says the same."""
    path = make_config(files_source, extra="[check]\nmin_count = 3\n")
    vault = Vault.from_config(pgvault.load_config(path))
    empty = pgvault_cli("check", path)
    assert empty.returncode == 2 and empty.stdout.startswith("CRITICAL: no complete backup")

    now = datetime.now(UTC)
    fake_backup(vault, now - timedelta(hours=5))
    few = pgvault_cli("check", path)
    assert few.returncode == 1
    assert few.stdout == "WARNING: 1 complete backup(s) in the vault (min_count 3)\n"
    assert few.stderr == ""

    daily_history(vault, now - timedelta(days=3), 2)
    ok = pgvault_cli("check", path, "--json")
    assert ok.returncode == 0, ok.stdout
    data = json.loads(ok.stdout)
    assert data["status"] == "OK" and data["exit_code"] == 0 and data["backups"] == 3
    assert data["newest"]["age_seconds"] >= 5 * 3600 - 60


def test_a_config_error_is_critical_in_one_line(tmp_path: Path) -> None:
    """A typo in [check]: exit 2, one stderr line naming file and key, CRITICAL on stdout."""
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "x"\n[source]\ntype = "files"\npaths = ["."]\n[sink]\ntype = "local"\n'
        'path = "v"\n[check]\nmax_aeg = "1d"\nmin_size = "lots"\n'
    )
    out = pgvault_cli("check", path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"pgvault: error: {path}: check.max_aeg: unknown key")
    assert out.stdout.startswith(f"CRITICAL: {path}: check.max_aeg: unknown key")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('min_size = "lots"', "check.min_size: invalid size 'lots'"),
        ('max_age = "1d"\nwarn_age = "2d"', "warn_age (2d) must be shorter than max_age (1d)"),
        ("max_shrink = 150", "max_shrink is a percentage ≤ 100"),
        ('min_free = "120%"', "check.min_free: a percentage is between 0 and 100"),
        ("min_count = -1", "min_count must be ≥ 0"),
    ],
)
def test_threshold_errors(tmp_path: Path, table: str, message: str) -> None:
    """Nonsense thresholds are config errors, not silent passes."""
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "x"\n[source]\ntype = "files"\npaths = ["."]\n[sink]\ntype = "local"\n'
        f'path = "v"\n[check]\n{table}\n'
    )
    with pytest.raises(pgvault.ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        pgvault.load_config(path)


def test_each_check_updates_the_metrics_file(tmp_path: Path) -> None:
    """With metrics_file set, the check's status, backup count and newest time are exported."""
    metrics = tmp_path / "textfile" / "pgvault.prom"
    path = tmp_path / "p.toml"
    path.write_text(
        f'name = "test"\nmetrics_file = "{metrics}"\n[source]\ntype = "files"\npaths = ["."]\n'
        '[sink]\ntype = "local"\npath = "vault"\n'
    )
    config = pgvault.load_config(path)
    started = NOW - timedelta(hours=2)
    fake_backup(Vault.from_config(config), started)
    pgvault.check(config, now=NOW)
    samples = read_metrics(metrics)
    labels = '{name="test"}'
    assert samples["pgvault_check_status", labels] == 0
    assert samples["pgvault_backups", labels] == 1
    assert samples["pgvault_newest_backup_timestamp_seconds", labels] == started.timestamp()
    assert samples["pgvault_check_timestamp_seconds", labels] == NOW.timestamp()
    assert ("pgvault_sink_free_bytes", labels) in samples


def test_a_future_dated_backup_is_a_warning_and_counts_for_nothing(
    make: Callable[..., pgvault.PipelineConfig],
) -> None:
    """A backup dated 399 days ahead warns by name; age is judged on the genuine newest (here
    stale: CRITICAL), never "-399d old"; alone, it leaves the vault without a backup."""
    config = make("min_count = 2")
    vault = Vault.from_config(config)
    ahead = fake_backup(vault, NOW + timedelta(days=399))
    alone = pgvault.check(config, now=NOW)
    assert alone.status is Status.CRITICAL and alone.backups == 0 and alone.newest is None
    assert alone.lines()[0].startswith("CRITICAL: no complete backup in vault 'test'")
    genuine = fake_backup(vault, NOW - timedelta(days=3))
    result = pgvault.check(config, now=NOW)
    assert result.lines() == [
        f"CRITICAL: newest complete backup {genuine} is 3d old (max_age 26h)",
        f"WARNING: backup {ahead} is dated 399d in the future (a clock ahead?): it is not "
        "counted, not latest and not pruned",
        "WARNING: 1 complete backup(s) in the vault (min_count 2)",
    ]
    assert result.to_dict()["future"] == [ahead]


def test_min_count_and_the_metric_count_the_schedule_only(tmp_path: Path) -> None:
    """Safety backups a restore took are not the pipeline's runs: min_count warns and the
    pgvault_backups metric says 1 with one scheduled backup and two safety backups."""
    metrics = tmp_path / "pgvault.prom"
    path = tmp_path / "p.toml"
    path.write_text(
        f'name = "test"\nmetrics_file = "{metrics}"\n[source]\ntype = "files"\npaths = ["."]\n'
        '[sink]\ntype = "local"\npath = "vault"\n[check]\nmin_count = 2\n'
    )
    config = pgvault.load_config(path)
    vault = Vault.from_config(config)
    fake_backup(vault, NOW - timedelta(hours=2))
    for hours in (1, 0.5):
        fake_backup(vault, NOW - timedelta(hours=hours), kind="safety")
    result = pgvault.check(config, now=NOW)
    assert result.lines() == ["WARNING: 1 complete backup(s) in the vault (min_count 2)"]
    assert read_metrics(metrics)["pgvault_backups", '{name="test"}'] == 1
