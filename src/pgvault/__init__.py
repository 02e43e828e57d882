"""pgvault: back PostgreSQL up and bring it back.

Streaming pipelines (source → transforms → sink) with a manifest written last, vaults you can
list, verify and restore from, and plugins for everything around them. Everything the ``pgvault``
command does is a function here; none of them prints or exits.

The names below load lazily (PEP 562): ``import pgvault`` costs almost nothing, and
``pgvault.restore`` imports the restore code only when first used. The API's functions
(``run``, ``restore``, ``check``, ``prune``, ``drill``) are never replaced by a module of the same
name: the modules live in folders (``pgvault.operations.restore`` …), and importing an old module
path kept for compatibility (``pgvault.restore``, deprecated) leaves the function in place.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    __version__: str
    from pgvault.config import load_config, parse_config
    from pgvault.engine.pipeline import Progress, run
    from pgvault.exceptions import (
        ArchiveFormatError,
        BackupNotFoundError,
        CiphertextError,
        ConfigError,
        DecryptionKeyError,
        IntegrityError,
        KeyFileError,
        KeyMismatchError,
        ManifestError,
        MissingKeyError,
        ObjectArchivedError,
        ObjectNotFoundError,
        PgVaultError,
        PluginError,
        RestoreError,
        RunLockedError,
        SinkError,
        SourceError,
        TransformError,
        VaultError,
    )
    from pgvault.operations.check import CheckResult, Problem, Status, check
    from pgvault.operations.copy import CopyResult, copy
    from pgvault.operations.drill import DrillResult, drill
    from pgvault.operations.prune import PruneResult, prune
    from pgvault.operations.report.report import Report, report
    from pgvault.operations.restore.database import RestoreResult, restore
    from pgvault.operations.restore.options import RestoreOptions
    from pgvault.pipeline_config import PipelineConfig
    from pgvault.plugin.hookspecs import hookimpl
    from pgvault.settings import CheckThresholds, DrillSettings, RestoreSettings, RetentionPolicy
    from pgvault.vault.contents import (
        DamagedBackup,
        Vault,
        VaultContents,
        VerifyProblem,
        VerifyReport,
    )
    from pgvault.vault.manifest import ArtifactRecord, Manifest, TransformRecord
    from pgvault.vault.retention import RetentionPlan

_EXCEPTIONS = (
    "ArchiveFormatError",
    "BackupNotFoundError",
    "CiphertextError",
    "ConfigError",
    "DecryptionKeyError",
    "IntegrityError",
    "KeyFileError",
    "KeyMismatchError",
    "ManifestError",
    "MissingKeyError",
    "ObjectArchivedError",
    "ObjectNotFoundError",
    "PgVaultError",
    "PluginError",
    "RestoreError",
    "RunLockedError",
    "SinkError",
    "SourceError",
    "TransformError",
    "VaultError",
)

_WHERE: dict[str, str] = {
    **dict.fromkeys(_EXCEPTIONS, "pgvault.exceptions"),
    "load_config": "pgvault.config",
    "parse_config": "pgvault.config",
    "PipelineConfig": "pgvault.pipeline_config",
    "run": "pgvault.engine.pipeline",
    "Progress": "pgvault.engine.pipeline",
    "check": "pgvault.operations.check",
    "CheckResult": "pgvault.operations.check",
    "Problem": "pgvault.operations.check",
    "Status": "pgvault.operations.check",
    "copy": "pgvault.operations.copy",
    "CopyResult": "pgvault.operations.copy",
    "report": "pgvault.operations.report.report",
    "Report": "pgvault.operations.report.report",
    "drill": "pgvault.operations.drill",
    "DrillResult": "pgvault.operations.drill",
    "prune": "pgvault.operations.prune",
    "PruneResult": "pgvault.operations.prune",
    "restore": "pgvault.operations.restore.database",
    "RestoreResult": "pgvault.operations.restore.database",
    "RestoreOptions": "pgvault.operations.restore.options",
    "hookimpl": "pgvault.plugin.hookspecs",
    "CheckThresholds": "pgvault.settings",
    "DrillSettings": "pgvault.settings",
    "RestoreSettings": "pgvault.settings",
    "RetentionPolicy": "pgvault.settings",
    "DamagedBackup": "pgvault.vault.contents",
    "Vault": "pgvault.vault.contents",
    "VaultContents": "pgvault.vault.contents",
    "VerifyProblem": "pgvault.vault.contents",
    "VerifyReport": "pgvault.vault.contents",
    "ArtifactRecord": "pgvault.vault.manifest",
    "Manifest": "pgvault.vault.manifest",
    "TransformRecord": "pgvault.vault.manifest",
    "RetentionPlan": "pgvault.vault.retention",
}
"""Each public name and the module that defines it."""

_FUNCTIONS = frozenset(name for name in _WHERE if name[0].islower())

__all__ = [
    "ArchiveFormatError",
    "ArtifactRecord",
    "BackupNotFoundError",
    "CheckResult",
    "CheckThresholds",
    "CiphertextError",
    "ConfigError",
    "CopyResult",
    "DamagedBackup",
    "DecryptionKeyError",
    "DrillResult",
    "DrillSettings",
    "IntegrityError",
    "KeyFileError",
    "KeyMismatchError",
    "Manifest",
    "ManifestError",
    "MissingKeyError",
    "ObjectArchivedError",
    "ObjectNotFoundError",
    "PgVaultError",
    "PipelineConfig",
    "PluginError",
    "Problem",
    "Progress",
    "PruneResult",
    "Report",
    "RestoreError",
    "RestoreOptions",
    "RestoreResult",
    "RestoreSettings",
    "RetentionPlan",
    "RetentionPolicy",
    "RunLockedError",
    "SinkError",
    "SourceError",
    "Status",
    "TransformError",
    "TransformRecord",
    "Vault",
    "VaultContents",
    "VaultError",
    "VerifyProblem",
    "VerifyReport",
    "__version__",
    "check",
    "copy",
    "drill",
    "hookimpl",
    "load_config",
    "parse_config",
    "prune",
    "report",
    "restore",
    "run",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name == "__version__":  # importlib.metadata costs more than the rest of ``import pgvault``
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("pgvault")
        except PackageNotFoundError:  # a source tree on sys.path, not installed
            value = "0+unknown"
        globals()[name] = value
        return value
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'pgvault' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


class _Package(types.ModuleType):
    """pgvault's own module type: importing a submodule never hides a function of the API.

    The import system sets a package's attribute to each submodule it imports; a deprecated
    module path named like a function (``pgvault.restore``) would otherwise replace the function.
    """

    def __setattr__(self, name: str, value: object) -> None:
        if name in _FUNCTIONS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

from pgvault import _deprecated  # noqa: E402  (after the module type: it may import submodules)

_deprecated.install()
