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
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from pgvault.exceptions import ManifestError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

CLOCK_TOLERANCE = timedelta(minutes=5)
"""How far ahead of the reader's clock a backup's recorded time may be and still count.

A backup dated further ahead (a host clock that jumped forward, then was fixed; or a forged
manifest) is *future-dated*: it stays listed and restorable by id, but is never ``latest``, never
counted by ``check`` or retention, and never removed by ``prune`` (see docs/retention.md). Five
minutes absorbs ordinary clock differences between the host that backs up and the one that reads.
"""

_ID_TIME = re.compile(r"^(\d{8}T\d{6}Z)(?:-|$)")


def utc_now() -> datetime:
    """The current UTC time at the precision manifests store (milliseconds)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_backup_id(now: datetime) -> str:
    """A sortable id: the UTC start time to the second, plus a short random suffix."""
    return f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def id_time(backup_id: str) -> datetime | None:
    """The start time encoded in a pgvault backup id (``20261120T020000Z-ab12cd``), if any."""
    m = _ID_TIME.match(backup_id)
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def future_dated(backup_id: str, started_at: datetime, now: datetime) -> bool:
    """Whether a backup's recorded time is beyond ``now`` + :data:`CLOCK_TOLERANCE`.

    The recorded time is both the manifest's ``started_at`` and the time in the backup's id (they
    are the same instant when pgvault wrote them): if either is ahead, the backup is future-dated,
    so editing one of them cannot make a skewed backup count.
    """
    limit = _aware(now) + CLOCK_TOLERANCE
    from_id = id_time(backup_id)
    return _aware(started_at) > limit or (from_id is not None and from_id > limit)


def _aware(dt: datetime) -> datetime:
    # A naive time is UTC by pgvault's convention, never local time.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


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
        if not text.strip():
            raise ManifestError(f"{where}: empty")
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ManifestError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: not a manifest object")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ManifestError(f"{where}: no format_version")
        if version < 1:
            raise ManifestError(f"{where}: unknown manifest format {version}")
        if version > FORMAT_VERSION:
            raise ManifestError(
                f"{where}: manifest format {version} is newer than this pgvault understands "
                f"({FORMAT_VERSION}); upgrade pgvault to read it"
            )
        try:
            manifest = cls(
                backup_id=data["backup_id"],
                name=data["name"],
                status=data.get("status", "complete"),
                kind=data.get("kind", "scheduled"),
                labels=dict(data.get("labels", {})),
                started_at=_aware(datetime.fromisoformat(data["started_at"])),
                finished_at=_aware(datetime.fromisoformat(data["finished_at"])),
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
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{where}: malformed manifest ({exc!r})") from None
        if not isinstance(manifest.backup_id, str):
            raise ManifestError(f"{where}: malformed manifest (backup_id is not a string)")
        if not manifest.artifacts:
            # Every source stores at least one stream: a manifest of nothing restores nothing.
            raise ManifestError(f"{where}: lists no artifacts, so it is not a backup")
        return manifest


def _artifact_dict(a: ArtifactRecord) -> dict[str, Any]:
    data = attrs.asdict(a)
    if not a.transform_params:
        # Absent rather than empty: manifests of chains without per-artifact params stay as before.
        del data["transform_params"]
    return data


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
