"""Replacing a database is safe at every instant: the documented command works, pre-flight
runs before any side effect, a locked table cannot hang it, and SIGTERM or Ctrl-C at any
step leaves the old database intact or names the safety backup and the command that works."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import pgvault
from pgvault.testing import PostgresCluster
from tests.conftest import pgvault_cli, snapshot_database

ConfigMaker = Callable[..., Path]
HERE = Path(__file__).resolve().parents[2]  # tests/, where stop_at_step.py lives

APP = """
CREATE TABLE accounts (id int PRIMARY KEY, name text);
INSERT INTO accounts SELECT i, 'account ' || i FROM generate_series(1, 2000) AS i;
CREATE TABLE ledger (id bigint, amount numeric);
INSERT INTO ledger SELECT i, i * 0.5 FROM generate_series(1, 5000) AS i;
"""


@pytest.fixture
def app_db(pg_cluster: PostgresCluster, make_config: ConfigMaker) -> tuple[str, Path]:
    """A database ``app_<n>`` and the config that backs it up (its own DSN, as documented)."""
    name = f"app_{time.monotonic_ns() % 10**9}"
    pg_cluster.create_database(name)
    pg_cluster.execute(APP, name)
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(name), "lock_wait_timeout": "2s"})
    yield name, path
    pg_cluster.drop_database(name)


def _listed(path: Path) -> list[dict]:
    return json.loads(pgvault_cli("list", path, "--json").stdout)


def test_documented_replace_of_the_configs_own_database_works(
    pg_cluster: PostgresCluster, app_db: tuple[str, Path]
) -> None:
    """`restore … latest --target-db app --drop-existing`, with no --dsn and the config's DSN
    naming app itself, replaces app: the drop goes through a maintenance database."""
    name, path = app_db
    backup_id = pgvault_cli("run", path).stdout.strip()
    expected = snapshot_database(pg_cluster, name)
    pg_cluster.execute("DELETE FROM accounts WHERE id > 10; CREATE TABLE junk (x int)", name)
    replaced = pgvault_cli(
        "restore", path, backup_id, "--target-db", name, "--drop-existing", "--yes"
    )
    assert replaced.returncode == 0, replaced.stderr
    assert "safety backup of the replaced database:" in replaced.stdout
    assert snapshot_database(pg_cluster, name) == expected


def test_pre_flight_failure_touches_nothing(
    pg_cluster: PostgresCluster, app_db: tuple[str, Path]
) -> None:
    """A problem pre-flight can see (here a tablespace map naming a tablespace the target
    lacks) fails the replace before the safety backup, the kill of sessions and the drop."""
    name, path = app_db
    backup_id = pgvault_cli("run", path).stdout.strip()
    before = snapshot_database(pg_cluster, name)
    with pg_cluster.connect(name) as session:
        failed = pgvault_cli(
            "restore",
            path,
            backup_id,
            "--target-db",
            name,
            "--drop-existing",
            "--yes",
            "--tablespace-map",
            "pg_default=nowhere",
        )
        assert session.execute("SELECT 1").fetchone() == (1,)  # still connected
    assert failed.returncode == 1
    assert failed.stderr.strip() == (
        f"pgvault: error: --tablespace-map pg_default=nowhere: no tablespace 'nowhere' on "
        f"postgres@127.0.0.1:{pg_cluster.port}"
    )
    assert snapshot_database(pg_cluster, name) == before
    assert [b["kind"] for b in _listed(path)] == ["scheduled"]


def test_safety_backup_gives_up_on_a_locked_table_in_time(
    pg_cluster: PostgresCluster, app_db: tuple[str, Path]
) -> None:
    """With the pipeline's lock_wait_timeout, a session holding ACCESS EXCLUSIVE on a table of
    the database being replaced makes the replace fail once the time is up, rather than hang;
    the database is untouched and no safety backup is left."""
    name, path = app_db
    config = pgvault.load_config(path)
    manifest = pgvault.run(config)
    before = snapshot_database(pg_cluster, name)
    outcome: list[BaseException] = []

    def replace() -> None:
        try:
            pgvault.restore(config, manifest.backup_id, target_db=name, drop_existing=True)
        except BaseException as exc:
            outcome.append(exc)

    with pg_cluster.connect(name) as holder, holder.transaction():
        holder.execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")
        attempt = threading.Thread(target=replace)
        attempt.start()
        attempt.join(60)
        hung = attempt.is_alive()
    attempt.join()
    assert not hung, "the replace was still waiting on the lock a minute later"
    assert len(outcome) == 1 and isinstance(outcome[0], pgvault.RestoreError), outcome
    assert "a table stayed locked by another session" in str(outcome[0])
    assert f"Database {name!r} was not touched" in str(outcome[0])
    assert snapshot_database(pg_cluster, name) == before
    assert [m.kind for m in pgvault.Vault.from_config(config).backups()] == ["scheduled"]


def _signal_at(step: str, signum: int, marker: Path, *args: str | Path) -> tuple[int, str]:
    """Run ``pgvault ARGS`` paused at restore step ``step``; send ``signum`` there."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "stop_at_step.py"), step, str(marker), "--", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            _, err = proc.communicate()
            raise AssertionError(f"never reached step {step}: {proc.returncode} {err}")
        time.sleep(0.02)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.parametrize(
    ("step", "signum"),
    [
        ("checked", signal.SIGTERM),
        ("safety_backup", signal.SIGINT),
        ("dropped", signal.SIGTERM),
        ("loading", signal.SIGTERM),
    ],
)
def test_a_signal_at_any_step_of_a_replace_leaves_a_way_back(
    pg_cluster: PostgresCluster,
    app_db: tuple[str, Path],
    tmp_path: Path,
    step: str,
    signum: int,
) -> None:
    """SIGTERM or Ctrl-C during a replace: before the drop the old database is intact (and
    any safety backup named); after it, the half-made database is removed and the message
    names the safety backup with a command that, run as printed, brings the old one back."""
    name, path = app_db
    backup_id = pgvault_cli("run", path).stdout.strip()
    pg_cluster.execute("CREATE TABLE only_here AS SELECT 42 AS answer", name)
    before = snapshot_database(pg_cluster, name)
    code, err = _signal_at(
        step,
        signum,
        tmp_path / "marker",
        "restore",
        path,
        backup_id,
        "--target-db",
        name,
        "--drop-existing",
        "--yes",
    )
    last = err.strip().splitlines()[-1]
    assert code == (143 if signum == signal.SIGTERM else 130), err
    assert "nothing was left half-written" not in last
    safety = [b["backup_id"] for b in _listed(path) if b["kind"] == "safety"]
    if step in ("checked", "safety_backup"):
        assert f"Database {name!r} was not touched" in last
        assert snapshot_database(pg_cluster, name) == before
        if step == "checked":
            assert safety == []
        else:
            assert safety and f"safety backup {safety[0]} was taken" in last
        return
    assert name not in pg_cluster.databases()  # nothing half-restored left to be used
    [safety_id] = safety
    assert f"The old database is in safety backup {safety_id}: " in last
    command = last.split(f"safety backup {safety_id}: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["pgvault", "restore"]
    back = pgvault_cli(*argv[1:], "--yes")
    assert back.returncode == 0, back.stderr
    assert snapshot_database(pg_cluster, name) == before
