"""A database as an object of its cluster: what its dump's contents do not bring back by itself.

A pg_dump archive restored into a database that pgvault creates brings the objects inside it,
but not the database itself: its encoding and locale, owner, connection limit, ACL, comment,
security labels, ``ALTER DATABASE … SET`` and ``ALTER ROLE … IN DATABASE … SET`` settings
(``pg_restore --create`` would, but only under the database's original name), nor the roles
and tablespaces that its objects need. This module reads all of that from the catalogs at
backup time (recorded in the manifest's ``source`` table, see :func:`read_database_facts`) and
renders it as SQL for a database of any name at restore time.

Every key is optional in a manifest: a backup taken before pgvault recorded them restores as it
always did (the server's defaults, no properties).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import psycopg
from psycopg import sql

# pg_shdepend's dependency types, named by what they mean for a restore.
_ROLE_USES = {"o": "owner", "a": "privileges", "i": "privileges", "r": "policy"}

# pg_dump's variable_is_guc_list_quote(): settings whose value is a list of quoted elements.
_LIST_SETTINGS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)

PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}
_PRIVILEGES = frozenset({"CREATE", "CONNECT", "TEMPORARY"})


@attrs.frozen
class AclItem:
    """One privilege on the database: ``grantee`` (``None`` for PUBLIC) got ``privilege`` from
    ``grantor``."""

    grantor: str
    grantee: str | None
    privilege: str
    grantable: bool


@attrs.frozen
class RoleSetting:
    """One ``ALTER DATABASE … SET`` (``role`` ``None``) or ``ALTER ROLE role IN DATABASE … SET``."""

    role: str | None
    name: str
    value: str


@attrs.frozen
class DatabaseProperties:
    """The database's own properties, as ``pg_database`` and its companions hold them."""

    encoding: str
    collate: str
    ctype: str
    locale_provider: str = "libc"
    """``libc``, ``icu`` (PostgreSQL 15+) or ``builtin`` (17+)."""
    icu_locale: str | None = None
    """The ICU (or builtin) locale, for those providers."""
    icu_rules: str | None = None
    owner: str | None = None
    tablespace: str = "pg_default"
    connection_limit: int = -1
    is_template: bool = False
    acl: tuple[AclItem, ...] | None = None
    """``None`` for the default privileges (``datacl`` NULL)."""
    comment: str | None = None
    security_labels: tuple[tuple[str, str], ...] = ()
    """``(provider, label)`` pairs."""
    settings: tuple[RoleSetting, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The manifest form."""
        data = attrs.asdict(self, recurse=False)
        # JSON has lists only: the manifest must read back equal to what was written.
        data["acl"] = None if self.acl is None else [attrs.asdict(a) for a in self.acl]
        data["settings"] = [attrs.asdict(s) for s in self.settings]
        data["security_labels"] = [list(p) for p in self.security_labels]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatabaseProperties:
        """Read the manifest form; raises ``KeyError``/``TypeError``/``ValueError`` if malformed."""
        acl = data.get("acl")
        provider = str(data.get("locale_provider") or "libc")
        # A manifest is untrusted input: the words that go into SQL unquoted must be known ones.
        if provider not in PROVIDERS.values():
            raise ValueError(f"unknown locale provider {provider!r}")
        for item in acl or ():
            if str(item["privilege"]) not in _PRIVILEGES:
                raise ValueError(f"unknown database privilege {item['privilege']!r}")
        return cls(
            encoding=str(data["encoding"]),
            collate=str(data["collate"]),
            ctype=str(data["ctype"]),
            locale_provider=provider,
            icu_locale=_opt(data.get("icu_locale")),
            icu_rules=_opt(data.get("icu_rules")),
            owner=_opt(data.get("owner")),
            tablespace=str(data.get("tablespace") or "pg_default"),
            connection_limit=int(data.get("connection_limit", -1)),
            is_template=bool(data.get("is_template", False)),
            acl=None
            if acl is None
            else tuple(
                AclItem(
                    str(a["grantor"]),
                    _opt(a.get("grantee")),
                    str(a["privilege"]),
                    bool(a["grantable"]),
                )
                for a in acl
            ),
            comment=_opt(data.get("comment")),
            security_labels=tuple((str(p), str(v)) for p, v in data.get("security_labels", ())),
            settings=tuple(
                RoleSetting(_opt(s.get("role")), str(s["name"]), str(s["value"]))
                for s in data.get("settings", ())
            ),
        )

    def describe_locale(self) -> str:
        """``encoding LATIN1, locale C (libc)`` for messages."""
        if self.collate == self.ctype:
            where = f"locale {self.collate}"
        else:
            where = f"LC_COLLATE {self.collate}, LC_CTYPE {self.ctype}"
        if self.locale_provider != "libc":
            where += f", {self.locale_provider} locale {self.icu_locale}"
        return f"encoding {self.encoding}, {where} ({self.locale_provider})"


def _opt(value: object) -> str | None:
    return None if value is None else str(value)


def read_database_facts(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What the manifest records about the connected database beyond its contents.

    ``database_properties`` (see :class:`DatabaseProperties`); ``roles``: each role the
    database's objects or settings refer to, with how (``owner``, ``privileges``, ``policy``,
    ``settings``); ``tablespaces``: the tablespaces its objects and itself live in;
    ``subscriptions``: its logical replication subscriptions. Readable by any role that can
    connect (the catalogs read are public).
    """
    major = conn.info.server_version // 10000
    dbrow = conn.execute(
        "SELECT oid FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    assert dbrow is not None
    dboid = int(str(dbrow[0]))
    provider = "d.datlocprovider" if major >= 15 else "'c'"
    icu_locale = "d.datlocale" if major >= 17 else "d.daticulocale" if major >= 15 else "NULL"
    icu_rules = "d.daticurules" if major >= 16 else "NULL"
    row = conn.execute(
        "SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, "  # noqa: S608
        f"{provider}::text, {icu_locale}, {icu_rules}, pg_get_userbyid(d.datdba), t.spcname, "
        "d.datconnlimit, d.datistemplate, d.datacl IS NULL, "
        "shobj_description(d.oid, 'pg_database') "
        "FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.oid = %s",
        [dboid],
    ).fetchone()
    assert row is not None
    acl: tuple[AclItem, ...] | None = None
    if not row[10]:
        acl = tuple(
            AclItem(str(grantor), None if grantee is None else str(grantee), str(priv), bool(opt))
            for grantor, grantee, priv, opt in conn.execute(
                "SELECT pg_get_userbyid(a.grantor), "
                "CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
                "a.privilege_type, a.is_grantable "
                "FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = %s",
                [dboid],
            ).fetchall()
        )
    settings = tuple(
        RoleSetting(None if role is None else str(role), *_split_setting(str(item)))
        for role, item in conn.execute(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, c.item "
            "FROM pg_db_role_setting s, unnest(s.setconfig) WITH ORDINALITY AS c(item, n) "
            "WHERE s.setdatabase = %s ORDER BY s.setrole <> 0, 1, c.n",
            [dboid],
        ).fetchall()
    )
    labels: tuple[tuple[str, str], ...] = ()
    try:
        labels = tuple(
            (str(p), str(v))
            for p, v in conn.execute(
                "SELECT provider, label FROM pg_shseclabel "
                "WHERE classoid = 'pg_database'::regclass AND objoid = %s ORDER BY 1",
                [dboid],
            ).fetchall()
        )
    except psycopg.Error:  # not readable on some managed servers: nothing to restore then
        labels = ()
    props = DatabaseProperties(
        encoding=str(row[0]),
        collate=str(row[1]),
        ctype=str(row[2]),
        locale_provider=PROVIDERS.get(str(row[3]), str(row[3])),
        icu_locale=_opt(row[4]),
        icu_rules=_opt(row[5]),
        owner=str(row[6]),
        tablespace=str(row[7]),
        connection_limit=int(str(row[8])),
        is_template=bool(row[9]),
        acl=acl,
        comment=_opt(row[11]),
        security_labels=labels,
        settings=settings,
    )

    roles: dict[str, set[str]] = {}
    for name, deptype in conn.execute(
        "SELECT DISTINCT r.rolname, d.deptype::text FROM pg_shdepend d "
        "JOIN pg_roles r ON r.oid = d.refobjid WHERE d.refclassid = 'pg_authid'::regclass "
        "AND (d.dbid = %(db)s OR (d.dbid = 0 AND ((d.classid = 'pg_database'::regclass "
        "AND d.objid = %(db)s) OR (d.classid = 'pg_subscription'::regclass AND d.objid IN "
        "(SELECT oid FROM pg_subscription WHERE subdbid = %(db)s)))))",
        {"db": dboid},
    ).fetchall():
        use = _ROLE_USES.get(str(deptype))
        # Predefined roles (pg_monitor, pg_read_all_data …) exist on every server.
        if use and not str(name).startswith("pg_"):
            roles.setdefault(str(name), set()).add(use)
    # The bootstrap superuser's ownerships are "pinned", never recorded in pg_shdepend, yet
    # pg_dump names it as the owner of what it owns (often everything).
    boot = conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()
    if boot is not None:
        roles.setdefault(str(boot[0]), set()).add("owner")
    if props.owner:
        roles.setdefault(props.owner, set()).add("owner")
    for s in props.settings:
        if s.role:
            roles.setdefault(s.role, set()).add("settings")
    for item in props.acl or ():
        for name in (item.grantor, item.grantee):
            if name and not name.startswith("pg_"):
                roles.setdefault(name, set()).add("privileges")

    tablespaces = {
        str(r[0])
        for r in conn.execute(
            "SELECT DISTINCT t.spcname FROM pg_class c "
            "JOIN pg_tablespace t ON t.oid = c.reltablespace "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%%' AND t.spcname <> 'pg_global'"
        ).fetchall()
    }
    tablespaces.add(props.tablespace)
    try:
        subscriptions = [
            str(r[0])
            for r in conn.execute(
                "SELECT subname FROM pg_subscription WHERE subdbid = %s ORDER BY 1", [dboid]
            ).fetchall()
        ]
    except psycopg.Error:
        subscriptions = []
    return {
        "database_properties": props.to_dict(),
        "roles": {name: sorted(uses) for name, uses in sorted(roles.items())},
        "tablespaces": sorted(tablespaces),
        "subscriptions": subscriptions,
    }


def _split_setting(item: str) -> tuple[str, str]:
    name, _, value = item.partition("=")
    return name, value


def split_guc_list(value: str) -> list[str]:
    """The elements of a list setting's stored value (``app, "$user", public``), unquoted, as
    PostgreSQL's SplitGUCList reads them."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and value[i].isspace():
            i += 1
        if i >= n:
            break
        if value[i] == '"':
            i += 1
            word = []
            while i < n:
                if value[i] == '"':
                    if value[i + 1 : i + 2] == '"':
                        word.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                word.append(value[i])
                i += 1
            out.append("".join(word))
        else:
            start = i
            while i < n and value[i] != "," and not value[i].isspace():
                i += 1
            out.append(value[start:i])
        while i < n and value[i].isspace():
            i += 1
        if i < n and value[i] == ",":
            i += 1
    return out


def setting_sql(database: str, setting: RoleSetting) -> sql.Composed:
    """``ALTER DATABASE db SET name TO value`` (or ``ALTER ROLE r IN DATABASE db SET …``),
    quoted as pg_dump quotes it (list settings element by element)."""
    value: sql.Composable
    if setting.name.lower() in _LIST_SETTINGS:
        value = sql.SQL(", ").join(sql.Literal(v) for v in split_guc_list(setting.value))
    else:
        value = sql.Literal(setting.value)
    head = (
        sql.SQL("ALTER DATABASE {}").format(sql.Identifier(database))
        if setting.role is None
        else sql.SQL("ALTER ROLE {} IN DATABASE {}").format(
            sql.Identifier(setting.role), sql.Identifier(database)
        )
    )
    return sql.SQL("{} SET {} TO {}").format(head, sql.Identifier(setting.name), value)


def create_database_sql(
    name: str,
    props: DatabaseProperties | None,
    *,
    server_major: int,
    tablespace: str | None,
    owner: str | None = None,
    locale: str | None = None,
) -> sql.Composed:
    """``CREATE DATABASE name`` with the source's encoding and locale (or libc ``locale``,
    keeping the encoding), in ``tablespace`` (``None``: the server's default), owned by
    ``owner`` (``None``: the connecting role). Without ``props``: the server's defaults."""
    parts: list[sql.Composable] = [
        sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    ]
    if props is not None:
        parts.append(sql.SQL("ENCODING {}").format(sql.Literal(props.encoding)))
        if locale is not None:
            if server_major >= 15:
                parts.append(sql.SQL("LOCALE_PROVIDER libc"))
            parts.append(sql.SQL("LOCALE {}").format(sql.Literal(locale)))
        else:
            if server_major >= 15:
                parts.append(sql.SQL("LOCALE_PROVIDER {}").format(sql.SQL(props.locale_provider)))
            parts.append(sql.SQL("LC_COLLATE {}").format(sql.Literal(props.collate)))
            parts.append(sql.SQL("LC_CTYPE {}").format(sql.Literal(props.ctype)))
            if props.locale_provider == "icu" and props.icu_locale is not None:
                parts.append(sql.SQL("ICU_LOCALE {}").format(sql.Literal(props.icu_locale)))
            if props.locale_provider == "builtin" and props.icu_locale is not None:
                parts.append(sql.SQL("BUILTIN_LOCALE {}").format(sql.Literal(props.icu_locale)))
            if props.icu_rules:
                parts.append(sql.SQL("ICU_RULES {}").format(sql.Literal(props.icu_rules)))
    if tablespace is not None:
        parts.append(sql.SQL("TABLESPACE {}").format(sql.Identifier(tablespace)))
    if owner is not None:
        parts.append(sql.SQL("OWNER {}").format(sql.Identifier(owner)))
    return sql.SQL(" ").join(parts)


def properties_sql(
    name: str,
    props: DatabaseProperties,
    *,
    owner: str,
    privileges: bool,
    present_roles: Sequence[str],
) -> tuple[list[sql.Composed], list[str]]:
    """The statements that give database ``name`` (owned by ``owner`` now) the source's
    properties, run once its contents are restored; and notes on what had to be left out
    (settings and privileges of roles the target lacks).

    Settings come last and after the restore on purpose: ``default_transaction_read_only``,
    ``statement_timeout`` or ``search_path`` set on the database must not change how
    pg_restore and the validation run, only how clients see the database afterwards.
    """
    present = set(present_roles)
    ident = sql.Identifier(name)
    out: list[sql.Composed] = []
    notes: list[str] = []
    if props.comment is not None:
        out.append(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(props.comment))
        )
    for provider, label in props.security_labels:
        out.append(
            sql.SQL("SECURITY LABEL FOR {} ON DATABASE {} IS {}").format(
                sql.Identifier(provider), ident, sql.Literal(label)
            )
        )
    if privileges and props.acl is not None:
        # datacl replaces the default privileges: start from none, as pg_dump's REVOKEs do.
        out.append(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
        out.append(
            sql.SQL("REVOKE ALL ON DATABASE {} FROM {}").format(ident, sql.Identifier(owner))
        )
        grants: dict[tuple[str, str | None, bool], list[str]] = {}
        for item in props.acl:
            grantor = owner if item.grantor == props.owner else item.grantor
            grants.setdefault((grantor, item.grantee, item.grantable), []).append(item.privilege)
        # The owner's grants first: others' rest on the grant options it gave.
        for (grantor, grantee, grantable), privs in sorted(
            grants.items(), key=lambda kv: (kv[0][0] != owner, kv[0][0], kv[0][1] or "")
        ):
            missing = [r for r in (grantor, grantee) if r is not None and r not in present]
            if missing:
                notes.append(
                    f"privileges {', '.join(privs)} on the database for "
                    f"{grantee or 'PUBLIC'} left out: role {missing[0]!r} does not exist"
                )
                continue
            out.append(grant_sql(ident, privs, grantee, grantable, grantor, owner))
    for setting in props.settings:
        if setting.role is not None and setting.role not in present:
            notes.append(
                f"setting {setting.name} of role {setting.role!r} in the database left out: "
                "the role does not exist"
            )
            continue
        out.append(setting_sql(name, setting))
    if props.connection_limit != -1:
        out.append(
            sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                ident, sql.Literal(props.connection_limit)
            )
        )
    if props.is_template:
        out.append(sql.SQL("ALTER DATABASE {} IS_TEMPLATE true").format(ident))
    return out, notes


def grant_sql(
    database: sql.Identifier,
    privileges: Sequence[str],
    grantee: str | None,
    grantable: bool,
    grantor: str,
    owner: str,
) -> sql.Composed:
    """``GRANT privileges ON DATABASE … TO grantee``, as ``grantor`` when not the owner (whose
    grants a superuser's GRANT records anyway)."""
    grant = sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
        sql.SQL(", ").join(sql.SQL(p) for p in privileges if p in _PRIVILEGES),
        database,
        sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee),
        sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL(""),
    )
    if grantor == owner:
        return grant
    return sql.SQL("SET SESSION AUTHORIZATION {}; {}; RESET SESSION AUTHORIZATION").format(
        sql.Identifier(grantor), grant
    )
