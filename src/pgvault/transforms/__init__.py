"""Transforms: incremental byte-stream stages with inverses (``pgvault.transforms`` group)."""

from pgvault.transforms.api import ArtifactBinding, Codec, DecodeContext, Transform

__all__ = ["ArtifactBinding", "Codec", "DecodeContext", "Transform"]
