"""pgvault doctor: one line per check, against real clusters and sinks, failing where they fail."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgvault.config import load_config
from pgvault.operations.doctor import DoctorResult, Status, doctor
from pgvault.postgres.cluster import free_port
from pgvault.testing import PostgresCluster
from pgvault.transforms.keys import write_key_file
from pgvault.wal.configure import archive_command, pgvault_command
from tests.conftest import pgvault_cli

MakeConfig = Callable[..., Path]


def set_archive_command(cluster: PostgresCluster, value: str) -> None:
    """ALTER SYSTEM and reload; wait until a new session sees it (the reload is asynchronous)."""
    cluster.execute(f"ALTER SYSTEM SET archive_command = {value}")
    cluster.execute("SELECT pg_reload_conf()")
    wanted = value[1:-1].replace("''", "'")
    for _ in range(100):
        if cluster.execute("SHOW archive_command")[0][0] == wanted:
            return
        time.sleep(0.05)
    raise AssertionError(f"archive_command never became {wanted!r}")


def by_name(result: DoctorResult) -> dict[str, tuple[Status, str]]:
    """Each check's (status, detail); a check that appears twice keeps its worst."""
    out: dict[str, tuple[Status, str]] = {}
    for f in result.findings:
        if f.name not in out or f.status > out[f.name][0]:
            out[f.name] = (f.status, f.detail)
    return out


@pytest.fixture
def files_source(tmp_path: Path) -> dict[str, object]:
    """A files source on a real folder: sink, key and space checks without a database."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("a")
    return {"type": "files", "paths": [str(data)]}


def test_a_healthy_pipeline_is_ok_on_every_line_and_leaves_the_vault_empty(
    make_config: MakeConfig, pg_database: str, tmp_path: Path
) -> None:
    """Database, tools, sink, keys, space and clocks all OK: exit 0, nothing stored."""
    key = tmp_path / "backup.key"
    write_key_file(key)
    config = make_config(
        {"type": "pg_dump", "dsn": pg_database},
        [{"type": "zstd"}, {"type": "aes-256-gcm", "key_file": str(key)}],
    )
    done = pgvault_cli("doctor", config)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert all(line.startswith("OK") for line in lines), done.stdout
    names = {line.split()[1].rstrip(":") for line in lines}
    assert {"config", "database", "pg_dump", "pg_restore", "clock", "sink", "free", "keys"} <= names
    vault = tmp_path / "vault"
    assert not vault.exists() or not [p for p in vault.rglob("*") if p.is_file()]


def test_a_config_that_does_not_load_is_one_critical_line(tmp_path: Path) -> None:
    """A broken config: exit 2 and a single CRITICAL line naming the file."""
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    done = pgvault_cli("doctor", bad)
    assert done.returncode == 2
    assert len(done.stdout.splitlines()) == 1
    assert done.stdout.startswith("CRITICAL config:") and str(bad) in done.stdout


def test_an_unreachable_database_is_critical(make_config: MakeConfig) -> None:
    """Nothing listening on the DSN's port: the database line is CRITICAL, exit 2."""
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres?connect_timeout=3"
    result = doctor(load_config(make_config({"type": "pg_dump", "dsn": dsn})))
    assert by_name(result)["database"][0] is Status.CRITICAL
    assert result.status is Status.CRITICAL


def test_a_role_that_cannot_read_a_table_is_critical_naming_it(
    make_config: MakeConfig, pg_cluster: PostgresCluster, pg_database: str
) -> None:
    """A backup role without SELECT on one table: pg_dump would fail, and doctor says on what."""
    db = pg_database.rsplit("/", 1)[1]
    pg_cluster.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'doctor_ro') THEN "
        "CREATE ROLE doctor_ro LOGIN; END IF; END $$"
    )
    pg_cluster.execute(
        "CREATE TABLE open_t (x int); CREATE TABLE secret_t (x int); "
        "GRANT SELECT ON open_t TO doctor_ro",
        db,
    )
    dsn = pg_cluster.dsn(db).replace("postgres@", "doctor_ro@", 1)
    assert "doctor_ro@" in dsn
    status, detail = by_name(doctor(load_config(make_config({"type": "pg_dump", "dsn": dsn}))))[
        "database"
    ]
    assert status is Status.CRITICAL
    assert "no SELECT on public.secret_t" in detail and "open_t" not in detail


def test_client_tools_missing_or_older_than_the_server_are_critical(
    make_config: MakeConfig, pg_database: str, tmp_path: Path
) -> None:
    """A configured pg_dump that does not exist, or one older than the server: CRITICAL."""
    missing = make_config({"type": "pg_dump", "dsn": pg_database, "pg_dump": "/nowhere/pg_dump"})
    status, detail = by_name(doctor(load_config(missing)))["pg_dump"]
    assert status is Status.CRITICAL and "/nowhere/pg_dump" in detail

    # An old client, as an operator's PATH may hold: it reports 12.
    old = tmp_path / "pg12" / "pg_dump"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.19'\n")
    old.chmod(0o755)
    config = make_config({"type": "pg_dump", "dsn": pg_database, "pg_dump": str(old)})
    status, detail = by_name(doctor(load_config(config)))["pg_dump"]
    assert status is Status.CRITICAL
    assert "12.19, older than the server's 15" in detail


def test_a_sink_that_cannot_be_written_is_critical(
    make_config: MakeConfig, files_source: dict[str, object], tmp_path: Path
) -> None:
    """A local vault path that is a file, not a folder: the sink line is CRITICAL."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = make_config(files_source, sink={"type": "local", "path": str(blocker)})
    status, detail = by_name(doctor(load_config(config)))["sink"]
    assert status is Status.CRITICAL and str(blocker) in detail


def test_an_s3_sink_is_written_and_cleaned_like_a_local_one(
    make_config: MakeConfig, files_source: dict[str, object], s3_sink_options: dict[str, object]
) -> None:
    """On a real S3 server (moto) the test object is written, read back and removed."""
    config = load_config(make_config(files_source, sink=dict(s3_sink_options)))
    found = by_name(doctor(config))
    assert found["sink"][0] is Status.OK, found
    assert found["sink clock"][0] is Status.OK, found
    assert config.sink.list(f"{config.name}/") == []


def test_keys_unreadable_or_open_to_others_are_reported(
    make_config: MakeConfig, files_source: dict[str, object], tmp_path: Path
) -> None:
    """A missing key file is CRITICAL; one readable by others is a WARNING with the chmod."""
    missing = make_config(
        files_source, [{"type": "aes-256-gcm", "key_file": str(tmp_path / "gone.key")}]
    )
    status, detail = by_name(doctor(load_config(missing)))["keys"]
    assert status is Status.CRITICAL and "gone.key" in detail

    key = tmp_path / "open.key"
    write_key_file(key)
    key.chmod(0o644)
    open_ = make_config(files_source, [{"type": "aes-256-gcm", "key_file": str(key)}])
    status, detail = by_name(doctor(load_config(open_)))["keys"]
    assert status is Status.WARNING and f"chmod 600 {key}" in detail
    assert stat.S_IMODE(key.stat().st_mode) == 0o644  # reported, not changed


def test_an_unset_passphrase_variable_is_critical(
    make_config: MakeConfig, files_source: dict[str, object]
) -> None:
    """passphrase_env naming an unset variable: CRITICAL, naming the variable."""
    os.environ.pop("PGVAULT_DOCTOR_NO_SUCH_VAR", None)
    config = make_config(
        files_source, [{"type": "aes-256-gcm", "passphrase_env": "PGVAULT_DOCTOR_NO_SUCH_VAR"}]
    )
    status, detail = by_name(doctor(load_config(config)))["keys"]
    assert status is Status.CRITICAL and "PGVAULT_DOCTOR_NO_SUCH_VAR" in detail


def test_free_space_below_min_free_is_a_warning(
    make_config: MakeConfig, files_source: dict[str, object]
) -> None:
    """[check] min_free above what the disk has free: WARNING, naming the threshold."""
    config = make_config(files_source, extra='[check]\nmin_free = "100%"\n')
    status, detail = by_name(doctor(load_config(config)))["free space"]
    assert status is Status.WARNING and "min_free 100%" in detail


def test_a_clock_off_against_the_database_and_the_sink_is_reported(
    make_config: MakeConfig, pg_database: str
) -> None:
    """This host's clock 10 minutes fast: WARNING against the server's and the sink's; an hour:
    CRITICAL (S3 refuses requests signed 15 minutes off)."""
    config = load_config(make_config({"type": "pg_dump", "dsn": pg_database}))

    def ahead(minutes: int) -> Callable[[], datetime]:
        return lambda: datetime.now(UTC) + timedelta(minutes=minutes)

    found = by_name(doctor(config, now=ahead(10)))
    assert found["clock"][0] is Status.WARNING and "behind" in found["clock"][1]
    assert found["sink clock"][0] is Status.WARNING
    assert by_name(doctor(config, now=ahead(60)))["clock"][0] is Status.CRITICAL


def test_wal_settings_are_checked_against_what_wal_setup_prints(
    make_config: MakeConfig,
    pg_cluster: PostgresCluster,
    pg_cluster_factory: Callable[..., PostgresCluster],
) -> None:
    """archive_mode off is CRITICAL; archive_command as wal-setup prints it is OK, another is
    CRITICAL quoting both."""
    # The session cluster does not archive (archive_mode = off, the default).
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn()}, extra="[wal]\nworkers = 1\n")
    found = by_name(doctor(load_config(path)))
    assert found["wal archive_mode"][0] is Status.CRITICAL
    assert found["wal wal_level"][0] is Status.OK

    cluster = pg_cluster_factory(settings={"wal_level": "replica", "archive_mode": "on"})
    path = make_config({"type": "pg_dump", "dsn": cluster.dsn()}, extra="[wal]\nworkers = 1\n")
    config = load_config(path)
    set_archive_command(cluster, archive_command(config, pgvault_command()))
    found = by_name(doctor(config))
    assert found["wal archive_mode"][0] is Status.OK
    assert found["wal archive_command"][0] is Status.OK

    set_archive_command(cluster, "'/bin/true'")
    status, detail = by_name(doctor(config))["wal archive_command"]
    assert status is Status.CRITICAL and "'/bin/true'" in detail and "wal-push" in detail
