"""Transforms: incremental byte-stream stages with inverses (``pgvault.transforms`` group)."""

from pgvault.transforms.api import Codec, DecodeContext, Transform

__all__ = ["Codec", "DecodeContext", "Transform"]
