"""The vault's WAL archive: its layout, its cluster records, and the stored form of a WAL file.

Layout under the sink root (next to ``<name>/backups/``)::

    <name>/wal/clusters/<major>-<sysid>.json            one record per archived cluster
    <name>/wal/<major>-<sysid>/<TLI><LOG>/<segment>      segments, 8 + 8 hex folder as in
    <name>/wal/<major>-<sysid>/<TLI><LOG>/<segment>.partial        pgBackRest: one folder per
    <name>/wal/<major>-<sysid>/<TLI><LOG>/<seg>.<off>.backup       timeline and 4 GiB of WAL
    <name>/wal/<major>-<sysid>/history/<TLI>.history     timeline history files

A cluster is its system identifier and major version (``15-7312345678901234567``); a new
``initdb`` or a ``pg_upgrade`` makes a new one, so two clusters never share a folder. Every WAL
file keeps exactly the name PostgreSQL gave it, and is written create-if-absent: an existing
object is never replaced, so the name is the identity and a listing of one folder is the index
of what is archived there. "Is every segment from X to Y present" lists only the folders that
range spans (one per 4 GiB of WAL).

Stored form (one object per WAL file, written in one go and never changed)::

    b"PGVWAL\\r\\n"  u32 big-endian N  N bytes of JSON (the envelope)  the encoded body

The envelope names the file, its cluster and timeline, its raw size and SHA-256, who stored it
and when, and the transform chain (type and public parameters, as a manifest records them); the
body is the raw file through that chain (zstd, aes-256-gcm …). The envelope is readable without
any key, so a re-push compares digests, and a fetch knows how to decode, before any secret is
used; an encrypting stage binds the body to its cluster and name
(``ArtifactBinding("wal/<major>-<sysid>", name)``), so a body moved under another name or into
another cluster's folder is refused. The raw SHA-256 is checked after decoding and the segment
header again before a file is handed to PostgreSQL.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import re
import socket
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from pgvault.exceptions import ObjectExistsError, ObjectNotFoundError, PgVaultError
from pgvault.plugin.components import load_component
from pgvault.sinks.api import Sink
from pgvault.transforms.api import ArtifactBinding, Codec, DecodeContext, Transform
from pgvault.vault.manifest import TransformRecord
from pgvault.wal.names import Kind, WalError, WalName

log = logging.getLogger("pgvault.wal")

FORMAT_VERSION = 1
MAGIC = b"PGVWAL\r\n"
_LENGTH = struct.Struct(">I")
MAX_ENVELOPE = 1 << 16
CHUNK = 1 << 20
_CLUSTER = re.compile(r"^(\d{1,3})-([1-9]\d{0,19})$")


class WalConflictError(WalError):
    """A different file is already archived under the name: nothing was overwritten."""


class WalIntegrityError(WalError):
    """A stored WAL object is damaged, misplaced or not what its envelope says."""


@attrs.frozen(order=True)
class ClusterId:
    """One PostgreSQL cluster as the archive knows it: major version and system identifier."""

    major: int
    system_identifier: int

    @property
    def key(self) -> str:
        """``15-7312345678901234567``: the cluster's folder name."""
        return f"{self.major}-{self.system_identifier}"

    @property
    def binding_id(self) -> str:
        """What encryption seals in as the "backup id" of this cluster's WAL objects."""
        return f"wal/{self.key}"

    @classmethod
    def parse(cls, text: str) -> ClusterId:
        """The cluster a folder name names; ValueError if it is not one."""
        m = _CLUSTER.match(text)
        if not m:
            raise ValueError(f"not a WAL cluster folder name: {text!r}")
        return cls(int(m[1]), int(m[2]))

    def __str__(self) -> str:
        return f"cluster {self.system_identifier} (PostgreSQL {_major_text(self.major)})"


def _major_text(major: int) -> str:
    return "9.6" if major == 96 else str(major)


@attrs.frozen
class ClusterRecord:
    """What the archive records of a cluster when its first WAL file is stored."""

    cluster: ClusterId
    segment_size: int
    created_at: datetime

    def to_json(self) -> bytes:
        """The stored form."""
        return (
            json.dumps(
                {
                    "format_version": FORMAT_VERSION,
                    "major": self.cluster.major,
                    "system_identifier": str(self.cluster.system_identifier),
                    "segment_size": self.segment_size,
                    "created_at": _iso(self.created_at),
                },
                indent=2,
            )
            + "\n"
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> ClusterRecord:
        """Parse a stored record; WalIntegrityError naming ``where`` if it is not one."""
        try:
            raw = json.loads(data)
            return cls(
                ClusterId(int(raw["major"]), int(raw["system_identifier"])),
                int(raw["segment_size"]),
                datetime.fromisoformat(raw["created_at"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise WalIntegrityError(f"{where}: not a WAL cluster record ({exc!r})") from None


@attrs.frozen
class Envelope:
    """The readable head of a stored WAL object (see the module doc)."""

    name: str
    cluster: ClusterId
    raw_size: int
    sha256: str
    transforms: tuple[TransformRecord, ...]
    pushed_at: datetime
    host: str = ""
    timeline: int | None = None
    """The timeline in a segment's header (older than the name's on a new timeline's first)."""
    segment_size: int | None = None
    pgvault_version: str = ""
    format_version: int = FORMAT_VERSION

    def encode(self) -> bytes:
        """Magic, length and JSON: the first bytes of the stored object."""
        data: dict[str, Any] = {
            "format_version": self.format_version,
            "name": self.name,
            "cluster": self.cluster.key,
            "system_identifier": str(self.cluster.system_identifier),
            "major": self.cluster.major,
            "timeline": self.timeline,
            "segment_size": self.segment_size,
            "raw_size": self.raw_size,
            "sha256": self.sha256,
            "transforms": [{"type": t.type, **t.params} for t in self.transforms],
            "pushed_at": _iso(self.pushed_at),
            "host": self.host,
            "pgvault_version": self.pgvault_version,
        }
        body = json.dumps(data, separators=(",", ":")).encode()
        return MAGIC + _LENGTH.pack(len(body)) + body

    @classmethod
    def decode(cls, prefix: bytes, *, where: str) -> tuple[Envelope, int] | None:
        """The envelope at the start of ``prefix`` and its length in bytes, or None while
        ``prefix`` is too short. WalIntegrityError (naming ``where``) when it is not one."""
        if len(prefix) >= len(MAGIC) and not prefix.startswith(MAGIC):
            raise WalIntegrityError(
                f"{where}: not a pgvault WAL object (no PGVWAL header: written by another tool, "
                "or damaged)"
            )
        head = len(MAGIC) + _LENGTH.size
        if len(prefix) < head:
            return None
        (length,) = _LENGTH.unpack_from(prefix, len(MAGIC))
        if length > MAX_ENVELOPE:
            raise WalIntegrityError(f"{where}: damaged WAL object header (length {length})")
        if len(prefix) < head + length:
            return None
        try:
            raw = json.loads(prefix[head : head + length])
            version = int(raw["format_version"])
            if version > FORMAT_VERSION:
                raise WalError(
                    f"{where}: WAL object format {version} is newer than this pgvault reads "
                    f"({FORMAT_VERSION}); upgrade pgvault"
                )
            envelope = cls(
                name=str(raw["name"]),
                cluster=ClusterId.parse(str(raw["cluster"])),
                raw_size=int(raw["raw_size"]),
                sha256=str(raw["sha256"]),
                transforms=tuple(
                    TransformRecord(
                        type=str(t["type"]), params={k: v for k, v in t.items() if k != "type"}
                    )
                    for t in raw["transforms"]
                ),
                pushed_at=datetime.fromisoformat(raw["pushed_at"]),
                host=str(raw.get("host") or ""),
                timeline=None if raw.get("timeline") is None else int(raw["timeline"]),
                segment_size=None if raw.get("segment_size") is None else int(raw["segment_size"]),
                pgvault_version=str(raw.get("pgvault_version") or ""),
                format_version=version,
            )
        except WalError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise WalIntegrityError(f"{where}: damaged WAL object header ({exc!r})") from None
        return envelope, head + length


@attrs.frozen
class StoredWal:
    """One WAL object found by listing the archive."""

    name: WalName
    key: str
    size: int
    modified: datetime | None = None


@attrs.frozen
class StoreOutcome:
    """What storing one WAL file did: ``stored`` it, or found it ``identical`` already there."""

    outcome: str
    key: str
    raw_size: int
    stored_size: int
    sha256: str


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


def _finish_chain(codecs: Sequence[Codec]) -> bytes:
    data = b""
    for codec in codecs:
        data = codec.update(data) + codec.finish()
    return data


def _run_chain(codecs: Sequence[Codec], data: bytes) -> bytes:
    for codec in codecs:
        if not data:
            return b""
        data = codec.update(data)
    return data


@attrs.define
class WalArchive:
    """The WAL archive of vault ``name`` in ``sink``."""

    sink: Sink
    name: str

    # Keys

    @property
    def prefix(self) -> str:
        """Key prefix of the whole archive."""
        return f"{self.name}/wal/"

    def cluster_prefix(self, cluster: ClusterId) -> str:
        """Key prefix of one cluster's WAL."""
        return f"{self.prefix}{cluster.key}/"

    def record_key(self, cluster: ClusterId) -> str:
        """Key of a cluster's record."""
        return f"{self.prefix}clusters/{cluster.key}.json"

    def folder(self, cluster: ClusterId, name: WalName) -> str:
        """Key prefix of the folder ``name`` is stored in."""
        if name.kind is Kind.HISTORY:
            return f"{self.cluster_prefix(cluster)}history/"
        return f"{self.cluster_prefix(cluster)}{name.timeline:08X}{name.log:08X}/"

    def key(self, cluster: ClusterId, name: WalName) -> str:
        """Key of WAL file ``name`` of ``cluster``."""
        return self.folder(cluster, name) + name.text

    def binding(self, cluster: ClusterId, name: WalName) -> ArtifactBinding:
        """What an encrypting stage seals into the object of ``name``."""
        return ArtifactBinding(cluster.binding_id, name.text)

    # Clusters

    def clusters(self) -> list[ClusterRecord]:
        """Every cluster with WAL in this archive, oldest record first."""
        prefix = f"{self.prefix}clusters/"
        found: list[ClusterRecord] = []
        for info in self.sink.list(prefix):
            stem = info.key[len(prefix) :]
            if not stem.endswith(".json") or "/" in stem:
                continue
            try:
                cluster = ClusterId.parse(stem[: -len(".json")])
            except ValueError:
                continue
            record = ClusterRecord.from_json(self.sink.read_bytes(info.key), where=info.key)
            if record.cluster != cluster:
                raise WalIntegrityError(
                    f"{info.key}: the record names {record.cluster}, not the cluster of its name"
                )
            found.append(record)
        return sorted(found, key=lambda r: (r.created_at, r.cluster))

    def register(self, cluster: ClusterId, segment_size: int) -> ClusterRecord:
        """Record ``cluster`` (create-if-absent); return the record the archive holds."""
        record = ClusterRecord(cluster, segment_size, _now())
        key = self.record_key(cluster)
        try:
            self.sink.write_bytes_if_absent(key, record.to_json())
            log.info("WAL archive of %s: first WAL of %s", self.name, cluster)
            return record
        except ObjectExistsError:
            return ClusterRecord.from_json(self.sink.read_bytes(key), where=key)

    # Listing

    def list(
        self, cluster: ClusterId, *, timeline: int | None = None, logs: Iterable[int] | None = None
    ) -> list[StoredWal]:
        """The WAL objects of ``cluster`` in name order, all of them, or those of ``timeline``
        (history files included) in the 4 GiB ``logs`` given (fewer listings)."""
        base = self.cluster_prefix(cluster)
        if timeline is None:
            prefixes = [base]
        elif logs is None:
            prefixes = [f"{base}{timeline:08X}", f"{base}history/"]
        else:
            prefixes = [f"{base}{timeline:08X}{log:08X}/" for log in sorted(set(logs))]
            prefixes.append(f"{base}history/")
        found: list[StoredWal] = []
        for prefix in prefixes:
            for info in self.sink.list(prefix):
                item = self._parse_key(cluster, info.key, info.size, info)
                if item is not None and (timeline is None or _on_timeline(item.name, timeline)):
                    found.append(item)
        return sorted(found, key=lambda s: (s.name, s.name.text))

    def foreign(self, cluster: ClusterId) -> builtins.list[str]:
        """Keys under ``cluster``'s folder that are not WAL objects where they belong."""
        base = self.cluster_prefix(cluster)
        return sorted(
            info.key
            for info in self.sink.list(base)
            if self._parse_key(cluster, info.key, info.size, info) is None
        )

    def _parse_key(self, cluster: ClusterId, key: str, size: int, info: Any) -> StoredWal | None:
        folder, _, leaf = key.rpartition("/")
        try:
            name = WalName.parse(leaf)
        except WalError:
            return None
        if folder + "/" != self.folder(cluster, name):
            return None  # a WAL name in the wrong folder: misplaced, not part of the index
        return StoredWal(name, key, size, getattr(info, "modified", None))

    # Writing

    def store(
        self,
        cluster: ClusterId,
        name: WalName,
        data: bytes,
        transforms: Sequence[Transform],
        *,
        timeline: int | None = None,
        segment_size: int | None = None,
        pgvault_version: str = "",
    ) -> StoreOutcome:
        """Store WAL file ``name`` (raw bytes ``data``) create-if-absent through ``transforms``.

        Returns ``stored``, or ``identical`` when the same bytes were archived under the name
        before (normal after a crash: PostgreSQL asks again). A different file under the name
        raises :class:`WalConflictError` and changes nothing.
        """
        key = self.key(cluster, name)
        digest = hashlib.sha256(data).hexdigest()
        envelope = Envelope(
            name=name.text,
            cluster=cluster,
            raw_size=len(data),
            sha256=digest,
            transforms=tuple(
                TransformRecord(type=t.type_name, params=t.manifest_params()) for t in transforms
            ),
            pushed_at=_now(),
            host=socket.gethostname(),
            timeline=timeline,
            segment_size=segment_size,
            pgvault_version=pgvault_version,
        )
        binding = self.binding(cluster, name)
        codecs = [t.encoder_for(binding) for t in transforms]
        stored = 0
        try:
            with self.sink.open_writer_if_absent(key) as writer:
                head = envelope.encode()
                writer.write(head)
                stored += len(head)
                view = memoryview(data)
                for start in range(0, len(data), CHUNK):
                    out = _run_chain(codecs, bytes(view[start : start + CHUNK]))
                    if out:
                        writer.write(out)
                        stored += len(out)
                tail = _finish_chain(codecs)
                if tail:
                    writer.write(tail)
                    stored += len(tail)
                writer.commit()
        except ObjectExistsError:
            existing = self.envelope(key)
            if existing.sha256 == digest and existing.raw_size == len(data):
                return StoreOutcome("identical", key, len(data), stored, digest)
            raise WalConflictError(
                f"{name}: a different file is already archived under this name in "
                f"{self.sink.describe()} (stored {_iso(existing.pushed_at)}"
                f"{' from host ' + existing.host if existing.host else ''}, sha256 "
                f"{existing.sha256[:16]}…; this file's is {digest[:16]}…); nothing was "
                "overwritten. Is a second server (a promoted standby, a restored copy) archiving "
                "into this vault?"
            ) from None
        return StoreOutcome("stored", key, len(data), stored, digest)

    # Reading

    def envelope(self, key: str) -> Envelope:
        """The envelope of the stored object ``key`` (reads only as far as it)."""
        chunks = self.sink.open_reader(key)
        buffer = b""
        try:
            for chunk in chunks:
                buffer += chunk
                found = Envelope.decode(buffer, where=key)
                if found is not None:
                    return found[0]
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        raise WalIntegrityError(f"{key}: truncated WAL object (its header is incomplete)")

    def read(
        self,
        cluster: ClusterId,
        name: WalName,
        context: DecodeContext,
        sink_chunk: Callable[[bytes], None],
    ) -> Envelope:
        """Decode WAL file ``name`` of ``cluster``, passing its raw bytes to ``sink_chunk`` as
        they come, and check them against the envelope (name, cluster, size, SHA-256).

        Raises ObjectNotFoundError when no object has the name (definitely absent),
        WalIntegrityError when the object is damaged or misplaced (after some bytes may have
        been passed on: the caller writes to a temporary file), SinkError when the sink fails.
        """
        key = self.key(cluster, name)
        chunks: Iterator[bytes] = self.sink.open_reader(key)
        buffer = b""
        envelope: Envelope | None = None
        codecs: list[Codec] = []
        digest = hashlib.sha256()
        produced = 0

        def emit(data: bytes) -> None:
            nonlocal produced
            if not data:
                return
            produced += len(data)
            assert envelope is not None
            if produced > envelope.raw_size:
                raise WalIntegrityError(
                    f"{key}: decodes to more than the {envelope.raw_size} bytes its header says"
                )
            digest.update(data)
            sink_chunk(data)

        try:
            for chunk in chunks:
                if envelope is None:
                    buffer += chunk
                    found = Envelope.decode(buffer, where=key)
                    if found is None:
                        continue
                    envelope, length = found
                    self._check_envelope(envelope, cluster, name, key)
                    codecs = self._decoders(envelope, cluster, name, context, key)
                    chunk, buffer = buffer[length:], b""
                emit(self._decode(codecs, chunk, key))
            if envelope is None:
                raise WalIntegrityError(f"{key}: truncated WAL object (its header is incomplete)")
            emit(self._finish(codecs, key))
        except ObjectNotFoundError:
            raise
        except (WalError, PgVaultError):
            raise
        if produced != envelope.raw_size:
            raise WalIntegrityError(
                f"{key}: decodes to {produced} bytes, its header says {envelope.raw_size} "
                "(truncated or damaged)"
            )
        if digest.hexdigest() != envelope.sha256:
            raise WalIntegrityError(
                f"{key}: sha256 mismatch: the stored object was damaged or altered"
            )
        return envelope

    @staticmethod
    def _check_envelope(envelope: Envelope, cluster: ClusterId, name: WalName, key: str) -> None:
        if envelope.name != name.text or envelope.cluster != cluster:
            raise WalIntegrityError(
                f"{key}: the object is {envelope.name} of {envelope.cluster}, not {name} of "
                f"{cluster}: it was moved or copied there"
            )

    @staticmethod
    def _decoders(
        envelope: Envelope, cluster: ClusterId, name: WalName, context: DecodeContext, key: str
    ) -> builtins.list[Codec]:
        context = attrs.evolve(context, binding=ArtifactBinding(cluster.binding_id, name.text))
        codecs: builtins.list[Codec] = []
        for record in reversed(envelope.transforms):
            cls: type[Transform] = load_component("transform", record.type, key=f"{key} transform")
            codecs.append(cls.decoder(record.params, context))
        return codecs

    @staticmethod
    def _decode(codecs: Sequence[Codec], data: bytes, key: str) -> bytes:
        try:
            return _run_chain(codecs, data)
        except PgVaultError as exc:
            raise _damaged(exc, key) from exc

    @staticmethod
    def _finish(codecs: Sequence[Codec], key: str) -> bytes:
        try:
            return _finish_chain(codecs)
        except PgVaultError as exc:
            raise _damaged(exc, key) from exc

    # Deleting (prune)

    def delete(self, item: StoredWal) -> None:
        """Remove one WAL object (never a history file: the caller's rule, checked here too)."""
        if item.name.kind is Kind.HISTORY:
            raise WalError(f"{item.key}: history files are never removed")
        self.sink.delete(item.key)


def _damaged(exc: PgVaultError, key: str) -> PgVaultError:
    from pgvault.exceptions import DecryptionKeyError

    if isinstance(exc, DecryptionKeyError):
        return exc  # a missing key is not damage: the message says which key is needed
    return WalIntegrityError(f"{key}: cannot decode: {exc}")


def _on_timeline(name: WalName, timeline: int) -> bool:
    return name.kind is Kind.HISTORY or name.timeline == timeline
