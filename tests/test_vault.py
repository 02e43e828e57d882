"""The vault: listing, showing and verifying backups from what the sink holds."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

import pgvault
from pgvault.manifest import FORMAT_VERSION, Manifest
from pgvault.testing import PostgresCluster
from tests.conftest import pgvault_cli

ConfigMaker = Callable[..., Path]


@pytest.fixture
def backed_up(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> tuple[pgvault.PipelineConfig, pgvault.Manifest]:
    config = pgvault.load_config(
        make_config(
            {"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db), "checksums": ["sha256", "md5"]}
        )
    )
    return config, pgvault.run(config)


def artifact_file(config: pgvault.PipelineConfig, manifest: pgvault.Manifest) -> Path:
    art = manifest.artifacts[0]
    return Path(config.sink.describe()) / config.name / "backups" / manifest.backup_id / art.path


def test_list_and_latest_newest_first(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """A second backup lists first and is 'latest'; ids sort by time."""
    config, first = backed_up
    second = pgvault.run(config)
    vault = pgvault.Vault.from_config(config)
    assert [m.backup_id for m in vault.backups()] == [second.backup_id, first.backup_id]
    assert vault.manifest("latest").backup_id == second.backup_id
    assert vault.manifest(first.backup_id[:-2]).backup_id == first.backup_id
    with pytest.raises(pgvault.BackupNotFoundError, match="no complete backup 'nope'"):
        vault.manifest("nope")


def test_verify_passes_then_names_a_flipped_byte(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """verify is clean on a fresh backup and names the artifact after one byte flips."""
    config, manifest = backed_up
    vault = pgvault.Vault.from_config(config)
    assert vault.verify(manifest).ok
    deep = vault.verify(manifest, deep=True)
    assert deep.ok and "pg_restore --list" in deep.details[manifest.artifacts[0].path]
    path = artifact_file(config, manifest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = vault.verify(manifest)
    assert not report.ok
    assert report.problems[0].artifact == manifest.artifacts[0].path
    assert "sha256 mismatch" in report.problems[0].message
    assert not vault.verify(manifest, deep=True).ok


def test_deep_verify_names_damage_that_pg_restore_trips_over_first(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> None:
    """A damaged archive start makes pg_restore --list fail before the digest is complete:
    deep verify still reports the artifact as damaged, not pg_restore's complaint."""
    config = pgvault.load_config(
        make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)}, transforms=[])
    )
    manifest = pgvault.run(config)
    path = artifact_file(config, manifest)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01  # the archive's magic: pg_restore refuses the file at once
    path.write_bytes(bytes(data))
    report = pgvault.Vault.from_config(config).verify(manifest, deep=True)
    assert [(p.artifact, "sha256 mismatch" in p.message) for p in report.problems] == [
        (manifest.artifacts[0].path, True)
    ]


def test_deep_verify_of_a_damaged_artifact_says_it_in_one_line(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest], tmp_path: Path
) -> None:
    """pgvault verify --deep on a flipped byte: exit 1 and one FAILED line naming the artifact,
    nothing else on the terminal."""
    config, manifest = backed_up
    path = artifact_file(config, manifest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    config_file = next(tmp_path.glob("pipeline*.toml"))
    result = pgvault_cli("verify", config_file, "--deep")
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pgvault: FAILED {manifest.backup_id}: ")
    assert f"{manifest.artifacts[0].path}: " in lines[0]


def test_verify_names_a_removed_artifact(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """A deleted artifact is reported missing, by name."""
    config, manifest = backed_up
    artifact_file(config, manifest).unlink()
    report = pgvault.Vault.from_config(config).verify(manifest)
    assert [(p.artifact, p.message) for p in report.problems] == [
        (manifest.artifacts[0].path, "missing")
    ]


def test_md5_sidecar_is_accepted_by_md5sum(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """The MD5SUMS file passes `md5sum -c` in the backup folder, as users' scripts expect."""
    config, manifest = backed_up
    folder = artifact_file(config, manifest).parent
    result = subprocess.run(["md5sum", "-c", "MD5SUMS"], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{manifest.artifacts[0].path}: OK" in result.stdout
    assert manifest.artifacts[0].digests["md5"] in (folder / "MD5SUMS").read_text()


def test_manifest_is_versioned_and_future_versions_are_refused(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """The stored manifest round-trips; a newer format_version asks for an upgrade."""
    config, manifest = backed_up
    stored = artifact_file(config, manifest).parent / "manifest.json"
    data = json.loads(stored.read_text())
    assert data["format_version"] == FORMAT_VERSION
    assert {
        "backup_id",
        "name",
        "started_at",
        "finished_at",
        "duration_seconds",
        "source",
        "transforms",
        "artifacts",
        "pgvault_version",
        "status",
    } <= set(data)
    assert Manifest.from_json(stored.read_text()) == manifest
    data["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(pgvault.ManifestError, match="upgrade pgvault"):
        Manifest.from_json(json.dumps(data))


def test_incomplete_backup_folders_are_not_listed(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """A folder with data but no manifest (a crashed run) is invisible to list and latest."""
    config, manifest = backed_up
    config.sink.write_bytes(f"{config.name}/backups/29990101T000000Z-dead00/dump.pgdump.zst", b"x")
    vault = pgvault.Vault.from_config(config)
    assert [m.backup_id for m in vault.backups()] == [manifest.backup_id]
    assert vault.incomplete() == ["29990101T000000Z-dead00"]


def test_a_manifest_naming_another_backup_is_refused(
    backed_up: tuple[pgvault.PipelineConfig, pgvault.Manifest],
) -> None:
    """A manifest whose backup id was edited away from its folder's is refused, naming both: the
    id is what encrypted artifacts are checked against, so it must be the folder's."""
    config, manifest = backed_up
    stored = artifact_file(config, manifest).parent / "manifest.json"
    data = json.loads(stored.read_text())
    data["backup_id"] = other = "20200101T000000Z-0a1b2c"
    stored.write_text(json.dumps(data))
    vault = pgvault.Vault.from_config(config)
    for ref in (manifest.backup_id, "latest"):
        with pytest.raises(pgvault.ManifestError) as info:
            vault.manifest(ref)
        assert str(info.value) == (
            f"{config.name}/backups/{manifest.backup_id}/manifest.json: the manifest names backup "
            f"{other}, but is in the folder of backup {manifest.backup_id} (it was moved or edited)"
        )
