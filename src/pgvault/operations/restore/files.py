"""Restoring a files backup: its tar archives extracted into a new or empty folder.

The archive is treated as hostile: :mod:`pgvault.operations.restore.untar` decides what each member
may write; this module streams the artifacts into it and undoes a failed restore.
"""

from __future__ import annotations

import contextlib
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgvault.exceptions import RestoreError
from pgvault.operations.restore.options import RestoreResult
from pgvault.operations.restore.untar import TarExtractor
from pgvault.transforms.api import DecodeContext
from pgvault.vault.contents import Vault, raise_if_damaged
from pgvault.vault.manifest import Manifest

if TYPE_CHECKING:
    from pgvault.engine.pipeline import Progress
    from pgvault.pipeline_config import PipelineConfig


def restore_files(
    config: PipelineConfig,
    manifest: Manifest,
    target_dir: Path,
    *,
    allow_outside_symlinks: bool = False,
    context: DecodeContext | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Extract files backup ``manifest`` under ``target_dir`` (new or empty), keeping modes,
    mtimes, symlinks, hard links and (as root) owners.

    The archive is treated as hostile (see :mod:`pgvault.operations.restore.untar`): a member that
    would write
    outside ``target_dir``, a device, fifo or setuid/setgid file, or (unless
    ``allow_outside_symlinks``) a symlink leading outside is refused, naming the member. On any
    failure everything the restore wrote is removed, and a folder it created goes too.
    """
    if manifest.source_type != "files":
        raise RestoreError(
            f"backup {manifest.backup_id} is a {manifest.source_type!r} backup; "
            "restore it with --target-db"
        )
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise RestoreError(
            f"target folder {target_dir} is not empty; restore into a new or empty folder"
        )
    vault = Vault.from_config(config)
    context = context or DecodeContext(configured=config.transforms)
    vault.decoders(manifest, context)  # a missing key fails before the folder is even created
    created = [p for p in (target_dir, *target_dir.parents) if not p.exists()]
    target_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    extractor = TarExtractor(target_dir, allow_outside_symlinks=allow_outside_symlinks)
    total = 0
    try:
        for art in manifest.artifacts:
            _extract_artifact(vault, manifest, art.path, extractor, context, progress)
            total += art.raw_size
        try:
            extractor.finish()
        except RestoreError as exc:
            raise RestoreError(f"backup {manifest.backup_id}: {exc}") from exc
    except BaseException:
        # Nothing half-restored may look like a restore: the target goes back to empty.
        extractor.remove_all()
        with contextlib.suppress(OSError):
            for folder in created:  # the target first, then the parents mkdir made for it
                folder.rmdir()
        raise
    finally:
        extractor.close()
    return RestoreResult(manifest.backup_id, str(target_dir), total)


def _extract_artifact(
    vault: Vault,
    manifest: Manifest,
    path: str,
    extractor: TarExtractor,
    context: DecodeContext,
    progress: Progress | None,
) -> None:
    chunks = vault.decoded(manifest, path, context)

    def counted() -> Iterator[bytes]:
        for chunk in chunks:
            if progress is not None:
                progress.advance(raw=len(chunk))
            yield chunk

    reader: Any = ChunkReader(counted())
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            extractor.extract(tar)
        for _ in chunks:  # the rest (tar padding) still has to pass the digest check
            pass
    except tarfile.TarError as exc:
        failure = RestoreError(f"artifact {path} is not a valid tar archive: {exc}")
        raise_if_damaged(chunks, failure)
        raise failure from exc
    except RestoreError as refused:
        # Garbage read as a member name is damage, not an attack: say which it is.
        raise_if_damaged(chunks, refused)
        raise RestoreError(f"backup {manifest.backup_id}: {refused}") from refused


class ChunkReader:
    """A read-only file object over an iterator of chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out
