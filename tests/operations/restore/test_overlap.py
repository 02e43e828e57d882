"""The parallel restore of a single custom-format archive, loaded while the work file is written:
the same database as the source, partial restores, and damage found mid-restore."""

from __future__ import annotations

import importlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import pgvault
from pgvault.operations.restore.overlap import EarlyPostData, data_shares
from pgvault.postgres.archive import TocEntry, read_toc
from pgvault.testing import PostgresCluster
from tests.conftest import snapshot_database

ConfigMaker = Callable[..., Path]

SOURCE = "lopsided"

# One table far larger than the rest, so that a fair deal gives it a pg_restore of its own.
SCHEMA = r'''
CREATE SCHEMA "Mixed Case";
CREATE TABLE public.big (id int PRIMARY KEY, born date NOT NULL, payload text);
INSERT INTO public.big
SELECT i, date '2000-01-01' + i % 9000, 'row ' || i || ' ' || repeat('x', 100)
FROM generate_series(1, 40000) AS i;
CREATE TABLE "Mixed Case"."Child ""Rows""" (
    id serial PRIMARY KEY, big_id int REFERENCES public.big (id), note text);
INSERT INTO "Mixed Case"."Child ""Rows""" (big_id, note)
SELECT i * 7, 'note ' || i FROM generate_series(1, 3000) AS i;
CREATE INDEX child_by_big ON "Mixed Case"."Child ""Rows""" (big_id);
CREATE TABLE public.tiny (k text PRIMARY KEY);
INSERT INTO public.tiny VALUES ('a'), ('b');
CREATE TABLE public.measure (at date NOT NULL, v int) PARTITION BY RANGE (at);
CREATE TABLE public.measure_2023 PARTITION OF public.measure
    FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE public.measure_rest PARTITION OF public.measure DEFAULT;
INSERT INTO public.measure SELECT date '2022-06-01' + i % 700, i FROM generate_series(1, 5000) i;
-- A partitioned index (its partitions' indexes attach to it) and a materialized view with an
-- index: neither may be built before the final pass.
CREATE INDEX measure_by_v ON public.measure (v);
CREATE MATERIALIZED VIEW public.big_days AS SELECT born, count(*) AS n FROM public.big GROUP BY 1;
CREATE UNIQUE INDEX big_days_born ON public.big_days (born);
CREATE SEQUENCE public."Counter";
SELECT setval('public."Counter"', 987);
SELECT lo_from_bytea(0, convert_to(repeat('large object ', 500), 'UTF8'));
ANALYZE;
'''


@pytest.fixture(scope="module")
def source_db(pg_cluster: PostgresCluster) -> str:
    if SOURCE not in pg_cluster.databases():
        pg_cluster.create_database(SOURCE)
        pg_cluster.execute(SCHEMA, SOURCE)
    return SOURCE


def _config(
    make_config: ConfigMaker, cluster: PostgresCluster, **kw: object
) -> pgvault.PipelineConfig:
    return pgvault.load_config(make_config({"type": "pg_dump", "dsn": cluster.dsn(SOURCE)}, **kw))


def _pg_restores_running() -> list[int]:
    """This process's children that are pg_restore."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if comm == "pg_restore" and int(rest.split()[1]) == os.getpid():
            found.append(int(pid))
    return found


def test_a_single_archive_restores_in_parallel_shares(
    pg_cluster: PostgresCluster,
    source_db: str,
    make_config: ConfigMaker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--jobs 2 from one archive gives the source's rows, sequences, large objects, indexes and
    keys back, the dominant table loaded by a pg_restore of its own; the work file is gone."""
    config = _config(make_config, pg_cluster)
    pgvault.run(config)
    loading = importlib.import_module("pgvault.operations.restore.loading")
    dealt: list[list[list[TocEntry]]] = []

    def watched(*args: object) -> list[list[TocEntry]]:
        dealt.append(data_shares(*args))  # type: ignore[arg-type]
        return dealt[-1]

    monkeypatch.setattr(loading, "data_shares", watched)
    early: list[list[str]] = []
    after = EarlyPostData.after

    def watched_after(self: EarlyPostData, share: int) -> list[TocEntry]:
        ready = after(self, share)
        early.append([f"{e.desc} {e.tag}" for e in ready])
        return ready

    monkeypatch.setattr(EarlyPostData, "after", watched_after)
    work = tmp_path / "work"
    work.mkdir()
    target = "lopsided_copy"
    pg_cluster.drop_database(target)
    pgvault.restore(config, "latest", target_db=target, jobs=2, work_dir=work)
    assert snapshot_database(pg_cluster, target) == snapshot_database(pg_cluster, source_db)
    [shares] = dealt
    data = [[e.tag for e in share if e.has_data] for share in shares]
    assert ["big"] in data and len(data) == 2
    # The share that ends first has its tables' keys and indexes built while the other loads;
    # the foreign key, which needs big's key, waits for the final pass.
    assert len(early) == 2 and early[1] == []
    if "CONSTRAINT big big_pkey" not in early[0]:  # the small share ended first
        assert "INDEX child_by_big" in early[0] and "CONSTRAINT tiny tiny_pkey" in early[0]
    assert not any(item.startswith("FK CONSTRAINT") for item in early[0])
    assert list(work.iterdir()) == []
    pg_cluster.drop_database(target)


def test_a_partial_restore_in_parallel_restores_only_the_selection(
    pg_cluster: PostgresCluster, source_db: str, make_config: ConfigMaker
) -> None:
    """--table with --jobs 2 from one archive restores just those tables, whole."""
    config = _config(make_config, pg_cluster)
    pgvault.run(config)
    target = "lopsided_part"
    pg_cluster.drop_database(target)
    pgvault.restore(
        config, "latest", target_db=target, jobs=2, tables=("public.tiny", "public.measure")
    )
    tables = pg_cluster.execute(
        "SELECT tablename::text FROM pg_tables WHERE schemaname NOT IN "
        "('pg_catalog', 'information_schema') ORDER BY 1",
        target,
    )
    assert tables == [("measure",), ("measure_2023",), ("measure_rest",), ("tiny",)]
    for table in ("tiny", "measure"):
        sql = f"SELECT t::text FROM public.{table} t ORDER BY 1"
        assert pg_cluster.execute(sql, target) == pg_cluster.execute(sql, source_db)
    pg_cluster.drop_database(target)


def test_a_partial_parallel_restore_builds_early_only_what_it_selected(
    pg_cluster: PostgresCluster,
    source_db: str,
    make_config: ConfigMaker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--table big and the child table with --jobs 2: two shares, the child's keys built while
    big loads, and the final pass (its own list, without them) adds big's key and the foreign
    key between them: exactly the two tables, with the source's rows, indexes and keys."""
    config = _config(make_config, pg_cluster)
    pgvault.run(config)
    early: list[list[str]] = []
    after = EarlyPostData.after

    def watched_after(self: EarlyPostData, share: int) -> list[TocEntry]:
        ready = after(self, share)
        early.append([f"{e.desc} {e.tag}" for e in ready])
        return ready

    monkeypatch.setattr(EarlyPostData, "after", watched_after)
    target = "lopsided_pair"
    pg_cluster.drop_database(target)
    child = '"Mixed Case"."Child ""Rows"""'
    pgvault.restore(config, "latest", target_db=target, jobs=2, tables=("public.big", child))
    assert len(early) == 2 and early[1] == []
    assert not any(item.startswith("FK CONSTRAINT") for item in early[0])
    assert not any("tiny" in item for item in early[0])
    mine, theirs = snapshot_database(pg_cluster, target), snapshot_database(pg_cluster, source_db)
    assert sorted(k for k in mine if not k.startswith("<")) == sorted(["public.big", child])
    for key in ("public.big", child):
        assert mine[key] == theirs[key]
    indexes = [r for r in theirs["<indexes>"] if r[1] in ("big", 'Child "Rows"')]
    keys = [r for r in theirs["<constraints>"] if r[0] in ("big", child)]
    assert len(indexes) == 3 and len(keys) == 3  # two primary keys, child_by_big; the FK
    assert mine["<indexes>"] == indexes
    assert mine["<constraints>"] == keys
    pg_cluster.drop_database(target)


@pytest.mark.parametrize(
    ("transforms", "damage"),
    [
        ([], "text"),  # pg_restore loads it all: the digest at the stream's end tells
        ([], "date"),  # pg_restore trips over it first
        (None, "middle"),  # zstd: the decoder meets it mid-stream, pg_restores still loading
    ],
)
def test_damage_under_parallel_restore_names_the_artifact_and_drops_the_target(
    pg_cluster: PostgresCluster,
    source_db: str,
    make_config: ConfigMaker,
    tmp_path: Path,
    transforms: list[dict[str, object]] | None,
    damage: str,
) -> None:
    """A flipped byte in the vault fails a --jobs 2 restore naming the artifact; no pg_restore
    is left running, the new database is dropped, the work file removed."""
    config = _config(make_config, pg_cluster, transforms=transforms)
    manifest = pgvault.run(config)
    art = next(a for a in manifest.artifacts if a.role == "main")
    stored = Path(config.sink.describe()) / config.name / "backups" / manifest.backup_id / art.path
    data = bytearray(stored.read_bytes())
    if damage == "text":
        at = data.index(b"row 20000 x") + len(b"row 20000 x")
    elif damage == "date":
        at = data.index(b"\t2000-01-02\t") + 5
    else:
        at = len(data) // 2
    data[at] ^= 0x01 if damage != "date" else ord("x") ^ data[at]
    stored.write_bytes(bytes(data))
    work = tmp_path / "work"
    work.mkdir()
    target = "lopsided_damaged"
    pg_cluster.drop_database(target)
    with pytest.raises(pgvault.PgVaultError, match=rf"artifact {art.path}"):
        pgvault.restore(config, manifest.backup_id, target_db=target, jobs=2, work_dir=work)
    assert _pg_restores_running() == []
    assert target not in pg_cluster.databases()
    assert list(work.iterdir()) == []


def test_shares_deal_every_data_entry_once_in_archive_order(
    pg_cluster: PostgresCluster, source_db: str, tmp_path: Path
) -> None:
    """Each data entry is in exactly one share, each share in the archive's order, the largest
    alone; entries without data (the sequence's value) in the first only."""
    dump = tmp_path / "src.pgdump"
    pg_dump = str(pg_cluster.bindir / "pg_dump")
    subprocess.run([pg_dump, "-Fc", "-f", str(dump), pg_cluster.dsn(source_db)], check=True)
    toc = read_toc(dump)
    weights = {
        ("public", "big"): 8_000_000,
        ("public", "tiny"): 8192,
        ("public", "measure_2023"): 40_000,
        ("public", "measure_rest"): 40_000,
        ("Mixed Case", 'Child "Rows"'): 200_000,
    }  # the large object, which has no figure, weighs their average
    shares = data_shares(toc, None, weights, 2)
    order = {e.dump_id: i for i, e in enumerate(toc.entries)}
    for share in shares:
        assert [order[e.dump_id] for e in share] == sorted(order[e.dump_id] for e in share)
    with_data = [e.dump_id for share in shares for e in share if e.has_data]
    assert sorted(with_data) == sorted(e.dump_id for e in toc.entries if e.has_data)
    assert [e.tag for e in shares[0] if e.has_data] == ["big"]
    sequence_sets = [[e.tag for e in share if e.desc == "SEQUENCE SET"] for share in shares]
    assert sequence_sets[0] and not sequence_sets[1]
    many = data_shares(toc, None, weights, 8)
    assert sorted(e.dump_id for share in many for e in share if e.has_data) == sorted(with_data)
    # Tables far smaller than the one they would read past are not worth a pg_restore of
    # their own: with no large object to weigh on them, all go to one list.
    weights[("", "BLOBS")] = 1
    [alone] = data_shares(toc, None, weights, 2)
    assert [e.tag for e in alone if e.has_data] == [e.tag for e in toc.entries if e.has_data]


def test_early_post_data_needs_its_tables_loaded_and_nothing_of_the_post_data(
    pg_cluster: PostgresCluster, source_db: str, tmp_path: Path
) -> None:
    """Once a share is in, only indexes and keys whose every table is loaded may run: not a
    foreign key (it needs the other table's key), not a partitioned table's index (its
    partitions attach to it), not a table of the share still loading; and nothing once the
    last share is in (the final pass builds those several at a time)."""
    dump = tmp_path / "src.pgdump"
    pg_dump = str(pg_cluster.bindir / "pg_dump")
    subprocess.run([pg_dump, "-Fc", "-f", str(dump), pg_cluster.dsn(source_db)], check=True)
    toc = read_toc(dump)
    weights = {("public", "big"): 8_000_000}
    shares = data_shares(toc, None, weights, 2)
    big_share = next(
        k for k, share in enumerate(shares) if any(e.has_data and e.tag == "big" for e in share)
    )
    small = 1 - big_share
    early = EarlyPostData(toc, None, shares)
    ready = {(e.desc, e.tag) for e in early.after(small)}
    assert ("INDEX", "child_by_big") in ready
    assert ("CONSTRAINT", "tiny tiny_pkey") in ready
    assert ("CONSTRAINT", 'Child "Rows" Child "Rows"_pkey') in ready
    assert ("CONSTRAINT", "big big_pkey") not in ready  # big is still loading
    assert not [kind for kind, _tag in ready if kind not in ("INDEX", "CONSTRAINT")]
    assert ("INDEX", "measure_by_v") not in ready  # on the partitioned table: no data of its own
    assert ("INDEX", "big_days_born") not in ready  # on a materialized view
    assert ("INDEX", "measure_2023_v_idx") not in ready  # a partition's: needs the parent's
    assert early.started == {e.dump_id for e in toc.entries if (e.desc, e.tag) in ready}
    assert early.after(big_share) == []  # the last share: the final pass does the rest
    # A selection keeps its own: what it leaves out never runs early.
    chosen = frozenset(e.dump_id for e in toc.entries if e.tag != "child_by_big")
    selective = EarlyPostData(toc, chosen, shares)
    picked = {(e.desc, e.tag) for e in selective.after(small)}
    assert picked == ready - {("INDEX", "child_by_big")}
