"""Drills of base backups: restore + replay into a throwaway cluster, checks, the recovery time.

A physical drill restores the base backup into a temporary data directory, recovers it to the
end of the archive (or to ``drill.target_age`` before now) exactly as ``pgvault restore
--target-dir … --start`` would, runs the ``[[drill.check]]`` queries on it, and records the
result in the vault like any drill; its ``duration_seconds`` is the measured recovery time
objective (restore and replay, from the first byte read to the promoted server). The cluster
and its folder are always removed, also on failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

from pgvault.exceptions import PgVaultError
from pgvault.plugin.manager import call_hook
from pgvault.vault.manifest import Manifest, utc_now

from .restore import owner_for, restore_pitr
from .start import stop_restored
from .targets import build_target

if TYPE_CHECKING:
    from pgvault.operations.drill import CheckOutcome, DrillResult
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.settings import DrillSettings


def _scratch() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="pgvault-drill-"))
    folder.chmod(0o755)
    if os.geteuid() == 0:
        owner = owner_for(folder)
        if owner is not None:
            os.chown(folder, *owner)
    return folder


def physical_drill(
    config: PipelineConfig,
    manifest: Manifest,
    settings: DrillSettings,
    identities: tuple[Path, ...],
    plugin_manager: pluggy.PluginManager | None,
) -> DrillResult:
    """Drill base backup ``manifest`` (see the module doc); the recorded result."""
    import psycopg

    from pgvault.operations.drill import DrillResult, _check_value, drills_prefix
    from pgvault.postgres.cluster import free_port, server_bindir
    from pgvault.vault.contents import Vault

    started = utc_now()
    clock = time.monotonic()
    drill_id = f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    if settings.target_age is not None:
        when = datetime.now(UTC) - settings.target_age.delta
        target = build_target(time=when.isoformat())
    else:
        target = build_target()
    checks: list[CheckOutcome] = []
    error: str | None = None
    server = f"ephemeral cluster, recovered to {target.describe()}"
    scratch = _scratch()
    data = scratch / "data"
    port = free_port()
    try:
        result = restore_pitr(
            config,
            manifest.backup_id,
            data,
            target,
            command=shlex.split(settings.pgvault) if settings.pgvault else None,
            identities=identities,
            start=True,
            port=port,
        )
        report = result.started
        if report is None or not report.ok:
            error = "; ".join(report.lines()) if report else "the cluster did not start"
        else:
            server += f" ({report.stopping or 'redo done at ' + str(report.redo_lsn)})"
            dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                    checks = [_check_value(conn, c) for c in settings.check]
            except psycopg.Error as exc:
                error = f"cannot connect to the recovered cluster: {str(exc).strip()}"
    except PgVaultError as exc:
        error = str(exc)
    finally:
        with contextlib.suppress(Exception):
            stop_restored(data, server_bindir(int(manifest.source.get("major", 0)) or None),
                          owner=owner_for(scratch))  # fmt: skip
        shutil.rmtree(scratch, ignore_errors=True)
    ok = error is None and all(c.ok for c in checks)
    if error is None and not ok:
        error = "; ".join(
            f"check {c.label!r}: {c.error or f'got {c.value}, expected {c.expected}'}"
            for c in checks
            if not c.ok
        )
    outcome = DrillResult(
        drill_id=drill_id,
        backup_id=manifest.backup_id,
        started_at=started,
        duration_seconds=time.monotonic() - clock,
        ok=ok,
        server=server,
        validation=None,
        checks=tuple(checks),
        error=error,
    )
    vault = Vault.from_config(config)
    vault.sink.write_bytes(
        f"{drills_prefix(vault)}{drill_id}.json",
        (json.dumps(outcome.to_dict(), indent=2) + "\n").encode(),
    )
    hook = "pgvault_drill_succeeded" if ok else "pgvault_drill_failed"
    call_hook(hook, pm=plugin_manager, config=config, result=outcome)
    return outcome
