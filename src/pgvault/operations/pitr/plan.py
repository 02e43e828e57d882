"""Planning a point-in-time recovery: which base backup, which timeline path, which WAL.

Everything PostgreSQL would otherwise get silently wrong, or find out hours into a replay, is
decided here from the vault's listing and history files, before a byte is written:

* the base backup is the newest one that ended before the target and whose timeline leads to
  the target's (a target before the end of every backup is refused: PostgreSQL would start at
  the backup's end and call it done);
* the target timeline (``latest`` is found the way PostgreSQL finds it: history files probed
  upwards from the backup's timeline) must descend from the backup's timeline *after* the
  backup ended, and its history file must be archived;
* every segment from the backup's start to the target must be archived along that path (each
  segment from the newest timeline on the path that has begun by then, as PostgreSQL reads it);
  the first missing one is named;
* a target after the end of the archive, or beyond a gap, is refused with the window the
  backups can reach.

The moment a segment covers is known only roughly without reading WAL records: a segment is
taken to end when it was archived (the sink's time, else the stored envelope's). So a time
target is accepted up to the moment the last reachable segment was archived; if it falls between
the segment's last commit and its archiving, PostgreSQL itself stops with "recovery ended before
configured recovery target was reached", which ``--start`` reports.

:func:`plan` is pure (no I/O); :func:`load_state` reads what it needs from the archive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import attrs

from pgvault.exceptions import PgVaultError, RestoreError
from pgvault.transforms.api import DecodeContext
from pgvault.wal.archive import ClusterId, StoredWal, WalArchive
from pgvault.wal.chain import read_history
from pgvault.wal.names import (
    HistoryEntry,
    Kind,
    WalName,
    format_lsn,
    history_name,
    parse_lsn,
    segment_name,
)

from .targets import RecoveryTarget, utc_text

if TYPE_CHECKING:
    from pgvault.vault.manifest import Manifest

log = logging.getLogger("pgvault.pitr")

SOURCE_TYPE = "basebackup"


class PitrRefused(RestoreError):
    """The recovery asked for cannot be done as asked: the message says why and what can."""


@attrs.frozen
class BaseBackup:
    """What planning needs of one stored base backup (its manifest's ``source``)."""

    backup_id: str
    cluster: ClusterId
    segment_size: int
    timeline: int
    start_lsn: int
    stop_lsn: int
    stop_timeline: int
    started_at: datetime
    stopped_at: datetime

    @property
    def start_segno(self) -> int:
        """The segment the backup's WAL begins in."""
        return self.start_lsn // self.segment_size

    @property
    def stop_segno(self) -> int:
        """The segment holding the backup's end (its consistency point)."""
        return self.stop_lsn // self.segment_size

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> BaseBackup:
        """Read a base backup's manifest; :class:`PitrRefused` naming it if a field is bad."""
        src = manifest.source
        try:
            return cls(
                backup_id=manifest.backup_id,
                cluster=ClusterId(int(src["major"]), int(src["system_identifier"])),
                segment_size=int(src["segment_size"]),
                timeline=int(src["timeline"]),
                start_lsn=parse_lsn(str(src["start_lsn"])),
                stop_lsn=parse_lsn(str(src["stop_lsn"])),
                stop_timeline=int(src.get("stop_timeline") or src["timeline"]),
                started_at=_aware(datetime.fromisoformat(str(src["started_at"]))),
                stopped_at=_aware(datetime.fromisoformat(str(src["stopped_at"]))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PitrRefused(
                f"backup {manifest.backup_id}: its manifest does not describe a base backup "
                f"({type(exc).__name__}: {exc})"
            ) from None


def base_backups(manifests: Sequence[Manifest]) -> list[BaseBackup]:
    """The base backups among ``manifests``, newest end first (others are ignored)."""
    found = [BaseBackup.from_manifest(m) for m in manifests if m.source_type == SOURCE_TYPE]
    return sorted(found, key=lambda b: (b.stop_lsn, b.stopped_at, b.backup_id), reverse=True)


@attrs.frozen
class Mark:
    """A named restore point recorded by ``pgvault mark``."""

    name: str
    lsn: int
    time: datetime
    timeline: int
    system_identifier: int


@attrs.frozen
class ArchiveState:
    """The WAL archive of one cluster, as planning sees it."""

    cluster: ClusterId
    segment_size: int
    segments: Mapping[int, Mapping[int, datetime | None]]
    """Per timeline: archived segment numbers and when each was archived (None: unknown)."""
    history_files: frozenset[int]
    """Timelines whose history file is archived."""
    histories: Mapping[int, tuple[HistoryEntry, ...]]
    """The history files that could be read."""
    unreadable: Mapping[int, str] = attrs.field(factory=dict)
    """History files that are archived but could not be read, and why."""

    def name(self, timeline: int, segno: int) -> str:
        """The file name of a segment."""
        return segment_name(timeline, segno, self.segment_size)


def load_state(
    archive: WalArchive,
    cluster: ClusterId,
    segment_size: int,
    context: DecodeContext,
    *,
    listing: Sequence[StoredWal] | None = None,
) -> ArchiveState:
    """One listing of the cluster's archive (or ``listing``, one made already), and each of its
    history files read."""
    segments: dict[int, dict[int, datetime | None]] = {}
    history_files: set[int] = set()
    for item in archive.list(cluster) if listing is None else listing:
        n = item.name
        if n.kind is Kind.HISTORY:
            history_files.add(n.timeline)
        elif n.kind is Kind.SEGMENT:
            try:
                segno = n.segno(segment_size)
            except PgVaultError:
                continue
            segments.setdefault(n.timeline, {})[segno] = item.modified
    histories: dict[int, tuple[HistoryEntry, ...]] = {}
    unreadable: dict[int, str] = {}
    for tli in sorted(history_files):
        try:
            histories[tli] = read_history(archive, cluster, tli, context)
        except PgVaultError as exc:
            unreadable[tli] = str(exc)
    state = ArchiveState(
        cluster, segment_size, segments, frozenset(history_files), histories, unreadable
    )
    return _with_times(archive, state)


def _with_times(archive: WalArchive, state: ArchiveState) -> ArchiveState:
    """Fill in archive times the listing did not give, from the stored envelopes."""
    segments: dict[int, dict[int, datetime | None]] = {}
    for tli, found in state.segments.items():
        segments[tli] = dict(found)
        for segno, when in found.items():
            if when is None:
                key = archive.key(state.cluster, WalName.parse(state.name(tli, segno)))
                try:
                    segments[tli][segno] = archive.envelope(key).pushed_at
                except PgVaultError:
                    segments[tli][segno] = None
    return attrs.evolve(state, segments=segments)


@attrs.frozen
class Window:
    """The moments a base backup can be recovered to along one timeline path."""

    backup_id: str
    timeline: int
    earliest: datetime
    earliest_lsn: int
    latest: datetime | None
    """When the last reachable segment was archived (None: unknown)."""
    latest_lsn: int
    """The end of the last reachable segment."""
    first_missing: str | None = None
    """The first segment missing on the path, when archived WAL lies beyond it (a gap)."""

    def describe(self) -> str:
        """``backup X reaches A .. B on timeline T (lsn .. lsn)``."""
        latest = utc_text(self.latest) if self.latest else "?"
        gap = f"; broken by a gap at {self.first_missing}" if self.first_missing else ""
        return (
            f"backup {self.backup_id} reaches {utc_text(self.earliest)} .. {latest} on timeline "
            f"{self.timeline} ({format_lsn(self.earliest_lsn)} .. {format_lsn(self.latest_lsn)})"
            f"{gap}"
        )


@attrs.frozen
class RecoveryPlan:
    """What a recovery will do, all checked."""

    backup: BaseBackup
    target: RecoveryTarget
    timeline: int
    """The timeline recovery follows to its end (the target timeline)."""
    path: tuple[tuple[int, int], ...]
    """``(timeline, begins_at_lsn)`` from the backup's timeline to the target's."""
    first_segment: str
    last_segment: str
    """The last segment the target needs (the archive's last reachable one for ``end``)."""
    segments: int
    window: Window

    def lines(self) -> list[str]:
        """The plan in words, for the restore's report."""
        path = " -> ".join(str(t) for t, _ in self.path)
        return [
            f"base backup {self.backup.backup_id} (ended {utc_text(self.backup.stopped_at)} at "
            f"{format_lsn(self.backup.stop_lsn)} on timeline {self.backup.stop_timeline})",
            f"target: {self.target.describe()}, timeline {self.target.timeline} "
            f"(path {path}), then {self.target.action}",
            f"WAL: {self.first_segment} .. {self.last_segment} ({self.segments} segment(s)), "
            "all archived",
            f"window: {self.window.describe()}",
        ]


def _aware(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def target_timeline(target: RecoveryTarget, backup: BaseBackup, state: ArchiveState) -> int:
    """The timeline number ``target.timeline`` means for ``backup``."""
    if target.timeline == "current":
        return backup.stop_timeline
    if target.timeline == "latest":
        # PostgreSQL probes history files upwards from its timeline and stops at the first
        # one missing: a hole in the history numbers hides every newer timeline.
        newest = backup.stop_timeline
        while newest + 1 in state.history_files:
            newest += 1
        return newest
    return int(target.timeline)


def timeline_path(
    backup: BaseBackup, timeline: int, state: ArchiveState
) -> tuple[tuple[int, int], ...]:
    """``(timeline, begins_at)`` from ``backup``'s timeline to ``timeline``; PitrRefused when
    the history is missing, unreadable, or does not continue the backup past its end."""
    own = backup.stop_timeline
    if timeline == own:
        return ((own, 0),)
    history_file = history_name(timeline)
    if timeline in state.unreadable:
        raise PitrRefused(
            f"timeline {timeline}'s history file {history_file} cannot be read: "
            f"{state.unreadable[timeline]}"
        )
    if timeline < own:
        raise PitrRefused(
            f"timeline {timeline} is older than base backup {backup.backup_id}'s timeline "
            f"{own}: choose an older base backup (pgvault list) or another --target-timeline"
        )
    history = state.histories.get(timeline)
    if history is None:
        raise PitrRefused(
            f"timeline {timeline}'s history file {history_file} is not in the archive: "
            "PostgreSQL cannot follow that timeline without it (was the promoted server's "
            "archive_command set up?); choose --target-timeline current"
        )
    path: list[tuple[int, int]] = []
    begins = 0
    for entry in history:
        path.append((entry.parent, begins))
        begins = entry.switch_lsn
    path.append((timeline, begins))
    at = next((i for i, (tli, _) in enumerate(path) if tli == own), None)
    if at is None:
        raise PitrRefused(
            f"timeline {timeline} does not descend from timeline {own} of base backup "
            f"{backup.backup_id} ({history_file} names "
            f"{', '.join(str(e.parent) for e in history)}): choose another --target-timeline or "
            "base backup"
        )
    fork = path[at + 1][1]
    if fork < backup.stop_lsn:
        raise PitrRefused(
            f"timeline {timeline} forked off timeline {own} at {format_lsn(fork)}, before base "
            f"backup {backup.backup_id} ended at {format_lsn(backup.stop_lsn)}: PostgreSQL "
            f"cannot reach it from this backup; use an older base backup, or "
            f"--target-timeline {own}"
        )
    return tuple(path[at:])


def _tli_at(path: Sequence[tuple[int, int]], segno: int, segment_size: int) -> int:
    # The segment holding a switch point exists on both timelines: the newer one is read.
    return next((t for t, at in reversed(path) if at // segment_size <= segno), path[0][0])


def _tli_of_lsn(path: Sequence[tuple[int, int]], lsn: int) -> int:
    return next((t for t, at in reversed(path) if at <= lsn), path[0][0])


@attrs.frozen
class _Coverage:
    last_segno: int
    """The last segment of the unbroken run from the backup's start (start - 1: none)."""
    first_missing: int | None
    gap: bool
    """Archived segments lie on the path beyond ``first_missing``."""


def _coverage(
    backup: BaseBackup, path: Sequence[tuple[int, int]], state: ArchiveState
) -> _Coverage:
    size = state.segment_size
    newest = max(
        (s for tli, _ in path for s in state.segments.get(tli, {})), default=backup.start_segno - 1
    )
    segno = backup.start_segno
    while segno <= newest:
        if segno not in state.segments.get(_tli_at(path, segno, size), {}):
            later = any(
                s in state.segments.get(_tli_at(path, s, size), {})
                for s in range(segno + 1, newest + 1)
            )
            return _Coverage(segno - 1, segno, later)
        segno += 1
    return _Coverage(newest, None, False)


def window(backup: BaseBackup, path: Sequence[tuple[int, int]], state: ArchiveState) -> Window:
    """What ``backup`` can reach along ``path`` with the archive as it is."""
    cover = _coverage(backup, path, state)
    size = state.segment_size
    last = cover.last_segno
    when = state.segments.get(_tli_at(path, last, size), {}).get(last) if last >= 0 else None
    missing = (
        state.name(_tli_at(path, cover.first_missing, size), cover.first_missing)
        if cover.gap and cover.first_missing is not None
        else None
    )
    return Window(
        backup.backup_id,
        path[-1][0],
        backup.stopped_at,
        backup.stop_lsn,
        when,
        (last + 1) * size,
        missing,
    )


def reaching(
    backups: Iterable[BaseBackup], timeline: int, state: ArchiveState
) -> list[tuple[BaseBackup, Window]]:
    """Each of ``backups`` whose timeline leads to ``timeline``, with what it can reach there."""
    found = []
    for backup in backups:
        try:
            path = timeline_path(backup, timeline, state)
        except PitrRefused:
            continue
        found.append((backup, window(backup, path, state)))
    return found


def _fits(backup: BaseBackup, target: RecoveryTarget, lsn: int | None) -> bool:
    if target.kind == "time" and target.time is not None:
        return backup.stopped_at <= target.time
    if lsn is not None:
        return backup.stop_lsn <= lsn
    return True


def plan(
    backups: Sequence[BaseBackup],
    state: ArchiveState,
    target: RecoveryTarget,
    *,
    backup_id: str | None = None,
    marks: Mapping[str, Mark] | None = None,
) -> RecoveryPlan:
    """Choose and check everything for a recovery to ``target`` (see the module doc).

    ``backups`` are the vault's base backups; ``backup_id`` forces one of them. Raises
    :class:`PitrRefused` naming the window that can be reached when the target is outside it.
    """
    mine = [b for b in backups if b.cluster == state.cluster]
    if not mine:
        raise PitrRefused(f"no base backup of {state.cluster} in the vault: take one first")
    mine.sort(key=lambda b: (b.stop_lsn, b.stopped_at, b.backup_id), reverse=True)
    lsn = target.lsn
    mark: Mark | None = None
    if target.kind == "name":
        mark = (marks or {}).get(target.name or "")
        if mark is None:
            known = ", ".join(sorted(marks or {})) or "none"
            raise PitrRefused(
                f"no restore point {target.name!r} in the vault (pgvault mark makes them; "
                f"recorded: {known})"
            )
        if mark.system_identifier != state.cluster.system_identifier:
            raise PitrRefused(
                f"restore point {mark.name!r} was made on cluster {mark.system_identifier}, "
                f"not on {state.cluster}"
            )
        lsn = mark.lsn
    if backup_id is not None:
        chosen = [b for b in mine if b.backup_id == backup_id]
        if not chosen:
            raise PitrRefused(f"backup {backup_id} is not a base backup of {state.cluster}")
    else:
        chosen = [b for b in mine if _fits(b, target, lsn)]
        if not chosen:
            oldest = mine[-1]
            raise PitrRefused(
                f"target {target.describe()} is before the end of the oldest base backup: "
                f"the earliest moment that can be reached is {utc_text(oldest.stopped_at)} "
                f"({format_lsn(oldest.stop_lsn)}, end of backup {oldest.backup_id})"
            )
    backup, tli, path = _on_path(chosen, target, state)
    reach = window(backup, path, state)
    size = state.segment_size
    if not _fits(backup, target, lsn):
        raise PitrRefused(
            f"target {target.describe()} is before the end of base backup {backup.backup_id} "
            f"({utc_text(backup.stopped_at)}, {format_lsn(backup.stop_lsn)}): PostgreSQL would "
            f"stop at the backup's end instead; {reach.describe()}"
        )
    cover = _coverage(backup, path, state)
    if cover.last_segno < backup.stop_segno:
        gone = cover.last_segno + 1
        name = state.name(_tli_at(path, gone, size), gone)
        raise PitrRefused(
            f"base backup {backup.backup_id} cannot be made consistent: WAL segment {name} "
            f"(between its start {format_lsn(backup.start_lsn)} and end "
            f"{format_lsn(backup.stop_lsn)}) is not in the archive"
        )
    if mark is not None and _tli_of_lsn(path, mark.lsn) != mark.timeline:
        raise PitrRefused(
            f"restore point {mark.name!r} was made on timeline {mark.timeline} at "
            f"{format_lsn(mark.lsn)}, which is not on the path to timeline {tli} "
            f"({' -> '.join(str(t) for t, _ in path)}): use --target-timeline {mark.timeline}"
        )
    need = _needed_segno(backup, target, lsn, path, state, cover, reach)
    last_tli = _tli_at(path, need, size)
    return RecoveryPlan(
        backup=backup,
        target=attrs.evolve(target, timeline=target.timeline),
        timeline=tli,
        path=path,
        first_segment=state.name(_tli_at(path, backup.start_segno, size), backup.start_segno),
        last_segment=state.name(last_tli, need),
        segments=need - backup.start_segno + 1,
        window=reach,
    )


def _on_path(
    chosen: Sequence[BaseBackup], target: RecoveryTarget, state: ArchiveState
) -> tuple[BaseBackup, int, tuple[tuple[int, int], ...]]:
    """The newest of ``chosen`` whose timeline leads to the target's, with that timeline and the
    path; the newest one's refusal when none does (a backup taken on the old timeline after a
    promotion cannot follow the new one, but an older backup from before the fork can)."""
    refusal: PitrRefused | None = None
    for backup in chosen:
        tli = target_timeline(target, backup, state)
        try:
            return backup, tli, timeline_path(backup, tli, state)
        except PitrRefused as exc:
            refusal = refusal or exc
    assert refusal is not None
    raise refusal


def _needed_segno(
    backup: BaseBackup,
    target: RecoveryTarget,
    lsn: int | None,
    path: Sequence[tuple[int, int]],
    state: ArchiveState,
    cover: _Coverage,
    reach: Window,
) -> int:
    """The last segment the target needs; PitrRefused when it is beyond what is archived."""
    size = state.segment_size
    if target.kind == "immediate":
        return backup.stop_segno
    missing_name = (
        state.name(_tli_at(path, cover.first_missing, size), cover.first_missing)
        if cover.first_missing is not None
        else None
    )

    def beyond(what: str) -> PitrRefused:
        if cover.gap and missing_name is not None:
            return PitrRefused(
                f"target {target.describe()} is beyond a gap in the archive: WAL segment "
                f"{missing_name} is missing, so recovery cannot pass it; {reach.describe()}"
            )
        return PitrRefused(
            f"target {target.describe()} is after the end of the archive ({what}); "
            f"{reach.describe()}"
        )

    if lsn is not None:
        need = lsn // size
        if need > cover.last_segno:
            raise beyond(f"the segment holding {format_lsn(lsn)} is not archived yet")
        return need
    if target.kind == "time" and target.time is not None:
        segno = backup.stop_segno
        while segno <= cover.last_segno:
            when = state.segments.get(_tli_at(path, segno, size), {}).get(segno)
            if when is not None and when > target.time:
                return segno
            segno += 1
        raise beyond(
            "no segment archived after it"
            if reach.latest is None
            else f"the last reachable segment was archived at {utc_text(reach.latest)}"
        )
    if cover.gap and missing_name is not None:
        # Replaying "to the end" would stop at the gap and promote, dropping the WAL after it.
        raise PitrRefused(
            f"the archive is broken by a gap: WAL segment {missing_name} is missing, so "
            f"recovery to the end of the archive would stop there and lose the WAL after it; "
            f"give a target before {utc_text(reach.latest) if reach.latest else 'the gap'} "
            f"explicitly; {reach.describe()}"
        )
    return cover.last_segno
