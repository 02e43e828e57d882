"""The pg_dump source on real clusters: round trips, metadata, and every way pg_dump fails."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

import pgvault
from pgvault.testing import PostgresCluster
from pgvault.transforms.api import Codec, DecodeContext, Transform
from tests.conftest import snapshot_database

ConfigMaker = Callable[..., Path]


def backup_and_restore(
    cluster: PostgresCluster, config_path: Path, dbname: str, target: str, **restore: Any
) -> pgvault.Manifest:
    config = pgvault.load_config(config_path)
    manifest = pgvault.run(config)
    cluster.drop_database(target)
    pgvault.restore(config, manifest.backup_id, target_db=target, **restore)
    return manifest


@pytest.mark.parametrize(
    ("fmt", "transforms"),
    [
        ("custom", [{"type": "zstd", "level": 3}]),
        ("plain", [{"type": "gzip", "level": 6}]),
        ("tar", [{"type": "zstd", "level": 1, "threads": 2}]),
        ("custom", []),
    ],
    ids=["custom-zstd", "plain-gzip", "tar-zstd-threads", "custom-uncompressed"],
)
def test_round_trip_keeps_every_row(
    pg_cluster: PostgresCluster,
    rich_db: str,
    make_config: ConfigMaker,
    fmt: str,
    transforms: list[dict[str, Any]],
) -> None:
    """Every table's rows, sequences, views and large objects come back identical, any format."""
    path = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db), "format": fmt}, transforms
    )
    target = f"restored_{fmt}_{len(transforms)}"
    backup_and_restore(pg_cluster, path, rich_db, target)
    assert snapshot_database(pg_cluster, target) == snapshot_database(pg_cluster, rich_db)
    pg_cluster.drop_database(target)


@pytest.mark.parametrize("jobs", [1, 3])
def test_split_dump_round_trips(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker, tmp_path: Path, jobs: int
) -> None:
    """A jobs = 3 backup streams separate data archives; they restore with --jobs 3 (through a
    work file, removed afterwards) or one at a time, to identical rows, indexes and constraints."""
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db), "jobs": 3})
    work = tmp_path / "work"
    work.mkdir()
    target = f"restored_split_{jobs}"
    manifest = backup_and_restore(pg_cluster, path, rich_db, target, jobs=jobs, work_dir=work)
    roles = sorted(a.role for a in manifest.artifacts)
    assert roles == ["data", "data", "globals", "main"]
    assert snapshot_database(pg_cluster, target) == snapshot_database(pg_cluster, rich_db)
    assert list(work.iterdir()) == []
    pg_cluster.drop_database(target)


def test_manifest_records_the_database(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> None:
    """Versions, database, format and per-table rows (exact where asked) are in the manifest."""
    path = make_config(
        {
            "type": "pg_dump",
            "dsn": pg_cluster.dsn(rich_db),
            "count_tables": ["public.users", "sales.orders"],
        }
    )
    manifest = pgvault.run(pgvault.load_config(path))
    src = manifest.source
    assert src["type"] == "pg_dump"
    assert src["database"] == rich_db
    assert src["server_version_num"] // 10000 == pg_cluster.major
    assert src["pg_dump_version"].split(".")[0] == str(pg_cluster.major)
    assert src["format"] == "custom"
    assert src["large_objects"] == 3
    tables = {(t["schema"], t["name"]): t for t in src["tables"]}
    assert tables["public", "users"] == {
        "schema": "public",
        "name": "users",
        "bytes": tables["public", "users"]["bytes"],
        "rows": 3000,
        "exact": True,
    }
    assert tables["public", "users"]["bytes"] > 3000 * 8  # the table's size on disk
    assert tables["sales", "orders"]["rows"] == 5000 and tables["sales", "orders"]["exact"]
    assert tables["public", 'Weird "Name"']["exact"] is False
    assert src["globals"] == {"artifact": "globals.sql", "role_passwords": False}
    recorded = {k: v for k, v in manifest.to_dict().items() if k != "source"}
    recorded["source"] = {k: v for k, v in src.items() if k != "globals"}
    assert "password" not in json.dumps(recorded)


def test_schema_and_table_filters(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> None:
    """exclude_tables and schemas shape both the dump and the recorded table list."""
    path = make_config(
        {
            "type": "pg_dump",
            "dsn": pg_cluster.dsn(rich_db),
            "exclude_tables": ['public."Weird ""Name"""', "documents"],
            "schemas": ["public"],
        }
    )
    manifest = backup_and_restore(pg_cluster, path, rich_db, "restored_filtered")
    recorded = {(t["schema"], t["name"]) for t in manifest.source["tables"]}
    assert recorded == {("public", "users")}
    restored = pg_cluster.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' "
        "AND table_schema NOT IN ('pg_catalog', 'information_schema')",
        "restored_filtered",
    )
    assert set(restored) == {("public", "users")}
    pg_cluster.drop_database("restored_filtered")


def test_count_tables_names_an_unknown_table(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> None:
    """A typo in count_tables fails the run, naming the table, before anything is stored."""
    path = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db), "count_tables": ["userz"]}
    )
    config = pgvault.load_config(path)
    with pytest.raises(pgvault.SourceError, match="count_tables: table 'userz' does not exist"):
        pgvault.run(config)
    assert pgvault.Vault.from_config(config).backups() == []


def assert_nothing_left(config: pgvault.PipelineConfig) -> None:
    vault = pgvault.Vault.from_config(config)
    assert vault.backups() == []
    assert vault.incomplete() == []
    root = Path(config.sink.describe())
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    # What stays is the failed run's record (for reports), outside backups/: nothing of the dump.
    assert [p.parent.name for p in files] == ["failures"]


def test_bad_database_name_fails_with_postgres_text(
    pg_cluster: PostgresCluster, make_config: ConfigMaker
) -> None:
    """A database that does not exist fails the run in the server's own words; nothing listed."""
    config = pgvault.load_config(make_config({"type": "pg_dump", "dsn": pg_cluster.dsn("nope")}))
    with pytest.raises(pgvault.SourceError, match='database "nope" does not exist'):
        pgvault.run(config)
    assert_nothing_left(config)


def test_missing_pg_dump_binary(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> None:
    """A pg_dump path that does not exist is named in the error."""
    config = pgvault.load_config(
        make_config(
            {"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db), "pg_dump": "/nonexistent/pg_dump"}
        )
    )
    with pytest.raises(pgvault.SourceError, match="pg_dump not found at /nonexistent/pg_dump"):
        pgvault.run(config)
    assert_nothing_left(config)


def test_pg_dump_too_old_reports_its_own_error(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """pg_dump refusing the server (version mismatch) fails the run with pg_dump's message.

    No old pg_dump is installed here, so a stand-in script prints what pg_dump 9.6 prints against
    a newer server and exits 1, as it does; the code under test is pgvault's handling of it.
    """
    fake = tmp_path / "pg_dump"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 9.6.24"; exit 0; fi\n'
        'echo "pg_dump: server version: 15.2; pg_dump version: 9.6.24" >&2\n'
        'echo "pg_dump: aborting because of server version mismatch" >&2\n'
        "exit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    config = pgvault.load_config(
        make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db), "pg_dump": str(fake)})
    )
    with pytest.raises(pgvault.SourceError, match="aborting because of server version mismatch"):
        pgvault.run(config)
    assert_nothing_left(config)


@attrs.frozen
class Gate(Transform):
    """A pass-through stage that holds the stream after its first chunk until released.

    It lets a test act (stop the server, kill pg_dump) while pg_dump is provably mid-stream.
    """

    type_name: ClassVar[str] = "gate"
    reached: threading.Event = attrs.field(factory=threading.Event)
    release: threading.Event = attrs.field(factory=threading.Event)

    def manifest_params(self) -> dict[str, Any]:
        return {}

    def encoder(self) -> Codec:
        gate = self

        class Encoder:
            def update(self, data: bytes) -> bytes:
                gate.reached.set()
                gate.release.wait(60)
                return data

            def finish(self) -> bytes:
                return b""

        return Encoder()

    @classmethod
    def decoder(cls, params: Mapping[str, Any], context: DecodeContext) -> Codec:
        raise NotImplementedError


@pytest.fixture
def big_cluster(pg_cluster_factory: Callable[..., PostgresCluster]) -> PostgresCluster:
    """A dedicated cluster with ~40 MB of table data: far more than pipe and socket buffers."""
    cluster = pg_cluster_factory()
    cluster.create_database("big")
    cluster.execute(
        "CREATE TABLE filler AS SELECT i, md5(i::text) || repeat('x', 100) AS pad "
        "FROM generate_series(1, 300000) AS i",
        "big",
    )
    return cluster


def run_gated(config: pgvault.PipelineConfig, act: Callable[[], None]) -> BaseException | None:
    gate = Gate()
    gated = attrs.evolve(config, transforms=(gate, *config.transforms))
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            pgvault.run(gated)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    assert gate.reached.wait(60), "pg_dump never produced output"
    act()
    gate.release.set()
    thread.join(120)
    assert not thread.is_alive()
    return outcome[0]


def test_server_stopped_mid_dump_fails_and_leaves_nothing(
    big_cluster: PostgresCluster, make_config: ConfigMaker
) -> None:
    """Stopping the server while pg_dump streams fails the run with pg_dump's error; no backup."""
    config = pgvault.load_config(make_config({"type": "pg_dump", "dsn": big_cluster.dsn("big")}))
    error = run_gated(config, lambda: big_cluster.stop("immediate"))
    assert isinstance(error, pgvault.SourceError)
    assert "pg_dump failed" in str(error)
    assert_nothing_left(config)


def _pg_dump_pids(port: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"pg_dump") and any(f"port={port}".encode() in c for c in cmd):
            pids.append(int(entry.name))
    return pids


def kill_pg_dumps(port: int) -> None:
    """SIGKILL every pg_dump connected to ``port`` (at least one must be running)."""
    pids = _pg_dump_pids(port)
    assert pids, "pg_dump process not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)


def test_pg_dump_killed_mid_stream_fails_and_leaves_nothing(
    big_cluster: PostgresCluster, make_config: ConfigMaker
) -> None:
    """A pg_dump killed mid-stream (OOM killer, operator) fails the run naming the signal."""
    config = pgvault.load_config(make_config({"type": "pg_dump", "dsn": big_cluster.dsn("big")}))

    error = run_gated(config, lambda: kill_pg_dumps(big_cluster.port))
    assert isinstance(error, pgvault.SourceError)
    assert "pg_dump was killed by SIGKILL" in str(error)
    assert_nothing_left(config)
    # The next run on the same vault succeeds.
    assert pgvault.run(config).backup_id


@pytest.mark.parametrize(
    ("lock", "who"),
    [
        # A plain table: pgvault's own look at the tables' sizes is the first to wait.
        ("LOCK TABLE plain", "a table stayed locked by another session"),
        # Only a partitioned parent: pgvault's look passes, and pg_dump itself waits.
        ("LOCK TABLE ONLY parts", "pg_dump: error: query failed: ERROR:  canceling statement"),
    ],
    ids=["pgvault-waits", "pg_dump-waits"],
)
def test_lock_wait_timeout_gives_up_on_a_locked_table(
    pg_cluster: PostgresCluster, make_config: ConfigMaker, lock: str, who: str
) -> None:
    """With lock_wait_timeout, a table held by a long ALTER or VACUUM FULL fails the backup
    once the time is up, whoever meets the lock first, rather than hanging the nightly job."""
    pg_cluster.drop_database("locked")
    pg_cluster.create_database("locked")
    pg_cluster.execute(
        "CREATE TABLE plain AS SELECT generate_series(1, 100) AS id;"
        "CREATE TABLE parts (id int) PARTITION BY RANGE (id);"
        "CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (1000);",
        "locked",
    )
    config = pgvault.load_config(
        make_config({"type": "pg_dump", "dsn": pg_cluster.dsn("locked"), "lock_wait_timeout": "1s"})
    )
    outcome: list[BaseException] = []

    def backup() -> None:
        try:
            pgvault.run(config)
        except BaseException as exc:
            outcome.append(exc)

    with pg_cluster.connect("locked") as holder, holder.transaction():
        holder.execute(f"{lock} IN ACCESS EXCLUSIVE MODE")
        attempt = threading.Thread(target=backup)
        attempt.start()
        attempt.join(60)
        waited = attempt.is_alive()
    attempt.join()
    assert not waited, "the backup was still waiting on the lock a minute later"
    assert len(outcome) == 1 and isinstance(outcome[0], pgvault.SourceError), outcome
    assert who in str(outcome[0])
    assert list(pgvault.Vault.from_config(config).backups()) == []
    pg_cluster.drop_database("locked")
