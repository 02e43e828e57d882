"""``pgvault copy``: bring one destination up to date from another.

For a new second site, or after an outage of a non-required destination. Each backup is copied
as stored (no decoding, no key needed), artifacts first, each checked against the manifest's
size and digests while it streams and committed only if it matches, then ``MD5SUMS``, then the
manifest, byte for byte: the target never shows a manifest whose artifacts are not all there,
and a copy cut short leaves at most an incomplete folder (cleaned on the next try, or by prune).

Incremental and idempotent: a backup whose manifest the target already has is left alone, so a
second copy does nothing. Without ids, the backups copied are those the source holds and the
target lacks, less those the target's retention would remove at once (copying a year of S3
backups to a local folder that keeps 7 days would only fill the disk). While a backup is being
copied, a lease (kind ``copy``) tells a prune of the target not to take it for a leftover.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.exceptions import ConfigError, ObjectExistsError, ObjectNotFoundError, PgVaultError
from pgvault.sinks.destinations import Destination
from pgvault.sinks.fanout import remove_stored
from pgvault.transforms.digest import MD5_SIDECAR, Digests
from pgvault.vault.contents import Vault, check_digests, latest_first
from pgvault.vault.manifest import MANIFEST_NAME, Manifest, utc_now
from pgvault.vault.retention import plan

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.copy")


@attrs.frozen
class Copied:
    """What happened to one backup: ``copied``, ``present`` (already there) or ``failed``."""

    backup_id: str
    action: str
    bytes: int = 0
    error: str | None = None


@attrs.frozen
class CopyResult:
    """The outcome of one ``copy``."""

    source: str
    target: str
    backups: tuple[Copied, ...]
    wal_copied: int = 0
    """WAL objects (segments, history files) the target lacked and now has."""
    wal_failures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every backup asked for (and every missing WAL file) is now on the target."""
        return all(c.action != "failed" for c in self.backups) and not self.wal_failures

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``pgvault copy --json``)."""
        return {
            "from": self.source,
            "to": self.target,
            "ok": self.ok,
            "backups": [attrs.asdict(c) for c in self.backups],
            "wal_copied": self.wal_copied,
            "wal_failures": list(self.wal_failures),
        }


def copy(
    config: PipelineConfig,
    source: str,
    target: str,
    ids: Sequence[str] = (),
    *,
    now: datetime | None = None,
) -> CopyResult:
    """Copy to destination ``target`` the backups of ``source`` it lacks (or those of ``ids``:
    ids, prefixes or ``latest``). A backup that fails is reported and the others go on."""
    src, dst = config.destination(source), config.destination(target)
    if src == dst:
        raise ConfigError(f"--from and --to both name destination {source!r}")
    now = now or datetime.now(UTC)
    src_vault, dst_vault = Vault(src.sink, config.name), Vault(dst.sink, config.name)
    there = dst_vault.contents(now)
    have = {m.backup_id for m in there.backups}
    if ids:
        wanted = [src_vault.manifest(ref) for ref in ids]
    else:
        wanted = [m for m in src_vault.contents(now).backups if m.backup_id not in have]
        policy = dst.retention or config.retention
        if policy is not None and wanted:
            keeps = plan([*there.backups, *wanted], policy, now)
            wanted = [m for m in wanted if keeps.decision(m.backup_id).keep]
    done: list[Copied] = []
    for manifest in latest_first(wanted):  # newest first: the most valuable after an outage
        if manifest.backup_id in have:
            done.append(Copied(manifest.backup_id, "present"))
            continue
        try:
            size = _copy_backup(config, src_vault, dst, manifest)
        except PgVaultError as exc:
            log.error("could not copy backup %s: %s", manifest.backup_id, exc)
            remove_stored([dst], dst_vault.backup_prefix(manifest.backup_id))
            done.append(Copied(manifest.backup_id, "failed", error=str(exc)))
            continue
        log.info("copied backup %s to %s (%d bytes)", manifest.backup_id, dst.name, size)
        done.append(Copied(manifest.backup_id, "copied", size))
    wal_copied, wal_failures = (0, []) if ids else copy_wal(config, src, dst)
    return CopyResult(src.name, dst.name, tuple(done), wal_copied, tuple(wal_failures))


def copy_wal(config: PipelineConfig, src: Destination, dst: Destination) -> tuple[int, list[str]]:
    """Copy the WAL objects (and cluster records) ``dst`` lacks, as stored, create-if-absent:
    an object already there is never replaced. Their content is checked where they are read
    (``wal-fetch``, ``wal-check``), which needs the key; copying does not."""
    prefix = f"{config.name}/wal/"
    there = {i.key for i in dst.sink.list(prefix)}
    copied = 0
    failures: list[str] = []
    # Cluster records first: the archive of a cluster exists on the target before its files.
    found = sorted(src.sink.list(prefix), key=lambda i: "/clusters/" not in i.key)
    for info in found:
        if info.key in there:
            continue
        try:
            data = src.sink.read_bytes(info.key)
            if len(data) != info.size:
                raise PgVaultError(f"{info.key}: read {len(data)} bytes, listed {info.size}")
            dst.sink.write_bytes_if_absent(info.key, data)
            copied += 1
        except ObjectExistsError:
            continue  # written there meanwhile (wal-push): it stays as it is
        except PgVaultError as exc:
            log.error("could not copy WAL object %s: %s", info.key, exc)
            failures.append(f"{info.key}: {exc}")
    return copied, failures


def _copy_backup(
    config: PipelineConfig, src_vault: Vault, dst: Destination, manifest: Manifest
) -> int:
    """Copy one backup: artifacts checked and committed, then MD5SUMS, then the manifest."""
    from pgvault.engine.runlock import LEASE_SECONDS, Lease, vault_lease

    dst_vault = Vault(dst.sink, config.name)
    lease = Lease(
        kind="copy",
        backup_id=manifest.backup_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=utc_now(),
        expires_at=utc_now() + timedelta(seconds=LEASE_SECONDS),
        token=secrets.token_hex(8),
    )
    total = 0
    with vault_lease(dst_vault, lease):
        for art in manifest.artifacts:
            key = src_vault.artifact_key(manifest.backup_id, art.path)
            digests = Digests(manifest.checksums)
            with dst.sink.open_writer(key) as writer:
                for chunk in src_vault.sink.open_reader(key):
                    digests.update(chunk)
                    writer.write(chunk)
                # A copy that differs from what was backed up is never committed.
                check_digests(manifest, art.path, art.size, art.digests, digests)
                writer.commit()
            total += art.size
        sidecar = src_vault.artifact_key(manifest.backup_id, MD5_SIDECAR)
        with contextlib.suppress(ObjectNotFoundError):  # none when md5 was not asked for
            dst.sink.write_bytes(sidecar, src_vault.sink.read_bytes(sidecar))
        key = src_vault.artifact_key(manifest.backup_id, MANIFEST_NAME)
        dst.sink.write_bytes(key, src_vault.sink.read_bytes(key))
    return total
