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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from pgvault.engine.runlock import Lease, live_leases
from pgvault.exceptions import ConfigError, PgVaultError
from pgvault.plugin.manager import call_hook
from pgvault.settings import RetentionPolicy
from pgvault.vault.contents import Vault
from pgvault.vault.retention import RetentionPlan, plan, started_from_id

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.prune")


@attrs.frozen
class PruneFailure:
    """A backup folder the plan removes but the sink refused to delete."""

    backup_id: str
    message: str


@attrs.frozen
class WalPrune:
    """WAL files below the horizon: stored before the oldest kept backup started, less
    ``keep_wal_within``. History files are never removed; files whose age the sink cannot tell
    are kept."""

    horizon: datetime | None
    removable: tuple[str, ...]
    """Keys below the horizon (removed unless a dry run)."""
    kept: int
    removed: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "horizon": _iso(self.horizon) if self.horizon else None,
            "removable": len(self.removable),
            "removed": len(self.removed),
            "kept": self.kept,
            "failures": list(self.failures),
        }


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

    @property
    def leftovers(self) -> tuple[str, ...]:
        """Unfinished backup folders (no manifest, past the grace) this prune cleans, or would."""
        return tuple(d.backup_id for d in self.plan.removed if not d.complete)

    @property
    def ok(self) -> bool:
        """Whether every removal the plan asked for happened (always true on a dry run)."""
        return not self.failures

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
        }


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
    policy = policy or config.retention
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
    running = live_leases(vault)
    retention = _spare_running(
        plan(
            contents.backups,
            policy,
            now,
            incomplete=vault.incomplete(),
            damaged=[d.backup_id for d in contents.damaged],
        ),
        running,
    )
    if dry_run:
        wal_plan = _wal_plan(vault, retention)
        return PruneResult(config.name, retention, dry_run=True, wal=wal_plan)

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
        log.info("removed backup %s (%s)", decision.backup_id, "; ".join(decision.reasons))
    partials = _remove_partials(vault, retention, set(removed), now, set(running))
    wal_plan = _wal_plan(vault, retention)
    if wal_plan is not None:
        wal_plan, wal_partials = _prune_wal(vault, wal_plan)
        partials += wal_partials
    result = PruneResult(
        config.name,
        retention,
        dry_run=False,
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


def _wal_plan(vault: Vault, retention: RetentionPlan) -> WalPrune | None:
    """Which WAL files fall below the horizon (see :class:`WalPrune`); None without WAL."""
    from pgvault.wal.archive import WalArchive
    from pgvault.wal.names import Kind

    archive = WalArchive(vault.sink, vault.name)
    records = archive.clusters()
    if not records:
        return None
    kept = [d.started_at for d in retention.kept if d.complete and d.started_at is not None]
    horizon = None
    if kept:
        margin = retention.policy.keep_wal_within
        horizon = min(kept) - (margin.delta if margin is not None else timedelta(0))
    removable: list[str] = []
    keep = 0
    for record in records:
        for item in archive.list(record.cluster):
            if (
                horizon is not None
                and item.name.kind is not Kind.HISTORY
                and item.modified is not None
                and item.modified < horizon
            ):
                removable.append(item.key)
            else:
                keep += 1
    return WalPrune(horizon, tuple(removable), keep)


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
