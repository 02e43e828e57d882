"""What a user does to a vault: :mod:`~pgvault.operations.restore`,
:mod:`~pgvault.operations.drill`, :mod:`~pgvault.operations.check`,
:mod:`~pgvault.operations.prune`, :mod:`~pgvault.operations.export` (export and cat),
:mod:`~pgvault.operations.copy` (between destinations), :mod:`~pgvault.operations.tiers`,
:mod:`~pgvault.operations.thaw`, :mod:`~pgvault.operations.destinations` (the destinations side
by side), :mod:`~pgvault.operations.report`, :mod:`~pgvault.operations.doctor`. Each takes
a :class:`~pgvault.pipeline_config.PipelineConfig` and settings values, never the config module."""
