"""Sinks: where vaults are stored (``pgvault.sinks`` entry-point group)."""

from pgvault.sinks.api import ObjectInfo, ObjectWriter, Sink

__all__ = ["ObjectInfo", "ObjectWriter", "Sink"]
