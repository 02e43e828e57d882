"""export and cat: decoded artifacts that pg_restore, tar and md5sum -c accept, and a damaged
artifact that fails cleanly (no half file, non-zero exit, a pipe cut short)."""

from __future__ import annotations

import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

import pgvault
from pgvault.testing import PostgresCluster
from tests.conftest import pgvault_cli

ConfigMaker = Callable[..., Path]


@pytest.fixture
def dump_config(pg_cluster: PostgresCluster, pg_database: str, make_config: ConfigMaker) -> Path:
    dbname = pg_database.rsplit("/", 1)[-1]
    pg_cluster.execute(
        "CREATE TABLE notes (id int PRIMARY KEY, body text);"
        "INSERT INTO notes SELECT i, repeat('x', i % 90) FROM generate_series(1, 3000) i",
        dbname,
    )
    return make_config({"type": "pg_dump", "dsn": pg_database})


def _stored(config_path: Path, backup_id: str, artifact: str) -> Path:
    config = pgvault.load_config(config_path)
    return Path(config.sink.describe()) / config.name / "backups" / backup_id / artifact


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _bindir(cluster: PostgresCluster) -> Path:
    return Path(cluster.bindir)


def test_export_is_restorable_and_md5sum_checks_it(
    dump_config: Path, pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """export writes dump.pgdump and globals.sql (0600) with an MD5SUMS that md5sum -c accepts,
    and pg_restore -l reads the dump."""
    backup_id = pgvault_cli("run", dump_config).stdout.split()[-1]
    out = tmp_path / "export"
    result = pgvault_cli("export", dump_config, backup_id, "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["MD5SUMS", "dump.pgdump", "globals.sql"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in out.iterdir())
    check = subprocess.run(["md5sum", "-c", "MD5SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "dump.pgdump: OK" in check.stdout
    listing = subprocess.run(
        [_bindir(pg_cluster) / "pg_restore", "-l", out / "dump.pgdump"],
        capture_output=True,
        text=True,
    )
    assert listing.returncode == 0, listing.stderr
    assert "TABLE DATA public notes" in listing.stdout

    again = pgvault_cli("export", dump_config, backup_id, "--out", out)
    assert again.returncode == 2 and "already exists; export never overwrites" in again.stderr


def test_cat_pipes_into_pg_restore(dump_config: Path, pg_cluster: PostgresCluster) -> None:
    """`pgvault cat … dump.pgdump | pg_restore -l` lists the dump; a wrong artifact name says
    which ones exist."""
    pgvault_cli("run", dump_config)
    pg_restore = _bindir(pg_cluster) / "pg_restore"
    pipeline = (
        f"set -o pipefail; {sys.executable} -m pgvault cat {dump_config} latest dump.pgdump"
        f" | {pg_restore} -l"
    )
    out = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "TABLE DATA public notes" in out.stdout

    wrong = subprocess.run(
        [sys.executable, "-m", "pgvault", "cat", str(dump_config), "latest", "dump.sql"],
        capture_output=True,
        text=True,
    )
    assert wrong.returncode == 2
    assert "has no artifact 'dump.sql'; it has: dump.pgdump, globals.sql" in wrong.stderr


def test_damaged_artifact_fails_export_and_cat_cleanly(
    make_config: ConfigMaker, tmp_path: Path
) -> None:
    """With one byte flipped (no compression, so only the digest can tell), export exits 1
    naming the artifact and leaves no file at all; cat exits 1 and its reader gets the artifact
    cut short, so tar fails too."""
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):
        (data / f"f{i}.bin").write_bytes(bytes(range(256)) * 4096 * (i + 1))
    config_path = make_config({"type": "files", "paths": [str(data)]}, transforms=[])
    backup_id = pgvault_cli("run", config_path).stdout.split()[-1]

    out = tmp_path / "ok"
    assert pgvault_cli("export", config_path, backup_id, "--out", out).returncode == 0
    with tarfile.open(out / "files.tar") as tar:
        assert sorted(m.name.rsplit("/", 1)[-1] for m in tar.getmembers() if m.isfile()) == [
            "f0.bin",
            "f1.bin",
            "f2.bin",
        ]

    _flip(_stored(config_path, backup_id, "files.tar"))
    bad = tmp_path / "bad"
    result = pgvault_cli("export", config_path, backup_id, "--out", bad)
    assert result.returncode == 1
    assert "artifact files.tar: sha256 mismatch" in result.stderr
    assert list(bad.iterdir()) == []  # no half file, no temporary one, no MD5SUMS

    pipeline = (
        f"set -o pipefail; {sys.executable} -m pgvault cat {config_path} {backup_id} files.tar"
        f" | tee {tmp_path / 'seen.tar'} | tar -t >/dev/null"
    )
    cat = subprocess.run(["bash", "-c", pipeline], capture_output=True, text=True)
    assert cat.returncode != 0
    assert "artifact files.tar: sha256 mismatch" in cat.stderr
    whole = (out / "files.tar").stat().st_size
    assert (tmp_path / "seen.tar").stat().st_size < whole  # the reader never got it all
