"""Synthetic backups written through the real Vault and sink APIs, with chosen start times.

A retention or check test needs months of history; taking real backups for each day would be slow
and prove nothing more. These are stored exactly as the pipeline stores them (data first, then a
manifest), so prune and check cannot tell them from real ones.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from pgvault.vault.contents import Vault
from pgvault.vault.manifest import ArtifactRecord, Manifest, new_backup_id


def fake_backup(
    vault: Vault,
    started: datetime,
    *,
    size: int = 1000,
    claimed_size: int | None = None,
    kind: str = "scheduled",
    labels: dict[str, str] | None = None,
    complete: bool = True,
) -> str:
    """Store a backup of ``size`` bytes started at ``started``; return its id.

    ``claimed_size`` records another size in the manifest (a huge backup without huge data);
    ``complete=False`` stores the data but no manifest, like a run that died.
    """
    backup_id = new_backup_id(started)
    data = (backup_id.encode() * (size // len(backup_id) + 1))[:size]
    vault.sink.write_bytes(vault.artifact_key(backup_id, "dump.pgdump"), data)
    if complete:
        vault.write_manifest(
            Manifest(
                backup_id=backup_id,
                name=vault.name,
                started_at=started,
                finished_at=started + timedelta(minutes=1),
                pgvault_version="test",
                source={"type": "files"},
                transforms=(),
                artifacts=(
                    ArtifactRecord(
                        path="dump.pgdump",
                        stream="dump",
                        role="main",
                        size=claimed_size if claimed_size is not None else size,
                        raw_size=size,
                        digests={"sha256": hashlib.sha256(data).hexdigest()},
                    ),
                ),
                kind=kind,
                labels=labels or {},
            )
        )
    return backup_id


def daily_history(vault: Vault, first: datetime, days: int, **kwargs: Any) -> list[str]:
    """One backup a day at ``first``'s time of day for ``days`` days; ids oldest first."""
    return [fake_backup(vault, first + timedelta(days=i), **kwargs) for i in range(days)]
