"""Files restores: crafted archives never write outside the target; honest ones come back whole.

The hostile archives here are what anyone who can write to an unencrypted vault can store: a tar
with a manifest whose sizes and digests match it. They go through the real vault and sink, and
restore cannot tell them from a backup pgvault took.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import pgvault
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import ArtifactRecord, Manifest, new_backup_id, utc_now
from tests.conftest import pgvault_cli

ConfigMaker = Callable[..., Path]


def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o644 if kind != tarfile.DIRTYPE else 0o755
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def crafted_tar(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def store_files_backup(config: pgvault.PipelineConfig, tar_bytes: bytes) -> str:
    """Store ``tar_bytes`` as a files backup with a consistent manifest; return its id."""
    vault = Vault.from_config(config)
    started = utc_now()
    backup_id = new_backup_id(started)
    vault.sink.write_bytes(vault.artifact_key(backup_id, "files.tar"), tar_bytes)
    vault.write_manifest(
        Manifest(
            backup_id=backup_id,
            name=config.name,
            started_at=started,
            finished_at=started + timedelta(seconds=1),
            pgvault_version="crafted",
            source={"type": "files", "paths": ["/srv/media"]},
            transforms=(),
            artifacts=(
                ArtifactRecord(
                    path="files.tar",
                    stream="files.tar",
                    role="files",
                    size=len(tar_bytes),
                    raw_size=len(tar_bytes),
                    digests={"sha256": hashlib.sha256(tar_bytes).hexdigest()},
                ),
            ),
        )
    )
    return backup_id


@pytest.fixture
def config(tmp_path: Path, make_config: ConfigMaker) -> pgvault.PipelineConfig:
    (tmp_path / "src").mkdir()
    return pgvault.load_config(
        make_config({"type": "files", "paths": [str(tmp_path / "src")]}, transforms=[])
    )


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside every restore target, that a hostile archive wants to change."""
    victim = tmp_path / "outside" / "victim.conf"
    victim.parent.mkdir()
    victim.write_text("precious\n")
    victim.chmod(0o600)
    return victim


def assert_untouched(victim: Path) -> None:
    assert victim.read_text() == "precious\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert sorted(p.name for p in victim.parent.iterdir()) == ["victim.conf"]


def test_hard_link_to_an_outside_file_then_a_member_of_that_name_is_refused(
    tmp_path: Path, config: pgvault.PipelineConfig, outside: Path
) -> None:
    """A hard link pointing outside the target, followed by a regular member of the same name,
    neither rewrites nor chmods the outside file: the CLI names the member in one line, exits
    non-zero and leaves no target folder behind."""
    target = tmp_path / "restored"
    escape = os.path.relpath(outside, target)
    backup_id = store_files_backup(
        config,
        crafted_tar(
            (member("srv", tarfile.DIRTYPE), b""),
            (member("srv/victim.conf", tarfile.LNKTYPE, linkname=escape), b""),
            (member("srv/victim.conf", mode=0o777), b"owned\n"),
        ),
    )
    done = pgvault_cli("restore", config.where(), backup_id, "--target-dir", target)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "srv/victim.conf" in lines[0] and "hard link" in lines[0], lines[0]
    assert_untouched(outside)
    assert not target.exists()


def test_hard_link_to_a_file_the_archive_did_not_write_is_refused(
    tmp_path: Path, config: pgvault.PipelineConfig, outside: Path
) -> None:
    """Even a hard link whose target name stays inside the tree is refused unless it points at a
    regular file this restore wrote: the archive cannot make restore link to anything else."""
    target = tmp_path / "restored"
    backup_id = store_files_backup(
        config,
        crafted_tar(
            (member("a", tarfile.SYMTYPE, linkname=str(outside.parent)), b""),
            (member("b", tarfile.LNKTYPE, linkname="a/victim.conf"), b""),
        ),
    )
    with pytest.raises(pgvault.RestoreError, match=r"'b' is a hard link to 'a/victim\.conf'"):
        pgvault.restore(config, backup_id, target_dir=target, allow_outside_symlinks=True)
    assert_untouched(outside)
    assert not target.exists()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../outside/victim.conf", "'..'"),
        ("srv/../../outside/victim.conf", "'..'"),
        ("/tmp/pgvault-absolute-member", "absolute"),
    ],
)
def test_names_outside_the_target_are_refused(
    tmp_path: Path, config: pgvault.PipelineConfig, outside: Path, name: str, why: str
) -> None:
    """``..`` parts and absolute names are refused, and nothing is written where they point."""
    target = tmp_path / "restored"
    backup_id = store_files_backup(
        config,
        crafted_tar((member("srv/ok.txt"), b"fine"), (member(name, mode=0o666), b"owned\n")),
    )
    with pytest.raises(pgvault.RestoreError, match=why):
        pgvault.restore(config, backup_id, target_dir=target)
    assert_untouched(outside)
    assert not Path("/tmp/pgvault-absolute-member").exists()
    assert not target.exists()


def test_writing_through_a_symlink_the_archive_made_is_refused(
    tmp_path: Path, config: pgvault.PipelineConfig, outside: Path
) -> None:
    """A symlink to an outside folder, then a member beneath it: the member is refused, also
    when symlinks outside are allowed, and the outside folder gains nothing."""
    target = tmp_path / "restored"
    backup_id = store_files_backup(
        config,
        crafted_tar(
            (member("srv", tarfile.SYMTYPE, linkname=str(outside.parent)), b""),
            (member("srv/victim.conf", mode=0o666), b"owned\n"),
            (member("srv/new.conf"), b"planted\n"),
        ),
    )
    refusal = r"'srv/victim\.conf' would be written beneath srv, which is a symlink"
    with pytest.raises(pgvault.RestoreError, match=refusal):
        pgvault.restore(config, backup_id, target_dir=target, allow_outside_symlinks=True)
    assert_untouched(outside)
    assert not target.exists()


def test_a_symlink_that_leads_outside_is_refused_unless_allowed(
    tmp_path: Path, config: pgvault.PipelineConfig, outside: Path
) -> None:
    """Symlinks that resolve outside the target (absolute, or through other links of the tree)
    are refused by default, and restored as they are with allow_outside_symlinks."""
    tar_bytes = crafted_tar(
        (member("srv", tarfile.DIRTYPE), b""),
        (member("srv/sub", tarfile.SYMTYPE, linkname="."), b""),
        (member("srv/hop", tarfile.SYMTYPE, linkname="sub"), b""),
        # Lexically srv/hop/../.. is the target itself; through the links it is its parent.
        (member("srv/up", tarfile.SYMTYPE, linkname="hop/../.."), b""),
    )
    backup_id = store_files_backup(config, tar_bytes)
    target = tmp_path / "restored"
    with pytest.raises(pgvault.RestoreError, match=r"'srv/up' is a symlink to 'hop/\.\./\.\.'"):
        pgvault.restore(config, backup_id, target_dir=target)
    assert not target.exists()

    absolute = store_files_backup(
        config, crafted_tar((member("etc", tarfile.SYMTYPE, linkname=str(outside)), b""))
    )
    with pytest.raises(pgvault.RestoreError, match="--allow-outside-symlinks"):
        pgvault.restore(config, absolute, target_dir=target)
    pgvault.restore(config, absolute, target_dir=target, allow_outside_symlinks=True)
    assert os.readlink(target / "etc") == str(outside)
    assert_untouched(outside)


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (member("srv/dev", tarfile.CHRTYPE, devmajor=1, devminor=3), "device"),
        (member("srv/disk", tarfile.BLKTYPE, devmajor=8, devminor=0), "device"),
        (member("srv/pipe", tarfile.FIFOTYPE), "fifo"),
        (member("srv/tool", mode=0o4755), "setuid"),
        (member("srv/tool", mode=0o2755), "setgid"),
    ],
)
def test_devices_fifos_and_setuid_files_are_refused(
    tmp_path: Path, config: pgvault.PipelineConfig, entry: tarfile.TarInfo, why: str
) -> None:
    """Device nodes, fifos and setuid/setgid files are refused; what was already written goes."""
    target = tmp_path / "restored"
    target.mkdir()
    backup_id = store_files_backup(
        config, crafted_tar((member("srv/first.txt"), b"written first"), (entry, b""))
    )
    with pytest.raises(pgvault.RestoreError, match=why):
        pgvault.restore(config, backup_id, target_dir=target)
    assert list(target.iterdir()) == []  # the folder existed before: it stays, empty


def test_a_damaged_archive_leaves_nothing_behind(
    tmp_path: Path, config: pgvault.PipelineConfig
) -> None:
    """Files are written while the artifact streams; when its digest fails at the end, every
    file already written is removed, so no half-restored tree looks like a restore."""
    tar_bytes = crafted_tar((member("srv/a.txt"), b"a" * 5000), (member("srv/b.txt"), b"b" * 5000))
    backup_id = store_files_backup(config, tar_bytes)
    stored = Path(config.sink.path) / config.name / "backups" / backup_id / "files.tar"  # type: ignore[attr-defined]
    data = bytearray(stored.read_bytes())
    data[len(data) - 600] ^= 0x01  # in the end padding: tar reads on, the digest does not match
    stored.write_bytes(bytes(data))
    target = tmp_path / "restored"
    with pytest.raises(pgvault.IntegrityError, match="sha256 mismatch"):
        pgvault.restore(config, backup_id, target_dir=target)
    assert not target.exists()


def test_honest_tree_keeps_exact_modes_setgid_folders_mtimes_links_and_owners(
    tmp_path: Path, make_config: ConfigMaker
) -> None:
    """A real files backup comes back exactly: 0664 files stay 0664 and a setgid 2775 folder
    stays 2775 whatever the umask, file and folder mtimes, symlinks and hard links inside the
    tree, and (as root) owners by name or, unknown here, by id."""
    media = tmp_path / "src" / "media"
    (media / "shared").mkdir(parents=True)
    (media / "shared").chmod(0o2775)
    (media / "shared" / "doc.txt").write_text("group-writable\n")
    (media / "shared" / "doc.txt").chmod(0o664)
    (media / "locked").mkdir(mode=0o500)
    (media / "locked").chmod(0o555)
    (media / "tmp").mkdir()
    (media / "tmp").chmod(0o1777)
    (media / "run.sh").write_text("#!/bin/sh\n")
    (media / "run.sh").chmod(0o750)
    os.link(media / "run.sh", media / "run-again.sh")
    os.symlink("shared/doc.txt", media / "doc-link")
    os.symlink("../media/shared", media / "shared-link")
    as_root = os.geteuid() == 0
    if as_root:
        os.chown(media / "shared" / "doc.txt", 65534, 65534)  # nobody/nogroup: known names
        os.chown(media / "run.sh", 54321, 54322)  # no such user here: ids are kept
        os.lchown(media / "doc-link", 65534, 65534)
    for p in sorted(media.rglob("*"), reverse=True):
        os.utime(p, (1_500_000_000, 1_500_000_000), follow_symlinks=False)
    os.utime(media, (1_500_000_000, 1_500_000_000))
    config = pgvault.load_config(make_config({"type": "files", "paths": [str(media)]}))
    manifest = pgvault.run(config)

    old_umask = os.umask(0o077)  # restore must not let the umask decide the modes
    try:
        target = tmp_path / "restored"
        pgvault.restore(config, manifest.backup_id, target_dir=target)
    finally:
        os.umask(old_umask)
    root = target / media.resolve().as_posix().lstrip("/")

    def described(base: Path) -> dict[str, tuple[int, ...]]:
        out = {}
        for p in [base, *sorted(base.rglob("*"))]:
            st = p.lstat()
            out[p.relative_to(base).as_posix()] = (
                st.st_mode,  # type bits and every permission bit, setgid and sticky included
                st.st_mtime_ns,
                st.st_uid if as_root else 0,
                st.st_gid if as_root else 0,
            )
        return out

    assert described(root) == described(media)
    assert stat.S_IMODE((root / "shared").stat().st_mode) == 0o2775
    assert stat.S_IMODE((root / "shared" / "doc.txt").stat().st_mode) == 0o664
    assert os.readlink(root / "doc-link") == "shared/doc.txt"
    assert (root / "run.sh").stat().st_ino == (root / "run-again.sh").stat().st_ino
    assert (root / "doc-link").read_text() == "group-writable\n"
