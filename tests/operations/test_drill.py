"""Restore drills: pass on good backups, fail loudly on bad ones, never leave a database behind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

import pgvault
from pgvault.operations.drill import DRILL_PREFIX, drill, last_drills
from pgvault.testing import PostgresCluster
from tests.conftest import pgvault_cli

ConfigMaker = Callable[..., Path]

CHECKS = """
[drill]
server = "{server}"
[[drill.check]]
name = "users exist"
sql = "SELECT count(*) FROM public.users"
at_least = 1
[[drill.check]]
sql = "SELECT max(placed_at) > '2024-01-01' FROM sales.orders"
equals = true
"""


def drill_databases(cluster: PostgresCluster) -> set[str]:
    return {d for d in cluster.databases() if d.startswith(DRILL_PREFIX)}


@pytest.fixture
def drill_config(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> Callable[..., pgvault.PipelineConfig]:
    def make(server: str = "source", extra: str = "") -> pgvault.PipelineConfig:
        return pgvault.load_config(
            make_config(
                {"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db), "count_tables": ["*"]},
                extra=CHECKS.format(server=server) + extra,
            )
        )

    return make


def test_drill_passes_records_and_cleans_up(
    pg_cluster: PostgresCluster, drill_config: Callable[..., pgvault.PipelineConfig]
) -> None:
    """A good backup drills clean: validated, checks pass, result stored, no database left."""
    config = drill_config()
    manifest = pgvault.run(config)
    result = drill(config)
    assert result.ok, result.error
    assert result.backup_id == manifest.backup_id
    assert [c.ok for c in result.checks] == [True, True]
    assert result.validation is not None and len(result.validation.tables) == 4
    assert drill_databases(pg_cluster) == set()
    recorded = last_drills(pgvault.Vault.from_config(config))
    assert recorded[0]["drill_id"] == result.drill_id and recorded[0]["ok"] is True


def test_drill_fails_on_a_failing_check(
    pg_cluster: PostgresCluster, drill_config: Callable[..., pgvault.PipelineConfig]
) -> None:
    """A check that does not hold fails the drill, names the check, and cleans up."""
    config = drill_config(
        extra='[[drill.check]]\nname = "too many"\n'
        'sql = "SELECT count(*) FROM sales.orders"\nat_most = 10\n'
    )
    pgvault.run(config)
    path = config.where()
    result = pgvault_cli("drill", path)
    assert result.returncode == 1
    assert "check 'too many': got 5000, expected <= 10" in result.stderr
    assert drill_databases(pg_cluster) == set()
    as_json = json.loads(pgvault_cli("drill", path, "--json").stdout)
    assert as_json["ok"] is False


def test_drill_fails_on_a_corrupted_artifact(
    pg_cluster: PostgresCluster, drill_config: Callable[..., pgvault.PipelineConfig]
) -> None:
    """A damaged artifact fails the drill with the artifact named, and leaves no database."""
    config = drill_config()
    manifest = pgvault.run(config)
    artifact = (
        Path(config.sink.describe())
        / config.name
        / "backups"
        / manifest.backup_id
        / manifest.artifacts[0].path
    )
    data = bytearray(artifact.read_bytes())
    data[len(data) // 3] ^= 0x10
    artifact.write_bytes(bytes(data))
    result = drill(config)
    assert not result.ok
    assert manifest.artifacts[0].path in (result.error or "")
    assert drill_databases(pg_cluster) == set()


def test_drill_on_an_ephemeral_cluster(
    pg_cluster: PostgresCluster, drill_config: Callable[..., pgvault.PipelineConfig]
) -> None:
    """server = "ephemeral" restores into a throwaway cluster; the source server is untouched."""
    config = drill_config(server="ephemeral")
    pgvault.run(config)
    databases_before = pg_cluster.databases()
    result = drill(config)
    assert result.ok, result.error
    assert result.server == "ephemeral cluster"
    assert pg_cluster.databases() == databases_before


def test_check_reports_drill_age_and_failures(
    pg_cluster: PostgresCluster, drill_config: Callable[..., pgvault.PipelineConfig]
) -> None:
    """check's max_drill_age warns without a recent passing drill and is critical after a
    failed one."""
    config = drill_config(extra='[check]\nmax_drill_age = "7d"\n')
    pgvault.run(config)
    path = config.where()
    never = pgvault_cli("check", path)
    assert never.returncode == 1
    assert "no restore drill has passed (max_drill_age 7d)" in never.stdout + never.stderr
    assert drill(config).ok
    assert pgvault_cli("check", path).returncode == 0
    broken = drill_config(
        extra='[check]\nmax_drill_age = "7d"\n[[drill.check]]\nsql = "SELECT 1"\nequals = 2\n'
    )
    # Same vault (same sink and name): a failed drill is now the latest.
    assert not drill(broken).ok
    critical = pgvault_cli("check", path)
    assert critical.returncode == 2
    assert "latest restore drill" in critical.stdout and "failed" in critical.stdout
