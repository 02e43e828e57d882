"""Point-in-time recovery across a promotion, and what breaks it, on a real archive: a timeline
created after the backup is followed to the rows written on it; one created before the backup
is refused; a missing ``.history`` file is named; a corrupted segment stops recovery with a
reported error; retention with ``pitr_within`` keeps the earliest promised moment restorable.

One archiving cluster per module, whose story is written once (see :func:`promoted`): 100 rows,
base backup B1, 50 more rows on timeline 1; then a restore of B1 to its end
(``--target-immediate``) that promotes onto timeline 2 and archives into the same vault, where 20
rows (ids 1001..1020) are written (120 rows on timeline 2); meanwhile the original server goes on
along timeline 1 with 10 more rows and base backup B3, taken after the fork. Four restores with
replay in all (the fork among them); refusals are checked without replay. The package's shared
``pitr_rig`` is read-only, and this story writes a timeline into its vault: hence a cluster of
its own, with ``restore_to`` and ``cleanup`` from the package's conftest.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

import pgvault
from pgvault.operations.pitr.plan import PitrRefused
from pgvault.operations.pitr.restore import restore_pitr
from pgvault.operations.pitr.targets import build_target, utc_text
from pgvault.postgres.cluster import PostgresCluster
from pgvault.settings import RetentionPolicy
from pgvault.units import Duration
from tests.basebackup_rig import basebackup_config
from tests.conftest import pgvault_cli
from tests.operations.pitr.conftest import cleanup, restore_to, rows, vault_copy, wait_archived
from tests.wal.conftest import WalRig, chown_postgres, postgres_folder, set_archive_command


@attrs.frozen
class Promoted:
    """The module's story (see the module doc)."""

    rig: WalRig
    b1: str
    b1_stopped_at: datetime
    b1_stop_wal: str
    segment_size: int
    b3: str


def unreachable(port: int) -> bool:
    """Whether nothing answers on ``port`` (a server that stopped)."""
    import psycopg

    try:
        psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=3
        ).close()
    except psycopg.OperationalError:
        return True
    return False


@pytest.fixture(scope="module")
def promoted(pgvault_for_postgres: list[str]) -> Iterator[Promoted]:
    """The module's cluster, vault and story."""
    settings = {"wal_level": "replica", "archive_mode": "on", "archive_command": "'/bin/false'"}
    cluster = PostgresCluster(settings=settings, initdb_args=("--wal-segsize=1",))
    folder = postgres_folder("pgvault-tli-")
    fork: Path | None = None
    try:
        cluster.start()
        rig = WalRig(cluster, folder, pgvault_for_postgres, None, {}, encrypt=True)
        set_archive_command(rig, "push")
        cluster.execute("CREATE TABLE t (id int PRIMARY KEY)")
        cluster.execute("INSERT INTO t SELECT generate_series(1, 100)")
        (first,) = rig.switch(1)
        rig.wait_archived(first)
        config = basebackup_config(rig)
        b1 = pgvault.run(pgvault.load_config(config))
        stopped = datetime.fromisoformat(str(b1.source["stopped_at"]))
        # Room for the earliest moment retention promises (B1's end plus a little) to fall
        # before these rows.
        time.sleep(2.5)
        cluster.execute("INSERT INTO t SELECT generate_series(101, 150)")
        wait_archived(rig, str(cluster.execute("SELECT pg_current_wal_insert_lsn()")[0][0]))
        # The promotion: B1 restored to its own end, promoted onto timeline 2, and archiving
        # into the same vault (the way a failover's new primary does).
        fork, port, result = restore_to(rig, "fork", ref=b1.backup_id, archive=True, immediate=True)
        assert result.started is not None and result.started.ok, result.lines()
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            value = "'" + rig.push_command.replace("'", "''") + "'"
            conn.execute(f"ALTER SYSTEM SET archive_command = {value}")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("INSERT INTO t SELECT generate_series(1001, 1020)")
            row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
            assert row is not None
            closed = str(row[0])
        done = fork / "pg_wal" / "archive_status" / f"{closed}.done"
        history = fork / "pg_wal" / "archive_status" / "00000002.history.done"
        deadline = time.monotonic() + 60
        while not (done.exists() and history.exists()):
            if time.monotonic() > deadline:
                logs = "".join(p.read_text()[-2000:] for p in fork.glob("*.log"))
                raise AssertionError(f"{closed} of timeline 2 not archived:\n{logs}")
            time.sleep(0.05)
        cleanup(rig, fork)
        fork = None
        # The old primary goes on along timeline 1, and is backed up after the fork.
        cluster.execute("INSERT INTO t SELECT generate_series(151, 160)")
        b3 = pgvault.run(pgvault.load_config(config))
        # Write before switching: right after a backup the current segment may hold nothing, and
        # pg_switch_wal() does not close an empty segment.
        (last,) = rig.switch(1)
        rig.wait_archived(last)
        yield Promoted(
            rig,
            b1.backup_id,
            stopped,
            str(b1.source["stop_wal"]),
            int(str(b1.source["segment_size"])),
            b3.backup_id,
        )
    finally:
        if fork is not None:
            cleanup(rig, fork)
        cluster.destroy()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def copy_of(story: Promoted, name: str) -> Iterator[WalRig]:
    """A rig over a private copy of the module's vault (its own folder, spool and config), to
    damage or prune."""
    with vault_copy(story.rig, f"pgvault-tli-{name}-") as copy:
        yield copy


def test_a_timeline_created_after_the_backup_reaches_the_rows_written_after_promotion(
    promoted: Promoted,
) -> None:
    """--target-timeline 2 to the end of the archive: the planner passes over B3 (taken on
    timeline 1 after the fork) for B1, and recovery follows 00000002.history to the 20 rows
    written on the promoted server, without timeline 1's rows after the fork."""
    story = promoted
    data, port, result = restore_to(story.rig, "tl2", timeline="2")
    try:
        assert result.plan.backup.backup_id == story.b1, result.lines()
        assert [t for t, _ in result.plan.path] == [1, 2]
        assert result.started is not None and result.started.ok, result.lines()
        assert rows(port) == 120
        assert rows(port, "SELECT count(*) FROM t WHERE id > 1000") == 20
    finally:
        cleanup(story.rig, data)


def test_a_timeline_created_before_the_backup_is_refused_naming_the_fork(
    promoted: Promoted, tmp_path: Path
) -> None:
    """B3 ended on timeline 1 after timeline 2 forked off: PostgreSQL cannot reach timeline 2
    from it, and the restore says so before writing anything."""
    story = promoted
    with pytest.raises(PitrRefused) as err:
        restore_pitr(story.rig.load(), story.b3, tmp_path / "never", build_target(timeline="2"))
    text = str(err.value)
    assert "timeline 2 forked off timeline 1 at" in text
    assert f"before base backup {story.b3} ended" in text
    assert not (tmp_path / "never").exists()


def test_a_missing_history_file_is_refused_naming_it(promoted: Promoted, tmp_path: Path) -> None:
    """With 00000002.history gone from the vault, timeline 2 cannot be followed: the plan
    names the file before anything is written."""
    with copy_of(promoted, "nohistory") as rig:
        (victim,) = rig.vault.rglob("00000002.history*")
        victim.unlink()
        with pytest.raises(PitrRefused) as err:
            restore_pitr(rig.load(), promoted.b1, tmp_path / "never", build_target(timeline="2"))
        assert "00000002.history" in str(err.value)
        assert "not in the archive" in str(err.value)
        assert not (tmp_path / "never").exists()


def test_a_corrupted_segment_mid_replay_stops_recovery_with_a_reported_error(
    promoted: Promoted,
) -> None:
    """The stored segment after B1's end on timeline 1 has a byte flipped: wal-fetch refuses it
    with exit 200 (recovery must abort, not end early and promote), and the restore reports that
    recovery failed, with PostgreSQL's line; no promoted copy with the wrong data is left."""
    from pgvault.operations.pitr.plan import load_state
    from pgvault.transforms.api import DecodeContext
    from pgvault.wal.archive import WalArchive
    from pgvault.wal.names import WalName

    story = promoted
    with copy_of(story, "corrupt") as rig:
        config = rig.load()
        size = story.segment_size
        archive = WalArchive(config.sink, config.name)
        (record,) = archive.clusters()
        context = DecodeContext(configured=config.transforms)
        state = load_state(archive, record.cluster, size, context)
        segno = WalName.parse(story.b1_stop_wal).segno(size) + 1
        assert segno in state.segments[1], sorted(state.segments[1])
        name = state.name(1, segno)
        path = rig.vault / archive.key(record.cluster, WalName.parse(name))
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        path.write_bytes(bytes(blob))
        pg_wal = rig.folder / "pg_wal"
        pg_wal.mkdir()
        chown_postgres(pg_wal)

        fetched = rig.run("wal-fetch", str(rig.config), name, "pg_wal/RECOVERYXLOG", cwd=rig.folder)
        assert fetched.returncode == 200, (fetched.returncode, fetched.stderr)
        assert name in fetched.stderr
        assert not list(pg_wal.iterdir())

        data, port, result = restore_to(rig, "corrupt", ref=story.b1, timeline="1")
        try:
            assert result.started is not None and not result.started.ok, result.lines()
            report = "\n".join(result.lines())
            assert "recovery failed" in report and result.started.error, report
            assert unreachable(port), "a copy whose recovery stopped must not be serving"
        finally:
            cleanup(rig, data)


def test_retention_with_pitr_within_keeps_the_earliest_promised_moment_restorable(
    promoted: Promoted,
) -> None:
    """A prune promising the window from just after B1's end keeps B1 (reason PITR) beside the
    newest backup and removes the WAL before B1's start; a restore to the earliest promised
    moment then brings back its 100 rows. keep_last = 1 alone would move the window's start to
    B3's end, as its dry run shows."""
    from pgvault.operations.prune import prune

    story = promoted
    with copy_of(story, "prune") as rig:
        config = rig.load()
        files = [p for p in (rig.vault / "main" / "wal").rglob("*") if p.is_file()]
        end = max(datetime.fromtimestamp(p.stat().st_mtime, UTC) for p in files)
        within = int((end - (story.b1_stopped_at + timedelta(seconds=0.5))).total_seconds())
        policy = RetentionPolicy(keep_last=1, pitr_within=Duration.parse(f"{within}s"))

        plain = prune(config, policy=RetentionPolicy(keep_last=1), dry_run=True)
        assert plain.plan.decision(story.b1).action == "remove"
        assert plain.wal is not None and plain.wal.before is not None
        assert plain.wal.after is not None
        before = next(w for w in plain.wal.before if w.timeline == 1)
        after = next(w for w in plain.wal.after if w.timeline == 1)
        assert story.b1 in before.intervals[0].backups
        assert after.intervals[0].backups == (story.b3,)
        # The command prints both windows, per timeline.
        with rig.config.open("a") as f:
            f.write("\n[retention]\nkeep_last = 1\n")
        out = pgvault_cli("prune", rig.config, "--dry-run")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        was = next(line for line in lines if line.startswith("PITR window before: "))
        will = next(line for line in lines if line.startswith("PITR window after:  "))
        assert "timeline 1: " in was and "timeline 2: " in was
        assert utc_text(after.intervals[0].earliest) in will.partition("timeline 1: ")[2]

        result = prune(config, policy=policy)
        decision = result.plan.decision(story.b1)
        assert decision.keep and any(r.startswith("PITR") for r in decision.reasons), decision
        assert result.wal is not None and result.wal.removed and not result.wal.failures
        assert not [k for k in result.wal.removed if k.endswith(".history")]
        earliest = result.wal.window_start
        assert earliest is not None and earliest > story.b1_stopped_at

        data, port, restored = restore_to(rig, "promise", time=earliest.isoformat(), timeline="1")
        try:
            assert restored.plan.backup.backup_id == story.b1
            assert restored.started is not None and restored.started.ok, restored.lines()
            assert rows(port) == 100
        finally:
            cleanup(rig, data)
