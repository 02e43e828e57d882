"""PostgreSQL's ``backup_manifest`` and a tar stream checked against it as it passes.

``pg_basebackup -D - -Ft`` writes one tar to stdout and appends ``backup_manifest`` as its last
member. The manifest only arrives at the end, so :class:`TarStreamChecker` hashes every member
as it passes (SHA-256, which pgvault asks the server to use) and keeps only its path, size and
digest; at the end it compares them with the manifest, whose own ``Manifest-Checksum`` is checked
first. Memory grows with the number of files (a hundred bytes or so each), never with their size.

The checker parses tar blocks itself rather than with :mod:`tarfile` so that the bytes it hands
on are exactly the bytes it was given, less (when asked) the ``backup_manifest`` member, which
pgvault stores as an artifact of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import attrs

from pgvault.exceptions import SourceError

BLOCK = 512
MANIFEST_MEMBER = b"backup_manifest"
_KEEP = {b"backup_label", b"PG_VERSION", b"global/pg_control", b"tablespace_map"}
"""Small members whose content the checker keeps (the label, version, control file)."""
_MAX_KEPT = 64 << 10
_MAX_MANIFEST = 1 << 30
_MAX_SHOWN = 3


class BackupManifestError(SourceError):
    """A ``backup_manifest`` that is malformed, or a backup that does not match it."""


@attrs.frozen
class WalRange:
    """One entry of the manifest's ``WAL-Ranges``: the WAL of ``timeline`` the backup needs."""

    timeline: int
    start_lsn: int
    end_lsn: int


@attrs.frozen
class ManifestFile:
    """One entry of the manifest's ``Files``."""

    size: int
    algorithm: str
    checksum: str


@attrs.frozen
class BackupManifest:
    """A parsed ``backup_manifest`` whose ``Manifest-Checksum`` checked out."""

    files: dict[bytes, ManifestFile]
    wal_ranges: tuple[WalRange, ...]
    checksum: str
    version: int

    @classmethod
    def parse(cls, data: bytes, *, where: str = "backup_manifest") -> BackupManifest:
        """Parse and check ``data``; :class:`BackupManifestError` naming ``where`` otherwise."""
        _check_manifest_checksum(data, where)
        try:
            raw = json.loads(data)
            version = int(raw["PostgreSQL-Backup-Manifest-Version"])
            files: dict[bytes, ManifestFile] = {}
            for entry in raw["Files"]:
                if "Encoded-Path" in entry:
                    path = bytes.fromhex(str(entry["Encoded-Path"]))
                else:
                    path = str(entry["Path"]).encode("utf-8")
                files[path] = ManifestFile(
                    size=int(entry["Size"]),
                    algorithm=str(entry.get("Checksum-Algorithm", "NONE")).upper(),
                    checksum=str(entry.get("Checksum", "")).lower(),
                )
            ranges = tuple(
                WalRange(int(r["Timeline"]), _lsn(r["Start-LSN"]), _lsn(r["End-LSN"]))
                for r in raw["WAL-Ranges"]
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupManifestError(f"{where}: malformed backup manifest ({exc!r})") from None
        if not ranges:
            raise BackupManifestError(f"{where}: lists no WAL range")
        return cls(files, ranges, str(raw["Manifest-Checksum"]).lower(), version)

    @property
    def start(self) -> WalRange:
        """The range the backup's WAL begins in (its start LSN)."""
        return min(self.wal_ranges, key=lambda r: r.start_lsn)

    @property
    def end(self) -> WalRange:
        """The range the backup's WAL ends in (its stop LSN and timeline)."""
        return max(self.wal_ranges, key=lambda r: r.end_lsn)


def _lsn(text: object) -> int:
    from pgvault.wal.names import parse_lsn

    return parse_lsn(str(text))


def _check_manifest_checksum(data: bytes, where: str) -> None:
    """PostgreSQL's rule: the SHA-256 of everything up to the newline before the last line."""
    if not data.endswith(b"\n"):
        raise BackupManifestError(f"{where}: does not end with a newline (truncated?)")
    last = data.rfind(b"\n", 0, len(data) - 1)
    if last < 0:
        raise BackupManifestError(f"{where}: not a backup manifest (one line)")
    tail = data[last + 1 :]
    prefix = b'"Manifest-Checksum": "'
    if not tail.startswith(prefix):
        raise BackupManifestError(f"{where}: its last line is not the Manifest-Checksum")
    recorded = tail[len(prefix) :].split(b'"', 1)[0].decode("ascii", "replace").lower()
    actual = hashlib.sha256(data[: last + 1]).hexdigest()
    if recorded != actual:
        raise BackupManifestError(
            f"{where}: its Manifest-Checksum does not match its content (damaged or edited)"
        )


@attrs.define
class _Member:
    name: bytes
    size: int
    digest: Any
    regular: bool
    keep: bytearray | None
    limit: int = _MAX_KEPT


@attrs.define
class StreamResult:
    """What :meth:`TarStreamChecker.finish` found: every regular member's size and SHA-256,
    the small members' content, and the ``backup_manifest`` member when the tar had one."""

    members: dict[bytes, tuple[int, str]]
    kept: dict[bytes, bytes]
    manifest: bytes | None
    data_bytes: int


class TarStreamChecker:
    """Parses a tar stream chunk by chunk (see the module doc).

    :meth:`feed` returns the bytes to hand on: the input, less the ``backup_manifest`` member
    when ``strip_manifest``. Only ustar members and the pax / GNU long-name extensions are
    read; anything malformed is a :class:`BackupManifestError` naming ``where``.
    """

    def __init__(self, *, strip_manifest: bool = False, where: str = "base backup") -> None:
        self._strip = strip_manifest
        self._where = where
        self._buf = bytearray()
        self._member: _Member | None = None
        self._left = 0  # data bytes of the current member still to come
        self._pad = 0  # padding bytes after them
        self._emit_member = True
        self._pending = bytearray()  # extension headers held until their member is known
        self._long_name: bytes | None = None
        self._ended = False
        self._members: dict[bytes, tuple[int, str]] = {}
        self._kept: dict[bytes, bytes] = {}
        self._manifest: bytearray | None = None
        self._data_bytes = 0
        self._ext: _Member | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Take the next bytes of the stream; return those to hand on."""
        out = bytearray()
        view = memoryview(chunk)
        while view:
            if self._ended:
                out += view  # end-of-archive blocks and padding pass through
                break
            if self._left or self._pad:
                view = self._data(view, out)
                continue
            need = BLOCK - len(self._buf)
            self._buf += view[:need]
            view = view[need:]
            if len(self._buf) == BLOCK:
                header = bytes(self._buf)
                self._buf.clear()
                self._header(header, out)
        return bytes(out)

    def _data(self, view: memoryview, out: bytearray) -> memoryview:
        member = self._member
        if self._left:
            take = view[: self._left]
            self._left -= len(take)
            if member is not None:
                member.digest.update(take)
                if member.keep is not None and len(member.keep) < member.limit:
                    member.keep += take[: member.limit - len(member.keep)]
            if self._emit_member:
                out += take
            view = view[len(take) :]
            if not self._left:
                self._end_member()
            return view
        take = view[: self._pad]
        self._pad -= len(take)
        if self._emit_member:
            out += take
        return view[len(take) :]

    def _header(self, header: bytes, out: bytearray) -> None:
        if header == b"\0" * BLOCK:
            self._ended = True
            out += self._pending
            self._pending.clear()
            out += header
            return
        stored = _octal(header[148:156], self._where)
        if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise BackupManifestError(f"{self._where}: tar header checksum mismatch (damaged)")
        kind = header[156:157]
        size = _number(header[124:136], self._where)
        name = header[:100].split(b"\0", 1)[0]
        if header[257:262] == b"ustar":
            prefix = header[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        if kind in (b"x", b"L", b"g", b"K"):
            # An extension header describes the next member: held back until that member is
            # known (it goes, or stays, with it), its data read for the long name.
            if size > _MAX_KEPT:
                raise BackupManifestError(f"{self._where}: tar extension header of {size} bytes")
            self._pending += header
            self._ext = _Member(kind, size, _NullHash(), False, bytearray())
            self._member = self._ext
            self._emit_member = False
            self._start_data(size)
            if size == 0:
                self._end_member()
            return
        if self._long_name is not None:
            name, self._long_name = self._long_name, None
        regular = kind in (b"0", b"\0", b"7")
        self._emit_member = not (self._strip and regular and name == MANIFEST_MEMBER)
        if self._emit_member:
            out += self._pending
            out += header
        self._pending.clear()
        keep = bytearray() if regular and (name in _KEEP or name == MANIFEST_MEMBER) else None
        self._member = _Member(name, size, hashlib.sha256(), regular, keep)
        if name == MANIFEST_MEMBER and regular:
            if size > _MAX_MANIFEST:
                raise BackupManifestError(f"{self._where}: backup_manifest of {size} bytes")
            self._manifest = bytearray()
            self._member.keep = self._manifest
            self._member.limit = _MAX_MANIFEST
        if not regular:
            size = 0  # folders, links: no data blocks whatever the size field says
        self._start_data(size)
        if size == 0:
            self._end_member()

    def _start_data(self, size: int) -> None:
        self._left = size
        self._pad = -size % BLOCK

    def _end_member(self) -> None:
        member = self._member
        self._member = None
        if member is None:
            return
        if member is self._ext:
            self._ext = None
            text = bytes(member.keep or b"")
            if member.name == b"L":
                self._long_name = text.split(b"\0", 1)[0]
            elif member.name == b"x":
                path = _pax_path(text)
                if path is not None:
                    self._long_name = path
            # Its data (and padding, which is skipped) goes, or stays, with its member.
            self._pending += _padded(text)
            return
        if not member.regular:
            return
        if member.name == MANIFEST_MEMBER:
            return
        self._members[member.name] = (member.size, member.digest.hexdigest())
        self._data_bytes += member.size
        if member.keep is not None:
            self._kept[member.name] = bytes(member.keep)

    def kept(self, name: bytes) -> bytes:
        """The content of small member ``name`` if it has passed already, else ``b""``."""
        return self._kept.get(name, b"")

    def finish(self) -> StreamResult:
        """The result, once the whole stream was fed; raises if the tar ended early."""
        if not self._ended or self._left or self._member is not None:
            raise BackupManifestError(f"{self._where}: the tar stream ended early (truncated)")
        return StreamResult(
            dict(self._members),
            dict(self._kept),
            None if self._manifest is None else bytes(self._manifest),
            self._data_bytes,
        )


class _NullHash:
    def update(self, _data: object) -> None:
        pass

    def hexdigest(self) -> str:
        return ""


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def _pax_path(text: bytes) -> bytes | None:
    """The ``path`` record of pax extended header data, if any."""
    pos = 0
    found: bytes | None = None
    while pos < len(text):
        space = text.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(text[pos:space])
        except ValueError:
            break
        record = text[space + 1 : pos + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            found = value
        if length <= 0:
            break
        pos += length
    return found


def _octal(field: bytes, where: str) -> int:
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise BackupManifestError(f"{where}: malformed tar header (not a tar stream)") from None


def _number(field: bytes, where: str) -> int:
    if field[0] & 0x80:  # base-256, for members of 8 GiB and more
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    return _octal(field, where)


def compare(manifest: BackupManifest, members: dict[bytes, tuple[int, str]], *, where: str) -> None:
    """Raise :class:`BackupManifestError` naming the first differences between the files of
    ``manifest`` and the ``members`` a tar held (path → size, SHA-256)."""
    problems: list[str] = []
    for path, want in manifest.files.items():
        got = members.get(path)
        shown = path.decode("utf-8", "backslashreplace")
        if got is None:
            problems.append(f"{shown}: missing")
        elif got[0] != want.size:
            problems.append(f"{shown}: {got[0]} bytes, the manifest says {want.size}")
        elif want.algorithm == "SHA256" and got[1] != want.checksum:
            problems.append(f"{shown}: SHA-256 differs from the manifest's")
    for path in members:
        if path not in manifest.files:
            problems.append(f"{path.decode('utf-8', 'backslashreplace')}: not in the manifest")
    if problems:
        more = f" (and {len(problems) - _MAX_SHOWN} more)" if len(problems) > _MAX_SHOWN else ""
        raise BackupManifestError(
            f"{where} does not match PostgreSQL's backup_manifest: "
            + "; ".join(problems[:_MAX_SHOWN])
            + more
        )


def label_fields(label: str) -> dict[str, str]:
    """``backup_label``'s ``KEY: value`` lines."""
    fields: dict[str, str] = {}
    for line in label.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def feed_all(checker: TarStreamChecker, chunks: Iterable[bytes]) -> bytes:
    """Feed every chunk; the bytes handed on, joined (for tests and small tars)."""
    return b"".join(checker.feed(c) for c in chunks)
