"""The chain check, and WAL in list, check, prune and metrics, on real clusters and vaults."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pgvault
from pgvault.observability import read_metrics
from pgvault.settings import RetentionPolicy
from pgvault.units import Duration
from pgvault.vault.contents import Vault
from pgvault.wal.archive import WalArchive
from pgvault.wal.chain import check_chain, summarize
from pgvault.wal.names import WalName
from pgvault.wal.push import WalPusher
from tests.fake_backups import fake_backup
from tests.wal.conftest import RestoredCluster, WalRig, as_postgres, chown_postgres
from tests.wal.test_push import fetched_bytes

Rig = Callable[..., WalRig]


def test_a_promotion_archives_its_history_partial_and_new_timeline(wal_rig: Rig) -> None:
    """A standby promoted while the primary keeps archiving adds timeline 2: its history file,
    the old timeline's .partial and its own segments, none colliding; wal-check reads the
    switch point from the history and finds no gap."""
    rig = wal_rig("push")
    (first,) = rig.switch(1)
    rig.wait_archived(first)
    standby_dir = rig.folder / "standby"
    standby_dir.mkdir()
    chown_postgres(standby_dir)
    made = subprocess.run(
        as_postgres(
            [
                str(rig.cluster.bindir / "pg_basebackup"),
                "-D",
                str(standby_dir / "data"),
                "-h",
                str(rig.cluster.socket_dir),
                "-p",
                str(rig.cluster.port),
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                "-c",
                "fast",
                "--no-sync",
            ]
        ),
        capture_output=True,
        text=True,
        cwd=standby_dir,
    )
    assert made.returncode == 0, made.stderr
    archive_command = "'" + rig.push_command.replace("'", "''") + "'"
    standby = RestoredCluster(
        rig.cluster,
        standby_dir / "data",
        {"archive_mode": "on", "archive_command": archive_command},
    )
    (standby.data / "recovery.signal").unlink()
    assert standby.start(wait_promoted=False).returncode == 0, standby.log.read_text()
    try:
        rig.cluster.execute("CREATE TABLE before_promotion AS SELECT 1 AS x")
        deadline = time.monotonic() + 60
        while not standby.execute("SELECT to_regclass('before_promotion') IS NOT NULL")[0][0]:
            assert time.monotonic() < deadline, "the standby did not replay"
            time.sleep(0.05)
        # Promoted mid-segment: timeline 1's last segment is left as .partial.
        promoted = subprocess.run(
            as_postgres(
                [str(rig.cluster.bindir / "pg_ctl"), "-D", str(standby.data), "-w", "promote"]
            ),
            capture_output=True,
            text=True,
            cwd=standby_dir,
        )
        assert promoted.returncode == 0, promoted.stderr
        standby.execute("CREATE TABLE after_promotion AS SELECT 2 AS y")
        new_segment = str(standby.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0])
        assert new_segment.startswith("00000002")
        primary_more = rig.switch(1)  # the old primary keeps archiving timeline 1 meanwhile
        done = standby.data / "pg_wal" / "archive_status"
        deadline = time.monotonic() + 90
        wanted = [new_segment, "00000002.history"]
        while not all((done / f"{n}.done").exists() for n in wanted) or not list(
            done.glob("*.partial.done")
        ):
            assert time.monotonic() < deadline, sorted(p.name for p in done.iterdir())
            time.sleep(0.1)
        rig.wait_archived(primary_more[0])
        partials = [p.name for p in done.iterdir() if p.name.endswith(".partial.done")]
        assert len(partials) == 1
    finally:
        standby.stop()
    report = check_chain(rig.load(), ask_server=False)
    (chain,) = report.clusters
    timelines = {t.timeline: t for t in chain.timelines}
    assert set(timelines) == {1, 2}
    two = timelines[2]
    assert two.has_history and two.history is not None and two.history[-1].parent == 1
    assert two.starts_at is not None and two.ranges[0].first == two.starts_at
    assert timelines[1].partial == (WalName.parse(partials[0][: -len(".done")]).segno(1 << 20),)
    assert chain.gaps == ()
    assert fetched_bytes(rig, "00000002.history").startswith(b"1\t")
    text = "\n".join(report.lines())
    assert "timeline 2 (from timeline 1 at " in text and ".partial" in text


def test_wal_check_list_and_check_report_a_lost_segment(wal_rig: Rig) -> None:
    """A segment removed from the middle of the archive is a lost gap in wal-check (exit 1),
    in list and in check (CRITICAL, naming it); still .ready in pg_wal it is only pending."""
    rig = wal_rig("push")
    metrics = rig.folder / "metrics.prom"
    text = f'metrics_file = "{metrics}"\n' + rig.config.read_text()
    text += '[check]\nmax_wal_age = "1h"\nmax_age = "1000d"\nmin_count = 0\n'
    rig.config.write_text(text)
    names = rig.switch(4)
    rig.wait_archived(names[-1])
    config = rig.load()
    archive = WalArchive(config.sink, "main")
    (record,) = archive.clusters()
    gone = names[1]
    (rig.vault / archive.key(record.cluster, WalName.parse(gone))).unlink()

    checked = rig.run("wal-check", str(rig.config), "--json")
    assert checked.returncode == 1
    report = json.loads(checked.stdout)
    (chain,) = report["clusters"]
    assert chain["gaps"] == [
        {"timeline": 1, "first": gone, "last": gone, "segments": 1, "state": "lost"}
    ]
    assert report["server"]["failed_count"] == 0
    listed = rig.run("list", str(rig.config))
    assert f"{names[0]}..{names[0]}, {names[2]}..{names[-1]}" in listed.stdout
    assert "1 segment(s) missing" in listed.stdout
    health = pgvault.check(config, thresholds=config.check)
    assert health.status.name == "CRITICAL"
    (problem,) = [p for p in health.problems if p.check == "wal_gaps"]
    assert f"first {gone}..{gone}" in problem.message
    assert health.wal_lost == 1 and health.wal_newest_at is not None
    late = pgvault.check(config, now=datetime.now(UTC) + timedelta(hours=2))
    assert any(
        p.check == "max_wal_age" and "is archiving failing" in p.message for p in late.problems
    )
    samples = read_metrics(metrics)
    assert samples["pgvault_wal_lost_segments", '{name="main"}'] == 1
    assert samples["pgvault_wal_pushed_total", '{name="main"}'] >= len(names)

    ready = rig.cluster.data / "pg_wal" / "archive_status" / f"{gone}.ready"
    ready.touch()
    try:
        (pending,) = summarize(archive, pg_wal=rig.cluster.data / "pg_wal")
        assert [g.state for g in pending.gaps] == ["pending"]
    finally:
        ready.unlink()


def test_prune_removes_wal_below_the_oldest_kept_backup_and_never_history(wal_rig: Rig) -> None:
    """prune removes WAL stored before the oldest kept backup (less keep_wal_within), keeps
    everything after it and every history file; a dry run only reports."""
    rig = wal_rig(None)
    names = rig.switch(4)
    config = rig.load()
    pusher = WalPusher(config, rig.cluster.data)
    for name in names:
        pusher.push(rig.cluster.data / "pg_wal" / name)
    history = rig.folder / "00000002.history"
    history.write_text("1\t0/9000000\tno recovery target specified\n")
    pusher.push(history)
    archive = WalArchive(config.sink, "main")
    (record,) = archive.clusters()
    now = datetime.now(UTC)
    ages = {names[0]: 10, names[1]: 6, names[2]: 2}  # days; names[3] is fresh
    for name, days in ages.items():
        stamp = (now - timedelta(days=days)).timestamp()
        os.utime(rig.vault / archive.key(record.cluster, WalName.parse(name)), (stamp, stamp))
    old_history = rig.vault / archive.key(record.cluster, WalName.parse("00000002.history"))
    os.utime(old_history, (0, 0))
    vault = Vault(config.sink, "main")
    fake_backup(vault, now - timedelta(days=20))
    fake_backup(vault, now - timedelta(days=4))
    policy = RetentionPolicy(keep_last=1, keep_wal_within=Duration.parse("1d"))
    dry = pgvault.prune(config, dry_run=True, policy=policy)
    assert dry.wal is not None and len(dry.wal.removable) == 2
    assert len(archive.list(record.cluster)) == 5
    result = pgvault.prune(config, policy=policy)
    assert result.wal is not None
    kept = sorted(i.name.text for i in archive.list(record.cluster))
    assert kept == sorted([names[2], names[3], "00000002.history"])
    assert result.wal.horizon is not None
    assert abs(result.wal.horizon - (now - timedelta(days=5))) < timedelta(minutes=1)


def test_prune_keeps_the_wal_a_damaged_backup_may_need(wal_rig: Rig) -> None:
    """A backup folder whose manifest cannot be read might be a base backup: the WAL archived
    since the time in its id stays, as for a run in progress; older WAL still goes."""
    from pgvault.vault.manifest import MANIFEST_NAME, new_backup_id

    rig = wal_rig(None)
    names = rig.switch(3)
    config = rig.load()
    pusher = WalPusher(config, rig.cluster.data)
    for name in names:
        pusher.push(rig.cluster.data / "pg_wal" / name)
    archive = WalArchive(config.sink, "main")
    (record,) = archive.clusters()
    now = datetime.now(UTC)
    for name, days in {names[0]: 10, names[1]: 6}.items():
        stamp = (now - timedelta(days=days)).timestamp()
        os.utime(rig.vault / archive.key(record.cluster, WalName.parse(name)), (stamp, stamp))
    vault = Vault(config.sink, "main")
    fake_backup(vault, now - timedelta(days=4))
    damaged = new_backup_id(now - timedelta(days=8))
    vault.sink.write_bytes(vault.artifact_key(damaged, MANIFEST_NAME), b"{not json")
    dry = pgvault.prune(config, dry_run=True, policy=RetentionPolicy(keep_last=1))
    assert dry.plan.decision(damaged).keep
    assert dry.wal is not None
    assert [k.rpartition("/")[2].split(".")[0] for k in dry.wal.removable] == [names[0]]
