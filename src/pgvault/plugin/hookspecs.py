"""Hook specifications: the events pgvault announces to plugins (project name ``pgvault``).

Plugins implement these with ``@pgvault.hookimpl`` and register through the ``pgvault``
entry-point group. Every event hook is a notification: return values are ignored, and an exception
in one implementation is logged and never fails the backup, nor stops the other implementations.
``pgvault_notifier_types`` is the one hook whose results are used. Each hook is documented in
docs/hooks.md and tested in tests/plugin/test_hooks.py (a test there enforces both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pgvault.notify.api import Notifier
    from pgvault.operations.check import CheckResult
    from pgvault.operations.drill import DrillResult
    from pgvault.operations.prune import PruneResult
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.vault.manifest import Manifest

hookspec = pluggy.HookspecMarker("pgvault")
hookimpl = pluggy.HookimplMarker("pgvault")


@hookspec
def pgvault_backup_started(config: PipelineConfig, backup_id: str, kind: str) -> None:
    """A backup run is starting.

    Fires once per run, before the source is started. ``backup_id`` is the id the backup will have
    if it completes. Use it for "started" pings (healthchecks) and run timers. ``kind`` is
    ``"scheduled"`` for the pipeline's own runs and ``"safety"`` for the backup a restore takes of a
    database before replacing it; a monitor of the schedule should ignore the latter.
    """


@hookspec
def pgvault_backup_succeeded(config: PipelineConfig, manifest: Manifest) -> None:
    """A backup completed: its manifest is durable in the vault.

    Fires once per successful run, after the manifest is committed; ``manifest`` is what was
    written (id, sizes, duration, artifacts and digests).
    """


@hookspec
def pgvault_backup_failed(
    config: PipelineConfig, backup_id: str, error: BaseException, kind: str
) -> None:
    """A backup run failed; nothing that looks complete was left in the vault.

    Fires once per failed run, after the run's partial objects were cleaned up. ``error`` is the
    exception that ended the run; ``str(error)`` is the one-line message the CLI prints.
    ``kind`` is as for :func:`pgvault_backup_started`.
    """


@hookspec
def pgvault_drill_succeeded(config: PipelineConfig, result: DrillResult) -> None:
    """A restore drill passed: the backup restored, matched its manifest, and every check held.

    Fires once per drill, after the result is recorded in the vault and the temporary database
    (or cluster) is removed. ``result`` has the backup id, duration and each check's outcome.
    """


@hookspec
def pgvault_drill_failed(config: PipelineConfig, result: DrillResult) -> None:
    """A restore drill failed: restore, validation or a check did not hold.

    Fires once per failed drill, after the result is recorded and the temporary database removed.
    ``result.error`` says what failed, in one line.
    """


@hookspec
def pgvault_restore_step(
    config: PipelineConfig,
    backup_id: str,
    target: str,
    step: str,
    safety_backup_id: str | None,
) -> None:
    """A database restore reached a step; for audit trails and progress reports.

    Fires in order, on the thread that runs the restore: ``checked`` (pre-flight passed;
    nothing was changed yet), ``safety_backup`` (the database being replaced is safe in the
    vault as ``safety_backup_id``; replaces only), ``dropped`` (the old database is gone;
    replaces only), ``created`` (the new database and any missing roles exist), ``loading``
    (the backup's first bytes reached pg_restore or psql), ``validated`` (tables and row counts
    match the manifest; the database's own properties follow). ``target`` is
    ``user@host:port/dbname``. A step that does not come means the restore stopped before it.
    """


@hookspec
def pgvault_prune_done(config: PipelineConfig, result: PruneResult) -> None:
    """A prune (not a dry run) finished.

    Fires once per ``prune``, after every removal was attempted. ``result.plan`` holds the decision
    and its reasons for each backup, ``result.removed`` the ids removed, ``result.failures`` those
    the sink refused to delete (``result.ok`` is false then).
    """


@hookspec
def pgvault_check_failed(config: PipelineConfig, result: CheckResult) -> None:
    """A health check found at least one problem (status WARNING or CRITICAL).

    Fires once per ``check`` whose status is not OK, after the metrics file was updated.
    ``result.status`` is the worst problem's status; ``result.lines()`` is what the CLI prints, one
    problem per line with its figure and threshold.
    """


@hookspec
def pgvault_notifier_types() -> list[type[Notifier]]:
    """The notifier classes a plugin brings, each named by its ``type_name``.

    Called when a config with ``[[notify]]`` tables is loaded. Results combine: the lists of all
    plugins are merged; two plugins registering the same ``type_name`` is an error. Built-in
    notifiers answer it through :class:`pgvault.notify.api.NotifierPlugin`, as a third party's do.
    """
    raise NotImplementedError  # a spec: pluggy calls the implementations, never this body
