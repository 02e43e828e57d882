"""Throwaway PostgreSQL clusters for tests (the same ones restore drills use)."""

from pgvault.postgres.cluster import (
    ClusterUnavailable,
    PostgresCluster,
    free_port,
    running_cluster,
    server_bindir,
)

__all__ = ["ClusterUnavailable", "PostgresCluster", "free_port", "running_cluster", "server_bindir"]
