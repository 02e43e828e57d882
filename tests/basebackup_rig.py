"""Clusters that archive WAL into a vault, and pipelines that take base backups of them."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pgvault.testing.postgres import PostgresCluster
from tests.conftest import render_config
from tests.wal.conftest import WalRig, chown_postgres, postgres_folder, set_archive_command

Rig = Callable[..., WalRig]


def basebackup_config(rig: WalRig, *, name: str = "base.toml", **source: Any) -> Path:
    """A pipeline beside the rig's: same vault, transforms and [wal], a basebackup source."""
    _, _, rest = rig.config.read_text().partition("[[transform]]")
    head = render_config(
        name="main",
        source={"type": "basebackup", "dsn": rig.cluster.dsn(), **source},
        sink={"type": "local", "path": str(rig.vault)},
        transforms=[],
    ).split("[sink]")[0]
    path = rig.folder / name
    path.write_text(head + "[[transform]]" + rest)
    chown_postgres(path)
    return path


def _fill(rig: WalRig) -> WalRig:
    rig.cluster.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
    (name,) = rig.switch(1)
    rig.wait_archived(name)
    return rig


@pytest.fixture
def archiving(wal_rig: Rig) -> Iterator[WalRig]:
    """A cluster archiving through wal-push into its vault, with a table ``t`` of 1000 rows and
    one segment archived already (so the vault's folders belong to postgres, as they do when
    PostgreSQL archives before the first backup). Its own, for a test that breaks or stops it."""
    yield _fill(wal_rig("push"))


@pytest.fixture(scope="module")
def archiving_shared(pgvault_for_postgres: list[str]) -> Iterator[WalRig]:
    """:func:`archiving`, made once per module for the tests that leave its cluster as they
    found it (initdb, start and the first archived segment cost seconds each time). Its vault
    holds the backups earlier tests took: compare it before and after rather than expect it
    empty; ``t`` has 1000 rows unless a test added some."""
    conf = {"wal_level": "replica", "archive_mode": "on", "archive_command": "'/bin/false'"}
    cluster = PostgresCluster(settings=conf, initdb_args=("--wal-segsize=1",))
    folder = postgres_folder("pgvault-wal-")
    try:
        cluster.start()
        rig = WalRig(cluster, folder, pgvault_for_postgres, None, {}, encrypt=True)
        set_archive_command(rig, "push")
        yield _fill(rig)
    finally:
        cluster.destroy()
        shutil.rmtree(folder, ignore_errors=True)
