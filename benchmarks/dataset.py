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
