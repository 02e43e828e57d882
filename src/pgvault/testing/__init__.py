"""Test kit shipped with pgvault: real servers as pytest fixtures, for pgvault and its plugins.

:mod:`pgvault.testing.postgres` makes throwaway PostgreSQL clusters; :mod:`pgvault.testing.fixtures`
exposes them to pytest. The fixtures load only where a project asks for them, with
``pytest_plugins = ["pgvault.testing"]`` in its top-level ``conftest.py`` or ``pytest -p
pgvault.testing``: installing pgvault does not add them (nor their import time) to every test run.
"""

from pgvault.testing.postgres import ClusterUnavailable, PostgresCluster, running_cluster

# Read by pytest when this package is loaded as a plugin (see the module docstring); plain
# imports of pgvault.testing leave pytest alone.
pytest_plugins = ["pgvault.testing.fixtures"]

__all__ = ["ClusterUnavailable", "PostgresCluster", "running_cluster"]
