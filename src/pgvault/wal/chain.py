"""The chain check, ``pgvault wal-check``: is the archive a gap-free chain PostgreSQL can replay?

For each cluster in the archive it reports the timelines (with their history: parent and switch
point), the contiguous ranges of segments on each, and the gaps. A gap is **pending** when the
missing segments still wait in ``pg_wal/archive_status`` as ``.ready`` (not archived yet: the
archiver or the daemon is behind), and **lost** otherwise (nothing will fill it: recovery cannot
pass it). Segments after the newest archived one are not gaps: with a server to ask (``[wal]
dsn`` or the source's), they are reported as "not yet archived", with ``pg_stat_archiver``'s
figures. It also reports the age of the newest archived file (the recovery point a failure now
would leave), and objects under a cluster's folder that are not WAL files where they belong.

:func:`summarize` reads only the listing (what ``pgvault list`` shows); :func:`check_chain`
also reads history files (which needs the key, if WAL is encrypted) and asks the server.
:func:`missing_segments` is the question point-in-time recovery asks: is every segment from one
LSN to another present on a timeline's path?
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.exceptions import PgVaultError
from pgvault.transforms.api import DecodeContext
from pgvault.wal.archive import ClusterId, ClusterRecord, StoredWal, WalArchive
from pgvault.wal.names import (
    HistoryEntry,
    Kind,
    WalName,
    format_lsn,
    history_name,
    parse_history,
    segment_name,
)

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.wal")


@attrs.frozen
class SegmentRange:
    """Contiguous segments ``first``..``last`` (segment numbers) on one timeline."""

    first: int
    last: int

    @property
    def count(self) -> int:
        """Segments in the range."""
        return self.last - self.first + 1


@attrs.frozen
class Gap:
    """Missing segments ``first``..``last`` on ``timeline``: ``lost`` or ``pending``."""

    timeline: int
    first: int
    last: int
    state: str

    @property
    def count(self) -> int:
        """Segments missing."""
        return self.last - self.first + 1


@attrs.frozen
class Timeline:
    """One timeline's archived segments; ``history`` from its history file, if read."""

    timeline: int
    ranges: tuple[SegmentRange, ...]
    partial: tuple[int, ...] = ()
    """Segment numbers archived as ``.partial`` (a promotion's leftover of this timeline)."""
    backup_labels: tuple[str, ...] = ()
    has_history: bool = False
    history: tuple[HistoryEntry, ...] | None = None
    starts_at: int | None = None
    """The segment where the timeline begins (its switch point), when its history was read."""


@attrs.frozen
class ClusterChain:
    """The archive of one cluster."""

    record: ClusterRecord
    timelines: tuple[Timeline, ...]
    gaps: tuple[Gap, ...] = ()
    files: int = 0
    stored_bytes: int = 0
    newest: str | None = None
    newest_at: datetime | None = None
    foreign: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def cluster(self) -> ClusterId:
        """Which cluster."""
        return self.record.cluster

    def name(self, timeline: int, segno: int) -> str:
        """The file name of segment ``segno`` on ``timeline``."""
        return segment_name(timeline, segno, self.record.segment_size)

    @property
    def lost(self) -> int:
        """Segments missing for good inside the archived ranges."""
        return sum(g.count for g in self.gaps if g.state == "lost")

    @property
    def pending(self) -> int:
        """Segments missing but still ``.ready`` in pg_wal."""
        return sum(g.count for g in self.gaps if g.state == "pending")


@attrs.frozen
class ServerState:
    """What the server says about its archiving (``pg_stat_archiver`` and the current WAL)."""

    current_wal: str | None = None
    timeline: int | None = None
    archived_count: int | None = None
    last_archived_wal: str | None = None
    last_archived_time: datetime | None = None
    failed_count: int | None = None
    last_failed_wal: str | None = None
    last_failed_time: datetime | None = None
    error: str | None = None


@attrs.frozen
class ChainReport:
    """The outcome of one chain check."""

    name: str
    location: str
    checked_at: datetime
    clusters: tuple[ClusterChain, ...]
    server: ServerState | None = None
    ready: int | None = None
    """``.ready`` files in pg_wal/archive_status (the backlog), when pg_wal is readable."""
    unarchived: tuple[str, str, int] | None = None
    """(first, last, count) of segments after the newest archived one up to the current one."""

    @property
    def newest_at(self) -> datetime | None:
        """When the newest file of any cluster was stored."""
        times = [c.newest_at for c in self.clusters if c.newest_at is not None]
        return max(times) if times else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``pgvault wal-check --json``)."""

        def iso(dt: datetime | None) -> str | None:
            return None if dt is None else dt.astimezone(UTC).isoformat(timespec="seconds")

        def chain(c: ClusterChain) -> dict[str, Any]:
            return {
                "cluster": c.cluster.key,
                "system_identifier": str(c.cluster.system_identifier),
                "major": c.cluster.major,
                "segment_size": c.record.segment_size,
                "files": c.files,
                "stored_bytes": c.stored_bytes,
                "newest": c.newest,
                "newest_at": iso(c.newest_at),
                "newest_age_seconds": None
                if c.newest_at is None
                else round((self.checked_at - c.newest_at).total_seconds()),
                "timelines": [
                    {
                        "timeline": t.timeline,
                        "history": t.has_history,
                        "parent": t.history[-1].parent if t.history else None,
                        "switch_lsn": format_lsn(t.history[-1].switch_lsn) if t.history else None,
                        "ranges": [
                            {
                                "first": c.name(t.timeline, r.first),
                                "last": c.name(t.timeline, r.last),
                                "segments": r.count,
                            }
                            for r in t.ranges
                        ],
                        "partial": [c.name(t.timeline, s) + ".partial" for s in t.partial],
                        "backup_labels": list(t.backup_labels),
                    }
                    for t in c.timelines
                ],
                "gaps": [
                    {
                        "timeline": g.timeline,
                        "first": c.name(g.timeline, g.first),
                        "last": c.name(g.timeline, g.last),
                        "segments": g.count,
                        "state": g.state,
                    }
                    for g in c.gaps
                ],
                "lost_segments": c.lost,
                "pending_segments": c.pending,
                "foreign_objects": list(c.foreign),
                "notes": list(c.notes),
            }

        server = None
        if self.server is not None:
            s = self.server
            server = {
                "current_wal": s.current_wal,
                "timeline": s.timeline,
                "archived_count": s.archived_count,
                "last_archived_wal": s.last_archived_wal,
                "last_archived_time": iso(s.last_archived_time),
                "failed_count": s.failed_count,
                "last_failed_wal": s.last_failed_wal,
                "last_failed_time": iso(s.last_failed_time),
                "error": s.error,
            }
        return {
            "name": self.name,
            "location": self.location,
            "checked_at": iso(self.checked_at),
            "clusters": [chain(c) for c in self.clusters],
            "ready_files": self.ready,
            "unarchived": None
            if self.unarchived is None
            else {
                "first": self.unarchived[0],
                "last": self.unarchived[1],
                "segments": self.unarchived[2],
            },
            "server": server,
        }

    def lines(self) -> list[str]:
        """The text report."""
        out: list[str] = []
        if not self.clusters:
            out.append(f"vault {self.name!r} at {self.location}: no WAL archived")
        for c in self.clusters:
            size = c.record.segment_size >> 20
            age = ""
            if c.newest_at is not None:
                from pgvault.units import human_duration

                ago = human_duration(self.checked_at - c.newest_at)
                age = f", newest {c.newest} stored {ago} ago"
            out.append(f"{c.cluster}, {size} MiB segments: {c.files} file(s){age}")
            for t in c.timelines:
                where = ""
                if t.history:
                    last = t.history[-1]
                    where = f" (from timeline {last.parent} at {format_lsn(last.switch_lsn)})"
                elif t.timeline > 1 and not t.has_history:
                    where = " (no history file archived)"
                ranges = ", ".join(
                    f"{c.name(t.timeline, r.first)}..{c.name(t.timeline, r.last)} ({r.count})"
                    for r in t.ranges
                )
                out.append(f"  timeline {t.timeline}{where}: {ranges or 'no segments'}")
                for segno in t.partial:
                    out.append(f"    partial {c.name(t.timeline, segno)}.partial")
            for g in c.gaps:
                what = (
                    "LOST: recovery cannot pass it"
                    if g.state == "lost"
                    else "pending: still .ready in pg_wal"
                )
                out.append(
                    f"  gap on timeline {g.timeline}: {c.name(g.timeline, g.first)}.."
                    f"{c.name(g.timeline, g.last)} ({g.count} segment(s)) {what}"
                )
            for key in c.foreign:
                out.append(f"  unexpected object (not a WAL file where it belongs): {key}")
            for note in c.notes:
                out.append(f"  note: {note}")
        if self.unarchived is not None:
            low, high, count = self.unarchived
            out.append(f"not yet archived: {low}..{high} ({count} segment(s))")
        if self.ready is not None:
            out.append(f"pg_wal backlog: {self.ready} file(s) .ready")
        if self.server is not None:
            s = self.server
            if s.error:
                out.append(f"server: not reachable ({s.error})")
            else:
                failed = ""
                if s.failed_count:
                    failed = f", {s.failed_count} failed (last {s.last_failed_wal})"
                out.append(
                    f"server: current WAL {s.current_wal}, pg_stat_archiver: "
                    f"{s.archived_count} archived (last {s.last_archived_wal}){failed}"
                )
        return out


def _ranges(segnos: Iterable[int]) -> list[SegmentRange]:
    out: list[SegmentRange] = []
    for n in sorted(set(segnos)):
        if out and n == out[-1].last + 1:
            out[-1] = SegmentRange(out[-1].first, n)
        else:
            out.append(SegmentRange(n, n))
    return out


def _timelines(
    record: ClusterRecord, items: Sequence[StoredWal]
) -> tuple[dict[int, list[int]], dict[int, list[int]], dict[int, list[str]], set[int]]:
    size = record.segment_size
    segments: dict[int, list[int]] = {}
    partial: dict[int, list[int]] = {}
    labels: dict[int, list[str]] = {}
    histories: set[int] = set()
    for item in items:
        n = item.name
        if n.kind is Kind.HISTORY:
            histories.add(n.timeline)
            continue
        try:
            segno = n.segno(size)
        except PgVaultError:
            continue
        if n.kind is Kind.SEGMENT:
            segments.setdefault(n.timeline, []).append(segno)
        elif n.kind is Kind.PARTIAL:
            partial.setdefault(n.timeline, []).append(segno)
        else:
            labels.setdefault(n.timeline, []).append(n.text)
    return segments, partial, labels, histories


def summarize(archive: WalArchive, *, pg_wal: Path | None = None) -> list[ClusterChain]:
    """Every cluster's timelines and ranges, from the listing alone (no key needed); gaps whose
    segments are ``.ready`` in ``pg_wal`` count as pending."""
    ready = _ready_files(pg_wal) or set()
    out: list[ClusterChain] = []
    for record in archive.clusters():
        items = archive.list(record.cluster)
        out.append(_chain(record, items, {}, ready, archive))
    return out


def _chain(
    record: ClusterRecord,
    items: Sequence[StoredWal],
    histories: dict[int, tuple[HistoryEntry, ...]],
    ready: set[str],
    archive: WalArchive,
    notes: Sequence[str] = (),
) -> ClusterChain:
    size = record.segment_size
    segments, partial, labels, has_history = _timelines(record, items)
    timelines: list[Timeline] = []
    gaps: list[Gap] = []
    for tli in sorted(set(segments) | set(partial) | set(labels) | has_history):
        ranges = _ranges(segments.get(tli, []))
        history = histories.get(tli)
        starts = history[-1].switch_lsn // size if history else None
        timelines.append(
            Timeline(
                tli,
                tuple(ranges),
                tuple(sorted(partial.get(tli, []))),
                tuple(sorted(labels.get(tli, []))),
                tli in has_history,
                history,
                starts,
            )
        )
        holes = [(a.last + 1, b.first - 1) for a, b in itertools.pairwise(ranges)]
        if starts is not None and ranges and ranges[0].first > starts:
            holes.insert(0, (starts, ranges[0].first - 1))
        for first, last in holes:
            state = None
            start = first
            for segno in range(first, last + 1):
                now = "pending" if segment_name(tli, segno, size) in ready else "lost"
                if state is not None and now != state:
                    gaps.append(Gap(tli, start, segno - 1, state))
                    start = segno
                state = now
            if state is not None:
                gaps.append(Gap(tli, start, last, state))
    newest = max(
        items, key=lambda i: (i.modified or datetime.min.replace(tzinfo=UTC), i.name), default=None
    )
    newest_at = newest.modified if newest is not None else None
    if newest is not None and newest_at is None:
        try:
            newest_at = archive.envelope(newest.key).pushed_at
        except PgVaultError:
            newest_at = None
    return ClusterChain(
        record=record,
        timelines=tuple(timelines),
        gaps=tuple(gaps),
        files=len(items),
        stored_bytes=sum(i.size for i in items),
        newest=newest.name.text if newest else None,
        newest_at=newest_at,
        foreign=tuple(archive.foreign(record.cluster)),
        notes=tuple(notes),
    )


def read_history(
    archive: WalArchive, cluster: ClusterId, timeline: int, context: DecodeContext
) -> tuple[HistoryEntry, ...]:
    """The parsed history file of ``timeline`` (ObjectNotFoundError if not archived)."""
    name = WalName.parse(history_name(timeline))
    chunks: list[bytes] = []
    archive.read(cluster, name, context, chunks.append)
    return parse_history(b"".join(chunks), name)


def _ready_files(pg_wal: Path | None) -> set[str] | None:
    if pg_wal is None:
        return None
    try:
        return {
            p.name[: -len(".ready")]
            for p in (pg_wal / "archive_status").iterdir()
            if p.name.endswith(".ready")
        }
    except OSError:
        return None


def server_state(dsn: str) -> ServerState:
    """Ask the server for ``pg_stat_archiver`` and its current WAL file (never raises)."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_walfile_name(pg_current_wal_lsn()), "
                "(SELECT timeline_id FROM pg_control_checkpoint()), archived_count, "
                "last_archived_wal, last_archived_time, failed_count, last_failed_wal, "
                "last_failed_time FROM pg_stat_archiver"
            ).fetchone()
    except Exception as exc:
        text = str(exc).strip().splitlines()
        return ServerState(error=text[0] if text else type(exc).__name__)
    assert row is not None
    return ServerState(
        current_wal=str(row[0]),
        timeline=int(row[1]) if row[1] is not None else None,
        archived_count=int(row[2]),
        last_archived_wal=row[3],
        last_archived_time=row[4],
        failed_count=int(row[5]),
        last_failed_wal=row[6],
        last_failed_time=row[7],
    )


def wal_dsn(config: PipelineConfig) -> str | None:
    """The server ``[wal] dsn`` or the source's ``dsn`` names, if any."""
    if config.wal.dsn:
        return config.wal.dsn
    dsn = getattr(config.source, "dsn", None)
    return dsn if isinstance(dsn, str) and dsn else None


def check_chain(
    config: PipelineConfig,
    *,
    context: DecodeContext | None = None,
    ask_server: bool = True,
    now: datetime | None = None,
) -> ChainReport:
    """The full chain check of ``config``'s vault (see the module doc)."""
    now = now or datetime.now(UTC)
    archive = WalArchive(config.sink, config.name)
    context = context or DecodeContext(configured=config.transforms)
    ready = _ready_files(config.wal.pg_wal)
    chains: list[ClusterChain] = []
    for record in archive.clusters():
        items = archive.list(record.cluster)
        histories: dict[int, tuple[HistoryEntry, ...]] = {}
        notes: list[str] = []
        for item in items:
            if item.name.kind is not Kind.HISTORY:
                continue
            try:
                histories[item.name.timeline] = read_history(
                    archive, record.cluster, item.name.timeline, context
                )
            except PgVaultError as exc:
                notes.append(f"cannot read {item.name}: {exc}")
        chains.append(_chain(record, items, histories, ready or set(), archive, notes))
    dsn = wal_dsn(config) if ask_server else None
    server = server_state(dsn) if dsn else None
    unarchived = None
    if server is not None and server.current_wal and chains:
        unarchived = _unarchived(chains, server.current_wal)
    return ChainReport(
        name=config.name,
        location=config.sink.describe(),
        checked_at=now,
        clusters=tuple(chains),
        server=server,
        ready=None if ready is None else len(ready),
        unarchived=unarchived,
    )


def _unarchived(chains: Sequence[ClusterChain], current_wal: str) -> tuple[str, str, int] | None:
    current = WalName.parse(current_wal)
    for chain in chains:
        size = chain.record.segment_size
        for t in chain.timelines:
            if t.timeline != current.timeline or not t.ranges:
                continue
            last = t.ranges[-1].last
            now = current.segno(size)
            # The current segment is being written: it is archived when it is full.
            if now - 1 > last:
                return (
                    segment_name(t.timeline, last + 1, size),
                    segment_name(t.timeline, now - 1, size),
                    now - 1 - last,
                )
            return None
    return None


def missing_segments(
    archive: WalArchive,
    cluster: ClusterId,
    segment_size: int,
    path: Sequence[tuple[int, int]],
    start_lsn: int,
    end_lsn: int,
) -> list[str]:
    """The segments recovery from ``start_lsn`` to ``end_lsn`` needs that are not archived.

    ``path`` is the timeline path as ``(timeline, begins_at_lsn)`` pairs, oldest first (from
    the target timeline's history: each timeline is read from where it begins); a segment is
    taken from the newest timeline on the path that has begun by its start, the way PostgreSQL
    picks it. Lists only the folders the range spans.
    """
    first, last = start_lsn // segment_size, end_lsn // segment_size
    per_log = 0x1_0000_0000 // segment_size
    logs = range(first // per_log, last // per_log + 1)
    have: set[str] = set()
    for tli in {t for t, _ in path}:
        have |= {s.name.text for s in archive.list(cluster, timeline=tli, logs=logs)}
    missing: list[str] = []
    for segno in range(first, last + 1):
        # The segment holding a switch point exists on both timelines: the newer one wins.
        tli = next((t for t, at in reversed(path) if at // segment_size <= segno), path[0][0])
        name = segment_name(tli, segno, segment_size)
        if name not in have:
            missing.append(name)
    return missing
