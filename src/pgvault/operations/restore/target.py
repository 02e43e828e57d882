"""The target database of a restore, from the first look at its server to its cleanup.

The order, and why:

1. **Pre-flight** (:func:`check_target`), with no side effect: the server is reachable through
   a maintenance database (never the target itself, which a replace drops); the target does
   not exist, or may be replaced; the connecting role may create (and drop) databases and
   create the roles that are missing; every role and tablespace the backup needs exists or will
   be created or is mapped; and, when a database is about to be replaced, the server accepts
   exactly the ``CREATE DATABASE`` that will follow (encoding, locale, provider, tablespace),
   tried on a throwaway probe database, so that a locale the server lacks is found while the
   old database still stands.
2. The caller takes the safety backup, then :func:`drop_database`.
3. :func:`create_target`: ``CREATE DATABASE`` with the source's encoding and locale, then the
   missing roles, then the owner.
4. The caller restores and validates; then :func:`apply_properties` gives the database its
   comment, ACL, settings and connection limit — last, so that settings such as
   ``default_transaction_read_only`` never change how the restore itself runs.

Statements that must not be cut in half by Ctrl-C or SIGTERM (``DROP DATABASE``, ``CREATE
DATABASE``, cleanup) run :func:`shielded`: the signal is held until they are done.

Subscriptions: a database with one cannot be dropped, and ``DROP SUBSCRIPTION`` would connect
to the publisher and drop its replication slot — the live subscriber's slot, for a copy. So a
database is dropped only after each of its subscriptions was disabled, detached from its slot
(``slot_name = NONE``) and dropped, which never connects anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import psycopg
from psycopg import sql

from pgvault.exceptions import PgVaultError, RestoreError
from pgvault.postgres.client import connect, describe_dsn, first_line, split_dsn
from pgvault.postgres.database import (
    DatabaseProperties,
    create_database_sql,
    properties_sql,
)
from pgvault.postgres.globals import SUPERUSER_ATTRIBUTES, Globals, RolePlan, plan_roles
from pgvault.vault.manifest import Manifest

log = logging.getLogger("pgvault.restore")

MAINTENANCE_DATABASES = ("postgres", "template1")
"""Where pgvault connects to create and drop databases when the DSN names the target itself."""

PROBE_PREFIX = "pgvault_probe_"


@attrs.frozen
class DatabaseTarget:
    """Where a database restore goes: the server (``dsn``) and the new database's name."""

    dsn: str
    name: str

    @property
    def conninfo(self) -> tuple[str, dict[str, str]]:
        """Password-free conninfo for the target database, and the child environment."""
        return split_dsn(self.dsn, dbname=self.name)

    def describe(self) -> str:
        """``user@host:port/name`` for messages."""
        return describe_dsn(self.dsn, dbname=self.name)

    def server(self) -> str:
        """``user@host:port`` for messages."""
        return describe_dsn(self.dsn).rsplit("/", 1)[0]


@contextlib.contextmanager
def shielded(*, swallow: bool = False) -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the duration of the block, then deliver them (or, with
    ``swallow``, drop them: a cleanup that runs because of a first interrupt must not be cut
    short by a second). Outside the main thread, where handlers cannot be set, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: object) -> None:
        caught.append(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if not swallow:
            for held in dict.fromkeys(caught):
                signal.raise_signal(held)


def _maintenance_names(target: DatabaseTarget, configured: str | None) -> list[str]:
    from psycopg import conninfo as pg_conninfo

    names: list[str] = [configured] if configured else []
    try:
        own = pg_conninfo.conninfo_to_dict(target.dsn).get("dbname")
    except psycopg.ProgrammingError:
        own = None
    if own and str(own) != target.name:
        names.append(str(own))
    names += [n for n in MAINTENANCE_DATABASES if n != target.name]
    return list(dict.fromkeys(names))


def connect_server(
    target: DatabaseTarget, maintenance_db: str | None = None
) -> tuple[psycopg.Connection[tuple[object, ...]], str]:
    """A connection to the target's server through a maintenance database, never the target
    itself: ``maintenance_db`` if given, else the DSN's database unless it is the target, else
    ``postgres``, else ``template1``. Returns the connection and the database used."""
    errors: list[str] = []
    for name in _maintenance_names(target, maintenance_db):
        try:
            return connect(target.dsn, dbname=name), name
        except PgVaultError as exc:
            errors.append(f"{name}: {exc}")
            if maintenance_db and name == maintenance_db:
                break
    raise RestoreError(
        f"cannot reach the target server {target.server()} through a maintenance database "
        f"({'; '.join(errors)}); set [restore] maintenance_db"
    )


@attrs.frozen
class TargetOptions:
    """The restore options that decide what the target needs."""

    drop_existing: bool = False
    no_owner: bool = False
    no_privileges: bool = False
    role: str | None = None
    create_roles: bool = True
    tablespace_map: Mapping[str, str] = attrs.field(factory=dict)
    no_tablespaces: bool = False
    locale: str | None = None
    maintenance_db: str | None = None


@attrs.frozen
class TargetPlan:
    """What pre-flight found and decided; the lifecycle functions below carry it out."""

    target: DatabaseTarget
    maintenance_db: str
    exists: bool
    server_major: int
    current_user: str
    superuser: bool
    props: DatabaseProperties | None
    roles: RolePlan | None
    existing_roles: frozenset[str]
    owner: str | None
    """The owner the database gets (``None``: the connecting role)."""
    tablespace: str | None
    """The database's tablespace (``None``: the server's default)."""
    old_subscriptions: tuple[str, ...] = ()
    """Subscriptions of the database being replaced (detached before it is dropped)."""
    notes: tuple[str, ...] = ()

    @property
    def present_roles(self) -> frozenset[str]:
        """The roles the server has once :func:`create_target` created the missing ones."""
        created = self.roles.names if self.roles else ()
        return self.existing_roles | frozenset(created)


def database_properties(manifest: Manifest) -> DatabaseProperties | None:
    """The database properties a backup recorded (``None`` for older backups)."""
    data = manifest.source.get("database_properties")
    if data is None:
        return None
    try:
        return DatabaseProperties.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise RestoreError(
            f"backup {manifest.backup_id}: malformed database_properties in its manifest ({exc})"
        ) from None


def _needed_roles(manifest: Manifest, opts: TargetOptions) -> tuple[dict[str, list[str]], set[str]]:
    """Roles the restore cannot do without, with what they do there; and roles it would like
    (settings in the database) but can leave out."""
    recorded = manifest.source.get("roles") or {}
    required: dict[str, list[str]] = {}
    optional: set[str] = set()
    if not isinstance(recorded, dict):
        return required, optional
    for name, uses in recorded.items():
        uses = [str(u) for u in uses] if isinstance(uses, list) else []
        why = [
            u
            for u in uses
            if u == "policy"
            or (u == "owner" and not opts.no_owner)
            or (u == "privileges" and not opts.no_privileges)
        ]
        if why:
            required[str(name)] = why
        elif "settings" in uses:
            optional.add(str(name))
    return required, optional


_USE_TEXT = {
    "owner": "owns objects",
    "privileges": "holds privileges",
    "policy": "is named by a policy",
}


def check_target(
    manifest: Manifest,
    target: DatabaseTarget,
    opts: TargetOptions,
    globals_: Globals | None,
) -> TargetPlan:
    """Everything that can be checked before the first side effect; see the module docstring.

    Raises :class:`RestoreError` naming what is wrong or missing and the option that fixes it.
    """
    props = database_properties(manifest)
    conn, maintenance = connect_server(target, opts.maintenance_db)
    with conn:
        row = conn.execute(
            "SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert row is not None
        user, superuser, createdb, createrole = (
            str(row[0]),
            bool(row[1]),
            bool(row[2]),
            bool(row[3]),
        )
        major = conn.info.server_version // 10000
        found = conn.execute(
            "SELECT pg_has_role(datdba, 'USAGE'), datallowconn FROM pg_database WHERE datname = %s",
            [target.name],
        ).fetchone()
        exists = found is not None
        if exists and not opts.drop_existing:
            raise RestoreError(
                f"database {target.name!r} already exists on {target.server()}; restore into a "
                "new name, or replace it with --drop-existing (a safety backup is taken first)"
            )
        if not (superuser or createdb):
            raise RestoreError(
                f"role {user!r} on {target.server()} cannot create databases: connect as a "
                "superuser or a role with CREATEDB"
            )
        old_subscriptions: tuple[str, ...] = ()
        if exists:
            assert found is not None
            if not (superuser or found[0]):
                raise RestoreError(
                    f"role {user!r} cannot drop database {target.name!r} (only its owner or a "
                    "superuser can), so it was not replaced"
                )
            if not found[1]:
                raise RestoreError(
                    f"database {target.name!r} does not allow connections, so no safety backup "
                    "of it can be taken: ALTER DATABASE … ALLOW_CONNECTIONS true first"
                )
            old_subscriptions = _subscriptions_of(target)
            if old_subscriptions and not superuser:
                raise RestoreError(
                    f"database {target.name!r} has subscription(s) "
                    f"{', '.join(old_subscriptions)}, which only a superuser can detach before "
                    "the database is dropped"
                )
        if (
            props is not None
            and props.locale_provider != "libc"
            and opts.locale is None
            and major < 15
        ):
            raise RestoreError(
                f"the backup's database uses the {props.locale_provider} locale provider, "
                f"which PostgreSQL {major} on {target.server()} lacks: give --locale NAME "
                "to use a libc locale instead"
            )
        existing = frozenset(str(r[0]) for r in conn.execute("SELECT rolname FROM pg_roles"))
        roles, notes = _check_roles(manifest, opts, globals_, existing, superuser, createrole, user)
        present = existing | frozenset(roles.names if roles else ())
        if opts.role and opts.role not in present:
            raise RestoreError(f"--role {opts.role}: no such role on {target.server()}")
        tablespace = _check_tablespaces(manifest, props, opts, conn, globals_, target)
        owner: str | None = None
        if props is not None and props.owner and not opts.no_owner and props.owner != user:
            owner = props.owner
        plan = TargetPlan(
            target=target,
            maintenance_db=maintenance,
            exists=exists,
            server_major=major,
            current_user=user,
            superuser=superuser,
            props=props,
            roles=roles,
            existing_roles=existing,
            owner=owner,
            tablespace=tablespace,
            old_subscriptions=old_subscriptions,
            notes=tuple(notes),
        )
        if exists and props is not None:
            _probe(conn, plan, opts)
    return plan


def _check_roles(
    manifest: Manifest,
    opts: TargetOptions,
    globals_: Globals | None,
    existing: frozenset[str],
    superuser: bool,
    createrole: bool,
    user: str,
) -> tuple[RolePlan | None, list[str]]:
    required, optional = _needed_roles(manifest, opts)
    notes: list[str] = []
    plan: RolePlan | None = None
    if globals_ is not None and opts.create_roles:
        plan = plan_roles(globals_, [*required, *optional], existing)
        if not plan.create:
            plan = None
    creatable = set(plan.names) if plan else set()
    missing = {r: why for r, why in required.items() if r not in existing and r not in creatable}
    if missing:
        listed = ", ".join(
            f"{name!r} ({' and '.join(_USE_TEXT[u] for u in why)})"
            for name, why in sorted(missing.items())
        )
        if globals_ is None:
            how = "this backup holds no roles (older backup, or source.globals = false)"
        elif not opts.create_roles:
            how = "without --no-roles the restore creates them from the backup's globals"
        else:
            how = "the backup's globals do not define them"
        fixes = ["create them on the target first"]
        uses = {u for why in missing.values() for u in why}
        if "owner" in uses:
            fixes.append("--no-owner")
        if "privileges" in uses:
            fixes.append("--no-privileges")
        raise RestoreError(
            f"the target lacks role(s) the backup needs: {listed}; {how}. Fix: "
            + ", or ".join(fixes)
        )
    for name in sorted(optional - existing - creatable):
        notes.append(
            f"role {name!r} (settings in the database) is missing: its settings are left out"
        )
    if plan is not None and not superuser:
        if not createrole:
            raise RestoreError(
                f"the target lacks role(s) {', '.join(plan.names)}, and role {user!r} cannot "
                "create roles: connect as a superuser or a CREATEROLE role, create them first, "
                "or use --no-roles with --no-owner and --no-privileges"
            )
        for role in plan.create:
            special = [a for a in SUPERUSER_ATTRIBUTES if a in role.attributes]
            if special:
                raise RestoreError(
                    f"role {role.name!r} of the backup has {', '.join(special)}, which only a "
                    f"superuser can give; role {user!r} is not one: create it first"
                )
    return plan, notes


def _check_tablespaces(
    manifest: Manifest,
    props: DatabaseProperties | None,
    opts: TargetOptions,
    conn: psycopg.Connection[Any],
    globals_: Globals | None,
    target: DatabaseTarget,
) -> str | None:
    """The tablespace to create the database in; raises if a needed one is missing."""
    recorded = manifest.source.get("tablespaces")
    used = {str(t) for t in recorded} if isinstance(recorded, list) else set()
    if props is not None:
        used.add(props.tablespace)
    unknown = sorted(set(opts.tablespace_map) - used)
    if unknown and recorded is not None:
        raise RestoreError(
            f"--tablespace-map {unknown[0]}=…: backup {manifest.backup_id} uses no tablespace "
            f"{unknown[0]!r} (it uses {', '.join(sorted(used)) or 'only the default'})"
        )
    if opts.no_tablespaces:
        return None
    have = {str(r[0]) for r in conn.execute("SELECT spcname FROM pg_tablespace")}
    for old in sorted(used):
        new = opts.tablespace_map.get(old, old)
        if new in have:
            continue
        where = (globals_.tablespaces.get(old) if globals_ else None) or ""
        if new != old:
            raise RestoreError(
                f"--tablespace-map {old}={new}: no tablespace {new!r} on {target.server()}"
            )
        raise RestoreError(
            f"tablespace {old!r} that the backup's objects use does not exist on "
            f"{target.server()}"
            + (f" (on the source it was at {where})" if where else "")
            + f": create it, or use --tablespace-map {old}=NEW, or --no-tablespaces"
        )
    if props is None:
        return None
    chosen = opts.tablespace_map.get(props.tablespace, props.tablespace)
    return None if chosen == "pg_default" else chosen


def _subscriptions_of(target: DatabaseTarget) -> tuple[str, ...]:
    try:
        with connect(target.dsn, dbname=target.name) as conn:
            return tuple(
                str(r[0])
                for r in conn.execute(
                    "SELECT subname FROM pg_subscription "
                    "WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = "
                    "current_database()) ORDER BY 1"
                ).fetchall()
            )
    except PgVaultError as exc:
        raise RestoreError(f"cannot connect to database {target.name!r}: {exc}") from None
    except psycopg.Error:
        return ()  # pg_subscription not readable: not a superuser, then none of its own


def _create_sql(plan: TargetPlan, name: str, opts: TargetOptions) -> sql.Composed:
    return create_database_sql(
        name,
        plan.props,
        server_major=plan.server_major,
        tablespace=plan.tablespace,
        locale=opts.locale,
    )


def _create_failure(plan: TargetPlan, exc: psycopg.Error) -> RestoreError:
    text = first_line(str(exc))
    if plan.props is None:
        return RestoreError(f"cannot create database {plan.target.name!r}: {text}")
    return RestoreError(
        f"the target server {plan.target.server()} cannot create a database with the backup's "
        f"{plan.props.describe_locale()}: {text}. Install that locale on the target, or give "
        "--locale NAME (for example --locale C) to use another one with the same encoding"
    )


def _probe(conn: psycopg.Connection[Any], plan: TargetPlan, opts: TargetOptions) -> None:
    """Create and drop a throwaway database exactly as the target will be created."""
    import secrets

    name = PROBE_PREFIX + secrets.token_hex(4)
    try:
        with shielded():
            conn.execute(_create_sql(plan, name, opts))
    except psycopg.Error as exc:
        raise _create_failure(plan, exc) from None
    finally:
        with shielded(swallow=True), contextlib.suppress(psycopg.Error):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@attrs.define
class Created:
    """What :func:`create_target` did, for cleanup and the report."""

    database: bool = False
    roles: list[str] = attrs.field(factory=list)


def create_target(plan: TargetPlan, opts: TargetOptions, done: Created) -> None:
    """Create the database (encoding, locale, tablespace), then the missing roles, then give
    the database its owner. ``done`` records each step as it happens, for the cleanup."""
    conn, _ = connect_server(plan.target, plan.maintenance_db)
    with conn:
        try:
            with shielded():
                conn.execute(_create_sql(plan, plan.target.name, opts))
                done.database = True
        except psycopg.Error as exc:
            raise _create_failure(plan, exc) from None
        if plan.roles is not None:
            _create_roles(conn, plan.roles, done)
        if plan.owner is not None:
            _run(
                conn,
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(plan.target.name), sql.Identifier(plan.owner)
                ),
                f"cannot make {plan.owner!r} the owner of database {plan.target.name!r}",
            )


def _create_roles(conn: psycopg.Connection[Any], roles: RolePlan, done: Created) -> None:
    # Statements are run one by one and never logged: with role_passwords they carry hashes.
    for role in roles.create:
        for i, statement in enumerate(role.statements):
            _run(conn, sql.SQL(statement), f"cannot create role {role.name!r}")
            if i == 0:
                done.roles.append(role.name)
    for statement in (*roles.memberships, *roles.settings, *roles.parameter_grants):
        _run(conn, sql.SQL(statement), "cannot restore a created role's membership or setting")
    log.info("created role(s) %s", ", ".join(done.roles))


def _run(conn: psycopg.Connection[Any], statement: sql.SQL | sql.Composed, what: str) -> None:
    try:
        conn.execute(statement)
    except psycopg.Error as exc:
        raise RestoreError(f"{what}: {first_line(str(exc))}") from None


def apply_properties(plan: TargetPlan, *, no_owner: bool, no_privileges: bool) -> list[str]:
    """Give the restored database the source's comment, labels, ACL, settings, connection
    limit and template flag. Returns notes on what was left out or refused: each statement is
    tried on its own, so one setting a newer server no longer knows costs only itself."""
    if plan.props is None:
        return []
    owner = plan.owner or plan.current_user
    if plan.props.owner and not no_owner:
        owner = plan.props.owner
    statements, notes = properties_sql(
        plan.target.name,
        plan.props,
        owner=owner,
        privileges=not no_privileges,
        present_roles=sorted(plan.present_roles),
    )
    conn, _ = connect_server(plan.target, plan.maintenance_db)
    with conn:
        for statement in statements:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                text = statement.as_string(conn)
                shown = text if len(text) < 200 else text[:200] + "…"
                notes.append(f"refused by the target: {shown}: {first_line(str(exc))}")
    return notes


def detach_subscriptions(target: DatabaseTarget) -> list[tuple[str, str | None]]:
    """Disable, detach from their slots and drop the subscriptions of database ``target``,
    never connecting to a publisher. Returns ``(subscription, slot it had)`` for each."""
    try:
        conn = connect(target.dsn, dbname=target.name)
    except PgVaultError:
        return []  # gone already, or not connectable: nothing to detach here
    done: list[tuple[str, str | None]] = []
    with conn:
        try:
            subs = conn.execute(
                "SELECT subname, subslotname FROM pg_subscription WHERE subdbid = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"
            ).fetchall()
        except psycopg.Error:
            return []
        for name, slot in subs:
            ident = sql.Identifier(str(name))
            for statement in (
                sql.SQL("ALTER SUBSCRIPTION {} DISABLE"),
                sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)"),
                sql.SQL("DROP SUBSCRIPTION {}"),
            ):
                _run(
                    conn,
                    statement.format(ident),
                    f"cannot detach subscription {name!s} of database {target.name!r}",
                )
            done.append((str(name), None if slot is None else str(slot)))
    return done


def drop_database(target: DatabaseTarget, maintenance_db: str | None = None) -> list[str]:
    """Drop ``target`` (ending its sessions), its subscriptions detached first. Returns notes on
    the replication slots left on publishers."""
    notes = [
        f"subscription {name!r} of {target.name!r} was detached and dropped; its replication "
        f"slot {slot!r} was left on the publisher (re-use it, or drop it there)"
        for name, slot in detach_subscriptions(target)
        if slot is not None
    ]
    conn, _ = connect_server(target, maintenance_db)
    with conn:
        try:
            with shielded():
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(target.name)
                    )
                )
        except psycopg.Error as exc:
            raise RestoreError(
                f"cannot drop database {target.name!r}: {first_line(str(exc))}"
            ) from None
    return notes


def drop_roles(target: DatabaseTarget, roles: Sequence[str], maintenance_db: str | None) -> None:
    """Drop roles a failed restore created (a failure is logged, never raised)."""
    if not roles:
        return
    try:
        conn, _ = connect_server(target, maintenance_db)
    except PgVaultError as exc:
        log.warning(
            "could not remove the roles this restore created (%s): %s", ", ".join(roles), exc
        )
        return
    with conn:
        for name in reversed(roles):
            try:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            except psycopg.Error as exc:
                log.warning("could not remove role %s that this restore created: %s", name, exc)


def drop_database_quietly(target: DatabaseTarget, maintenance_db: str | None = None) -> None:
    """Drop ``target`` (detaching its subscriptions, ending its sessions); a failure is logged,
    never raised."""
    try:
        with shielded(swallow=True):
            drop_database(target, maintenance_db)
    except (PgVaultError, psycopg.Error) as exc:
        log.warning("could not remove the half-restored database %s: %s", target.name, exc)
