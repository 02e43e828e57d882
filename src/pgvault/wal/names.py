"""WAL file names and segment headers: what PostgreSQL hands ``archive_command``, read strictly.

PostgreSQL archives four kinds of file, and each keeps its name in the vault:

* a **segment**, ``TTTTTTTTXXXXXXXXYYYYYYYY`` (timeline, then the segment number split into a
  "log" and a "seg" part whose split depends on the segment size);
* a **partial** segment, ``<segment>.partial``: the last, unfinished segment of a timeline that a
  promotion left behind;
* a **history** file, ``TTTTTTTT.history``: the ancestry of timeline T (which timeline it branched
  from, and where);
* a **backup** history file, ``<segment>.XXXXXXXX.backup``: the label of a base backup.

Anything else (a traversal, a lower-case name, a 65-character name, an unknown suffix) is refused
before any file is opened. A segment's first page starts with a long page header, checked here
before a segment is stored and again before it is handed back to PostgreSQL: magic (the WAL
format, so the major version), timeline, page address (which must be where the name says the
segment starts), system identifier (which cluster wrote it) and segment size.
"""

from __future__ import annotations

import enum
import re
import struct
from pathlib import Path

import attrs

from pgvault.exceptions import PgVaultError

MIN_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 1 << 30
DEFAULT_SEGMENT_SIZE = 16 << 20
MAX_TEXT_FILE_SIZE = 16 << 20
"""History and backup label files are a few hundred bytes; anything this large is not one."""

XLP_LONG_HEADER = 0x0002
LONG_HEADER_SIZE = 40
"""Bytes of ``XLogLongPageHeaderData``: what a segment's first page begins with."""

# xlp_magic, xlp_info, xlp_tli, xlp_pageaddr, xlp_rem_len, (pad), xlp_sysid, xlp_seg_size,
# xlp_xlog_blcksz. WAL is written in the server's byte order; little-endian servers are the rule,
# big-endian ones are recognised by their magic read the other way round.
_LONG_HEADER = {"<": struct.Struct("<HHIQI4xQII"), ">": struct.Struct(">HHIQI4xQII")}

WAL_MAGIC: dict[int, int] = {
    0xD093: 96,
    0xD097: 10,
    0xD098: 11,
    0xD101: 12,
    0xD106: 13,
    0xD10D: 14,
    0xD110: 15,
    0xD113: 16,
    0xD116: 17,
    0xD118: 18,
}
"""``XLOG_PAGE_MAGIC`` of each major version (``src/include/access/xlog_internal.h``); 96 is 9.6."""

_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_PARTIAL = re.compile(r"^([0-9A-F]{24})\.partial$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
_BACKUP = re.compile(r"^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$")
_HISTORY_LINE = re.compile(r"^\s*(\d+)\s+([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})(?:\s+(.*))?$")


class WalError(PgVaultError):
    """A WAL file, name or archive is not what PostgreSQL's contract needs; the message names it.

    Raised for bad input (an unknown file name, a truncated segment, a segment from another
    cluster, a different file already archived under the name): the archive command fails with
    exit 1, never above 125, so PostgreSQL counts the failure in ``pg_stat_archiver`` and retries.
    """


class WalNameError(WalError):
    """A name that is not one PostgreSQL archives (``%f``) or a bad path (``%p``)."""


class Kind(enum.Enum):
    """What a WAL file name says the file is."""

    SEGMENT = "segment"
    PARTIAL = "partial"
    HISTORY = "history"
    BACKUP = "backup"


@attrs.frozen(order=True)
class WalName:
    """A parsed WAL file name. ``timeline`` is the one the name carries; for segments, partial
    segments and backup labels ``log`` and ``seg`` are the two halves of the segment part."""

    timeline: int
    log: int
    seg: int
    kind: Kind = attrs.field(order=False)
    text: str = attrs.field(order=False)

    @classmethod
    def parse(cls, name: str) -> WalName:
        """Parse ``name``; :class:`WalNameError` (one line, quoting it) if not a WAL name."""
        if m := _SEGMENT.match(name):
            return cls(int(m[1], 16), int(m[2], 16), int(m[3], 16), Kind.SEGMENT, name)
        if m := _PARTIAL.match(name):
            base = m[1]
            return cls(
                int(base[:8], 16), int(base[8:16], 16), int(base[16:], 16), Kind.PARTIAL, name
            )
        if m := _HISTORY.match(name):
            return cls(int(m[1], 16), 0, 0, Kind.HISTORY, name)
        if m := _BACKUP.match(name):
            base = m[1]
            return cls(
                int(base[:8], 16), int(base[8:16], 16), int(base[16:], 16), Kind.BACKUP, name
            )
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise WalNameError(
            f"{shown!r} is not a WAL file name PostgreSQL archives (a segment such as "
            "000000010000000000000001, <segment>.partial, TTTTTTTT.history or "
            "<segment>.XXXXXXXX.backup, upper-case hex, no folder)"
        )

    @property
    def is_segment_data(self) -> bool:
        """Whether the file holds segment bytes with a page header (a segment or a partial one)."""
        return self.kind in (Kind.SEGMENT, Kind.PARTIAL)

    @property
    def segment(self) -> str:
        """The 24-character segment part (for a history file: ``TTTTTTTT`` then zeros)."""
        return f"{self.timeline:08X}{self.log:08X}{self.seg:08X}"

    def segno(self, segment_size: int) -> int:
        """The segment number (its start LSN divided by ``segment_size``)."""
        check_segment_size(segment_size)
        per_log = 0x1_0000_0000 // segment_size
        if self.seg >= per_log:
            raise WalNameError(
                f"{self.text}: segment part {self.seg:08X} is out of range for "
                f"{segment_size >> 20} MiB segments (at most {per_log - 1:08X})"
            )
        return self.log * per_log + self.seg

    def start_lsn(self, segment_size: int) -> int:
        """The LSN where this segment begins."""
        return self.segno(segment_size) * segment_size

    def __str__(self) -> str:
        return self.text


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    """The file name of segment ``segno`` on ``timeline``, as PostgreSQL writes it."""
    per_log = 0x1_0000_0000 // segment_size
    return f"{timeline:08X}{segno // per_log:08X}{segno % per_log:08X}"


def history_name(timeline: int) -> str:
    """The history file name of ``timeline``."""
    return f"{timeline:08X}.history"


def check_segment_size(size: int) -> None:
    """Refuse a segment size PostgreSQL cannot have (a power of two from 1 MiB to 1 GiB)."""
    if not (MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE) or size & (size - 1):
        raise WalError(f"{size} bytes is not a WAL segment size (a power of two, 1 MiB to 1 GiB)")


def format_lsn(lsn: int) -> str:
    """``0/3000060``: an LSN as PostgreSQL prints it."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """The LSN ``text`` (``0/3000060``) names; ``ValueError`` otherwise."""
    high, sep, low = text.strip().partition("/")
    if not sep or not high or not low or len(high) > 8 or len(low) > 8:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


@attrs.frozen
class SegmentHeader:
    """The long page header at the start of a WAL segment."""

    magic: int
    info: int
    timeline: int
    pageaddr: int
    system_identifier: int
    segment_size: int
    block_size: int
    byte_order: str = "<"

    @property
    def major(self) -> int | None:
        """The PostgreSQL major version whose WAL format the magic names, if pgvault knows it."""
        return WAL_MAGIC.get(self.magic)

    @classmethod
    def parse(cls, data: bytes, *, name: str) -> SegmentHeader:
        """Read the header from a segment's first bytes; :class:`WalError` naming ``name`` if they
        cannot be one (too short, no known WAL magic, not a first page)."""
        if len(data) < LONG_HEADER_SIZE:
            what = "empty (zero bytes)" if not data else f"only {len(data)} bytes long"
            raise WalError(f"{name}: the file is {what}, not a WAL segment")
        for order, layout in _LONG_HEADER.items():
            fields = layout.unpack_from(data)
            magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = fields
            if magic in WAL_MAGIC or 0xD000 <= magic <= 0xD1FF:
                if not info & XLP_LONG_HEADER:
                    raise WalError(
                        f"{name}: its first page has no long header: not the start of a segment"
                    )
                return cls(magic, info, tli, pageaddr, sysid, seg_size, blcksz, order)
        raise WalError(
            f"{name}: no WAL page magic at its start (found 0x{data[0] | data[1] << 8:04X}): "
            "not a WAL segment, or its start is damaged"
        )

    def check(self, name: WalName, *, size: int, system_identifier: int | None = None) -> None:
        """Check this header against the file's ``name`` and ``size`` (and the cluster, when
        ``system_identifier`` is given). One :class:`WalError` line names the first mismatch."""
        try:
            check_segment_size(self.segment_size)
        except WalError:
            raise WalError(
                f"{name}: its header gives segment size {self.segment_size}, which no "
                "PostgreSQL writes (damaged header)"
            ) from None
        if size != self.segment_size:
            raise WalError(
                f"{name}: {size} bytes, but its header says segments are {self.segment_size} "
                "bytes: the file is truncated or padded"
            )
        expected = name.start_lsn(self.segment_size)
        if self.pageaddr != expected:
            raise WalError(
                f"{name}: its first page is at {format_lsn(self.pageaddr)}, but the name says the "
                f"segment starts at {format_lsn(expected)} (a renamed or recycled file)"
            )
        # A new timeline's first segment begins with pages copied from its parent timeline, so
        # the header may carry an older timeline, never a newer one.
        if not 1 <= self.timeline <= name.timeline:
            raise WalError(
                f"{name}: its header says timeline {self.timeline}, but the name says "
                f"{name.timeline}"
            )
        if system_identifier is not None and self.system_identifier != system_identifier:
            raise WalError(
                f"{name}: written by cluster {self.system_identifier}, not by cluster "
                f"{system_identifier}"
            )


def read_system_identifier(data_directory: Path) -> int | None:
    """The system identifier in ``data_directory/global/pg_control``, or None if unreadable.

    It is the first 8 bytes of ``ControlFileData`` in the server's byte order (read as
    little-endian: every platform PostgreSQL packages for today is).
    """
    try:
        with (data_directory / "global" / "pg_control").open("rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    if len(head) < 8:
        return None
    value: int = struct.unpack("<Q", head)[0]
    return value or None


def read_major_version(data_directory: Path) -> int | None:
    """The major version in ``data_directory/PG_VERSION`` (``15``), or None if unreadable."""
    try:
        text = (data_directory / "PG_VERSION").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if text.isdigit():
        return int(text)
    if text == "9.6":
        return 96
    return None


@attrs.frozen
class HistoryEntry:
    """One line of a timeline history file: ``parent`` ended at ``switch_lsn``."""

    parent: int
    switch_lsn: int
    reason: str


def parse_history(data: bytes, name: WalName) -> tuple[HistoryEntry, ...]:
    """The entries of history file ``name``, checked the way PostgreSQL reads them (``#``
    comments and blank lines allowed; parent timelines increasing and older than the file's)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise WalError(f"{name}: not a timeline history file (not text)") from None
    entries: list[HistoryEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _HISTORY_LINE.match(line)
        if not m:
            raise WalError(f"{name}: line {number} is not '<timeline> <LSN> <reason>'")
        parent = int(m[1])
        lsn = (int(m[2], 16) << 32) | int(m[3], 16)
        if parent >= name.timeline or (entries and parent <= entries[-1].parent):
            raise WalError(
                f"{name}: line {number} names timeline {parent}, out of order for the history of "
                f"timeline {name.timeline}"
            )
        entries.append(HistoryEntry(parent, lsn, (m[4] or "").strip()))
    if not entries and name.timeline > 1:
        raise WalError(f"{name}: names no parent timeline")
    return tuple(entries)


def check_backup_label(data: bytes, name: WalName) -> None:
    """Refuse a ``.backup`` file that is not a backup history label."""
    if not data.startswith(b"START WAL LOCATION:"):
        raise WalError(f"{name}: not a backup history file (no 'START WAL LOCATION:' line)")
