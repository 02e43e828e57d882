"""Fetching one WAL file for PostgreSQL: ``restore_command``'s contract, exactly.

:func:`fetch` writes ``%p`` completely or not at all: the file is decoded into a temporary file
beside ``%p``, checked (the envelope's name, cluster, size and SHA-256; a segment's header
against its name, its size and the cluster), then renamed into place. It raises
:class:`WalMissing` only when the sink answered that no object has the name: PostgreSQL reads
that as "not archived" and may end recovery, so anything less certain (an unreachable sink, a
damaged or misplaced object, a wrong key, a bad argument) raises another error, which the CLI
turns into an exit status that aborts recovery instead (see :data:`EXIT_ABORT_RECOVERY`), unless
``fetch_on_error`` says this server is a standby that should keep running.

The cluster is ``[wal] system_identifier``, else the data directory's (``global/pg_control``:
``restore_command`` runs in the data directory), else the only one the vault archives.
A segment prefetched into the spool (:mod:`pgvault.wal.prefetch`) is used when it is there and
still checks out; otherwise it is downloaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from pgvault.exceptions import ObjectNotFoundError
from pgvault.transforms.api import DecodeContext
from pgvault.wal.archive import ClusterId, Envelope, WalArchive, WalIntegrityError
from pgvault.wal.names import (
    Kind,
    SegmentHeader,
    WalError,
    WalName,
    WalNameError,
    parse_history,
    read_major_version,
    read_system_identifier,
)
from pgvault.wal.spool import take_prefetched

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.wal")

EXIT_ABORT_RECOVERY = 200
"""``wal-fetch``'s exit status when recovery must stop rather than end: PostgreSQL aborts
recovery when a restore command exits above 125 (and logs "child process exited with exit code
200"; 126 and 127 would read as "command not executable/not found")."""

TEMP_MARK = ".pgvault-fetch-"


class WalMissing(WalError):
    """The archive definitely holds no file of that name (the sink said so)."""


@attrs.frozen
class FetchResult:
    """One WAL file written to ``target``; ``source`` is ``sink`` or ``prefetch``."""

    name: str
    cluster: ClusterId
    target: Path
    size: int
    source: str
    seconds: float


def check_target(target: Path) -> None:
    """Refuse a ``%p`` that PostgreSQL would not give: ``..`` parts, a NUL, a missing folder."""
    text = str(target)
    if "\0" in text:
        raise WalNameError("refusing a target path with a NUL byte")
    if any(part == ".." for part in target.parts):
        raise WalNameError(f"refusing target path {text!r}: it has '..' parts")
    if target.is_dir():
        raise WalNameError(f"target {text!r} is a folder, not a file path")
    if not target.parent.is_dir():
        raise WalNameError(f"target folder {str(target.parent)!r} does not exist")


def resolve_cluster(config: PipelineConfig, data_directory: Path | None) -> ClusterId:
    """The cluster whose WAL this server replays (see the module doc)."""
    archive = WalArchive(config.sink, config.name)
    records = {r.cluster: r for r in archive.clusters()}
    pinned = config.wal.system_identifier
    local = read_system_identifier(data_directory) if data_directory else None
    major = read_major_version(data_directory) if data_directory else None
    vault = f"vault {config.name!r} at {config.sink.describe()}"
    wanted = int(pinned) if pinned else local
    if wanted is None:
        if len(records) == 1:
            return next(iter(records))
        if not records:
            raise WalError(f"{vault} holds no WAL archive")
        raise WalError(
            f"{vault} archives several clusters ({', '.join(str(c) for c in sorted(records))}): "
            "run the restore command in the data directory or set [wal] system_identifier"
        )
    if pinned and local is not None and local != int(pinned):
        raise WalError(
            f"the data directory is cluster {local}, but [wal] system_identifier pins cluster "
            f"{pinned}: refusing to replay another cluster's WAL"
        )
    matching = [c for c in records if c.system_identifier == wanted]
    if major is not None:
        matching = [c for c in matching if c.major == major]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        archived = ", ".join(str(c) for c in sorted(records)) or "no cluster"
        raise WalError(
            f"the data directory is cluster {wanted}, but {vault} archives {archived}: "
            "refusing to replay another cluster's WAL"
        )
    raise WalError(f"{vault} archives cluster {wanted} for several major versions: set PG_VERSION")


def fetch(
    config: PipelineConfig,
    name_text: str,
    target: Path,
    *,
    data_directory: Path | None = None,
    context: DecodeContext | None = None,
    cluster: ClusterId | None = None,
) -> FetchResult:
    """Write WAL file ``name_text`` of this server's cluster to ``target`` (see the module doc)."""
    started = time.monotonic()
    name = WalName.parse(name_text)
    check_target(target)
    if cluster is None:
        cluster = resolve_cluster(config, data_directory)
    if context is None:
        context = DecodeContext(configured=config.transforms)
    _clean_stale_temps(target.parent)
    if config.wal.spool is not None and name.is_segment_data:
        taken = take_prefetched(config.wal.spool, cluster, name, target)
        if taken is not None:
            return FetchResult(
                name.text, cluster, target, taken, "prefetch", time.monotonic() - started
            )
    envelope = download(WalArchive(config.sink, config.name), cluster, name, target, context)
    return FetchResult(
        name.text, cluster, target, envelope.raw_size, "sink", time.monotonic() - started
    )


def download(
    archive: WalArchive, cluster: ClusterId, name: WalName, target: Path, context: DecodeContext
) -> Envelope:
    """Decode ``name`` into ``target`` (temporary file, checks, rename); its envelope, whose
    size and SHA-256 the written file has been checked against."""
    temp = target.with_name(f"{TEMP_MARK}{name.text}-{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    head = bytearray()
    try:
        with os.fdopen(fd, "wb") as handle:

            def write(chunk: bytes) -> None:
                if len(head) < 40:
                    head.extend(chunk[: 40 - len(head)])
                handle.write(chunk)

            try:
                envelope = archive.read(cluster, name, context, write)
            except ObjectNotFoundError:
                raise WalMissing(f"{name}: not in the archive of {cluster}") from None
        size = envelope.raw_size
        if name.is_segment_data:
            header = SegmentHeader.parse(bytes(head), name=name.text)
            header.check(name, size=size, system_identifier=cluster.system_identifier)
        elif name.kind is Kind.HISTORY:
            parse_history(temp.read_bytes(), name)
        temp.replace(target)
    except WalError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(exc, WalMissing | WalIntegrityError):
            raise
        raise WalIntegrityError(f"{archive.key(cluster, name)}: {exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return envelope


def _clean_stale_temps(folder: Path, older_than: float = 600.0) -> None:
    """Remove temporary files a killed fetch left in ``folder`` (pg_wal) long enough ago."""
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(TEMP_MARK):
                with contextlib.suppress(OSError):
                    if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                        Path(entry.path).unlink()
