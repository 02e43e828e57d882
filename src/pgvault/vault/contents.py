"""The vault: what one sink holds for one pipeline ``name``, read from the sink itself.

Layout under the sink root (the same on every sink)::

    <name>/backups/<backup_id>/<artifact>...      data, written first
    <name>/backups/<backup_id>/MD5SUMS            when md5 was asked for
    <name>/backups/<backup_id>/manifest.json      written last: the backup exists from here on

``list``, ``show``, ``verify`` and ``restore`` all start from here and never from a local memory of
what was written, so a vault restored onto a new machine with nothing but its config (or its sink
location) is fully usable.

Whoever can write to the sink can write anything into it, so :meth:`Vault.contents` reads every
manifest as untrusted input: one that cannot be used (truncated, not JSON, of an unknown format,
listing no artifacts, archived out of reach) is reported as a :class:`DamagedBackup` next to the
good ones, never an error that hides the rest. ``latest`` is the newest of the pipeline's own
runs (``kind = "scheduled"``) that is not future-dated (see
:data:`~pgvault.vault.manifest.CLOCK_TOLERANCE`); safety backups and future-dated ones are reached
by
id.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.engine.flow import Aborted, Channel, Flow, through
from pgvault.exceptions import (
    BackupNotFoundError,
    DecryptionKeyError,
    IntegrityError,
    ManifestError,
    ObjectArchivedError,
    ObjectNotFoundError,
    PgVaultError,
    TransformError,
)
from pgvault.plugin.components import load_component
from pgvault.sinks.api import ObjectInfo, Sink
from pgvault.transforms.api import ArtifactBinding, Codec, DecodeContext, Transform
from pgvault.transforms.digest import MD5_SIDECAR, Digests
from pgvault.vault.manifest import MANIFEST_NAME, Manifest, future_dated, id_time
from pgvault.vault.parts import part_view

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

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
    archived: tuple[str, ...] = ()
    """Artifacts in an archive storage class, checked against the listing's sizes only: their
    digests cannot be re-read until they are restored (a shallow verify)."""

    @property
    def ok(self) -> bool:
        """Whether every artifact matched."""
        return not self.problems


@attrs.frozen
class DamagedBackup:
    """A backup folder whose manifest cannot be used, and why.

    Unreadable, empty, not JSON, of a format this pgvault does not know, listing no artifacts,
    naming another backup, or in an archive storage class. It is never ``latest``, is reported by
    ``list``, ``verify --all`` and ``check``, and ``prune`` leaves it alone for a person to look at.
    """

    backup_id: str
    key: str
    """The manifest's key in the sink."""
    reason: str

    def __str__(self) -> str:
        return f"backup {self.backup_id}: {self.reason}"


@attrs.frozen
class VaultContents:
    """Everything a vault holds, from one listing: usable backups, damaged ones, incomplete ones.

    ``now`` is the clock the contents were judged by: a backup dated beyond it plus
    :data:`~pgvault.vault.manifest.CLOCK_TOLERANCE` is future-dated.
    """

    now: datetime
    backups: tuple[Manifest, ...] = ()
    """Every readable backup of every kind, newest first, future-dated ones included."""
    damaged: tuple[DamagedBackup, ...] = ()
    incomplete: tuple[str, ...] = ()
    """Ids of folders without a manifest."""

    def is_future(self, manifest: Manifest) -> bool:
        """Whether ``manifest`` is dated beyond ``now`` plus the tolerance."""
        return future_dated(manifest.backup_id, manifest.started_at, self.now)

    @property
    def future(self) -> tuple[Manifest, ...]:
        """Future-dated backups: listed and restorable by id, but never counted or preferred."""
        return tuple(m for m in self.backups if self.is_future(m))

    @property
    def scheduled(self) -> tuple[Manifest, ...]:
        """The pipeline's own runs that count (``kind = "scheduled"``, not future-dated), newest
        first: what ``latest``, ``check`` and the ``pgvault_backups`` metric count."""
        return tuple(m for m in self.backups if m.kind == "scheduled" and not self.is_future(m))

    @property
    def latest(self) -> Manifest | None:
        """The newest of :attr:`scheduled`, or None."""
        return self.scheduled[0] if self.scheduled else None


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

    def _ids(self, listing: Iterable[ObjectInfo] | None = None) -> dict[str, set[str]]:
        """Every backup folder id, with the names of the files in it."""
        prefix = f"{self.name}/backups/"
        found: dict[str, set[str]] = {}
        for info in self.sink.list(prefix) if listing is None else listing:
            rest = info.key[len(prefix) :]
            backup_id, _, fname = rest.partition("/")
            if fname:
                found.setdefault(backup_id, set()).add(fname)
        return found

    def contents(
        self, now: datetime | None = None, *, listing: Iterable[ObjectInfo] | None = None
    ) -> VaultContents:
        """Every backup folder, read once: good manifests, damaged ones, folders without one.

        A manifest that cannot be used is reported in ``damaged``, never raised: one bad object
        must not hide the good backups. A sink that cannot be reached still raises SinkError.
        ``listing`` is the sink's listing of ``<name>/backups/`` when the caller already has it
        (it is not listed again).
        """
        now = now or datetime.now(UTC)
        good: list[Manifest] = []
        damaged: list[DamagedBackup] = []
        incomplete: list[str] = []
        for backup_id, files in sorted(self._ids(listing).items()):
            if MANIFEST_NAME not in files:
                incomplete.append(backup_id)
                continue
            key = self.artifact_key(backup_id, MANIFEST_NAME)
            try:
                good.append(self._read_manifest(backup_id))
            except ObjectNotFoundError:
                continue  # removed since the listing (a prune running now): it is gone
            except (ManifestError, ObjectArchivedError) as exc:
                damaged.append(DamagedBackup(backup_id, key, _without(str(exc), key)))
        return VaultContents(now, tuple(latest_first(good)), tuple(damaged), tuple(incomplete))

    def backups(self) -> list[Manifest]:
        """Complete, readable backups of every kind, newest first (see :meth:`contents` for the
        damaged ones, which this leaves out)."""
        return list(self.contents().backups)

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
            return self._latest(self.contents())
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

    def _latest(self, contents: VaultContents) -> Manifest:
        """``latest``: the newest scheduled, not future-dated backup; says what it passed over."""
        chosen = contents.latest
        if chosen is None:
            text = f"vault {self.name!r} in {self.sink.describe()} has no complete backup"
            future = contents.future
            others = [m for m in contents.backups if m.kind != "scheduled" and m not in future]
            if contents.backups:
                text += " of the pipeline's schedule"
            if future:
                verb = "is" if len(future) == 1 else "are"
                text += (
                    f"; {_ids_text(future)} dated in the future (a clock ahead?) {verb} never "
                    "'latest': give an id"
                )
            if others:
                text += f"; {others[0].kind} backups such as {others[0].backup_id} only by id"
            if contents.damaged:
                worst = contents.damaged[-1]  # ids sort by time: the newest damaged one
                more = len(contents.damaged) - 1
                text += f"; {worst.key}: {worst.reason}" + (
                    f" (and {more} more damaged: see pgvault list)" if more else ""
                )
            raise BackupNotFoundError(text)
        for damaged in contents.damaged:
            when = id_time(damaged.backup_id)
            if when is None or when > chosen.started_at:
                log.warning("skipping %s; latest is %s", damaged, chosen.backup_id)
        for ahead in contents.future:
            log.warning(
                "skipping backup %s, dated in the future (%s UTC; a clock ahead?); latest is %s",
                ahead.backup_id,
                f"{ahead.started_at.astimezone(UTC):%Y-%m-%d %H:%M}",
                chosen.backup_id,
            )
        return chosen

    def manifest_before(self, when: datetime) -> Manifest:
        """The newest of the pipeline's own backups (``scheduled``, not future-dated) started at
        or before ``when`` (naive means UTC)."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        for manifest in self.contents().scheduled:
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
            check_digests(manifest, art.path, art.size, art.digests, digests)
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
        archived: list[str] = []
        listed_sizes: dict[str, int] | None = None
        prefix = self.backup_prefix(manifest.backup_id)

        def listing() -> dict[str, int]:
            return {i.key[len(prefix) :]: i.size for i in self.sink.list(prefix)}

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
                    # A part's artifact is checked as its own source's format (a set's database
                    # dump by pg_dump's rules, its files by the files source's).
                    check_cls, metadata = source_cls, manifest.source
                    if deep and art.part:
                        view = part_view(manifest, art.part)
                        check_cls, metadata = _source_class(view), view.source
                    if check_cls:
                        try:
                            note = check_cls.check_stream(metadata, art.role, chunks)
                        except PgVaultError as failure:
                            raise_if_damaged(chunks, failure)
                            raise
                    for _ in chunks:  # drain what the check left unread, checking digests
                        pass
                    if note:
                        details[art.path] = note
                else:
                    digests = Digests(manifest.checksums)
                    try:
                        for chunk in self.read_stored(manifest, art.path):
                            digests.update(chunk)
                    except ObjectArchivedError as exc:
                        # The listing still knows its size: check that much, and say the rest.
                        if listed_sizes is None:
                            listed_sizes = listing()  # one listing for every archived artifact
                        size = listed_sizes.get(art.path)
                        if size is None:
                            raise
                        if size != art.size:
                            raise IntegrityError(
                                f"{size} bytes stored, the manifest recorded {art.size}",
                                artifact=art.path,
                            ) from None
                        where = f"in {exc.storage_class}" if exc.storage_class else "archived"
                        archived.append(art.path)
                        details[art.path] = (
                            f"stored {where}: its size matches the listing; its digests cannot "
                            "be re-read until it is restored (thawed)"
                        )
                        continue
                    check_digests(manifest, art.path, art.size, art.digests, digests)
            except ObjectNotFoundError:
                problems.append(VerifyProblem(art.path, "missing"))
            except PgVaultError as exc:
                problems.append(VerifyProblem(art.path, _strip(str(exc), manifest, art.path)))
        if "md5" in manifest.checksums:
            problems += self._md5sums_problems(manifest)
        return VerifyReport(
            backup_id=manifest.backup_id,
            deep=deep,
            checked=tuple(a.path for a in manifest.artifacts),
            problems=tuple(problems),
            details=details,
            archived=tuple(archived),
        )

    def _md5sums_problems(self, manifest: Manifest) -> list[VerifyProblem]:
        """``MD5SUMS`` must exist when md5 was asked for, and agree with the manifest: it is what
        ``md5sum -c`` (and whoever relies on it instead of pgvault) trusts."""
        key = self.artifact_key(manifest.backup_id, MD5_SIDECAR)
        try:
            text = self.sink.read_bytes(key).decode("utf-8", errors="replace")
        except ObjectNotFoundError:
            return [VerifyProblem(MD5_SIDECAR, "missing (the backup's checksums include md5)")]
        except PgVaultError as exc:
            return [VerifyProblem(MD5_SIDECAR, str(exc))]
        listed: dict[str, str] = {}
        for line in text.splitlines():
            digest, sep, name = line.partition("  ")
            if sep:
                listed[name] = digest.strip().lower()
        problems = []
        for art in manifest.artifacts:
            want = art.digests.get("md5")
            if want is None:
                continue
            if art.path not in listed:
                problems.append(VerifyProblem(MD5_SIDECAR, f"has no line for {art.path}"))
            elif listed[art.path] != want:
                problems.append(
                    VerifyProblem(MD5_SIDECAR, f"the md5 of {art.path} differs from the manifest")
                )
        return problems


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


def _without(message: str, key: str) -> str:
    """``message`` without a leading ``<key>: ``, so a line that names the key names it once."""
    return message[len(key) + 2 :] if message.startswith(f"{key}: ") else message


def _ids_text(manifests: Sequence[Manifest]) -> str:
    ids = [m.backup_id for m in manifests]
    return "backup " + ids[0] if len(ids) == 1 else f"{len(ids)} backups ({', '.join(ids[:3])})"


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


def check_digests(
    manifest: Manifest,
    path: str,
    size: int,
    expected: dict[str, str],
    digests: Digests,
) -> None:
    """Raise :class:`IntegrityError` unless ``digests`` (of the bytes read of artifact ``path``)
    match the ``size`` and ``expected`` digests ``manifest`` recorded for it."""
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
