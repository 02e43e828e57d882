"""What the fsspec-backed sinks (``s3``, ``gcs``, ``sftp``) share.

A remote sink here is an fsspec filesystem plus three backend pieces: how to build the
filesystem, an :class:`Upload` session that stores one object part by part, and how to tell a
transient error from a permanent one. This module owns the rest, identical on every backend:

* keys map to ``<root>/<key>``, with ``.``/``..`` parts refused;
* objects are written by :class:`PartWriter`: bytes are cut into parts of ``part_size_mib`` and
  handed to a background uploader, so the pipeline keeps producing while a part travels, and no
  more than ``parts_in_flight + 1`` parts are ever held in memory;
* objects are read back as ranged reads, each retried on its own, so a dropped connection in the
  middle of a 100 GB restore costs one range, not the restore;
* every remote call goes through :class:`~pgvault.sinks.retry.RetryPolicy`, and every failure
  becomes a :class:`~pgvault.exceptions.SinkError` whose message names the sink, the operation
  and the cause (access denied, no such bucket, bad credentials, gave up after N attempts).
"""

from __future__ import annotations

import abc
import asyncio
import builtins
import concurrent.futures
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs

from pgvault.exceptions import (
    ObjectArchivedError,
    ObjectExistsError,
    ObjectNotFoundError,
    SinkError,
)
from pgvault.sinks.api import ObjectInfo, ObjectWriter, Sink
from pgvault.sinks.local import PARTIAL_MARKER
from pgvault.sinks.retry import GaveUpError, RetryPolicy, chain

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger("pgvault.sinks")

T = TypeVar("T")

MIB = 1 << 20
READ_CHUNK = 8 * MIB
"""Bytes per ranged read: large enough to amortise a request, small enough to retry cheaply."""


class Upload(abc.ABC):
    """One object's upload session on a backend, driven by :class:`PartWriter`.

    ``put_part`` receives full parts numbered from 1 with their byte offset; ``complete``
    receives the remaining tail (possibly empty, possibly the whole object) and must make the
    object visible under its final key in one atomic step. Both may be called again with the same
    arguments after a transient failure, so they must be idempotent for a given part. Nothing may
    be visible under the final key before ``complete`` succeeds.
    """

    @abc.abstractmethod
    def put_part(self, number: int, offset: int, data: bytes) -> None:
        """Store part ``number`` (bytes ``offset`` … ``offset + len(data) - 1``)."""

    @abc.abstractmethod
    def complete(self, number: int, offset: int, tail: bytes) -> None:
        """Store ``tail`` as the last part ``number`` and publish the object."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard what was stored (abort the multipart upload, remove the temporary file)."""


class _Connection:
    """The filesystem client a sink builds lazily and may drop after a broken connection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fs: AbstractFileSystem | None = None


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class FsspecSink(Sink):
    """Base of the remote sinks: retries, keys, listing, reading and part-wise writing.

    Subclasses are attrs classes whose fields are their config options; they add ``url`` and the
    backend's options and implement the abstract hooks below.
    """

    scheme: ClassVar[str]
    """URL scheme the sink's ``url`` option must use (``s3``, ``gs``, ``sftp``)."""
    min_part_mib: ClassVar[int] = 1
    """Smallest part the backend accepts (S3: 5 MiB, except the last part)."""
    parts_in_flight: ClassVar[int] = 1
    """Parts uploaded concurrently per object; 1 keeps parts in order (GCS, SFTP need that)."""

    part_size_mib: int = 16
    """Size of each uploaded part, in MiB; an object being written holds ``parts_in_flight + 1``
    parts in memory (two for GCS and SFTP, three for S3)."""
    retry_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    """Tries of a remote call in all, the first included, when errors are transient."""
    retry_max_seconds: float = attrs.field(default=120.0, validator=_positive)
    """Time budget for retrying one remote call."""
    timeout: float = attrs.field(default=60.0, validator=_positive)
    """Seconds to wait for a connection or for an answer before the call counts as failed."""

    _connection: _Connection = attrs.field(
        init=False, factory=_Connection, repr=False, eq=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        if self.part_size_mib < self.min_part_mib:
            raise ValueError(
                f"part_size_mib must be at least {self.min_part_mib} for {self.type_name}, "
                f"got {self.part_size_mib}"
            )
        if self.part_size_mib > 5 * 1024:
            raise ValueError(f"part_size_mib must be at most 5120, got {self.part_size_mib}")

    # Backend hooks

    @abc.abstractmethod
    def _make_fs(self) -> AbstractFileSystem:
        """A new filesystem client (connects, for SFTP); called lazily and after a reset."""

    @abc.abstractmethod
    def _root(self) -> str:
        """The fsspec path of the sink root, without a trailing slash (``bucket/prefix``)."""

    @abc.abstractmethod
    def _new_upload(self, path: str) -> Upload:
        """An upload session for the object at fsspec path ``path`` (no remote call yet)."""

    def _new_upload_if_absent(self, path: str) -> Upload | None:
        """An upload session whose ``complete`` the backend refuses if ``path`` exists (raising
        an error :meth:`_is_exists` recognises), or None when the backend cannot: then
        :meth:`open_writer_if_absent` checks before committing. A sink that returns one declares
        ``create_guarantee = CreateGuarantee.ATOMIC``."""
        return None

    def _is_exists(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the backend refusing a create-if-absent commit (key taken)."""
        return any(isinstance(e, FileExistsError) for e in chain(exc))

    def _transient(self, exc: BaseException) -> bool:
        """Whether ``exc`` is worth retrying; the default knows network-level failures."""
        return any(_is_network_error(e) for e in chain(exc))

    def _explain(self, exc: BaseException) -> str:
        """One line saying what went wrong, for the user; never includes credentials."""
        for e in chain(exc):
            if isinstance(e, ConnectionRefusedError):
                return "connection refused (is the server running and the address right?)"
            if isinstance(e, socket.gaierror):
                return f"cannot resolve the host name ({e.strerror or e})"
            if isinstance(e, PermissionError):
                return f"permission denied{_detail(e)}"
        return _first_line(exc)

    def _is_not_found(self, exc: BaseException) -> bool:
        """Whether ``exc`` says an object does not exist (a missing bucket is not that)."""
        return any(isinstance(e, FileNotFoundError) for e in chain(exc))

    def _archived_error(self, exc: BaseException, key: str) -> ObjectArchivedError | None:
        """The error to raise when ``exc`` says ``key`` is in an archive storage class that must
        be restored before it can be read; None when it does not (the default: no such class)."""
        return None

    def _reset(self, exc: BaseException) -> None:
        """Called before a retry; a backend whose connection can break drops it here."""

    def _size(self, path: str) -> int:
        """Size of the object at ``path``; FileNotFoundError if missing."""
        info = self._fs().info(path)
        if info.get("type") == "directory":
            raise FileNotFoundError(path)
        return int(info["size"])

    def _read_range(self, path: str, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end - 1`` of the object at ``path``."""
        return bytes(self._fs().cat_file(path, start=start, end=end))

    def _remove(self, path: str) -> None:
        self._fs().rm_file(path)

    # Plumbing

    def _fs(self) -> AbstractFileSystem:
        conn = self._connection
        with conn.lock:
            if conn.fs is None:
                conn.fs = self._make_fs()
                loop = getattr(conn.fs, "loop", None)
                if isinstance(loop, asyncio.AbstractEventLoop):
                    quiet_orphaned_network_errors(loop)
            return conn.fs

    def _drop_fs(self) -> None:
        with self._connection.lock:
            self._connection.fs = None

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy built from ``retry_attempts`` and ``retry_max_seconds``."""
        return RetryPolicy(attempts=self.retry_attempts, max_seconds=self.retry_max_seconds)

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise SinkError(
                f"{self.describe()}: refusing key with empty, '.' or '..' parts: {key!r}"
            )
        root = self._root()
        return f"{root}/{key}" if root else key

    def _key(self, path: str) -> str | None:
        root = self._root()
        if not root:
            return path.lstrip("/")
        path = path.rstrip("/")
        if not path.startswith(root + "/"):
            return None
        return path[len(root) + 1 :]

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        key: str | None = None,
        exists_key: str | None = None,
    ) -> T:
        """Run remote operation ``fn`` under the retry policy, translating its failures.

        ``what`` names the operation for messages (``upload part 3 of app/x``). With ``key``, a
        not-found error becomes :class:`ObjectNotFoundError` for that key; with ``exists_key``,
        a refused create-if-absent becomes :class:`ObjectExistsError` for that key.
        """
        try:
            return self.retry_policy.call(
                fn,
                transient=self._transient,
                what=f"{self.describe()}: {what}",
                on_retry=self._reset,
            )
        except SinkError:
            raise
        except GaveUpError as exc:
            raise SinkError(
                f"{self.describe()}: {what}: {self._explain(exc.last)} (still failing after "
                f"{exc.attempts} attempts in {exc.elapsed:.1f}s)"
            ) from exc.last
        except Exception as exc:
            if exists_key is not None and self._is_exists(exc):
                raise ObjectExistsError(
                    f"{self.describe()}: {exists_key} already exists", key=exists_key
                ) from exc
            if key is not None and self._is_not_found(exc):
                raise ObjectNotFoundError(f"{self.describe()}: {key} does not exist") from exc
            archived = self._archived_error(exc, key) if key is not None else None
            if archived is not None:
                raise archived from exc
            raise SinkError(f"{self.describe()}: {what}: {self._explain(exc)}") from exc

    # The Sink contract

    def open_writer(self, key: str) -> ObjectWriter:
        return PartWriter(self, key, self._new_upload(self._path(key)))

    def open_writer_if_absent(self, key: str) -> ObjectWriter:
        upload = self._new_upload_if_absent(self._path(key))
        if upload is None:
            return super().open_writer_if_absent(key)
        return PartWriter(self, key, upload, exclusive=True)

    def open_reader(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        size = self.call(f"read {key}", lambda: self._size(path), key=key)
        return self._chunks(key, path, size)

    def _chunks(self, key: str, path: str, size: int) -> Iterator[bytes]:
        # The next range is fetched while the caller handles this one: on a remote store each
        # request costs a round trip, which the prefetch hides. Memory: two ranges.
        def fetch(start: int) -> bytes:
            end = min(start + READ_CHUNK, size)
            return self.call(
                f"read {key} (bytes {start}-{end - 1})",
                lambda: self._read_range(path, start, end),
                key=key,
            )

        if size == 0:
            return
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pgvault-read")
        try:
            pending = pool.submit(fetch, 0)
            pos = 0
            while pos < size:
                data = pending.result()
                if not data:
                    raise SinkError(
                        f"{self.describe()}: read {key}: object ended at byte {pos} of {size} "
                        "(it changed while being read)"
                    )
                pos += len(data)
                if pos < size:
                    pending = pool.submit(fetch, pos)
                yield data
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def list(self, prefix: str) -> builtins.list[ObjectInfo]:
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        root = self._root()
        start = self._path(folder) if folder else root

        def find() -> dict[str, Any]:
            try:
                found: dict[str, Any] = self._fs().find(start, detail=True, withdirs=False)
            except Exception as exc:
                if self._is_not_found(exc):
                    return {}
                raise
            return found

        found = self.call(f"list {prefix or '/'}", find)
        out: builtins.list[ObjectInfo] = []
        for path, info in found.items():
            key = self._key(path)
            if key is None or not key.startswith(prefix) or info.get("type") == "directory":
                continue
            if PARTIAL_MARKER in key.rsplit("/", 1)[-1]:
                continue
            found_class = info.get("StorageClass") or info.get("storageClass")
            out.append(
                ObjectInfo(
                    key=key,
                    size=int(info.get("size") or 0),
                    modified=_modified(info),
                    storage_class=str(found_class) if found_class else None,
                )
            )
        return out

    def delete(self, key: str) -> None:
        path = self._path(key)

        def remove() -> None:
            try:
                self._remove(path)
            except Exception as exc:
                if not self._is_not_found(exc):
                    raise

        self.call(f"delete {key}", remove)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            self.call(f"look up {key}", lambda: self._size(path), key=key)
        except ObjectNotFoundError:
            return False
        return True


class PartWriter(ObjectWriter):
    """Streams one object through an :class:`Upload`, part by part, uploading in the background.

    The caller's thread fills a part while a worker thread uploads the previous one(s); at most
    ``parts_in_flight`` parts wait or travel at once, so memory is bounded by
    ``(parts_in_flight + 1) * part_size``. A failed part aborts the upload and surfaces on the
    next ``write`` or on ``commit``.
    """

    def __init__(
        self, sink: FsspecSink, key: str, upload: Upload, *, exclusive: bool = False
    ) -> None:
        self._sink = sink
        self._key = key
        self._upload = upload
        self._exclusive = exclusive
        self._part_size = sink.part_size_mib * MIB
        self._buffer = bytearray()
        self._offset = 0
        self._parts = 0
        self._pending: deque[concurrent.futures.Future[None]] = deque()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._state = "open"

    def _check_open(self, doing: str) -> None:
        if self._state != "open":
            raise SinkError(
                f"{self._sink.describe()}: {doing} {self._key} after it was {self._state}"
            )

    def write(self, data: bytes) -> None:
        self._check_open("write to")
        self._buffer += data
        while len(self._buffer) >= self._part_size:
            part = bytes(self._buffer[: self._part_size])
            del self._buffer[: self._part_size]
            self._send(part)

    def _send(self, part: bytes) -> None:
        self._parts += 1
        number, offset = self._parts, self._offset
        self._offset += len(part)
        while len(self._pending) >= self._sink.parts_in_flight:
            self._wait_oldest()
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._sink.parts_in_flight, thread_name_prefix="pgvault-upload"
            )
        self._pending.append(
            self._executor.submit(
                self._sink.call,
                f"upload part {number} of {self._key}",
                lambda: self._upload.put_part(number, offset, part),
            )
        )

    def _wait_oldest(self) -> None:
        future = self._pending.popleft()
        try:
            future.result()
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        self._check_open("commit of")
        try:
            while self._pending:
                self._wait_oldest()
            tail = bytes(self._buffer)
            self._buffer = bytearray()
            number, offset = self._parts + 1, self._offset
            self._sink.call(
                f"complete {self._key}",
                lambda: self._upload.complete(number, offset, tail),
                exists_key=self._key if self._exclusive else None,
            )
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        self._shutdown()

    def abort(self) -> None:
        if self._state != "open":
            return
        self._state = "aborted"
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._shutdown()  # waits for a part on the wire, so the abort below sees every part
        self._buffer = bytearray()
        try:
            self._upload.abort()
        except Exception as exc:
            # The write already failed or was cancelled; what is left is removable by prune.
            log.warning(
                "%s: could not clean up the unfinished upload of %s: %s",
                self._sink.describe(),
                self._key,
                self._sink._explain(exc),
            )

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


_ORPHANS = ("Task exception was never retrieved", "Future exception was never retrieved")


def quiet_orphaned_network_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Keep aiohttp's orphaned network failures on ``loop`` out of stderr (once per loop).

    When a server dies, aiohttp may fail a request twice: the response side (which reaches the
    caller, is retried and reported as one pgvault line) and the task sending the request body,
    which nobody awaits once the response failed. asyncio then prints "Task exception was never
    retrieved" with a traceback at garbage collection. Such orphans that are network errors are
    logged at DEBUG; anything else still goes to the loop's previous handler.
    """
    previous = loop.get_exception_handler()
    if getattr(previous, "_pgvault_quiet", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if (
            isinstance(exc, BaseException)
            and message.startswith(_ORPHANS)
            and any(_is_network_error(e) for e in chain(exc))
        ):
            log.debug("%s: %s (the request itself failed and was reported)", message, exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handler._pgvault_quiet = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionRefusedError | ConnectionResetError | ConnectionAbortedError):
        return True
    if isinstance(exc, BrokenPipeError | TimeoutError | asyncio.TimeoutError | socket.timeout):
        return True
    if isinstance(exc, socket.gaierror):
        return False  # a misspelt host name does not heal
    name = type(exc).__name__
    module = type(exc).__module__
    if module.startswith("aiohttp") and name in {
        "ClientConnectionError",
        "ClientConnectionResetError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "ClientPayloadError",
        "ConnectionTimeoutError",
        "SocketTimeoutError",
    }:
        return True
    return module.startswith("fsspec") and name == "FSTimeoutError"


def _modified(info: dict[str, Any]) -> datetime | None:
    """When an fsspec listing entry was last written: S3's ``LastModified``, GCS's ``updated``,
    SFTP's ``mtime`` (a datetime, an ISO string or a Unix time, depending on the backend)."""
    for field in ("LastModified", "last_modified", "updated", "mtime"):
        value = info.get(field)
        if value is None:
            continue
        try:
            if isinstance(value, datetime):
                when = value
            elif isinstance(value, int | float):
                when = datetime.fromtimestamp(value, UTC)
            else:
                when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except (ValueError, OSError, OverflowError):
            continue
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    return f" ({text.splitlines()[0]})" if text else ""


def parse_bucket_url(url: str, scheme: str, option: str = "url") -> tuple[str, str]:
    """Split ``scheme://bucket/prefix`` into bucket and prefix (no slashes at either end)."""
    head = f"{scheme}://"
    if not url.startswith(head):
        raise ValueError(f"{option} must look like {head}bucket/prefix, got {url!r}")
    bucket, _, prefix = url[len(head) :].partition("/")
    if not bucket:
        raise ValueError(f"{option} names no bucket: {url!r}")
    prefix = prefix.strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise ValueError(f"{option} has an empty, '.' or '..' path part: {url!r}")
    return bucket, prefix
