"""The source contract: what every producer of backup bytes implements.

A :class:`Source` is an attrs class whose fields are its config options (the ``[source]`` table).
Starting it yields a :class:`SourceRun`: one or more named byte streams that the pipeline consumes
concurrently, plus metadata for the manifest.

The contract the pipeline relies on, and every source must keep:

* A stream never buffers the whole backup: it yields chunks as the producer writes them.
* A stream's iterator raises :class:`~pgvault.exceptions.SourceError` *after* the last chunk if the
  producer failed (non-zero exit, killed, connection lost). Reaching the end of the iterator without
  an exception is the source's promise that the bytes are complete; only then is an artifact
  committed.
* ``metadata()`` is called once every stream has been consumed, and returns JSON-serialisable
  values that say what was backed up. It must never contain secrets (passwords, keys).
* :meth:`SourceRun.stop` (called when the run's context is left, and on abort) ends every child
  process and connection, also on error; it is idempotent.
"""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

CHUNK_SIZE = 1 << 20
"""Bytes a source reads at a time: large enough to amortise per-chunk overhead in every stage."""


@attrs.frozen
class SourceStream:
    """One named byte stream of a source run; becomes one artifact in the vault.

    ``name`` is the artifact's base name (transforms append their suffixes), and ``role`` tells the
    source's restorer what the stream holds (for example ``"main"`` or ``"data"``).
    """

    name: str
    chunks: Iterator[bytes]
    role: str = "main"
    part: str = ""
    """The part of a backup set the stream belongs to (a ``[[source]]``'s ``name``, or one
    database of a many-database dump), recorded on its artifact; ``""`` for a single-source
    backup and for streams every part shares (the cluster's globals)."""


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def part_prefix(part: str, taken: set[str]) -> str:
    """The artifact-name prefix of part ``part`` (``media`` → ``media.``), unique among
    ``taken`` (which it joins).

    A part name that is not a plain file name (a database called ``Sales Q1`` or ``a/b``) is
    reduced to its safe characters plus a short digest of the whole name, so two names that
    reduce alike still get two prefixes, and artifact paths stay plain names on every sink.
    """
    safe = _UNSAFE.sub("_", part)[:60].strip("_") or "part"
    stem = safe if safe == part else f"{safe}-{hashlib.sha256(part.encode()).hexdigest()[:8]}"
    candidate, n = stem, 1
    while candidate.lower() in taken:
        n += 1
        candidate = f"{stem}-{n}"
    taken.add(candidate.lower())
    return candidate + "."


class SourceRun(abc.ABC):
    """A started source: its streams and, once they are drained, its metadata.

    Used as a context manager; leaving the context calls :meth:`stop`.
    """

    @property
    @abc.abstractmethod
    def streams(self) -> Sequence[SourceStream]:
        """The streams of this run; the pipeline reads them all concurrently."""

    @abc.abstractmethod
    def metadata(self) -> dict[str, Any]:
        """What was backed up, for the manifest; called after every stream is drained."""

    @abc.abstractmethod
    def stop(self) -> None:
        """End every process, thread and connection of the run now; idempotent.

        Called on abort while streams may still be read, which must then end promptly (with an
        error or early EOF), and again when the run's context is left.
        """

    def __enter__(self) -> SourceRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Source(abc.ABC):
    """A producer of backup bytes, configured by the ``[source]`` table of a pipeline.

    Subclasses are attrs classes registered under the ``pgvault.sources`` entry-point group; the
    entry-point name is the ``type`` users write in the config.
    """

    type_name: ClassVar[str]
    """The entry-point name, recorded in the manifest as ``source.type``."""

    @abc.abstractmethod
    def start(self) -> SourceRun:
        """Start producing; use the result as a context manager so it is always stopped."""

    def start_for(self, pipeline: PipelineConfig) -> SourceRun:
        """Start producing for ``pipeline``, which the pipeline calls: its vault, transforms and
        ``[wal]`` settings are at hand. The default is :meth:`start`; a source whose backup is
        complete only once the vault holds something else (a base backup: its WAL) overrides
        it."""
        return self.start()

    def describe(self) -> str:
        """A short, secret-free description for logs and ``list`` (e.g. the database name)."""
        return self.type_name

    @classmethod
    def check_stream(
        cls, metadata: Mapping[str, Any], role: str, chunks: Iterator[bytes]
    ) -> str | None:
        """Check that decoded artifact bytes are a valid instance of this source's format.

        Used by ``verify --deep``. ``metadata`` is the manifest's ``source`` table and ``role`` the
        artifact's role. Raise :class:`~pgvault.exceptions.SourceError` if the bytes are not usable;
        return a short note for the report, or ``None``. Bytes left unread are drained by the
        caller. The default accepts any bytes.
        """
        return None
