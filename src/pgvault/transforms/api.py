"""The transform contract: incremental byte-stream stages with an inverse.

A :class:`Transform` is an attrs class whose fields are its config options (one ``[[transform]]``
table). For each artifact the pipeline asks it for a fresh :class:`Codec`, feeds it chunks with
:meth:`Codec.update` and ends with :meth:`Codec.finish`. Restore does the inverse with the codec
from :meth:`Transform.decoder`, built from nothing but what the manifest recorded (the public
parameters) and the secrets in a :class:`DecodeContext`.

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


@attrs.frozen
class DecodeContext:
    """Secrets a decoder may need, gathered from the current config and the command line.

    ``configured`` holds the transforms of the current config (an encryption transform there
    carries the current and older keys); ``identities`` are private-key files given on the command
    line. Compressors ignore both.
    """

    configured: Sequence[Transform] = ()
    identities: Sequence[Path] = ()


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

    @classmethod
    @abc.abstractmethod
    def decoder(cls, params: Mapping[str, Any], context: DecodeContext) -> Codec:
        """A decoder for one artifact encoded with ``params`` (as recorded in the manifest)."""
