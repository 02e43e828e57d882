"""Shared helpers: pipeline configs in temp folders, a database rich in types, content snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.testing import PostgresCluster

# The hard-corners database (tests/hard_corners.py), for every test module that asks for it.
from tests.hard_corners import hard_corners_db  # noqa: F401

RICH_SCHEMA = r'''
CREATE SCHEMA sales;
CREATE TABLE public.users (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text UNIQUE,
    profile jsonb,
    balance numeric(30, 8),
    created_at timestamptz,
    born date,
    wake time,
    avatar bytea,
    tags text[],
    active boolean,
    "MixedCase" integer
);
INSERT INTO public.users (name, email, profile, balance, created_at, born, wake, avatar, tags,
                          active, "MixedCase")
SELECT
    'user ' || i || CASE WHEN i % 7 = 0 THEN ' ção ☃ 数据' ELSE '' END,
    CASE WHEN i % 11 = 0 THEN NULL ELSE 'u' || i || '@example.com' END,
    jsonb_build_object('i', i, 'nested', jsonb_build_object('list', jsonb_build_array(i, i * 2,
                       'x')), 'flag', i % 2 = 0),
    (i * 1234.56789012)::numeric(30, 8) - 500000,
    timestamptz '2020-01-01 00:00:00+00' + (i || ' minutes')::interval,
    date '1950-01-01' + i,
    time '06:00' + (i || ' seconds')::interval,
    decode(md5(i::text) || md5((i * 3)::text), 'hex') || '\x00ff00'::bytea,
    ARRAY['a' || i, 'b', NULL],
    i % 3 = 0,
    CASE WHEN i % 5 = 0 THEN NULL ELSE i END
FROM generate_series(1, 3000) AS i;

CREATE TABLE sales.orders (
    id serial PRIMARY KEY,
    user_id bigint REFERENCES public.users (id),
    total numeric,
    placed_at timestamp,
    note text
);
INSERT INTO sales.orders (user_id, total, placed_at, note)
SELECT (i % 3000) + 1, i / 7.0, timestamp '2024-02-29 12:00' + (i || ' hours')::interval,
       repeat('n', i % 50)
FROM generate_series(1, 5000) AS i;
CREATE INDEX orders_user ON sales.orders (user_id);

CREATE TABLE public."Weird ""Name""" (x int, "select" text);
INSERT INTO public."Weird ""Name""" VALUES (1, 'quoted'), (2, NULL);

CREATE TABLE public.documents (id int PRIMARY KEY, body oid);
INSERT INTO public.documents
SELECT i, lo_from_bytea(0, convert_to(repeat('large object ' || i || ' ', 2000), 'UTF8'))
FROM generate_series(1, 3) AS i;

CREATE VIEW public.active_users AS SELECT id, name FROM public.users WHERE active;
SELECT setval('public.users_id_seq', 4242);
'''


def snapshot_database(cluster: PostgresCluster, dbname: str) -> dict[str, Any]:
    """Every user table's rows (as text, sorted), indexes, constraints, sequences, large objects
    and views of ``dbname``."""
    tables = cluster.execute(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        dbname,
    )
    snap: dict[str, Any] = {}
    for (table,) in tables:
        rows = cluster.execute(f"SELECT t::text FROM {table} t ORDER BY 1", dbname)
        snap[str(table)] = [r[0] for r in rows]
    snap["<sequences>"] = cluster.execute(
        "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2", dbname
    )
    snap["<large objects>"] = cluster.execute(
        "SELECT oid::bigint, md5(lo_get(oid)) FROM pg_largeobject_metadata ORDER BY 1", dbname
    )
    # Post-data: what a restore builds after the rows, and what a half-done one lacks.
    snap["<indexes>"] = cluster.execute(
        "SELECT schemaname, tablename, indexname, indexdef FROM pg_indexes "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2, 3",
        dbname,
    )
    snap["<constraints>"] = cluster.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE connamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema') "
        "ORDER BY 1, 2",
        dbname,
    )
    snap["<views>"] = cluster.execute(
        "SELECT schemaname, viewname, definition FROM pg_views "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
        dbname,
    )
    return snap


@pytest.fixture(scope="session")
def rich_db(pg_cluster: PostgresCluster) -> str:
    """Name of a database in the session cluster with many types, a view and large objects."""
    name = "rich"
    if name not in pg_cluster.databases():
        pg_cluster.create_database(name)
        pg_cluster.execute(RICH_SCHEMA, name)
        pg_cluster.execute("ANALYZE", name)
    return name


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_config(
    *,
    name: str = "test",
    source: dict[str, Any],
    sink: dict[str, Any],
    transforms: list[dict[str, Any]] | None = None,
    extra: str = "",
) -> str:
    lines = [f"name = {toml_value(name)}"]
    if "checksums" in source:
        lines.append(f"checksums = {toml_value(source.pop('checksums'))}")
    lines.append("[source]")
    lines += [f"{k} = {toml_value(v)}" for k, v in source.items()]
    for t in transforms if transforms is not None else [{"type": "zstd", "level": 3}]:
        lines.append("[[transform]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in t.items()]
    lines.append("[sink]")
    lines += [f"{k} = {toml_value(v)}" for k, v in sink.items()]
    return "\n".join(lines) + "\n" + extra


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a pipeline config into the test's folder (local sink under it); return its path."""
    counter = iter(range(1000))

    def make(
        source: dict[str, Any],
        transforms: list[dict[str, Any]] | None = None,
        *,
        name: str = "test",
        sink: dict[str, Any] | None = None,
        extra: str = "",
    ) -> Path:
        path = tmp_path / f"pipeline{next(counter)}.toml"
        path.write_text(
            render_config(
                name=name,
                source=dict(source),
                sink=sink or {"type": "local", "path": str(tmp_path / "vault")},
                transforms=transforms,
                extra=extra,
            )
        )
        return path

    return make


@pytest.fixture
def files_source(tmp_path: Path) -> dict[str, Any]:
    """A files source of one small folder (data/a.txt), as a [source] table for make_config."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("hello\n")
    return {"type": "files", "paths": [str(data)]}


def pgvault_cli(
    *args: str | Path, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``pgvault`` command (as ``python -m pgvault``) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "pgvault", *map(str, args)],
        capture_output=True,
        text=True,
        input=input,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def load(path: Path) -> pgvault.PipelineConfig:
    return pgvault.load_config(path)
