"""The benchmark dataset: pgbench tables plus an application-like table of mixed types.

pgbench alone compresses unrealistically well (its filler columns are blank), so about half the
bytes come from ``app_events``: text of varying length built from a word list, jsonb, numeric,
timestamps and a few bytea values, which compress like a real application's data.
"""

from __future__ import annotations

import subprocess

from pgvault.postgres.cluster import PostgresCluster

# A word list, so text compresses like prose, not like random bytes or blank padding.
WORDS = [
    "order",
    "customer",
    "invoice",
    "payment",
    "shipped",
    "pending",
    "delivered",
    "cancelled",
    "refund",
    "account",
    "user",
    "session",
    "login",
    "logout",
    "checkout",
    "cart",
    "product",
    "review",
    "rating",
    "address",
    "city",
    "street",
    "zip",
    "country",
    "email",
    "phone",
    "note",
    "priority",
    "urgent",
    "normal",
    "discount",
    "coupon",
    "tax",
    "total",
    "subtotal",
    "warehouse",
    "stock",
    "supplier",
    "category",
    "brand",
    "color",
    "size",
    "weight",
]

EVENTS_TABLE = """
CREATE TABLE app_events (
    id bigserial PRIMARY KEY,
    user_id integer NOT NULL,
    kind text NOT NULL,
    payload jsonb,
    amount numeric(12, 2),
    created_at timestamptz NOT NULL,
    note text,
    attachment bytea
)
"""

# The subquery mentions the outer row (``i > 0``) so PostgreSQL draws new words for every row.
EVENTS_ROWS = """
INSERT INTO app_events (user_id, kind, payload, amount, created_at, note, attachment)
SELECT
    (random() * 100000)::int,
    (ARRAY['login', 'purchase', 'view', 'logout', 'signup', 'refund'])[1 + (i %% 6)],
    jsonb_build_object(
        'ip', '10.' || (i %% 256) || '.' || ((i / 256) %% 256) || '.' || (random() * 255)::int,
        'agent', (ARRAY['Mozilla/5.0 (X11; Linux x86_64)',
                        'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)',
                        'curl/8.4.0', 'python-requests/2.31'])[1 + (i %% 4)],
        'items', jsonb_build_array((random() * 1000)::int, (random() * 1000)::int),
        'ok', i %% 3 <> 0),
    (random() * 5000)::numeric(12, 2),
    timestamptz '2026-01-01' + (i || ' seconds')::interval,
    (SELECT string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ')
       FROM generate_series(1, 3 + (i %% 37)) AS g(n),
            (SELECT %(words)s::text[] AS w) AS words
      WHERE g.n > 0 AND i > 0),
    CASE WHEN i %% 40 = 0 THEN decode(md5(i::text) || md5((i + 1)::text), 'hex') END
FROM generate_series(1, %(rows)s) AS i
"""


def build(cluster: PostgresCluster, dbname: str, size_gb: float) -> int:
    """Create ``dbname`` with about ``size_gb`` GB on disk; return its size in bytes."""
    cluster.create_database(dbname)
    scale = max(1, round(35 * size_gb))
    pgbench = cluster.bindir / "pgbench"
    subprocess.run(
        [
            str(pgbench),
            "-i",
            "-q",
            "-s",
            str(scale),
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.port),
            "-U",
            "postgres",
            dbname,
        ],
        check=True,
        capture_output=True,
    )
    rows = max(10_000, round(2_200_000 * size_gb))
    with cluster.connect(dbname) as conn:
        conn.execute(EVENTS_TABLE)
        conn.execute(EVENTS_ROWS, {"words": "{" + ",".join(WORDS) + "}", "rows": rows})
        conn.execute("VACUUM ANALYZE")
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


# Shaped like the data of the issue that asked for it (issue 17): pgbench plus a table of
# high-entropy text (md5), jsonb holding timestamps, numeric and variable blank padding, which
# compresses far less than the word-list table above: more bytes reach zstd, AES and SHA-256.
ENTROPY_TABLE = """
CREATE TABLE entropy_rows (
    id bigserial PRIMARY KEY,
    token text NOT NULL,
    doc jsonb NOT NULL,
    price numeric(14, 4) NOT NULL,
    padding text NOT NULL
)
"""

ENTROPY_ROWS = """
INSERT INTO entropy_rows (token, doc, price, padding)
SELECT
    md5(i::text || random()::text) || md5(random()::text),
    jsonb_build_object(
        'at', now() - random() * interval '900 days',
        'seen', clock_timestamp(),
        'ref', md5(random()::text),
        'n', (random() * 1e6)::int),
    (random() * 1e8)::numeric(14, 4),
    repeat(' ', (random() * 200)::int) || md5(random()::text)
FROM generate_series(1, %(rows)s) AS i
"""


def build_entropy(cluster: PostgresCluster, dbname: str, size_gb: float) -> int:
    """Create ``dbname``: pgbench (about half) plus ``entropy_rows`` of md5 text, jsonb with
    timestamps, numeric and variable padding, about ``size_gb`` GB on disk; its size in bytes."""
    cluster.create_database(dbname)
    _pgbench(cluster, dbname, max(1, round(23 * size_gb)))
    rows = max(10_000, round(1_800_000 * size_gb))
    with cluster.connect(dbname) as conn:
        conn.execute(ENTROPY_TABLE)
        conn.execute(ENTROPY_ROWS, {"rows": rows})
        conn.execute("VACUUM ANALYZE")
        return _size(conn)


# Many small tables: per-table costs (pg_dump's catalog queries, pgvault's counts and
# validation, pg_restore's per-object work) dominate instead of bytes.
TABLE_DDL = (
    "CREATE TABLE {name} (id int PRIMARY KEY, name text, amount numeric(12, 2), "
    "created_at timestamptz); "
    # md5 of the table's name too: tables that repeated each other would compress away.
    "INSERT INTO {name} SELECT i, md5('{name}' || i) || ' item', (i * 7 % 10000) / 100.0, "
    "timestamptz '2026-01-01' + i * interval '1 minute' FROM generate_series(1, {rows}) AS i"
)


def build_tables(cluster: PostgresCluster, dbname: str, tables: int, size_gb: float) -> int:
    """Create ``dbname`` with ``tables`` small tables (a primary key each) of about ``size_gb``
    GB in all; its size in bytes."""
    cluster.create_database(dbname)
    # A row of this table takes about 110 bytes on disk with its index entry.
    rows = max(1, round(size_gb * 1e9 / 110 / tables))
    with cluster.connect(dbname) as conn:
        # One table per statement, autocommitted: a transaction creating thousands would run
        # out of lock slots (max_locks_per_transaction).
        for t in range(1, tables + 1):
            conn.execute(TABLE_DDL.format(name=f"t{t:05d}", rows=rows))
        conn.execute("VACUUM ANALYZE")
        return _size(conn)


def _pgbench(cluster: PostgresCluster, dbname: str, scale: int) -> None:
    pgbench = cluster.bindir / "pgbench"
    argv = [str(pgbench), "-i", "-q", "-s", str(scale), "-h", "127.0.0.1"]
    argv += ["-p", str(cluster.port), "-U", "postgres", dbname]
    subprocess.run(argv, check=True, capture_output=True)


def _size(conn: object) -> int:
    row = conn.execute("SELECT pg_database_size(current_database())").fetchone()  # type: ignore[attr-defined]
    return int(row[0]) if row else 0


DATASETS = ("app", "entropy", "tables")
"""The benchmark's datasets: its original one, the high-entropy one, many small tables."""


def build_named(cluster: PostgresCluster, kind: str, dbname: str, size_gb: float) -> int:
    """Build dataset ``kind`` (one of :data:`DATASETS`) of about ``size_gb`` GB."""
    if kind == "app":
        return build(cluster, dbname, size_gb)
    if kind == "entropy":
        return build_entropy(cluster, dbname, size_gb)
    if kind == "tables":
        return build_tables(cluster, dbname, 2000, size_gb)
    raise ValueError(f"unknown dataset {kind!r}; known: {', '.join(DATASETS)}")
