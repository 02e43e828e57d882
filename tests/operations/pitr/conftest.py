"""One archiving cluster and one base backup (`pgvault run`, basebackup source) for the whole
package, a history of known row counts, and the helpers that restore from them.

Every restore test reads the same story, written once: 100 rows, the base backup, 50 more
rows (then a mark and a time), a bad ``DELETE`` of 120 rows (its xid and the LSN before it
recorded), 5 more rows. A restore to a point in that story must come back with the rows of that
point. WAL is archived by ``pgvault wal-push`` run as postgres, as in tests/wal.

What is here, for every test module of the package:

* ``pitr_rig`` (package scope) — ``(WalRig, Story)``: built once (about 20 s of initdb, WAL
  archiving and a base backup), so it is **read-only**: restore from it, list it, plan against
  it, but never write to its vault or its cluster (other modules read the same story).
* ``pitr_copy`` (per test) — a :class:`WalRig` over a private copy of that vault (same story,
  key and backup; its own folder, spool and config): the place to delete or corrupt segments,
  add timelines or history files.
* :func:`restore_to` / :func:`cleanup` — restore a rig to a target (``restore_pitr`` as the CLI
  calls it, started on a free port by default) and throw the restored cluster away.
* :func:`restore_dir`, :func:`rows`, :func:`wait_archived` — small pieces of the above.

A restore with replay costs about ten seconds (each ``restore_command`` call is a pgvault
process): share one restored cluster among the checks that only read it rather than restoring
again, and test refusals without replay (the plan is checked before a byte is written).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest

import pgvault
from pgvault.operations.pitr.restore import PitrResult, restore_pitr
from pgvault.operations.pitr.start import stop_restored
from pgvault.operations.pitr.targets import build_target
from pgvault.postgres.cluster import PostgresCluster, free_port
from tests.basebackup_rig import basebackup_config
from tests.wal import conftest as wal_fixtures
from tests.wal.conftest import WalRig, chown_postgres, postgres_folder, set_archive_command

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


@pytest.fixture(scope="package")
def pitr_rig(pgvault_for_postgres: list[str]) -> Iterator[tuple[WalRig, Story]]:
    """The package's cluster, vault and story (see the module doc): read-only, shared by every
    module of tests/operations/pitr; write into a :func:`pitr_copy` instead."""
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
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pitr_copy(pitr_rig: tuple[WalRig, Story]) -> Iterator[WalRig]:
    """A rig over a private copy of ``pitr_rig``'s vault, for one test to damage or extend.

    Same story (the ``Story`` of ``pitr_rig`` holds for it), same key and base backup; its own
    postgres-owned folder, spool and config (``.config``, ``.vault``). ``.cluster`` is still the
    shared source cluster (for its binaries and DSN): do not write to it. A cluster restored
    from the copy with ``archive=True`` keeps the source's ``archive_command`` (it lives in the
    restored postgresql.auto.conf): point it at the copy's config before starting it.
    """
    rig, _ = pitr_rig
    with vault_copy(rig, "pgvault-pitr-copy-") as copy:
        yield copy


@contextlib.contextmanager
def vault_copy(rig: WalRig, prefix: str) -> Iterator[WalRig]:
    """A rig over a private copy of ``rig``'s vault and key in a new postgres-owned folder
    named ``prefix…`` (its own spool and config; the same source cluster), removed after."""
    folder = postgres_folder(prefix)
    try:
        shutil.copytree(rig.vault, folder / "vault")
        shutil.copy2(rig.key, folder / "wal.key")
        (folder / "wal.key").chmod(0o600)
        chown_postgres(folder, tree=True)
        yield WalRig(rig.cluster, folder, rig.command, None, {}, encrypt=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def restore_dir(rig: WalRig, name: str) -> Path:
    """A new, postgres-owned folder to restore into (its data dir does not exist yet)."""
    base = postgres_folder(f"pgvault-pitr-{name}-")
    return base / "data"


def restore_to(
    rig: WalRig,
    label: str,
    *,
    start: bool = True,
    ref: str | None = None,
    archive: bool = False,
    **target: object,
) -> tuple[Path, int, PitrResult]:
    """Restore ``rig``'s vault (``ref``: a backup id, else the plan's choice) into a new folder
    named after ``label``, set to recover to the target ``build_target(**target)`` makes
    (``action=...``, ``timeline=...`` included; ``archive`` as ``restore_pitr`` takes it); started
    on a free port and followed until recovery ends unless ``start`` is False (the port is
    written into its settings either way). ``(data dir, port, result)``; pass the data dir to
    :func:`cleanup` when done. Planning refusals raise before anything is written."""
    data = restore_dir(rig, label)
    port = free_port()
    try:
        result = restore_pitr(
            rig.load(),
            ref,
            data,
            build_target(**target),  # type: ignore[arg-type]
            command=rig.command,
            archive=archive,
            start=start,
            port=port,
            timeout=120,
        )
    except BaseException:
        cleanup(rig, data)
        raise
    return data, port, result


def cleanup(rig: WalRig, data: Path) -> None:
    """Stop the cluster restored into ``data`` (if it runs) and remove its folder."""
    if data.exists():
        st = data.stat()
        stop_restored(data, rig.cluster.bindir, owner=(st.st_uid, st.st_gid))
    shutil.rmtree(data.parent, ignore_errors=True)


def rows(port: int, sql: str = "SELECT count(*) FROM t") -> object:
    """One value from the restored cluster."""
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as c:
        row = c.execute(sql).fetchone()
        assert row is not None
        return row[0]
