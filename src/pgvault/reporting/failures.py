"""Failed runs recorded in the vault, as drill results are, so a report reads one truth.

A failed scheduled backup leaves ``<name>/failures/<backup_id>.json`` (id, kind, start, end,
error): small, outside ``backups/`` (so nothing lists or prunes it as a backup), written after
the run's partial objects were removed. Recording never fails the run it records.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from pgvault.exceptions import PgVaultError
from pgvault.vault.contents import Vault

log = logging.getLogger("pgvault.report")


def failures_prefix(vault: Vault) -> str:
    """Key prefix of the recorded failures of ``vault``."""
    return f"{vault.name}/failures/"


def record_failure(
    vault: Vault, backup_id: str, kind: str, started: datetime, error: BaseException
) -> None:
    """Write the failure record of run ``backup_id``; log, never raise."""
    record = {
        "backup_id": backup_id,
        "kind": kind,
        "started_at": started.astimezone(UTC).isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "error": (str(error) or type(error).__name__).replace("\n", " ")[:1000],
        "error_type": type(error).__name__,
    }
    try:
        vault.sink.write_bytes(
            f"{failures_prefix(vault)}{backup_id}.json", (json.dumps(record) + "\n").encode()
        )
    except Exception as exc:
        log.warning("could not record the failure of %s in the vault: %s", backup_id, exc)


def read_failures(vault: Vault) -> list[dict[str, Any]]:
    """Recorded failures, oldest first; an unreadable record is logged and skipped."""
    found = []
    for info in vault.sink.list(failures_prefix(vault)):
        if not info.key.endswith(".json"):
            continue
        try:
            record = json.loads(vault.sink.read_bytes(info.key))
            record["started_at"] = datetime.fromisoformat(record["started_at"])
            found.append(record)
        except (ValueError, KeyError, TypeError, PgVaultError) as exc:
            log.warning("unreadable failure record %s: %s", info.key, exc)
    return sorted(found, key=lambda r: r["started_at"])
