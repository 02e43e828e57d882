"""Point-in-time restores on a real cluster: each target kind comes back with the rows of its
moment, refusals name the window, and the restored copy never archives into the source."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from pgvault.operations.pitr.restore import restore_pitr
from pgvault.operations.pitr.settings import read_setting
from pgvault.operations.pitr.start import start_restored
from pgvault.operations.pitr.targets import build_target
from pgvault.postgres.cluster import free_port
from tests.operations.pitr.conftest import Story, cleanup, restore_dir, restore_to, rows
from tests.wal.conftest import WalRig, as_postgres

Rig = tuple[WalRig, Story]

# Each restore below replays WAL through pgvault processes (seconds each): every target kind and
# action is restored once, and checks that only read a restored cluster share it. The name
# target is restored (and promoted) by the CLI test, the end of the archive by the drill test,
# the backup itself (immediate) by the pg_verifybackup test.


def assert_promoted_copy(port: int, data: Path, expected: int) -> None:
    """The restored cluster is out of recovery with ``expected`` rows, and does not archive
    into the source's WAL."""
    assert rows(port) == expected
    assert rows(port, "SELECT pg_is_in_recovery()") is False
    assert rows(port, "SHOW archive_mode") == "off"
    assert read_setting(data, "archive_mode") == "off"


@pytest.mark.parametrize(
    ("name", "target", "expected"),
    [
        ("time", lambda s: {"time": s.after_insert.isoformat()}, 150),
        ("lsn", lambda s: {"lsn": s.lsn_before_delete}, 150),
        ("xid", lambda s: {"xid": str(s.delete_xid)}, 30),
        ("xid-exclusive", lambda s: {"xid": str(s.delete_xid), "exclusive": True}, 150),
    ],
)
def test_each_target_kind_restores_the_rows_of_its_moment(
    pitr_rig: Rig, name: str, target: object, expected: int
) -> None:
    """Just before the bad DELETE (time, LSN, xid exclusive) and just after it (xid), each
    promoted and queried (the mark, the backup itself and the end of the archive: below)."""
    rig, story = pitr_rig
    data, port, result = restore_to(rig, name, **target(story))  # type: ignore[operator]
    try:
        assert result.started is not None and result.started.ok, result.lines()
        assert result.started.state == "promoted"
        assert_promoted_copy(port, data, expected)
    finally:
        cleanup(rig, data)


def test_pause_and_shutdown_stop_at_the_target(pitr_rig: Rig) -> None:
    """pause leaves a read-only server at the target; shutdown stops it there."""
    rig, story = pitr_rig
    data, port, result = restore_to(rig, "pause", lsn=story.lsn_before_delete, action="pause")
    try:
        assert result.started is not None
        assert result.started.state == "paused", result.lines()
        assert rows(port) == 150
        assert rows(port, "SELECT pg_is_in_recovery()") is True
    finally:
        cleanup(rig, data)
    data, port, result = restore_to(rig, "shutdown", name=story.mark, action="shutdown")
    try:
        assert result.started is not None
        assert result.started.state == "shutdown", result.lines()
        assert not (data / "postmaster.pid").exists()
    finally:
        cleanup(rig, data)


def test_refusals_name_the_window_and_write_nothing(pitr_rig: Rig, tmp_path: Path) -> None:
    """A time before the backup's end or after the archive's end is refused before the target
    folder is even created."""
    from pgvault.operations.pitr.plan import PitrRefused

    rig, story = pitr_rig
    target_dir = tmp_path / "never"
    early = story.backup_stopped_at - timedelta(seconds=30)
    with pytest.raises(PitrRefused) as err:
        restore_pitr(rig.load(), None, target_dir, build_target(time=early.isoformat()))
    assert "earliest moment that can be reached" in str(err.value)
    late = story.backup_stopped_at + timedelta(days=1)
    with pytest.raises(PitrRefused) as err:
        restore_pitr(rig.load(), None, target_dir, build_target(time=late.isoformat()))
    assert "after the end of the archive" in str(err.value)
    assert f"backup {story.backup_id} reaches" in str(err.value)
    assert not target_dir.exists()


def test_a_gap_is_refused_naming_the_first_missing_segment(
    pitr_rig: Rig, pitr_copy: WalRig, tmp_path: Path
) -> None:
    """With a segment after the backup gone, a target beyond it names that segment."""
    _, story = pitr_rig
    copy, config = pitr_copy.vault, pitr_copy.config
    from pgvault import load_config
    from pgvault.operations.pitr.plan import PitrRefused

    # The segment the mark closed: after the backup's end, before the DELETE's segment.
    before = int(story.lsn_before_delete.split("/")[1], 16) >> 20
    victim = next(copy.rglob(f"00000001{0:08X}{before - 1:08X}"))
    victim.unlink()
    with pytest.raises(PitrRefused) as err:
        restore_pitr(load_config(config), None, tmp_path / "d", build_target())
    assert f"WAL segment {victim.name} is missing" in str(err.value)
    from pgvault.operations.check import check

    result = check(load_config(config))
    broken = [p.message for p in result.problems if p.check == "pitr_window"]
    assert broken and f"broken at {victim.name}" in broken[0]


def test_list_shows_the_pitr_window(pitr_rig: Rig) -> None:
    """pgvault list names the moments the base backup can reach, from its end on."""
    rig, story = pitr_rig
    shown = subprocess.run(
        [sys.executable, "-m", "pgvault", "list", str(rig.config)], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("PITR window"))
    stopped = story.backup_stopped_at.strftime("%Y-%m-%d %H:%M:%S")
    assert "timeline 1:" in line and stopped in line and "(1 base backup(s))" in line


def test_the_report_shows_the_pitr_window_and_the_wal_volume(pitr_rig: Rig) -> None:
    """pgvault report counts the archived WAL (all of it arrived within the period) and names the
    same window as list."""
    from pgvault import load_config
    from pgvault.operations.report.report import build

    rig, story = pitr_rig
    config = load_config(rig.config)
    report = build(config, since=timedelta(days=7))
    assert report.wal is not None
    stored = [p for p in rig.vault.rglob("*") if p.is_file() and "/wal/" in str(p)]
    # Segments, the .backup and .history files; not the cluster records.
    segments = [p for p in stored if p.parent.name != "clusters"]
    assert report.wal.files == len(segments) > 0
    assert report.wal.bytes == sum(p.stat().st_size for p in segments)
    assert report.wal.period_files == report.wal.files
    [window] = report.pitr_window
    stopped = story.backup_stopped_at.strftime("%Y-%m-%d %H:%M:%S")
    assert "timeline 1:" in window and stopped in window
    text = report.text()
    assert f"WAL: {report.wal.files} file(s)" in text and window in text


def test_cli_refuses_a_non_empty_target_dir_and_replaces_it_when_told(
    pitr_rig: Rig, tmp_path: Path
) -> None:
    """Without --delete-existing a non-empty folder is refused; with it (and --yes) replaced:
    restored to the mark (the name target), promoted, with the rows of the mark."""
    rig, story = pitr_rig
    data = restore_dir(rig, "cli")
    data.mkdir(mode=0o700)
    (data / "precious").write_text("x")
    base = [
        "restore",
        str(rig.config),
        "--target-dir",
        str(data),
        "--pgvault",
        " ".join(rig.command),
    ]
    refused = subprocess.run(
        [sys.executable, "-m", "pgvault", *base, "--target-name", story.mark],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 1
    assert "is not empty" in refused.stderr and "--delete-existing" in refused.stderr
    assert (data / "precious").exists()
    asked = subprocess.run(
        [sys.executable, "-m", "pgvault", *base, "--target-name", story.mark, "--delete-existing"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert asked.returncode == 2 and "needs --yes" in asked.stderr
    port = free_port()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pgvault", *base, "--target-name", story.mark),
            *("--delete-existing", "--yes", "--start", "--port", str(port)),
            *("--timeout", "120"),
        ],
        capture_output=True,
        text=True,
    )
    try:
        assert done.returncode == 0, done.stderr
        assert not (data / "precious").exists()
        assert "recovery stopping at restore point" in done.stdout
        assert "promoted to timeline 2" in done.stdout
        assert_promoted_copy(port, data, 150)
    finally:
        cleanup(rig, data)


def test_the_restored_directory_matches_the_backup_manifest_and_recovers_the_backup(
    pitr_rig: Rig,
) -> None:
    """pg_verifybackup finds every file as the base backup recorded it (recovery files aside);
    started, the immediate target stops where the backup became consistent: its 100 rows."""
    rig, _ = pitr_rig
    data, port, _ = restore_to(rig, "immediate", start=False, immediate=True)
    try:
        checked = subprocess.run(
            as_postgres(
                [
                    str(rig.cluster.bindir / "pg_verifybackup"),
                    *("-n", "-i", "postgresql.auto.conf", "-i", "recovery.signal", str(data)),
                ]
            ),
            capture_output=True,
            text=True,
            cwd="/tmp",
        )
        assert checked.returncode == 0, checked.stderr
        # What restore_pitr(start=True) does next (the restore wrote the port into the settings).
        st = data.stat()
        started = start_restored(
            data, rig.cluster.bindir, port=port, owner=(st.st_uid, st.st_gid), timeout=120
        )
        assert started.ok and started.state == "promoted", started.lines()
        assert_promoted_copy(port, data, 100)
    finally:
        cleanup(rig, data)


def test_a_drill_of_a_base_backup_recovers_checks_and_records_its_recovery_time(
    pitr_rig: Rig, pitr_copy: WalRig
) -> None:
    """pgvault drill restores the base backup, replays the archive to its end in a throwaway
    cluster, runs the SQL checks there and records the result with the time it took. The checks
    are those of a restore to the end of the archive: its rows, promoted, not archiving."""
    from pgvault import load_config
    from pgvault.operations.drill import drill, last_drills
    from pgvault.vault.contents import Vault
    from tests.wal.conftest import chown_postgres

    _, story = pitr_rig
    rig = pitr_copy  # the drill records its result in the vault: the package's stays as it is
    config = rig.folder / "drill.toml"
    config.write_text(
        rig.config.read_text()
        + f'\n[drill]\npgvault = "{" ".join(rig.command)}"\n'
        + f'[[drill.check]]\nsql = "SELECT count(*) FROM t"\nequals = {story.final_rows}\n'
        + '[[drill.check]]\nsql = "SELECT pg_is_in_recovery()"\nequals = false\n'
        + '[[drill.check]]\nsql = "SHOW archive_mode"\nequals = "off"\n'
    )
    chown_postgres(config)
    loaded = load_config(config)
    result = drill(loaded, story.backup_id)
    assert result.ok, result.error
    assert [c.value for c in result.checks] == [str(story.final_rows), "f", "off"]
    assert all(c.ok for c in result.checks)
    assert result.duration_seconds > 0
    recorded = last_drills(Vault.from_config(loaded))[0]
    assert recorded["drill_id"] == result.drill_id and recorded["ok"] is True
    assert "recovered to the end of the archive" in recorded["server"]
