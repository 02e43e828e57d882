"""Restores faithful to the last property: the hard-corners database into a new database on the
same cluster and onto a bare, freshly initdb'd one; LATIN1 and SQL_ASCII byte for byte."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pgvault
from pgvault.operations.drill import drill
from pgvault.testing import PostgresCluster
from tests.conftest import pgvault_cli
from tests.hard_corners import (
    HC_ROLES,
    HC_TABLESPACE,
    HardCorners,
    create_tablespace,
    database_level,
    drop_restored,
    dump_text,
    postgres_owned_dir,
    roles_of,
)

ConfigMaker = Callable[..., Path]


def hc_config(hard_corners: HardCorners, folder: Path, extra: str = "", source: str = "") -> Path:
    """A pipeline config for the hard-corners database, its vault in ``folder``."""
    path = folder / f"hc{len(list(folder.glob('*.toml')))}.toml"
    path.write_text(
        f'name = "hc"\n[source]\ntype = "pg_dump"\n'
        f'dsn = "{hard_corners.cluster.dsn(hard_corners.name)}"\n'
        f'count_tables = ["*"]\n{source}[[transform]]\ntype = "zstd"\n'
        f'[sink]\ntype = "local"\npath = "{folder / "vault"}"\n{extra}'
    )
    return path


@pytest.fixture(scope="module")
def hc_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of this module's hard-corners vault and configs."""
    return tmp_path_factory.mktemp("hc")


@pytest.fixture(scope="module")
def hc_backup(
    hard_corners_db: HardCorners, hc_folder: Path
) -> tuple[pgvault.PipelineConfig, pgvault.Manifest]:
    """One backup of the hard-corners database, shared by this module's tests."""
    config = pgvault.load_config(hc_config(hard_corners_db, hc_folder))
    return config, pgvault.run(config)


def test_hard_corners_restore_into_a_new_database_is_faithful(
    hard_corners_db: HardCorners, hc_backup: tuple[pgvault.PipelineConfig, pgvault.Manifest]
) -> None:
    """Restored beside the original on the same cluster, the database dumps identically
    (subscription included, with --subscriptions) and its own properties match: encoding,
    ICU locale, owner, connection limit, ACL, comment, settings of the database and of a role
    in it."""
    cluster = hard_corners_db.cluster
    config, manifest = hc_backup
    drop_restored(cluster, "hc_copy")
    result = pgvault.restore(config, manifest.backup_id, target_db="hc_copy", subscriptions=True)
    try:
        assert result.validation is not None and result.validation.ok
        assert result.created_roles == ()
        assert result.notes == ()
        assert dump_text(cluster, "hc_copy") == dump_text(cluster, hard_corners_db.name)
        source = database_level(cluster, hard_corners_db.name)
        restored = database_level(cluster, "hc_copy")
        assert restored == source
        assert source["database"][3:5] == ("i", "en-US")
    finally:
        drop_restored(cluster, "hc_copy")


@pytest.mark.parametrize("jobs", [1, 2])
def test_hard_corners_restore_onto_a_bare_cluster_is_faithful(
    hard_corners_db: HardCorners,
    hc_backup: tuple[pgvault.PipelineConfig, pgvault.Manifest],
    pg_cluster_factory: Callable[..., PostgresCluster],
    jobs: int,
) -> None:
    """On a freshly initdb'd cluster, the restore creates the missing application roles (with
    their memberships, settings and comments) and nothing else, maps the tablespace, and the
    database dumps identically to the source and keeps its own properties (in parallel too)."""
    cluster = hard_corners_db.cluster
    config, manifest = hc_backup
    bare = pg_cluster_factory()
    where = create_tablespace(bare, "hc_ts_new")
    try:
        result = pgvault.restore(
            config,
            manifest.backup_id,
            target_db=hard_corners_db.name,
            dsn=bare.dsn(),
            tablespace_map={HC_TABLESPACE: "hc_ts_new"},
            subscriptions=True,
            jobs=jobs,
        )
        assert result.validation is not None and result.validation.ok
        assert sorted(result.created_roles) == sorted(HC_ROLES)
        assert roles_of(bare) == roles_of(cluster)
        # Normalised: the tablespace's name, in pg_dump's SET lines and comments, only.
        source_dump = (
            dump_text(cluster, hard_corners_db.name)
            .replace(
                f"SET default_tablespace = {HC_TABLESPACE};", "SET default_tablespace = hc_ts_new;"
            )
            .replace(f"; Tablespace: {HC_TABLESPACE}\n", "; Tablespace: hc_ts_new\n")
        )
        assert dump_text(bare, hard_corners_db.name) == source_dump
        assert database_level(bare, hard_corners_db.name) == database_level(
            cluster, hard_corners_db.name
        )
    finally:
        bare.destroy()
        shutil.rmtree(where.parent, ignore_errors=True)


def test_bare_cluster_restore_with_the_cli_reports_created_roles_and_no_tablespaces(
    hard_corners_db: HardCorners,
    hc_backup: tuple[pgvault.PipelineConfig, pgvault.Manifest],
    pg_cluster_factory: Callable[..., PostgresCluster],
) -> None:
    """What the restore needs and the target lacks is named with the option that fixes it,
    before anything is created; then --no-tablespaces puts every object in the default
    tablespace and the CLI lists the roles it created."""
    config, manifest = hc_backup
    bare = pg_cluster_factory()
    args = ("restore", config.where(), manifest.backup_id, "--target-db", "hc", "--dsn", bare.dsn())
    missing = pgvault_cli(*args)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "tablespace 'hc_ts' that the backup's objects use does not exist" in missing.stderr
    assert f"(on the source it was at {hard_corners_db.tablespace_dir})" in missing.stderr
    assert "--tablespace-map hc_ts=NEW, or --no-tablespaces" in missing.stderr
    no_roles = pgvault_cli(*args, "--no-tablespaces", "--no-roles")
    assert no_roles.returncode == 1
    assert (
        "the target lacks role(s) the backup needs: 'hc_owner' (owns objects and holds "
        "privileges)" in no_roles.stderr
    )
    assert "'hc_reader' (is named by a policy and holds privileges)" in no_roles.stderr
    assert "without --no-roles the restore creates them" in no_roles.stderr
    # Nothing of the above left anything behind.
    assert bare.databases() == {"postgres"}
    assert bare.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'hc%'") == [(0,)]

    done = pgvault_cli(*args, "--no-tablespaces")
    assert done.returncode == 0, done.stderr
    assert "created role(s) the target lacked: hc_owner, hc_reader, hc_user" in done.stdout
    assert bare.execute(
        "SELECT count(*) FROM pg_class WHERE reltablespace <> 0 AND relnamespace = "
        "'app'::regnamespace",
        "hc",
    ) == [(0,)]
    assert bare.execute(
        "SELECT tableowner::text FROM pg_tables WHERE tablename = 'cold'", "hc"
    ) == [("hc_owner",)]


def test_without_globals_a_bare_cluster_restore_names_the_missing_roles(
    hard_corners_db: HardCorners,
    hc_folder: Path,
    pg_cluster_factory: Callable[..., PostgresCluster],
) -> None:
    """A backup without globals (source.globals = false, or taken before them) restores onto
    a bare cluster only with the roles it needs; the error names them, what they do, and
    which options leave them out (a policy's role cannot be left out)."""
    config = pgvault.load_config(hc_config(hard_corners_db, hc_folder, source="globals = false\n"))
    manifest = pgvault.run(config)
    assert not [a for a in manifest.artifacts if a.role == "globals"]
    bare = pg_cluster_factory()
    with pytest.raises(pgvault.RestoreError) as info:
        pgvault.restore(
            config,
            manifest.backup_id,
            target_db="hc",
            dsn=bare.dsn(),
            no_tablespaces=True,
            no_owner=True,
            no_privileges=True,
        )
    message = str(info.value)
    assert message.startswith(
        "the target lacks role(s) the backup needs: 'hc_reader' (is named by a policy); "
        "this backup holds no roles"
    )
    assert bare.databases() == {"postgres"}


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
def test_a_database_round_trips_byte_for_byte(
    pg_cluster: PostgresCluster, make_config: ConfigMaker, encoding: str
) -> None:
    """A LATIN1 or SQL_ASCII database backs up and comes back in its own encoding with every
    byte of its text unchanged (a SQL_ASCII one used to fail to back up at all)."""
    source = f"enc_{encoding.lower()}"
    copy = f"{source}_copy"
    for name in (source, copy):
        pg_cluster.drop_database(name)
    with pg_cluster.connect() as conn:
        conn.execute(
            f"CREATE DATABASE {source} TEMPLATE template0 ENCODING '{encoding}' LOCALE 'C'"
        )
    every_byte = bytes(range(0x20, 0x100)).hex()
    pg_cluster.execute(
        'CREATE TABLE "tëxt" (id int PRIMARY KEY, s text);'
        f"INSERT INTO \"tëxt\" SELECT 1, convert_from(decode('{every_byte}', 'hex'), "
        f"'{encoding}');"
        'INSERT INTO "tëxt" SELECT i, repeat(chr(65 + i % 26), i) FROM generate_series(2, 50) i',
        source,
    )
    config = pgvault.load_config(
        make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(source), "count_tables": ["*"]})
    )
    manifest = pgvault.run(config)
    assert manifest.source["database_properties"]["encoding"] == encoding
    pgvault.restore(config, manifest.backup_id, target_db=copy)

    def stored(name: str) -> list[tuple[object, ...]]:
        return pg_cluster.execute(
            # The stored bytes: from the database's encoding to itself converts nothing.
            f"SELECT id, encode(convert_to(s, '{encoding}'), 'hex') FROM \"tëxt\" ORDER BY id",
            name,
        )

    def encoding_of(name: str) -> list[tuple[object, ...]]:
        return pg_cluster.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
            f"WHERE datname = '{name}'"
        )

    assert stored(copy) == stored(source)
    assert stored(copy)[0][1] == every_byte
    assert encoding_of(copy) == encoding_of(source) == [(encoding, "C", "C")]
    for name in (source, copy):
        pg_cluster.drop_database(name)


@pytest.fixture
def german_locales() -> Iterator[Path]:
    """A private locale folder (for LOCPATH) with de_DE.UTF-8, which this machine lacks."""
    folder = postgres_owned_dir("pgvault-locales-")
    subprocess.run(
        ["localedef", "-i", "de_DE", "-f", "UTF-8", str(folder / "de_DE.UTF-8")],
        check=True,
        capture_output=True,
    )
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield folder
    shutil.rmtree(folder.parent, ignore_errors=True)


def test_a_locale_the_target_lacks_fails_before_anything_is_created(
    pg_cluster: PostgresCluster, make_config: ConfigMaker, german_locales: Path
) -> None:
    """A source database in a locale the target server lacks is refused before anything is
    created or replaced, naming the locale and --locale; with --locale the restore keeps the
    source's encoding in the locale chosen."""
    source = PostgresCluster(environment={"LOCPATH": str(german_locales)})
    try:
        source.start()
        with source.connect() as conn:
            conn.execute(
                "CREATE DATABASE de TEMPLATE template0 ENCODING 'UTF8' LOCALE 'de_DE.UTF-8'"
            )
        source.execute("CREATE TABLE words AS SELECT 'Straße' AS w", "de")
        config = pgvault.load_config(make_config({"type": "pg_dump", "dsn": source.dsn("de")}))
        manifest = pgvault.run(config)
    finally:
        source.destroy()
    for name in ("de_new", "de_old"):
        pg_cluster.drop_database(name)
    with pytest.raises(pgvault.RestoreError) as info:
        pgvault.restore(config, manifest.backup_id, target_db="de_new", dsn=pg_cluster.dsn())
    assert "cannot create a database with the backup's encoding UTF8, locale de_DE.UTF-8" in (
        str(info.value)
    )
    assert "--locale NAME" in str(info.value)
    assert "de_new" not in pg_cluster.databases()

    pg_cluster.create_database("de_old")
    pg_cluster.execute("CREATE TABLE keep AS SELECT 1 AS x", "de_old")
    with pytest.raises(pgvault.RestoreError, match=r"locale de_DE\.UTF-8"):
        pgvault.restore(
            config,
            manifest.backup_id,
            target_db="de_old",
            dsn=pg_cluster.dsn(),
            drop_existing=True,
        )
    assert pg_cluster.execute("SELECT x FROM keep", "de_old") == [(1,)]
    assert [m.kind for m in pgvault.Vault.from_config(config).backups()] == ["scheduled"]
    assert not [d for d in pg_cluster.databases() if d.startswith("pgvault_probe_")]

    pgvault.restore(
        config, manifest.backup_id, target_db="de_new", dsn=pg_cluster.dsn(), locale="C.UTF-8"
    )
    assert pg_cluster.execute(
        "SELECT pg_encoding_to_char(encoding), datcollate FROM pg_database WHERE datname = 'de_new'"
    ) == [("UTF8", "C.UTF-8")]
    assert pg_cluster.execute("SELECT w FROM words", "de_new") == [("Straße",)]
    for name in ("de_new", "de_old"):
        pg_cluster.drop_database(name)


OWNERSHIP_CHECKS = """
[drill]
server = "{server}"
[[drill.check]]
name = "owner kept"
sql = "SELECT tableowner FROM pg_tables WHERE schemaname = 'app' AND tablename = 'accounts'"
equals = "hc_owner"
[[drill.check]]
name = "grant kept"
sql = "SELECT has_table_privilege('hc_reader', 'app.accounts', 'SELECT')"
equals = true
[[drill.check]]
name = "no subscription"
sql = "SELECT count(*) FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid \
WHERE d.datname = current_database()"
equals = 0
"""


@pytest.mark.parametrize("server", ["ephemeral", "source"])
def test_drill_keeps_owners_and_privileges_and_never_restores_subscriptions(
    hard_corners_db: HardCorners,
    hc_backup: tuple[pgvault.PipelineConfig, pgvault.Manifest],
    hc_folder: Path,
    server: str,
) -> None:
    """A drill on a bare ephemeral cluster restores owners and privileges (the roles come from
    the backup), and on the source server too; neither restores the subscription, and the
    drill on the source server removes its database although the source has one."""
    _, manifest = hc_backup
    path = hc_config(hard_corners_db, hc_folder, extra=OWNERSHIP_CHECKS.format(server=server))
    result = drill(pgvault.load_config(path), manifest.backup_id)
    assert result.ok, result.error
    assert [c.ok for c in result.checks] == [True, True, True]
    leftovers = [d for d in hard_corners_db.cluster.databases() if d.startswith("pgvault_")]
    assert leftovers == []


def test_a_failed_restore_with_a_subscription_is_removed_all_the_same(
    hard_corners_db: HardCorners, hc_folder: Path
) -> None:
    """A restore with --subscriptions that fails validation still removes its database: the
    subscription is detached (never dropping the publisher's slot) before the drop."""
    config = pgvault.load_config(hc_config(hard_corners_db, hc_folder))
    manifest = pgvault.run(config)
    stored = hc_folder / "vault" / "hc" / "backups" / manifest.backup_id / "manifest.json"
    data = json.loads(stored.read_text())
    data["source"]["tables"].append({"schema": "app", "name": "gone", "rows": 1, "exact": True})
    stored.write_text(json.dumps(data))
    cluster = hard_corners_db.cluster
    with pytest.raises(pgvault.RestoreError, match=r"app\.gone: missing"):
        pgvault.restore(config, manifest.backup_id, target_db="hc_failed", subscriptions=True)
    assert "hc_failed" not in cluster.databases()
    assert cluster.execute("SELECT subname::text FROM pg_subscription") == [("hc_sub",)]


def _globals_text(config: pgvault.PipelineConfig, manifest: pgvault.Manifest) -> str:
    vault = pgvault.Vault.from_config(config)
    [art] = [a for a in manifest.artifacts if a.role == "globals"]
    return b"".join(vault.decoded(manifest, art.path)).decode()


def test_role_passwords_only_when_asked_and_readable(
    pg_cluster: PostgresCluster,
    make_config: ConfigMaker,
    pg_cluster_factory: Callable[..., PostgresCluster],
) -> None:
    """Password hashes stay out of the globals by default; role_passwords = true stores them
    (and a restore onto a bare cluster brings them back); a backup role that cannot read
    pg_authid still backs up, without them, and the manifest says why."""
    pg_cluster.execute(
        "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pw_app') THEN "
        "CREATE ROLE pw_app LOGIN PASSWORD 'pw-app-secret'; "
        "CREATE ROLE pw_backup LOGIN; END IF; END$$"
    )
    pg_cluster.drop_database("pw_db")
    with pg_cluster.connect() as conn:
        conn.execute("CREATE DATABASE pw_db OWNER pw_backup")
    pg_cluster.execute(
        "SET ROLE pw_backup; CREATE TABLE t AS SELECT 1 AS x; GRANT SELECT ON t TO pw_app",
        "pw_db",
    )
    hash_row = pg_cluster.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'pw_app'")
    secret = str(hash_row[0][0])
    assert secret.startswith("SCRAM-SHA-256$")

    plain = pgvault.load_config(make_config({"type": "pg_dump", "dsn": pg_cluster.dsn("pw_db")}))
    manifest = pgvault.run(plain)
    assert manifest.source["globals"] == {"artifact": "globals.sql", "role_passwords": False}
    assert "SCRAM-SHA-256$" not in _globals_text(plain, manifest)

    asked = {"type": "pg_dump", "dsn": pg_cluster.dsn("pw_db"), "role_passwords": True}
    with_hashes = pgvault.load_config(make_config(asked, name="hashes"))
    manifest = pgvault.run(with_hashes)
    assert manifest.source["globals"]["role_passwords"] is True
    assert secret in _globals_text(with_hashes, manifest)
    bare = pg_cluster_factory()
    result = pgvault.restore(with_hashes, manifest.backup_id, target_db="pw_db", dsn=bare.dsn())
    assert "pw_app" in result.created_roles
    assert bare.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'pw_app'") == hash_row

    dsn = f"postgresql://pw_backup@127.0.0.1:{pg_cluster.port}/pw_db"
    unprivileged = pgvault.load_config(make_config({**asked, "dsn": dsn}, name="unprivileged"))
    manifest = pgvault.run(unprivileged)
    assert manifest.source["globals"] == {
        "artifact": "globals.sql",
        "role_passwords": False,
        "role_passwords_note": "role passwords left out: the backup role cannot read pg_authid",
    }
    assert "SCRAM-SHA-256$" not in _globals_text(unprivileged, manifest)
    assert manifest.source["roles"]["pw_app"] == ["privileges"]
    assert manifest.source["database_properties"]["owner"] == "pw_backup"
    pg_cluster.drop_database("pw_db")
