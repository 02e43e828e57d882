"""Storage tiers by age: which artifacts ``prune`` moves to a colder storage class, and moving them.

A destination's ``tiers`` (see :class:`~pgvault.sinks.destinations.Tier`) say, by a backup's age
(from its start time, by the clock) and optionally by the retention rule that keeps it, which
class its *artifacts* belong in. ``prune`` applies them by copying each artifact onto itself in
the new class (S3 CopyObject; UploadPartCopy above 5 GiB), after retention has removed what it
removes. Index objects (manifests, ``MD5SUMS``) are never moved: every command reads them at
once. An artifact only ever moves colder, never back; one already in an archive class stays
where it is (S3 cannot copy it without a restore first). Why prune and not bucket lifecycle
rules: docs/storage.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import attrs

from pgvault.exceptions import PgVaultError
from pgvault.sinks.api import ObjectInfo, Sink
from pgvault.sinks.destinations import Tier
from pgvault.transforms.digest import MD5_SIDECAR
from pgvault.vault.manifest import MANIFEST_NAME, Manifest
from pgvault.vault.retention import RetentionPlan

log = logging.getLogger("pgvault.prune")

DEFAULT_CLASS = "STANDARD"
"""What an S3 listing means when it names no class."""


@runtime_checkable
class TieredSink(Protocol):
    """A sink whose objects have storage classes that pgvault can change (the S3 sink)."""

    tier_classes: tuple[str, ...]
    archive_classes: tuple[str, ...]

    def set_storage_class(self, key: str, storage_class: str, size: int) -> None:
        """Rewrite ``key`` in ``storage_class``, bytes unchanged."""


@attrs.frozen
class Move:
    """One artifact that goes to a colder class."""

    backup_id: str
    key: str
    size: int
    from_class: str
    to_class: str
    error: str | None = None
    """Why the move failed (None: planned or done)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return attrs.asdict(self)


def class_of(info: ObjectInfo) -> str:
    """The storage class of a listed object (``STANDARD`` when the listing names none)."""
    return info.storage_class or DEFAULT_CLASS


def is_index(key: str) -> bool:
    """Whether ``key`` is an index object (a manifest, ``MD5SUMS``): never moved."""
    return key.endswith(("/" + MANIFEST_NAME, "/" + MD5_SIDECAR))


def target_class(
    tiers: Sequence[Tier],
    age_seconds: float,
    reasons: Iterable[str] = (),
    order: Sequence[str] = (),
) -> str | None:
    """The class a backup of this age (kept for ``reasons``) belongs in, or None (leave it).

    The coldest class among the tiers that apply wins, so a ``kept_as = "monthly"`` tier to
    DEEP_ARCHIVE takes over from an age tier to GLACIER for monthly backups. ``order`` lists the
    classes warmest first (the sink's ``tier_classes``); without it, the last tier that applies
    wins."""
    kept = {r.split(" ", 1)[0].rstrip("#") for r in reasons}
    found: list[Tier] = []
    for tier in tiers:
        if age_seconds < tier.after.delta.total_seconds():
            continue
        if tier.kept_as is not None and tier.kept_as not in kept:
            continue
        found.append(tier)
    if not found:
        return None
    rank = {c: i for i, c in enumerate(order)}
    return max(found, key=lambda t: (rank.get(t.storage_class, -1), found.index(t))).storage_class


def plan_moves(
    sink: Sink,
    vault_name: str,
    tiers: Sequence[Tier],
    backups: Sequence[Manifest],
    now: datetime,
    retention: RetentionPlan | None = None,
) -> list[Move]:
    """The artifacts of ``backups`` that the tiers move now (one listing of the vault)."""
    if not tiers or not isinstance(sink, TieredSink):
        return []
    order = {c: i for i, c in enumerate(sink.tier_classes)}
    listing = {i.key: i for i in sink.list(f"{vault_name}/backups/")}
    moves: list[Move] = []
    for manifest in backups:
        age = (now - manifest.started_at).total_seconds()
        reasons: tuple[str, ...] = ()
        if retention is not None:
            try:
                decision = retention.decision(manifest.backup_id)
            except KeyError:
                continue
            if not decision.keep:
                continue  # going anyway
            reasons = decision.reasons
        wanted = target_class(tiers, age, reasons, sink.tier_classes)
        if wanted is None:
            continue
        prefix = f"{vault_name}/backups/{manifest.backup_id}/"
        for art in manifest.artifacts:
            info = listing.get(prefix + art.path)
            if info is None:
                continue
            current = class_of(info)
            if current in sink.archive_classes or order.get(current, 0) >= order[wanted]:
                continue  # already as cold (or archived: S3 cannot copy it unthawed)
            moves.append(Move(manifest.backup_id, info.key, info.size, current, wanted))
    return moves


def apply_moves(sink: Sink, moves: Sequence[Move]) -> list[Move]:
    """Carry ``moves`` out; each comes back with ``error`` set if it failed (the rest go on)."""
    if not moves:
        return []
    assert isinstance(sink, TieredSink)
    done: list[Move] = []
    for move in moves:
        try:
            sink.set_storage_class(move.key, move.to_class, move.size)
        except PgVaultError as exc:
            log.error("could not move %s to %s: %s", move.key, move.to_class, exc)
            done.append(attrs.evolve(move, error=str(exc)))
            continue
        log.info("moved %s from %s to %s", move.key, move.from_class, move.to_class)
        done.append(move)
    return done


def sizes_by_class(listing: Iterable[ObjectInfo], prefix: str) -> dict[str, dict[str, int]]:
    """Bytes per storage class of each backup folder under ``prefix`` (``<name>/backups/``),
    index objects included; a sink without classes reports ``"-"``."""
    found: dict[str, dict[str, int]] = {}
    for info in listing:
        if not info.key.startswith(prefix):
            continue
        backup_id = info.key[len(prefix) :].partition("/")[0]
        per = found.setdefault(backup_id, {})
        name = info.storage_class or "-"
        per[name] = per.get(name, 0) + info.size
    return found


def artifact_classes(listing: Iterable[ObjectInfo], prefix: str) -> dict[str, set[str]]:
    """The storage classes of each backup's artifacts (index objects left out)."""
    found: dict[str, set[str]] = {}
    for info in listing:
        if not info.key.startswith(prefix) or is_index(info.key):
            continue
        backup_id = info.key[len(prefix) :].partition("/")[0]
        if info.storage_class:
            found.setdefault(backup_id, set()).add(info.storage_class)
    return found
