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
* **Create-if-absent.** :meth:`Sink.open_writer_if_absent` writes like :meth:`Sink.open_writer`,
  but its commit never replaces an object: if the key exists, it raises
  :class:`~pgvault.exceptions.ObjectExistsError` and leaves that object as it was. WAL segments
  and history files are written this way, so a second cluster (or a split brain) can never
  overwrite what the first archived. :attr:`Sink.create_guarantee` says how strong the promise
  is: :attr:`CreateGuarantee.ATOMIC` when the backend itself refuses the commit (``link()``, an
  S3 conditional put, a GCS generation precondition), so of two writers racing for one key
  exactly one commit succeeds; :attr:`CreateGuarantee.CHECKED` (the default a sink inherits)
  when the key is looked up just before the commit, so two writers racing inside that window may
  both succeed and the later one's object stays (whole: never a mix of both). A commit whose
  answer was lost and which is retried may report ``ObjectExistsError`` for the object it just
  created itself: a caller that must tell compares the content (the WAL archive does).
"""

from __future__ import annotations

import abc
import builtins
import enum
from collections.abc import Iterator
from datetime import datetime
from types import TracebackType
from typing import ClassVar

import attrs

from pgvault.exceptions import ObjectExistsError


@attrs.frozen
class ObjectInfo:
    """One stored object: its key relative to the sink root, and its size in bytes.

    ``modified`` is when it was last written, when the backend's listing says so at no extra cost
    (None otherwise); neither it nor ``storage_class`` takes part in comparisons.
    """

    key: str
    size: int
    modified: datetime | None = attrs.field(default=None, eq=False)
    storage_class: str | None = attrs.field(default=None, eq=False)
    """The object's storage class when the backend has them and its listing says it (S3's
    ``STANDARD``, ``GLACIER`` …; GCS's ``NEARLINE`` …); None otherwise."""


class ObjectWriter(abc.ABC):
    """Streams one object into a sink; visible only after :meth:`commit`.

    Used as a context manager, an exception inside the block aborts the write.
    """

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Append ``data`` to the object being written."""

    def seal(self) -> None:
        """No more data will come: do ahead what :meth:`commit` would do before publishing
        (make the bytes durable), so that the commit, which may wait for other objects, only
        publishes. Optional; by default it does nothing, and commit does all the work."""
        return  # optional on purpose: a sink without it loses nothing

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


class CreateGuarantee(enum.Enum):
    """How :meth:`Sink.open_writer_if_absent` keeps its promise (see the module doc)."""

    ATOMIC = "atomic"
    """The backend refuses the commit if the key exists: of racing writers exactly one wins."""
    CHECKED = "checked"
    """The key is looked up just before the commit: racing writers may both succeed."""


class Sink(abc.ABC):
    """A place that stores a vault's objects."""

    type_name: ClassVar[str]
    """The entry-point name users write as ``[sink] type``."""

    create_guarantee: ClassVar[CreateGuarantee] = CreateGuarantee.CHECKED
    """How :meth:`open_writer_if_absent` is kept; a sink whose backend can refuse a commit
    atomically overrides both (and the conformance suite then checks a real race)."""

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

    def open_writer_if_absent(self, key: str) -> ObjectWriter:
        """Like :meth:`open_writer`, but the commit raises ObjectExistsError, and stores nothing,
        if ``key`` already exists. The default checks just before committing
        (:attr:`CreateGuarantee.CHECKED`)."""
        return _CheckedWriter(self, key, self.open_writer(key))

    def write_bytes_if_absent(self, key: str, data: bytes) -> None:
        """Store ``data`` as ``key`` unless ``key`` exists (then ObjectExistsError)."""
        with self.open_writer_if_absent(key) as writer:
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

        Run leases use it (see :mod:`pgvault.engine.runlock`). Only a sink whose
        :attr:`create_guarantee` is :attr:`CreateGuarantee.ATOMIC` offers it; for the others it
        raises NotImplementedError: a backend that cannot do it atomically must not pretend to.
        """
        if self.create_guarantee is not CreateGuarantee.ATOMIC:
            raise NotImplementedError(f"{self.type_name} sink: no atomic create-if-absent")
        try:
            self.write_bytes_if_absent(key, data)
        except ObjectExistsError:
            return False
        return True

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


class _CheckedWriter(ObjectWriter):
    """The default create-if-absent writer: look the key up, then commit (not atomic)."""

    def __init__(self, sink: Sink, key: str, inner: ObjectWriter) -> None:
        self._sink = sink
        self._key = key
        self._inner = inner

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def seal(self) -> None:
        self._inner.seal()

    def commit(self) -> None:
        try:
            taken = self._sink.exists(self._key)
        except BaseException:
            self._inner.abort()
            raise
        if taken:
            self._inner.abort()
            raise ObjectExistsError(
                f"{self._sink.describe()}: {self._key} already exists", key=self._key
            )
        self._inner.commit()

    def abort(self) -> None:
        self._inner.abort()
