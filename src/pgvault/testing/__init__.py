"""Test kit shipped with pgvault: real servers as pytest fixtures, for pgvault and its plugins.

:mod:`pgvault.testing.postgres` makes throwaway PostgreSQL clusters; :mod:`pgvault.testing.fixtures`
exposes them to pytest (loaded automatically through the ``pytest11`` entry point).
"""

from pgvault.testing.postgres import ClusterUnavailable, PostgresCluster, running_cluster

__all__ = ["ClusterUnavailable", "PostgresCluster", "running_cluster"]
