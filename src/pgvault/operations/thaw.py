"""Thawing: bringing a backup in an archive storage class (S3 GLACIER, DEEP_ARCHIVE) back to
where it can be read, for ``pgvault thaw``, ``restore --thaw`` and ``verify --archived thaw``.

A thaw asks the store for a temporary readable copy of each archived artifact (S3
RestoreObject, for ``days``, at a ``speed``: Standard, Bulk, Expedited) and says how long that
takes; asking again while it is under way changes nothing and reports where it stands. The
artifacts stay in their class: a thaw is not a tier move, and when the copy expires they are
archived as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import attrs

from pgvault.exceptions import RestoreError
from pgvault.sinks.destinations import Destination
from pgvault.vault.manifest import Manifest

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.restore")

Speed = Literal["Standard", "Bulk", "Expedited"]


@attrs.frozen
class ThawReport:
    """Where each artifact of one backup at one destination stands."""

    backup_id: str
    destination: str
    states: dict[str, str]
    """Artifact path to ``hot``, ``archived``, ``thawing`` or ``thawed``."""
    storage_class: str | None = None
    """The archive class of the archived artifacts (None: none is archived)."""
    wait: str | None = None
    """How long the requested restores take, in words."""

    @property
    def ready(self) -> bool:
        """Whether every artifact can be read now."""
        return all(s in ("hot", "thawed") for s in self.states.values())

    def describe(self) -> str:
        """One line for the terminal."""
        if not self.storage_class:
            return f"backup {self.backup_id} at {self.destination!r} is not archived: readable now"
        if self.ready:
            return (
                f"backup {self.backup_id} at {self.destination!r}: thawed from "
                f"{self.storage_class}, readable now"
            )
        waiting = sum(1 for s in self.states.values() if s not in ("hot", "thawed"))
        if "archived" in self.states.values():
            return (
                f"backup {self.backup_id} at {self.destination!r}: {waiting} artifact(s) in "
                f"{self.storage_class}, no retrieval requested ({self.wait}): run pgvault thaw "
                "CONFIG ID to request it"
            )
        return (
            f"backup {self.backup_id} at {self.destination!r}: retrieval of {waiting} artifact(s) "
            f"from {self.storage_class} requested, not readable yet ({self.wait}); run this "
            "again to see where it stands, then restore"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {**attrs.asdict(self), "ready": self.ready}


def thaw(
    dest: Destination,
    vault_name: str,
    manifest: Manifest,
    *,
    days: int = 7,
    speed: Speed = "Standard",
    request: bool = True,
) -> ThawReport:
    """Request (or, without ``request``, only look at) the thaw of every archived artifact of
    ``manifest`` at ``dest``."""
    sink: Any = dest.sink
    states: dict[str, str] = {}
    storage_class: str | None = None
    wait: str | None = None
    if not hasattr(sink, "thaw_state"):
        return ThawReport(
            manifest.backup_id, dest.name, {a.path: "hot" for a in manifest.artifacts}
        )
    prefix = f"{vault_name}/backups/{manifest.backup_id}/"
    for art in manifest.artifacts:
        key = prefix + art.path
        state = sink.request_thaw(key, days, speed) if request else sink.thaw_state(key)
        states[art.path] = state.state
        if state.state != "hot":
            storage_class = state.storage_class
            wait = f"a {speed} retrieval from {state.storage_class} takes " + sink.thaw_time(
                state.storage_class, speed
            )
    return ThawReport(manifest.backup_id, dest.name, states, storage_class, wait)


def wait_until_ready(
    check: Callable[[], ThawReport],
    *,
    interval: float = 300.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ThawReport:
    """Poll ``check`` every ``interval`` seconds until the backup is readable."""
    report = check()
    while not report.ready:
        sleep(interval)
        report = check()
    return report


@attrs.frozen
class ThawOptions:
    """How ``restore --thaw`` thaws an archived backup: for how long, how fast, and whether to
    wait (polling every ``interval`` seconds) or to stop after requesting it."""

    days: int = 7
    speed: Speed = "Standard"
    wait: bool = False
    interval: float = 300.0


def restore_source(
    config: PipelineConfig,
    ref: str,
    before: datetime | None,
    *,
    source: str | None = None,
    thaw_options: ThawOptions | None = None,
) -> tuple[PipelineConfig, Manifest]:
    """The backup a restore reads and the config whose ``sink`` holds the copy to read (see
    :mod:`pgvault.operations.destinations`). With ``thaw_options``, an archived copy is thawed
    first: the restore waits for it, or stops with a RestoreError saying how long it takes."""
    from pgvault.operations.destinations import choose_copy, usable
    from pgvault.vault.contents import Vault

    if len(config.destinations) == 1 and source is None and thaw_options is None:
        vault = Vault.from_config(config)
        manifest = vault.manifest_before(before) if before is not None else vault.manifest(ref)
        return config, manifest
    dest, manifest = choose_copy(config, ref, before, source)
    if thaw_options is not None and usable(dest, config.name, manifest) == "archived":
        opts = thaw_options

        def look(request: bool) -> ThawReport:
            return thaw(
                dest, config.name, manifest, days=opts.days, speed=opts.speed, request=request
            )

        report = look(True)
        log.warning("%s", report.describe())
        if not report.ready:
            if not opts.wait:
                raise RestoreError(
                    f"{report.describe()}; or restore with --wait to wait for it here"
                )
            wait_until_ready(lambda: look(False), interval=opts.interval)
    return attrs.evolve(config, sink=dest.sink), manifest
