"""Materializing stored base backups: real ones restore and recover; crafted ones never write
outside their folder."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import subprocess
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

import pgvault
from pgvault.exceptions import RestoreError
from pgvault.operations.basebackup_restore import materialize_base_backup
from pgvault.sinks.local import LocalSink
from pgvault.transforms.api import DecodeContext
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import ArtifactRecord, Manifest, new_backup_id
from pgvault.wal.configure import restore_command
from tests.basebackup_rig import archiving_shared, basebackup_config  # noqa: F401
from tests.conftest import pgvault_cli
from tests.wal.conftest import (  # noqa: F401
    RestoredCluster,
    WalRig,
    pgvault_for_postgres,
    postgres_folder,
    wal_rig,
)


def test_a_restored_base_backup_verifies_and_recovers(archiving_shared: WalRig) -> None:  # noqa: F811
    """Into an empty folder: mode 0700, backup_manifest beside the data, its WAL range in pg_wal;
    pg_verifybackup accepts it and PostgreSQL recovers it with wal-fetch, rows intact."""
    rig = archiving_shared
    config = pgvault.load_config(basebackup_config(rig))
    manifest = pgvault.run(config)
    (count,) = rig.cluster.execute("SELECT count(*) FROM t")[0]
    rig.cluster.execute("INSERT INTO t SELECT g FROM generate_series(1001, 1500) g")
    (name,) = rig.switch(1)
    rig.wait_archived(name)
    target = postgres_folder("pgvault-bb-") / "data"
    done = materialize_base_backup(
        Vault.from_config(config),
        manifest,
        target,
        context=DecodeContext(configured=config.transforms),
        fetch_wal=True,
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert (target / "backup_manifest").is_file()
    assert done.wal_segments[0] == manifest.source["start_wal"]
    assert done.wal_segments[-1] == manifest.source["stop_wal"]
    assert all((target / "pg_wal" / n).is_file() for n in done.wal_segments)
    verified = subprocess.run(
        [str(rig.cluster.bindir / "pg_verifybackup"), str(target)],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr
    command = restore_command(rig.load(), rig.command)
    restored = RestoredCluster(rig.cluster, target, {"restore_command": command})
    try:
        assert restored.start().returncode == 0, restored.log.read_text()[-2000:]
        assert restored.execute("SELECT count(*) FROM t") == [(int(str(count)) + 500,)]
    finally:
        restored.stop()


def test_a_non_empty_target_is_refused_untouched(archiving_shared: WalRig, tmp_path: Path) -> None:  # noqa: F811
    """An existing file in the target folder refuses the restore; the file is left as it was."""
    rig = archiving_shared
    config = pgvault.load_config(basebackup_config(rig))
    manifest = pgvault.run(config)
    (tmp_path / "keep").write_text("mine")
    with pytest.raises(RestoreError, match="not empty"):
        materialize_base_backup(Vault.from_config(config), manifest, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep"]


def _crafted_backup(vault: Vault, members: list[tuple[tarfile.TarInfo, bytes]]) -> Manifest:
    """A base backup whose tar holds ``members`` and whose backup_manifest (checksum and all)
    and pgvault manifest match it: what someone with write access to the bucket could store."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    tar_bytes = buf.getvalue()
    files = [
        {
            "Path": info.name,
            "Size": len(data),
            "Last-Modified": "2026-01-01 00:00:00 GMT",
            "Checksum-Algorithm": "SHA256",
            "Checksum": hashlib.sha256(data).hexdigest(),
        }
        for info, data in members
        if info.isreg()
    ]
    body = (
        '{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": '
        + json.dumps(files)
        + ',\n"WAL-Ranges": [\n{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": '
        '"0/2000100" }\n],\n'
    ).encode()
    text = body + b'"Manifest-Checksum": "' + hashlib.sha256(body).hexdigest().encode() + b'"}\n'
    started = datetime.now(UTC)
    backup_id = new_backup_id(started)
    records = []
    for path, role, data in (
        ("base", "basebackup", tar_bytes),
        ("backup_manifest", "backup_manifest", text),
    ):
        vault.sink.write_bytes(vault.artifact_key(backup_id, path), data)
        records.append(
            ArtifactRecord(
                path=path,
                stream=path,
                role=role,
                size=len(data),
                raw_size=len(data),
                digests={"sha256": hashlib.sha256(data).hexdigest()},
            )
        )
    manifest = Manifest(
        backup_id=backup_id,
        name=vault.name,
        started_at=started,
        finished_at=started,
        pgvault_version="test",
        source={
            "type": "basebackup",
            "major": 15,
            "system_identifier": "1",
            "segment_size": 1 << 24,
        },
        transforms=(),
        artifacts=tuple(records),
    )
    vault.write_manifest(manifest)
    return manifest


def _file(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o600
    return info, b"15\n" if name == "PG_VERSION" else b"x" * 100


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, b""


@pytest.mark.parametrize(
    "members",
    [
        [_file("PG_VERSION"), _file("../escaped")],
        [_file("PG_VERSION"), _symlink("pg_wal", "{outside}"), _file("pg_wal/escaped")],
        [_file("PG_VERSION"), _symlink("pg_tblspc", "{outside}")],
    ],
    ids=["dotdot", "through-symlink", "symlink-out"],
)
def test_a_crafted_base_backup_never_writes_outside(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]
) -> None:
    """A tar with a '..' member, a member beneath a symlink, or a symlink leading outside is
    refused naming the member; nothing appears outside, and the target is left empty."""
    outside = tmp_path / "outside"
    outside.mkdir()
    for info, _ in members:
        info.linkname = info.linkname.replace("{outside}", str(outside))
    vault = Vault(LocalSink(path=tmp_path / "vault"), "main")
    manifest = _crafted_backup(vault, members)
    target = tmp_path / "target"
    with pytest.raises(RestoreError, match="refused"):
        materialize_base_backup(vault, manifest, target)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escaped").exists()
    assert not target.exists()


def test_verify_deep_runs_pg_verifybackup_and_catches_a_flipped_byte(
    archiving_shared: WalRig,  # noqa: F811
) -> None:
    """verify --deep restores the backup with its WAL to scratch and pg_verifybackup accepts
    it; after one stored byte of the data tar is flipped, verify (plain and deep) fails
    naming that artifact."""
    rig = archiving_shared
    path = basebackup_config(rig)
    config = pgvault.load_config(path)
    manifest = pgvault.run(config)
    ok = pgvault_cli("verify", path, manifest.backup_id, "--deep")
    assert ok.returncode == 0, ok.stderr
    assert "pg_verifybackup verified" in ok.stdout
    base = next(a for a in manifest.artifacts if a.role == "basebackup")
    stored = rig.vault / "main" / "backups" / manifest.backup_id / base.path
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    for args in ((), ("--deep",)):
        bad = pgvault_cli("verify", path, manifest.backup_id, *args)
        assert bad.returncode != 0
        assert f"FAILED {manifest.backup_id}: artifact {base.path}" in bad.stderr, bad.stderr
