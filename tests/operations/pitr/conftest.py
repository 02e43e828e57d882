"""One archiving cluster and one base backup (`pgvault run`, basebackup source) per module,
and a history of known row counts.

Every restore test reads the same story, written once: 100 rows, the base backup, 50 more
rows (then a mark and a time), a bad ``DELETE`` of 120 rows (its xid and the LSN before it
recorded), 5 more rows. A restore to a point in that story must come back with the rows of that
point. WAL is archived by ``pgvault wal-push`` run as postgres, as in tests/wal.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest

import pgvault
from pgvault.postgres.cluster import PostgresCluster
from tests.basebackup_rig import basebackup_config
from tests.wal import conftest as wal_fixtures
from tests.wal.conftest import WalRig, postgres_folder, set_archive_command

pgvault_for_postgres = wal_fixtures.pgvault_for_postgres


@attrs.frozen
class Story:
    """What happened on the rig's cluster, in order."""

    backup_id: str
    backup_stopped_at: datetime
    after_insert: datetime
    """A moment after the 50 extra rows committed and before the DELETE."""
    mark: str
    lsn_before_delete: str
    delete_xid: int
    final_rows: int


def wait_archived(rig: WalRig, lsn: str, timeout: float = 60) -> None:
    """Switch WAL and wait until the segment holding ``lsn`` is archived."""
    name = str(rig.cluster.execute(f"SELECT pg_walfile_name('{lsn}')")[0][0])
    rig.cluster.execute("SELECT pg_switch_wal()")
    rig.wait_archived(name, timeout)


@pytest.fixture(scope="module")
def pitr_rig(pgvault_for_postgres: list[str]) -> Iterator[tuple[WalRig, Story]]:
    """The module's cluster, vault and story (see the module doc)."""
    settings = {"wal_level": "replica", "archive_mode": "on", "archive_command": "'/bin/false'"}
    cluster = PostgresCluster(settings=settings, initdb_args=("--wal-segsize=1",))
    folder = postgres_folder("pgvault-pitr-")
    try:
        cluster.start()
        rig = WalRig(cluster, folder, pgvault_for_postgres, None, {}, encrypt=True)
        set_archive_command(rig, "push")
        cluster.execute("CREATE TABLE t (id int PRIMARY KEY)")
        cluster.execute("INSERT INTO t SELECT generate_series(1, 100)")
        # PostgreSQL archives first, so the vault's WAL folders belong to postgres (as in life).
        (first,) = rig.switch(1)
        rig.wait_archived(first)
        made = pgvault.run(pgvault.load_config(basebackup_config(rig)))
        backup_id = made.backup_id
        stopped = datetime.fromisoformat(str(made.source["stopped_at"]))
        time.sleep(0.2)
        cluster.execute("INSERT INTO t SELECT generate_series(101, 150)")
        time.sleep(0.2)
        after_insert = datetime.now(UTC)
        time.sleep(0.2)
        marked = rig.run("mark", str(rig.config), "before-delete")
        assert marked.returncode == 0, marked.stderr
        lsn = str(cluster.execute("SELECT pg_current_wal_insert_lsn()")[0][0])
        with cluster.connect() as conn:
            row = conn.execute(
                "WITH gone AS (DELETE FROM t WHERE id <= 120 RETURNING 1) "
                "SELECT pg_current_xact_id()::text::bigint FROM gone LIMIT 1"
            ).fetchone()
            assert row is not None
            xid = int(str(row[0]))
        cluster.execute("INSERT INTO t SELECT generate_series(151, 155)")
        end = str(cluster.execute("SELECT pg_current_wal_insert_lsn()")[0][0])
        wait_archived(rig, end)
        yield rig, Story(backup_id, stopped, after_insert, "before-delete", lsn, xid, 35)
    finally:
        cluster.destroy()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def restore_dir(rig: WalRig, name: str) -> Path:
    """A new, postgres-owned folder to restore into (its data dir does not exist yet)."""
    base = postgres_folder(f"pgvault-pitr-{name}-")
    return base / "data"


def rows(port: int, sql: str = "SELECT count(*) FROM t") -> object:
    """One value from the restored cluster."""
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as c:
        row = c.execute(sql).fetchone()
        assert row is not None
        return row[0]
