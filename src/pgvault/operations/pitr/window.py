"""The point-in-time recovery window: which moments the vault can bring a cluster back to.

Per cluster and timeline, each base backup reaches from its end to the last segment it can
replay without a gap along that timeline's path (:func:`~.plan.window`). The backups' windows
are merged into intervals: one interval when the archive is whole, several when a gap breaks
it (the moments between are lost: no backup reaches them). ``pgvault list`` prints them and
``pgvault check`` warns when one is broken.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.exceptions import PgVaultError
from pgvault.transforms.api import DecodeContext
from pgvault.wal.archive import ClusterId, WalArchive
from pgvault.wal.names import format_lsn

from .plan import (
    SOURCE_TYPE,
    ArchiveState,
    BaseBackup,
    base_backups,
    load_state,
    reaching,
)
from .targets import utc_text

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.vault.manifest import Manifest

log = logging.getLogger("pgvault.pitr")


@attrs.frozen
class Interval:
    """Moments ``earliest``..``latest`` reachable without a gap."""

    earliest: datetime
    latest: datetime | None
    latest_lsn: int
    backups: tuple[str, ...]
    broken_at: str | None = None
    """The first segment missing after ``latest``, when archived WAL lies beyond it."""


@attrs.frozen
class TimelineWindow:
    """The reachable moments of one cluster's timeline."""

    cluster: ClusterId
    timeline: int
    intervals: tuple[Interval, ...]

    @property
    def broken(self) -> bool:
        """Whether a gap breaks the window (moments between its intervals are lost)."""
        return any(i.broken_at for i in self.intervals)

    def text(self) -> str:
        """``timeline 1: A .. B (2 base backups)`` and the gaps."""
        parts = []
        for i in self.intervals:
            latest = utc_text(i.latest) if i.latest else "?"
            part = f"{utc_text(i.earliest)} .. {latest} ({len(i.backups)} base backup(s))"
            if i.broken_at:
                part += f", broken at {i.broken_at}"
            parts.append(part)
        return f"timeline {self.timeline}: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "cluster": self.cluster.key,
            "timeline": self.timeline,
            "intervals": [
                {
                    "earliest": i.earliest.isoformat(),
                    "latest": i.latest.isoformat() if i.latest else None,
                    "latest_lsn": format_lsn(i.latest_lsn),
                    "backups": list(i.backups),
                    "broken_at": i.broken_at,
                }
                for i in self.intervals
            ],
        }


def _merge(windows: Sequence[tuple[BaseBackup, Any]]) -> tuple[Interval, ...]:
    merged: list[Interval] = []
    for backup, w in sorted(windows, key=lambda bw: bw[1].earliest):
        if merged and merged[-1].latest is not None and w.earliest <= merged[-1].latest:
            last = merged[-1]
            if w.latest_lsn >= last.latest_lsn:
                merged[-1] = Interval(
                    last.earliest, w.latest, w.latest_lsn, (*last.backups, backup.backup_id),
                    w.first_missing,
                )  # fmt: skip
            else:
                merged[-1] = attrs.evolve(last, backups=(*last.backups, backup.backup_id))
            continue
        merged.append(
            Interval(w.earliest, w.latest, w.latest_lsn, (backup.backup_id,), w.first_missing)
        )
    # An interval followed by another is broken where it ends, whatever its backup saw.
    return tuple(merged)


def windows(
    config: PipelineConfig,
    manifests: Sequence[Manifest],
    *,
    context: DecodeContext | None = None,
) -> list[TimelineWindow]:
    """The window of every timeline that some base backup in ``manifests`` can reach."""
    backups = base_backups([m for m in manifests if m.source_type == SOURCE_TYPE])
    if not backups:
        return []
    context = context or DecodeContext(configured=config.transforms)
    archive = WalArchive(config.sink, config.name)
    states: dict[ClusterId, ArchiveState] = {}
    for cluster in sorted({b.cluster for b in backups}):
        mine = [b for b in backups if b.cluster == cluster]
        states[cluster] = load_state(archive, cluster, mine[0].segment_size, context)
    return timeline_windows(backups, states)


def timeline_windows(
    backups: Sequence[BaseBackup], states: Mapping[ClusterId, ArchiveState]
) -> list[TimelineWindow]:
    """The window of every timeline that one of ``backups`` can reach in ``states`` (pure: what
    ``prune --dry-run`` asks of the archive as it is and as it would be)."""
    out: list[TimelineWindow] = []
    for cluster in sorted({b.cluster for b in backups} & set(states)):
        mine = [b for b in backups if b.cluster == cluster]
        state = states[cluster]
        timelines = sorted(set(state.segments) | set(state.history_files))
        for tli in timelines:
            found = reaching(mine, tli, state)
            if found:
                out.append(TimelineWindow(cluster, tli, _merge(found)))
    return out


def window_lines(config: PipelineConfig, manifests: Sequence[Manifest]) -> list[str]:
    """``pgvault list``'s lines about the window (never raises: a problem is one line)."""
    try:
        found = windows(config, manifests)
    except PgVaultError as exc:
        return [f"PITR window: cannot be read ({exc})"]
    return [f"PITR window of {w.cluster}, {w.text()}" for w in found]


def window_problems(config: PipelineConfig, contents: Any) -> list[str]:
    """``pgvault check``'s warnings: a window broken by a gap (moments no backup reaches)."""
    try:
        found = windows(config, list(contents.scheduled))
    except PgVaultError as exc:
        return [f"cannot read the PITR window: {exc}"]
    out = []
    for w in found:
        for i in w.intervals:
            if i.broken_at:
                latest = utc_text(i.latest) if i.latest else "?"
                out.append(
                    f"PITR window of {w.cluster} on timeline {w.timeline} is broken at "
                    f"{i.broken_at} (missing): no recovery to a moment after {latest} until the "
                    "next base backup's end; take a new base backup"
                )
    return out
