"""One run of a pipeline at a time: real ``pgvault run`` processes held mid-dump, real signals,
real clusters and a real S3 server; and prune never takes what a running backup is writing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.engine.runlock import lease_key, run_lock
from pgvault.testing import PostgresCluster
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import new_backup_id, utc_now
from pgvault.vault.retention import started_from_id
from tests import held_runs
from tests.conftest import pgvault_cli

ConfigMaker = Callable[..., Path]

RETENTION = '\n[retention]\nkeep_last = 3\nincomplete_grace = "1h"\n'


def local_vault(config: pgvault.PipelineConfig) -> Path:
    return Path(config.sink.describe())


@pytest.fixture
def held_db(pg_cluster: PostgresCluster, pg_database: str) -> str:
    """A fresh database of the session cluster with the table a held run waits on; its name."""
    name = pg_database.rsplit("/", 1)[-1]
    held_runs.prepare(pg_cluster, name)
    return name


def test_a_second_run_while_the_first_is_held_mid_dump_fails_naming_it(
    pg_cluster: PostgresCluster, held_db: str, make_config: ConfigMaker
) -> None:
    """cron firing while the last run still dumps: the second run fails at once with one line
    naming the first (its backup, pid and host), and only the first's backup exists."""
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(held_db)})
    with held_runs.held_before_dump(pg_cluster, held_db, path) as first:
        queued = held_runs.waiting(pg_cluster, held_db)
        second = held_runs.start_run(path)
        # Before runs were exclusive, the second simply queued behind the same lock.
        while second.poll() is None and held_runs.waiting(pg_cluster, held_db) == queued:
            time.sleep(0.05)
        still_alone = second.poll() is not None
    rc1, out1, err1 = held_runs.finish(first)
    rc2, _out2, err2 = held_runs.finish(second)
    assert still_alone, "the second run started dumping beside the first"
    assert rc1 == 0, err1
    assert rc2 == 1
    lines = err2.strip().splitlines()
    assert len(lines) == 1, err2
    first_id = out1.strip()
    assert "another scheduled backup is running" in lines[0]
    assert first_id in lines[0] and f"pid {first.pid}" in lines[0], lines[0]
    assert [
        m.backup_id for m in pgvault.Vault.from_config(pgvault.load_config(path)).backups()
    ] == [first_id]


def test_two_hosts_on_different_databases_exclude_each_other_through_the_s3_lease(
    pg_cluster: PostgresCluster,
    pg_cluster_factory: Callable[..., PostgresCluster],
    held_db: str,
    make_config: ConfigMaker,
    s3_sink_options: dict[str, Any],
) -> None:
    """Two configs with one name and one S3 vault but each its own server (the same config on
    two hosts with ``localhost`` in the DSN): no advisory lock is shared, the lease in the vault
    refuses the second."""
    other = pg_cluster_factory()
    held_runs.prepare(other, "postgres")
    first_path = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(held_db)}, sink=s3_sink_options
    )
    second_path = make_config({"type": "pg_dump", "dsn": other.dsn()}, sink=s3_sink_options)
    with held_runs.held_before_dump(pg_cluster, held_db, first_path) as first:
        second = pgvault_cli("run", second_path)
    rc1, out1, err1 = held_runs.finish(first)
    assert rc1 == 0, err1
    assert second.returncode == 1
    assert second.stderr.count("\n") == 1, second.stderr
    assert "another scheduled backup is running" in second.stderr
    assert out1.strip() in second.stderr and "lease" in second.stderr
    vault = Vault.from_config(pgvault.load_config(first_path))
    assert [m.backup_id for m in vault.backups()] == [out1.strip()]
    assert not vault.sink.exists(lease_key(vault.name, "scheduled"))  # given back at the end


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_files_run_is_refused_while_another_holds_the_lease(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, make_config: ConfigMaker
) -> None:
    """Files sources have no database to lock in: the vault lease alone keeps a second run (a
    real process) out, naming the holder; once given back, the next run goes ahead."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    sink = None if kind == "local" else request.getfixturevalue("s3_sink_options")
    path = make_config({"type": "files", "paths": [str(tmp_path / "data")]}, sink=sink)
    config = pgvault.load_config(path)
    holder_id = new_backup_id(utc_now())
    with run_lock(config, backup_id=holder_id, kind="scheduled", started=utc_now()):
        refused = pgvault_cli("run", path)
        # A restore's safety backup locks on its own: it never waits for the schedule.
        safety = pgvault.run(config, kind="safety")
    assert refused.returncode == 1
    assert f"backup {holder_id}, pgvault pid {os.getpid()}" in refused.stderr, refused.stderr
    assert safety.kind == "safety"
    pgvault.run(config)  # the lease was given back: the next run goes ahead
    assert len(Vault.from_config(config).backups()) == 2


def test_a_killed_run_blocks_nothing_and_its_leftovers_are_reported_and_cleaned(
    pg_cluster: PostgresCluster, held_db: str, make_config: ConfigMaker
) -> None:
    """SIGKILL mid-dump: the next run goes ahead at once (the server dropped the advisory lock,
    the lease's process is gone); check names the killed run's folder once it is past the grace,
    prune --dry-run says it would clean it, and prune does, folder and all."""
    path = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(held_db)},
        extra='\n[retention]\nkeep_last = 3\nincomplete_grace = "1s"\n',
    )
    config = pgvault.load_config(path)
    with held_runs.stopped_mid_dump(pg_cluster, held_db, path, local_vault(config)) as killed:
        killed.send_signal(signal.SIGKILL)
    held_runs.finish(killed)
    vault = Vault.from_config(config)
    (leftover,) = vault.incomplete()
    started = started_from_id(leftover)
    assert started is not None
    while datetime.now(UTC) < started + timedelta(seconds=2):  # past its 1 s grace
        time.sleep(0.1)
    nxt = pgvault_cli("run", path)
    assert nxt.returncode == 0, nxt.stderr
    assert "taking over the run lease" in nxt.stderr  # said once, as a warning

    check = pgvault_cli("check", path)
    assert check.returncode == 1, check.stdout
    assert (
        f"WARNING: 1 unfinished backup folder(s) older than incomplete_grace (1s): {leftover}"
        in (check.stdout)
    )
    dry = pgvault_cli("prune", path, "--dry-run")
    assert f"would clean 1 unfinished backup folder(s): {leftover}" in dry.stdout
    assert vault.incomplete() == [leftover]
    done = pgvault_cli("prune", path)
    assert f"cleaned 1 unfinished backup folder(s): {leftover}" in done.stdout, done.stdout
    assert vault.incomplete() == []
    backups = Path(config.sink.describe()) / config.name / "backups"
    assert sorted(p.name for p in backups.iterdir()) == [nxt.stdout.strip()]
    assert pgvault_cli("check", path).returncode == 0


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_leaves_no_folder(
    how: signal.Signals, pg_cluster: PostgresCluster, held_db: str, make_config: ConfigMaker
) -> None:
    """SIGTERM or Ctrl-C mid-dump: the run removes what it wrote, its folder included (an empty
    folder no listing shows would stay forever), and gives its lock back."""
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(held_db)})
    config = pgvault.load_config(path)
    with held_runs.stopped_mid_dump(pg_cluster, held_db, path, local_vault(config)) as run:
        run.send_signal(how)  # while its first artifact is being written
    rc, _out, err = held_runs.finish(run)
    assert rc != 0 and "nothing was left half-written" in err
    vault_root = Path(config.sink.describe()) / config.name
    left = sorted(p.relative_to(vault_root).as_posix() for p in vault_root.rglob("*"))
    # Only the interrupted run's record (for reports) stays, outside backups/.
    assert [p for p in left if not p.startswith("failures")] == [], (left, err)
    assert len([p for p in left if p.startswith("failures/")]) == 1
    assert not (vault_root / "locks" / "scheduled.json").exists()


def test_prune_never_takes_what_a_running_backup_writes(
    pg_cluster: PostgresCluster, held_db: str, make_config: ConfigMaker
) -> None:
    """A run that outlasts incomplete_grace is still being written: prune (planning days ahead)
    keeps its folder and unfinished file because the run holds the lease, and the run succeeds."""
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(held_db)}, extra=RETENTION)
    config = pgvault.load_config(path)
    with held_runs.stopped_mid_dump(pg_cluster, held_db, path, local_vault(config)) as run:
        later = datetime.now(UTC) + timedelta(days=3)
        dry = pgvault.prune(config, now=later, dry_run=True)
        result = pgvault.prune(config, now=later)
    rc, out, err = held_runs.finish(run)
    assert rc == 0, err
    (decision,) = [d for d in dry.plan.decisions if not d.complete]
    assert decision.keep and "being written by backup" in decision.reasons[0], decision
    assert result.removed == () and result.partials_removed == 0
    vault = Vault.from_config(config)
    assert vault.verify(vault.manifest(out.strip())).ok


def test_a_lease_held_by_a_zombie_is_taken_over(
    tmp_path: Path, make_config: ConfigMaker, caplog: pytest.LogCaptureFixture
) -> None:
    """A run killed with its parent (a Celery worker's child) is a zombie until init reaps it,
    late or never in some containers: its lease must not block the next run for ten minutes."""
    import socket
    import subprocess

    from pgvault.engine.runlock import LEASE_SECONDS, Lease

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    config = pgvault.load_config(make_config({"type": "files", "paths": [str(tmp_path / "data")]}))
    dead = subprocess.Popen(["true"])  # not waited for: a zombie once it exits
    stat = Path(f"/proc/{dead.pid}/stat")
    deadline = time.monotonic() + 10
    while stat.read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child never became a zombie"
        time.sleep(0.01)
    try:
        held = Lease(
            kind="scheduled",
            backup_id=new_backup_id(utc_now()),
            host=socket.gethostname(),
            pid=dead.pid,
            started_at=utc_now(),
            expires_at=utc_now() + timedelta(seconds=LEASE_SECONDS),
            token="zombie",
        )
        vault = Vault.from_config(config)
        vault.sink.write_bytes(lease_key(config.name, "scheduled"), held.to_json())
        with caplog.at_level("WARNING", logger="pgvault.runlock"):
            pgvault.run(config)
    finally:
        dead.wait()
    assert f"its process {dead.pid} is gone" in caplog.text
    assert len(vault.backups()) == 1
