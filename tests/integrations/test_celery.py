"""The Celery integration end to end: real ``celery worker`` and ``celery beat`` processes on the
machine's RabbitMQ broker and Redis result backend, backing up a real PostgreSQL cluster into a
local vault.

Each test run has a queue of its own and a Redis key prefix of its own, so parallel runs never
see each other's tasks. A backup is held mid-run deterministically by a lock the test takes on
a table: pg_dump (or pgvault's row count in its snapshot) waits on it with the run lock held.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pgvault
from pgvault.integrations.celery import PgVaultTaskError, beat_schedule_for, make_app
from pgvault.testing import PostgresCluster
from tests.conftest import render_config

BROKER = "amqp://guest:guest@127.0.0.1:5672//"
REDIS = "redis://127.0.0.1:6379"
HOST = "testhost"


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def until(cond: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``cond`` until it returns something true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Worker:
    """One ``celery worker`` process (prefork, one child) consuming the run's queue."""

    def __init__(self, label: str, rig: Rig) -> None:
        self.label = label
        self.rig = rig
        self.name = f"{label}-{rig.run_id}@{HOST}"
        self.log = rig.folder / f"{label}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.write_bytes(b"")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "celery", "-A", "pgvault.integrations.celery"),
                    *("worker", "-n", self.name, "-c", "1", "-l", "INFO"),
                    *("--without-mingle", "--without-gossip"),
                ],
                env=self.rig.env,
                cwd=self.rig.folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            pytest.fail(f"worker {self.label} exited:\n{self.log.read_text()[-3000:]}")
        return f"{self.name} ready." in self.log.read_text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


class Rig:
    """The run's broker queue, result prefix, app settings, worker pair and client app."""

    def __init__(self, folder: Path, cluster: PostgresCluster, dbname: str) -> None:
        self.run_id = uuid.uuid4().hex[:10]
        self.folder = folder
        self.cluster = cluster
        self.dbname = dbname
        self.queue = f"pgvault-test-{self.run_id}"
        self.settings: dict[str, Any] = {
            "broker_url": BROKER,
            "result_backend": f"{REDIS}/{1 + int(self.run_id, 16) % 15}",
            "result_backend_transport_options": {"global_keyprefix": f"{self.run_id}:"},
            "task_default_queue": self.queue,
            # No remote control: no pidbox queues shared with other runs on the broker.
            "worker_enable_remote_control": False,
            "pgvault_retry_delay": 0.5,
        }
        module = f"pgvault_test_celery_{self.run_id}"
        (folder / f"{module}.py").write_text(
            "".join(f"{k} = {v!r}\n" for k, v in self.settings.items())
        )
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(folder), *sys.path]),
            "CELERY_CONFIG_MODULE": module,
            "PGVAULT_CONFIG_PATH": str(folder),
        }
        self.client = make_app(env={}, **self.settings)
        self.workers = [Worker("a", self), Worker("b", self)]

    def revive(self) -> None:
        """Every worker running and consuming (a test may have killed one)."""
        dead = [w for w in self.workers if not w.alive()]
        for w in dead:
            w.start()
        for w in dead:
            until(w.ready, f"worker {w.label} to be ready")

    def worker_of(self, pid: int) -> Worker:
        """The worker whose process (or pool child) ``pid`` is."""
        stat = Path(f"/proc/{pid}/stat").read_text()
        ppid = int(stat.rpartition(")")[2].split()[1])
        for w in self.workers:
            if w.proc is not None and w.proc.pid in (pid, ppid):
                return w
        raise AssertionError(f"pid {pid} belongs to no worker of this run")

    def config(self, name: str, extra: str = "") -> Path:
        path = self.folder / f"{name}.toml"
        path.write_text(
            render_config(
                name=name,
                source={"type": "pg_dump", "dsn": self.cluster.dsn(self.dbname)},
                sink={"type": "local", "path": str(self.folder / f"vault-{name}")},
                extra=extra,
            )
        )
        return path

    def send(self, task: str, *args: Any) -> Any:
        return self.client.send_task(task, args=args)

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        with self.client.connection_for_write() as conn:
            conn.default_channel.queue_delete(self.queue)
        backend = self.client.backend
        for key in backend.client.scan_iter(f"{self.run_id}:*"):
            backend.client.delete(key)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory, pg_cluster: PostgresCluster) -> Iterator[Rig]:
    """Two workers on a queue of this run's own, a database with a table a test can lock."""
    for port, what in ((5672, "RabbitMQ"), (6379, "Redis")):
        if not _reachable(port):
            pytest.fail(
                f"{what} is not reachable on 127.0.0.1:{port}: the Celery tests need the "
                "machine's broker and result backend (.ci/run starts them; see "
                "/work/shared/TEST-SERVERS.md)"
            )
    dbname = f"celery_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(dbname)
    pg_cluster.execute(
        "CREATE TABLE items AS SELECT i, md5(i::text) AS v FROM generate_series(1, 1000) i;"
        "CREATE TABLE gate (x int)",
        dbname,
    )
    folder = tmp_path_factory.mktemp("celery")
    folder.chmod(0o755)
    rig = Rig(folder, pg_cluster, dbname)
    try:
        for w in rig.workers:
            w.start()
        for w in rig.workers:
            until(w.ready, f"worker {w.label} to be ready")
        yield rig
    finally:
        rig.close()
        pg_cluster.drop_database(dbname)


@pytest.fixture
def fleet(rig: Rig) -> Rig:
    """The rig with both workers up."""
    rig.revive()
    return rig


def listed(config: Path) -> list[pgvault.Manifest]:
    loaded = pgvault.load_config(config)
    return list(pgvault.Vault.from_config(loaded).contents().backups)


class GateLock:
    """An ACCESS EXCLUSIVE lock on table ``gate``: a backup that reaches it waits there."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.conn = psycopg.connect(rig.cluster.dsn(rig.dbname))

    def __enter__(self) -> GateLock:
        self.conn.execute("LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        return self

    def waiting(self) -> bool:
        """Whether a session of the backup waits for the lock."""
        with psycopg.connect(self.rig.cluster.dsn(self.rig.dbname)) as other:
            row = other.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            ).fetchone()
        return bool(row and row[0])

    def release(self) -> None:
        self.conn.rollback()

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def test_beat_schedule_sends_a_backup_that_lands_in_the_vault(
    fleet: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real ``celery beat`` built from the config's ``[schedule] backup = "* * * * *"`` sends
    the backup, found by name on the workers' search path, and a worker stores it."""
    config = fleet.config("beatapp", '[schedule]\nbackup = "* * * * *"\ntimeout = "10m"\n')
    monkeypatch.setenv("PGVAULT_CONFIG_PATH", str(fleet.folder))
    entries = beat_schedule_for(["beatapp"], queue=fleet.queue)
    assert list(entries) == ["pgvault backup beatapp"]
    entry = entries["pgvault backup beatapp"]
    assert entry["task"] == "pgvault.run" and entry["args"] == ("beatapp",)
    assert entry["options"]["soft_time_limit"] == 600

    # The beat app as an operator writes it, except that the entry last ran two minutes ago
    # (as after a restart that missed a run), so it is due at beat's first tick rather than at
    # the next minute boundary.
    module = f"beat_{fleet.run_id}"
    (fleet.folder / f"{module}.py").write_text(
        "import datetime\n"
        "from pgvault.integrations.celery import beat_schedule_for, make_app\n"
        "app = make_app()\n"
        "before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=2)\n"
        "app.conf.beat_schedule = {name: {**entry, 'last_run_at': before} for name, entry in\n"
        f"    beat_schedule_for(['beatapp'], queue={fleet.queue!r}).items()}}\n"
    )
    log = fleet.folder / "beat.log"
    with log.open("wb") as out:
        beat = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", module, "beat", "-l", "INFO"),
                *("-s", str(fleet.folder / "beat-schedule"), "--max-interval", "1"),
            ],
            env=fleet.env,
            cwd=fleet.folder,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        backups = until(lambda: listed(config), "the beat-sent backup in the vault", 40)
    finally:
        os.killpg(beat.pid, signal.SIGKILL)
        beat.wait(10)
    assert "Sending due task pgvault backup beatapp (pgvault.run)" in log.read_text()
    assert backups[0].kind == "scheduled" and backups[0].name == "beatapp"


def test_two_workers_given_one_pipeline_run_it_once(fleet: Rig) -> None:
    """Two workers handed the same backup at once: one stores it, the other's result says
    skipped, already running, naming the holder."""
    config = fleet.config("twice")
    with GateLock(fleet) as gate:
        first = fleet.send("pgvault.run", str(config))
        second = fleet.send("pgvault.run", str(config))
        done = until(lambda: [r for r in (first, second) if r.ready()], "one result", 30)
        skipped = done[0].get(timeout=1)
        # The other run is mid-backup: it holds the run lock and waits on the table's lock.
        until(gate.waiting, "the other run to wait on the table lock")
        gate.release()
        ran = (second if done[0] is first else first).get(timeout=30)
    assert skipped["status"] == "skipped" and skipped["reason"] == "already running"
    assert "another scheduled backup is running" in skipped["message"]
    assert ran["status"] == "succeeded" and ran["pipeline"] == "twice"
    assert {skipped["worker"], ran["worker"]} == {w.name for w in fleet.workers}
    assert [m.backup_id for m in listed(config)] == [ran["backup_id"]]


def test_a_worker_killed_mid_backup_leaves_nothing_and_the_task_is_retried(fleet: Rig) -> None:
    """SIGKILL of the worker running a backup (pg_dump started, locks held): nothing is listed,
    and the broker's redelivery makes the other worker take the backup, as a counted retry."""
    config = fleet.config("killed")
    lease = fleet.folder / "vault-killed" / "killed" / "locks" / "scheduled.json"
    with GateLock(fleet) as gate:
        result = fleet.send("pgvault.run", str(config))
        until(lambda: lease.exists() and gate.waiting(), "the backup to be mid-run", 30)
        holder = pgvault_lease_pid(lease)
        victim = fleet.worker_of(holder)
        assert victim.proc is not None
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(10)
        until(lambda: dead(holder), "the pool child to die with it", 10)
        assert listed(config) == []
        gate.release()
        summary = result.get(timeout=40)
    survivor = next(w for w in fleet.workers if w is not victim)
    assert summary["status"] == "succeeded"
    # attempt 2 at least: the lost delivery counts (a lock not yet released would add more).
    assert summary["worker"] == survivor.name and summary["attempt"] >= 2
    assert [m.backup_id for m in listed(config)] == [summary["backup_id"]]


def dead(pid: int) -> bool:
    """Whether ``pid`` has exited: gone, or a zombie not yet reaped (its parent was killed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def pgvault_lease_pid(lease: Path) -> int:
    import json

    return int(json.loads(lease.read_text())["pid"])


def test_a_transient_failure_is_retried_and_a_mistake_is_not(fleet: Rig) -> None:
    """A sink that cannot be written (its folder is a file) is retried until it can; an unknown
    config fails at once, its one line back at the caller, not retried."""
    blocked = fleet.folder / "blocked"
    blocked.write_text("not a folder")
    config = fleet.folder / "flaky.toml"
    config.write_text(
        render_config(
            name="flaky",
            source={"type": "pg_dump", "dsn": fleet.cluster.dsn(fleet.dbname)},
            sink={"type": "local", "path": str(blocked / "vault")},
        )
    )
    result = fleet.send("pgvault.run", str(config))
    logs = [w.log for w in fleet.workers]
    until(
        lambda: any("flaky.toml" in p.read_text() and "retrying in" in p.read_text() for p in logs),
        "the first attempt to fail and be retried",
    )
    blocked.unlink()
    summary = result.get(timeout=30)
    assert summary["status"] == "succeeded" and summary["attempt"] >= 2
    assert [m.backup_id for m in listed(config)] == [summary["backup_id"]]

    missing = fleet.send("pgvault.check", "no-such-config")
    with pytest.raises(PgVaultTaskError, match="no config named 'no-such-config'"):
        missing.get(timeout=30)
    assert missing.result.args and missing.state == "FAILURE"


def test_a_run_past_its_soft_time_limit_stops_and_leaves_nothing(fleet: Rig) -> None:
    """``[schedule] timeout`` reaches the task as its soft time limit: a backup stuck past it
    stops, removes what it stored, and the task fails (not retried, nothing listed)."""
    config = fleet.config("stuck")
    with GateLock(fleet) as gate:
        result = fleet.client.send_task(
            "pgvault.run", args=[str(config)], soft_time_limit=2, time_limit=30
        )
        until(gate.waiting, "the backup to be stuck on the lock", 30)
        with pytest.raises(PgVaultTaskError, match=r"backup of .*stuck.toml: stopped at its time"):
            result.get(timeout=20)
        gate.release()
    vault = pgvault.Vault.from_config(pgvault.load_config(config))
    assert listed(config) == [] and vault.incomplete() == []


def test_every_task_runs_on_a_worker_and_returns_json(fleet: Rig) -> None:
    """prune, check, drill, report and copy run on a real worker after two backups and come
    back through the result backend as JSON: prune removed the older backup, the check is OK,
    the drill restored the newest, the report counted both runs, copy had nothing to add."""
    dsn = fleet.cluster.dsn(fleet.dbname)
    config = fleet.folder / "ops.toml"
    config.write_text(
        f'name = "ops"\n[source]\ntype = "pg_dump"\ndsn = "{dsn}"\n'
        f'[[sink]]\nname = "near"\ntype = "local"\npath = "{fleet.folder / "near"}"\n'
        f'[[sink]]\nname = "far"\ntype = "local"\npath = "{fleet.folder / "far"}"\n'
        "[retention]\nkeep_last = 1\n"
    )
    first, second = (fleet.send("pgvault.run", "ops").get(timeout=30) for _ in range(2))
    assert first["status"] == second["status"] == "succeeded"

    reported = fleet.send("pgvault.report", "ops", 1).get(timeout=30)
    assert reported["status"] == "succeeded" and reported["taken"] == 2
    pruned = fleet.send("pgvault.prune", "ops").get(timeout=30)
    assert pruned["status"] == "succeeded" and pruned["removed"] == [first["backup_id"]]
    checked = fleet.send("pgvault.check", "ops").get(timeout=30)
    assert checked["status"] == "OK" and checked["pipeline"] == "ops"
    drilled = fleet.send("pgvault.drill", "ops").get(timeout=60)
    assert drilled["status"] == "succeeded" and drilled["backup_id"] == second["backup_id"]
    copied = fleet.send("pgvault.copy", "ops", "near", "far").get(timeout=30)
    assert copied["status"] == "succeeded" and copied["ok"]
    assert [m.backup_id for m in listed(config)] == [second["backup_id"]]
