"""Bringing backups back: the entry point :func:`restore`, and a pg_dump backup into a database.

Restore never overwrites by accident. A database restore goes into a new database unless told to
replace one (``drop_existing``); then a safety backup of the current database is taken into the
vault first, and if the restore fails after the drop, the error says how to get it back
(:mod:`~pgvault.operations.restore.replace`). A failed restore into a new database drops what it
created. A files restore (:mod:`~pgvault.operations.restore.files`) goes only into an empty or new
folder. Loading the archives is :mod:`~pgvault.operations.restore.loading`; the choices a restore
takes are one :class:`~pgvault.operations.restore.options.RestoreOptions`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pluggy
import psycopg

from pgvault.exceptions import PgVaultError, RestoreError
from pgvault.operations.restore.files import restore_files
from pgvault.operations.restore.loading import (
    Plans,
    check_work_space,
    plan_archives,
    restore_archives,
)
from pgvault.operations.restore.options import RestoreOptions, RestoreResult
from pgvault.operations.restore.parts import PartPlan, PartTargets, plan_parts, restore_planned
from pgvault.operations.restore.replace import Steps, failure_message, safety_backup
from pgvault.operations.restore.selection import RestorePlan, display_name
from pgvault.operations.restore.target import (
    Created,
    DatabaseTarget,
    TargetOptions,
    apply_properties,
    check_target,
    connect_server,
    create_target,
    detach_subscriptions,
    drop_database,
    drop_database_quietly,
    drop_roles,
    shielded,
)

# Validation lives in its own module; its names stay importable from here.
from pgvault.operations.restore.validation import (
    TableCheck,
    ValidationReport,
    validate_database,
)
from pgvault.operations.thaw import ThawOptions, restore_source
from pgvault.plugin.restore_hooks import restore_events
from pgvault.postgres.client import (
    connect,
    exit_description,
    find_binary,
    first_line,
    pipe_into,
    quote_ident,
    split_dsn,
)
from pgvault.postgres.globals import GLOBALS_ROLE, Globals, decode_globals
from pgvault.settings import RestoreSettings
from pgvault.sources.pg_dump import schema_selected, server_major
from pgvault.transforms.api import DecodeContext
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import Manifest
from pgvault.vault.parts import has_parts

if TYPE_CHECKING:
    from pgvault.engine.pipeline import Progress
    from pgvault.pipeline_config import PipelineConfig

__all__ = [
    "DatabaseTarget",
    "RestoreOptions",
    "RestoreResult",
    "RestoreSettings",
    "TableCheck",
    "ValidationReport",
    "database_exists",
    "drop_database_quietly",
    "list_archive",
    "restore",
    "restore_database",
    "restore_files",
    "validate_database",
]

log = logging.getLogger("pgvault.restore")


def database_exists(target: DatabaseTarget, maintenance_db: str | None = None) -> bool:
    """Whether ``target.name`` exists on the target server."""
    conn, _ = connect_server(target, maintenance_db)
    with conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [target.name]).fetchone()
        return row is not None


def restore_database(
    config: PipelineConfig,
    manifest: Manifest,
    target: DatabaseTarget,
    options: RestoreOptions | None = None,
    *,
    settings: RestoreSettings | None = None,
    context: DecodeContext | None = None,
    progress: Progress | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
    **choices: Any,
) -> RestoreResult:
    """Restore pg_dump backup ``manifest`` into database ``target``, then validate it.

    ``options`` (:class:`RestoreOptions`; or its fields as keyword ``choices``) say how.
    Everything that can be checked is checked before the first side effect (see
    :mod:`pgvault.operations.restore.target`). The database must not exist unless
    ``drop_existing`` is set; then a safety backup of it is stored in the vault first (kind
    ``safety``, :mod:`pgvault.operations.restore.replace`), and it is dropped. The new
    database gets the source's encoding, locale and provider (libc
    ``locale`` instead, keeping the encoding, if given); roles the target lacks are created
    from the backup's globals (unless ``create_roles`` is false), never altering existing ones;
    objects go to the tablespaces of ``tablespace_map`` (old name to new) or, with
    ``no_tablespaces``, to the default. Subscriptions are left out unless ``subscriptions``
    (then restored as pg_dump writes them: disabled, not connected). ``tables``/``schemas``
    restore only those tables and schemas, with what they need and what belongs to them (see
    :mod:`pgvault.operations.restore.selection`); a selection that matches nothing is refused
    before the target is touched. After the restore, every table the manifest lists (or every table
    selected) must be present with the recorded row counts (exactly where counted, within
    ``estimate_tolerance`` otherwise); then the database's own properties (comment, ACL,
    settings, connection limit) are applied.

    Materialized views are refreshed by pgvault after pg_restore, with row security on: one
    whose refresh fails is left without data and named in the result's ``warnings``.

    Raises :class:`RestoreError` (or the integrity/transform error that stopped the restore) with
    a message that says what the target now holds; an interrupt (Ctrl-C, SIGTERM) propagates
    with that message as a note (``exc.__notes__``).
    """
    opts = RestoreOptions.of(options, choices)
    if manifest.source_type != "pg_dump":
        raise RestoreError(
            f"backup {manifest.backup_id} is a {manifest.source_type!r} backup; "
            "restore it with --target-dir"
        )
    fmt = manifest.source.get("format", "custom")
    if opts.partial and fmt == "plain":
        raise RestoreError(
            f"backup {manifest.backup_id} is a plain SQL dump: --table/--schema need a custom "
            "or tar archive"
        )
    if opts.partial and opts.drop_existing:
        # Replacing a database with part of a backup would leave only that part of it.
        raise RestoreError(
            f"--drop-existing replaces all of database {target.name!r}: a partial restore "
            "(--table/--schema) would leave nothing in it but the selection; restore the "
            "selection into a new database and copy from there"
        )
    mapping = opts.tablespace_map
    if mapping and opts.no_tablespaces:
        raise RestoreError("give --tablespace-map or --no-tablespaces, not both")
    if mapping and fmt != "custom":
        raise RestoreError(
            f"backup {manifest.backup_id} is a {fmt} dump: --tablespace-map needs a custom "
            "archive; create the tablespace on the target"
            + (", or use --no-tablespaces" if fmt == "tar" else "")
        )
    if opts.no_tablespaces and fmt == "plain":
        raise RestoreError(
            f"backup {manifest.backup_id} is a plain SQL dump: --no-tablespaces needs a custom "
            "or tar archive; create the tablespace on the target"
        )
    settings = settings or getattr(config, "restore", None) or RestoreSettings()
    # --work-dir wins over [restore] work_dir.
    opts = attrs.evolve(opts, work_dir=opts.work_dir or settings.work_dir)
    # The target's address is the user's input: a malformed one is refused before any reading.
    split_dsn(target.dsn)
    vault = Vault.from_config(config)
    context = context or DecodeContext(configured=config.transforms)
    # Keys and formats are checked before the target is touched: a missing key writes nothing.
    vault.decoders(manifest, context)
    # So is the selection (one that names nothing creates nothing), from the archives' TOCs.
    plans: Plans | None = None
    if fmt != "plain":
        try:
            plans = plan_archives(vault, manifest, context, opts.tables, opts.schemas)
        except RestoreError:
            raise
        except PgVaultError as exc:  # damage or a wrong key, caught before the target is touched
            raise RestoreError(
                f"restore of {manifest.backup_id} into {target.name!r} did not start, nothing "
                f"was changed: {exc}"
            ) from exc
    globals_ = _read_globals(vault, manifest, context)
    check_work_space(manifest, opts.jobs, opts.work_dir, fmt)
    target_opts = TargetOptions(
        drop_existing=opts.drop_existing,
        no_owner=opts.no_owner,
        no_privileges=opts.no_privileges,
        role=opts.role,
        create_roles=opts.create_roles,
        tablespace_map=mapping,
        no_tablespaces=opts.no_tablespaces,
        locale=opts.locale,
        maintenance_db=settings.maintenance_db,
    )
    plan = check_target(manifest, target, target_opts, globals_)
    steps = Steps(config, manifest, target, plugin_manager)
    created = Created()
    notes = list(plan.notes)
    warnings: list[str] = []
    try:
        steps.fire("checked")
        if plan.exists:
            steps.safety_id = safety_backup(config, manifest, target, settings)
            steps.fire("safety_backup")
            notes += drop_database(target, plan.maintenance_db)
            steps.dropped = True
            steps.fire("dropped")
        create_target(plan, target_opts, created)
        steps.fire("created")
        _prepare_new_database(manifest, target, plans)
        restore_archives(
            vault, manifest, target, opts, plans, context, progress, lambda: steps.fire("loading")
        )
        notes += _subscriptions_left_out(manifest, target, fmt, opts.subscriptions)
        if plans is not None:
            warnings += plans.main.left_out
            warnings += _refresh_materialized_views(target, plans.main, opts.role)
        for warning in warnings:  # logged: the CLI, a drill's log and log files all show them
            log.warning("%s", warning)
        selected = set(plans.main.tables) if plans is not None and plans.main.partial else None
        report = validate_database(manifest, target, settings, selected=selected)
        if not report.ok:
            raise RestoreError(
                f"restored database does not match backup {manifest.backup_id}: "
                f"{report.describe_failures()}"
            )
        steps.fire("validated")
        notes += apply_properties(plan, no_owner=opts.no_owner, no_privileges=opts.no_privileges)
    except BaseException as exc:
        with shielded(swallow=True):
            if created.database:
                drop_database_quietly(target, plan.maintenance_db)
            drop_roles(target, created.roles, plan.maintenance_db)
        message = failure_message(config, manifest, target, plan, steps, created, exc)
        if isinstance(exc, KeyboardInterrupt):
            exc.add_note(message)
            raise
        if steps.safety_id is not None or isinstance(exc, PgVaultError):
            raise RestoreError(message) from exc
        raise
    if created.roles:
        log.info("restore of %s created role(s): %s", manifest.backup_id, ", ".join(created.roles))
    return RestoreResult(
        manifest.backup_id,
        target.describe(),
        manifest.raw_size,
        steps.safety_id,
        report,
        tuple(created.roles),
        tuple(notes),
        tuple(warnings),
    )


def _read_globals(vault: Vault, manifest: Manifest, context: DecodeContext) -> Globals | None:
    """The backup's globals artifact, parsed; ``None`` for a backup without one."""
    art = next((a for a in manifest.artifacts if a.role == GLOBALS_ROLE), None)
    if art is None:
        return None
    data = b"".join(vault.decoded(manifest, art.path, context))
    return decode_globals(data, where=f"backup {manifest.backup_id}: artifact {art.path}")


def _subscriptions_left_out(
    manifest: Manifest, target: DatabaseTarget, fmt: str, subscriptions: bool
) -> list[str]:
    if subscriptions:
        return []
    if fmt == "plain":  # psql cannot leave them out: detach what the script created
        names = [name for name, _slot in detach_subscriptions(target)]
    else:
        names = [str(n) for n in manifest.source.get("subscriptions") or []]
    if not names:
        return []
    return [
        f"subscription(s) {', '.join(names)} not restored, so that no copy ever connects to "
        "a publisher (--subscriptions restores them disabled)"
    ]


def _prepare_new_database(manifest: Manifest, target: DatabaseTarget, plans: Plans | None) -> None:
    """Make the fresh database accept the dump.

    A dump that creates schema ``public`` itself (one limited with ``schemas`` that selects it)
    collides with the empty one every new database has: drop that one first.
    """
    if plans is not None and plans.main.partial:
        creates_public = plans.main.creates_public
    else:
        patterns = manifest.source.get("schemas") or []
        creates_public = bool(patterns) and schema_selected("public", patterns)
    if creates_public:
        with connect(target.dsn, dbname=target.name) as conn:
            conn.execute("DROP SCHEMA IF EXISTS public")


def _refresh_materialized_views(
    target: DatabaseTarget, plan: RestorePlan, role: str | None
) -> list[str]:
    """Populate the restored materialized views, in the archive's order; a warning for each one
    that cannot be.

    pg_restore refreshes them with ``row_security = off``, which fails on a view over a table
    whose owner is subject to its own policies (FORCE ROW LEVEL SECURITY); with ``--exit-on-error``
    that would drop the whole restore. Here row security stays on, as when the view was first
    populated: REFRESH runs as the view's owner, who sees the rows the policies give it.
    """
    warnings: list[str] = []
    if not plan.refreshes:
        return warnings
    with connect(target.dsn, dbname=target.name) as conn:
        if role:
            conn.execute(f"SET ROLE {quote_ident(role)}")
        for entry in plan.refreshes:
            name = f"{quote_ident(entry.namespace)}.{quote_ident(entry.tag)}"
            try:
                conn.execute(f"REFRESH MATERIALIZED VIEW {name}")
            except psycopg.Error as exc:
                shown = display_name(entry.namespace, entry.tag)
                warnings.append(
                    f"materialized view {shown} was restored without its data: its refresh "
                    f"failed: {first_line(str(exc))} (run REFRESH MATERIALIZED VIEW {shown} "
                    "once that is fixed)"
                )
    return warnings


def list_archive(
    config: PipelineConfig, manifest: Manifest, context: DecodeContext | None = None
) -> str:
    """The table of contents of a pg_dump backup (``pg_restore --list`` of each archive)."""
    if manifest.source_type != "pg_dump" or manifest.source.get("format") == "plain":
        raise RestoreError(
            f"backup {manifest.backup_id} has no archive table of contents "
            "(only custom and tar pg_dump backups do)"
        )
    vault = Vault.from_config(config)
    context = context or DecodeContext(configured=config.transforms)
    pg_restore = find_binary("pg_restore", server_major=server_major(manifest.source))
    out: list[str] = []
    for art in manifest.artifacts:
        if art.role == GLOBALS_ROLE:
            data = b"".join(vault.decoded(manifest, art.path, context))
            found = decode_globals(data, where=f"artifact {art.path}")
            out.append(
                f";\n; artifact {art.path} ({art.role}): roles {', '.join(found.roles) or '-'}; "
                f"tablespaces {', '.join(found.tablespaces) or '-'}\n"
            )
            continue
        chunks = vault.decoded(manifest, art.path, context)
        rc, text, err = pipe_into([pg_restore, "--list"], chunks, {}, keep_stdout=True)
        chunks.close()  # the TOC is at the start; the rest need not be decoded
        if rc != 0:
            raise RestoreError(exit_description(pg_restore, rc, err))
        out.append(f";\n; artifact {art.path} ({art.role})\n{text}")
    return "".join(out)


@restore_events  # the restore hooks and [[hook]] commands around the entry point (issue 16)
def restore(
    config: PipelineConfig,
    ref: str = "latest",
    options: RestoreOptions | None = None,
    *,
    target_db: str | None = None,
    target_dir: Path | None = None,
    dsn: str | None = None,
    before: datetime | None = None,
    progress: Progress | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
    source: str | None = None,
    thaw: ThawOptions | None = None,
    target_dbs: Mapping[str, str] | None = None,
    target_dirs: Mapping[str, Path] | None = None,
    **choices: Any,
) -> RestoreResult:
    """Restore backup ``ref`` (id, id prefix or ``latest``) of ``config``'s vault.

    How is ``options`` (:class:`RestoreOptions`), or its fields given as keywords (``jobs=4,
    drop_existing=True``, ``tables=(...)``, ``identities=(...)`` …), which override ``options``.

    With several destinations, ``latest`` is the newest any holds, read from the first with a
    usable copy (or from destination ``source``); ``thaw`` thaws an archived copy first (see
    :func:`pgvault.operations.thaw.restore_source`).

    ``before`` picks instead the newest complete backup started at or before that time. pg_dump
    backups go into the new database ``target_db`` on the server of ``dsn`` (default: the config
    source's server); files backups go under ``target_dir`` (see :func:`restore_files` for
    ``allow_outside_symlinks``). See :func:`restore_database`.

    A backup of parts (a set, or many databases) restores every part, or those of
    ``options.parts``, each into its own target: ``target_dbs``/``target_dirs`` name a part's
    database or folder, ``target_db``/``target_dir`` serve the only database or files part
    restored (several files parts go under ``target_dir/PART``), and a database part goes by
    default into a database of its own name (see :mod:`pgvault.operations.restore.parts`). The
    result then lists each part's own result in ``parts``.
    """
    opts = RestoreOptions.of(options, choices)
    # --- several destinations, archive classes (issue 15)
    config, manifest = restore_source(config, ref, before, source=source, thaw_options=thaw)
    # --- end
    context = DecodeContext(configured=config.transforms, identities=opts.identities)
    # --- backups of parts (issue 15)
    targets = PartTargets(target_db, target_dbs or {}, target_dir, target_dirs or {}, dsn)
    if has_parts(manifest):
        plans = plan_parts(config, manifest, opts.parts, targets, drop_existing=opts.drop_existing)

        def restore_one(plan: PartPlan) -> RestoreResult:
            if plan.folder is not None:
                return restore_files(
                    plan.config,
                    plan.manifest,
                    plan.folder,
                    allow_outside_symlinks=opts.allow_outside_symlinks,
                    context=context,
                    progress=progress,
                )
            assert plan.database is not None
            return restore_database(
                plan.config,
                plan.manifest,
                plan.database,
                opts,
                context=context,
                progress=progress,
                plugin_manager=plugin_manager,
            )

        return restore_planned(manifest, plans, restore_one)
    if opts.parts or targets.target_dbs or targets.target_dirs:
        raise RestoreError(
            f"backup {manifest.backup_id} has no parts: --part and PART=... targets are for "
            "backups of several sources or databases"
        )
    # --- end
    if manifest.source_type == "files":
        if target_dir is None:
            raise RestoreError(f"backup {manifest.backup_id} holds files: give --target-dir")
        return restore_files(
            config,
            manifest,
            target_dir,
            allow_outside_symlinks=opts.allow_outside_symlinks,
            context=context,
            progress=progress,
        )
    if target_db is None:
        raise RestoreError(f"backup {manifest.backup_id} holds a database: give --target-db")
    if dsn is None:
        dsn = getattr(config.source, "dsn", None)
        if dsn is None:
            raise RestoreError(
                "the config's source is not pg_dump: give --dsn for the target server"
            )
    return restore_database(
        config,
        manifest,
        DatabaseTarget(dsn, target_db),
        opts,
        context=context,
        progress=progress,
        plugin_manager=plugin_manager,
    )
