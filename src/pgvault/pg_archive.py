"""Reading and patching pg_dump custom-format archives (``pg_dump --format=custom``).

pg_dump writes an archive's table of contents (TOC) before its data, so where each table's data
starts is known only afterwards. Writing to a seekable file, pg_dump then goes back and rewrites
the TOC with those positions; writing to a pipe, as pgvault runs it, it cannot, and every data
entry keeps the flag "position not set". pg_restore copes by scanning the file for the blocks it
needs, and with ``--jobs`` each worker scans for itself. :func:`fill_data_offsets` does once, in
place, what pg_dump would have done, so that ``pg_restore --jobs`` seeks straight to each block.

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
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import attrs

from pgvault.exceptions import ArchiveFormatError

log = logging.getLogger("pgvault.pg_archive")

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
_BLOCK_DATA = 1
_BLOCK_LARGE_OBJECTS = 3
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
    """Where the entry's offset field (flag byte, then the position) starts in the file."""
    offset_state: int
    """:data:`OFFSET_NOT_SET`, :data:`OFFSET_SET` or :data:`OFFSET_NO_DATA`."""
    position: int
    """Where the entry's data block starts, when ``offset_state`` is :data:`OFFSET_SET`."""
    owner: str = ""
    """The object's owner (``ALTER … OWNER TO``), empty for entries without one."""
    tablespace: str | None = None
    """The tablespace pg_restore sets (``SET default_tablespace``) before the object: ``None``
    for objects that have none, ``""`` for the database's default."""
    tablespace_at: int = -1
    """Where the entry's tablespace string field starts in the file."""


@attrs.frozen
class ArchiveToc:
    """The header facts and table of contents of a custom-format archive."""

    version: tuple[int, int, int]
    toc_start: int
    """Where the TOC starts: everything before it is the header."""
    data_start: int
    """Where the TOC ends and the first data block (if any) starts."""
    entries: tuple[TocEntry, ...]


class _Malformed(Exception):
    """The bytes at ``pos`` do not follow the layout; becomes an ArchiveFormatError."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(f"{message} at byte {pos}")


_Buffer = mmap.mmap | bytes | bytearray


class _Truncated(_Malformed):
    """The buffer ends inside a field: more bytes may complete it."""


class _Cursor:
    """Reads the layout's ints and strings from a buffer, never past its end."""

    def __init__(self, buf: _Buffer, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    def take(self, n: int) -> bytes:
        if self.pos + n > self.end:
            raise _Truncated(f"archive ends inside a {n}-byte field", self.pos)
        data = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return data

    def byte(self) -> int:
        return self.take(1)[0]

    def integer(self) -> int:
        at = self.pos
        sign, value = _INT.unpack(self.take(_INT.size))
        value = int(value)
        if sign > 1:
            raise _Malformed(f"integer with sign byte {sign}", at)
        return -value if sign else value

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


def read_toc(path: Path) -> ArchiveToc:
    """The header facts and table of contents of the custom-format archive at ``path``.

    Raises :class:`ArchiveFormatError` when the file is not a custom-format archive of a
    version in :data:`SUPPORTED_VERSIONS`, or its header or TOC is truncated or damaged.
    """
    with path.open("rb") as f, _mapped(f.fileno(), path) as buf:
        return _parse_toc(buf, path)


def fill_data_offsets(path: Path) -> bool:
    """Write into the TOC of the archive at ``path`` the data block positions pg_dump could not.

    Each entry whose offset says "position not set" gets "position set" and the position of its
    data block, exactly as pg_dump writes them to a seekable file, in place: the file's length
    never changes. The blocks are found by reading only their headers and the chunk lengths.

    Returns True when every data entry now has its position (also when none lacked one: a
    seekable pg_dump's output, or an archive without data). Returns False, changing nothing,
    when the file is not an archive this module reads (see :data:`SUPPORTED_VERSIONS`), is
    truncated or damaged, or a data entry has no block, a block no entry, or a set position
    another block: pg_restore is then left to judge the file as it is, so a file that could not
    be patched restores, or fails, exactly as it would have. Raises :class:`OSError` when the
    file cannot be read or written.
    """
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            with _mapped(f.fileno(), path) as buf:
                toc = _parse_toc(buf, path)
                if not any(e.offset_state == OFFSET_NOT_SET for e in toc.entries):
                    return True
                try:
                    positions = _block_positions(buf, toc.data_start)
                except _Malformed as exc:
                    raise ArchiveFormatError(f"data blocks: {exc}", path=str(path)) from None
                start, patched = _patched_toc(buf, toc, positions, path)
    except ArchiveFormatError as exc:
        log.debug("data offsets not filled: %s", exc)
        return False
    with path.open("r+b") as f:
        if os.fstat(f.fileno()).st_size != size:
            log.debug("data offsets not filled: %s changed size while it was read", path)
            return False
        f.seek(start)
        f.write(patched)
    return True


def read_toc_stream(
    chunks: Iterator[bytes], *, where: str = "archive"
) -> tuple[ArchiveToc, bytearray]:
    """The header facts and TOC of a custom-format archive read from ``chunks``, and every byte
    read so far (the header, the TOC and perhaps the start of the data), which the caller passes
    on before the rest of ``chunks``. Only as much is read as the TOC needs: it comes first.

    Raises :class:`ArchiveFormatError` (naming ``where``) as :func:`read_toc` does, and when the
    stream ends inside the TOC.
    """
    head = bytearray()
    path = Path(where)
    want = 1 << 16
    for chunk in chunks:
        head += chunk
        if len(head) < want:
            continue
        try:
            return _parse_toc_strict(head, path), head
        except _Truncated:
            want = len(head) * 2  # re-parsing from the start: keep it to a few attempts
    try:
        return _parse_toc_strict(head, path), head
    except _Truncated as exc:
        raise ArchiveFormatError(
            f"stream ends inside the table of contents ({exc})", path=where
        ) from None


def _parse_toc_strict(buf: _Buffer, path: Path) -> ArchiveToc:
    """:func:`_parse_toc`, but a buffer ending inside a field raises :class:`_Truncated`."""
    cur = _Cursor(buf)
    try:
        version = _parse_header(cur, path)
        toc_start = cur.pos
        entries = _parse_entries(cur, version)
    except _Truncated:
        raise
    except _Malformed as exc:
        raise ArchiveFormatError(str(exc), path=str(path)) from None
    return ArchiveToc(version, toc_start, cur.pos, entries)


def tablespaces_in(toc: ArchiveToc) -> set[str]:
    """The tablespaces an archive's objects are created in (``""``, the database's default,
    left out)."""
    return {e.tablespace for e in toc.entries if e.tablespace}


def map_tablespaces(
    chunks: Iterator[bytes], mapping: Mapping[str, str], *, where: str = "archive"
) -> Iterator[bytes]:
    """``chunks`` of a custom-format archive with each object's tablespace renamed by
    ``mapping`` (old name to new), so that pg_restore creates the objects of tablespace OLD in
    NEW: it sets ``default_tablespace`` from that field of the TOC, and from nothing else.

    The TOC changes length, so data positions already set (an archive pg_dump wrote to a file)
    move by the same amount; a piped dump's positions are not set and stay so.
    """
    toc, head = read_toc_stream(chunks, where=where)
    edits: list[tuple[int, int, bytes]] = []  # (start, length replaced, new bytes)
    for entry in toc.entries:
        new = mapping.get(entry.tablespace or "")
        if entry.tablespace and new is not None and new != entry.tablespace:
            old_len = _INT.size + len(entry.tablespace.encode("utf-8", "surrogateescape"))
            encoded = new.encode()
            edits.append((entry.tablespace_at, old_len, _INT.pack(0, len(encoded)) + encoded))
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
    yield from chunks


@contextlib.contextmanager
def _mapped(fd: int, path: Path) -> Iterator[mmap.mmap]:
    """The file open on ``fd``, mapped read-only: the scan then costs no read call per chunk."""
    if os.fstat(fd).st_size == 0:  # which mmap refuses to map
        raise ArchiveFormatError("empty file, not a pg_dump archive", path=str(path))
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
        yield buf


def _parse_toc(buf: _Buffer, path: Path) -> ArchiveToc:
    cur = _Cursor(buf)
    try:
        version = _parse_header(cur, path)
        toc_start = cur.pos
        entries = _parse_entries(cur, version)
    except _Malformed as exc:
        raise ArchiveFormatError(str(exc), path=str(path)) from None
    return ArchiveToc(version, toc_start, cur.pos, entries)


def _parse_header(cur: _Cursor, path: Path) -> tuple[int, int, int]:
    if cur.end >= len(_MAGIC) and cur.buf[: len(_MAGIC)] != _MAGIC:
        raise ArchiveFormatError("not a pg_dump custom-format archive", path=str(path))
    if cur.take(len(_MAGIC)) != _MAGIC:
        raise ArchiveFormatError("not a pg_dump custom-format archive", path=str(path))
    version = (cur.byte(), cur.byte(), cur.byte())
    if version not in SUPPORTED_VERSIONS:
        raise ArchiveFormatError(
            "archive version {}.{}.{} is not one pgvault reads".format(*version), path=str(path)
        )
    int_size, off_size, fmt = cur.byte(), cur.byte(), cur.byte()
    if (int_size, off_size) != (_INT_SIZE, _OFF_SIZE):
        raise _Malformed(f"integer size {int_size} and offset size {off_size}", cur.pos - 3)
    if fmt != _FORMAT_CUSTOM:
        raise _Malformed(f"format {fmt}, not custom", cur.pos - 1)
    if version >= _VERSION_WITH_ALGORITHM_BYTE:
        cur.byte()  # compression algorithm
    else:
        cur.integer()  # compression level
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        cur.integer()
    for _ in range(3):  # database, server version, pg_dump version
        cur.string()
    return version


def _parse_entries(cur: _Cursor, version: tuple[int, int, int]) -> tuple[TocEntry, ...]:
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
        tag = cur.text()
        desc = cur.text()
        cur.integer()  # section
        for _ in range(4):  # definition, drop, copy, namespace
            cur.string()
        tablespace_at = cur.pos
        raw_tablespace = cur.string()
        cur.string()  # table access method
        if version >= _VERSION_WITH_RELKIND:
            cur.integer()  # relkind
        owner = cur.text()
        cur.string()  # "with oids", always "false" since PostgreSQL 12
        while cur.string() is not None:  # dependencies, ended by NULL
            pass
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
                owner,
                None
                if raw_tablespace is None
                else raw_tablespace.decode("utf-8", "surrogateescape"),
                tablespace_at,
            )
        )
    return tuple(entries)


def _block_positions(buf: mmap.mmap, start: int) -> dict[int, int]:
    """Dump id → position of every data block from ``start`` to the end of ``buf``, which must
    end exactly after the last block."""
    end = len(buf)
    positions: dict[int, int] = {}
    unpack = _INT.unpack_from
    pos = block = start
    try:
        while pos < end:
            block = pos
            kind = buf[pos]
            if kind not in (_BLOCK_DATA, _BLOCK_LARGE_OBJECTS):
                raise _Malformed(f"data block of unknown type {kind}", block)
            sign, dump_id = unpack(buf, pos + 1)
            if sign or dump_id == 0 or dump_id in positions:
                raise _Malformed(f"data block of dump id {-dump_id if sign else dump_id}", block)
            positions[dump_id] = block
            pos += 1 + _INT.size
            if kind == _BLOCK_DATA:
                pos = _skip_chunks(buf, pos)
                continue
            while True:  # large objects: oid, chunks, … oid 0
                sign, oid = unpack(buf, pos)
                if sign > 1:
                    raise _Malformed(f"large object oid with sign byte {sign}", pos)
                pos += _INT.size
                # pg_dump writes an oid >= 2^31 as a negative int: only 0 ends the list.
                if oid == 0:
                    break
                pos = _skip_chunks(buf, pos)
    except struct.error:
        # Every read goes through unpack_from, which checks bounds: a block cut short, or a
        # length running past the end of the file, ends here.
        raise _Malformed("file ends inside the data block", block) from None
    return positions


def _skip_chunks(buf: mmap.mmap, pos: int) -> int:
    """The position after the chunks starting at ``pos`` and their zero-length end; raises
    struct.error past the end of ``buf``.

    This loop runs once per chunk, and pg_dump --compress=0 writes a chunk per row: it is kept
    to the bare minimum of work per step (one unpack, one test), which matters on large dumps.
    """
    unpack = _INT.unpack_from
    while True:
        sign, length = unpack(buf, pos)
        if sign or not length:
            if sign:
                raise _Malformed(f"chunk of negative length -{length}", pos)
            return pos + _INT.size
        pos += _INT.size + length


def _patched_toc(
    buf: mmap.mmap, toc: ArchiveToc, positions: Mapping[int, int], path: Path
) -> tuple[int, bytes]:
    """Where to write and what: the span of the TOC from the first to the last offset field to
    fill, with every "not set" offset set to its block's position."""
    data_entries = {e.dump_id for e in toc.entries if e.has_data}
    strays = sorted(set(positions) - data_entries)
    if strays:
        raise ArchiveFormatError(
            f"data blocks for dump ids {strays} that no TOC entry with data has", path=str(path)
        )
    todo: list[TocEntry] = []
    for entry in toc.entries:
        if not entry.has_data:
            continue
        found = positions.get(entry.dump_id)
        if found is None:
            raise ArchiveFormatError(
                f"no data block for TOC entry {entry.dump_id} ({entry.desc} {entry.tag})",
                path=str(path),
            )
        if entry.offset_state == OFFSET_SET and entry.position != found:
            raise ArchiveFormatError(
                f"TOC entry {entry.dump_id} ({entry.desc} {entry.tag}) says its data is at "
                f"{entry.position}, its block is at {found}",
                path=str(path),
            )
        if entry.offset_state == OFFSET_NOT_SET:
            todo.append(entry)
    start = todo[0].offset_at
    span = bytearray(buf[start : todo[-1].offset_at + 1 + _OFF_SIZE])
    for entry in todo:
        at = entry.offset_at - start
        span[at : at + 1 + _OFF_SIZE] = bytes([OFFSET_SET]) + positions[entry.dump_id].to_bytes(
            _OFF_SIZE, "little"
        )
    return start, bytes(span)
