"""Reading and patching pg_dump custom-format archives (``pg_dump --format=custom``).

pg_dump writes an archive's table of contents (TOC) before its data, so where each table's data
starts is known only afterwards. Writing to a seekable file, pg_dump then goes back and rewrites
the TOC with those positions; writing to a pipe, as pgvault runs it, it cannot, and every data
entry keeps the flag "position not set". pg_restore copes by reading on through the blocks to
the ones it needs. A restore reads only the TOC (to plan what to restore, and to deal the data
between parallel pg_restores: see ``operations/restore/overlap.py``); it fills in no offsets.

The layout, from PostgreSQL's ``pg_backup_archiver.c`` (``WriteHead``, ``WriteToc``, ``WriteInt``,
``WriteStr``, ``WriteOffset``) and ``pg_backup_custom.c`` (``_WriteExtraToc``, ``_StartData``,
``_EndData``, ``_StartLOs``, ``_EndLO``, ``_EndLOs``):

* an *int* is a sign byte (0 or 1) then ``int_size`` little-endian bytes of magnitude; a *string*
  is an int length then that many bytes, length -1 meaning NULL;
* the header: ``PGDMP``; version major, minor and revision bytes; ``int_size``, ``off_size`` and
  format bytes; the compression (an int up to 1.14, one byte from 1.15); seven ints of creation
  time; three strings (database, server version, pg_dump version);
* the TOC: an int count, then per entry: dump id, "had a data dumper" (ints); catalog table oid,
  oid, tag, desc (strings); section (int); definition, drop and copy statements, namespace,
  tablespace, table access method (strings); relkind (an int, from 1.16); owner, "with oids"
  (strings); dependencies (strings, ended by a NULL one); and the offset field: a flag byte
  (1 position not set, 2 set, 3 no data) then ``off_size`` little-endian bytes of file position;
* then the data blocks, in TOC order, up to the end of the file: a type byte (1 table data, 3
  large objects) and the entry's dump id (an int). Table data is chunks, each an int length and
  that many bytes, ended by length 0; large objects are, per object, its oid (an int) and chunks
  as above, ended by oid 0.

Versions 1.14 (pg_dump 12 to 15), 1.15 (pg_dump 16) and 1.16 (pg_dump 17 and 18) are read; an
archive of any other version, or whose bytes do not follow this layout, is left alone.

:func:`read_toc_stream` reads the same table of contents from the start of a stream, without a
file: a restore decides what to restore (a partial restore's selection, the materialized views
to refresh itself) before it touches the target. A tar archive (``pg_dump --format=tar``) holds
the same header and TOC as its first member, ``toc.dat``, where each entry ends with the name of
its data member (a string) instead of an offset. Names in the TOC are in the dumped database's
encoding, which its ``ENCODING`` entry names; they are decoded with it.
"""

from __future__ import annotations

import codecs
import contextlib
import mmap
import os
import re
import struct
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import attrs

from pgvault.exceptions import ArchiveFormatError

SUPPORTED_VERSIONS = frozenset({(1, 14, 0), (1, 15, 0), (1, 16, 0)})
"""Archive versions (major, minor, revision) this module reads."""

OFFSET_NOT_SET = 1
"""Offset flag of a data entry whose block position was not known when the TOC was written."""
OFFSET_SET = 2
"""Offset flag of a data entry whose block position follows the flag."""
OFFSET_NO_DATA = 3
"""Offset flag of an entry without data (schema objects, settings)."""

_MAGIC = b"PGDMP"
_FORMAT_CUSTOM = 1
_FORMAT_TAR = 3
_TAR_BLOCK = 512
_MAX_TOC_BYTES = 1 << 30
"""A TOC read from a stream larger than this is refused: no field of PostgreSQL's is larger
(MaxAllocSize), and a damaged length must not make the reader hold a whole archive."""
# Every pg_dump writes sizeof(int) and sizeof(pgoff_t): 4 and 8 on all platforms it runs on.
_INT_SIZE = 4
_OFF_SIZE = 8
_INT = struct.Struct("<BI")  # an int: sign byte, magnitude
_VERSION_WITH_RELKIND = (1, 16, 0)
_VERSION_WITH_ALGORITHM_BYTE = (1, 15, 0)


@attrs.frozen
class TocEntry:
    """One entry of an archive's table of contents, as far as its data is concerned."""

    dump_id: int
    desc: str
    """The object kind: ``TABLE DATA``, ``BLOBS``, ``INDEX`` …"""
    tag: str
    """The object's name, as ``pg_restore --list`` shows it."""
    has_data: bool
    """Whether pg_dump wrote a data block for it (the entry "had a data dumper")."""
    offset_at: int
    """Where the entry's offset field (flag byte, then the position) starts in the file (-1 in
    a tar archive, which has none)."""
    offset_state: int
    """:data:`OFFSET_NOT_SET`, :data:`OFFSET_SET` or :data:`OFFSET_NO_DATA`."""
    position: int
    """Where the entry's data block starts, when ``offset_state`` is :data:`OFFSET_SET`."""
    namespace: str = ""
    """The object's schema (empty for objects outside schemas: schemas, extensions …)."""
    owner: str = ""
    dependencies: tuple[int, ...] = ()
    """Dump ids of the entries this one needs restored first (some may not be in the TOC:
    pg_dump records dependencies on objects it did not dump)."""
    definition: str = ""
    """The SQL pg_restore runs for the entry (``CREATE TABLE …``)."""
    tablespace: str | None = None
    """The tablespace pg_restore sets (``SET default_tablespace``) before the object: ``None``
    for objects that have none, ``""`` for the database's default."""
    tablespace_at: int = -1
    """Where the entry's tablespace string field starts in the archive (custom format)."""


@attrs.frozen
class ArchiveToc:
    """The header facts and table of contents of a custom-format archive."""

    version: tuple[int, int, int]
    toc_start: int
    """Where the TOC starts: everything before it is the header."""
    data_start: int
    """Where the TOC ends and the first data block (if any) starts."""
    entries: tuple[TocEntry, ...]
    encoding: str = "UTF8"
    """The dumped database's encoding (PostgreSQL's name), in which the TOC's names are."""


class _Malformed(Exception):
    """The bytes at ``pos`` do not follow the layout; becomes an ArchiveFormatError."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(f"{message} at byte {pos}")


class _Truncated(_Malformed):
    """The bytes end before the layout does (a stream read further may go on)."""


class _Cursor:
    """Reads the layout's ints and strings from a buffer, never past its end.

    Kept to the bare minimum of work per field: a TOC of 20,000 entries has 600,000 of them.
    """

    def __init__(self, buf: mmap.mmap | bytes | bytearray, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    def more(self, end: int) -> None:
        """Make the buffer reach ``end``, or raise :class:`_Truncated` (a file has no more)."""
        raise _Truncated(f"archive ends inside a {end - self.pos}-byte field", self.pos)

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > self.end:
            self.more(end)
        data = bytes(self.buf[self.pos : end])
        self.pos = end
        return data

    def byte(self) -> int:
        if self.pos >= self.end:
            self.more(self.pos + 1)
        self.pos += 1
        return self.buf[self.pos - 1]

    def integer(self) -> int:
        at = self.pos
        if at + _INT.size > self.end:
            self.more(at + _INT.size)
        sign, value = _INT.unpack_from(self.buf, at)
        self.pos = at + _INT.size
        if sign > 1:
            raise _Malformed(f"integer with sign byte {sign}", at)
        return -int(value) if sign else int(value)

    def string(self) -> bytes | None:
        at = self.pos
        length = self.integer()
        if length == -1:
            return None
        if length < 0:
            raise _Malformed(f"string of length {length}", at)
        return self.take(length)

    def text(self) -> str:
        value = self.string()
        return "" if value is None else value.decode("utf-8", "replace")


class _StreamCursor(_Cursor):
    """A cursor over a stream of chunks, which it reads only as far as the fields taken need."""

    def __init__(self, chunks: Iterator[bytes], start: bytes = b"") -> None:
        super().__init__(bytearray(start))
        self._chunks = chunks

    def more(self, end: int) -> None:
        if end > _MAX_TOC_BYTES:
            raise _Malformed("table of contents over 1 GiB", self.pos)
        assert isinstance(self.buf, bytearray)
        while len(self.buf) < end:
            chunk = next(self._chunks, None)
            if chunk is None:
                raise _Truncated(f"archive ends inside a {end - self.pos}-byte field", self.pos)
            self.buf += chunk
            self.end = len(self.buf)


def read_toc(path: Path) -> ArchiveToc:
    """The header facts and table of contents of the custom-format archive at ``path``.

    Raises :class:`ArchiveFormatError` when the file is not a custom-format archive of a
    version in :data:`SUPPORTED_VERSIONS`, or its header or TOC is truncated or damaged.
    """
    with path.open("rb") as f, _mapped(f.fileno(), path) as buf:
        return _decoded(_parse_toc(buf, path))


def read_toc_stream(chunks: Iterable[bytes], *, name: str = "archive") -> ArchiveToc:
    """The header facts and table of contents of the custom or tar archive whose bytes
    ``chunks`` yields from its start; only as many chunks are read as the TOC takes.

    ``name`` names the archive in errors. Raises :class:`ArchiveFormatError` when the bytes are
    neither a custom-format archive nor a tar archive starting with ``toc.dat``, or their
    version is not in :data:`SUPPORTED_VERSIONS`, or the TOC is truncated or damaged.
    """
    cur = _StreamCursor(iter(chunks))
    try:
        first = cur.take(_TAR_BLOCK)
    except _Truncated:
        first = bytes(cur.buf)  # a short stream: whatever there was
    if first.startswith(_MAGIC):
        cur.pos = 0
        return _parse_stream(cur, name, _FORMAT_CUSTOM)
    if not first:
        raise ArchiveFormatError("empty archive", path=name)
    # Not custom: a tar archive's first member must be toc.dat, holding the header and TOC.
    try:
        info = tarfile.TarInfo.frombuf(first, "utf-8", "surrogateescape")
    except tarfile.TarError:
        raise ArchiveFormatError(
            "neither a pg_dump custom-format archive nor a tar archive", path=name
        ) from None
    if info.name != "toc.dat" or not info.isfile():
        raise ArchiveFormatError(
            f"tar archive starts with {info.name!r}, not pg_dump's toc.dat", path=name
        )
    if info.size > _MAX_TOC_BYTES:
        raise ArchiveFormatError(f"toc.dat of {info.size} bytes", path=name)
    try:
        member = cur.take(info.size)
    except _Truncated:
        raise ArchiveFormatError("tar archive ends inside toc.dat", path=name) from None
    return _parse_stream(_Cursor(member), name, _FORMAT_TAR)


def _parse_stream(cur: _Cursor, name: str, fmt: int) -> ArchiveToc:
    try:
        version = _parse_header(cur, Path(name), fmt)
        toc_start = cur.pos
        entries = _parse_entries(cur, version, fmt)
    except _Malformed as exc:
        raise ArchiveFormatError(str(exc), path=name) from None
    return _decoded(ArchiveToc(version, toc_start, cur.pos, entries))


# PostgreSQL's server encodings that differ from Python's codec names; the others (UTF8,
# EUC_JP, BIG5, GBK, GB18030, JOHAB, …) Python knows under the same name.
_PYTHON_CODECS = {
    "SQL_ASCII": "utf-8",  # bytes without an encoding: kept as they are (surrogateescape)
    "LATIN5": "iso8859-9",
    "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13",
    "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16",
    "EUC_CN": "gb2312",
    "SJIS": "shift_jis",
    "UHC": "cp949",
    "KOI8R": "koi8_r",
    "KOI8U": "koi8_u",
    "MULE_INTERNAL": "utf-8",
}


def python_codec(pg_encoding: str) -> str:
    """The Python codec for PostgreSQL encoding ``pg_encoding`` (UTF-8 if Python has none)."""
    name = pg_encoding.upper()
    if name in _PYTHON_CODECS:
        return _PYTHON_CODECS[name]
    if name.startswith("WIN"):
        name = "cp" + name[3:]
    elif name.startswith("LATIN"):
        name = "iso8859-" + name[5:]
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


def _decoded(toc: ArchiveToc) -> ArchiveToc:
    """``toc`` with its names decoded in the archive's encoding (read first as Latin-1, which
    keeps every byte, so nothing is lost before the ENCODING entry is known)."""
    encoding = "UTF8"
    for entry in toc.entries:
        if entry.desc == "ENCODING":
            found = re.search(r"client_encoding\s*=\s*'([^']+)'", entry.definition)
            if found:
                encoding = found.group(1)
            break
    codec = python_codec(encoding)

    def text(value: str) -> str:
        return value.encode("latin-1").decode(codec, "surrogateescape")

    entries = tuple(
        attrs.evolve(
            e,
            tag=text(e.tag),
            namespace=text(e.namespace),
            owner=text(e.owner),
            definition=text(e.definition),
            tablespace=None if e.tablespace is None else text(e.tablespace),
        )
        for e in toc.entries
    )
    return attrs.evolve(toc, entries=entries, encoding=encoding)


def tablespaces_in(toc: ArchiveToc) -> set[str]:
    """The tablespaces an archive's objects are created in (``""``, the database's default,
    left out)."""
    return {e.tablespace for e in toc.entries if e.tablespace}


def map_tablespaces(
    chunks: Iterable[bytes], mapping: Mapping[str, str], *, where: str = "archive"
) -> Iterator[bytes]:
    """``chunks`` of a custom-format archive with each object's tablespace renamed by
    ``mapping`` (old name to new), so that pg_restore creates the objects of tablespace OLD in
    NEW: it sets ``default_tablespace`` from that field of the TOC, and from nothing else.

    The TOC changes length, so data positions already set (an archive pg_dump wrote to a file)
    move by the same amount; a piped dump's positions are not set and stay so. Only the TOC is
    held in memory: the rest of ``chunks`` passes through as it comes.
    """
    rest = iter(chunks)
    cur = _StreamCursor(rest)
    # The header's magic must be in the buffer before it is checked; a short stream is left to
    # the header check, which names what it is.
    with contextlib.suppress(_Truncated):
        cur.take(_TAR_BLOCK)
    cur.pos = 0
    toc = _parse_stream(cur, where, _FORMAT_CUSTOM)
    head = cur.buf
    codec = python_codec(toc.encoding)
    edits: list[tuple[int, int, bytes]] = []  # (start, length replaced, new bytes)
    for entry in toc.entries:
        new = mapping.get(entry.tablespace or "")
        if entry.tablespace and new is not None and new != entry.tablespace:
            _sign, old_size = _INT.unpack_from(head, entry.tablespace_at)
            encoded = new.encode(codec, "surrogateescape")
            edits.append(
                (entry.tablespace_at, _INT.size + old_size, _INT.pack(0, len(encoded)) + encoded)
            )
    delta = sum(len(replacement) - old for _, old, replacement in edits)
    if delta:
        for entry in toc.entries:
            if entry.offset_state == OFFSET_SET:
                moved = bytes([OFFSET_SET]) + (entry.position + delta).to_bytes(_OFF_SIZE, "little")
                edits.append((entry.offset_at, 1 + _OFF_SIZE, moved))
    out = bytearray()
    pos = 0
    for start, old_len, replacement in sorted(edits):
        out += head[pos:start]
        out += replacement
        pos = start + old_len
    out += head[pos:]
    yield bytes(out)
    yield from rest


@contextlib.contextmanager
def _mapped(fd: int, path: Path) -> Iterator[mmap.mmap]:
    """The file open on ``fd``, mapped read-only, for the TOC: the pages read are resident, so
    nothing that reads the whole file goes through this."""
    if os.fstat(fd).st_size == 0:  # which mmap refuses to map
        raise ArchiveFormatError("empty file, not a pg_dump archive", path=str(path))
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
        yield buf


def _parse_toc(buf: mmap.mmap, path: Path) -> ArchiveToc:
    cur = _Cursor(buf)
    try:
        version = _parse_header(cur, path, _FORMAT_CUSTOM)
        toc_start = cur.pos
        entries = _parse_entries(cur, version, _FORMAT_CUSTOM)
    except _Malformed as exc:
        raise ArchiveFormatError(str(exc), path=str(path)) from None
    return ArchiveToc(version, toc_start, cur.pos, entries)


def _parse_header(cur: _Cursor, path: Path, expected: int) -> tuple[int, int, int]:
    if cur.end < len(_MAGIC) or cur.take(len(_MAGIC)) != _MAGIC:
        raise ArchiveFormatError("not a pg_dump custom-format archive", path=str(path))
    version = (cur.byte(), cur.byte(), cur.byte())
    if version not in SUPPORTED_VERSIONS:
        raise ArchiveFormatError(
            "archive version {}.{}.{} is not one pgvault reads".format(*version), path=str(path)
        )
    int_size, off_size, fmt = cur.byte(), cur.byte(), cur.byte()
    if (int_size, off_size) != (_INT_SIZE, _OFF_SIZE):
        raise _Malformed(f"integer size {int_size} and offset size {off_size}", cur.pos - 3)
    if fmt != expected:
        kind = "custom" if expected == _FORMAT_CUSTOM else "tar"
        raise _Malformed(f"format {fmt}, not {kind}", cur.pos - 1)
    if version >= _VERSION_WITH_ALGORITHM_BYTE:
        cur.byte()  # compression algorithm
    else:
        cur.integer()  # compression level
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        cur.integer()
    for _ in range(3):  # database, server version, pg_dump version
        cur.string()
    return version


def _parse_entries(cur: _Cursor, version: tuple[int, int, int], fmt: int) -> tuple[TocEntry, ...]:
    at = cur.pos
    count = cur.integer()
    if count < 0:
        raise _Malformed(f"TOC of {count} entries", at)
    entries: list[TocEntry] = []
    seen: set[int] = set()
    # Each entry takes dozens of bytes, so a damaged count ends at the end of the file, soon.
    for _ in range(count):
        at = cur.pos
        dump_id = cur.integer()
        if dump_id <= 0 or dump_id in seen:
            raise _Malformed(f"TOC entry with dump id {dump_id}", at)
        seen.add(dump_id)
        had_dumper = cur.integer()
        if had_dumper not in (0, 1):
            raise _Malformed(f"TOC entry {dump_id} with data dumper flag {had_dumper}", at)
        cur.string()  # catalog table oid
        cur.string()  # oid
        # Latin-1 keeps the bytes: _decoded() decodes the names once the encoding is known.
        tag = _latin1(cur.string())
        desc = cur.text()
        cur.integer()  # section
        definition = _latin1(cur.string())
        cur.string()  # drop statement
        cur.string()  # copy statement
        namespace = _latin1(cur.string())
        tablespace_at = cur.pos
        raw_tablespace = cur.string()
        cur.string()  # table access method
        if version >= _VERSION_WITH_RELKIND:
            cur.integer()  # relkind
        owner = _latin1(cur.string())
        cur.string()  # "with oids", always "false" since PostgreSQL 12
        deps: list[int] = []
        while (dep := cur.string()) is not None:  # dependencies, ended by NULL
            if dep.isdigit():
                deps.append(int(dep))

        if fmt == _FORMAT_TAR:
            cur.string()  # the name of the entry's data member: tar has no offsets
            offset_at, position = -1, 0
            state = OFFSET_NOT_SET if had_dumper else OFFSET_NO_DATA
        else:
            offset_at = cur.pos
            state = cur.byte()
            position = int.from_bytes(cur.take(_OFF_SIZE), "little")
            # pg_dump gives an entry an offset exactly when it has a data dumper.
            if state not in (OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA) or (
                (state == OFFSET_NO_DATA) == bool(had_dumper)
            ):
                raise _Malformed(
                    f"TOC entry {dump_id} with offset flag {state} (data dumper {had_dumper})",
                    offset_at,
                )
        entries.append(
            TocEntry(
                dump_id,
                desc,
                tag,
                bool(had_dumper),
                offset_at,
                state,
                position,
                namespace=namespace,
                owner=owner,
                dependencies=tuple(deps),
                definition=definition,
                tablespace=None if raw_tablespace is None else _latin1(raw_tablespace),
                tablespace_at=tablespace_at,
            )
        )
    return tuple(entries)


def _latin1(value: bytes | None) -> str:
    return "" if value is None else value.decode("latin-1")
