"""The backup manifest: versioned JSON, written last, enough to restore with nothing but the vault.

A backup exists once, and only once, its ``manifest.json`` is committed. The manifest records what
was backed up (source metadata), how the bytes were transformed (each stage's public parameters),
and each artifact's size and digests. Secrets never appear in it.

Compatibility: ``format_version`` is bumped only for changes an older reader would misread; new
optional keys do not bump it, and readers ignore keys they do not know. A manifest from a newer
format is refused with a message that says to upgrade, never half-read.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

import attrs

from pgvault.exceptions import ManifestError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


def utc_now() -> datetime:
    """The current UTC time at the precision manifests store (milliseconds)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_backup_id(now: datetime) -> str:
    """A sortable id: the UTC start time to the second, plus a short random suffix."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@attrs.frozen
class TransformRecord:
    """One stage of the chain, as applied: entry-point type and public parameters."""

    type: str
    params: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class ArtifactRecord:
    """One stored object of a backup.

    ``path`` is the stored file name inside the backup folder, ``stream`` the source stream it came
    from, ``size`` and ``digests`` describe the stored bytes, ``raw_size`` the bytes before any
    transform. ``transform_params`` holds, in chain order, public per-artifact parameters of each
    stage (an encryption salt), or is empty when no stage has any; stored only when non-empty.
    """

    path: str
    stream: str
    role: str
    size: int
    raw_size: int
    digests: dict[str, str]
    transform_params: tuple[dict[str, Any], ...] = ()


@attrs.frozen
class Manifest:
    """Everything pgvault knows about one complete backup."""

    backup_id: str
    name: str
    started_at: datetime
    finished_at: datetime
    pgvault_version: str
    source: dict[str, Any]
    transforms: tuple[TransformRecord, ...]
    artifacts: tuple[ArtifactRecord, ...]
    checksums: tuple[str, ...] = ("sha256",)
    kind: str = "scheduled"
    """``scheduled`` for ordinary runs; ``safety`` for backups taken before a destructive
    restore."""
    labels: dict[str, str] = attrs.field(factory=dict)
    status: str = "complete"
    format_version: int = FORMAT_VERSION

    @property
    def duration_seconds(self) -> float:
        """Wall time of the run."""
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def size(self) -> int:
        """Stored bytes over all artifacts."""
        return sum(a.size for a in self.artifacts)

    @property
    def raw_size(self) -> int:
        """Bytes the source produced, before transforms."""
        return sum(a.raw_size for a in self.artifacts)

    @property
    def source_type(self) -> str:
        """The source's entry-point type (``pg_dump``, ``files``)."""
        return str(self.source.get("type", "?"))

    def artifact(self, path: str) -> ArtifactRecord:
        """The artifact stored as ``path``."""
        for a in self.artifacts:
            if a.path == path:
                return a
        raise ManifestError(f"backup {self.backup_id} has no artifact {path!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form, keys in a stable, readable order."""
        return {
            "format_version": self.format_version,
            "backup_id": self.backup_id,
            "name": self.name,
            "status": self.status,
            "kind": self.kind,
            "labels": dict(self.labels),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "duration_seconds": round(self.duration_seconds, 3),
            "pgvault_version": self.pgvault_version,
            "source": self.source,
            "transforms": [{"type": t.type, **t.params} for t in self.transforms],
            "checksums": list(self.checksums),
            "size": self.size,
            "raw_size": self.raw_size,
            "artifacts": [_artifact_dict(a) for a in self.artifacts],
        }

    def to_json(self) -> str:
        """Serialised manifest, as stored."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, where: str = "manifest") -> Manifest:
        """Parse a stored manifest; ``where`` names it in errors."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: not a manifest object")
        version = data.get("format_version")
        if not isinstance(version, int):
            raise ManifestError(f"{where}: no format_version")
        if version > FORMAT_VERSION:
            raise ManifestError(
                f"{where}: manifest format {version} is newer than this pgvault understands "
                f"({FORMAT_VERSION}); upgrade pgvault to read it"
            )
        try:
            return cls(
                backup_id=data["backup_id"],
                name=data["name"],
                status=data.get("status", "complete"),
                kind=data.get("kind", "scheduled"),
                labels=dict(data.get("labels", {})),
                started_at=datetime.fromisoformat(data["started_at"]),
                finished_at=datetime.fromisoformat(data["finished_at"]),
                pgvault_version=data["pgvault_version"],
                source=dict(data["source"]),
                transforms=tuple(
                    TransformRecord(
                        type=t["type"], params={k: v for k, v in t.items() if k != "type"}
                    )
                    for t in data["transforms"]
                ),
                checksums=tuple(data.get("checksums", ["sha256"])),
                artifacts=tuple(
                    ArtifactRecord(
                        path=a["path"],
                        stream=a["stream"],
                        role=a.get("role", "main"),
                        size=int(a["size"]),
                        raw_size=int(a["raw_size"]),
                        digests=dict(a["digests"]),
                        transform_params=tuple(dict(p) for p in a.get("transform_params", ())),
                    )
                    for a in data["artifacts"]
                ),
                format_version=version,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed manifest ({exc!r})") from None


def _artifact_dict(a: ArtifactRecord) -> dict[str, Any]:
    data = attrs.asdict(a)
    if not a.transform_params:
        # Absent rather than empty: manifests of chains without per-artifact params stay as before.
        del data["transform_params"]
    return data


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
