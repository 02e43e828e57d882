"""Replacing an existing database (``drop_existing``): the safety backup, and what a failure says.

The drop itself and the new database's creation are in :mod:`pgvault.operations.restore.target`;
the order (check, safety backup, drop, create, load, validate) is
:func:`pgvault.operations.restore.database.restore_database`'s. This module owns what makes the
replace safe: the safety backup taken first, the steps reached (``pgvault_restore_step``), and a
failure message that says what the target now holds and the exact command that brings the old
database back.
"""

from __future__ import annotations

import logging
import shlex
from typing import TYPE_CHECKING

import attrs
import pluggy
import psycopg

from pgvault.exceptions import PgVaultError, RestoreError
from pgvault.operations.restore.target import Created, DatabaseTarget, TargetPlan
from pgvault.plugin.manager import call_hook
from pgvault.settings import RestoreSettings
from pgvault.vault.manifest import Manifest

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.restore")


@attrs.define
class Steps:
    """Where a restore has got to: fires ``pgvault_restore_step`` and remembers what the
    failure message must say."""

    config: PipelineConfig
    manifest: Manifest
    target: DatabaseTarget
    pm: pluggy.PluginManager | None
    safety_id: str | None = None
    dropped: bool = False

    def fire(self, step: str) -> None:
        call_hook(
            "pgvault_restore_step",
            pm=self.pm,
            config=self.config,
            backup_id=self.manifest.backup_id,
            target=self.target.describe(),
            step=step,
            safety_backup_id=self.safety_id,
        )


def safety_backup(
    config: PipelineConfig, manifest: Manifest, target: DatabaseTarget, settings: RestoreSettings
) -> str:
    """Back the database about to be replaced up into the vault (kind ``safety``); its id.

    Fails (nothing replaced) when the backup cannot be taken."""
    from pgvault.engine.pipeline import run
    from pgvault.sources.pg_dump import PgDumpSource
    from pgvault.units import parse_duration
    from pgvault.vault.manifest import utc_now

    conninfo = psycopg.conninfo.make_conninfo(target.dsn, dbname=target.name)
    # The pipeline's own choices that make a backup safe to take hold here too: a lock wait
    # bound (else a session holding a table lock hangs the replace forever), the pg_dump
    # binary, parallel parts, globals. Its filters do not: the safety backup must hold all
    # that the drop removes.
    base = config.source if isinstance(config.source, PgDumpSource) else PgDumpSource()
    safety_source = PgDumpSource(
        dsn=conninfo,
        jobs=base.jobs,
        pg_dump=base.pg_dump,
        lock_wait_timeout=base.lock_wait_timeout,
        globals=base.globals,
        role_passwords=base.role_passwords,
    )
    safety_config = attrs.evolve(config, source=safety_source)
    keep_until = utc_now() + parse_duration(settings.safety_keep)
    log.info("taking a safety backup of %s before replacing it", target.describe())
    try:
        safety = run(
            safety_config,
            kind="safety",
            labels={
                "database": target.name,
                "replaced_by": manifest.backup_id,
                # Retention keeps a safety backup at least this long, whatever the policy says.
                "keep_until": keep_until.isoformat().replace("+00:00", "Z"),
            },
        )
    except PgVaultError as exc:
        raise RestoreError(
            f"safety backup of {target.name!r} failed, so it was not replaced: {exc}"
        ) from exc
    return safety.backup_id


def failure_message(
    config: PipelineConfig,
    manifest: Manifest,
    target: DatabaseTarget,
    plan: TargetPlan,
    steps: Steps,
    created: Created,
    exc: BaseException,
) -> str:
    """What the target holds now, and how to get the old database back when it is gone."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    what = f"restore of {manifest.backup_id} into {target.name!r}"
    roles = f" (and the roles it had created: {', '.join(created.roles)})" if created.roles else ""
    if steps.safety_id is not None and steps.dropped:
        cause = (
            "was interrupted after the old database was dropped"
            if interrupted
            else f"failed after the old database was dropped: {exc}"
        )
        removed = f" The half-restored database{roles} was removed." if created.database else ""
        return (
            f"{what} {cause}.{removed} The old database is in safety backup "
            f"{steps.safety_id}: {_safety_command(config, target, steps.safety_id, plan)}"
        )
    if plan.exists:
        cause = "was interrupted" if interrupted else f"failed: {exc}"
        taken = (
            f" (its safety backup {steps.safety_id} was taken and stays in the vault)"
            if steps.safety_id
            else ""
        )
        return f"{what} {cause}. Database {target.name!r} was not touched{taken}."
    if interrupted:
        return f"{what} was interrupted; the new database{roles} was removed"
    return f"{what} failed, and the new database{roles} was removed: {exc}"


def _safety_command(
    config: PipelineConfig, target: DatabaseTarget, safety_id: str, plan: TargetPlan
) -> str:
    """The exact command that restores the safety backup in place of the target."""
    argv = ["pgvault", "restore", config.where(), safety_id, "--target-db", target.name]
    source_dsn = getattr(config.source, "dsn", None)
    if target.dsn != source_dsn:
        argv += ["--dsn", _without_password(target.dsn)]
    if plan.old_subscriptions:
        argv.append("--subscriptions")
    argv.append("--drop-existing")
    return " ".join(shlex.quote(a) for a in argv)


def _without_password(dsn: str) -> str:
    from psycopg import conninfo as pg_conninfo

    try:
        params = pg_conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<the --dsn you gave>"
    params.pop("password", None)
    return pg_conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
