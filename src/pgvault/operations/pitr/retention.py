"""Retention of base backups and their WAL: what point-in-time recovery needs kept. Pure.

``[retention]`` plans over base backups as it does over dumps
(:func:`pgvault.vault.retention.plan`); this module adds what the WAL archive changes.

**The promise of ``pitr_within``.** With ``pitr_within = "7d"``, every moment from 7 days before
the *end of the archive* (the newest archived WAL file, never later than now) up to that end stays
reachable by ``pgvault restore --target-time``, as far as it was reachable before the prune. The
window counts back from the archive's end rather than from the clock, the way ``keep_within``
counts back from the newest backup: a prune on a clock that jumped ahead, or after archiving
stopped, never shrinks it. For each cluster and each timeline the archive holds,
:func:`pitr_keep` chooses the base backups that promise needs (their windows come from the
recovery planner itself, :func:`~.plan.window`): the newest base backup that ended at or before
the window's start, and after it each base backup whose window reaches further than those chosen
before it (the first one after a gap in the WAL). The plan keeps them whatever the other rules say
(reason ``PITR …``).

**The WAL keep-set** (:func:`wal_keep`), per cluster, when the plan keeps one of its base
backups:

* the *horizon* is the start segment of the oldest base backup chosen for the promise (without
  ``pitr_within``: of the oldest kept base backup, so every kept one reaches any later moment);
  every WAL file at or above it is kept, on every timeline;
* every other kept base backup (kept by ``keep_daily`` and the like, beyond the window) keeps the
  segments from its start to its stop, so it stays restorable to its end;
* ``keep_wal_within`` keeps, in addition, what was archived within that time before the horizon
  backup started.

A cluster of which the plan keeps no base backup (a dump-only vault) keeps the rule pgvault has
always had: WAL archived before the oldest kept backup started, less ``keep_wal_within``, is
removed, and without any kept backup no WAL is.

Whatever the rule: a ``.history`` file is never removed (tiny, and PostgreSQL's choice of timeline
depends on it); nor is anything a backup in progress may need (for each live run lease, every
file archived since the run started, less the clock tolerance, and every file above the lowest of
them: a base backup's start segment is the one being written when it starts, archived after); nor
a file whose name cannot be read. If a kept base backup's manifest cannot be read, no WAL of any
cluster is removed.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

import attrs

from pgvault.exceptions import PgVaultError
from pgvault.vault.manifest import CLOCK_TOLERANCE
from pgvault.wal.archive import ClusterId, StoredWal
from pgvault.wal.names import Kind, segment_name

from .plan import ArchiveState, BaseBackup, Window, reaching
from .targets import utc_text


@attrs.frozen
class PitrKeep:
    """The base backups the ``pitr_within`` promise needs."""

    reference: datetime
    """The end of the archive the window counts back from (never later than now)."""
    window_start: datetime
    """The earliest moment promised (``reference`` less ``pitr_within``)."""
    reasons: Mapping[str, str]
    """Backup id → why the promise needs it (for the plan)."""


def archive_end(states: Mapping[ClusterId, ArchiveState], now: datetime) -> datetime:
    """When the newest WAL file of any cluster was archived, never later than ``now`` (a file
    dated beyond now plus the clock tolerance is not believed)."""
    times = [
        when
        for state in states.values()
        for found in state.segments.values()
        for when in found.values()
        if when is not None and when <= now + CLOCK_TOLERANCE
    ]
    return min(now, max(times)) if times else now


def _restorable(backup: BaseBackup, reach: Window) -> bool:
    # The window's end is the end of the last segment replayable without a gap: short of the
    # backup's own stop, the backup cannot even be made consistent.
    return reach.latest_lsn > backup.stop_lsn


def _needed(found: Sequence[tuple[BaseBackup, Window]], start: datetime) -> list[BaseBackup]:
    """The backups that keep every moment from ``start`` on reachable on one timeline."""
    usable = sorted(
        (bw for bw in found if _restorable(*bw)), key=lambda bw: (bw[0].stopped_at, bw[0].stop_lsn)
    )
    chosen: list[BaseBackup] = []
    reach = -1
    before = [bw for bw in usable if bw[0].stopped_at <= start]
    if before:
        backup, w = before[-1]
        # A window that ends before the promise begins promises nothing (a gap, or a dead
        # timeline): the backup is left to the other rules.
        if w.latest is None or w.latest >= start:
            chosen.append(backup)
            reach = w.latest_lsn
    for backup, w in usable:
        if backup.stopped_at > start and w.latest_lsn > reach:
            chosen.append(backup)
            reach = w.latest_lsn
    return chosen


def pitr_keep(
    backups: Sequence[BaseBackup],
    states: Mapping[ClusterId, ArchiveState],
    within: timedelta,
    now: datetime,
    *,
    within_text: str = "",
) -> PitrKeep:
    """The base backups that keep every moment within ``within`` of the archive's end reachable
    (see the module doc). Future-dated backups (beyond now plus the clock tolerance) are left out:
    the plan keeps them anyway and they promise nothing."""
    reference = archive_end(states, now)
    start = reference - within
    label = f"pitr_within {within_text}" if within_text else "pitr_within"
    reasons: dict[str, str] = {}
    for cluster, state in states.items():
        present = now + CLOCK_TOLERANCE
        mine = [b for b in backups if b.cluster == cluster and b.stopped_at <= present]
        if not mine:
            continue
        if state.unreadable:
            # Without a history file the timelines it leads to cannot be followed: every base
            # backup that ended within the window is kept until it can be read again.
            names = ", ".join(f"{t:08X}.history" for t in sorted(state.unreadable))
            for b in mine:
                if b.stopped_at > start:
                    reasons.setdefault(b.backup_id, f"PITR ({label}): {names} cannot be read")
        for tli in sorted(set(state.segments) | set(state.history_files)):
            for b in _needed(reaching(mine, tli, state), start):
                reasons.setdefault(
                    b.backup_id,
                    f"PITR ({label}): reaches timeline {tli} from {utc_text(start)} on",
                )
    return PitrKeep(reference, start, reasons)


@attrs.frozen
class ClusterHorizon:
    """What the WAL keep-set keeps of one cluster, in words."""

    cluster: ClusterId
    rule: str
    """``pitr``, ``time`` or ``all``."""
    text: str
    horizon_segment: str | None = None
    """The lowest segment kept from on (the PITR rule), if any."""
    horizon_time: datetime | None = None
    """Files archived before this are removed (the time rule), if any."""


@attrs.frozen
class WalKeep:
    """The WAL keep-set: every file of the listing is either kept or removable."""

    removable: tuple[StoredWal, ...]
    kept: int
    horizons: tuple[ClusterHorizon, ...]


def _segno(item: StoredWal, size: int) -> int | None:
    if item.name.kind is Kind.HISTORY:
        return None
    try:
        return item.name.segno(size)
    except PgVaultError:
        return None


def wal_keep(
    listing: Mapping[ClusterId, tuple[int, Sequence[StoredWal]]],
    backups: Sequence[BaseBackup],
    kept: Collection[str],
    *,
    needed: Collection[str] | None,
    oldest_kept: datetime | None,
    margin: timedelta | None,
    in_progress: Sequence[datetime] = (),
    doubtful: str | None = None,
) -> WalKeep:
    """Which WAL files to keep (see the module doc).

    ``listing`` maps each cluster to its segment size and stored files; ``backups`` are the
    vault's base backups, ``kept`` the ids the plan keeps (of any kind), ``needed`` the base
    backups the ``pitr_within`` promise chose (None: no ``pitr_within``), ``oldest_kept`` the
    start of the oldest kept backup of any kind (the time rule), ``margin`` the
    ``keep_wal_within``, ``in_progress`` the start times of live runs, and ``doubtful`` a reason
    to keep everything (a kept base backup whose manifest cannot be read).
    """
    removable: list[StoredWal] = []
    count = 0
    horizons: list[ClusterHorizon] = []
    extra = margin or timedelta(0)
    for cluster in sorted(listing):
        size, items = listing[cluster]
        if doubtful is not None:
            count += len(items)
            horizons.append(ClusterHorizon(cluster, "all", f"every WAL file kept: {doubtful}"))
            continue
        protect: int | None = None
        for began in in_progress:
            since = [
                n
                for i in items
                if (n := _segno(i, size)) is not None
                and (i.modified is None or i.modified >= began - CLOCK_TOLERANCE)
            ]
            if since:
                protect = min(since) if protect is None else min(protect, min(since))
        mine = [b for b in backups if b.cluster == cluster and b.backup_id in kept]
        horizon_segno: int | None = None
        since_time: datetime | None = None
        spans: list[tuple[int, int]] = []
        if mine:
            anchors = mine if needed is None else [b for b in mine if b.backup_id in needed]
            spans = [(b.start_segno, b.stop_segno) for b in mine]
            name = None
            text = (
                f"{cluster}: no base backup reaches the PITR window: only the WAL from start to "
                "stop of each kept base backup is kept"
            )
            if anchors:
                first = min(anchors, key=lambda b: (b.start_segno, b.started_at))
                horizon_segno = first.start_segno
                name = segment_name(first.timeline, horizon_segno, size)
                text = f"{cluster}: WAL kept from {name} on (base backup {first.backup_id}'s start)"
                if margin is not None:
                    since_time = first.started_at - extra
            if since_time is not None:
                text += f", and what was archived since {utc_text(since_time)}"
            horizons.append(ClusterHorizon(cluster, "pitr", text, horizon_segment=name))
        else:
            since_time = oldest_kept - extra if oldest_kept is not None else None
            text = (
                f"{cluster}: WAL archived before {utc_text(since_time)} goes (no kept base "
                "backup: the oldest kept backup's start less keep_wal_within)"
                if since_time is not None
                else f"{cluster}: no backup kept: no WAL removed"
            )
            horizons.append(ClusterHorizon(cluster, "time", text, horizon_time=since_time))
        for item in items:
            n = _segno(item, size)
            keep = (
                n is None  # history files, and names that cannot be placed
                or (protect is not None and n >= protect)
                or (horizon_segno is not None and n >= horizon_segno)
                or any(a <= n <= b for a, b in spans)
            )
            if not keep and since_time is not None:
                keep = item.modified is None or item.modified >= since_time
            if not keep and not mine and since_time is None:
                keep = True  # time rule without any kept backup: nothing goes
            if keep:
                count += 1
            else:
                removable.append(item)
    return WalKeep(tuple(removable), count, tuple(horizons))


def without(state: ArchiveState, gone: Collection[StoredWal]) -> ArchiveState:
    """``state`` as it would be once the files ``gone`` are removed (history files stay)."""
    drop: dict[int, set[int]] = {}
    for item in gone:
        if item.name.kind is Kind.SEGMENT:
            n = _segno(item, state.segment_size)
            if n is not None:
                drop.setdefault(item.name.timeline, set()).add(n)
    segments = {
        tli: {n: when for n, when in found.items() if n not in drop.get(tli, set())}
        for tli, found in state.segments.items()
    }
    return attrs.evolve(state, segments=segments)
