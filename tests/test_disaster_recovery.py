"""Restores faithful to the last property: the hard-corners database into a new database on the
same cluster and onto a bare, freshly initdb'd one; LATIN1 and SQL_ASCII byte for byte."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import pgvault
from pgvault.testing import PostgresCluster
from tests.hard_corners import (
    HC_ROLES,
    HC_TABLESPACE,
    HardCorners,
    create_tablespace,
    database_level,
    drop_restored,
    dump_text,
    roles_of,
)

ConfigMaker = Callable[..., Path]


@pytest.fixture(scope="module")
def hc_backup(
    hard_corners_db: HardCorners, tmp_path_factory: pytest.TempPathFactory
) -> tuple[pgvault.PipelineConfig, pgvault.Manifest]:
    """One backup of the hard-corners database, shared by this module's tests."""
    folder = tmp_path_factory.mktemp("hc")
    config_path = folder / "hc.toml"
    config_path.write_text(
        f'name = "hc"\n[source]\ntype = "pg_dump"\n'
        f'dsn = "{hard_corners_db.cluster.dsn(hard_corners_db.name)}"\n'
        'count_tables = ["*"]\n[[transform]]\ntype = "zstd"\n'
        f'[sink]\ntype = "local"\npath = "{folder / "vault"}"\n'
    )
    config = pgvault.load_config(config_path)
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


def test_hard_corners_restore_onto_a_bare_cluster_is_faithful(
    hard_corners_db: HardCorners,
    hc_backup: tuple[pgvault.PipelineConfig, pgvault.Manifest],
    pg_cluster_factory: Callable[..., PostgresCluster],
) -> None:
    """On a freshly initdb'd cluster, the restore creates the missing application roles (with
    their memberships, settings and comments) and nothing else, maps the tablespace, and the
    database dumps identically to the source and keeps its own properties."""
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
