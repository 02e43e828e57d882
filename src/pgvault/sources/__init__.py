"""Sources: producers of backup bytes (``pgvault.sources`` entry-point group)."""

from pgvault.sources.api import Source, SourceRun, SourceStream

__all__ = ["Source", "SourceRun", "SourceStream"]
