"""Reading pg_dump archives' tables of contents: from a file and from a stream, custom and tar,
piped (offsets not set) and seekable, in the dumped database's encoding; damage is named."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgvault.exceptions import ArchiveFormatError
from pgvault.postgres.archive import (
    OFFSET_NO_DATA,
    OFFSET_NOT_SET,
    OFFSET_SET,
    read_toc,
    read_toc_stream,
)
from pgvault.testing import PostgresCluster

# What pg_dump writes as the offset field of a data entry when it cannot seek back: the TOC goes
# out before any data, with the flag "not set" and the position as initialised, zero.
NOT_SET_FIELD = bytes([OFFSET_NOT_SET]) + bytes(8)

EDGE_SCHEMA = r"""
CREATE TABLE empty_table (x int);
CREATE TABLE wide (id int, body text);
-- One row longer than 2^24 bytes: a single chunk whose length uses all four bytes' range.
INSERT INTO wide VALUES (1, repeat('w', 17000000)), (2, '');
SELECT lo_create(0);                                        -- empty: an oid without chunks
SELECT lo_from_bytea(3000000000, '\x0000000000'::bytea);    -- oid >= 2^31: a "negative" int
SELECT lo_from_bytea(0, decode(repeat('00', 70000), 'hex'));  -- several chunks of zeros
CREATE MATERIALIZED VIEW numbers AS SELECT generate_series(1, 10) AS n;
"""


@pytest.fixture(scope="module")
def edge_db(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A database of empty and oversized data: an empty table, a 17 MB row, an empty large
    object, one with an oid above 2^31, one of several chunks, a materialized view."""
    name = "pg_archive_edges"
    pg_cluster.drop_database(name)
    pg_cluster.create_database(name)
    pg_cluster.execute(EDGE_SCHEMA, name)
    yield name
    pg_cluster.drop_database(name)


def pg_dump(cluster: PostgresCluster, dbname: str, dest: Path, *args: str, pipe: bool) -> Path:
    """Dump ``dbname`` in custom format to ``dest``: through a pipe, as pgvault reads pg_dump,
    or into the file itself, which pg_dump can seek in."""
    argv = [str(cluster.bindir / "pg_dump"), "--format=custom", *args, cluster.dsn(dbname)]
    if not pipe:
        subprocess.run([*argv, f"--file={dest}"], check=True)
        return dest
    with dest.open("wb") as out, subprocess.Popen(argv, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        shutil.copyfileobj(proc.stdout, out)
    assert proc.returncode == 0
    return dest


def data_states(path: Path) -> list[int]:
    return [e.offset_state for e in read_toc(path).entries if e.has_data]


def reset_offsets(source: Path, dest: Path) -> None:
    """Copy ``source`` with every set offset field reset as a piped pg_dump writes it."""
    data = bytearray(source.read_bytes())
    for entry in read_toc(source).entries:
        if entry.offset_state == OFFSET_SET:
            data[entry.offset_at : entry.offset_at + len(NOT_SET_FIELD)] = NOT_SET_FIELD
    dest.write_bytes(data)


@pytest.mark.parametrize("database", ["rich_db", "edge_db"])
@pytest.mark.parametrize("compress", [["--compress=0"], []], ids=["uncompressed", "default"])
def test_reads_the_offsets_as_pg_dump_writes_them(
    pg_cluster: PostgresCluster,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    database: str,
    compress: list[str],
) -> None:
    """A seekable dump's data entries have their positions set, the others none; a piped dump
    is the seekable one with every position reset, byte for byte from the TOC on."""
    dbname = request.getfixturevalue(database)
    seekable = pg_dump(pg_cluster, dbname, tmp_path / "seekable.dump", *compress, pipe=False)
    toc = read_toc(seekable)
    with_data = [e for e in toc.entries if e.has_data]
    assert {e.desc for e in with_data} == {"TABLE DATA", "BLOBS"}
    assert {e.offset_state for e in with_data} == {OFFSET_SET}
    assert {e.offset_state for e in toc.entries if not e.has_data} == {OFFSET_NO_DATA}

    reset = tmp_path / "reset.dump"
    reset_offsets(seekable, reset)
    piped = pg_dump(pg_cluster, dbname, tmp_path / "piped.dump", *compress, pipe=True)
    assert set(data_states(piped)) == {OFFSET_NOT_SET}
    # The header differs only in pg_dump's start time; from the TOC on, the bytes are the same.
    assert reset.read_bytes()[toc.toc_start :] == piped.read_bytes()[toc.toc_start :]


@pytest.fixture(scope="module")
def piped_archive(
    pg_cluster: PostgresCluster, rich_db: str, tmp_path_factory: pytest.TempPathFactory
) -> bytes:
    """The bytes of a piped, uncompressed dump of the rich database, as pgvault stores it."""
    path = tmp_path_factory.mktemp("pg_archive") / "piped.dump"
    return pg_dump(pg_cluster, rich_db, path, "--compress=0", pipe=True).read_bytes()


def test_read_toc_names_what_is_wrong(tmp_path: Path) -> None:
    """read_toc raises ArchiveFormatError naming the file and what it found."""
    path = tmp_path / "not-a-dump"
    path.write_bytes(b"PGDMP\x01\x0d\x00")
    with pytest.raises(ArchiveFormatError, match=r"not-a-dump: archive version 1\.13\.0"):
        read_toc(path)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` as a stream of ``size``-byte chunks."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_the_toc_read_from_a_stream_is_the_files_and_stops_early(
    piped_archive: bytes, pg_cluster: PostgresCluster, rich_db: str, tmp_path: Path
) -> None:
    """read_toc_stream gives the entries read_toc gives (names, schemas, owners, dependencies),
    reads the stream only as far as the TOC, and reads a tar archive's toc.dat the same way."""
    path = tmp_path / "piped.dump"
    path.write_bytes(piped_archive)
    taken: list[bytes] = []

    def counted() -> Iterator[bytes]:
        for chunk in chunked(piped_archive, 512):
            taken.append(chunk)
            yield chunk

    streamed = read_toc_stream(counted())
    assert streamed == read_toc(path)
    assert sum(map(len, taken)) < streamed.data_start + 512 < len(piped_archive)
    users = next(e for e in streamed.entries if e.desc == "TABLE" and e.tag == "users")
    assert (users.namespace, users.owner) == ("public", "postgres")
    data = next(e for e in streamed.entries if e.desc == "TABLE DATA" and e.tag == "users")
    assert users.dump_id in data.dependencies

    tar = tmp_path / "rich.tar"
    argv = [str(pg_cluster.bindir / "pg_dump"), "--format=tar", f"--file={tar}"]
    subprocess.run([*argv, pg_cluster.dsn(rich_db)], check=True)
    from_tar = read_toc_stream(chunked(tar.read_bytes(), 4096))
    key = [(e.desc, e.namespace, e.tag, e.owner, e.has_data) for e in streamed.entries]
    assert [(e.desc, e.namespace, e.tag, e.owner, e.has_data) for e in from_tar.entries] == key


def test_toc_names_are_decoded_in_the_archives_encoding(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """A LATIN1 database's TOC holds LATIN1 bytes: its names come back as the text they are."""
    pg_cluster.drop_database("latin1_toc")
    with pg_cluster.connect() as conn:
        conn.execute("CREATE DATABASE latin1_toc ENCODING 'LATIN1' TEMPLATE template0 LOCALE 'C'")
    pg_cluster.execute('CREATE TABLE "café" (x int)', "latin1_toc")
    archive = pg_dump(pg_cluster, "latin1_toc", tmp_path / "latin1.dump", pipe=True)
    toc = read_toc_stream(chunked(archive.read_bytes(), 1000))
    assert toc.encoding == "LATIN1"
    assert [e.tag for e in toc.entries if e.desc == "TABLE"] == ["café"]
    pg_cluster.drop_database("latin1_toc")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty archive"),
        (b"PGDMP\x01\x0e\x00\x04\x08\x01", "ends inside"),
        (b"x" * 600, "neither a pg_dump custom-format archive nor a tar archive"),
    ],
)
def test_a_stream_that_is_no_archive_is_named(data: bytes, message: str) -> None:
    """Empty, truncated and foreign streams raise ArchiveFormatError naming the archive."""
    with pytest.raises(ArchiveFormatError, match=f"artifact a.pgdump: .*{message}"):
        read_toc_stream(iter([data]), name="artifact a.pgdump")
