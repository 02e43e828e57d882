"""Planning a recovery from the listing alone: the backup, the timeline path and every segment,
or a refusal that names the window the backups can reach."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pgvault.operations.pitr.plan import (
    ArchiveState,
    BaseBackup,
    Mark,
    PitrRefused,
    plan,
)
from pgvault.operations.pitr.targets import build_target
from pgvault.wal.archive import ClusterId
from pgvault.wal.names import HistoryEntry

MIB = 1 << 20
CLUSTER = ClusterId(15, 7312345678901234567)
T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    """A moment ``minutes`` after T0."""
    return T0 + timedelta(minutes=minutes)


def backup(name: str, start_seg: int, stop_seg: int, stopped: float, tli: int = 1) -> BaseBackup:
    """A base backup whose WAL runs from segment ``start_seg`` to ``stop_seg``."""
    return BaseBackup(
        name, CLUSTER, MIB, tli, start_seg * MIB + 0x28, stop_seg * MIB + 0x100, tli,
        at(stopped - 1), at(stopped),
    )  # fmt: skip


def state(
    segments: dict[int, range | list[int]],
    histories: dict[int, tuple[HistoryEntry, ...]] | None = None,
    history_files: set[int] | None = None,
) -> ArchiveState:
    """An archive where segment n of each timeline was archived at minute n."""
    histories = histories or {}
    return ArchiveState(
        CLUSTER,
        MIB,
        {tli: {n: at(n) for n in segnos} for tli, segnos in segments.items()},
        frozenset(history_files if history_files is not None else set(histories)),
        histories,
    )


BACKUPS = [backup("b-early", 2, 3, 3.5), backup("b-late", 10, 11, 11.5)]


def test_the_newest_backup_that_ended_before_the_time_is_chosen() -> None:
    """A time between two backups uses the older; after both, the newer; the WAL range named."""
    archive = state({1: range(1, 21)})
    early = plan(BACKUPS, archive, build_target(time=at(8).isoformat()))
    assert early.backup.backup_id == "b-early"
    assert (early.first_segment, early.last_segment) == (
        "000000010000000000000002",
        "000000010000000000000009",
    )
    late = plan(BACKUPS, archive, build_target(time=at(15.5).isoformat()))
    assert late.backup.backup_id == "b-late"
    assert late.last_segment == "000000010000000000000010"


def test_a_time_before_every_backup_end_is_refused_naming_the_earliest_moment() -> None:
    """PostgreSQL would silently start at the backup's end: pgvault refuses instead."""
    with pytest.raises(PitrRefused) as err:
        plan(BACKUPS, state({1: range(1, 21)}), build_target(time=at(3).isoformat()))
    assert "before the end of the oldest base backup" in str(err.value)
    assert "2026-12-02 12:03:30 UTC" in str(err.value)
    assert "b-early" in str(err.value)


def test_a_forced_backup_that_ended_after_the_target_is_refused_with_its_window() -> None:
    """Naming a backup that ends after the target does not fall back to another one."""
    with pytest.raises(PitrRefused) as err:
        plan(
            BACKUPS, state({1: range(1, 21)}), build_target(time=at(8).isoformat()),
            backup_id="b-late",
        )  # fmt: skip
    text = str(err.value)
    assert "before the end of base backup b-late" in text
    assert "reaches 2026-12-02 12:11:30 UTC .. 2026-12-02 12:20:00 UTC on timeline 1" in text


def test_a_time_after_the_end_of_the_archive_is_refused_naming_the_window() -> None:
    """The window's end is when the last reachable segment was archived."""
    with pytest.raises(PitrRefused) as err:
        plan(BACKUPS, state({1: range(1, 21)}), build_target(time=at(45).isoformat()))
    assert "after the end of the archive" in str(err.value)
    assert ".. 2026-12-02 12:20:00 UTC" in str(err.value)


def test_a_target_beyond_a_gap_names_the_first_missing_segment() -> None:
    """Segments 14 and 15 (0E, 0F) lost: a target after them is refused, one before them is fine."""
    archive = state({1: [*range(1, 14), *range(16, 21)]})
    with pytest.raises(PitrRefused) as err:
        plan(BACKUPS, archive, build_target(time=at(17).isoformat()))
    assert "beyond a gap" in str(err.value)
    assert "00000001000000000000000E is missing" in str(err.value)
    assert plan(BACKUPS, archive, build_target(time=at(12.5).isoformat())).last_segment == (
        "00000001000000000000000D"
    )
    # "The end of the archive" would stop at the gap and promote: refused, naming it.
    with pytest.raises(PitrRefused) as end:
        plan(BACKUPS, archive, build_target())
    assert "broken by a gap" in str(end.value)
    assert "00000001000000000000000E" in str(end.value)


def test_a_backup_whose_own_wal_is_missing_is_refused() -> None:
    """Without every segment from its start to its end a backup never becomes consistent."""
    with pytest.raises(PitrRefused) as err:
        plan(BACKUPS, state({1: [1, 2, *range(4, 21)]}), build_target(time=at(8).isoformat()))
    assert "cannot be made consistent" in str(err.value)
    assert "000000010000000000000003" in str(err.value)


def test_lsn_targets_choose_by_stop_lsn_and_need_the_segment_archived() -> None:
    """An LSN target uses the backup that ended before it and needs its segment."""
    archive = state({1: range(1, 21)})
    chosen = plan(BACKUPS, archive, build_target(lsn=f"0/{12 * MIB + 5:X}"))
    assert chosen.backup.backup_id == "b-late"
    assert chosen.last_segment == "00000001000000000000000C"
    with pytest.raises(PitrRefused) as err:
        plan(BACKUPS, archive, build_target(lsn=f"0/{30 * MIB:X}"))
    assert "not archived yet" in str(err.value)


def promoted_state() -> ArchiveState:
    """Timeline 2 forked from 1 at segment 14 (after b-late ended); 1 went on to 16."""
    return state(
        {1: range(1, 17), 2: range(14, 21)},
        {2: (HistoryEntry(1, 14 * MIB + 0x500, "no recovery target specified"),)},
    )


def test_latest_follows_a_promotion_after_the_backup_taking_each_segment_from_its_timeline() -> (
    None
):
    """Recovery to the end follows timeline 2 from its switch segment on."""
    result = plan(BACKUPS, promoted_state(), build_target())
    assert result.timeline == 2
    assert result.path == ((1, 0), (2, 14 * MIB + 0x500))
    assert result.last_segment == "000000020000000000000014"
    current = plan(BACKUPS, promoted_state(), build_target(timeline="current"))
    assert (current.timeline, current.last_segment) == (1, "000000010000000000000010")


def test_a_timeline_that_forked_before_the_backup_ended_is_refused() -> None:
    """Timeline 2 forked at segment 6: b-late (ended at 11) cannot follow it; b-early can."""
    archive = state(
        {1: range(1, 21), 2: range(6, 21)},
        {2: (HistoryEntry(1, 6 * MIB + 0x500, "before the backup"),)},
    )
    with pytest.raises(PitrRefused) as err:
        plan(BACKUPS, archive, build_target(timeline="2"), backup_id="b-late")
    assert "forked off timeline 1 at 0/600500, before base backup b-late ended" in str(err.value)
    assert plan(BACKUPS, archive, build_target(timeline="2"), backup_id="b-early").timeline == 2


def test_a_missing_history_file_is_refused_naming_it() -> None:
    """Timeline 2's segments without 00000002.history: PostgreSQL could not follow them."""
    archive = state({1: range(1, 17), 2: range(14, 21)}, {}, set())
    # latest stops probing at the missing history file, as PostgreSQL does ...
    assert plan(BACKUPS, archive, build_target()).timeline == 1
    # ... and asking for timeline 2 outright names the file.
    with pytest.raises(PitrRefused) as err:
        plan(BACKUPS, archive, build_target(timeline="2"))
    assert "00000002.history is not in the archive" in str(err.value)


def test_a_mark_on_a_timeline_off_the_path_is_refused() -> None:
    """A restore point made on timeline 1 after the fork is not on timeline 2's path."""
    marks = {
        "late-on-1": Mark("late-on-1", 15 * MIB + 0x10, at(15), 1, CLUSTER.system_identifier),
        "before-fork": Mark("before-fork", 13 * MIB, at(13), 1, CLUSTER.system_identifier),
    }
    with pytest.raises(PitrRefused) as err:
        plan(BACKUPS, promoted_state(), build_target(name="late-on-1"), marks=marks)
    assert "use --target-timeline 1" in str(err.value)
    ok = plan(BACKUPS, promoted_state(), build_target(name="before-fork"), marks=marks)
    assert ok.last_segment == "00000001000000000000000D"
    with pytest.raises(PitrRefused) as unknown:
        plan(BACKUPS, promoted_state(), build_target(name="nope"), marks=marks)
    assert "recorded: before-fork, late-on-1" in str(unknown.value)
