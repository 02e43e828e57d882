"""Pushing one WAL file: PostgreSQL's ``archive_command`` contract, exactly.

:meth:`WalPusher.push` returns only once the file is durable in the sink (its create-if-absent
writer committed), or raises. Before anything is stored the file is read whole (at most one
segment in memory) and checked: its name is one PostgreSQL archives, a segment's header matches
its name and size and names the cluster; a history or backup label file parses. The cluster must
be the one the vault archives (or the one ``[wal] system_identifier`` pins): a segment of another
cluster is refused with one line naming both system identifiers.

Re-pushing a file that is archived with the same bytes succeeds with a warning (PostgreSQL asks
again after a crash); a different file under an existing name is refused and nothing is
overwritten (split brain, or a second cluster). Every failure is a
:class:`~pgvault.exceptions.PgVaultError`: the CLI exits 1, never above 125, so PostgreSQL
counts it in ``pg_stat_archiver`` and retries.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from pgvault.wal.archive import ClusterId, ClusterRecord, StoreOutcome, WalArchive
from pgvault.wal.names import (
    MAX_SEGMENT_SIZE,
    MAX_TEXT_FILE_SIZE,
    Kind,
    SegmentHeader,
    WalError,
    WalName,
    WalNameError,
    check_backup_label,
    parse_history,
    read_major_version,
    read_system_identifier,
)

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.wal")


@attrs.frozen
class PushResult:
    """One pushed WAL file: ``stored`` now, or already archived ``identical``."""

    name: str
    cluster: ClusterId
    outcome: str
    key: str
    raw_size: int
    stored_size: int
    seconds: float
    finished_at: datetime
    fingerprint: str
    """``pgvault-ack 1 <size> <first 40 bytes, hex>`` of the file pushed (see ``ack.sh``)."""


class WalFileGone(WalError):
    """The file to push is not (or no longer) there."""


def read_wal_file(path: Path) -> tuple[WalName, bytes]:
    """The name and bytes of the WAL file at ``path`` (``%p``), refused before it is opened
    when its name is not a WAL name, and read whole within the size a file of its kind can have."""
    if "\0" in str(path):
        raise WalNameError("refusing a WAL path with a NUL byte")
    name = WalName.parse(path.name)
    limit = MAX_SEGMENT_SIZE if name.is_segment_data else MAX_TEXT_FILE_SIZE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise WalFileGone(f"{path}: no such file") from None
    except OSError as exc:
        raise WalError(f"{path}: cannot open: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise WalError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise WalError(
                f"{path}: {info.st_size} bytes, more than a {name.kind.value} file can be"
            )
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise WalError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise WalError(f"{path}: grew past {limit} bytes while being read")
    return name, data


@attrs.define
class WalPusher:
    """Pushes WAL files of one pipeline; safe to share between threads (the long-lived pusher's
    workers do). ``data_directory`` is the cluster's (``pg_control``, ``PG_VERSION``): the
    archive command runs in it, the long-lived pusher finds it beside ``pg_wal``."""

    config: PipelineConfig
    data_directory: Path | None = None
    _records: dict[ClusterId, ClusterRecord] | None = attrs.field(default=None, init=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    @property
    def archive(self) -> WalArchive:
        """The vault's WAL archive."""
        return WalArchive(self.config.sink, self.config.name)

    def push(self, path: Path) -> PushResult:
        """Store the WAL file at ``path`` durably; see the module doc."""
        started = time.monotonic()
        name, data = read_wal_file(path)
        header: SegmentHeader | None = None
        if name.is_segment_data:
            header = SegmentHeader.parse(data, name=name.text)
            header.check(name, size=len(data))
        elif name.kind is Kind.HISTORY:
            parse_history(data, name)
        else:
            check_backup_label(data, name)
        cluster, record = self._cluster_for(name, header)
        if header is not None and header.segment_size != record.segment_size:
            raise WalError(
                f"{name}: {header.segment_size >> 20} MiB segments, but {cluster} archived "
                f"{record.segment_size >> 20} MiB segments so far (a re-initialised cluster?)"
            )
        from pgvault.engine.pipeline import pgvault_version

        outcome: StoreOutcome = self.archive.store(
            cluster,
            name,
            data,
            self.config.transforms,
            timeline=header.timeline if header else None,
            segment_size=header.segment_size if header else None,
            pgvault_version=pgvault_version(),
        )
        if outcome.outcome == "identical":
            log.warning(
                "%s was already archived with identical content (normal after a crash or a "
                "restart of the archiver): nothing stored",
                name,
            )
        else:
            log.info(
                "archived %s: %d bytes, %d stored", name, outcome.raw_size, outcome.stored_size
            )
        return PushResult(
            name=name.text,
            cluster=cluster,
            outcome=outcome.outcome,
            key=outcome.key,
            raw_size=outcome.raw_size,
            stored_size=outcome.stored_size,
            seconds=time.monotonic() - started,
            finished_at=datetime.now(UTC),
            fingerprint=f"pgvault-ack 1 {len(data)} {data[:40].hex()}",
        )

    # Which cluster

    def records(self, *, refresh: bool = False) -> dict[ClusterId, ClusterRecord]:
        """The clusters the vault archives (cached; ``refresh`` reads the sink again)."""
        with self._lock:
            if self._records is None or refresh:
                self._records = {r.cluster: r for r in self.archive.clusters()}
            return dict(self._records)

    def _local_identity(self) -> tuple[int | None, int | None]:
        if self.data_directory is None:
            return None, None
        return (
            read_system_identifier(self.data_directory),
            read_major_version(self.data_directory),
        )

    def _cluster_for(
        self, name: WalName, header: SegmentHeader | None
    ) -> tuple[ClusterId, ClusterRecord]:
        pinned = self.config.wal.system_identifier
        local_sysid, local_major = self._local_identity()
        if header is not None:
            major = header.major or local_major
            if major is None:
                raise WalError(
                    f"{name}: WAL page magic 0x{header.magic:04X} is of a PostgreSQL version this "
                    "pgvault does not know, and the data directory's PG_VERSION cannot be read"
                )
            if header.major is not None and local_major is not None and header.major != local_major:
                raise WalError(
                    f"{name}: WAL of PostgreSQL {header.major}, but the data directory is "
                    f"PostgreSQL {local_major}"
                )
            cluster = ClusterId(major, header.system_identifier)
            if local_sysid is not None and local_sysid != cluster.system_identifier:
                raise WalError(
                    f"{name}: written by cluster {cluster.system_identifier}, but the data "
                    f"directory is cluster {local_sysid}: a segment copied from another cluster"
                )
        else:
            cluster = self._cluster_of_text_file(name, pinned, local_sysid, local_major)
        return cluster, self._admit(cluster, name, pinned, header)

    def _cluster_of_text_file(
        self, name: WalName, pinned: str | None, sysid: int | None, major: int | None
    ) -> ClusterId:
        # History and backup label files carry no system identifier: the cluster is the one
        # pinned, or the data directory's, or the only one the vault archives.
        records = self.records()
        wanted = int(pinned) if pinned else sysid
        if wanted is not None:
            if major is None:
                known = [c for c in records if c.system_identifier == wanted]
                if len(known) == 1:
                    return known[0]
                raise WalError(
                    f"{name}: cannot tell the PostgreSQL version of cluster {wanted} (no "
                    "PG_VERSION in the data directory and no WAL of it in the vault yet)"
                )
            return ClusterId(major, wanted)
        if len(records) == 1:
            return next(iter(records))
        raise WalError(
            f"{name}: cannot tell which cluster it belongs to: run the archive command in the "
            "data directory (PostgreSQL does), or set [wal] system_identifier"
        )

    def _admit(
        self, cluster: ClusterId, name: WalName, pinned: str | None, header: SegmentHeader | None
    ) -> ClusterRecord:
        records = self.records()
        if cluster in records:
            return records[cluster]
        records = self.records(refresh=True)
        if cluster in records:
            return records[cluster]
        vault = f"vault {self.config.name!r}"
        if pinned is not None and int(pinned) != cluster.system_identifier:
            raise WalError(
                f"{name}: from {cluster}, but [wal] system_identifier pins cluster {pinned}: "
                "refused (another cluster's WAL must not enter this vault)"
            )
        if pinned is None and records:
            others = ", ".join(str(c) for c in sorted(records))
            raise WalError(
                f"{name}: from {cluster}, but {vault} archives {others}: refused. A second "
                "cluster pointed at this vault? After pg_upgrade or a new initdb, set "
                f'[wal] system_identifier = "{cluster.system_identifier}" to archive the new one'
            )
        segment_size = header.segment_size if header is not None else 0
        if segment_size == 0:
            raise WalError(
                f"{name}: the first file archived for {cluster} must be a segment (it gives the "
                "segment size)"
            )
        record = self.archive.register(cluster, segment_size)
        with self._lock:
            if self._records is not None:
                self._records[cluster] = record
        return record
