"""A pipeline's destinations side by side: where each backup is, which destination lags, and
which copy a restore reads. ``list``, ``check`` and ``restore`` use this; the rules are in
docs/storage.md:

* ``list`` shows the union of the backups of every destination it can reach, each with the
  destinations that hold it (and the storage class of its artifacts there); a destination that
  cannot be read is a warning, not a failed listing;
* a destination *lags* when another holds a pipeline backup newer than its own newest: a run
  that could not store there (``required = false``), or a destination added later. ``check``
  reports it (WARNING; CRITICAL when its newest backup is past ``max_age`` and it is required);
  ``pgvault copy`` brings it up to date. Backups an older destination's retention removed are
  not lag: destinations keep different histories by design;
* ``restore`` (and ``latest``) takes the newest backup any destination holds, and reads it from
  the first destination, in config order, that has a usable copy: its manifest reads, every
  artifact is listed with the recorded size, and none is archived (unless thawed). Digests are
  checked while the restore streams, as always.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.exceptions import BackupNotFoundError, ObjectArchivedError, PgVaultError
from pgvault.operations.tiers import artifact_classes, sizes_by_class
from pgvault.sinks.api import ObjectInfo
from pgvault.sinks.destinations import Destination
from pgvault.vault.contents import Vault, VaultContents, latest_first
from pgvault.vault.manifest import Manifest, future_dated

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig


@attrs.frozen
class Place:
    """One destination's copy of a backup."""

    destination: str
    classes: tuple[str, ...] = ()
    """Storage classes of its artifacts there (empty: the sink has none)."""
    sizes: dict[str, int] = attrs.field(factory=dict)
    """Bytes per storage class (``"-"`` where the sink has no classes), index objects included."""

    def describe(self) -> str:
        """``s3:GLACIER`` or ``local``."""
        return self.destination + (":" + "+".join(self.classes) if self.classes else "")


@attrs.frozen
class DestinationState:
    """What one destination holds, or why it could not be read."""

    destination: Destination
    contents: VaultContents | None
    error: str | None = None
    backups: dict[str, Place] = attrs.field(factory=dict)
    """Backup id to this destination's copy."""
    lag: tuple[str, ...] = ()
    """Ids of pipeline backups another destination holds that are newer than this one's newest."""

    @property
    def sizes(self) -> dict[str, int]:
        """Bytes per storage class over every backup here."""
        total: dict[str, int] = {}
        for place in self.backups.values():
            for name, size in place.sizes.items():
                total[name] = total.get(name, 0) + size
        return total


@attrs.frozen
class Overview:
    """Every destination's state, and the union of their backups, newest first."""

    states: tuple[DestinationState, ...]
    backups: tuple[Manifest, ...]
    places: dict[str, tuple[Place, ...]]

    @property
    def primary(self) -> DestinationState:
        """The first destination's state."""
        return self.states[0]

    def lagging(self) -> list[DestinationState]:
        """Destinations that lag (see the module doc)."""
        return [s for s in self.states if s.lag]

    def to_dict(self) -> dict[str, Any]:
        """Per destination: reachable, backups held, bytes per class, lagging ids."""
        return {
            s.destination.name: {
                "location": s.destination.sink.describe(),
                "required": s.destination.required,
                "error": s.error,
                "backups": len(s.backups),
                "size_by_class": s.sizes,
                "lagging": list(s.lag),
            }
            for s in self.states
        }


def overview(config: PipelineConfig, now: datetime | None = None) -> Overview:
    """Read every destination once (its listing and manifests). Raises the primary's error
    only when no destination can be read at all."""
    now = now or datetime.now(UTC)
    states: list[DestinationState] = []
    for dest in config.destinations:
        vault = Vault(dest.sink, config.name)
        prefix = f"{config.name}/backups/"
        try:
            listing: list[ObjectInfo] = dest.sink.list(prefix)
            contents = vault.contents(now, listing=listing)  # one listing serves both
        except PgVaultError as exc:
            if len(config.destinations) == 1:
                raise
            states.append(DestinationState(dest, None, str(exc)))
            continue
        classes = artifact_classes(listing, prefix)
        sizes = sizes_by_class(listing, prefix)
        places = {
            m.backup_id: Place(
                dest.name, tuple(sorted(classes.get(m.backup_id, ()))), sizes.get(m.backup_id, {})
            )
            for m in contents.backups
        }
        states.append(DestinationState(dest, contents, backups=places))
    if all(s.contents is None for s in states):
        raise PgVaultError(f"no destination can be read: {states[0].error}")
    union: dict[str, Manifest] = {}
    where: dict[str, list[Place]] = {}
    for state in states:
        if state.contents is None:
            continue
        for m in state.contents.backups:
            union.setdefault(m.backup_id, m)
            where.setdefault(m.backup_id, []).append(state.backups[m.backup_id])
    scheduled = [
        m
        for m in union.values()
        if m.kind == "scheduled" and not future_dated(m.backup_id, m.started_at, now)
    ]
    lagged = [attrs.evolve(s, lag=_lag(s, scheduled)) if s.contents else s for s in states]
    return Overview(
        tuple(lagged),
        tuple(latest_first(list(union.values()))),
        {k: tuple(v) for k, v in where.items()},
    )


def _lag(state: DestinationState, scheduled: Sequence[Manifest]) -> tuple[str, ...]:
    assert state.contents is not None
    own = state.contents.latest
    return tuple(
        m.backup_id
        for m in latest_first(scheduled)
        if m.backup_id not in state.backups and (own is None or m.started_at > own.started_at)
    )


def choose_copy(
    config: PipelineConfig, ref: str, before: datetime | None = None, source: str | None = None
) -> tuple[Destination, Manifest]:
    """The backup ``ref`` (an id, a prefix, ``latest``) or the newest before ``before``, and the
    destination to read it from (see the module doc); ``source`` names one destination."""
    dests = [config.destination(source)] if source else list(config.destinations)
    found: list[tuple[Destination, Manifest]] = []
    errors: list[str] = []
    for dest in dests:
        vault = Vault(dest.sink, config.name)
        try:
            manifest = vault.manifest_before(before) if before else vault.manifest(ref)
        except PgVaultError as exc:
            errors.append(f"{dest.name}: {exc}")
            continue
        found.append((dest, manifest))
    if not found:
        raise BackupNotFoundError("; ".join(errors))
    if before is not None or ref == "latest":
        newest = max(found, key=lambda f: (f[1].started_at, f[1].backup_id))[1]
        found = [f for f in found if f[1].backup_id == newest.backup_id]
    else:
        first = found[0][1].backup_id
        found = [f for f in found if f[1].backup_id == first]
    # Holders of that backup that did not come up above (an id found on the first only).
    archived: tuple[Destination, Manifest] | None = None
    for dest, manifest in found:
        state = usable(dest, config.name, manifest)
        if state == "ok":
            return dest, manifest
        if state == "archived" and archived is None:
            archived = (dest, manifest)
    if archived is not None:
        return archived  # the restore then says to thaw it (or thaws it)
    return found[0]


def usable(dest: Destination, vault_name: str, manifest: Manifest) -> str:
    """``ok``, ``archived`` (some artifact must be thawed first) or ``incomplete``."""
    prefix = f"{vault_name}/backups/{manifest.backup_id}/"
    try:
        listing = {i.key[len(prefix) :]: i for i in dest.sink.list(prefix)}
    except PgVaultError:
        return "incomplete"
    archived = False
    for art in manifest.artifacts:
        info = listing.get(art.path)
        if info is None or info.size != art.size:
            return "incomplete"
        if info.storage_class in getattr(dest.sink, "archive_classes", ()):
            state = getattr(dest.sink, "thaw_state", None)
            try:
                if state is None or not state(prefix + art.path).readable:
                    archived = True
            except (ObjectArchivedError, PgVaultError):
                archived = True
    return "archived" if archived else "ok"
