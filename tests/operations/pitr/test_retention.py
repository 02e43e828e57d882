"""Retention over base backups, planned without I/O: ``pitr_within`` never breaks the window it
promised, kept backups stay restorable to their end, history files and a running backup's WAL
stay. The judge is the recovery planner itself (:func:`pgvault.operations.pitr.plan.plan`):
a target it accepted before the prune it must accept after."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgvault.operations.pitr.plan import ArchiveState, BaseBackup, PitrRefused
from pgvault.operations.pitr.plan import plan as recovery_plan
from pgvault.operations.pitr.retention import pitr_keep, wal_keep, without
from pgvault.operations.pitr.targets import build_target
from pgvault.settings import RetentionPolicy
from pgvault.units import Duration
from pgvault.vault.retention import plan
from pgvault.wal.archive import ClusterId, StoredWal
from pgvault.wal.names import HistoryEntry, WalName, history_name, segment_name

SIZE = 1 << 20
CLUSTER = ClusterId(15, 7312345678901234567)
T0 = datetime(2026, 11, 1, tzinfo=UTC)
STEP = timedelta(hours=1)
"""Segment n is archived at T0 + n hours."""


@attrs.frozen
class Dated:
    """What retention's plan() reads of a manifest."""

    backup_id: str
    started_at: datetime


def archived(segno: int) -> datetime:
    return T0 + segno * STEP


def base(n: int, start: int, length: int, timeline: int = 1) -> BaseBackup:
    """A base backup whose WAL is segments start..start+length, started while ``start`` was
    being written and stopped while its last segment was."""
    stop = start + length
    return BaseBackup(
        backup_id=f"{(archived(start) - timedelta(minutes=50)):%Y%m%dT%H%M%SZ}-{n:06x}",
        cluster=CLUSTER,
        segment_size=SIZE,
        timeline=timeline,
        start_lsn=start * SIZE + 40,
        stop_lsn=stop * SIZE + 4000,
        stop_timeline=timeline,
        started_at=archived(start) - timedelta(minutes=50),
        stopped_at=archived(stop) - timedelta(minutes=30),
    )


def stored(timeline: int, segno: int, when: datetime | None) -> StoredWal:
    name = segment_name(timeline, segno, SIZE)
    return StoredWal(WalName.parse(name), f"v/wal/{CLUSTER.key}/{name}", SIZE, when)


def history(timeline: int) -> StoredWal:
    name = history_name(timeline)
    return StoredWal(WalName.parse(name), f"v/wal/{CLUSTER.key}/history/{name}", 40, T0)


def state_of(
    items: Sequence[StoredWal], histories: dict[int, tuple[HistoryEntry, ...]]
) -> ArchiveState:
    segments: dict[int, dict[int, datetime | None]] = {}
    for i in items:
        if i.name.kind.value == "segment":
            segments.setdefault(i.name.timeline, {})[i.name.segno(SIZE)] = i.modified
    return ArchiveState(CLUSTER, SIZE, segments, frozenset(histories), histories)


@attrs.frozen
class Vault:
    """A story: backups and the archive as they are, and a policy applied at ``now``."""

    backups: tuple[BaseBackup, ...]
    items: tuple[StoredWal, ...]
    histories: dict[int, tuple[HistoryEntry, ...]]
    policy: RetentionPolicy
    now: datetime
    running: tuple[datetime, ...] = ()


def prune(v: Vault) -> tuple[set[str], set[StoredWal], set[str]]:
    """(kept backup ids, removed WAL, ids the promise needs): plan, promise and keep-set."""
    state = state_of(v.items, v.histories)
    assert v.policy.pitr_within is not None
    promise = pitr_keep(v.backups, {CLUSTER: state}, v.policy.pitr_within.delta, v.now)
    retention = plan(
        [Dated(b.backup_id, b.started_at) for b in v.backups],
        v.policy,
        v.now,
        pitr=promise.reasons,
    )
    kept = {d.backup_id for d in retention.kept}
    starts = [d.started_at for d in retention.kept if d.started_at is not None]
    keep = wal_keep(
        {CLUSTER: (SIZE, list(v.items))},
        list(v.backups),
        kept,
        needed=set(promise.reasons),
        oldest_kept=min(starts) if starts else None,
        margin=None,
        in_progress=v.running,
    )
    return kept, set(keep.removable), set(promise.reasons)


def reachable(backups: Sequence[BaseBackup], state: ArchiveState, **target: object) -> bool:
    try:
        recovery_plan(backups, state, build_target(**target))  # type: ignore[arg-type]
    except PitrRefused:
        return False
    return True


@st.composite
def vaults(draw: st.DrawFn) -> Vault:
    last = draw(st.integers(min_value=6, max_value=60))
    missing = draw(st.sets(st.integers(min_value=0, max_value=last), max_size=3))
    items = tuple(stored(1, n, archived(n)) for n in range(last + 1) if n not in missing)
    starts = sorted(
        draw(st.sets(st.integers(min_value=0, max_value=last - 2), min_size=1, max_size=8))
    )
    backups = []
    for n, start in enumerate(starts):
        room = (starts[n + 1] if n + 1 < len(starts) else last) - start
        backups.append(base(n, start, draw(st.integers(min_value=0, max_value=min(2, room - 1)))))
    policy = RetentionPolicy(
        keep_last=draw(st.integers(min_value=0, max_value=3)),
        keep_daily=draw(st.integers(min_value=0, max_value=2)),
        pitr_within=Duration.parse(f"{draw(st.integers(min_value=1, max_value=last + 5))}h"),
    )
    now = archived(last) + timedelta(minutes=draw(st.integers(min_value=1, max_value=600)))
    return Vault(tuple(backups), items, {}, policy, now)


def moments(v: Vault, start: datetime, end: datetime) -> list[datetime]:
    """The moments worth asking about: each backup's end and each segment's archiving, just
    before and after, within start..end."""
    found = {start, end}
    for b in v.backups:
        found |= {b.stopped_at, b.stopped_at + timedelta(seconds=1)}
    for i in v.items:
        if i.modified is not None:
            found |= {i.modified - timedelta(seconds=1), i.modified}
    return sorted(t for t in found if start <= t <= end)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vaults())
def test_retention_never_breaks_the_window_it_promised(v: Vault) -> None:
    """Every moment within pitr_within of the archive's end that recovery could reach before the
    prune it reaches after, from the backups and WAL the prune keeps."""
    kept, gone, _ = prune(v)
    before = state_of(v.items, v.histories)
    after = without(before, gone)
    left = [b for b in v.backups if b.backup_id in kept]
    assert v.policy.pitr_within is not None
    end = min(v.now, max(i.modified for i in v.items if i.modified is not None))
    for t in moments(v, end - v.policy.pitr_within.delta, end):
        if reachable(v.backups, before, time=t.isoformat()):
            assert reachable(left, after, time=t.isoformat()), t


@settings(max_examples=200, deadline=None)
@given(vaults())
def test_every_kept_backup_stays_restorable_to_its_end(v: Vault) -> None:
    """A base backup kept beyond the window (keep_last, keep_daily) keeps its start..stop WAL,
    so --target-immediate of it still works; history files are never removed."""
    kept, gone, _ = prune(v)
    before = state_of(v.items, v.histories)
    after = without(before, gone)
    for b in v.backups:
        if b.backup_id in kept and reachable([b], before, immediate=True):
            assert reachable([b], after, immediate=True), b.backup_id
    assert not [i for i in gone if i.name.kind.value == "history"]


@settings(max_examples=200, deadline=None)
@given(vaults(), st.integers(min_value=0, max_value=60))
def test_a_running_backup_keeps_every_segment_archived_since_it_began(v: Vault, at: int) -> None:
    """A live run lease that began at some moment protects every file archived since then (less
    the clock tolerance), whatever the plan says of the finished backups."""
    began = archived(at) - timedelta(minutes=20)
    _, gone, _ = prune(attrs.evolve(v, running=(began,)))
    assert not [i for i in gone if i.modified is not None and i.modified >= began]


def test_the_promise_keeps_the_newest_backup_before_the_window_and_the_first_after_a_gap() -> None:
    """Daily-ish base backups, a gap after the third: the promise needs the newest backup ended
    before the window's start and the first one after the gap, nothing else; WAL below the
    first one's start goes, except the start..stop of backups kept by keep_last."""
    backups = tuple(base(n, s, 1) for n, s in enumerate([0, 10, 20, 30, 40]))
    items = tuple(stored(1, n, archived(n)) for n in range(51) if n != 25)
    policy = RetentionPolicy(keep_last=1, pitr_within=Duration.parse("35h"))
    v = Vault(backups, items, {}, policy, archived(50) + timedelta(minutes=5))
    kept, gone, needed = prune(v)
    # The window starts at segment 15's archiving: backup 10 (ended 11) is before it; backup 30
    # is the first after the gap at 25; backup 40 is the newest (keep_last).
    assert needed == {backups[1].backup_id, backups[3].backup_id}
    assert kept == {backups[1].backup_id, backups[3].backup_id, backups[4].backup_id}
    assert sorted(i.name.segno(SIZE) for i in gone) == list(range(10))


def test_a_promoted_timeline_keeps_the_backup_that_reaches_it() -> None:
    """After a promotion (timeline 2 from segment 30), the window on timeline 2 is reached from
    the timeline-1 backup before the fork, and the first timeline-2 backup is needed only when
    the older one cannot reach past the fork; timeline 1's segments above the horizon stay."""
    tl1 = [base(0, 0, 1), base(1, 20, 1)]
    tl2 = [base(2, 40, 1, timeline=2)]
    items = [stored(1, n, archived(n)) for n in range(31)]
    items += [stored(2, n, archived(n)) for n in range(30, 51)]
    items.append(history(2))
    hist = {2: (HistoryEntry(1, 30 * SIZE + 100, "promoted"),)}
    policy = RetentionPolicy(keep_last=1, pitr_within=Duration.parse("25h"))
    v = Vault((*tl1, *tl2), tuple(items), hist, policy, archived(50) + timedelta(minutes=5))
    kept, gone, needed = prune(v)
    assert needed == {tl1[1].backup_id}
    assert tl1[0].backup_id not in kept
    assert not [i for i in gone if i.name.segno(SIZE) >= 20]
    before = state_of(v.items, hist)
    after = without(before, gone)
    left = [b for b in v.backups if b.backup_id in kept]
    t = archived(35).isoformat()
    assert reachable(left, after, time=t, timeline="2")


def test_a_dump_only_vault_keeps_the_time_rule() -> None:
    """No base backup kept: WAL stored before the oldest kept backup's start, less
    keep_wal_within, goes; history files stay; without a kept backup nothing goes."""
    items = [stored(1, n, archived(n)) for n in range(10)] + [history(2)]
    keep = wal_keep(
        {CLUSTER: (SIZE, items)},
        [],
        {"dump"},
        needed=None,
        oldest_kept=archived(6),
        margin=timedelta(hours=2),
    )
    assert sorted(i.name.segno(SIZE) for i in keep.removable) == [0, 1, 2, 3]
    assert keep.horizons[0].rule == "time"
    nothing = wal_keep(
        {CLUSTER: (SIZE, items)}, [], set(), needed=None, oldest_kept=None, margin=None
    )
    assert not nothing.removable


def test_without_pitr_within_every_kept_base_backup_reaches_the_end() -> None:
    """No pitr_within: the horizon is the oldest kept base backup's start; keep_wal_within keeps
    what was archived that long before it started."""
    backups = [base(0, 0, 1), base(1, 10, 1), base(2, 20, 1)]
    items = [stored(1, n, archived(n)) for n in range(30)]
    kept = {backups[1].backup_id, backups[2].backup_id}
    keep = wal_keep(
        {CLUSTER: (SIZE, items)}, backups, kept, needed=None, oldest_kept=None, margin=None
    )
    assert sorted(i.name.segno(SIZE) for i in keep.removable) == list(range(10))
    wider = wal_keep(
        {CLUSTER: (SIZE, items)},
        backups,
        kept,
        needed=None,
        oldest_kept=None,
        margin=timedelta(hours=3),
    )
    # backup 1 started at 09:10 (segment 10 less 50 minutes): 3 hours before is 06:10.
    assert sorted(i.name.segno(SIZE) for i in wider.removable) == list(range(7))


def test_an_unreadable_kept_manifest_keeps_every_wal_file() -> None:
    """A kept base backup whose manifest does not say its WAL: nothing is removed, and why."""
    items = [stored(1, n, archived(n)) for n in range(5)]
    keep = wal_keep(
        {CLUSTER: (SIZE, items)},
        [],
        {"x"},
        needed=None,
        oldest_kept=archived(4),
        margin=None,
        doubtful="backup x",
    )
    assert not keep.removable and keep.kept == 5
    assert "backup x" in keep.horizons[0].text


@pytest.mark.parametrize("text", ["0s", "0h"])
def test_pitr_within_must_be_positive(text: str) -> None:
    """pitr_within = "0s" promises nothing: refused."""
    with pytest.raises(ValueError, match="pitr_within"):
        RetentionPolicy(keep_last=1, pitr_within=Duration.parse(text))
