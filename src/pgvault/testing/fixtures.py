"""pytest fixtures shipped with pgvault (registered through the ``pytest11`` entry point).

Plugin packages and applications reuse them to test against real servers:

* ``pg_cluster`` — one throwaway PostgreSQL cluster for the whole session;
* ``pg_cluster_factory`` — call it for a dedicated cluster (own settings, free to stop or break);
* ``pg_database`` — a fresh, empty database in the session cluster; its DSN;
* ``s3_server``/``s3_sink``, ``gcs_server``/``gcs_sink``, ``sftp_server``/``sftp_sink`` (and
  ``*_sink_options``) — storage servers on loopback and sinks on them
  (:mod:`pgvault.testing.storage_fixtures`).

When the server binaries are missing, the fixtures fail under CI (``CI=true``) and skip with the
reason elsewhere: a missing server never silently passes.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Mapping

import pytest

from pgvault.testing.postgres import ClusterUnavailable, PostgresCluster
from pgvault.testing.servers import unavailable

# Storage servers and sinks on them (S3, GCS, SFTP): importing them here registers them too.
from pgvault.testing.storage_fixtures import (  # noqa: F401
    gcs_server,
    gcs_sink,
    gcs_sink_options,
    s3_server,
    s3_sink,
    s3_sink_options,
    sftp_server,
    sftp_sink,
    sftp_sink_options,
)

_db_counter = itertools.count(1)


def _start(
    settings: Mapping[str, str] | None = None, initdb_args: tuple[str, ...] = ()
) -> PostgresCluster:
    try:
        cluster = PostgresCluster(settings=settings, initdb_args=initdb_args)
    except ClusterUnavailable as exc:
        unavailable(str(exc))
        raise
    try:
        return cluster.start()
    except ClusterUnavailable as exc:
        cluster.destroy()
        unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster shared by the test session."""
    cluster = _start()
    yield cluster
    cluster.destroy()


@pytest.fixture
def pg_cluster_factory() -> Iterator[Callable[..., PostgresCluster]]:
    """Make dedicated clusters: ``pg_cluster_factory(settings={...}, initdb_args=(...))``;
    destroyed after the test."""
    made: list[PostgresCluster] = []

    def make(
        settings: Mapping[str, str] | None = None, initdb_args: tuple[str, ...] = ()
    ) -> PostgresCluster:
        cluster = _start(settings, initdb_args)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.destroy()


@pytest.fixture
def pg_database(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh empty database in the session cluster; yields its DSN and drops it afterwards."""
    name = f"pgvault_test_{os.getpid()}_{next(_db_counter)}"
    dsn = pg_cluster.create_database(name)
    yield dsn
    pg_cluster.drop_database(name)
