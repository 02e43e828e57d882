"""Bringing backups back: pg_dump archives into a database, files archives into a folder.

Restore never overwrites by accident. A database restore goes into a new database unless told to
replace one (``drop_existing``); then a safety backup of the current database is taken into the
vault first, and if the restore fails after the drop, the error says how to get it back. A failed
restore into a new database drops what it created. A files restore goes only into an empty or new
folder.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import attrs
import pluggy
import psycopg

from pgvault.exceptions import ArchiveFormatError, PgVaultError, RestoreError
from pgvault.operations.restore.selection import RestorePlan, display_name, plan_restore
from pgvault.operations.restore.target import (
    Created,
    DatabaseTarget,
    TargetOptions,
    TargetPlan,
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
from pgvault.operations.restore.untar import TarExtractor
from pgvault.plugin.manager import call_hook
from pgvault.postgres.archive import ArchiveToc, fill_data_offsets, map_tablespaces, read_toc_stream
from pgvault.postgres.client import (
    _first_line,
    connect,
    exit_description,
    find_binary,
    pipe_into,
    quote_ident,
    split_dsn,
)
from pgvault.postgres.globals import GLOBALS_ROLE, Globals, decode_globals
from pgvault.settings import RestoreSettings
from pgvault.sources.pg_dump import schema_selected, server_major
from pgvault.transforms.api import DecodeContext
from pgvault.vault.contents import Vault, raise_if_damaged
from pgvault.vault.manifest import Manifest

if TYPE_CHECKING:
    from pgvault.engine.pipeline import Progress
    from pgvault.pipeline_config import PipelineConfig

__all__ = [
    "DatabaseTarget",
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


@attrs.frozen
class RestoreResult:
    """What a restore did."""

    backup_id: str
    target: str
    """The database (``user@host:port/db``) or folder restored into."""
    raw_bytes: int
    safety_backup_id: str | None = None
    """Id of the safety backup taken before replacing an existing database."""
    validation: ValidationReport | None = None
    """Tables compared with the manifest (database restores)."""
    created_roles: tuple[str, ...] = ()
    """Roles the target server lacked and the restore created from the backup's globals."""
    notes: tuple[str, ...] = ()
    """What was left out or refused (a setting of a missing role, subscriptions not restored,
    a replication slot left on a publisher), one line each."""
    warnings: tuple[str, ...] = ()
    """What the restore could not bring back, by name: materialized views left without their
    data, objects a partial restore left out because they need tables it does not include."""


ESTIMATE_SLACK_ROWS = 1000
"""Row differences this small never fail an estimate comparison (small tables' estimates jump)."""


@attrs.frozen
class TableCheck:
    """One table compared after a restore: what the manifest recorded and what is there now."""

    schema: str
    name: str
    recorded: int | None
    restored: int | None
    exact: bool
    ok: bool
    reason: str = ""

    @property
    def qualified(self) -> str:
        """``schema.name``."""
        return f"{self.schema}.{self.name}"


@attrs.frozen
class ValidationReport:
    """Restored database against the manifest: every table present, counts as recorded."""

    tables: tuple[TableCheck, ...]

    @property
    def ok(self) -> bool:
        """Whether every table passed."""
        return all(t.ok for t in self.tables)

    @property
    def failures(self) -> tuple[TableCheck, ...]:
        """The tables that did not pass."""
        return tuple(t for t in self.tables if not t.ok)

    def describe_failures(self) -> str:
        """``public.users: missing; sales.orders: 4999 rows, backup counted 5000 exactly``."""
        return "; ".join(f"{t.qualified}: {t.reason}" for t in self.failures)


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
    *,
    jobs: int = 1,
    drop_existing: bool = False,
    no_owner: bool = False,
    no_privileges: bool = False,
    role: str | None = None,
    tables: tuple[str, ...] = (),
    schemas: tuple[str, ...] = (),
    create_roles: bool = True,
    tablespace_map: Mapping[str, str] | None = None,
    no_tablespaces: bool = False,
    subscriptions: bool = False,
    locale: str | None = None,
    settings: RestoreSettings | None = None,
    context: DecodeContext | None = None,
    progress: Progress | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
) -> RestoreResult:
    """Restore pg_dump backup ``manifest`` into database ``target``, then validate it.

    Everything that can be checked is checked before the first side effect (see
    :mod:`pgvault.operations.restore.target`). The database must not exist unless ``drop_existing``
    is
    set; then a safety backup of it is stored in the vault first (kind ``safety``), and it is
    dropped. The new database gets the source's encoding, locale and provider (libc
    ``locale`` instead, keeping the encoding, if given); roles the target lacks are created
    from the backup's globals (unless ``create_roles`` is false), never altering existing ones;
    objects go to the tablespaces of ``tablespace_map`` (old name to new) or, with
    ``no_tablespaces``, to the default. Subscriptions are left out unless ``subscriptions``
    (then restored as pg_dump writes them: disabled, not connected). ``tables``/``schemas``
    restore only those tables and schemas, with what they need and what belongs to them (see
    :mod:`pgvault.operations.restore.selection`); a selection that matches nothing is refused
    before the
    target is touched. After the restore, every table the manifest lists (or every table
    selected) must be present with the recorded row counts (exactly where counted, within
    ``estimate_tolerance`` otherwise); then the database's own properties (comment, ACL,
    settings, connection limit) are applied.

    Materialized views are refreshed by pgvault after pg_restore, with row security on: one
    whose refresh fails is left without data and named in the result's ``warnings``.

    Raises :class:`RestoreError` (or the integrity/transform error that stopped the restore) with
    a message that says what the target now holds; an interrupt (Ctrl-C, SIGTERM) propagates
    with that message as a note (``exc.__notes__``).
    """
    if manifest.source_type != "pg_dump":
        raise RestoreError(
            f"backup {manifest.backup_id} is a {manifest.source_type!r} backup; "
            "restore it with --target-dir"
        )
    fmt = manifest.source.get("format", "custom")
    if (tables or schemas) and fmt == "plain":
        raise RestoreError(
            f"backup {manifest.backup_id} is a plain SQL dump: --table/--schema need a custom "
            "or tar archive"
        )
    if (tables or schemas) and drop_existing:
        # Replacing a database with part of a backup would leave only that part of it.
        raise RestoreError(
            f"--drop-existing replaces all of database {target.name!r}: a partial restore "
            "(--table/--schema) would leave nothing in it but the selection; restore the "
            "selection into a new database and copy from there"
        )
    mapping = dict(tablespace_map or {})
    if mapping and no_tablespaces:
        raise RestoreError("give --tablespace-map or --no-tablespaces, not both")
    if mapping and fmt != "custom":
        raise RestoreError(
            f"backup {manifest.backup_id} is a {fmt} dump: --tablespace-map needs a custom "
            "archive; create the tablespace on the target"
            + (", or use --no-tablespaces" if fmt == "tar" else "")
        )
    if no_tablespaces and fmt == "plain":
        raise RestoreError(
            f"backup {manifest.backup_id} is a plain SQL dump: --no-tablespaces needs a custom "
            "or tar archive; create the tablespace on the target"
        )
    settings = settings or getattr(config, "restore", None) or RestoreSettings()
    # The target's address is the user's input: a malformed one is refused before any reading.
    split_dsn(target.dsn)
    vault = Vault.from_config(config)
    context = context or DecodeContext(configured=config.transforms)
    # Keys and formats are checked before the target is touched: a missing key writes nothing.
    vault.decoders(manifest, context)
    # So is the selection (one that names nothing creates nothing), from the archives' TOCs.
    plans: _Plans | None = None
    if fmt != "plain":
        try:
            plans = _plan(vault, manifest, context, tables, schemas)
        except RestoreError:
            raise
        except PgVaultError as exc:  # damage or a wrong key, caught before the target is touched
            raise RestoreError(
                f"restore of {manifest.backup_id} into {target.name!r} did not start, nothing "
                f"was changed: {exc}"
            ) from exc
    globals_ = _read_globals(vault, manifest, context)
    _check_work_space(manifest, jobs, settings.work_dir, fmt)
    opts = TargetOptions(
        drop_existing=drop_existing,
        no_owner=no_owner,
        no_privileges=no_privileges,
        role=role,
        create_roles=create_roles,
        tablespace_map=mapping,
        no_tablespaces=no_tablespaces,
        locale=locale,
        maintenance_db=settings.maintenance_db,
    )
    plan = check_target(manifest, target, opts, globals_)
    steps = _Steps(config, manifest, target, plugin_manager)
    created = Created()
    notes = list(plan.notes)
    warnings: list[str] = []
    try:
        steps.fire("checked")
        if plan.exists:
            steps.safety_id = _safety_backup(config, manifest, target, settings)
            steps.fire("safety_backup")
            notes += drop_database(target, plan.maintenance_db)
            steps.dropped = True
            steps.fire("dropped")
        create_target(plan, opts, created)
        steps.fire("created")
        _prepare_new_database(manifest, target, plans)
        options = _Options(
            jobs,
            no_owner,
            no_privileges,
            role,
            settings.work_dir,
            plans,
            mapping,
            no_tablespaces,
            subscriptions,
        )
        _restore_archives(
            vault, manifest, target, options, context, progress, lambda: steps.fire("loading")
        )
        notes += _subscriptions_left_out(manifest, target, fmt, subscriptions)
        if plans is not None:
            warnings += plans.main.left_out
            warnings += _refresh_materialized_views(target, plans.main, role)
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
        notes += apply_properties(plan, no_owner=no_owner, no_privileges=no_privileges)
    except BaseException as exc:
        with shielded(swallow=True):
            if created.database:
                drop_database_quietly(target, plan.maintenance_db)
            drop_roles(target, created.roles, plan.maintenance_db)
        message = _failure_message(config, manifest, target, plan, steps, created, exc)
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


@attrs.define
class _Steps:
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


def _failure_message(
    config: PipelineConfig,
    manifest: Manifest,
    target: DatabaseTarget,
    plan: TargetPlan,
    steps: _Steps,
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


def _check_work_space(manifest: Manifest, jobs: int, work_dir: Path | None, fmt: str) -> None:
    """Fail before any side effect when a parallel restore's work file cannot fit."""
    if jobs <= 1 or fmt != "custom":
        return
    main = next((a for a in manifest.artifacts if a.role == "main"), None)
    if main is not None:
        _free_space(work_dir, main.raw_size, manifest)


def validate_database(
    manifest: Manifest,
    target: DatabaseTarget,
    settings: RestoreSettings | None = None,
    *,
    selected: Collection[tuple[str, str]] | None = None,
) -> ValidationReport:
    """Compare the restored database with the tables the manifest recorded at backup time.

    Tables counted exactly at backup time are counted again and must match exactly; the others
    are ANALYZEd (which samples, so it is cheap on large tables) and their estimate compared with
    the recorded one within ``estimate_tolerance`` (and ``ESTIMATE_SLACK_ROWS``). A partitioned
    table is counted through itself, so its rows are those of every partition still attached;
    its estimate is the sum of its leaf partitions'. With ``selected`` (``(schema, name)``
    pairs), exactly those tables are expected: each must be present, also one the manifest does
    not record (a partitioned table in a backup older than pgvault recording them).
    """
    settings = settings or RestoreSettings()
    recorded = manifest.source.get("tables", [])
    expected = [t for t in recorded if selected is None or (t["schema"], t["name"]) in selected]
    if selected is not None:
        known = {(t["schema"], t["name"]) for t in recorded}
        expected += [
            {"schema": s, "name": n, "rows": None, "exact": False}
            for s, n in sorted(selected)
            if (s, n) not in known
        ]
    # Partitioned tables last: their estimates add up their partitions', ANALYZEd first.
    expected.sort(key=lambda t: bool(t.get("partitioned")))
    analyzed: set[int] = set()
    checks: list[TableCheck] = []
    with connect(target.dsn, dbname=target.name) as conn:
        present = {
            (str(s), str(n)): int(str(oid))
            for s, n, oid in conn.execute(
                "SELECT n.nspname, c.relname, c.oid::bigint FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p')"
            ).fetchall()
        }
        for t in expected:
            schema, name, rows, exact = t["schema"], t["name"], t.get("rows"), t.get("exact")
            key = (schema, name)
            ident = f"{quote_ident(schema)}.{quote_ident(name)}"
            if key not in present:
                checks.append(TableCheck(schema, name, rows, None, bool(exact), False, "missing"))
                continue
            if exact:
                row = conn.execute(f"SELECT count(*) FROM {ident}").fetchone()  # noqa: S608
                actual = int(str(row[0])) if row else 0
                ok = actual == rows
                reason = "" if ok else f"{actual} rows, the backup counted {rows} exactly"
                checks.append(TableCheck(schema, name, rows, actual, True, ok, reason))
                continue
            opinions = _recorded_estimates(rows, t.get("live_rows"))
            if not opinions:  # no statistics at backup time: nothing to compare
                checks.append(TableCheck(schema, name, None, None, False, True))
                continue
            if t.get("partitioned"):
                estimate = _partitions_estimate(conn, present[key], analyzed)
            else:
                conn.execute(f"ANALYZE {ident}")
                analyzed.add(present[key])
                est_row = conn.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s", [present[key]]
                ).fetchone()
                estimate = max(int(str(est_row[0])), 0) if est_row else 0
            tolerance = settings.estimate_tolerance
            # Either estimate will do: each goes wrong in its own way (see pg_dump's _ESTIMATE
            # and live_rows), and a good restore must not fail, and be dropped, for stale stats.
            ok = any(abs(estimate - r) <= max(ESTIMATE_SLACK_ROWS, tolerance * r) for r in opinions)
            recorded = " or ".join(str(r) for r in opinions)
            reason = (
                ""
                if ok
                else f"about {estimate} rows, the backup estimated {recorded} "
                f"(tolerance {tolerance:.0%})"
            )
            checks.append(TableCheck(schema, name, opinions[0], estimate, False, ok, reason))
    return ValidationReport(tuple(checks))


def _partitions_estimate(
    conn: psycopg.Connection[tuple[object, ...]], oid: int, analyzed: set[int]
) -> int:
    """The estimated rows of partitioned table ``oid``: the sum over its attached leaf
    partitions, each ANALYZEd unless validation did already."""
    leaves = [
        int(str(r[0]))
        for r in conn.execute(
            "SELECT relid::oid::bigint FROM pg_partition_tree(%s::oid) WHERE isleaf", [oid]
        ).fetchall()
    ]
    for leaf in leaves:
        if leaf not in analyzed:
            conn.execute(f"ANALYZE {_regclass_name(conn, leaf)}")
            analyzed.add(leaf)
    row = conn.execute(
        "SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class "
        "WHERE oid = ANY(%s::oid[])",
        [leaves],
    ).fetchone()
    return int(str(row[0])) if row else 0


def _regclass_name(conn: psycopg.Connection[tuple[object, ...]], oid: int) -> str:
    row = conn.execute(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s::oid",
        [oid],
    ).fetchone()
    assert row is not None
    return str(row[0])


def _recorded_estimates(rows: object, live_rows: object) -> list[int]:
    """The estimates a backup recorded for a table: the planner's, then the statistics
    system's live-row count. A live count of zero beside no planner estimate is left out: it is
    what a stats reset, a crash or a standby shows for a table of any size."""
    opinions = [int(str(rows))] if rows is not None else []
    if live_rows is not None and (opinions or int(str(live_rows)) > 0):
        opinions.append(int(str(live_rows)))
    return opinions


def _safety_backup(
    config: PipelineConfig, manifest: Manifest, target: DatabaseTarget, settings: RestoreSettings
) -> str:
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


def _prepare_new_database(manifest: Manifest, target: DatabaseTarget, plans: _Plans | None) -> None:
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


@attrs.frozen
class _Plans:
    """The restore plan, and the archives' tables of contents it was made from."""

    main: RestorePlan
    main_toc: ArchiveToc | None
    """None when the archive's TOC could not be read: pg_restore then gets no list."""
    parts: dict[str, ArchiveToc]
    """Data archives' TOCs, by artifact path (read for partial restores only)."""

    def main_list(self) -> str | None:
        """The main archive's ``--use-list``, None to restore it whole."""
        if self.main_toc is None:
            return None
        if not self.main.partial and not self.main.refreshes:
            return None  # nothing to leave out: pg_restore's own order, no list
        return self.main.use_list(self.main_toc)

    def part_list(self, path: str) -> str | None:
        """A data archive's ``--use-list``; ``""`` when it holds nothing to restore."""
        if not self.main.partial:
            return None
        return self.main.data_use_list(self.parts[path]) or ""


def _read_toc(vault: Vault, manifest: Manifest, path: str, context: DecodeContext) -> ArchiveToc:
    chunks = vault.decoded(manifest, path, context)
    try:
        return read_toc_stream(chunks, name=f"artifact {path}")
    finally:
        chunks.close()  # the TOC is at the start; the restore reads the whole artifact later


def _plan(
    vault: Vault,
    manifest: Manifest,
    context: DecodeContext,
    tables: tuple[str, ...],
    schemas: tuple[str, ...],
) -> _Plans:
    """Read the archives' tables of contents and plan the restore (see restore_selection)."""
    main = next(a for a in manifest.artifacts if a.role == "main")
    partial = bool(tables or schemas)
    try:
        toc = _read_toc(vault, manifest, main.path, context)
    except ArchiveFormatError as exc:
        if partial:
            raise RestoreError(
                f"backup {manifest.backup_id}: a partial restore needs the archive's table of "
                f"contents, which pgvault cannot read: {exc}"
            ) from None
        # A whole restore does not need it: pg_restore judges the archive itself.
        log.warning("restoring %s without a list: %s", manifest.backup_id, exc)
        return _Plans(RestorePlan(frozenset(), partial=False), None, {})
    plan = plan_restore(toc, tables=tables, schemas=schemas, backup_id=manifest.backup_id)
    parts = {}
    if partial:
        for art in manifest.artifacts:
            if art.role == "data":
                parts[art.path] = _read_toc(vault, manifest, art.path, context)
    return _Plans(plan, toc, parts)


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
                    f"failed: {_first_line(str(exc))} (run REFRESH MATERIALIZED VIEW {shown} "
                    "once that is fixed)"
                )
    return warnings


@attrs.frozen
class _Options:
    jobs: int
    no_owner: bool
    no_privileges: bool
    role: str | None
    work_dir: Path | None
    plans: _Plans | None
    tablespace_map: Mapping[str, str] = attrs.field(factory=dict)
    no_tablespaces: bool = False
    subscriptions: bool = False


def _restore_archives(
    vault: Vault,
    manifest: Manifest,
    target: DatabaseTarget,
    opts: _Options,
    context: DecodeContext,
    progress: Progress | None,
    on_loading: Callable[[], None] | None = None,
) -> None:
    fmt = manifest.source.get("format", "custom")
    major = server_major(manifest.source)
    conninfo, env = target.conninfo
    main = next(a for a in manifest.artifacts if a.role == "main")
    data_parts = [a for a in manifest.artifacts if a.role == "data"]

    pending = [on_loading] if on_loading is not None else []

    def stream(path: str) -> Iterator[bytes]:
        chunks: Iterator[bytes] = vault.decoded(manifest, path, context)
        if opts.tablespace_map and path == main.path:
            chunks = map_tablespaces(chunks, opts.tablespace_map, where=f"artifact {path}")
        for chunk in chunks:
            if progress is not None:
                progress.advance(raw=len(chunk))
            yield chunk
            if pending:  # the first bytes have reached the tool: the load is under way
                pending.pop()()

    if fmt == "plain":
        psql = find_binary("psql", server_major=major)
        argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password", f"--dbname={conninfo}"]
        if opts.role:
            argv.insert(1, f"--command=SET ROLE {quote_ident(opts.role)}")
        _run_tool(argv, stream(main.path), env)
        return

    pg_restore = find_binary("pg_restore", server_major=major)
    base = [pg_restore, f"--dbname={conninfo}", "--exit-on-error", "--no-password"]
    if opts.no_owner:
        base.append("--no-owner")
    if opts.no_privileges:
        base.append("--no-privileges")
    if opts.role:
        base.append(f"--role={opts.role}")
    if opts.no_tablespaces:
        base.append("--no-tablespaces")
    if not opts.subscriptions:
        base.append("--no-subscriptions")
    with tempfile.TemporaryDirectory(prefix="pgvault-lists-", dir=opts.work_dir) as lists:
        plans = opts.plans
        main_list = plans.main_list() if plans is not None else None
        main_base = [*base, *_use_list(Path(lists) / "main.list", main_list)]
        parts: list[tuple[str, list[str]]] = []
        for i, part in enumerate(data_parts):
            text = plans.part_list(part.path) if plans is not None else None
            if text == "":
                continue  # a partial restore needs nothing from this data archive
            parts.append((part.path, [*base, *_use_list(Path(lists) / f"data-{i}.list", text)]))
        _restore_pg_archives(main.path, main_base, parts, fmt, opts, stream, env, manifest)


def _use_list(path: Path, text: str | None) -> list[str]:
    """pg_restore's ``--use-list`` flag for list ``text`` (written to ``path``), if any."""
    if text is None:
        return []
    path.write_text(text, encoding="utf-8")
    return [f"--use-list={path}"]


def _restore_pg_archives(
    main: str,
    base: list[str],
    parts: list[tuple[str, list[str]]],
    fmt: str,
    opts: _Options,
    stream: Callable[[str], Iterator[bytes]],
    env: dict[str, str],
    manifest: Manifest,
) -> None:
    """Run pg_restore on the main archive (flags ``base``) and the data archives ``parts``
    (path and flags each), in sections and in parallel as ``opts.jobs`` allows."""
    split = any(a.role == "data" for a in manifest.artifacts)
    main_size = next(a.raw_size for a in manifest.artifacts if a.role == "main")
    if split and opts.jobs > 1:
        # A split dump, in parallel: the main archive is read from the vault once, into a work
        # file while its schema is restored; then every data archive loads concurrently; then
        # pg_restore --jobs builds indexes and constraints from the file, several at a time.
        with _work_file(opts.work_dir, main_size, manifest) as (handle, path):
            _run_tool([*base, "--section=pre-data"], _copied(stream(main), handle), env)
            handle.close()
            # No data offsets filled in here (see _fill_data_offsets): pg_restore reads this
            # file's data in one pass, and its post-data needs none, so filling them only costs.
            main_data = ([*base, "--section=data", str(path)], _NONE)
            loads = [(argv, stream(p)) for p, argv in parts]
            _run_concurrently([main_data, *loads], opts.jobs, env)
            _run_tool([*base, "--section=post-data", f"--jobs={opts.jobs}", str(path)], _NONE, env)
        return

    if split:
        # A split dump, one archive at a time, streamed: no work file, no extra disk.
        _run_tool([*base, "--section=pre-data"], stream(main), env)
        _run_tool([*base, "--section=data"], stream(main), env)
        for p, argv in parts:
            _run_tool(argv, stream(p), env)
        _run_tool([*base, "--section=post-data"], stream(main), env)
        return

    if opts.jobs > 1 and fmt == "custom":
        # pg_restore can only work in parallel on a seekable file.
        with _work_file(opts.work_dir, main_size, manifest) as (handle, path):
            for chunk in stream(main):
                handle.write(chunk)
            handle.close()
            _fill_data_offsets(path)
            _run_tool([*base, f"--jobs={opts.jobs}", str(path)], _NONE, env)
        return

    _run_tool(base, stream(main), env)


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


# The input of a tool that reads its archive from a file named in its arguments.
_NONE: Iterator[bytes] = iter(())


def _copied(chunks: Iterator[bytes], handle: IO[bytes]) -> Iterator[bytes]:
    """Pass ``chunks`` on, writing each to ``handle`` too."""
    for chunk in chunks:
        handle.write(chunk)
        yield chunk


def _run_concurrently(
    runs: list[tuple[list[str], Iterator[bytes]]], jobs: int, env: dict[str, str]
) -> None:
    """Run each ``(argv, input)`` with :func:`_run_tool`, ``jobs`` at a time; raise the first
    failure once the others have stopped: the caller then drops the database they load."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_run_tool, argv, chunks, env) for argv, chunks in runs]
        for future in concurrent.futures.as_completed(futures):
            future.result()


def _run_tool(argv: list[str], chunks: Iterator[bytes], env: dict[str, str]) -> None:
    rc, _out, err = pipe_into(argv, chunks, env)
    if rc != 0:
        failure = RestoreError(exit_description(argv[0], rc, err))
        if chunks is not _NONE:  # else the tool read a work file, already read to its end
            raise_if_damaged(chunks, failure)
        raise failure
    # The tool may stop reading before the end (trailing padding): the stream must still have
    # been whole, so drain it to let its digests and size be checked.
    for _ in chunks:
        pass


@contextlib.contextmanager
def _work_file(
    work_dir: Path | None, size: int, manifest: Manifest
) -> Iterator[tuple[IO[bytes], Path]]:
    folder = _free_space(work_dir, size, manifest)
    fd, name = tempfile.mkstemp(prefix="pgvault-restore-", suffix=".pgdump", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle, path
    finally:
        path.unlink(missing_ok=True)


def _free_space(work_dir: Path | None, size: int, manifest: Manifest) -> Path:
    """The work file's folder, once it is known to have room for ``size`` bytes."""
    folder = work_dir or Path(tempfile.gettempdir())
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise RestoreError(f"--work-dir {folder}: {exc.strerror or exc}") from None
    needed = int(size * 1.05) + (64 << 20)
    if free < needed:
        raise RestoreError(
            f"--work-dir {folder} has {free >> 20} MiB free; the parallel restore of "
            f"{manifest.backup_id} needs about {needed >> 20} MiB"
        )
    return folder


def _fill_data_offsets(path: Path) -> None:
    """Give the work file the data offsets pg_dump could not write to its pipe: pg_restore
    --jobs workers then seek to their tables' data instead of each scanning the file for it.

    Measured on the 1.37 GB benchmark dataset, restore --jobs 2 from a single archive took
    9.99 s with the offsets filled against 10.48 s without (medians of 3, alternating).
    """
    try:
        filled = fill_data_offsets(path)
    except OSError as exc:  # a failed write may have left the file half patched
        raise RestoreError(f"cannot update the work file {path}: {exc}") from exc
    if not filled:
        log.debug("work file %s keeps its table of contents: pg_restore will scan it", path)


class _ChunkReader:
    """A read-only file object over an iterator of chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def restore_files(
    config: PipelineConfig,
    manifest: Manifest,
    target_dir: Path,
    *,
    allow_outside_symlinks: bool = False,
    context: DecodeContext | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Extract files backup ``manifest`` under ``target_dir`` (new or empty), keeping modes,
    mtimes, symlinks, hard links and (as root) owners.

    The archive is treated as hostile (see :mod:`pgvault.operations.restore.untar`): a member that
    would write
    outside ``target_dir``, a device, fifo or setuid/setgid file, or (unless
    ``allow_outside_symlinks``) a symlink leading outside is refused, naming the member. On any
    failure everything the restore wrote is removed, and a folder it created goes too.
    """
    if manifest.source_type != "files":
        raise RestoreError(
            f"backup {manifest.backup_id} is a {manifest.source_type!r} backup; "
            "restore it with --target-db"
        )
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise RestoreError(
            f"target folder {target_dir} is not empty; restore into a new or empty folder"
        )
    vault = Vault.from_config(config)
    context = context or DecodeContext(configured=config.transforms)
    vault.decoders(manifest, context)  # a missing key fails before the folder is even created
    created = [p for p in (target_dir, *target_dir.parents) if not p.exists()]
    target_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    extractor = TarExtractor(target_dir, allow_outside_symlinks=allow_outside_symlinks)
    total = 0
    try:
        for art in manifest.artifacts:
            _extract_artifact(vault, manifest, art.path, extractor, context, progress)
            total += art.raw_size
        try:
            extractor.finish()
        except RestoreError as exc:
            raise RestoreError(f"backup {manifest.backup_id}: {exc}") from exc
    except BaseException:
        # Nothing half-restored may look like a restore: the target goes back to empty.
        extractor.remove_all()
        with contextlib.suppress(OSError):
            for folder in created:  # the target first, then the parents mkdir made for it
                folder.rmdir()
        raise
    finally:
        extractor.close()
    return RestoreResult(manifest.backup_id, str(target_dir), total)


def _extract_artifact(
    vault: Vault,
    manifest: Manifest,
    path: str,
    extractor: TarExtractor,
    context: DecodeContext,
    progress: Progress | None,
) -> None:
    chunks = vault.decoded(manifest, path, context)

    def counted() -> Iterator[bytes]:
        for chunk in chunks:
            if progress is not None:
                progress.advance(raw=len(chunk))
            yield chunk

    reader: Any = _ChunkReader(counted())
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            extractor.extract(tar)
        for _ in chunks:  # the rest (tar padding) still has to pass the digest check
            pass
    except tarfile.TarError as exc:
        failure = RestoreError(f"artifact {path} is not a valid tar archive: {exc}")
        raise_if_damaged(chunks, failure)
        raise failure from exc
    except RestoreError as refused:
        # Garbage read as a member name is damage, not an attack: say which it is.
        raise_if_damaged(chunks, refused)
        raise RestoreError(f"backup {manifest.backup_id}: {refused}") from refused


def restore(
    config: PipelineConfig,
    ref: str = "latest",
    *,
    target_db: str | None = None,
    target_dir: Path | None = None,
    dsn: str | None = None,
    before: datetime | None = None,
    jobs: int = 1,
    drop_existing: bool = False,
    no_owner: bool = False,
    no_privileges: bool = False,
    role: str | None = None,
    tables: tuple[str, ...] = (),
    schemas: tuple[str, ...] = (),
    create_roles: bool = True,
    tablespace_map: Mapping[str, str] | None = None,
    no_tablespaces: bool = False,
    subscriptions: bool = False,
    locale: str | None = None,
    work_dir: Path | None = None,
    identities: tuple[Path, ...] = (),
    allow_outside_symlinks: bool = False,
    progress: Progress | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
) -> RestoreResult:
    """Restore backup ``ref`` (id, id prefix or ``latest``) of ``config``'s vault.

    ``before`` picks instead the newest complete backup started at or before that time. pg_dump
    backups go into the new database ``target_db`` on the server of ``dsn`` (default: the config
    source's server); files backups go under ``target_dir`` (see :func:`restore_files` for
    ``allow_outside_symlinks``). See :func:`restore_database`.
    """
    vault = Vault.from_config(config)
    manifest = vault.manifest_before(before) if before is not None else vault.manifest(ref)
    context = DecodeContext(configured=config.transforms, identities=identities)
    if manifest.source_type == "files":
        if target_dir is None:
            raise RestoreError(f"backup {manifest.backup_id} holds files: give --target-dir")
        return restore_files(
            config,
            manifest,
            target_dir,
            allow_outside_symlinks=allow_outside_symlinks,
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
    settings = getattr(config, "restore", None) or RestoreSettings()
    if work_dir is not None:
        settings = attrs.evolve(settings, work_dir=work_dir)
    return restore_database(
        config,
        manifest,
        DatabaseTarget(dsn, target_db),
        jobs=jobs,
        drop_existing=drop_existing,
        no_owner=no_owner,
        no_privileges=no_privileges,
        role=role,
        tables=tables,
        schemas=schemas,
        create_roles=create_roles,
        tablespace_map=tablespace_map,
        no_tablespaces=no_tablespaces,
        subscriptions=subscriptions,
        locale=locale,
        settings=settings,
        context=context,
        progress=progress,
        plugin_manager=plugin_manager,
    )
