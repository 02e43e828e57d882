"""WAL names and segment headers are read strictly, as PostgreSQL writes them."""

from __future__ import annotations

import struct

import pytest

from pgvault.wal.names import (
    Kind,
    SegmentHeader,
    WalError,
    WalName,
    WalNameError,
    format_lsn,
    parse_history,
    parse_lsn,
    segment_name,
)

MIB = 1 << 20


def header(
    *,
    magic: int = 0xD110,
    tli: int = 1,
    pageaddr: int = 6 * MIB,
    sysid: int = 7_714_486_087_970_326_299,
    seg_size: int = MIB,
    order: str = "<",
) -> bytes:
    """A long page header as PostgreSQL lays it out (XLogLongPageHeaderData)."""
    return struct.pack(f"{order}HHIQI4xQII", magic, 0x0007, tli, pageaddr, 0, sysid, seg_size, 8192)


def test_every_kind_of_name_parses_and_keeps_its_text() -> None:
    """Segments, partial segments, history and backup label files parse; numbers are hex."""
    cases = {
        "00000001000000000000000A": Kind.SEGMENT,
        "00000002000000010000003F.partial": Kind.PARTIAL,
        "0000000A.history": Kind.HISTORY,
        "000000010000000000000002.00000028.backup": Kind.BACKUP,
    }
    for text, kind in cases.items():
        name = WalName.parse(text)
        assert (name.kind, name.text, str(name)) == (kind, text, text)
    assert WalName.parse("0000000A.history").timeline == 10
    assert WalName.parse("00000002000000010000003F.partial").segno(16 * MIB) == 256 + 63


@pytest.mark.parametrize(
    "text",
    [
        "",
        "../000000010000000000000001",
        "pg_wal/000000010000000000000001",
        "00000001000000000000000a",
        "0000000100000000000000011",
        "000000010000000000000001.tmp",
        "000000010000000000000001.ready",
        "RECOVERYXLOG",
        "1.history",
        "F" * 65,
    ],
)
def test_anything_else_is_refused_in_one_line(text: str) -> None:
    """Traversals, lower case, wrong lengths and unknown suffixes are not WAL names."""
    with pytest.raises(WalNameError) as caught:
        WalName.parse(text)
    assert "\n" not in str(caught.value)


def test_segment_numbers_depend_on_the_segment_size() -> None:
    """The name's two halves combine by the segment size, both ways."""
    for size in (MIB, 16 * MIB, 1 << 30):
        for segno in (1, 255, 256, 4095, 4096, 123_456):
            name = segment_name(3, segno, size)
            assert WalName.parse(name).segno(size) == segno
    with pytest.raises(WalNameError, match="out of range for 16 MiB segments"):
        WalName.parse("000000010000000000000100").segno(16 * MIB)
    assert format_lsn(parse_lsn("1/3000060")) == "1/3000060"


def test_a_header_must_match_its_name_size_and_cluster() -> None:
    """The header's page address, size, timeline and system id are checked against the file."""
    name = WalName.parse("000000010000000000000006")
    ok = SegmentHeader.parse(header() + b"\0" * 100, name=name.text)
    assert ok.major == 15
    ok.check(name, size=MIB, system_identifier=7_714_486_087_970_326_299)
    with pytest.raises(WalError, match="truncated or padded"):
        ok.check(name, size=MIB - 1)
    with pytest.raises(WalError, match="not by cluster 1"):
        ok.check(name, size=MIB, system_identifier=1)
    renamed = WalName.parse("000000010000000000000007")
    with pytest.raises(WalError, match="the name says the segment starts at 0/700000"):
        ok.check(renamed, size=MIB)
    newer = SegmentHeader.parse(header(tli=3), name=name.text)
    with pytest.raises(WalError, match="header says timeline 3"):
        newer.check(name, size=MIB)
    # A new timeline's first segment starts with pages copied from its parent: allowed.
    SegmentHeader.parse(header(tli=1), name="000000020000000000000006").check(
        WalName.parse("000000020000000000000006"), size=MIB
    )
    big_endian = SegmentHeader.parse(header(order=">"), name=name.text)
    assert (big_endian.byte_order, big_endian.pageaddr) == (">", 6 * MIB)
    with pytest.raises(WalError, match="no WAL page magic"):
        SegmentHeader.parse(b"\x89PNG" + b"\0" * 60, name=name.text)
    with pytest.raises(WalError, match="is empty"):
        SegmentHeader.parse(b"", name=name.text)
    with pytest.raises(WalError, match="segment size 12345"):
        SegmentHeader.parse(header(seg_size=12345), name=name.text).check(name, size=12345)


def test_history_files_parse_as_postgresql_reads_them() -> None:
    """Parents increase and are older than the file's timeline; comments and blanks pass."""
    name = WalName.parse("00000003.history")
    entries = parse_history(
        b"# comment\n1\t0/3000060\tno recovery target specified\n\n2\t0/5000000\tbefore x\n", name
    )
    assert [(e.parent, format_lsn(e.switch_lsn)) for e in entries] == [
        (1, "0/3000060"),
        (2, "0/5000000"),
    ]
    for bad in (b"2\t0/1\tx\n1\t0/2\ty\n", b"3\t0/1\tx\n", b"garbage\n", b"\xff\xfe"):
        with pytest.raises(WalError):
            parse_history(bad, name)
