"""A database with the hard corners of a faithful restore, and the tools to compare two of them.

``hard_corners_db`` (session-scoped) builds it once in the session cluster: application roles
that own objects and hold grants (and a login role that reaches them through a group), default
privileges, row-level security, large objects with comments and grants, identity and generated
columns, a partitioned table with a default partition, inheritance, domains, enums, ranges,
composite types, deferrable and circular foreign keys, an event trigger, extensions from
contrib, an ICU collation, quoted and unicode names, database settings, ACL and comment, a
publication and a subscription, and a tablespace. Other test modules reuse it: import the
fixtures (``from tests.hard_corners import hard_corners_db  # noqa: F401``) and the helpers.

:func:`dump_text` is ``pg_dump`` of a database as plain SQL, normalised only where two dumps
of equal databases must differ (the random ``\\restrict`` key); :func:`database_level` is what
pg_dump does not show: the database's own properties, settings and comment.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from pgvault.testing import PostgresCluster

HC_DB = "hard_corners"
HC_TABLESPACE = "hc_ts"
HC_ROLES = ("hc_owner", "hc_reader", "hc_user")
HC_SUBSCRIPTION = "hc_sub"

ROLES_SQL = """
CREATE ROLE hc_owner NOLOGIN;
CREATE ROLE hc_reader NOLOGIN;
CREATE ROLE hc_user LOGIN CONNECTION LIMIT 5;
GRANT hc_reader TO hc_user;
ALTER ROLE hc_user SET search_path = app, public;
COMMENT ON ROLE hc_user IS 'the application logs in as me';
"""

DATABASE_SQL = """
CREATE DATABASE hard_corners OWNER hc_owner TEMPLATE template0 ENCODING 'UTF8'
    LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8' CONNECTION LIMIT 40;
COMMENT ON DATABASE hard_corners IS 'hard corners: ünïcode, ''quotes'' and a ; semicolon';
ALTER DATABASE hard_corners SET "TimeZone" TO 'Asia/Tokyo';
ALTER DATABASE hard_corners SET search_path TO app, "$user", public;
ALTER DATABASE hard_corners SET work_mem TO '7MB';
ALTER ROLE hc_user IN DATABASE hard_corners SET statement_timeout TO '5min';
REVOKE CONNECT, TEMPORARY ON DATABASE hard_corners FROM PUBLIC;
GRANT CONNECT ON DATABASE hard_corners TO hc_reader;
GRANT TEMPORARY ON DATABASE hard_corners TO hc_user WITH GRANT OPTION;
"""

OBJECTS_SQL = r"""
CREATE EXTENSION pg_trgm;
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE SCHEMA app AUTHORIZATION hc_owner;
CREATE SCHEMA "Ünïcode Schema" AUTHORIZATION hc_owner;
GRANT USAGE ON SCHEMA app TO hc_reader;
GRANT CREATE ON TABLESPACE hc_ts TO hc_owner;

CREATE FUNCTION public.hc_note_ddl() RETURNS event_trigger LANGUAGE plpgsql AS
$$BEGIN PERFORM 1; END$$;
CREATE EVENT TRIGGER hc_ddl ON ddl_command_end EXECUTE FUNCTION public.hc_note_ddl();

SET ROLE hc_owner;
ALTER DEFAULT PRIVILEGES FOR ROLE hc_owner IN SCHEMA app GRANT SELECT ON TABLES TO hc_reader;
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.positive AS integer CHECK (VALUE > 0);
CREATE TYPE app.floatrange AS RANGE (subtype = float8);
CREATE TYPE app.pair AS (a integer, b text);
CREATE COLLATION app.german (provider = icu, locale = 'de-DE');

CREATE TABLE app.accounts (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text COLLATE app.german NOT NULL,
    mood app.mood,
    n app.positive,
    r app.floatrange,
    p app.pair,
    tags public.hstore,
    email public.citext UNIQUE,
    total numeric(12, 2),
    doubled numeric GENERATED ALWAYS AS (total * 2) STORED,
    owner_name text DEFAULT current_user
);
COMMENT ON TABLE app.accounts IS 'accounts, with RLS';
COMMENT ON COLUMN app.accounts.doubled IS 'generated';
INSERT INTO app.accounts (name, mood, n, r, p, tags, email, total, owner_name)
SELECT 'Name ' || i || CASE WHEN i % 5 = 0 THEN ' Ärger ß' ELSE '' END,
       (ARRAY['sad', 'ok', 'happy'])[i % 3 + 1]::app.mood, i, app.floatrange(i, i + 0.5),
       ROW(i, 'b' || i)::app.pair, public.hstore('k', i::text), 'User' || i || '@Example.com',
       i * 1.25, CASE WHEN i % 2 = 0 THEN 'hc_user' ELSE 'hc_owner' END
FROM generate_series(1, 300) AS i;
ALTER TABLE app.accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON app.accounts FOR SELECT TO hc_reader USING (owner_name = current_user);
CREATE INDEX accounts_name_trgm ON app.accounts USING gin (name public.gin_trgm_ops);

CREATE TABLE app.events (id bigint NOT NULL, at date NOT NULL, payload text)
    PARTITION BY RANGE (at);
CREATE TABLE app.events_2025 PARTITION OF app.events
    FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE app.events_2026 PARTITION OF app.events
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE app.events_other PARTITION OF app.events DEFAULT;
INSERT INTO app.events
SELECT i, date '2024-06-01' + (i % 1000), 'event ' || i FROM generate_series(1, 2000) AS i;

CREATE TABLE app.base (id integer, note text);
CREATE TABLE app.child (extra integer) INHERITS (app.base);
INSERT INTO app.base VALUES (1, 'base row');
INSERT INTO app.child VALUES (2, 'child row', 42);

CREATE TABLE app.a (id integer PRIMARY KEY, b_id integer);
CREATE TABLE app.b (id integer PRIMARY KEY,
                    a_id integer REFERENCES app.a DEFERRABLE INITIALLY DEFERRED);
ALTER TABLE app.a ADD CONSTRAINT a_b FOREIGN KEY (b_id) REFERENCES app.b
    DEFERRABLE INITIALLY DEFERRED;
BEGIN;
INSERT INTO app.a VALUES (1, 10), (2, 20);
INSERT INTO app.b VALUES (10, 1), (20, 2);
COMMIT;

CREATE TABLE "Ünïcode Schema"."Täble ""quoted"" here" ("Spalte ü" text, "select" integer);
INSERT INTO "Ünïcode Schema"."Täble ""quoted"" here" VALUES ('größe ☃', 1), (NULL, 2);

CREATE TABLE app.cold (id integer PRIMARY KEY USING INDEX TABLESPACE hc_ts, v text)
    TABLESPACE hc_ts;
INSERT INTO app.cold SELECT i, repeat('c', i % 40) FROM generate_series(1, 500) AS i;

CREATE SEQUENCE app.tickets START 1000;
SELECT setval('app.tickets', 4321);
CREATE VIEW app.happy_accounts AS SELECT id, name FROM app.accounts WHERE mood = 'happy';
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN NEW.note := coalesce(NEW.note, 'touched'); RETURN NEW; END$$;
CREATE TRIGGER base_touch BEFORE INSERT ON app.base FOR EACH ROW EXECUTE FUNCTION app.touch();

SELECT lo_from_bytea(424242, convert_to('large object ☃ bytes', 'UTF8'));
COMMENT ON LARGE OBJECT 424242 IS 'a large object with a comment';
GRANT SELECT ON LARGE OBJECT 424242 TO hc_reader;
GRANT SELECT (id, note) ON app.base TO hc_user;
RESET ROLE;

CREATE PUBLICATION hc_pub FOR TABLE app.accounts;
CREATE SUBSCRIPTION hc_sub CONNECTION 'host=127.0.0.1 port=9 dbname=nowhere'
    PUBLICATION hc_pub WITH (connect = false, slot_name = 'hc_slot');
ANALYZE;
"""


def psql(cluster: PostgresCluster, dbname: str, script: str) -> None:
    """Run ``script`` with psql, statement by statement, stopping at the first error."""
    done = subprocess.run(
        [
            str(cluster.bindir / "psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            f"--dbname={cluster.dsn(dbname)}",
        ],
        input=script.encode(),
        capture_output=True,
    )
    if done.returncode != 0:
        raise AssertionError(f"psql failed: {done.stderr.decode(errors='replace')}")


def postgres_owned_dir(prefix: str) -> Path:
    """A new folder postgres can write and every user traverse (tablespaces live in one)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    inner = base / "ts"
    inner.mkdir()
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(inner, pg.pw_uid, pg.pw_gid)
    return inner


def create_tablespace(cluster: PostgresCluster, name: str) -> Path:
    """Tablespace ``name`` in a fresh folder owned by postgres; returns the folder."""
    where = postgres_owned_dir(f"pgvault-{name}-")
    cluster.execute(f"CREATE TABLESPACE {name} LOCATION '{where}'")
    return where


def drop_restored(cluster: PostgresCluster, name: str) -> None:
    """Drop database ``name``, its subscriptions detached from their slots first (by hand, not
    with pgvault's code, which the tests judge)."""
    if name not in cluster.databases():
        return
    for (sub,) in cluster.execute(
        "SELECT quote_ident(subname) FROM pg_subscription s JOIN pg_database d "
        "ON d.oid = s.subdbid WHERE d.datname = current_database()",
        name,
    ):
        cluster.execute(
            f"ALTER SUBSCRIPTION {sub} DISABLE; ALTER SUBSCRIPTION {sub} SET (slot_name = NONE);"
            f"DROP SUBSCRIPTION {sub}",
            name,
        )
    cluster.drop_database(name)


@attrs.frozen
class HardCorners:
    """The hard-corners database of the session cluster."""

    cluster: PostgresCluster
    name: str
    tablespace_dir: Path


@pytest.fixture(scope="session")
def hard_corners_db(pg_cluster: PostgresCluster) -> Iterator[HardCorners]:
    """The hard-corners database, built once per session in the session cluster."""
    where = create_tablespace(pg_cluster, HC_TABLESPACE)
    psql(pg_cluster, "postgres", ROLES_SQL + DATABASE_SQL)
    psql(pg_cluster, HC_DB, OBJECTS_SQL)
    yield HardCorners(pg_cluster, HC_DB, where)
    drop_restored(pg_cluster, HC_DB)
    pg_cluster.execute(f"DROP TABLESPACE IF EXISTS {HC_TABLESPACE}")
    shutil.rmtree(where.parent, ignore_errors=True)


def dump_text(cluster: PostgresCluster, dbname: str) -> str:
    """``pg_dump`` of ``dbname`` (schema and data, plain SQL), without the random key of psql's
    ``\\restrict`` lines: the one thing two dumps of equal databases never share."""
    out = subprocess.run(
        [
            str(cluster.bindir / "pg_dump"),
            f"--dbname={cluster.dsn(dbname)}",
            "--no-password",
        ],
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    lines = [
        ln
        for ln in out.splitlines()
        if not ln.startswith("\\restrict ") and not ln.startswith("\\unrestrict ")
    ]
    return "\n".join(lines)


def database_level(cluster: PostgresCluster, dbname: str) -> dict[str, Any]:
    """The database's own properties, with names for oids: what pg_dump does not show."""
    with cluster.connect() as conn:
        row = conn.execute(
            "SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, "
            "d.datlocprovider::text, d.daticulocale, pg_get_userbyid(d.datdba), t.spcname, "
            "d.datconnlimit, d.datistemplate, shobj_description(d.oid, 'pg_database') "
            "FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace "
            "WHERE d.datname = %s",
            [dbname],
        ).fetchone()
        acl = conn.execute(
            "SELECT pg_get_userbyid(a.grantor), "
            "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, "
            "a.privilege_type, a.is_grantable FROM pg_database d, aclexplode(d.datacl) a "
            "WHERE d.datname = %s ORDER BY 1, 2, 3",
            [dbname],
        ).fetchall()
        settings = conn.execute(
            "SELECT CASE WHEN s.setrole = 0 THEN '' ELSE pg_get_userbyid(s.setrole) END, "
            "s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = %s ORDER BY 1",
            [dbname],
        ).fetchall()
    return {"database": row, "acl": acl, "settings": settings}


def roles_of(cluster: PostgresCluster, names: tuple[str, ...] = HC_ROLES) -> dict[str, Any]:
    """Attributes, memberships, settings and comments of roles ``names``."""
    with cluster.connect() as conn:
        attributes = conn.execute(
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, "
            "rolconnlimit, rolreplication, rolbypassrls, shobj_description(oid, 'pg_authid') "
            "FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
            [list(names)],
        ).fetchall()
        members = conn.execute(
            "SELECT pg_get_userbyid(roleid), pg_get_userbyid(member), admin_option "
            "FROM pg_auth_members WHERE pg_get_userbyid(member) = ANY(%s) ORDER BY 1, 2",
            [list(names)],
        ).fetchall()
        settings = conn.execute(
            "SELECT pg_get_userbyid(setrole), setconfig FROM pg_db_role_setting "
            "WHERE setdatabase = 0 AND pg_get_userbyid(setrole) = ANY(%s) ORDER BY 1",
            [list(names)],
        ).fetchall()
    return {"attributes": attributes, "members": members, "settings": settings}
