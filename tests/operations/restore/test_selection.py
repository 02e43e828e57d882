"""Partial restores (--table, --schema) that are right or refuse, and restores that can succeed.

One database holds the corners of a partial restore: a partitioned table with a default
partition and a sub-partitioned partition in another schema, a serial and an identity column, an
enum and a domain the table uses, quoted, mixed-case and unicode names, a table named ``dot.ted``
beside a table ``ted`` in a schema ``dot``, a foreign key, a view; and a materialized view over a
table with FORCE ROW LEVEL SECURITY owned by an application role. It is backed up once per
format; every test restores from those backups into new databases on the session cluster and
compares rows one by one with the source.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import pgvault
from pgvault.operations.restore.database import DatabaseTarget, validate_database
from pgvault.operations.restore.selection import display_name, parse_name
from pgvault.testing import PostgresCluster
from tests.conftest import pgvault_cli, render_config

SOURCE_DB = "partial_source"
OWNER = "pgvault_partial_owner"

PARTIAL_SCHEMA = rf"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER}') THEN
        CREATE ROLE {OWNER};
    END IF;
END $$;
CREATE SCHEMA app;
CREATE SCHEMA "Mixed Case Schema ü";
CREATE SCHEMA dot;
CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN app.positive AS integer CHECK (VALUE > 0);

CREATE TABLE public.payment (
    payment_id serial,
    amount app.positive NOT NULL,
    mood app.mood,
    paid_on date NOT NULL,
    PRIMARY KEY (payment_id, paid_on)
) PARTITION BY RANGE (paid_on);
CREATE TABLE public.payment_p2022 PARTITION OF public.payment
    FOR VALUES FROM ('2022-01-01') TO ('2023-01-01');
CREATE TABLE app.payment_p2023 PARTITION OF public.payment
    FOR VALUES FROM ('2023-01-01') TO ('2024-01-01') PARTITION BY RANGE (paid_on);
CREATE TABLE app.payment_p2023_h1 PARTITION OF app.payment_p2023
    FOR VALUES FROM ('2023-01-01') TO ('2023-07-01');
CREATE TABLE app.payment_p2023_rest PARTITION OF app.payment_p2023 DEFAULT;
CREATE TABLE public.payment_default PARTITION OF public.payment DEFAULT;
CREATE INDEX payment_mood ON public.payment (mood);
COMMENT ON TABLE public.payment IS 'payments, partitioned';
INSERT INTO public.payment (amount, mood, paid_on)
SELECT 1 + i % 500, (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::app.mood,
       date '2021-07-01' + (i % 1000)
FROM generate_series(1, 8000) AS i;

CREATE TABLE app.customer (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO app.customer SELECT i, 'customer ' || i FROM generate_series(1, 50) AS i;
CREATE TABLE app."Weird Name" (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer REFERENCES app.customer (id),
    note text
);
INSERT INTO app."Weird Name" (customer_id, note)
SELECT 1 + i % 50, 'note ' || i FROM generate_series(1, 300) AS i;
CREATE VIEW app.customer_names AS SELECT name FROM app.customer;

CREATE TABLE "Mixed Case Schema ü"."Weird Name" (id bigserial PRIMARY KEY, label text);
INSERT INTO "Mixed Case Schema ü"."Weird Name" (label)
SELECT 'ü ' || i FROM generate_series(1, 120) AS i;
CREATE TABLE public."dot.ted" (id integer, v text);
INSERT INTO public."dot.ted" SELECT i, 'quoted ' || i FROM generate_series(1, 30) AS i;
CREATE TABLE dot.ted (id integer);
INSERT INTO dot.ted SELECT generate_series(1, 7);

-- The owner sees only its tenant's rows, also as owner (FORCE): pg_restore's REFRESH of the
-- materialized view over it fails under pg_restore's row_security = off.
CREATE SCHEMA secure AUTHORIZATION {OWNER};
CREATE TABLE secure.secret (id integer, tenant text);
ALTER TABLE secure.secret OWNER TO {OWNER};
INSERT INTO secure.secret
SELECT i, CASE WHEN i % 2 = 0 THEN '{OWNER}' ELSE 'other' END FROM generate_series(1, 10) AS i;
ALTER TABLE secure.secret ENABLE ROW LEVEL SECURITY;
ALTER TABLE secure.secret FORCE ROW LEVEL SECURITY;
CREATE POLICY mine ON secure.secret USING (tenant = current_user);
SET ROLE {OWNER};
CREATE MATERIALIZED VIEW secure.secret_count AS SELECT count(*) AS n FROM secure.secret;
RESET ROLE;
-- A materialized view that can be refreshed only in the source database: a restore must come
-- back without its data, and say so by name.
CREATE FUNCTION secure.only_in_source() RETURNS integer LANGUAGE plpgsql AS $f$
BEGIN
    IF current_database() <> '{SOURCE_DB}' THEN
        RAISE EXCEPTION 'only_in_source refuses database %', current_database();
    END IF;
    RETURN 1;
END $f$;
CREATE MATERIALIZED VIEW secure.source_only AS SELECT secure.only_in_source() AS one;
ANALYZE;
"""

PAYMENT_TABLES = {
    "public.payment",
    "public.payment_p2022",
    "app.payment_p2023",
    "app.payment_p2023_h1",
    "app.payment_p2023_rest",
    "public.payment_default",
}


@pytest.fixture(scope="module")
def partial_source(pg_cluster: PostgresCluster) -> str:
    """The source database with the corners above."""
    pg_cluster.drop_database(SOURCE_DB)
    pg_cluster.create_database(SOURCE_DB)
    pg_cluster.execute(PARTIAL_SCHEMA, SOURCE_DB)
    return SOURCE_DB


@pytest.fixture(scope="module")
def backups(
    pg_cluster: PostgresCluster, partial_source: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, pgvault.PipelineConfig]:
    """One backup of the source per layout: a custom archive, a tar archive, a split dump."""
    folder = tmp_path_factory.mktemp("partial")
    sources = {
        "custom": {"count_tables": ["*"]},
        "tar": {"format": "tar"},
        "split": {"jobs": 2, "count_tables": ["public.payment"]},
    }
    configs: dict[str, pgvault.PipelineConfig] = {}
    for name, extra in sources.items():
        path = folder / f"{name}.toml"
        path.write_text(
            render_config(
                name=name,
                source={"type": "pg_dump", "dsn": pg_cluster.dsn(partial_source), **extra},
                sink={"type": "local", "path": str(folder / "vault")},
            )
        )
        configs[name] = pgvault.load_config(path)
        pgvault.run(configs[name])
    return configs


@pytest.fixture
def target(pg_cluster: PostgresCluster) -> Iterator[str]:
    """The name of a database to restore into, dropped afterwards."""
    name = "partial_target"
    pg_cluster.drop_database(name)
    yield name
    pg_cluster.drop_database(name)


def user_tables(cluster: PostgresCluster, dbname: str) -> set[str]:
    """``schema.table`` of every table (plain and partitioned) in ``dbname``."""
    rows = cluster.execute(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
        dbname,
    )
    return {str(r[0]) for r in rows}


def rows(cluster: PostgresCluster, dbname: str, table: str) -> list[object]:
    """Every row of ``table`` (an SQL name) as text, sorted."""
    return [r[0] for r in cluster.execute(f"SELECT t::text FROM {table} t ORDER BY 1", dbname)]


def sql_name(qualified: str) -> str:
    schema, _, name = qualified.partition(".")
    return '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'


def assert_same_rows(cluster: PostgresCluster, restored: str, tables: set[str]) -> None:
    """The restored database holds exactly ``tables``, each with the source's rows."""
    assert user_tables(cluster, restored) == tables
    for table in tables:
        name = sql_name(table)
        assert rows(cluster, restored, name) == rows(cluster, SOURCE_DB, name), table


def test_a_partitioned_table_comes_with_its_partitions_rows_and_what_it_needs(
    pg_cluster: PostgresCluster, backups: dict[str, pgvault.PipelineConfig], target: str
) -> None:
    """--table public.payment restores all 8000 rows through every partition (default and
    sub-partitions in another schema), its sequence at its value, its enum and domain, its index
    and comment; validation counts through the parent."""
    result = pgvault.restore(backups["custom"], target_db=target, tables=("public.payment",))
    assert_same_rows(pg_cluster, target, PAYMENT_TABLES)
    assert pg_cluster.execute("SELECT count(*) FROM public.payment", target) == [(8000,)]
    sequence = "SELECT last_value, is_called FROM public.payment_payment_id_seq"
    assert pg_cluster.execute(sequence, target) == pg_cluster.execute(sequence, SOURCE_DB)
    assert pg_cluster.execute(
        "SELECT enum_range(NULL::app.mood)::text, 7::app.positive", target
    ) == [("{sad,ok,happy}", 7)]
    with pytest.raises(Exception, match="violates check constraint"):
        pg_cluster.execute("SELECT (-1)::app.positive", target)
    assert pg_cluster.execute(
        "SELECT obj_description('public.payment'::regclass), "
        "count(*) FILTER (WHERE indexname = 'payment_mood') FROM pg_indexes "
        "WHERE tablename = 'payment'",
        target,
    ) == [("payments, partitioned", 1)]
    # The serial default works on the restored table and continues after the source's ids.
    pg_cluster.execute(
        "INSERT INTO public.payment (amount, paid_on) VALUES (1, '2022-05-05')", target
    )
    assert pg_cluster.execute("SELECT max(payment_id) FROM public.payment", target) == [(8001,)]
    assert result.validation is not None
    checks = {t.qualified: t for t in result.validation.tables}
    assert set(checks) == PAYMENT_TABLES
    assert checks["public.payment"].exact and checks["public.payment"].restored == 8000
    assert not result.warnings


@pytest.mark.parametrize(
    ("tables", "schemas", "expected"),
    [
        (['app."Weird Name"'], [], {"app.Weird Name"}),
        (['APP."Weird Name"'], [], {"app.Weird Name"}),
        (['"Mixed Case Schema ü"."Weird Name"'], [], {"Mixed Case Schema ü.Weird Name"}),
        (['public."dot.ted"'], [], {"public.dot.ted"}),
        (['"dot.ted"'], [], {"public.dot.ted"}),
        (["dot.ted"], [], {"dot.ted"}),
        (["ted"], [], {"dot.ted"}),
        (["public.payment_p2022"], [], {"public.payment_p2022"}),
        ([], ['"Mixed Case Schema ü"'], {"Mixed Case Schema ü.Weird Name"}),
        (["app.customer"], ["dot"], {"app.customer", "dot.ted"}),
    ],
)
def test_names_follow_postgresql_rules(
    pg_cluster: PostgresCluster,
    backups: dict[str, pgvault.PipelineConfig],
    target: str,
    tables: list[str],
    schemas: list[str],
    expected: set[str],
) -> None:
    """Unquoted names fold to lower case, quoted ones keep case, dots and spaces, and each
    selection restores exactly its tables with the source's rows."""
    result = pgvault.restore(
        backups["custom"], target_db=target, tables=tuple(tables), schemas=tuple(schemas)
    )
    assert_same_rows(pg_cluster, target, expected)
    assert result.validation is not None
    assert {t.qualified for t in result.validation.tables} == expected


def test_identity_and_serial_columns_keep_counting(
    pg_cluster: PostgresCluster, backups: dict[str, pgvault.PipelineConfig], target: str
) -> None:
    """The identity and bigserial sequences of selected tables come back at their values."""
    pgvault.restore(
        backups["custom"],
        target_db=target,
        tables=('app."Weird Name"', '"Mixed Case Schema ü"."Weird Name"', "app.customer"),
    )
    pg_cluster.execute(
        "INSERT INTO app.\"Weird Name\" (customer_id, note) VALUES (1, 'new'); "
        'INSERT INTO "Mixed Case Schema ü"."Weird Name" (label) VALUES (\'new\')',
        target,
    )
    assert pg_cluster.execute(
        'SELECT (SELECT max(id) FROM app."Weird Name"), '
        '(SELECT max(id) FROM "Mixed Case Schema ü"."Weird Name")',
        target,
    ) == [(301, 121)]
    # Both tables selected: the foreign key between them comes along.
    assert pg_cluster.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", target) == [
        (1,)
    ]


def test_a_schema_other_than_public_restores_whole(
    pg_cluster: PostgresCluster, backups: dict[str, pgvault.PipelineConfig], target: str
) -> None:
    """--schema app restores every table and view of app, its types, and its partitions of
    public.payment as tables of their own; what needs the unselected parent is named."""
    result = pgvault.restore(backups["custom"], target_db=target, schemas=("app",))
    expected = {
        "app.customer",
        "app.Weird Name",
        "app.payment_p2023",
        "app.payment_p2023_h1",
        "app.payment_p2023_rest",
    }
    assert_same_rows(pg_cluster, target, expected)
    assert pg_cluster.execute("SELECT count(*) FROM app.customer_names", target) == [(50,)]
    assert pg_cluster.execute("SELECT count(*) FROM app.payment_p2023", target) == [(2920,)]
    # Its own partitions' indexes are attached to its own: only the attaches to public go.
    assert pg_cluster.execute(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'app.payment_p2023_pkey'::regclass",
        target,
    ) == [(2,)]
    assert any("app.payment_p2023" in w and "public.payment" in w for w in result.warnings)


def test_a_foreign_key_to_an_unselected_table_is_left_out_and_named(
    pg_cluster: PostgresCluster, backups: dict[str, pgvault.PipelineConfig], target: str
) -> None:
    """Restoring a table without the table its foreign key references restores the rows, leaves
    the key out, and says which key and why."""
    result = pgvault.restore(backups["custom"], target_db=target, tables=('app."Weird Name"',))
    assert_same_rows(pg_cluster, target, {"app.Weird Name"})
    assert any(
        "Weird Name_customer_id_fkey" in w and "app.customer" in w for w in result.warnings
    ), result.warnings


@pytest.mark.parametrize(
    ("layout", "jobs"), [("tar", 1), ("split", 1), ("split", 2), ("custom", 2)]
)
def test_partial_restores_of_tar_and_split_dumps(
    pg_cluster: PostgresCluster,
    backups: dict[str, pgvault.PipelineConfig],
    target: str,
    layout: str,
    jobs: int,
) -> None:
    """Tar archives, split dumps (data in several archives) and a single archive in parallel
    (data in shares) restore the same selection."""
    pgvault.restore(
        backups[layout],
        target_db=target,
        tables=("public.payment", 'app."Weird Name"'),
        jobs=jobs,
    )
    assert_same_rows(pg_cluster, target, PAYMENT_TABLES | {"app.Weird Name"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table", "public.nope"], "no table public.nope in backup"),
        (["--table", 'app."weird name"'], 'did you mean app."Weird Name"'),
        (["--schema", "nope"], "no schema nope in backup"),
        (["--table", "app.Weird Name"], "not a valid name"),
        (["--table", "a.b.c"], "schema.table"),
        (["--table", "app.customer_names"], "cannot be restored without table app.customer"),
    ],
)
def test_a_selection_that_matches_nothing_fails_in_one_line_and_leaves_no_database(
    pg_cluster: PostgresCluster,
    backups: dict[str, pgvault.PipelineConfig],
    target: str,
    args: list[str],
    message: str,
) -> None:
    """A selection naming nothing in the backup fails with one line naming it, and no database
    is created."""
    config = backups["custom"]
    result = pgvault_cli("restore", config.where(), "latest", "--target-db", target, *args)
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgvault: error: "), result.stderr
    assert message in lines[0]
    assert target not in pg_cluster.databases()


def test_a_partial_restore_never_replaces_a_database(
    pg_cluster: PostgresCluster, backups: dict[str, pgvault.PipelineConfig], target: str
) -> None:
    """--drop-existing with --table is refused before anything happens: replacing a database
    with one of its tables would drop every other one."""
    pgvault.restore(backups["custom"], target_db=target, tables=("dot.ted",))
    with pytest.raises(pgvault.RestoreError, match="would leave nothing in it but the selection"):
        pgvault.restore(
            backups["custom"], target_db=target, tables=("app.customer",), drop_existing=True
        )
    assert user_tables(pg_cluster, target) == {"dot.ted"}


def test_an_ambiguous_unqualified_name_is_refused(
    pg_cluster: PostgresCluster, backups: dict[str, pgvault.PipelineConfig], target: str
) -> None:
    """An unqualified --table found in several schemas is refused, naming each candidate."""
    with pytest.raises(pgvault.RestoreError, match="is in several schemas") as info:
        pgvault.restore(backups["custom"], target_db=target, tables=('"Weird Name"',))
    assert 'app."Weird Name"' in str(info.value)
    assert '"Mixed Case Schema ü"."Weird Name"' in str(info.value)
    assert target not in pg_cluster.databases()


def test_the_manifest_records_partitioned_tables_and_validation_counts_through_them(
    pg_cluster: PostgresCluster, backups: dict[str, pgvault.PipelineConfig], target: str
) -> None:
    """The manifest lists public.payment as partitioned with its partitions; a restored
    database that lost a partition fails validation of the partition and of the parent's rows."""
    manifest = pgvault.Vault.from_config(backups["custom"]).manifest("latest")
    records = {f"{t['schema']}.{t['name']}": t for t in manifest.source["tables"]}
    payment = records["public.payment"]
    assert payment["partitioned"] is True and payment["rows"] == 8000 and payment["exact"]
    assert {f"{p['schema']}.{p['name']}" for p in payment["partitions"]} == {
        "public.payment_p2022",
        "app.payment_p2023",
        "public.payment_default",
    }
    assert records["app.payment_p2023_h1"]["partition_of"] == {
        "schema": "app",
        "name": "payment_p2023",
    }
    split = pgvault.Vault.from_config(backups["split"]).manifest("latest")
    split_payment = next(t for t in split.source["tables"] if t["name"] == "payment")
    assert split_payment["rows"] == 8000 and split_payment["exact"]

    pgvault.restore(backups["custom"], target_db=target, tables=("public.payment",))
    pg_cluster.execute("DROP TABLE public.payment_default", target)
    report = validate_database(
        manifest, DatabaseTarget(pg_cluster.dsn(), target), selected=PAYMENT_TABLES_PAIRS
    )
    assert not report.ok
    failures = report.describe_failures()
    assert "public.payment_default: missing" in failures
    assert "public.payment: 5840 rows, the backup counted 8000 exactly" in failures


PAYMENT_TABLES_PAIRS = frozenset(tuple(t.split(".", 1)) for t in PAYMENT_TABLES)


def test_a_materialized_view_over_forced_row_security_restores(
    pg_cluster: PostgresCluster, backups: dict[str, pgvault.PipelineConfig], target: str
) -> None:
    """A full restore whose materialized view pg_restore cannot refresh (FORCE ROW LEVEL
    SECURITY) succeeds with the view populated as in the source; a view that cannot be
    refreshed in the new database is restored without data and named in a warning."""
    config = backups["custom"]
    result = pgvault_cli("restore", config.where(), "latest", "--target-db", target)
    assert result.returncode == 0, result.stderr
    assert pg_cluster.execute("SELECT n FROM secure.secret_count", target) == [(5,)]
    assert pg_cluster.execute(
        "SELECT relname::text, relispopulated FROM pg_class WHERE relkind = 'm' ORDER BY 1",
        target,
    ) == [("secret_count", True), ("source_only", False)]
    warnings = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1, result.stderr
    assert "secure.source_only" in warnings[0]
    assert "only_in_source refuses database" in warnings[0]
    assert f"validated {len(user_tables(pg_cluster, SOURCE_DB))} table(s)" in result.stdout


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Public.Payment", ("public", "payment")),
        ('app."Weird Name"', ("app", "Weird Name")),
        ('"say ""hi"""', ('say "hi"',)),
        (' app . "dot.ted" ', ("app", "dot.ted")),
        ("ÜBER.t$1", ("Über", "t$1")),  # only ASCII letters fold, as in a UTF-8 database
        ("x" * 70, ("x" * 63,)),  # PostgreSQL keeps 63 bytes of a name
    ],
)
def test_names_parse_as_postgresql_parses_them(text: str, names: tuple[str, ...]) -> None:
    """Folding, quoting, doubled quotes, blanks around the dot and long names, as in SQL."""
    assert parse_name(text, "--table", parts=2) == names
    assert parse_name(display_name(*names), "--table", parts=2) == names
