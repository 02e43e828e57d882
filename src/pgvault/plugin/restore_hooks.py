"""The events around a restore: ``pgvault_restore_started/succeeded/failed`` and the exec hooks.

:func:`restore_events` wraps the public entry point (:func:`pgvault.restore`) rather than living
in the restore's internals: it finds the backup (so hooks get its real id, ``latest`` resolved),
fires ``pgvault_restore_started``, runs the ``before_restore`` exec hooks, the restore, the
``after_restore`` exec hooks, and then ``pgvault_restore_succeeded`` or, with an ERROR record on
the ``pgvault.restore`` logger, ``pgvault_restore_failed``. A restore that cannot start (no such
backup, no target given) raises as before, without any hook.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec

from pgvault.observability import FIELDS_ATTR, REPORTED
from pgvault.plugin.exec_hooks import around
from pgvault.plugin.manager import call_hook

if TYPE_CHECKING:
    from pgvault.operations.restore.database import RestoreResult

log = logging.getLogger("pgvault.restore")

P = ParamSpec("P")


def restore_events(fn: Callable[P, RestoreResult]) -> Callable[P, RestoreResult]:
    """Decorate ``restore(config, ref, *, before, target_db, target_dir, plugin_manager, …)``."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> RestoreResult:
        from pgvault.vault.contents import Vault

        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        given: dict[str, Any] = bound.arguments
        config = given["config"]
        vault = Vault.from_config(config)
        before = given["before"]
        manifest = (
            vault.manifest_before(before) if before is not None else vault.manifest(given["ref"])
        )
        wanted = given["target_dir"] if manifest.source_type == "files" else given["target_db"]
        if wanted is None:
            return fn(*args, **kwargs)  # refuses, naming the missing option: nothing started
        # The inner call restores exactly the backup the hooks were told about.
        given["ref"], given["before"] = manifest.backup_id, None
        backup_id, target = manifest.backup_id, str(wanted)
        pm = given.get("plugin_manager")
        call_hook(
            "pgvault_restore_started", pm=pm, config=config, backup_id=backup_id, target=target
        )
        try:
            with around(config, "restore", backup_id=backup_id, target=target) as extra:
                result = fn(*bound.args, **bound.kwargs)
                extra["safety_backup_id"] = result.safety_backup_id
        except BaseException as exc:
            log.error(
                "restore of backup %s of %s into %s failed: %s",
                backup_id,
                config.name,
                target,
                str(exc).replace("\n", " ") or type(exc).__name__,
                extra={
                    FIELDS_ATTR: {
                        "event": "restore",
                        "outcome": "failed",
                        "name": config.name,
                        "run_id": backup_id,
                        "target": target,
                    },
                    REPORTED: True,  # the CLI prints its own error line for it
                },
            )
            call_hook(
                "pgvault_restore_failed",
                pm=pm,
                config=config,
                backup_id=backup_id,
                target=target,
                error=exc,
            )
            raise
        call_hook("pgvault_restore_succeeded", pm=pm, config=config, result=result)
        return result

    return wrapper
