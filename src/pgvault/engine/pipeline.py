"""The backup pipeline: source → transforms → digests → sink, concurrently, manifest last.

Each source stream becomes one artifact, flowing through its own chain of stage threads (see
:mod:`pgvault.engine.flow`). Artifacts are committed only once the source has confirmed success,
then the
MD5 sidecar (when asked for), then the manifest: a backup exists only once its manifest does. Any
failure removes what this run stored, so nothing that looks complete is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import version
from typing import Any, Protocol

import attrs
import pluggy

from pgvault.engine.flow import Channel, Flow, feed, through
from pgvault.engine.runlock import run_lock
from pgvault.observability import after_run
from pgvault.pipeline_config import PipelineConfig
from pgvault.plugin.exec_hooks import around as exec_hooks
from pgvault.plugin.manager import call_hook
from pgvault.sinks.api import ObjectWriter
from pgvault.sinks.fanout import Fanout, remove_stored
from pgvault.sources.api import SourceStream
from pgvault.transforms.api import ArtifactBinding
from pgvault.transforms.digest import MD5_SIDECAR, Digests, md5sums_text
from pgvault.vault.contents import Vault
from pgvault.vault.failures import record_failure
from pgvault.vault.manifest import (
    MANIFEST_NAME,
    PARTS_FORMAT,
    ArtifactRecord,
    Manifest,
    TransformRecord,
    new_backup_id,
    utc_now,
)

log = logging.getLogger("pgvault.pipeline")


class Progress(Protocol):
    """Receives byte counts while a backup or restore runs (from several threads)."""

    def advance(self, raw: int = 0, stored: int = 0) -> None:
        """``raw`` source bytes were read and/or ``stored`` bytes were written."""


def pgvault_version() -> str:
    """The installed pgvault version, recorded in manifests."""
    return version("pgvault")


@attrs.define
class _Artifact:
    stream: SourceStream
    path: str
    digests: Digests
    writer: ObjectWriter | None = None
    raw_size: int = 0
    lock: threading.Lock = attrs.field(factory=threading.Lock)
    params: list[dict[str, Any]] = attrs.field(factory=list)
    """Each stage's per-artifact public params, in chain order, recorded when the stage ends
    (its encoder is then let go)."""

    def count_raw(self, n: int) -> None:
        with self.lock:
            self.raw_size += n


def run(
    config: PipelineConfig,
    *,
    kind: str = "scheduled",
    labels: dict[str, str] | None = None,
    progress: Progress | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
) -> Manifest:
    """Take one backup as ``config`` describes and return its manifest.

    The backup is complete, durable and listed when this returns. On failure it raises the cause
    (a :class:`~pgvault.exceptions.PgVaultError` for every expected failure) and leaves no manifest;
    the objects it had stored are removed. While another run of the same vault and ``kind`` is
    going it raises :class:`~pgvault.exceptions.RunLockedError` naming it (see
    :mod:`pgvault.engine.runlock`).
    """
    started = utc_now()
    backup_id = new_backup_id(started)
    vault = Vault(config.sink, config.name)
    # Several destinations (issue 15): the stored bytes fan out to each; see pgvault.sinks.fanout.
    targets = Fanout(config.destinations, backup_id)
    hooks: dict[str, Any] = {"pm": plugin_manager}
    call_hook("pgvault_backup_started", config=config, backup_id=backup_id, kind=kind, **hooks)
    log.info("backup %s of %s started: %s", backup_id, config.name, config.source.describe())
    try:
        # One run of a pipeline (and kind) at a time, across processes and hosts: the lock is
        # held from before the source starts until the manifest is written.
        # [[hook]] commands speak for the schedule, as notifiers do: not for a safety backup.
        commands = (
            exec_hooks(config, "backup", backup_id=backup_id)
            if kind == "scheduled"
            else contextlib.nullcontext()
        )
        with run_lock(config, backup_id=backup_id, kind=kind, started=started), commands:
            manifest = _run(
                config, vault, targets, backup_id, started, kind, labels or {}, progress
            )
    except BaseException as exc:
        remove_stored(targets, vault.backup_prefix(backup_id))
        if kind == "scheduled":  # failures are in the vault too, for reports (issue 16)
            record_failure(vault, backup_id, kind, started, exc)
        after_run(
            config,
            backup_id=backup_id,
            kind=kind,
            started=started,
            finished=utc_now(),
            error=exc,
        )
        call_hook(
            "pgvault_backup_failed",
            config=config,
            backup_id=backup_id,
            error=exc,
            kind=kind,
            **hooks,
        )
        raise
    # A destination that left the run holds part of the backup at most: clean it (it lags).
    remove_stored([f.destination for f in targets.failed], vault.backup_prefix(backup_id))
    # One structured record (and the metrics file) per run; see pgvault.observability for why
    # this is a direct call rather than a hook.
    after_run(
        config,
        backup_id=backup_id,
        kind=kind,
        started=started,
        finished=manifest.finished_at,
        manifest=manifest,
    )
    call_hook("pgvault_backup_succeeded", config=config, manifest=manifest, **hooks)
    return manifest


def _run(
    config: PipelineConfig,
    vault: Vault,
    targets: Fanout,
    backup_id: str,
    started: datetime,
    kind: str,
    labels: dict[str, str],
    progress: Progress | None,
) -> Manifest:
    suffix = "".join(t.suffix for t in config.transforms)
    artifacts: list[_Artifact] = []
    with config.source.start_for(config) as source_run:
        flow = Flow()
        try:
            for stream in source_run.streams:
                art = _Artifact(stream, stream.name + suffix, Digests(config.checksums))
                art.writer = targets.open_writer(vault.artifact_key(backup_id, art.path))
                artifacts.append(art)
                _start_chain(flow, config, backup_id, art, progress)
            # Stopping the source kills its processes, which unblocks a stage that waits on
            # their pipes: exactly what an abort needs.
            flow.wait(on_abort=source_run.stop)
        except BaseException as exc:
            flow.abort(exc)
            for art in artifacts:
                if art.writer is not None:
                    art.writer.abort()
            raise
        metadata = source_run.metadata()

    for art in artifacts:
        assert art.writer is not None
        art.writer.commit()

    checksums = config.checksums
    if "md5" in checksums:
        sidecar = md5sums_text((a.digests.hexdigests()["md5"], a.path) for a in artifacts)
        targets.write_index(vault.artifact_key(backup_id, MD5_SIDECAR), sidecar.encode())

    manifest = Manifest(
        backup_id=backup_id,
        name=config.name,
        started_at=started,
        finished_at=utc_now(),
        pgvault_version=pgvault_version(),
        source={"type": config.source.type_name, **metadata},
        transforms=tuple(
            TransformRecord(type=t.type_name, params=t.manifest_params()) for t in config.transforms
        ),
        artifacts=tuple(
            ArtifactRecord(
                path=a.path,
                stream=a.stream.name,
                role=a.stream.role,
                size=a.digests.size,
                raw_size=a.raw_size,
                digests=a.digests.hexdigests(),
                transform_params=_artifact_params(a),
                part=a.stream.part,
            )
            for a in artifacts
        ),
        checksums=checksums,
        kind=kind,
        labels=labels,
        # A backup of parts (a set, or many databases) must be refused by a pgvault that would
        # read one part as the whole backup; every other manifest keeps the format it had.
        format_version=PARTS_FORMAT if any(a.stream.part for a in artifacts) else 1,
    )
    # Last, on every destination, once every artifact is committed on each: the backup exists.
    targets.write_index(vault.artifact_key(backup_id, MANIFEST_NAME), manifest.to_json().encode())
    return manifest


def _start_chain(
    flow: Flow,
    config: PipelineConfig,
    backup_id: str,
    art: _Artifact,
    progress: Progress | None,
) -> None:
    """Start the stage threads of one artifact: feed, one per transform, then store."""
    binding = ArtifactBinding(backup_id, art.path)
    first = flow.channel()
    count_raw: Callable[[int], None] = art.count_raw
    if progress is not None:
        report = progress

        def count_raw(n: int) -> None:
            art.count_raw(n)
            report.advance(raw=n)

    flow.spawn(f"read-{art.stream.name}", lambda: feed(art.stream.chunks, first, count_raw))
    current: Channel = first
    for i, transform in enumerate(config.transforms):
        nxt = flow.channel()
        art.params.append({})

        def stage(
            transform: Any = transform, inp: Channel = current, out: Channel = nxt, i: int = i
        ) -> None:
            # The encoder is made when the first chunk comes and dropped when the stage ends:
            # a many-database backup hands the pipeline a hundred streams that wait their turn,
            # and a hundred zstd contexts (several MiB each), alive from the start or kept to
            # the end, were most of its memory.
            encoder = _LazyEncoder(transform, binding)
            through(encoder, inp, out)
            art.params[i] = encoder.artifact_params()

        flow.spawn(f"{transform.type_name}-{art.stream.name}", stage)
        current = nxt
    last = current

    def store() -> None:
        assert art.writer is not None
        for chunk in last:
            art.digests.update(chunk)
            art.writer.write(chunk)
            if progress is not None:
                progress.advance(stored=len(chunk))
        # Durable now, while other streams still flow: the commits, which must wait for the
        # source's success, then only publish (a hundred databases' fsyncs, in a row at the
        # end, were a tail of 0.2-0.4 s with the cores idle).
        art.writer.seal()

    flow.spawn(f"store-{art.stream.name}", store)


class _LazyEncoder:
    """A stage's encoder, made on first use. Told where the artifact goes, an encrypting stage
    seals that in: its decoder then refuses the artifact if it is later moved to another backup
    or swapped with a sibling."""

    def __init__(self, transform: Any, binding: ArtifactBinding) -> None:
        self._transform = transform
        self._binding = binding
        self._codec: Any = None

    def _get(self) -> Any:
        if self._codec is None:
            self._codec = self._transform.encoder_for(self._binding)
        return self._codec

    def update(self, data: bytes) -> bytes:
        result: bytes = self._get().update(data)
        return result

    def finish(self) -> bytes:
        result: bytes = self._get().finish()
        return result

    def artifact_params(self) -> dict[str, Any]:
        """The encoder's optional per-artifact params (an encryption salt), then let it go."""
        codec, self._codec = self._get(), None
        return dict(codec.artifact_params()) if hasattr(codec, "artifact_params") else {}


def _artifact_params(art: _Artifact) -> tuple[dict[str, Any], ...]:
    """Per-artifact public params of each stage (from encoders with the optional
    ``artifact_params()``); ``()`` when no stage has any."""
    params = tuple(art.params)
    return params if any(params) else ()
