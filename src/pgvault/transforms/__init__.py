"""Transforms: incremental byte-stream stages with inverses (``pgvault.transforms`` group).

* :mod:`~pgvault.transforms.api` — the contract: codecs, decode context, artifact binding;
* :mod:`~pgvault.transforms.compress`, :mod:`~pgvault.transforms.digest` — zstd and gzip; digests;
* :mod:`~pgvault.transforms.encrypt` — the ``aes-256-gcm`` transform and its streaming codec,
  over :mod:`~pgvault.transforms.encryption_format` (the bytes),
  :mod:`~pgvault.transforms.keyring` (which key opens an artifact) and
  :mod:`~pgvault.transforms.keys` (key material).
"""

from pgvault.transforms.api import ArtifactBinding, Codec, DecodeContext, Transform

__all__ = ["ArtifactBinding", "Codec", "DecodeContext", "Transform"]
