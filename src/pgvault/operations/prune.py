"""Applying a retention plan to a vault: ``pgvault prune``.

The plan comes from :func:`pgvault.vault.retention.plan` over what the sink holds right now; this
module
only carries it out. Each removed backup loses its manifest first and its data after, so an
interrupted prune leaves at worst an incomplete folder (which the next prune cleans once it is past
the grace period), never a manifest that points at missing data. A folder that a live run holds
the lease of (see :mod:`pgvault.engine.runlock`) is never touched, whatever its age. The module is
named
``pruning`` so that ``pgvault.prune`` stays the function.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from pgvault.engine.runlock import Lease, live_leases
from pgvault.exceptions import ConfigError, PgVaultError
from pgvault.operations.pitr.targets import utc_text
from pgvault.operations.tiers import Move, apply_moves, plan_moves
from pgvault.plugin.exec_hooks import with_hooks
from pgvault.plugin.manager import call_hook
from pgvault.settings import RetentionPolicy
from pgvault.vault.contents import Vault
from pgvault.vault.pins import read_pins, remove_pin
from pgvault.vault.retention import RetentionPlan, plan, started_from_id

if TYPE_CHECKING:
    from pgvault.operations.pitr.plan import ArchiveState, BaseBackup
    from pgvault.operations.pitr.retention import PitrKeep
    from pgvault.operations.pitr.window import TimelineWindow
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.vault.manifest import Manifest
    from pgvault.wal.archive import ClusterId, StoredWal

log = logging.getLogger("pgvault.prune")


@attrs.frozen
class PruneFailure:
    """A backup folder the plan removes but the sink refused to delete."""

    backup_id: str
    message: str


@attrs.frozen
class WalPrune:
    """What prune does to the WAL archive: the keep-set of
    :func:`pgvault.operations.pitr.retention.wal_keep` (history files are never removed; see
    there for the rules)."""

    horizon: datetime | None
    """The time rule's horizon (a cluster with no kept base backup): files stored before it go."""
    removable: tuple[str, ...]
    """Keys the keep-set does not keep (removed unless a dry run)."""
    kept: int
    removed: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    horizons: tuple[str, ...] = ()
    """Per cluster, the rule applied, in words."""
    window_start: datetime | None = None
    """The earliest moment ``pitr_within`` promises (None: no ``pitr_within``)."""
    before: tuple[TimelineWindow, ...] | None = None
    """The PITR window per timeline as the archive is (dry runs of vaults with base backups)."""
    after: tuple[TimelineWindow, ...] | None = None
    """… and as it will be after the prune."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {
            "horizon": _iso(self.horizon) if self.horizon else None,
            "horizons": list(self.horizons),
            "removable": len(self.removable),
            "removed": len(self.removed),
            "kept": self.kept,
            "failures": list(self.failures),
            "pitr_window_start": _iso(self.window_start) if self.window_start else None,
        }
        if self.before is not None and self.after is not None:
            out["pitr_window"] = {
                "before": [w.to_dict() for w in self.before],
                "after": [w.to_dict() for w in self.after],
            }
        return out

    def lines(self, *, dry_run: bool) -> list[str]:
        """What ``pgvault prune`` prints about the WAL archive."""
        below = f" stored before {self.horizon:%Y-%m-%d %H:%M} UTC" if self.horizon else ""
        if dry_run:
            out = [f"WAL: would remove {len(self.removable)} file(s){below}; keep {self.kept}"]
        else:
            out = [f"WAL: removed {len(self.removed)} file(s){below}; kept {self.kept}"]
        out += [f"  {h}" for h in self.horizons]
        if self.window_start is not None:
            out.append(f"  pitr_within promises every moment from {utc_text(self.window_start)} on")
        if self.before is not None and self.after is not None:
            out.append("PITR window before: " + _windows_text(self.before))
            out.append("PITR window after:  " + _windows_text(self.after))
        return out


def _windows_text(found: Sequence[TimelineWindow]) -> str:
    if not found:
        return "none (no base backup reaches any moment)"
    return "; ".join(f"{w.cluster}, {w.text()}" for w in found)


@attrs.frozen
class PruneResult:
    """What ``prune`` decided and did."""

    name: str
    plan: RetentionPlan
    dry_run: bool
    removed: tuple[str, ...] = ()
    """Folders actually removed (none on a dry run)."""
    failures: tuple[PruneFailure, ...] = ()
    partials_removed: int = 0
    """Leftovers of interrupted writes (temporary files, multipart uploads) removed too."""
    wal: WalPrune | None = None
    """What happened to the WAL archive (None: the vault has none)."""
    moves: tuple[Move, ...] = ()
    """Artifacts moved to a colder storage class by the destination's ``tiers`` (planned
    only, on a dry run); a failed one has its ``error`` set."""

    @property
    def leftovers(self) -> tuple[str, ...]:
        """Unfinished backup folders (no manifest, past the grace) this prune cleans, or would."""
        return tuple(d.backup_id for d in self.plan.removed if not d.complete)

    @property
    def ok(self) -> bool:
        """Whether every removal and tier move the plan asked for happened."""
        return not self.failures and not any(m.error for m in self.moves)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``pgvault prune --json``)."""
        return {
            "name": self.name,
            "dry_run": self.dry_run,
            "now": _iso(self.plan.now),
            "policy": self.plan.policy.describe(),
            "backups": [
                {
                    "backup_id": d.backup_id,
                    "started_at": _iso(d.started_at) if d.started_at else None,
                    "complete": d.complete,
                    "action": d.action,
                    "reasons": list(d.reasons),
                }
                for d in self.plan.decisions
            ],
            "kept": len(self.plan.kept),
            "removed": list(self.removed),
            "failures": [{"backup_id": f.backup_id, "message": f.message} for f in self.failures],
            "partials_removed": self.partials_removed,
            "leftovers": list(self.leftovers),
            "wal": None if self.wal is None else self.wal.to_dict(),
            "moves": [m.to_dict() for m in self.moves],
        }


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# [[hook]] before_prune / after_prune commands (issue 16).
@with_hooks("prune", lambda r: {"outcome": "succeeded" if r.ok else "failed"})
def prune(
    config: PipelineConfig,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    policy: RetentionPolicy | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
) -> PruneResult:
    """Remove the backups the ``[retention]`` policy (or ``policy``) does not keep.

    With ``dry_run`` nothing is touched and the result holds the plan alone. A folder the sink
    fails to delete is reported in ``failures`` and the others are still removed. After a real
    prune, the ``pgvault_prune_done`` hook fires.
    """
    # The destination's own retention table (issue 15) comes before the pipeline's.
    primary = config.destinations[0]
    own = primary.retention if primary.sink is config.sink else None
    policy = policy or own or config.retention
    if policy is None:
        raise ConfigError(
            "prune needs a [retention] table, e.g. keep_daily = 7, keep_weekly = 5, "
            "keep_monthly = 12",
            path=config.where(),
            key="retention",
        )
    now = now or datetime.now(UTC)
    vault = Vault(config.sink, config.name)
    contents = vault.contents(now)
    pins = read_pins(vault)
    running = live_leases(vault)
    wal_view = _WalView.read(config, vault, contents.backups)
    promise = wal_view.promise(policy, now)
    retention = _spare_running(
        plan(
            contents.backups,
            policy,
            now,
            incomplete=vault.incomplete(),
            damaged=[d.backup_id for d in contents.damaged],
            pins=pins.protecting(now),
            pitr=promise.reasons if promise is not None else None,
        ),
        running,
    )
    # WAL a running backup may need stays; so does WAL a damaged folder (whose manifest cannot
    # say which WAL it needs: perhaps a base backup) may need, from its id's time on.
    in_progress = [lease.started_at for lease in running.values()]
    in_progress += [t for d in contents.damaged if (t := started_from_id(d.backup_id)) is not None]
    tiers = primary.tiers if primary.sink is config.sink else ()
    if dry_run:
        wal_plan = wal_view.plan(retention, promise, in_progress, windows=True)
        moves = plan_moves(vault.sink, vault.name, tiers, contents.backups, now, retention)
        return PruneResult(config.name, retention, dry_run=True, wal=wal_plan, moves=tuple(moves))

    removed: list[str] = []
    failures: list[PruneFailure] = []
    # Oldest first: an interrupted prune has then done what a later, complete one would do first.
    for decision in reversed(retention.removed):
        try:
            vault.delete_backup_objects(decision.backup_id)
        except PgVaultError as exc:
            log.error("could not remove backup %s: %s", decision.backup_id, exc)
            failures.append(PruneFailure(decision.backup_id, str(exc)))
            continue
        removed.append(decision.backup_id)
        if decision.backup_id in pins.pins:  # an expired pin goes with its backup
            try:
                remove_pin(vault, decision.backup_id)
            except PgVaultError as exc:
                log.warning("could not remove the pin of %s: %s", decision.backup_id, exc)
        log.info("removed backup %s (%s)", decision.backup_id, "; ".join(decision.reasons))
    partials = _remove_partials(vault, retention, set(removed), now, set(running))
    # A backup the sink refused to delete is still there: its WAL stays with it.
    still = {f.backup_id for f in failures}
    wal_plan = wal_view.plan(retention, promise, in_progress, also_kept=still)
    if wal_plan is not None:
        wal_plan, wal_partials = _prune_wal(vault, wal_plan)
        partials += wal_partials
    # Tiers after removal: nothing is moved (and billed a minimum duration) just to go.
    gone = set(removed)
    moves = apply_moves(
        vault.sink,
        plan_moves(
            vault.sink,
            vault.name,
            tiers,
            [m for m in contents.backups if m.backup_id not in gone],
            now,
            retention,
        ),
    )
    result = PruneResult(
        config.name,
        retention,
        dry_run=False,
        moves=tuple(moves),
        removed=tuple(removed),
        failures=tuple(failures),
        partials_removed=partials,
        wal=wal_plan,
    )
    log.info(
        "prune of %s: kept %d, removed %d, %d failed",
        config.name,
        len(retention.kept),
        len(removed),
        len(failures),
    )
    call_hook("pgvault_prune_done", pm=plugin_manager, config=config, result=result)
    return result


def _spare_running(retention: RetentionPlan, running: dict[str, Lease]) -> RetentionPlan:
    """Keep every unfinished folder a live run holds the lease of, however old it is: a run
    longer than ``incomplete_grace`` must not lose what it is writing."""
    decisions = tuple(
        attrs.evolve(d, keep=True, reasons=(f"incomplete: being written by {lease.describe()}",))
        if not d.complete and (lease := running.get(d.backup_id)) is not None
        else d
        for d in retention.decisions
    )
    return attrs.evolve(retention, decisions=decisions)


def _remove_partials(
    vault: Vault, retention: RetentionPlan, removed: set[str], now: datetime, running: set[str]
) -> int:
    """Remove leftovers of interrupted writes (temporary files, unfinished multipart uploads,
    empty folders).

    Those of a removed backup go with it; others only once their backup id is past the grace
    period, since a running backup's unfinished writes look exactly the same, and never those
    of a backup a live run holds the lease of.
    """
    prefix = f"{vault.name}/backups/"
    grace = retention.policy.incomplete_grace.delta
    count = 0
    for name in vault.sink.list_partials(prefix):
        # Partial names are opaque but begin with the key being written: <name>/backups/<id>/…
        backup_id = name[len(prefix) :].partition("/")[0] if name.startswith(prefix) else ""
        started = started_from_id(backup_id)
        stale = backup_id in removed or (started is not None and now - started >= grace)
        stale = stale and backup_id not in running
        if not stale:
            continue
        try:
            vault.sink.delete_partial(name)
            count += 1
        except PgVaultError as exc:
            log.warning("could not remove unfinished write %s: %s", name, exc)
    return count


@attrs.define
class _WalView:
    """One listing of the WAL archive, and what the PITR rules need of it."""

    listing: dict[ClusterId, tuple[int, list[StoredWal]]]
    backups: list[BaseBackup]
    unreadable: list[str]
    """Base backups whose manifest does not describe their WAL."""
    states: dict[ClusterId, ArchiveState]
    """Clusters with a base backup, history files read (the PITR rule and the windows)."""

    @classmethod
    def read(cls, config: PipelineConfig, vault: Vault, manifests: Sequence[Manifest]) -> _WalView:
        from pgvault.operations.pitr.plan import SOURCE_TYPE, BaseBackup, PitrRefused, load_state
        from pgvault.transforms.api import DecodeContext
        from pgvault.wal.archive import WalArchive

        archive = WalArchive(vault.sink, vault.name)
        listing = {r.cluster: (r.segment_size, archive.list(r.cluster)) for r in archive.clusters()}
        backups: list[BaseBackup] = []
        unreadable: list[str] = []
        for m in manifests:
            if m.source_type != SOURCE_TYPE:
                continue
            try:
                backups.append(BaseBackup.from_manifest(m))
            except PitrRefused as exc:
                log.warning("%s", exc)
                unreadable.append(m.backup_id)
        states: dict[ClusterId, ArchiveState] = {}
        if backups and listing:
            # History files decide which timelines a backup reaches; reading them needs the key
            # when WAL is encrypted. One that cannot be read makes the promise keep more.
            context = DecodeContext(configured=config.transforms)
            for cluster in sorted({b.cluster for b in backups} & set(listing)):
                size, items = listing[cluster]
                states[cluster] = load_state(archive, cluster, size, context, listing=items)
        return cls(listing, backups, unreadable, states)

    def promise(self, policy: RetentionPolicy, now: datetime) -> PitrKeep | None:
        """The base backups ``pitr_within`` needs (None without it or without base backups)."""
        if policy.pitr_within is None or not self.states:
            return None
        from pgvault.operations.pitr.retention import pitr_keep

        return pitr_keep(
            self.backups,
            self.states,
            policy.pitr_within.delta,
            now,
            within_text=policy.pitr_within.text,
        )

    def plan(
        self,
        retention: RetentionPlan,
        promise: PitrKeep | None,
        in_progress: Sequence[datetime],
        *,
        also_kept: Collection[str] = (),
        windows: bool = False,
    ) -> WalPrune | None:
        """The WAL keep-set for ``retention`` (None: the vault has no WAL); with ``windows``,
        the PITR window before and after too."""
        from pgvault.operations.pitr.retention import wal_keep, without
        from pgvault.operations.pitr.window import timeline_windows

        if not self.listing:
            return None
        kept = {d.backup_id for d in retention.kept if d.complete} | set(also_kept)
        starts = [d.started_at for d in retention.kept if d.complete and d.started_at is not None]
        doubtful = [i for i in self.unreadable if i in kept]
        keep = wal_keep(
            {c: (size, items) for c, (size, items) in self.listing.items()},
            self.backups,
            kept,
            needed=None if promise is None else set(promise.reasons),
            oldest_kept=min(starts) if starts else None,
            margin=retention.policy.keep_wal_within.delta
            if retention.policy.keep_wal_within is not None
            else None,
            in_progress=in_progress,
            doubtful=f"the manifest of kept base backup {doubtful[0]} does not describe its WAL"
            if doubtful
            else None,
        )
        times = [h.horizon_time for h in keep.horizons if h.horizon_time is not None]
        before = after = None
        if windows and self.states:
            before = tuple(timeline_windows(self.backups, self.states))
            gone = set(keep.removable)
            after = tuple(
                timeline_windows(
                    [b for b in self.backups if b.backup_id in kept],
                    {c: without(s, gone) for c, s in self.states.items()},
                )
            )
        return WalPrune(
            horizon=min(times) if times else None,
            removable=tuple(i.key for i in keep.removable),
            kept=keep.kept,
            horizons=tuple(h.text for h in keep.horizons),
            window_start=promise.window_start if promise is not None else None,
            before=before,
            after=after,
        )


def _prune_wal(vault: Vault, wal: WalPrune) -> tuple[WalPrune, int]:
    """Remove the WAL files below the horizon, and leftovers of interrupted WAL writes (a WAL
    write takes seconds: one that prune cuts short fails, and PostgreSQL simply retries it)."""
    removed: list[str] = []
    failures: list[str] = []
    for key in wal.removable:
        try:
            vault.sink.delete(key)
            removed.append(key)
        except PgVaultError as exc:
            log.warning("could not remove WAL file %s: %s", key, exc)
            failures.append(f"{key}: {exc}")
    partials = 0
    for name in vault.sink.list_partials(f"{vault.name}/wal/"):
        try:
            vault.sink.delete_partial(name)
            partials += 1
        except PgVaultError as exc:
            log.warning("could not remove unfinished WAL write %s: %s", name, exc)
    if removed:
        log.info("removed %d WAL file(s) stored before %s", len(removed), wal.horizon)
    return attrs.evolve(wal, removed=tuple(removed), failures=tuple(failures)), partials
