"""Restore on a bad day: choosing the backup, replacing safely, partial restores, validation."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import pgvault
from pgvault.operations.restore import validation as restore_validation
from pgvault.testing import PostgresCluster
from tests.conftest import pgvault_cli, snapshot_database

ConfigMaker = Callable[..., Path]


@pytest.fixture
def config(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> pgvault.PipelineConfig:
    return pgvault.load_config(
        make_config(
            {
                "type": "pg_dump",
                "dsn": pg_cluster.dsn(rich_db),
                "count_tables": ["public.users", "sales.orders"],
            }
        )
    )


def backup_folder(config: pgvault.PipelineConfig, backup_id: str) -> Path:
    return Path(config.sink.describe()) / config.name / "backups" / backup_id


def edit_manifest(
    config: pgvault.PipelineConfig, backup_id: str, change: Callable[[dict], None]
) -> None:
    path = backup_folder(config, backup_id) / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_restore_by_id_latest_and_before(
    pg_cluster: PostgresCluster, config: pgvault.PipelineConfig
) -> None:
    """--before picks the newest backup at or before a time; ids and latest pick exactly."""
    first = pgvault.run(config)
    second = pgvault.run(config)
    vault = pgvault.Vault.from_config(config)
    assert vault.manifest_before(second.started_at).backup_id == second.backup_id
    assert first.started_at < second.started_at  # millisecond timestamps
    assert vault.manifest_before(second.started_at - timedelta(milliseconds=1)).backup_id == (
        first.backup_id
    )
    assert vault.manifest_before(first.started_at).backup_id == first.backup_id
    with pytest.raises(pgvault.BackupNotFoundError, match="at or before"):
        vault.manifest_before(first.started_at - timedelta(days=1))
    pg_cluster.drop_database("by_before")
    result = pgvault.restore(config, before=first.started_at, target_db="by_before")
    assert result.backup_id == first.backup_id
    assert result.validation is not None and result.validation.ok
    assert {t.qualified for t in result.validation.tables if t.exact} == {
        "public.users",
        "sales.orders",
    }
    pg_cluster.drop_database("by_before")


def test_failure_after_drop_names_the_safety_backup(
    pg_cluster: PostgresCluster, rich_db: str, config: pgvault.PipelineConfig
) -> None:
    """If the restore fails after the old database was dropped, the error gives the way back,
    and that way works."""
    good = pgvault.run(config)
    pg_cluster.drop_database("precious")
    pgvault.restore(config, good.backup_id, target_db="precious")
    pg_cluster.execute("CREATE TABLE only_here AS SELECT 42 AS answer", "precious")
    before = snapshot_database(pg_cluster, "precious")

    broken = pgvault.run(config)

    def miscount(m: dict) -> None:  # found by validation, once the old database is gone
        for t in m["source"]["tables"]:
            if t["name"] == "users":
                t["rows"] += 1

    edit_manifest(config, broken.backup_id, miscount)

    with pytest.raises(pgvault.RestoreError) as info:
        pgvault.restore(config, broken.backup_id, target_db="precious", drop_existing=True)
    message = str(info.value)
    assert "failed after the old database was dropped" in message
    safety_id = message.split("safety backup ")[1].split(":")[0]
    assert f"restore {config.where()} {safety_id} --target-db precious --drop-existing" in message

    safety = pgvault.Vault.from_config(config).manifest(safety_id)
    assert safety.kind == "safety" and safety.labels["database"] == "precious"
    assert "keep_until" in safety.labels
    pgvault.restore(config, safety_id, target_db="precious", drop_existing=True)
    assert snapshot_database(pg_cluster, "precious") == before
    pg_cluster.drop_database("precious")


def test_partial_restore_of_one_table(
    pg_cluster: PostgresCluster, rich_db: str, config: pgvault.PipelineConfig
) -> None:
    """--table restores just that table into a scratch database, validated on its own."""
    pgvault.run(config)
    pg_cluster.drop_database("scratch")
    result = pgvault.restore(
        config, "latest", target_db="scratch", tables=("orders",), schemas=("sales",)
    )
    assert result.validation is not None
    assert [t.qualified for t in result.validation.tables] == ["sales.orders"]
    tables = pg_cluster.execute(
        "SELECT schemaname::text, tablename::text FROM pg_tables WHERE schemaname NOT IN "
        "('pg_catalog', 'information_schema')",
        "scratch",
    )
    assert tables == [("sales", "orders")]
    assert pg_cluster.execute("SELECT count(*) FROM sales.orders", "scratch") == [(5000,)]
    pg_cluster.drop_database("scratch")


def test_list_prints_the_table_of_contents(config: pgvault.PipelineConfig) -> None:
    """restore --list shows the archive's entries without restoring anything."""
    pgvault.run(config)
    result = pgvault_cli("restore", config.where(), "latest", "--list")
    assert result.returncode == 0, result.stderr
    assert "TABLE DATA public users" in result.stdout
    assert "TABLE DATA sales orders" in result.stdout


def test_a_table_missing_from_the_dump_fails_validation(
    pg_cluster: PostgresCluster, config: pgvault.PipelineConfig
) -> None:
    """A manifest table that the restored database lacks fails the restore, naming the table,
    and the half-restored database is removed."""
    manifest = pgvault.run(config)
    edit_manifest(
        config,
        manifest.backup_id,
        lambda m: m["source"]["tables"].append(
            {"schema": "public", "name": "invoices", "rows": 10, "exact": True}
        ),
    )
    pg_cluster.drop_database("incomplete")
    with pytest.raises(pgvault.RestoreError, match=r"public\.invoices: missing"):
        pgvault.restore(config, manifest.backup_id, target_db="incomplete")
    assert "incomplete" not in pg_cluster.databases()


def test_an_exact_count_mismatch_fails_validation(
    pg_cluster: PostgresCluster, config: pgvault.PipelineConfig
) -> None:
    """Rows that differ from an exact count recorded at backup time fail the restore."""
    manifest = pgvault.run(config)

    def change(m: dict) -> None:
        for t in m["source"]["tables"]:
            if t["name"] == "users":
                t["rows"] = 2999

    edit_manifest(config, manifest.backup_id, change)
    pg_cluster.drop_database("miscounted")
    with pytest.raises(
        pgvault.RestoreError, match=r"public\.users: 3000 rows, the backup counted 2999 exactly"
    ):
        pgvault.restore(config, manifest.backup_id, target_db="miscounted")


STALE_STATISTICS = """
CREATE TABLE grown (id int, pad text) WITH (autovacuum_enabled = off);
INSERT INTO grown SELECT i, repeat('g', 60) FROM generate_series(1, 2000) i;
ANALYZE grown;
INSERT INTO grown SELECT i, repeat('g', 60) FROM generate_series(2001, 50000) i;
CREATE TABLE shrunk (id int, pad text) WITH (autovacuum_enabled = off);
INSERT INTO shrunk SELECT i, repeat('s', 60) FROM generate_series(1, 50000) i;
ANALYZE shrunk;
DELETE FROM shrunk WHERE id > 5000;
CREATE TABLE filled_after_analyze (id int) WITH (autovacuum_enabled = off);
ANALYZE filled_after_analyze;
INSERT INTO filled_after_analyze SELECT generate_series(1, 40000);
CREATE TABLE never_analyzed (id int) WITH (autovacuum_enabled = off);
INSERT INTO never_analyzed SELECT generate_series(1, 30000);
"""


@pytest.fixture
def stale_db(pg_cluster: PostgresCluster) -> str:
    """A database whose planner statistics lag far behind its tables, as after a bulk load or
    a mass delete that autovacuum has not caught up with."""
    pg_cluster.drop_database("stale_stats")
    pg_cluster.create_database("stale_stats")
    pg_cluster.execute(STALE_STATISTICS, "stale_stats")
    return "stale_stats"


# Validation counts a small table and estimates a large one from a sample of its pages: with
# the sample bound lowered, these tables of a few hundred pages take the sampling path.
SAMPLED = pytest.mark.parametrize("sample_pages", [None, 20], ids=["counted", "sampled"])


@SAMPLED
def test_stale_statistics_do_not_fail_a_good_restore(
    pg_cluster: PostgresCluster,
    stale_db: str,
    make_config: ConfigMaker,
    monkeypatch: pytest.MonkeyPatch,
    sample_pages: int | None,
) -> None:
    """Tables grown, emptied or filled since their last ANALYZE restore and validate: the
    recorded estimates follow the tables, not the stale statistics."""
    if sample_pages is not None:
        monkeypatch.setattr(restore_validation, "SAMPLE_PAGES", sample_pages)
    config = pgvault.load_config(make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(stale_db)}))
    manifest = pgvault.run(config)
    pg_cluster.drop_database("stale_copy")
    result = pgvault.restore(config, manifest.backup_id, target_db="stale_copy")
    assert result.validation.ok
    grown = next(t for t in result.validation.tables if t.name == "grown")
    assert grown.restored is not None and abs(grown.restored - 50_000) < 5_000
    assert snapshot_database(pg_cluster, "stale_copy") == snapshot_database(pg_cluster, stale_db)
    pg_cluster.drop_database("stale_copy")


@SAMPLED
def test_far_fewer_rows_than_estimated_fails_validation(
    pg_cluster: PostgresCluster,
    stale_db: str,
    make_config: ConfigMaker,
    monkeypatch: pytest.MonkeyPatch,
    sample_pages: int | None,
) -> None:
    """A restored table with a tenth of the rows the backup estimated fails, naming it."""
    if sample_pages is not None:
        monkeypatch.setattr(restore_validation, "SAMPLE_PAGES", sample_pages)
    config = pgvault.load_config(make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(stale_db)}))
    manifest = pgvault.run(config)

    def inflate(m: dict) -> None:
        for t in m["source"]["tables"]:
            if t["name"] == "grown":
                t["rows"] = 500_000
                t.pop("live_rows", None)

    edit_manifest(config, manifest.backup_id, inflate)
    pg_cluster.drop_database("short_copy")
    with pytest.raises(pgvault.RestoreError, match=r"public\.grown: about \d+ rows, the backup"):
        pgvault.restore(config, manifest.backup_id, target_db="short_copy")
    assert "short_copy" not in pg_cluster.databases()


def test_damage_is_named_even_when_pg_restore_fails_first(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> None:
    """A damaged byte that pg_restore trips over (a broken date in COPY data) before the stream's
    end is reported as the damaged artifact, not as a COPY error to debug on the target."""
    config = pgvault.load_config(
        make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)}, transforms=[])
    )
    manifest = pgvault.run(config)
    art = manifest.artifacts[0]
    stored = backup_folder(config, manifest.backup_id) / art.path
    data = bytearray(stored.read_bytes())
    at = data.index(b"\t1950-01-02\t")  # users.born of the first row, in the COPY data
    data[at + 5] = ord("x")
    stored.write_bytes(bytes(data))
    pg_cluster.drop_database("damaged_copy")
    with pytest.raises(pgvault.RestoreError, match=rf"artifact {art.path}: sha256 mismatch"):
        pgvault.restore(config, manifest.backup_id, target_db="damaged_copy")
    assert "damaged_copy" not in pg_cluster.databases()
