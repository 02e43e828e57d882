"""One archiving cluster and one base backup per module, and a history of known row counts.

Every restore test reads the same story, written once: 100 rows, the base backup, 50 more
rows (then a mark and a time), a bad ``DELETE`` of 120 rows (its xid and the LSN before it
recorded), 5 more rows. A restore to a point in that story must come back with the rows of that
point. WAL is archived by ``pgvault wal-push`` run as postgres, as in tests/wal.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from pgvault.postgres.cluster import PostgresCluster
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import ArtifactRecord, Manifest, new_backup_id
from tests.wal import conftest as wal_fixtures
from tests.wal.conftest import WalRig, as_postgres, postgres_folder, set_archive_command

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


def store_base_backup(rig: WalRig) -> tuple[str, datetime]:
    """A base backup of the rig's cluster stored in its vault in the shape the basebackup source
    writes (manifest ``source`` per the h14a contract, roles ``basebackup`` and
    ``backup_manifest``), unencoded. Returns its id and stop time."""
    cluster = rig.cluster
    started = datetime.now(UTC)
    made = subprocess.run(
        as_postgres(
            [
                str(cluster.bindir / "pg_basebackup"),
                *("-D", "-", "-Ft", "-X", "none", "-c", "fast", "--manifest-checksums=SHA256"),
                *("-h", str(cluster.socket_dir), "-p", str(cluster.port), "-U", "postgres"),
            ]
        ),
        capture_output=True,
        timeout=180,
        cwd="/tmp",
    )
    assert made.returncode == 0, made.stderr.decode()
    stopped = datetime.now(UTC)
    data = made.stdout
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        label = manifest_text = ""
        for info in tar:
            if info.name in ("backup_label", "backup_manifest"):
                handle = tar.extractfile(info)
                assert handle is not None
                text = handle.read().decode()
                if info.name == "backup_label":
                    label = text
                else:
                    manifest_text = text
    fields = dict(line.split(": ", 1) for line in label.splitlines() if ": " in line)
    start_lsn = fields["START WAL LOCATION"].split()[0]
    start_wal = fields["START WAL LOCATION"].split("file ")[1].rstrip(")")
    ranges = json.loads(manifest_text)["WAL-Ranges"][-1]
    stop_lsn = ranges["End-LSN"]
    backup_id = new_backup_id(started)
    vault = Vault(rig.load().sink, "main")
    import hashlib

    def artifact(path: str, role: str, body: bytes) -> ArtifactRecord:
        vault.sink.write_bytes(vault.artifact_key(backup_id, path), body)
        return ArtifactRecord(
            path, role, role, len(body), len(body), {"sha256": hashlib.sha256(body).hexdigest()}
        )

    arts = (
        artifact("base.tar", "basebackup", data),
        artifact("backup_manifest", "backup_manifest", manifest_text.encode()),
    )
    rows = cluster.execute(
        "SELECT system_identifier, (SELECT setting::int FROM pg_settings "
        "WHERE name = 'wal_segment_size') FROM pg_control_system()"
    )[0]
    source: dict[str, Any] = {
        "type": "basebackup",
        "system_identifier": str(rows[0]),
        "major": 15,
        "segment_size": int(str(rows[1])),
        "timeline": int(fields["START TIMELINE"]),
        "start_lsn": start_lsn,
        "start_wal": start_wal,
        "stop_lsn": stop_lsn,
        "stop_timeline": int(ranges["Timeline"]),
        "stop_wal": "",
        "started_at": started.isoformat(),
        "stopped_at": stopped.isoformat(),
        "backup_label": label,
        "tablespaces": [],
        "data_bytes": len(data),
    }
    vault.write_manifest(
        Manifest(
            backup_id=backup_id,
            name="main",
            started_at=started,
            finished_at=stopped,
            pgvault_version="test",
            source=source,
            transforms=(),
            artifacts=arts,
        )
    )
    return backup_id, stopped


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
        backup_id, stopped = store_base_backup(rig)
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
