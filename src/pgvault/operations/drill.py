"""Restore drills: prove a backup restores, on a schedule, without touching production.

A drill restores a backup into a temporary database (name prefixed so it cannot clash), or into a
throwaway cluster made with initdb (``server = "ephemeral"``), validates it against the manifest
(every table present, row counts as recorded), runs the SQL checks of the config, and records the
result in the vault (``<name>/drills/``), where ``pgvault check`` reads it. The temporary
database or cluster is always removed, also on failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pluggy
import psycopg

from pgvault.exceptions import PgVaultError, RestoreError
from pgvault.observability import REPORTED
from pgvault.operations.restore.database import ValidationReport, restore_database
from pgvault.operations.restore.options import RestoreOptions
from pgvault.operations.restore.target import DatabaseTarget, drop_database_quietly
from pgvault.plugin.exec_hooks import with_hooks
from pgvault.plugin.manager import call_hook
from pgvault.postgres.client import connect, describe_dsn
from pgvault.postgres.globals import GLOBALS_ROLE
from pgvault.settings import DrillCheck, DrillSettings, RestoreSettings
from pgvault.sources.pg_dump import server_major
from pgvault.transforms.api import DecodeContext
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import Manifest, utc_now

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.drill")

DRILL_PREFIX = "pgvault_drill_"


@attrs.frozen
class CheckOutcome:
    """One SQL check's result."""

    label: str
    ok: bool
    value: str | None
    expected: str
    error: str | None = None


@attrs.frozen
class DrillResult:
    """What a drill proved, as recorded in the vault."""

    drill_id: str
    backup_id: str
    started_at: datetime
    duration_seconds: float
    ok: bool
    server: str
    validation: ValidationReport | None
    checks: tuple[CheckOutcome, ...]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as stored under ``<name>/drills/``."""
        return {
            "format_version": 1,
            "drill_id": self.drill_id,
            "backup_id": self.backup_id,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "duration_seconds": round(self.duration_seconds, 3),
            "ok": self.ok,
            "server": self.server,
            "error": self.error,
            "tables": [
                attrs.asdict(t) for t in (self.validation.tables if self.validation else ())
            ],
            "checks": [attrs.asdict(c) for c in self.checks],
        }


def drills_prefix(vault: Vault) -> str:
    """Key prefix of the drill results of ``vault``."""
    return f"{vault.name}/drills/"


def last_drills(vault: Vault) -> list[dict[str, Any]]:
    """Recorded drill results, newest first (as stored JSON objects)."""
    results = []
    for info in vault.sink.list(drills_prefix(vault)):
        if info.key.endswith(".json"):
            try:
                results.append(json.loads(vault.sink.read_bytes(info.key)))
            except (ValueError, PgVaultError) as exc:
                log.warning("unreadable drill result %s: %s", info.key, exc)
    return sorted(results, key=lambda r: str(r.get("started_at", "")), reverse=True)


def _check_value(conn: psycopg.Connection[Any], check: DrillCheck) -> CheckOutcome:
    parts = []
    if check.equals is not None:
        parts.append(f"= {check.equals}")
    if check.at_least is not None:
        parts.append(f">= {check.at_least:g}")
    if check.at_most is not None:
        parts.append(f"<= {check.at_most:g}")
    expected = " and ".join(parts)
    try:
        row = conn.execute(check.sql).fetchone()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CheckOutcome(check.label, False, None, expected, first)
    value = None if row is None else row[0]
    text = None if value is None else _as_text(value)
    ok = value is not None
    if ok and check.equals is not None:
        ok = text == _as_text(check.equals)
    try:
        number = float(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if ok and check.at_least is not None:
        ok = number is not None and number >= check.at_least
    if ok and check.at_most is not None:
        ok = number is not None and number <= check.at_most
    return CheckOutcome(check.label, ok, text, expected)


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def _drill_fields(result: DrillResult) -> dict[str, str | None]:
    """What the ``after_drill`` exec hooks are told."""
    return {
        "outcome": "succeeded" if result.ok else "failed",
        "backup_id": result.backup_id,
        "drill_id": result.drill_id,
        "error": result.error,
    }


@with_hooks("drill", _drill_fields)  # [[hook]] before_drill / after_drill commands (issue 16)
def drill(
    config: PipelineConfig,
    ref: str = "latest",
    *,
    identities: tuple[Path, ...] = (),
    plugin_manager: pluggy.PluginManager | None = None,
) -> DrillResult:
    """Restore backup ``ref`` somewhere harmless, validate it, run the checks, record the result.

    Returns the result whether the drill passed or not (``result.ok``); raises only for mistakes
    that prevent a drill from being attempted (no such backup, bad config).
    """
    settings: DrillSettings = getattr(config, "drill", None) or DrillSettings()
    vault = Vault.from_config(config)
    manifest = vault.manifest(ref)
    physical = manifest.source_type == "basebackup"  # point-in-time recovery (issue 14)
    if manifest.source_type != "pg_dump" and not physical:
        raise RestoreError(
            f"backup {manifest.backup_id} is not a database backup: nothing to drill"
        )
    started = utc_now()
    clock = time.monotonic()
    drill_id = f"{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    context = DecodeContext(configured=config.transforms, identities=identities)
    validation: ValidationReport | None = None
    checks: list[CheckOutcome] = []
    error: str | None = None
    server_text: str = settings.server
    try:
        if physical:
            from pgvault.operations.pitr.drill import recover_and_check

            server_text, checks, error = recover_and_check(
                config,
                manifest,
                settings,
                identities,
                lambda conn: [_check_value(conn, c) for c in settings.check],
            )
        else:
            with _drill_target(config, settings, manifest, drill_id) as (target, ephemeral):
                server_text = "ephemeral cluster" if ephemeral else describe_dsn(target.dsn)
                # A bare cluster is the disaster a drill rehearses: the roles come from the
                # backup's globals, so owners and privileges are restored as on a new server.
                # Only a backup without globals (taken before pgvault stored them) needs both
                # left out there. The cluster has none of the source's tablespaces: objects go to
                # the default one. Subscriptions are never restored: a drill must not connect to
                # a publisher, nor hold the live subscriber's slot name.
                bare = ephemeral and not any(a.role == GLOBALS_ROLE for a in manifest.artifacts)
                options = RestoreOptions(
                    no_owner=bare,
                    no_privileges=bare,
                    no_tablespaces=ephemeral and manifest.source.get("format") != "plain",
                    subscriptions=False,
                )
                result = restore_database(
                    config,
                    manifest,
                    target,
                    options,
                    settings=getattr(config, "restore", None) or RestoreSettings(),
                    context=context,
                    plugin_manager=plugin_manager,
                )
                validation = result.validation
                with connect(target.dsn, dbname=target.name) as conn:
                    checks = [_check_value(conn, c) for c in settings.check]
    except PgVaultError as exc:
        error = str(exc)
    ok = error is None and all(c.ok for c in checks)
    if error is None and not ok:
        failed = [c for c in checks if not c.ok]
        error = "; ".join(
            f"check {c.label!r}: {c.error or f'got {c.value}, expected {c.expected}'}"
            for c in failed
        )
    outcome = DrillResult(
        drill_id=drill_id,
        backup_id=manifest.backup_id,
        started_at=started,
        duration_seconds=time.monotonic() - clock,
        ok=ok,
        server=server_text,
        validation=validation,
        checks=tuple(checks),
        error=error,
    )
    vault.sink.write_bytes(
        f"{drills_prefix(vault)}{drill_id}.json",
        (json.dumps(outcome.to_dict(), indent=2) + "\n").encode(),
    )
    if not ok:  # at ERROR, for an embedding application's own log handlers
        log.error(
            "drill %s of backup %s failed: %s",
            drill_id,
            manifest.backup_id,
            error,
            extra={REPORTED: True},  # the CLI prints its own error line for it
        )
    hook = "pgvault_drill_succeeded" if ok else "pgvault_drill_failed"
    call_hook(hook, pm=plugin_manager, config=config, result=outcome)
    return outcome


@contextlib.contextmanager
def _drill_target(
    config: PipelineConfig, settings: DrillSettings, manifest: Manifest, drill_id: str
) -> Iterator[tuple[DatabaseTarget, bool]]:
    """Where the drill restores, ``(target, ephemeral)``; removed on the way out, whatever
    happened (an ephemeral cluster whole, otherwise the prefixed database)."""
    name = DRILL_PREFIX + drill_id.lower().replace("-", "_")
    if settings.server == "ephemeral":
        from pgvault.postgres.cluster import ClusterUnavailable, PostgresCluster, server_bindir

        try:
            cluster = PostgresCluster(bindir=server_bindir(server_major(manifest.source)))
        except ClusterUnavailable as exc:
            raise RestoreError(f"cannot start an ephemeral drill cluster: {exc}") from exc
        try:
            try:
                cluster.start()
            except ClusterUnavailable as exc:
                raise RestoreError(f"cannot start an ephemeral drill cluster: {exc}") from exc
            yield DatabaseTarget(cluster.dsn(), name), True
        finally:
            cluster.destroy()  # also after a failed start: initdb's folder is ours to remove
        return
    dsn = settings.dsn or getattr(config.source, "dsn", None)
    if dsn is None:
        raise RestoreError("drill.dsn is needed: the config's source is not pg_dump")
    target = DatabaseTarget(dsn, name)
    try:
        yield target, False
    finally:
        restore_settings = getattr(config, "restore", None) or RestoreSettings()
        drop_database_quietly(target, restore_settings.maintenance_db)
