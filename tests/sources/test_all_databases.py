"""All databases of a server in one run (``databases = ["*"]``): a cluster of 20 databases (mixed
case and quoted names, one owned by another role) backed up at once, each database its own part
with the globals stored once, then restored one at a time into a bare second cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pgvault
from pgvault.postgres.client import quote_ident
from pgvault.sources.pg_dump import choose_databases
from pgvault.testing import PostgresCluster
from pgvault.vault.parts import part_names, part_view
from tests.conftest import toml_value

NAMES = [f"db{i:02d}" for i in range(1, 15)] + [
    "Mixed Case",
    'quote"d',
    "CamelDb",
    "owned_by_alice",
    "dash-name",
    "skip_me",
]
OWNER = {"owned_by_alice": "alice"}


def run_in(cluster: PostgresCluster, dbname: str, sql: str) -> list[tuple[object, ...]]:
    """Run ``sql`` in ``dbname``, whatever characters its name holds (a URI path would need
    them percent-encoded)."""
    with psycopg.connect(cluster.dsn(), dbname=dbname, autocommit=True) as conn:
        cur = conn.execute(sql)  # type: ignore[call-overload]
        return cur.fetchall() if cur.description else []


@pytest.fixture(scope="module")
def many() -> Iterator[PostgresCluster]:
    """A cluster with 20 small databases, each with one table of (position + 1) * 10 rows."""
    cluster = PostgresCluster().start()
    try:
        cluster.execute("CREATE ROLE alice LOGIN")
        for i, name in enumerate(NAMES):
            owner = f" OWNER {OWNER[name]}" if name in OWNER else ""
            cluster.execute(f"CREATE DATABASE {quote_ident(name)}{owner}")
            run_in(
                cluster,
                name,
                f"CREATE TABLE t (id int PRIMARY KEY, name text);"
                f"INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, {(i + 1) * 10}) g;"
                + ("ALTER TABLE t OWNER TO alice;" if name in OWNER else ""),
            )
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def bare() -> Iterator[PostgresCluster]:
    """A second, empty cluster: no databases, no roles but postgres."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.destroy()


def _config(tmp_path: Path, cluster: PostgresCluster, **options: object) -> Path:
    source = {"type": "pg_dump", "dsn": cluster.dsn(), **options}
    lines = ['name = "cluster"', "[source]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in source.items()]
    lines += ["[[transform]]", 'type = "zstd"', "[sink]", 'type = "local"']
    lines.append(f"path = {toml_value(str(tmp_path / 'vault'))}")
    path = tmp_path / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def backed_up(
    many: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, pgvault.Manifest]:
    """One run of ``databases = ["*"]`` (but skip_me and postgres), jobs = 4."""
    tmp = tmp_path_factory.mktemp("all")
    path = _config(
        tmp,
        many,
        databases=["*"],
        exclude_databases=["skip_*", "postgres"],
        jobs=4,
        count_tables=["*"],
    )
    return path, pgvault.run(pgvault.load_config(path))


def test_every_database_is_a_part_with_globals_once(
    backed_up: tuple[Path, pgvault.Manifest],
) -> None:
    """Each chosen database (not templates, not the excluded) is its own part with its own
    snapshot and counts; the globals are one shared artifact."""
    _path, manifest = backed_up
    expected = sorted(n for n in NAMES if n != "skip_me")
    assert manifest.format_version == 2 and manifest.source_type == "pg_dump"
    assert part_names(manifest) == expected
    shared = [a for a in manifest.artifacts if not a.part]
    assert [(a.path, a.role) for a in shared] == [("globals.sql.zst", "globals")]
    assert len({a.path for a in manifest.artifacts}) == len(manifest.artifacts) == 20
    for i, name in enumerate(NAMES):
        if name == "skip_me":
            continue
        view = part_view(manifest, name)
        assert view.source["database"] == name and view.source["snapshot_at"]
        assert view.source["tables"] == [
            {"schema": "public", "name": "t", "rows": (i + 1) * 10, "exact": True}
        ]
        assert "globals" in view.source  # the shared globals, seen from each part


def test_choose_databases_rules() -> None:
    """Names are exact (case-sensitive) unless they hold wildcards; an exact name that is not
    there, or a choice of nothing, is an error."""
    present = ["App", "app2", "postgres", "x"]
    assert choose_databases(present, ["*"], ["postgres"]) == ["App", "app2", "x"]
    assert choose_databases(present, ["App", "x"], []) == ["App", "x"]
    assert choose_databases(present, ["app*"], []) == ["app2"]
    with pytest.raises(pgvault.SourceError, match="database 'app' does not exist"):
        choose_databases(present, ["app"], [])
    with pytest.raises(pgvault.SourceError, match="no database to dump"):
        choose_databases(present, ["*"], ["*"])


def test_exclude_without_databases_is_a_config_error(tmp_path: Path, many: PostgresCluster) -> None:
    """exclude_databases alone is refused, naming the key."""
    path = _config(tmp_path, many, exclude_databases=["x"])
    with pytest.raises(pgvault.ConfigError, match="exclude_databases needs databases"):
        pgvault.load_config(path)
