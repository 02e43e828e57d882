"""The ``sftp`` sink: a folder on an SSH server, through sshfs (asyncssh).

An object is written to a hidden temporary name beside its final one, part by part at explicit
offsets (so a part can be re-sent on a fresh connection after a drop), then renamed into place
with the POSIX rename extension, which replaces atomically. A create-if-absent write links the
temporary file to its final name instead (``hardlink@openssh.com``, offered by OpenSSH and
asyncssh; the server's ``link()`` refuses an existing name atomically), or, on a server without
that extension, uses SFTP's own rename, which by the protocol never replaces (OpenSSH implements
it with ``link()`` too; other servers may check and rename in two steps). Temporary names carry
the same marker as the local sink's: ``list`` never shows them and prune removes them.

Authentication is by key only (``key_file``, or the SSH agent and ``~/.ssh/id_*``). The server's
host key must be in ``known_hosts`` (``~/.ssh/known_hosts`` by default); an unknown host is
refused with a message saying how to trust it, unless ``allow_unknown_host = true``. sshfs itself
turns host-key checking off unless told otherwise; this sink always tells it.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote, urlsplit

# Without the extra these imports fail, and the component loader turns the ImportError into
# "pip install 'pgvault[sftp]'".
import asyncssh
import attrs
import fsspec.asyn
import sshfs

from pgvault.exceptions import SinkError
from pgvault.sinks.api import CreateGuarantee
from pgvault.sinks.fsspec_base import FsspecSink, Upload
from pgvault.sinks.local import PARTIAL_MARKER
from pgvault.sinks.retry import chain

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

log = logging.getLogger("pgvault.sinks.sftp")


@attrs.frozen
class SftpAddress:
    """The parts of an ``sftp://user@host:port/path`` URL."""

    user: str | None
    host: str
    port: int
    path: str


def parse_sftp_url(url: str) -> SftpAddress:
    """Split an sftp URL; the path must be absolute and a password is refused."""
    parts = urlsplit(url)
    # First, so that no message below can quote the URL with its password.
    if parts.password is not None:
        raise ValueError("url must not hold a password: the sftp sink authenticates by key")
    if parts.scheme != "sftp" or not parts.hostname:
        raise ValueError(f"url must look like sftp://user@host:port/path, got {url!r}")
    path = unquote(parts.path).rstrip("/") or "/"
    if any(p in (".", "..") for p in path.split("/")):
        raise ValueError(f"url has a '.' or '..' path part: {url!r}")
    try:
        port = parts.port or 22
    except ValueError as exc:
        raise ValueError(f"url has an invalid port: {url!r}") from exc
    user = unquote(parts.username) if parts.username else None
    return SftpAddress(user=user, host=parts.hostname, port=port, path=path)


def _sftp_url(_inst: object, _attr: attrs.Attribute[Any], value: str) -> None:
    parse_sftp_url(value)


@attrs.frozen(kw_only=True)
class SftpSink(FsspecSink):
    """Stores objects as files under a folder of an SSH server: ``url = "sftp://u@host:22/p"``."""

    type_name: ClassVar[str] = "sftp"
    scheme: ClassVar[str] = "sftp"
    create_guarantee: ClassVar[CreateGuarantee] = CreateGuarantee.ATOMIC

    url: str = attrs.field(validator=_sftp_url)
    """``sftp://user@host:port/absolute/path``; the user defaults to the local one."""
    key_file: Path | None = None
    """Private key to log in with; without it, the SSH agent and ``~/.ssh/id_*`` are tried."""
    key_passphrase: str | None = attrs.field(default=None, repr=False)
    """Passphrase of ``key_file``, typically ``"${SFTP_KEY_PASSPHRASE}"``."""
    known_hosts: Path | None = None
    """Trusted host keys; ``~/.ssh/known_hosts`` when not given."""
    allow_unknown_host: bool = False
    """Skip host-key checking. Anyone on the path can then pose as the server: tests only."""

    @property
    def address(self) -> SftpAddress:
        """The user, host, port and folder named by ``url``."""
        return parse_sftp_url(self.url)

    def describe(self) -> str:
        a = self.address
        user = f"{a.user}@" if a.user else ""
        return f"sftp://{user}{a.host}:{a.port}{a.path}"

    def _root(self) -> str:
        return self.address.path.rstrip("/")

    def _remove(self, path: str) -> None:
        self._fs().rm_file(path)
        # SFTP has real folders, which a listing of objects never shows: remove those a deletion
        # leaves empty (a pruned backup's), as the local sink does.
        self.remove_empty_folders(path.rpartition("/")[0])

    def remove_empty_folders(self, folder: str) -> None:
        """Remove ``folder`` and its parents while they are empty, up to the sink root."""
        inside = self._root().rstrip("/") + "/"
        fs: Any = self._fs()
        while folder.startswith(inside):
            try:
                fs.rm(folder, recursive=False)  # an SFTP rmdir: refused unless empty
            except Exception:  # not empty, gone, or not ours: nothing more to tidy
                return
            folder = folder.rpartition("/")[0]

    def _known_hosts(self) -> str | None:
        if self.allow_unknown_host:
            return None
        path = self.known_hosts or Path.home() / ".ssh" / "known_hosts"
        if not path.is_file():
            a = self.address
            raise SinkError(
                f"{self.describe()}: cannot check the server's host key: {path} does not exist "
                f"(trust the server with: ssh-keyscan -p {a.port} {a.host} >> {path}; "
                "or set allow_unknown_host = true)"
            )
        return str(path)

    def _make_fs(self) -> AbstractFileSystem:
        a = self.address
        options: dict[str, Any] = {
            "port": a.port,
            "known_hosts": self._known_hosts(),
            "preferred_auth": "publickey",
            "connect_timeout": self.timeout,
            # Keepalives notice a server that vanished without closing the connection.
            "keepalive_interval": max(1.0, self.timeout / 3),
            "keepalive_count_max": 3,
        }
        if a.user:
            options["username"] = a.user
        if self.key_file is not None:
            options["client_keys"] = [str(self.key_file)]
            if self.key_passphrase is not None:
                options["passphrase"] = self.key_passphrase
        if self.allow_unknown_host:
            log.warning("%s: host key checking is off (allow_unknown_host)", self.describe())
        fs: AbstractFileSystem = sshfs.SSHFileSystem(a.host, skip_instance_cache=True, **options)
        return fs

    def _reset(self, exc: BaseException) -> None:
        # A lost connection stays lost: the next try opens a new one.
        fs: Any = self._connection.fs
        if fs is None:
            return
        client = getattr(fs, "_client", None)
        if client is None or client.is_closed() or self._connection_lost(exc):
            self._drop_fs()

    def _connection_lost(self, exc: BaseException) -> bool:
        return any(
            isinstance(e, asyncssh.ConnectionLost | ConnectionError | asyncssh.ChannelOpenError)
            for e in chain(exc)
        )

    def _new_upload(self, path: str) -> Upload:
        return _SftpUpload(self, path)

    def _new_upload_if_absent(self, path: str) -> Upload:
        return _SftpUpload(self, path, exclusive=True)

    def _read_range(self, path: str, start: int, end: int) -> bytes:
        # sshfs's cat_file ignores ranges: read the span through a file handle instead.
        with self._fs().open(path, "rb") as handle:
            handle.seek(start)
            data: bytes = handle.read(end - start)
        return data

    def list_partials(self, prefix: str) -> builtins.list[str]:
        """Keys of temporary files that interrupted writes left under ``prefix``."""
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._path(folder) if folder else self._root() or "/"

        def find() -> list[str]:
            try:
                paths: list[str] = self._fs().find(start, withdirs=False)
            except FileNotFoundError:
                return []
            keys = (self._key(p) for p in paths)
            return [
                k
                for k in keys
                if k is not None and k.startswith(prefix) and PARTIAL_MARKER in k.rsplit("/")[-1]
            ]

        return self.call(f"list unfinished uploads under {prefix or '/'}", find)

    def check(self) -> None:
        root = self._root() or "/"

        def probe() -> None:
            fs = self._fs()
            if fs.exists(root) and not fs.isdir(root):
                raise SinkError(f"{self.describe()}: {root} is not a folder")

        self.call("check folder", probe)

    # Errors

    def _transient(self, exc: BaseException) -> bool:
        for e in chain(exc):
            if isinstance(e, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied):
                return False
            if isinstance(
                e,
                asyncssh.ConnectionLost | asyncssh.ChannelOpenError | asyncssh.ServiceNotAvailable,
            ):
                return True
            if isinstance(e, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
                return True
            if isinstance(e, ValueError) and "SFTP connections" in str(e):
                return True  # sshfs's pool on a connection that is gone
        return super()._transient(exc)

    def _explain(self, exc: BaseException) -> str:
        a = self.address
        for e in chain(exc):
            if isinstance(e, asyncssh.HostKeyNotVerifiable):
                where = self.known_hosts or "~/.ssh/known_hosts"
                return (
                    f"unknown or changed host key for {a.host}:{a.port}, refused: it is not in "
                    f"{where} (check the key, then trust it with: ssh-keyscan -p {a.port} "
                    f"{a.host} >> {where}; or set allow_unknown_host = true)"
                )
            if isinstance(e, asyncssh.PermissionDenied):
                return (
                    f"authentication failed: the server refused the key for user "
                    f"{a.user or '(local user)'} (check key_file and authorized_keys)"
                )
            if isinstance(e, asyncssh.KeyImportError):
                return f"cannot load key_file {self.key_file}: {e}"
            if isinstance(e, asyncssh.SFTPPermissionDenied):
                return f"permission denied on the server ({e.reason})"
            if isinstance(e, asyncssh.ConnectionLost):
                return f"connection lost ({e.reason})"
        return super()._explain(exc)


class _SftpUpload(Upload):
    """Writes a temporary file part by part at explicit offsets, then renames it into place."""

    def __init__(self, sink: SftpSink, path: str, *, exclusive: bool = False) -> None:
        self._sink = sink
        self._path = path
        self._exclusive = exclusive
        parent, _, name = path.rpartition("/")
        self._parent = parent or "/"
        self._temp = f"{parent}/.{name}{PARTIAL_MARKER}{secrets.token_hex(4)}"
        self._started = False

    def _write(self, offset: int, data: bytes, *, final: bool) -> None:
        fs: Any = self._sink._fs()
        self._started = True  # from here on a temporary file may exist for abort to remove
        if offset == 0:
            fs.makedirs(self._parent, exist_ok=True)
        # The first part creates (or, on a retry, truncates) the file; later ones write in place.
        with fs.open(self._temp, "wb" if offset == 0 else "r+b") as handle:
            if offset:
                handle.seek(offset)
            if data:
                handle.write(data)
            if final:
                with contextlib.suppress(asyncssh.SFTPOpUnsupported, asyncssh.SFTPError):
                    handle.fsync()  # fsync@openssh.com, where the server offers it

    def put_part(self, number: int, offset: int, data: bytes) -> None:
        self._write(offset, data, final=False)

    def complete(self, number: int, offset: int, tail: bytes) -> None:
        self._write(offset, tail, final=True)
        if self._exclusive:
            self._publish_exclusive()
        else:
            self._sink._fs().mv(self._temp, self._path)
        self._started = False

    def _publish_exclusive(self) -> None:
        """Give the temporary file its final name unless that exists (FileExistsError then)."""
        fs: Any = self._sink._fs()
        temp, final = self._temp, self._path

        async def publish() -> bool:
            async with fs._pool.get() as channel:
                try:
                    await channel.link(temp, final)
                except asyncssh.SFTPOpUnsupported:
                    await channel.rename(temp, final)  # SFTP's rename: never replaces
                    return False
                return True

        try:
            linked = fsspec.asyn.sync(fs.loop, publish)
        except asyncssh.SFTPError:
            # Servers answer a taken name with various codes (SFTPv3 has only "failure").
            if fs.exists(final):
                with contextlib.suppress(Exception):
                    fs.rm_file(temp)
                raise FileExistsError(final) from None
            raise
        if linked:
            with contextlib.suppress(Exception):
                fs.rm_file(temp)  # a leftover is a partial: prune removes it

    def abort(self) -> None:
        if not self._started:
            return
        self._started = False
        with contextlib.suppress(FileNotFoundError):
            self._sink._fs().rm_file(self._temp)
        # An interrupted backup's folder would otherwise stay behind, empty and never listed.
        self._sink.remove_empty_folders(self._parent)
