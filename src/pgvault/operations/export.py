"""Getting a backup's files out without restoring it: ``pgvault export`` and ``pgvault cat``.

Both decode artifacts through the chain the manifest records (decrypt, decompress) and check the
stored bytes' digests while they stream (:meth:`~pgvault.vault.Vault.decoded`); neither ever
leaves something that looks whole when the artifact is damaged:

* ``export`` writes each decoded artifact under a temporary name in the output folder, and only
  when *every* artifact decoded with matching digests and sizes renames them all into place and
  writes ``MD5SUMS`` (of the decoded files, which ``md5sum -c`` checks). On any failure it removes
  its temporary files: the folder holds the whole export or nothing of it. It never overwrites a
  file. Files are 0600 and a folder it creates 0700: they hold decrypted data.
* ``cat`` streams one decoded artifact to a binary stream. Damage that the digests reveal only at
  the artifact's end cannot be taken back from a pipe, so ``cat`` holds the last chunk (1 MiB) back
  until the check has passed: a consumer of a damaged artifact sees it cut short (pg_restore and
  tar then fail on a truncated archive) and pgvault exits non-zero. Check the pipeline's status
  (``set -o pipefail``), not only the consumer's.

The decoded name of an artifact is its source stream's name (``dump.pgdump``, ``files.tar``,
``globals.sql``); the manifest is untrusted input, so a name that is not a plain file name is
refused rather than written.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import attrs

from pgvault.exceptions import ConfigError, ManifestError, PgVaultError
from pgvault.transforms.api import DecodeContext
from pgvault.transforms.digest import MD5_SIDECAR, md5sums_text
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import ArtifactRecord, Manifest

log = logging.getLogger("pgvault.export")

_PARTIAL = ".pgvault-partial-"


@attrs.frozen
class ExportedFile:
    """One decoded artifact written by :func:`export`."""

    artifact: str
    """The stored artifact it came from (``dump.pgdump.zst``)."""
    path: Path
    size: int
    md5: str
    sha256: str


@attrs.frozen
class ExportResult:
    """What :func:`export` wrote."""

    backup_id: str
    out_dir: Path
    files: tuple[ExportedFile, ...]
    md5sums: Path

    @property
    def size(self) -> int:
        """Decoded bytes written."""
        return sum(f.size for f in self.files)


def decoded_name(manifest: Manifest, art: ArtifactRecord) -> str:
    """The file name of ``art`` once decoded: its stream name, checked to be a plain name."""
    name = art.stream
    bad = (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(".")
        or not name.isprintable()
        or len(name) > 200
        or name == MD5_SIDECAR
    )
    if bad:
        raise ManifestError(
            f"backup {manifest.backup_id}: artifact {art.path}: its stream name {name!r} is "
            "not a plain file name; refusing to write it"
        )
    return name


def find_artifact(manifest: Manifest, name: str) -> ArtifactRecord:
    """The artifact called ``name``: its stored path (``dump.pgdump.zst``) or decoded name
    (``dump.pgdump``)."""
    for art in manifest.artifacts:
        if name in (art.path, art.stream):
            return art
    names = ", ".join(a.stream for a in manifest.artifacts)
    raise ConfigError(f"backup {manifest.backup_id} has no artifact {name!r}; it has: {names}")


def export(
    vault: Vault,
    manifest: Manifest,
    out_dir: Path,
    *,
    artifacts: Sequence[ArtifactRecord] | None = None,
    context: DecodeContext | None = None,
) -> ExportResult:
    """Write the decoded ``artifacts`` of ``manifest`` (default: all) and an ``MD5SUMS`` into
    ``out_dir``, all or nothing (see the module docs)."""
    chosen = list(manifest.artifacts if artifacts is None else artifacts)
    names = [decoded_name(manifest, a) for a in chosen]
    if len(set(names)) != len(names):
        raise ManifestError(f"backup {manifest.backup_id}: two artifacts decode to the same name")
    context = context or DecodeContext()
    vault.decoders(manifest, context)  # a missing key fails here, before any file is made
    _prepare_folder(out_dir)
    for name in [*names, MD5_SIDECAR]:
        if (out_dir / name).exists() or (out_dir / name).is_symlink():
            raise ConfigError(f"{out_dir / name} already exists; export never overwrites a file")
    temps: list[Path] = []
    written: list[ExportedFile] = []
    try:
        for art, name in zip(chosen, names, strict=True):
            temp = out_dir / f"{_PARTIAL}{secrets.token_hex(4)}-{name}"
            temps.append(temp)
            size, md5, sha = _write_decoded(vault, manifest, art, temp, context)
            written.append(ExportedFile(art.path, out_dir / name, size, md5, sha))
        sums_temp = out_dir / f"{_PARTIAL}{secrets.token_hex(4)}-{MD5_SIDECAR}"
        temps.append(sums_temp)
        with _create(sums_temp) as handle:
            handle.write(md5sums_text((f.md5, f.path.name) for f in written).encode())
            _sync(handle)
        # Every artifact is whole: only now does anything get its real name.
        for temp, f in zip(temps, written, strict=False):
            temp.rename(f.path)
        sums_temp.rename(out_dir / MD5_SIDECAR)
        temps.clear()
        _sync_dir(out_dir)
    finally:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
    log.info("exported %d artifact(s) of %s into %s", len(written), manifest.backup_id, out_dir)
    return ExportResult(manifest.backup_id, out_dir, tuple(written), out_dir / MD5_SIDECAR)


def cat(
    vault: Vault,
    manifest: Manifest,
    art: ArtifactRecord,
    out: BinaryIO,
    *,
    context: DecodeContext | None = None,
) -> int:
    """Write artifact ``art`` of ``manifest``, decoded, to ``out``; return the bytes written.

    The last chunk is written only once the digests have been checked, so a damaged artifact
    reaches ``out`` cut short and this raises (see the module docs).
    """
    held: bytes | None = None
    written = 0
    for chunk in vault.decoded(manifest, art.path, context):
        if held is not None:
            out.write(held)
            written += len(held)
        held = chunk
    # The generator ended without raising: sizes and digests matched.
    if held is not None:
        out.write(held)
        written += len(held)
    out.flush()
    return written


def _write_decoded(
    vault: Vault,
    manifest: Manifest,
    art: ArtifactRecord,
    temp: Path,
    context: DecodeContext,
) -> tuple[int, str, str]:
    md5 = hashlib.md5()  # noqa: S324 - md5sum -c compatibility, not security
    sha = hashlib.sha256()
    size = 0
    try:
        with _create(temp) as handle:
            for chunk in vault.decoded(manifest, art.path, context):
                md5.update(chunk)
                sha.update(chunk)
                handle.write(chunk)
                size += len(chunk)
            _sync(handle)
    except OSError as exc:  # disk full, a folder removed under us
        raise PgVaultError(f"cannot write {temp.parent}: {exc.strerror or exc}") from None
    return size, md5.hexdigest(), sha.hexdigest()


def _prepare_folder(out_dir: Path) -> None:
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"--out {out_dir}: exists and is not a folder") from None
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot create it: {exc.strerror}") from None
    if not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: not a folder")


def _create(path: Path) -> BinaryIO:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise PgVaultError(f"cannot create {path}: {exc.strerror}") from None
    return os.fdopen(fd, "wb")


def _sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
