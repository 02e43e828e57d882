"""WAL to every destination (issue 15): the rule ``wal-push`` and the WAL daemon follow.

The primary destination (the first ``[[sink]]``) is archived first, with every check of
:mod:`pgvault.wal.push` (cluster admission, segment size). Then each other destination gets the
same file through the same create-if-absent store (its cluster record registered there when
missing, create-if-absent too):

* a **required** destination that fails fails the push: PostgreSQL keeps the file and retries,
  and the retry finds it already archived (identical) where it was stored, so nothing is
  written twice;
* a destination with ``required = false`` that fails is a warning: the push succeeds, and that
  destination's WAL lags until ``pgvault copy`` (which copies missing WAL objects) catches up.

Each destination encodes the file itself (its own encryption nonce), so the stored bytes differ
between destinations while the WAL they decode to is the same.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from pgvault.exceptions import PgVaultError
from pgvault.wal.archive import ClusterId, ClusterRecord, WalArchive
from pgvault.wal.names import SegmentHeader, WalError, WalName

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.wal")

_registered: set[tuple[str, str, str]] = set()
_lock = threading.Lock()


def store_elsewhere(
    config: PipelineConfig,
    cluster: ClusterId,
    record: ClusterRecord,
    name: WalName,
    data: bytes,
    header: SegmentHeader | None,
    version: str,
) -> None:
    """Store a WAL file the primary destination holds on every other destination (see the
    module doc); raises WalError for a required one that fails."""
    for dest in config.destinations[1:]:
        archive = WalArchive(dest.sink, config.name)
        mark = (dest.sink.describe(), config.name, cluster.key)
        try:
            with _lock:
                known = mark in _registered
            if not known:
                archive.register(cluster, record.segment_size)
                with _lock:
                    _registered.add(mark)
            archive.store(
                cluster,
                name,
                data,
                config.transforms,
                timeline=header.timeline if header else None,
                segment_size=header.segment_size if header else None,
                pgvault_version=version,
            )
        except PgVaultError as exc:
            text = str(exc).replace("\n", " ")
            if dest.required:
                raise WalError(
                    f"{name}: archived at the first destination, but destination {dest.name!r} "
                    f"failed: {text} (required: PostgreSQL retries the file)"
                ) from exc
            log.warning(
                "%s: destination %r failed: %s (not required: it lags; pgvault copy catches it up)",
                name,
                dest.name,
                text,
            )
