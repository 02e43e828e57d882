"""The vault: what one sink holds for one pipeline ``name``, read from the sink itself.

Layout under the sink root (the same on every sink)::

    <name>/backups/<backup_id>/<artifact>...      data, written first
    <name>/backups/<backup_id>/MD5SUMS            when md5 was asked for
    <name>/backups/<backup_id>/manifest.json      written last: the backup exists from here on

``list``, ``show``, ``verify`` and ``restore`` all start from here and never from a local memory of
what was written, so a vault restored onto a new machine with nothing but its config (or its sink
location) is fully usable.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.exceptions import (
    BackupNotFoundError,
    DecryptionKeyError,
    IntegrityError,
    ManifestError,
    ObjectNotFoundError,
    PgVaultError,
    TransformError,
)
from pgvault.flow import Aborted, Channel, Flow, through
from pgvault.manifest import MANIFEST_NAME, Manifest
from pgvault.plugin.components import load_component
from pgvault.sinks.api import Sink
from pgvault.transforms.api import ArtifactBinding, Codec, DecodeContext, Transform
from pgvault.transforms.digest import Digests

if TYPE_CHECKING:
    from pgvault.config import PipelineConfig

log = logging.getLogger("pgvault.vault")


@attrs.frozen
class VerifyProblem:
    """One artifact that failed verification, and why."""

    artifact: str
    message: str

    def __str__(self) -> str:
        return f"{self.artifact}: {self.message}"


@attrs.frozen
class VerifyReport:
    """The outcome of verifying one backup."""

    backup_id: str
    deep: bool
    checked: tuple[str, ...]
    problems: tuple[VerifyProblem, ...]
    details: dict[str, str] = attrs.field(factory=dict)
    """Per-artifact notes from deep checks (e.g. ``"pg_restore --list: 42 entries"``)."""

    @property
    def ok(self) -> bool:
        """Whether every artifact matched."""
        return not self.problems


@attrs.define
class Vault:
    """The backups of pipeline ``name`` stored in ``sink``."""

    sink: Sink
    name: str

    @classmethod
    def from_config(cls, config: PipelineConfig) -> Vault:
        """The vault a pipeline config writes to."""
        return cls(config.sink, config.name)

    # Keys

    def backup_prefix(self, backup_id: str) -> str:
        """Key prefix of one backup's folder."""
        return f"{self.name}/backups/{backup_id}/"

    def artifact_key(self, backup_id: str, path: str) -> str:
        """Key of one stored file of a backup."""
        return self.backup_prefix(backup_id) + path

    # Reading

    def _ids(self) -> dict[str, set[str]]:
        """Every backup folder id, with the names of the files in it."""
        prefix = f"{self.name}/backups/"
        found: dict[str, set[str]] = {}
        for info in self.sink.list(prefix):
            rest = info.key[len(prefix) :]
            backup_id, _, fname = rest.partition("/")
            if fname:
                found.setdefault(backup_id, set()).add(fname)
        return found

    def backups(self) -> list[Manifest]:
        """Complete backups (those with a manifest), newest first."""
        return latest_first(
            [
                self._read_manifest(backup_id)
                for backup_id, files in self._ids().items()
                if MANIFEST_NAME in files
            ]
        )

    def incomplete(self) -> list[str]:
        """Ids of backup folders without a manifest: runs in progress, or failed runs' leftovers.

        Folders that hold only unfinished writes (a killed run's temporary file or multipart
        upload, an empty folder) count too: prune must see them to clean them.
        """
        prefix = f"{self.name}/backups/"
        folders = self._ids()
        ids = {i for i, files in folders.items() if MANIFEST_NAME not in files}
        complete = {i for i, files in folders.items() if MANIFEST_NAME in files}
        for name in self.sink.list_partials(prefix):
            backup_id = name[len(prefix) :].partition("/")[0] if name.startswith(prefix) else ""
            if backup_id and backup_id not in complete:
                ids.add(backup_id)
        return sorted(ids)

    def manifest(self, ref: str) -> Manifest:
        """The manifest of backup ``ref``: an id, a unique id prefix, or ``latest``."""
        if ref == "latest":
            backups = self.backups()
            if not backups:
                raise BackupNotFoundError(
                    f"vault {self.name!r} in {self.sink.describe()} has no complete backup"
                )
            return backups[0]
        folders = self._ids()  # one listing: on a remote sink each is a round trip
        ids = [i for i, files in folders.items() if MANIFEST_NAME in files]
        if ref in ids:
            return self._read_manifest(ref)
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return self._read_manifest(matches[0])
        if len(matches) > 1:
            raise BackupNotFoundError(
                f"backup id {ref!r} is ambiguous: {', '.join(sorted(matches))}"
            )
        incomplete = (
            " (it is incomplete: its run failed or is still going)" if ref in folders else ""
        )
        raise BackupNotFoundError(
            f"no complete backup {ref!r} in vault {self.name!r} at "
            f"{self.sink.describe()}{incomplete}"
        )

    def manifest_before(self, when: datetime) -> Manifest:
        """The newest complete backup started at or before ``when`` (naive means UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        for manifest in self.backups():
            if manifest.started_at <= when:
                return manifest
        raise BackupNotFoundError(
            f"no complete backup in vault {self.name!r} started at or before "
            f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        )

    def _read_manifest(self, backup_id: str) -> Manifest:
        key = self.artifact_key(backup_id, MANIFEST_NAME)
        manifest = Manifest.from_json(self.sink.read_bytes(key), where=key)
        if manifest.backup_id != backup_id:
            # Decoding binds each artifact to manifest.backup_id: it must be where it was found.
            raise ManifestError(
                f"{key}: the manifest names backup {manifest.backup_id}, but is in the folder of "
                f"backup {backup_id} (it was moved or edited)"
            )
        return manifest

    def write_manifest(self, manifest: Manifest) -> None:
        """Commit ``manifest``: the last write of a backup, which makes it exist."""
        key = self.artifact_key(manifest.backup_id, MANIFEST_NAME)
        self.sink.write_bytes(key, manifest.to_json().encode())

    def delete_backup_objects(self, backup_id: str) -> None:
        """Remove a backup's folder, manifest first so no manifest ever points at missing data."""
        prefix = self.backup_prefix(backup_id)
        keys = [info.key for info in self.sink.list(prefix)]
        manifest_key = prefix + MANIFEST_NAME
        if manifest_key in keys:
            self.sink.delete(manifest_key)
        for key in keys:
            if key != manifest_key:
                self.sink.delete(key)

    # Streaming artifacts back

    def read_stored(self, manifest: Manifest, path: str) -> Iterator[bytes]:
        """The stored bytes of artifact ``path``, unchecked."""
        return self.sink.open_reader(self.artifact_key(manifest.backup_id, path))

    def decoded(
        self, manifest: Manifest, path: str, context: DecodeContext | None = None
    ) -> Generator[bytes, None, None]:
        """The original bytes of artifact ``path``, decoded through the recorded chain.

        Reading, each decoding stage and the caller overlap in threads. The stored bytes' digests
        and sizes are checked as they stream: if they differ from the manifest, the iterator raises
        :class:`IntegrityError` after the last chunk, so a consumer (a restore) fails rather than
        silently trusting corrupt data. The decoders are told which artifact of which backup they
        read, so an encrypted artifact sealed for another one (moved from an older backup, or
        swapped with a sibling, manifest rewritten to match) is refused before any byte of it.
        """
        art = manifest.artifact(path)
        # The backup id is the folder's (see _read_manifest), not merely what the manifest says.
        binding = ArtifactBinding(manifest.backup_id, art.path)
        context = attrs.evolve(context or DecodeContext(), binding=binding)
        decoders = self.decoders(manifest, context)
        flow = Flow()
        stored = flow.channel()
        digests = Digests(manifest.checksums)

        def read() -> None:
            try:
                chunks = self.read_stored(manifest, path)
                for chunk in chunks:
                    digests.update(chunk)
                    stored.put(chunk)
            except ObjectNotFoundError:
                raise IntegrityError(
                    f"backup {manifest.backup_id}: artifact {path}: missing", artifact=path
                ) from None
            _check_digests(manifest, art.path, art.size, art.digests, digests)
            stored.close()

        flow.spawn(f"fetch-{path}", read)
        current: Channel = stored
        for i, codec in enumerate(decoders):
            nxt = flow.channel()
            flow.spawn(
                f"decode{i}-{path}",
                lambda codec=codec, inp=current, out=nxt: _decode(codec, inp, out, path),  # type: ignore[misc]
            )
            current = nxt
        raw = 0
        try:
            for chunk in current:
                raw += len(chunk)
                yield chunk
            flow.wait()
        except Aborted:
            flow.wait()  # raises the stage's real error
            raise
        finally:
            flow.abort()
        if raw != art.raw_size:
            raise IntegrityError(
                f"backup {manifest.backup_id}: artifact {path}: decodes to {raw} bytes, "
                f"the manifest recorded {art.raw_size}",
                artifact=path,
            )

    def decoders(self, manifest: Manifest, context: DecodeContext) -> list[Codec]:
        """Decoders for the manifest's chain, in the order they apply on the way back.

        Building them checks that the keys the chain needs are at hand, so calling this first
        lets a restore fail before it touches its target.
        """
        codecs: list[Codec] = []
        for record in reversed(manifest.transforms):
            cls: type[Transform] = load_component(
                "transform", record.type, key=f"backup {manifest.backup_id} transform"
            )
            try:
                codecs.append(cls.decoder(record.params, context))
            except DecryptionKeyError as exc:
                raise exc.for_backup(manifest.backup_id) from None
        return codecs

    def verify(
        self, manifest: Manifest, *, deep: bool = False, context: DecodeContext | None = None
    ) -> VerifyReport:
        """Re-read every artifact and compare sizes and digests with the manifest.

        ``deep`` also decodes the whole chain (proving the keys and formats work) and lets the
        source check its own format (for pg_dump archives, ``pg_restore --list``).
        """
        problems: list[VerifyProblem] = []
        details: dict[str, str] = {}
        source_cls = _source_class(manifest) if deep else None
        if deep:
            try:
                # A missing or wrong key concerns every artifact alike: report it once.
                self.decoders(manifest, context or DecodeContext())
            except PgVaultError as exc:
                return VerifyReport(
                    backup_id=manifest.backup_id,
                    deep=deep,
                    checked=tuple(a.path for a in manifest.artifacts),
                    problems=(VerifyProblem("(every artifact)", str(exc)),),
                )
        for art in manifest.artifacts:
            try:
                if deep:
                    chunks = self.decoded(manifest, art.path, context)
                    note = None
                    if source_cls:
                        try:
                            note = source_cls.check_stream(manifest.source, art.role, chunks)
                        except PgVaultError as failure:
                            raise_if_damaged(chunks, failure)
                            raise
                    for _ in chunks:  # drain what the check left unread, checking digests
                        pass
                    if note:
                        details[art.path] = note
                else:
                    digests = Digests(manifest.checksums)
                    for chunk in self.read_stored(manifest, art.path):
                        digests.update(chunk)
                    _check_digests(manifest, art.path, art.size, art.digests, digests)
            except ObjectNotFoundError:
                problems.append(VerifyProblem(art.path, "missing"))
            except PgVaultError as exc:
                problems.append(VerifyProblem(art.path, _strip(str(exc), manifest, art.path)))
        return VerifyReport(
            backup_id=manifest.backup_id,
            deep=deep,
            checked=tuple(a.path for a in manifest.artifacts),
            problems=tuple(problems),
            details=details,
        )


def raise_if_damaged(chunks: Iterator[bytes], failure: PgVaultError) -> None:
    """Read what a consumer that failed with ``failure`` left of ``chunks`` (from
    :meth:`Vault.decoded`) to the end, where the stored digests are checked; raise the damage
    found there, from ``failure``. Return if the artifact is whole.

    A damaged unencrypted artifact often makes its consumer (pg_restore, tar, pg_restore --list)
    fail on garbage before the stream's end, where the digest mismatch would have been seen. "The
    backup is damaged" and "the target refused it" call for different actions on a bad day, so
    the rest is read first: it costs at most the rest of one artifact, and only on a failure.
    """
    if isinstance(failure, (IntegrityError, TransformError)):
        return  # the failure is the stream's own verdict on the artifact: nothing to tell apart
    # INFO, not WARNING: the error that follows is the one line a user needs; this says, under
    # --verbose, why a failed restore still reads on.
    log.info(
        "%s; reading the rest of the artifact to tell a damaged backup from another problem",
        failure,
    )
    try:
        for _ in chunks:
            pass
    except (IntegrityError, TransformError) as damage:
        raise damage from failure
    except PgVaultError:
        # Storage gone while checking: the damage is unproven; the caller reports ``failure``.
        return


def _strip(message: str, manifest: Manifest, path: str) -> str:
    """Drop a leading ``backup X: artifact P:`` or ``P:`` so a report line names P once."""
    for prefix in (f"backup {manifest.backup_id}: artifact {path}: ", f"{path}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _decode(codec: Codec, inp: Channel, out: Channel, path: str) -> None:
    try:
        through(codec, inp, out)
    except PgVaultError as exc:
        if getattr(exc, "artifact", None) is None and hasattr(exc, "artifact"):
            exc.artifact = path
            exc.args = (f"{path}: {exc.args[0]}",)
        raise


def _check_digests(
    manifest: Manifest,
    path: str,
    size: int,
    expected: dict[str, str],
    digests: Digests,
) -> None:
    if digests.size != size:
        raise IntegrityError(
            f"backup {manifest.backup_id}: artifact {path}: {digests.size} bytes stored, "
            f"the manifest recorded {size}",
            artifact=path,
        )
    actual = digests.hexdigests()
    for algo, want in expected.items():
        if algo in actual and actual[algo] != want:
            raise IntegrityError(
                f"backup {manifest.backup_id}: artifact {path}: {algo} mismatch "
                f"(the stored bytes differ from what was backed up)",
                artifact=path,
            )


def _source_class(manifest: Manifest) -> Any:
    try:
        return load_component(
            "source", manifest.source_type, key=f"backup {manifest.backup_id} source"
        )
    except PgVaultError:
        return None


def latest_first(manifests: Sequence[Manifest]) -> list[Manifest]:
    """``manifests`` sorted newest first (by start time, then id)."""
    return sorted(manifests, key=lambda m: (m.started_at, m.backup_id), reverse=True)
