"""The sink contract: where a vault's objects are stored.

A :class:`Sink` is an attrs class whose fields are its config options (the ``[sink]`` table),
registered under the ``pgvault.sinks`` entry-point group. It stores named objects under
POSIX-style keys (``app/backups/<id>/dump.pgdump.zst``) and implements a handful of primitives;
everything else (``write_bytes``, ``read_bytes``, ``exists``) is inherited.

The contract every sink keeps, and the conformance suite in :mod:`pgvault.testing` checks:

* **Atomic objects.** An object written through :meth:`Sink.open_writer` becomes visible under its
  key only on :meth:`ObjectWriter.commit`, complete and durable. :meth:`ObjectWriter.abort` (or an
  exception) leaves nothing visible under the key and cleans up what it can.
* **Streaming.** Writers take chunks and readers yield chunks; neither holds a whole object.
* **Clear errors.** Failures raise :class:`~pgvault.exceptions.SinkError` naming the key and the
  cause; a missing object raises :class:`~pgvault.exceptions.ObjectNotFoundError`.
* **No secrets.** ``describe()`` and every message leave credentials out.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterator
from types import TracebackType
from typing import ClassVar

import attrs


@attrs.frozen
class ObjectInfo:
    """One stored object: its key relative to the sink root, and its size in bytes."""

    key: str
    size: int


class ObjectWriter(abc.ABC):
    """Streams one object into a sink; visible only after :meth:`commit`.

    Used as a context manager, an exception inside the block aborts the write.
    """

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Append ``data`` to the object being written."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Make the object visible under its key, complete and durable."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard what was written; the key stays as it was. Safe to call more than once."""

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


class Sink(abc.ABC):
    """A place that stores a vault's objects."""

    type_name: ClassVar[str]
    """The entry-point name users write as ``[sink] type``."""

    @abc.abstractmethod
    def open_writer(self, key: str) -> ObjectWriter:
        """Start writing the object ``key``; nothing is visible until the writer commits."""

    @abc.abstractmethod
    def open_reader(self, key: str) -> Iterator[bytes]:
        """Yield the bytes of ``key`` in chunks; raises ObjectNotFoundError if it is missing."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every committed object whose key starts with ``prefix``, in any order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing object is not an error."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where this sink stores, for messages (``/var/backups``, ``s3://bucket/prefix``)."""

    # Derived operations: a sink may override them when its backend does better.

    def write_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` as ``key`` atomically.

        pgvault writes its *index objects* this way — manifests, ``MD5SUMS``, drill results: small
        objects it reads to list a vault and decide — and artifacts through :meth:`open_writer`.
        A sink with storage classes must keep index objects in one that can be read at once
        (the S3 sink leaves them in the bucket's default class whatever ``storage_class`` says).
        """
        with self.open_writer(key) as writer:
            writer.write(data)
            writer.commit()

    def read_bytes(self, key: str) -> bytes:
        """The whole content of ``key``; for small objects such as manifests."""
        return b"".join(self.open_reader(key))

    def exists(self, key: str) -> bool:
        """Whether ``key`` is a committed object."""
        return any(info.key == key for info in self.list(key))

    def create_if_absent(self, key: str, data: bytes) -> bool:
        """Store ``data`` as ``key`` only if no object has that key, atomically on the backend:
        True if stored, False if the key already existed (it is then left as it was).

        Run leases use it where it exists (see :mod:`pgvault.runlock`). The default raises
        NotImplementedError: a backend that cannot do it atomically must not pretend to.
        """
        raise NotImplementedError(f"{self.type_name} sink: no atomic create-if-absent")

    def check(self) -> None:
        """Raise SinkError if the sink cannot be reached or written; the default lists the root."""
        self.list("")

    def list_partials(self, prefix: str) -> builtins.list[str]:
        """Leftovers of interrupted writes under ``prefix``, for prune; never shown by :meth:`list`.

        The names are opaque (a temporary file's key, an S3 multipart upload …): pass them to
        :meth:`delete_partial`. The default: a backend with nothing to leave behind.
        """
        return []

    def delete_partial(self, name: str) -> None:
        """Remove one leftover named by :meth:`list_partials`; a missing one is not an error."""
        self.delete(name)
