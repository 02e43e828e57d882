"""Backups with parts: the manifest records each artifact's part (format 2), a part reads as a
single-source manifest, and export --part writes only that part and the shared artifacts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pgvault
from pgvault.exceptions import ConfigError
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import PARTS_FORMAT, ArtifactRecord, Manifest, new_backup_id
from pgvault.vault.parts import artifacts_of, part_names, part_view
from tests.conftest import pgvault_cli

ConfigMaker = Callable[..., Path]


def _store_set(vault: Vault) -> Manifest:
    """A backup of two parts (db, media) and one shared artifact, stored as the pipeline would."""
    started = datetime(2026, 11, 20, 2, tzinfo=UTC)
    backup_id = new_backup_id(started)
    arts = []
    for stream, part, role in [
        ("db.dump.pgdump", "db", "main"),
        ("media.files.tar", "media", "files"),
        ("globals.sql", "", "globals"),
    ]:
        data = f"{stream} bytes\n".encode() * 100
        vault.sink.write_bytes(vault.artifact_key(backup_id, stream), data)
        digest = hashlib.sha256(data).hexdigest()
        arts.append(
            ArtifactRecord(
                stream, stream, role, len(data), len(data), {"sha256": digest}, part=part
            )
        )
    manifest = Manifest(
        backup_id=backup_id,
        name=vault.name,
        started_at=started,
        finished_at=started + timedelta(minutes=1),
        pgvault_version="test",
        source={
            "type": "set",
            "parts": [
                {"name": "db", "type": "pg_dump", "database": "app"},
                {"name": "media", "type": "files", "files": 3},
            ],
        },
        transforms=(),
        artifacts=tuple(arts),
        format_version=PARTS_FORMAT,
    )
    vault.write_manifest(manifest)
    return manifest


def test_parts_round_trip_and_view(make_config: ConfigMaker, tmp_path: Path) -> None:
    """The stored manifest keeps parts (format 2); a part's view has its own source and
    artifacts plus the shared globals; an unknown part names the known ones."""
    config = pgvault.load_config(make_config({"type": "files", "paths": [str(tmp_path)]}))
    vault = Vault.from_config(config)
    stored = _store_set(vault)
    manifest = vault.manifest(stored.backup_id)
    raw = json.loads(vault.sink.read_bytes(vault.artifact_key(stored.backup_id, "manifest.json")))
    assert raw["format_version"] == 2 and raw["artifacts"][0]["part"] == "db"
    assert "part" not in raw["artifacts"][2]  # shared: stored without one
    assert part_names(manifest) == ["db", "media"]
    db = part_view(manifest, "db")
    assert db.source_type == "pg_dump" and db.source["database"] == "app"
    assert [a.path for a in db.artifacts] == ["db.dump.pgdump", "globals.sql"]
    assert [a.path for a in artifacts_of(manifest, ["media"])] == ["media.files.tar", "globals.sql"]
    with pytest.raises(ConfigError, match="has no part 'logs'; its parts: db, media"):
        part_view(manifest, "logs")


def test_export_one_part(make_config: ConfigMaker, tmp_path: Path) -> None:
    """`export --part media` writes the media tar and the shared globals, nothing of db."""
    path = make_config({"type": "files", "paths": [str(tmp_path)]})
    manifest = _store_set(Vault.from_config(pgvault.load_config(path)))
    out = tmp_path / "media-export"
    result = pgvault_cli("export", path, manifest.backup_id, "--part", "media", "--out", out)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["MD5SUMS", "globals.sql", "media.files.tar"]
    bad = pgvault_cli("export", path, manifest.backup_id, "--part", "logs", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "its parts: db, media" in bad.stderr
