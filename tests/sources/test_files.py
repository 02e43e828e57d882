"""The files source: folders round-trip with modes and mtimes; globs select what is stored."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import pgvault

ConfigMaker = Callable[..., Path]


def make_tree(root: Path) -> None:
    (root / "media/img").mkdir(parents=True)
    (root / "media/img/a.png").write_bytes(os.urandom(70_000))
    (root / "media/notes.txt").write_text("ção ☃\n")
    (root / "media/script.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "media/script.sh").chmod(0o750)
    (root / "media/secret.key").write_text("k")
    (root / "media/secret.key").chmod(0o600)
    (root / "media/cache").mkdir()
    (root / "media/cache/tmp.bin").write_bytes(b"junk")
    (root / "media/empty").mkdir(mode=0o711)
    os.symlink("notes.txt", root / "media/link")
    for p in (root / "media").rglob("*"):
        if not p.is_symlink():
            os.utime(p, (1_600_000_000, 1_600_000_000))


def tree(root: Path) -> dict[str, tuple[int, int, bytes | str]]:
    out: dict[str, tuple[int, int, bytes | str]] = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        content: bytes | str = (
            os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else b""
        )
        mtime = int(st.st_mtime) if not p.is_dir() else 0  # dir mtimes change as we list them
        out[p.relative_to(root).as_posix()] = (stat.S_IMODE(st.st_mode), mtime, content)
    return out


def test_folder_round_trip_keeps_modes_mtimes_and_links(
    tmp_path: Path, make_config: ConfigMaker
) -> None:
    """Every file, folder and symlink comes back with its bytes, mode and mtime."""
    src = tmp_path / "src"
    make_tree(src)
    config = pgvault.load_config(make_config({"type": "files", "paths": [str(src / "media")]}))
    manifest = pgvault.run(config)
    assert manifest.source["files"] == 5
    target = tmp_path / "restored"
    pgvault.restore(config, manifest.backup_id, target_dir=target)
    restored_root = target / (src / "media").resolve().as_posix().lstrip("/")
    assert tree(restored_root) == tree(src / "media")
    assert pgvault.Vault.from_config(config).verify(manifest, deep=True).ok


def test_include_and_exclude_globs(tmp_path: Path, make_config: ConfigMaker) -> None:
    """Excluded folders are skipped whole; with include, only matching files are stored."""
    src = tmp_path / "src"
    make_tree(src)
    config = pgvault.load_config(
        make_config(
            {
                "type": "files",
                "paths": [str(src / "media")],
                "exclude": ["cache", "*.key"],
                "include": ["*.png", "*.txt"],
            }
        )
    )
    manifest = pgvault.run(config)
    target = tmp_path / "restored"
    pgvault.restore(config, "latest", target_dir=target)
    root = target / (src / "media").resolve().as_posix().lstrip("/")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["img/a.png", "notes.txt"]
    assert manifest.source["files"] == 2


def test_restore_refuses_a_non_empty_folder(tmp_path: Path, make_config: ConfigMaker) -> None:
    """Restoring files never writes over an existing, non-empty folder."""
    src = tmp_path / "src"
    make_tree(src)
    config = pgvault.load_config(make_config({"type": "files", "paths": [str(src / "media")]}))
    pgvault.run(config)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    with pytest.raises(pgvault.RestoreError, match="is not empty"):
        pgvault.restore(config, "latest", target_dir=occupied)
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"]


def test_damage_that_breaks_the_tar_is_named_as_damage(
    tmp_path: Path, make_config: ConfigMaker
) -> None:
    """A damaged byte in a tar header makes tar fail before the digest is complete: the restore
    names the damaged artifact rather than calling it "not a valid tar archive"."""
    src = tmp_path / "src"
    make_tree(src)
    config = pgvault.load_config(
        make_config({"type": "files", "paths": [str(src / "media")]}, transforms=[])
    )
    manifest = pgvault.run(config)
    art = manifest.artifacts[0]
    stored = tmp_path / "vault" / config.name / "backups" / manifest.backup_id / art.path
    data = bytearray(stored.read_bytes())
    data[150] ^= 0x01  # inside the first header's checksum field
    stored.write_bytes(bytes(data))
    with pytest.raises(pgvault.IntegrityError, match=rf"artifact {art.path}: sha256 mismatch"):
        pgvault.restore(config, manifest.backup_id, target_dir=tmp_path / "restored")


def test_missing_folder_is_named(tmp_path: Path, make_config: ConfigMaker) -> None:
    """A configured folder that does not exist fails the run naming it."""
    config = pgvault.load_config(make_config({"type": "files", "paths": [str(tmp_path / "gone")]}))
    with pytest.raises(pgvault.SourceError, match="gone is not a folder"):
        pgvault.run(config)
