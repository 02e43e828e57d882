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
from tests.conftest import pgvault_cli, toml_value

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
    snapshot and counts; the globals are one shared artifact; list names the count."""
    path, manifest = backed_up
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
        assert [{k: v for k, v in t.items() if k != "bytes"} for t in view.source["tables"]] == [
            {"schema": "public", "name": "t", "rows": (i + 1) * 10, "exact": True}
        ]
        assert "globals" in view.source  # the shared globals, seen from each part
    listed = pgvault_cli("list", path)
    assert listed.returncode == 0, listed.stderr
    assert "pg_dump 19 databases (custom)" in listed.stdout


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


def test_restored_one_at_a_time_into_a_bare_cluster(
    backed_up: tuple[Path, pgvault.Manifest], many: PostgresCluster, bare: PostgresCluster
) -> None:
    """Each database, restored alone (``parts=(name,)``) into a bare cluster under its own name,
    has its rows and its owner (alice, created from the shared globals); restoring all of them
    again is refused before anything is touched, naming the first that exists."""
    path, manifest = backed_up
    config = pgvault.load_config(path)
    for name in part_names(manifest):
        result = pgvault.restore(config, manifest.backup_id, parts=(name,), dsn=bare.dsn())
        assert result.parts[0][0] == name
    owner_sql = "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE NOT datistemplate"
    owners = {str(n): str(o) for n, o in bare.execute(owner_sql)}
    for name in part_names(manifest):
        assert owners[name] == OWNER.get(name, "postgres"), name
        got = run_in(
            bare,
            name,
            "SELECT count(*), pg_get_userbyid(c.relowner) FROM t, pg_class c "
            "WHERE c.relname = 't' GROUP BY 2",
        )
        want = run_in(
            many,
            name,
            "SELECT count(*), pg_get_userbyid(c.relowner) FROM t, pg_class c "
            "WHERE c.relname = 't' GROUP BY 2",
        )
        assert got == want, name
    assert "skip_me" not in owners

    again = pgvault_cli("restore", path, manifest.backup_id, "--dsn", bare.dsn())
    assert again.returncode != 0
    assert "part CamelDb: database" in again.stderr and "already exists" in again.stderr


def test_one_database_renamed_through_the_cli(
    backed_up: tuple[Path, pgvault.Manifest], bare: PostgresCluster
) -> None:
    """restore --part NAME --target-db NEW restores that one database under a new name."""
    path, manifest = backed_up
    done = pgvault_cli(
        "restore",
        path,
        manifest.backup_id,
        "--part",
        "Mixed Case",
        "--target-db",
        "mixed_copy",
        "--dsn",
        bare.dsn(),
    )
    assert done.returncode == 0, done.stderr
    assert "mixed_copy" in done.stdout
    assert run_in(bare, "mixed_copy", "SELECT count(*) FROM t") == [(150,)]
