"""pgvault: back PostgreSQL up and bring it back.

Streaming pipelines (source → transforms → sink) with a manifest written last, vaults you can
list, verify and restore from, and plugins for everything around them. Everything the ``pgvault``
command does is a function here; none of them prints or exits.
"""

from pgvault.config import PipelineConfig, load_config, parse_config
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
from pgvault.health import CheckResult, CheckThresholds, Problem, Status, check
from pgvault.manifest import ArtifactRecord, Manifest, TransformRecord
from pgvault.pipeline import Progress, run
from pgvault.plugin.hookspecs import hookimpl
from pgvault.pruning import PruneResult, prune
from pgvault.restore import RestoreResult, restore
from pgvault.retention import RetentionPlan, RetentionPolicy
from pgvault.vault import DamagedBackup, Vault, VaultContents, VerifyProblem, VerifyReport

__all__ = [
    "ArchiveFormatError",
    "ArtifactRecord",
    "BackupNotFoundError",
    "CheckResult",
    "CheckThresholds",
    "CiphertextError",
    "ConfigError",
    "DamagedBackup",
    "DecryptionKeyError",
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
    "RestoreError",
    "RestoreResult",
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
    "check",
    "hookimpl",
    "load_config",
    "parse_config",
    "prune",
    "restore",
    "run",
]
