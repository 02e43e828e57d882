"""What a user does to a vault: :mod:`~pgvault.operations.restore`,
:mod:`~pgvault.operations.drill`, :mod:`~pgvault.operations.check`,
:mod:`~pgvault.operations.prune` (next: report, copy). Each takes a
:class:`~pgvault.pipeline_config.PipelineConfig` and settings values, never the config module."""
