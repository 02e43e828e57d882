"""The local sink: a folder on a local or mounted disk.

Objects are written under a temporary name in the target folder, fsynced, then renamed into
place, and the folder is fsynced, so a crash leaves either the old state or the complete object.
A create-if-absent write (:meth:`LocalSink.open_writer_if_absent`) publishes the temporary file
with ``link()`` instead, which the kernel refuses atomically when the name exists; on a file
system without hard links it falls back to ``renameat2(RENAME_NOREPLACE)`` (Linux), and fails
rather than replace anything when neither is there.
Folders are created 0700 and files 0600 whatever the umask: a vault holds whole databases.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import ctypes.util
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, ClassVar

import attrs

from pgvault.exceptions import ObjectExistsError, ObjectNotFoundError, SinkError
from pgvault.sinks.api import CreateGuarantee, ObjectInfo, ObjectWriter, Sink

PARTIAL_MARKER = ".partial-"
"""Infix of temporary file names; such files are never listed and are cleaned by prune."""

_READ_CHUNK = 1 << 20


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return exc.strerror or str(exc)


@attrs.frozen
class LocalSink(Sink):
    """Stores objects as files under ``path``; relative paths are resolved against the config."""

    type_name: ClassVar[str] = "local"
    create_guarantee: ClassVar[CreateGuarantee] = CreateGuarantee.ATOMIC

    path: Path = attrs.field(converter=Path)

    def describe(self) -> str:
        return str(self.path)

    def _file(self, key: str) -> Path:
        parts = [p for p in key.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise SinkError(f"local sink: refusing key with '.' or '..' parts: {key!r}")
        return self.path.joinpath(*parts)

    def _make_dirs(self, folder: Path) -> None:
        missing: list[Path] = []
        current = folder
        while not current.exists():
            missing.append(current)
            current = current.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                continue
            d.chmod(0o700)  # mkdir's mode is filtered by the umask; the vault's is not.

    def open_writer(self, key: str) -> ObjectWriter:
        return self._writer(key, exclusive=False)

    def open_writer_if_absent(self, key: str) -> ObjectWriter:
        return self._writer(key, exclusive=True)

    def _writer(self, key: str, *, exclusive: bool) -> ObjectWriter:
        target = self._file(key)
        try:
            self._make_dirs(target.parent)
        except OSError as exc:
            raise SinkError(
                f"local sink: cannot create folder {target.parent}: {_describe_os_error(exc)}"
            ) from exc
        return _LocalWriter(target, self.path, key=key, exclusive=exclusive)

    def open_reader(self, key: str) -> Iterator[bytes]:
        target = self._file(key)
        try:
            handle = target.open("rb")
        except FileNotFoundError:
            raise ObjectNotFoundError(f"local sink: {target} does not exist") from None
        except OSError as exc:
            raise SinkError(f"local sink: cannot read {target}: {_describe_os_error(exc)}") from exc
        return _read_chunks(handle, target)

    def _walk(self, prefix: str) -> Iterator[tuple[str, Path]]:
        """``(key, path)`` of every file whose key starts with ``prefix``, partial ones included.

        The walk starts at the deepest folder the prefix names, not at the sink root.
        """
        folder_part = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._file(folder_part) if folder_part else self.path
        if not start.is_dir():
            if self.path.exists() and not self.path.is_dir():
                raise SinkError(f"local sink: {self.path} is not a folder")
            return
        try:
            for dirpath, _dirs, files in os.walk(start):
                for fname in files:
                    full = Path(dirpath, fname)
                    key = full.relative_to(self.path).as_posix()
                    if key.startswith(prefix):
                        yield key, full
        except OSError as exc:
            raise SinkError(f"local sink: cannot list {start}: {_describe_os_error(exc)}") from exc

    def list(self, prefix: str) -> list[ObjectInfo]:
        try:
            found = []
            for key, full in self._walk(prefix):
                if PARTIAL_MARKER in full.name:
                    continue
                stat = full.stat()
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                found.append(ObjectInfo(key=key, size=stat.st_size, modified=modified))
            return found
        except OSError as exc:
            raise SinkError(
                f"local sink: cannot list {prefix!r}: {_describe_os_error(exc)}"
            ) from exc

    def list_partials(self, prefix: str) -> builtins.list[str]:
        """Keys of temporary files left by interrupted writes (for prune), and, as ``key/``,
        empty folders under ``prefix``: a run killed before it removed its folder leaves one,
        and no listing of objects would ever show it."""
        found = [key for key, full in self._walk(prefix) if PARTIAL_MARKER in full.name]
        folder_part = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._file(folder_part) if folder_part else self.path
        if start.is_dir():
            for dirpath, dirs, files in os.walk(start):
                key = Path(dirpath).relative_to(self.path).as_posix() + "/"
                if not dirs and not files and key.startswith(prefix) and key != prefix:
                    found.append(key)
        return found

    def delete_partial(self, name: str) -> None:
        """Remove a temporary file, or an empty folder (``key/``) and parents it leaves empty."""
        if not name.endswith("/"):
            self.delete(name)
            return
        folder = self._file(name)
        try:
            folder.rmdir()
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                return  # a run began writing into it meanwhile: it is not a leftover
            raise SinkError(
                f"local sink: cannot remove folder {folder}: {_describe_os_error(exc)}"
            ) from exc
        _remove_empty_folders(folder.parent, self.path)

    def delete(self, key: str) -> None:
        target = self._file(key)
        try:
            target.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SinkError(
                f"local sink: cannot delete {target}: {_describe_os_error(exc)}"
            ) from exc
        _remove_empty_folders(target.parent, self.path)

    def disk_usage(self) -> tuple[int, int]:
        """``(total, free)`` bytes of the file system the vault is on (for ``pgvault check``).

        Free is what an unprivileged writer can use. Before the first backup the folder may not
        exist yet: its nearest existing parent is on the file system it will be created on.
        """
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            usage = shutil.disk_usage(probe)
        except OSError as exc:
            raise SinkError(
                f"local sink: cannot read free space of {probe}: {_describe_os_error(exc)}"
            ) from exc
        return usage.total, usage.free

    def check(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise SinkError(f"local sink: {self.path} is not a folder")
        probe = self.path if self.path.exists() else self.path.parent
        if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
            raise SinkError(f"local sink: {probe} is not writable")


def _remove_empty_folders(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents while they are empty, up to (not including) ``root``."""
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_chunks(handle: BinaryIO, target: Path) -> Iterator[bytes]:
    with handle:
        while True:
            try:
                chunk = handle.read(_READ_CHUNK)
            except OSError as exc:
                raise SinkError(
                    f"local sink: cannot read {target}: {_describe_os_error(exc)}"
                ) from exc
            if not chunk:
                return
            yield chunk


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


def _rename_noreplace(source: Path, target: Path) -> None:
    """``renameat2(..., RENAME_NOREPLACE)``: rename unless ``target`` exists (Linux ≥ 3.15)."""
    libc_name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    done = renameat2(
        _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
    )
    if done != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(target))


def _publish_exclusive(temp: Path, target: Path) -> None:
    """Give ``temp`` the name ``target`` unless that name exists (FileExistsError then)."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise
    except OSError as exc:
        # No hard links here (some FUSE and network file systems): the kernel's own
        # no-replace rename is as atomic. Without it, refuse rather than risk a replace.
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        _rename_noreplace(temp, target)
        return
    temp.unlink()


class _LocalWriter(ObjectWriter):
    def __init__(
        self, target: Path, root: Path | None = None, *, key: str = "", exclusive: bool = False
    ) -> None:
        self._target = target
        self._root = root or target.parent
        self._key = key
        self._exclusive = exclusive
        self._temp = target.with_name(f".{target.name}{PARTIAL_MARKER}{secrets.token_hex(4)}")
        try:
            fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SinkError(
                f"local sink: cannot write {target}: {_describe_os_error(exc)}"
            ) from exc
        os.fchmod(fd, 0o600)
        self._fd: int | None = fd
        self._sealed = False

    def _fail(self, exc: OSError, doing: str) -> SinkError:
        self.abort()
        return SinkError(f"local sink: {doing} {self._target}: {_describe_os_error(exc)}")

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise SinkError(f"local sink: write to {self._target} after it was closed")
        if self._sealed:
            raise SinkError(f"local sink: write to {self._target} after it was sealed")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            raise self._fail(exc, "cannot write") from exc

    def seal(self) -> None:
        if self._fd is None:
            raise SinkError(f"local sink: seal of {self._target} after it was closed")
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise self._fail(exc, "cannot write") from exc
        self._sealed = True

    def commit(self) -> None:
        if self._fd is None:
            raise SinkError(f"local sink: commit of {self._target} after it was closed")
        try:
            if not self._sealed:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            if self._exclusive:
                try:
                    _publish_exclusive(self._temp, self._target)
                except FileExistsError:
                    self.abort()
                    raise ObjectExistsError(
                        f"local sink: {self._target} already exists", key=self._key
                    ) from None
            else:
                self._temp.replace(self._target)
            _fsync_dir(self._target.parent)
        except OSError as exc:
            raise self._fail(exc, "cannot commit") from exc

    def abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        # What cannot be removed is left for prune; the real error is on its way to the user.
        with contextlib.suppress(OSError):
            self._temp.unlink()
        # An interrupted backup's folder (<name>/backups/<id>/) would otherwise stay behind,
        # empty, where no listing of objects shows it. rmdir removes only empty folders, so a
        # sibling artifact still being written keeps it.
        _remove_empty_folders(self._target.parent, self._root)
