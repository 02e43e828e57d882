"""Materializing a stored base backup into a data directory, and ``verify --deep`` of one.

:func:`materialize_base_backup` is the building block of every physical restore: it writes the
data tar into a new or empty folder, treating it as hostile input (:mod:`pgvault.untar`: nothing
is ever written outside the folder), checks every file against PostgreSQL's own
``backup_manifest`` (itself checked by its ``Manifest-Checksum``) on top of the artifacts'
stored digests, gives the folder the mode PostgreSQL demands (0700), writes ``backup_manifest``
into it, and can fetch the WAL from the backup's start to its stop into ``pg_wal``, each segment
checked as ``wal-fetch`` checks it. On any failure everything it wrote is removed.

:func:`verify_base_backup` does that in a scratch folder, with the WAL, and runs
``pg_verifybackup`` on the result: the check PostgreSQL itself provides.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.exceptions import IntegrityError, PgVaultError, RestoreError
from pgvault.operations.restore.untar import TarExtractor
from pgvault.postgres.client import exit_description, find_binary, tool_error_text
from pgvault.sources.backup_manifest import (
    BackupManifest,
    BackupManifestError,
    TarStreamChecker,
    compare,
)
from pgvault.sources.basebackup import BASE_ROLE, MANIFEST_ROLE
from pgvault.transforms.api import DecodeContext
from pgvault.vault.contents import VerifyProblem, VerifyReport, raise_if_damaged
from pgvault.vault.manifest import ArtifactRecord, Manifest

if TYPE_CHECKING:
    from pgvault.engine.pipeline import Progress
    from pgvault.vault.contents import Vault

log = logging.getLogger("pgvault.restore")

MANIFEST_FILE = "backup_manifest"


@attrs.frozen
class MaterializedBackup:
    """A base backup written into ``target``: ``data_bytes`` in ``files`` files, and the WAL
    segments fetched into ``target/pg_wal`` (empty unless asked for)."""

    backup_id: str
    target: Path
    data_bytes: int
    files: int
    start_lsn: str
    stop_lsn: str
    timeline: int
    stop_timeline: int
    wal_segments: tuple[str, ...] = ()


def base_backup_artifacts(manifest: Manifest) -> tuple[ArtifactRecord, ArtifactRecord]:
    """The data tar's and the ``backup_manifest``'s artifacts of a base backup; RestoreError
    naming the backup if it is not one, or lacks either."""
    if manifest.source_type != "basebackup":
        raise RestoreError(
            f"backup {manifest.backup_id} is a {manifest.source_type!r} backup, not a base backup"
        )
    by_role = {a.role: a for a in manifest.artifacts}
    for role in (BASE_ROLE, MANIFEST_ROLE):
        if role not in by_role:
            raise RestoreError(f"backup {manifest.backup_id}: no artifact of role {role!r}")
    return by_role[BASE_ROLE], by_role[MANIFEST_ROLE]


def read_backup_manifest(
    vault: Vault, manifest: Manifest, context: DecodeContext | None = None
) -> BackupManifest:
    """The backup's ``backup_manifest``, its stored digests and its own checksum checked."""
    _, art = base_backup_artifacts(manifest)
    data = b"".join(vault.decoded(manifest, art.path, context))
    try:
        return BackupManifest.parse(data, where=f"backup {manifest.backup_id}: {art.path}")
    except BackupManifestError as exc:
        raise IntegrityError(str(exc), artifact=art.path) from None


def wal_path(backup_manifest: BackupManifest) -> list[tuple[int, int]]:
    """The timeline path of the backup's WAL as ``(timeline, begins_at_lsn)``, oldest first."""
    ranges = sorted(backup_manifest.wal_ranges, key=lambda r: r.start_lsn)
    return [(ranges[0].timeline, 0), *((r.timeline, r.start_lsn) for r in ranges[1:])]


def wal_segments(backup_manifest: BackupManifest, segment_size: int) -> list[str]:
    """The names of the segments from the backup's start to its stop, along its timelines."""
    from pgvault.wal.names import segment_name

    path = wal_path(backup_manifest)
    first = backup_manifest.start.start_lsn // segment_size
    last = max(backup_manifest.end.end_lsn - 1, 0) // segment_size
    names = []
    for segno in range(first, last + 1):
        tli = next((t for t, at in reversed(path) if at // segment_size <= segno), path[0][0])
        names.append(segment_name(tli, segno, segment_size))
    return names


def materialize_base_backup(
    vault: Vault,
    manifest: Manifest,
    target_dir: Path,
    *,
    context: DecodeContext | None = None,
    fetch_wal: bool = False,
    progress: Progress | None = None,
) -> MaterializedBackup:
    """Write base backup ``manifest`` into ``target_dir`` (new or empty), see the module doc.

    ``fetch_wal`` also fetches the segments from the backup's start to its stop into
    ``target_dir/pg_wal`` (enough for ``pg_verifybackup`` and for recovery to consistency).
    Running as root, the folder and what pgvault writes into it get the owner the backup's
    files have (``postgres``). Raises RestoreError for a refused target or archive member,
    IntegrityError for damage (naming the artifact), and leaves nothing behind on failure.
    """
    base_art, _ = base_backup_artifacts(manifest)
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise RestoreError(
            f"target folder {target_dir} is not empty; restore into a new or empty folder"
        )
    context = context or DecodeContext()
    vault.decoders(manifest, context)  # a missing key fails before the folder is created
    backup_manifest = read_backup_manifest(vault, manifest, context)
    created = [p for p in (target_dir, *target_dir.parents) if not p.exists()]
    target_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    extractor = TarExtractor(target_dir)
    try:
        checker = TarStreamChecker(where=f"backup {manifest.backup_id}: {base_art.path}")
        _extract(vault, manifest, base_art.path, extractor, checker, context, progress)
        result = checker.finish()
        try:
            extractor.finish()
        except RestoreError as exc:
            raise RestoreError(f"backup {manifest.backup_id}: {exc}") from exc
        if result.manifest is not None or (target_dir / MANIFEST_FILE).exists():
            raise RestoreError(
                f"backup {manifest.backup_id}: artifact {base_art.path} holds a "
                f"{MANIFEST_FILE} member, which pgvault never stores there: refused"
            )
        try:
            compare(backup_manifest, result.members, where=f"artifact {base_art.path}")
        except BackupManifestError as exc:
            raise IntegrityError(
                f"backup {manifest.backup_id}: {exc}", artifact=base_art.path
            ) from None
        owner = _owner_of(target_dir / "PG_VERSION")
        os.chmod(target_dir, 0o700)  # noqa: PTH101 - PostgreSQL refuses anything looser
        _write_manifest_file(vault, manifest, target_dir, owner, context)
        fetched: tuple[str, ...] = ()
        if fetch_wal:
            fetched = _fetch_wal(vault, manifest, backup_manifest, target_dir, owner, context)
        if owner is not None:
            os.chown(target_dir, *owner)
    except BaseException:
        # Nothing half-restored may look like a data directory: the target goes back to empty.
        extractor.remove_all()
        with contextlib.suppress(OSError):
            for folder in created:
                folder.rmdir()
        raise
    finally:
        extractor.close()
    source = manifest.source
    return MaterializedBackup(
        backup_id=manifest.backup_id,
        target=target_dir,
        data_bytes=result.data_bytes,
        files=len(result.members),
        start_lsn=str(source.get("start_lsn", "")),
        stop_lsn=str(source.get("stop_lsn", "")),
        timeline=backup_manifest.start.timeline,
        stop_timeline=backup_manifest.end.timeline,
        wal_segments=fetched,
    )


def _extract(
    vault: Vault,
    manifest: Manifest,
    path: str,
    extractor: TarExtractor,
    checker: TarStreamChecker,
    context: DecodeContext,
    progress: Progress | None,
) -> None:
    from pgvault.operations.restore.files import ChunkReader

    chunks = vault.decoded(manifest, path, context)

    def checked() -> Iterator[bytes]:
        # Every byte goes past the checker too: what tarfile skips (padding) is still hashed
        # as part of its member's blocks, and the end of the tar is seen.
        for chunk in chunks:
            checker.feed(chunk)
            if progress is not None:
                progress.advance(raw=len(chunk))
            yield chunk

    feed = checked()
    reader: Any = ChunkReader(feed)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            extractor.extract(tar)
        for _ in feed:  # the end-of-archive blocks: the checker and the digests see them
            pass
    except tarfile.TarError as exc:
        failure = RestoreError(f"artifact {path} is not a valid tar archive: {exc}")
        raise_if_damaged(chunks, failure)
        raise failure from exc
    except BackupManifestError as exc:
        failure = RestoreError(str(exc))
        raise_if_damaged(chunks, failure)
        raise IntegrityError(str(exc), artifact=path) from None
    except RestoreError as refused:
        raise_if_damaged(chunks, refused)
        raise RestoreError(f"backup {manifest.backup_id}: {refused}") from refused


def _owner_of(path: Path) -> tuple[int, int] | None:
    """The uid and gid of ``path`` when running as root (the data directory's owner must
    match its files'), else None."""
    if os.geteuid() != 0:
        return None
    try:
        st = path.lstat()
    except OSError:
        return None
    return st.st_uid, st.st_gid


def _write_manifest_file(
    vault: Vault,
    manifest: Manifest,
    target: Path,
    owner: tuple[int, int] | None,
    context: DecodeContext,
) -> None:
    _, art = base_backup_artifacts(manifest)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(target / MANIFEST_FILE, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        for chunk in vault.decoded(manifest, art.path, context):
            handle.write(chunk)
        if owner is not None:
            os.fchown(handle.fileno(), *owner)


def _fetch_wal(
    vault: Vault,
    manifest: Manifest,
    backup_manifest: BackupManifest,
    target: Path,
    owner: tuple[int, int] | None,
    context: DecodeContext,
) -> tuple[str, ...]:
    from pgvault.wal.archive import ClusterId, WalArchive
    from pgvault.wal.fetch import WalMissing, download
    from pgvault.wal.names import WalName

    source = manifest.source
    try:
        cluster = ClusterId(int(source["major"]), int(source["system_identifier"]))
        size = int(source["segment_size"])
    except (KeyError, TypeError, ValueError):
        raise RestoreError(
            f"backup {manifest.backup_id}: its manifest lacks the cluster or segment size"
        ) from None
    pg_wal = target / "pg_wal"
    if pg_wal.is_symlink() or not pg_wal.is_dir():
        raise RestoreError(f"backup {manifest.backup_id}: the data tar has no pg_wal folder")
    archive = WalArchive(vault.sink, vault.name)
    names = wal_segments(backup_manifest, size)
    for text in names:
        name = WalName.parse(text)
        try:
            download(archive, cluster, name, pg_wal / text, context)
        except WalMissing:
            raise RestoreError(
                f"backup {manifest.backup_id} needs WAL segment {text} (of {names[0]} … "
                f"{names[-1]}), which is not in the WAL archive of vault {vault.name!r}"
            ) from None
        if owner is not None:
            os.chown(pg_wal / text, *owner)
    return tuple(names)


def verify_base_backup(
    vault: Vault, manifest: Manifest, context: DecodeContext | None = None
) -> VerifyReport:
    """``verify --deep`` of a base backup: materialize it with its WAL in a scratch folder and
    run ``pg_verifybackup`` (of the backup's major version) on it; the scratch goes after."""
    checked = tuple(a.path for a in manifest.artifacts)
    problems: list[VerifyProblem] = []
    details: dict[str, str] = {}
    base_path = next((a.path for a in manifest.artifacts if a.role == BASE_ROLE), "base")
    scratch = Path(tempfile.mkdtemp(prefix="pgvault-verify-"))
    try:
        try:
            done = materialize_base_backup(
                vault, manifest, scratch / "data", context=context, fetch_wal=True
            )
            binary = find_binary("pg_verifybackup", server_major=_major(manifest))
            ran = subprocess.run(
                [binary, str(done.target)],
                capture_output=True,
                text=True,
                timeout=3600,
            )
            if ran.returncode != 0:
                text = tool_error_text(ran.stderr) or exit_description(binary, ran.returncode, "")
                problems.append(VerifyProblem(base_path, f"pg_verifybackup: {text}"))
            else:
                wal = done.wal_segments
                details[base_path] = (
                    f"restored to scratch with WAL {wal[0]} … {wal[-1]}: pg_verifybackup "
                    f"verified {done.files} files and the WAL"
                )
        except IntegrityError as exc:
            problems.append(VerifyProblem(exc.artifact, _strip(str(exc), manifest, exc.artifact)))
        except PgVaultError as exc:
            problems.append(VerifyProblem(base_path, _strip(str(exc), manifest, base_path)))
    finally:
        _remove(scratch)
    if "md5" in manifest.checksums:
        problems += vault._md5sums_problems(manifest)
    return VerifyReport(
        backup_id=manifest.backup_id,
        deep=True,
        checked=checked,
        problems=tuple(problems),
        details=details,
    )


def _major(manifest: Manifest) -> int | None:
    major = manifest.source.get("major")
    return major if isinstance(major, int) else None


def _strip(message: str, manifest: Manifest, path: str) -> str:
    for prefix in (
        f"backup {manifest.backup_id}: artifact {path}: ",
        f"backup {manifest.backup_id}: ",
    ):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
