"""The transform contract: incremental byte-stream stages with an inverse.

A :class:`Transform` is an attrs class whose fields are its config options (one ``[[transform]]``
table). For each artifact the pipeline asks it for a fresh :class:`Codec` with
:meth:`Transform.encoder_for`, telling it which artifact of which backup it writes (an
:class:`ArtifactBinding`), feeds it chunks with :meth:`Codec.update` and ends with
:meth:`Codec.finish`. Restore does the inverse with the codec from :meth:`Transform.decoder`, built
from nothing but what the manifest recorded (the public parameters) and the secrets and binding in
a :class:`DecodeContext`.

Rules every transform keeps:

* Memory is bounded: a codec holds at most a fixed window, never the whole stream.
* ``manifest_params()`` returns only public, JSON-serialisable parameters (algorithm, level, key id,
  salt); never a key or passphrase. A restore must need nothing else from the config.
* A decoder raises :class:`~pgvault.exceptions.TransformError` on corrupt or truncated input, at the
  latest from ``finish()``: reaching the end cleanly is its promise that the stream was whole.
* A decoder whose output can be far larger than its input (a decompressor) should also offer
  ``update_chunks(data) -> Iterator[bytes]``, yielding output in bounded pieces as it is made; the
  pipeline prefers it, which keeps restore memory flat however well the data compressed.
"""

from __future__ import annotations

import abc
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import attrs


class Codec(Protocol):
    """A stateful, incremental encoder or decoder for one stream.

    An encoder may also offer ``artifact_params() -> dict[str, Any]``: public parameters of this
    one artifact (an encryption salt), asked for after :meth:`finish` and recorded in the
    manifest's artifact entry. It is optional; decoders must not depend on it, since everything
    they need travels in the stream itself.
    """

    def update(self, data: bytes) -> bytes:
        """Consume ``data``; return whatever output is ready (possibly ``b""``)."""

    def finish(self) -> bytes:
        """End the stream; return the remaining output and check the stream was whole."""


_FIELD_LENGTH = struct.Struct(">H")


@attrs.frozen
class ArtifactBinding:
    """Which artifact of which backup a stream is: ``path`` is its name inside backup
    ``backup_id`` (as in ``ArtifactRecord.path`` and ``Vault.artifact_key``).

    A transform that authenticates its output (encryption) can seal this in, so that a reader told
    where it is reading can refuse bytes that were written for another backup or another artifact.
    """

    backup_id: str
    path: str

    def canonical(self) -> bytes:
        """The binding's bytes: for ``backup_id`` then ``path``, the length of its UTF-8 encoding
        as 2 big-endian bytes, then that encoding. The length prefixes keep two different bindings
        from ever sharing bytes (``("a", "bc")`` against ``("ab", "c")``)."""
        out = []
        for field in (self.backup_id, self.path):
            raw = field.encode("utf-8")
            if len(raw) > 0xFFFF:
                raise ValueError(f"artifact binding field longer than 65535 bytes: {field[:40]}…")
            out += [_FIELD_LENGTH.pack(len(raw)), raw]
        return b"".join(out)

    @classmethod
    def from_canonical(cls, data: bytes) -> ArtifactBinding:
        """The binding whose :meth:`canonical` bytes are ``data``; ``ValueError`` if they are not
        such bytes."""
        fields = []
        pos = 0
        for _ in range(2):
            if len(data) < pos + _FIELD_LENGTH.size:
                raise ValueError("artifact binding is truncated")
            (size,) = _FIELD_LENGTH.unpack_from(data, pos)
            pos += _FIELD_LENGTH.size
            if len(data) < pos + size:
                raise ValueError("artifact binding is truncated")
            fields.append(data[pos : pos + size].decode("utf-8"))  # bad UTF-8 is a ValueError too
            pos += size
        if pos != len(data):
            raise ValueError("artifact binding has trailing bytes")
        return cls(fields[0], fields[1])


@attrs.frozen
class DecodeContext:
    """Secrets a decoder may need, gathered from the current config and the command line, and
    which artifact is being read.

    ``configured`` holds the transforms of the current config (an encryption transform there
    carries the current and older keys); ``identities`` are private-key files given on the command
    line. Compressors ignore both. ``binding`` says which artifact of which backup the stream is
    read as (the vault sets it per artifact); a decoder that finds another binding sealed in the
    stream refuses it. ``None`` (reading outside a vault) skips that check.
    """

    configured: Sequence[Transform] = ()
    identities: Sequence[Path] = ()
    binding: ArtifactBinding | None = None


class Transform(abc.ABC):
    """One stage of the chain between source and sink (``pgvault.transforms`` entry points)."""

    type_name: ClassVar[str]
    """The entry-point name, recorded in the manifest as the stage's ``type``."""

    suffix: ClassVar[str] = ""
    """Appended to the artifact name by this stage (``.zst``), so stored names tell their chain."""

    @abc.abstractmethod
    def manifest_params(self) -> dict[str, Any]:
        """The public parameters recorded in the manifest; never secrets."""

    @abc.abstractmethod
    def encoder(self) -> Codec:
        """A fresh encoder for one artifact."""

    def encoder_for(self, binding: ArtifactBinding) -> Codec:
        """A fresh encoder for the artifact ``binding`` names; what the pipeline calls.

        A transform that can seal the binding into its output (so its decoder can tell a moved or
        swapped artifact) overrides this; the default ignores it and returns :meth:`encoder`.
        """
        return self.encoder()

    @classmethod
    @abc.abstractmethod
    def decoder(cls, params: Mapping[str, Any], context: DecodeContext) -> Codec:
        """A decoder for one artifact encoded with ``params`` (as recorded in the manifest)."""
