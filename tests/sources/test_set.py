"""Backup sets: a database and two folders in one backup with one manifest, read back whole and
in part; a failing part (a folder gone, pg_dump killed) leaves no backup listed."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.testing import PostgresCluster
from pgvault.vault.parts import part_names, part_view
from tests.conftest import pgvault_cli, toml_value
from tests.sources.test_pg_dump import (
    _pg_dump_pids,
    assert_nothing_left,
    kill_pg_dumps,
    run_gated,
)

DB = "set_app"
BIG = "set_big"


@pytest.fixture(scope="module")
def set_db(pg_cluster: PostgresCluster) -> str:
    """A small database of the session cluster (500 rows)."""
    if DB not in pg_cluster.databases():
        pg_cluster.create_database(DB)
        pg_cluster.execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text);"
            "INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 500) i;",
            DB,
        )
    return pg_cluster.dsn(DB)


@pytest.fixture(scope="module")
def big_db(pg_cluster: PostgresCluster) -> str:
    """A database large enough (about 20 MB of dump) that pg_dump is still writing while a
    test holds the stream."""
    if BIG not in pg_cluster.databases():
        pg_cluster.create_database(BIG)
        pg_cluster.execute(
            "CREATE TABLE filler AS SELECT i, md5(i::text) || repeat('x', 160) AS pad "
            "FROM generate_series(1, 100000) AS i;",
            BIG,
        )
    return pg_cluster.dsn(BIG)


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    media, conf = tmp_path / "srv" / "media", tmp_path / "etc" / "app"
    (media / "img").mkdir(parents=True)
    conf.mkdir(parents=True)
    (media / "img" / "a.png").write_bytes(os.urandom(5000))
    (media / "b.txt").write_text("media\n")
    (conf / "app.ini").write_text("[app]\nkey = 1\n")
    return media, conf


def write_set_config(tmp_path: Path, sources: list[dict[str, Any]], name: str = "set") -> Path:
    """A pipeline with ``[[source]]`` tables (each with its ``name``), zstd, a local sink."""
    lines = [f"name = {toml_value(name)}", 'checksums = ["sha256", "md5"]']
    for source in sources:
        lines.append("[[source]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in source.items()]
    lines += ["[[transform]]", 'type = "zstd"', "level = 3"]
    lines += ["[sink]", 'type = "local"', f"path = {toml_value(str(tmp_path / 'vault'))}"]
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _three(tmp_path: Path, dsn: str) -> Path:
    media, conf = _folders(tmp_path)
    return write_set_config(
        tmp_path,
        [
            {"name": "db", "type": "pg_dump", "dsn": dsn, "count_tables": ["*"]},
            {"name": "media", "type": "files", "paths": [str(media)]},
            {"name": "config", "type": "files", "paths": [str(conf)]},
        ],
    )


def test_set_is_one_backup_with_one_manifest_and_parts(set_db: str, tmp_path: Path) -> None:
    """A database and two folders become one backup: one manifest (format 2) whose artifacts
    name their part, each part's metadata with its times (the dump's snapshot time beside the
    file sets'); list and show name the parts; a part reads as a single-source backup."""
    path = _three(tmp_path, set_db)
    config = pgvault.load_config(path)
    manifest = pgvault.run(config)

    assert manifest.format_version == 2 and manifest.source_type == "set"
    assert part_names(manifest) == ["db", "media", "config"]
    assert {a.path: a.part for a in manifest.artifacts} == {
        "db.dump.pgdump.zst": "db",
        "db.globals.sql.zst": "db",
        "media.files.tar.zst": "media",
        "config.files.tar.zst": "config",
    }
    db, media = part_view(manifest, "db"), part_view(manifest, "media")
    assert db.source["database"] == DB and db.source["snapshot_at"].endswith("Z")
    assert {t["name"]: t["rows"] for t in db.source["tables"]}["items"] == 500
    assert media.source["type"] == "files" and media.source["files"] == 2
    assert media.source["started_at"] <= media.source["finished_at"]

    stored = pgvault.Vault.from_config(config).manifest(manifest.backup_id)
    assert stored == manifest
    raw = json.loads(
        (tmp_path / "vault" / "set" / "backups")
        .joinpath(manifest.backup_id, "manifest.json")
        .read_text()
    )
    assert raw["format_version"] == 2 and raw["source"]["parts"][1]["name"] == "media"
    md5sums = (tmp_path / "vault" / "set" / "backups" / manifest.backup_id / "MD5SUMS").read_text()
    assert len(md5sums.splitlines()) == 4

    listed = pgvault_cli("list", path)
    assert listed.returncode == 0, listed.stderr
    assert "set: db, media, config" in listed.stdout
    as_json = json.loads(pgvault_cli("list", path, "--json").stdout)
    assert as_json[0]["parts"] == ["db", "media", "config"]
    shown = pgvault_cli("show", path, manifest.backup_id, "--parts")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"db: pg_dump {DB} (custom), ") and "snapshot 20" in lines[0]
    assert lines[1].startswith("media: files: 2 files, ") and " read 20" in lines[1]

    verify = pgvault_cli("verify", path, manifest.backup_id, "--deep")
    assert verify.returncode == 0, verify.stderr
    assert "pg_restore --list" in verify.stdout


def test_export_part_writes_that_part(set_db: str, tmp_path: Path) -> None:
    """export --part media writes the media tar alone (with its MD5SUMS); the tar holds the
    folder's files."""
    path = _three(tmp_path, set_db)
    manifest = pgvault.run(pgvault.load_config(path))
    out = tmp_path / "out"
    done = pgvault_cli("export", path, manifest.backup_id, "--part", "media", "--out", out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["MD5SUMS", "media.files.tar"]
    with tarfile.open(out / "media.files.tar") as tar:
        assert any(n.endswith("media/img/a.png") for n in tar.getnames())
    bad = pgvault_cli(
        "export", path, manifest.backup_id, "--part", "logs", "--out", tmp_path / "o2"
    )
    assert bad.returncode != 0 and "its parts: db, media, config" in bad.stderr


def test_missing_folder_fails_the_set_and_stops_the_dump(set_db: str, tmp_path: Path) -> None:
    """A part whose folder is gone fails the run naming it (doctor names the part first); the
    database part already started is stopped (no pg_dump left behind) and no backup is
    listed."""
    path = _three(tmp_path, set_db)
    (tmp_path / "etc" / "app" / "app.ini").unlink()
    (tmp_path / "etc" / "app").rmdir()
    doctor = pgvault_cli("doctor", path)
    assert "config: source" in doctor.stdout and "not folders" in doctor.stdout
    assert "db: database" in doctor.stdout and doctor.returncode != 0
    config = pgvault.load_config(path)
    with pytest.raises(pgvault.SourceError, match="etc/app is not a folder"):
        pgvault.run(config)
    assert_nothing_left(config)
    port = int(set_db.rsplit(":", 1)[1].split("/")[0])
    assert _pg_dump_pids(port) == []


def test_killed_pg_dump_fails_the_whole_set(big_db: str, tmp_path: Path) -> None:
    """pg_dump killed while the folders stream too: the run fails naming the signal, and neither
    the folders' artifacts nor a manifest stay."""
    config = pgvault.load_config(_three(tmp_path, big_db))
    port = int(big_db.rsplit(":", 1)[1].split("/")[0])

    error = run_gated(config, lambda: kill_pg_dumps(port))
    assert isinstance(error, pgvault.SourceError)
    assert "pg_dump was killed by SIGKILL" in str(error)
    assert_nothing_left(config)


@pytest.mark.parametrize(
    ("sources", "key", "message"),
    [
        ([{"type": "files", "paths": ["."]}], "source[0].name", "each [[source]] of a set"),
        (
            [{"name": "a", "type": "files", "paths": ["."]}] * 2,
            "source[1].name",
            "two [[source]] tables are called 'a'",
        ),
        ([{"name": "a b", "type": "files", "paths": ["."]}], "source[0].name", "invalid part"),
        (
            [{"name": "db", "type": "pg_dump", "databases": ["*"]}],
            "source[0].databases",
            "many-database dump cannot be part of a set",
        ),
        (
            [{"name": "base", "type": "basebackup"}],
            "source[0].type",
            "basebackup source cannot be part of a set",
        ),
    ],
    ids=["no-name", "duplicate", "bad-name", "many-databases", "basebackup"],
)
def test_bad_set_configs_name_the_key(
    tmp_path: Path, sources: list[dict[str, Any]], key: str, message: str
) -> None:
    """Every mistake in a set's [[source]] tables is one error naming the file and key."""
    path = write_set_config(tmp_path, sources)
    with pytest.raises(pgvault.ConfigError) as info:
        pgvault.load_config(path)
    assert key in str(info.value) and message in str(info.value)
    assert str(path) in str(info.value)


def _files_under(root: Path) -> set[str]:
    return {p.name for p in root.rglob("*") if p.is_file()}


def test_set_restored_whole_and_in_part(
    set_db: str, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """Restored whole, the database goes into --target-db and each folder under
    --target-dir/PART; restored in part (--part media), only that folder comes back; a set
    restore whose database target exists is refused before any folder is written."""
    path = _three(tmp_path, set_db)
    manifest = pgvault.run(pgvault.load_config(path))
    whole = tmp_path / "whole"
    done = pgvault_cli(
        "restore", path, manifest.backup_id, "--target-db", "set_copy", "--target-dir", whole
    )
    try:
        assert done.returncode == 0, done.stderr
        assert "restored part db of" in done.stdout and "restored part media of" in done.stdout
        rows = pg_cluster.execute("SELECT count(*) FROM items", "set_copy")
        assert rows == [(500,)]
        assert _files_under(whole / "media") == {"a.png", "b.txt"}
        assert _files_under(whole / "config") == {"app.ini"}

        media = tmp_path / "only-media"
        done = pgvault_cli(
            "restore", path, manifest.backup_id, "--part", "media", "--target-dir", media
        )
        assert done.returncode == 0, done.stderr
        assert _files_under(media) == {"a.png", "b.txt"}

        taken = tmp_path / "taken"
        refused = pgvault_cli(
            "restore",
            path,
            manifest.backup_id,
            "--target-db",
            "set_copy",
            "--target-dir",
            f"media={taken / 'm'}",
            "--target-dir",
            f"config={taken / 'c'}",
        )
        assert refused.returncode != 0
        assert "part db: database" in refused.stderr and "already exists" in refused.stderr
        assert not taken.exists()
    finally:
        if "set_copy" in pg_cluster.databases():
            pg_cluster.drop_database("set_copy")


def test_part_targets_are_checked(set_db: str, tmp_path: Path) -> None:
    """Targets that cannot work are refused naming the part: several files parts need a folder
    each (or one parent), a target for a part not restored, an unknown part."""
    path = _three(tmp_path, set_db)
    manifest = pgvault.run(pgvault.load_config(path))
    cases = [
        (["--part", "media", "--part", "config"], "part media holds files: give --target-dir"),
        (["--part", "media", "--target-dir", f"config={tmp_path}/c"], "not restored"),
        (["--part", "logs", "--target-dir", str(tmp_path / "x")], "its parts: db, media, config"),
    ]
    for args, message in cases:
        done = pgvault_cli("restore", path, manifest.backup_id, *args)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)


def test_large_counted_table_validates_exactly(
    big_db: str, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """A table counted exactly at backup time and larger than validation's sampling threshold
    is counted again after the restore, not sampled: the restore of the set's database part
    passes validation."""
    media, _conf = _folders(tmp_path)
    path = write_set_config(
        tmp_path,
        [
            {"name": "db", "type": "pg_dump", "dsn": big_db, "count_tables": ["*"]},
            {"name": "media", "type": "files", "paths": [str(media)]},
        ],
    )
    config = pgvault.load_config(path)
    manifest = pgvault.run(config)
    try:
        result = pgvault.restore(config, manifest.backup_id, parts=("db",), target_db="big_copy")
        ((name, part),) = result.parts
        assert name == "db" and part.validation is not None and part.validation.ok
        assert pg_cluster.execute("SELECT count(*) FROM filler", "big_copy") == [(100000,)]
    finally:
        if "big_copy" in pg_cluster.databases():
            pg_cluster.drop_database("big_copy")
