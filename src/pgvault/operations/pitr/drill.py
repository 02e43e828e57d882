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
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgvault.exceptions import PgVaultError
from pgvault.vault.manifest import Manifest

from .restore import owner_for, restore_pitr
from .start import stop_restored
from .targets import build_target

if TYPE_CHECKING:
    from pgvault.operations.drill import CheckOutcome
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


def recover_and_check(
    config: PipelineConfig,
    manifest: Manifest,
    settings: DrillSettings,
    identities: tuple[Path, ...],
    run_checks: Callable[[Any], list[CheckOutcome]],
) -> tuple[str, list[CheckOutcome], str | None]:
    """Recover base backup ``manifest`` in a throwaway cluster and run ``run_checks`` on a
    connection to it; ``(server description, check outcomes, error)``. The caller (the drill)
    records the result and times it: that time is the recovery time objective."""
    import psycopg

    from pgvault.postgres.cluster import free_port, server_bindir

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
                    checks = run_checks(conn)
            except psycopg.Error as exc:
                error = f"cannot connect to the recovered cluster: {str(exc).strip()}"
    except PgVaultError as exc:
        error = str(exc)
    finally:
        with contextlib.suppress(Exception):
            major = int(manifest.source.get("major", 0)) or None
            stop_restored(data, server_bindir(major), owner=owner_for(scratch))
        shutil.rmtree(scratch, ignore_errors=True)
    return server, checks, error
