"""``pgvault restore CONFIG [ID] --target-dir DATADIR [target]`` of a base backup: a cluster
brought back to a chosen moment.

The order is the promise: first the plan (:mod:`.plan`: backup, timeline path, every segment
to the target archived) and the target folder's checks, then the keys; only then is anything
written: the base backup's files, then ``recovery.signal`` and the recovery settings
(:mod:`.settings`). ``restore_command`` is ``pgvault wal-fetch`` for this pipeline, the way
``wal-setup`` prints it (``--pgvault`` says how the server's user starts pgvault);
``archive_mode`` is ``off`` unless ``archive`` is asked for. With ``start`` the cluster is
started and followed until recovery ends (:mod:`.start`).

A non-empty target folder is refused unless ``delete_existing`` (the CLI asks first, as it does
before replacing a database); a folder a running server uses is refused even then. Run as root,
the restored files are given to the owner of the target folder, or to ``postgres``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.exceptions import RestoreError
from pgvault.operations.basebackup_restore import materialize_base_backup
from pgvault.transforms.api import DecodeContext
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import Manifest
from pgvault.wal.archive import WalArchive
from pgvault.wal.configure import pgvault_command, restore_command

from .marks import load_marks
from .plan import SOURCE_TYPE, PitrRefused, RecoveryPlan, base_backups, load_state, plan
from .settings import write_recovery
from .start import StartReport, start_restored
from .targets import RecoveryTarget

if TYPE_CHECKING:
    from pgvault.engine.pipeline import Progress
    from pgvault.pipeline_config import PipelineConfig

log = logging.getLogger("pgvault.pitr")


@attrs.frozen
class PitrResult:
    """What a point-in-time restore did."""

    plan: RecoveryPlan
    target_dir: Path
    settings: tuple[str, ...]
    started: StartReport | None = None

    def lines(self) -> list[str]:
        """The report in words."""
        out = [*self.plan.lines(), f"restored into {self.target_dir} with recovery settings:"]
        out += [f"  {line}" for line in self.settings[1:]]
        if self.started is not None:
            out += self.started.lines()
        else:
            out.append(f"start it: pg_ctl -D {self.target_dir} start (as the server's user)")
        return out


def is_physical(config: PipelineConfig, manifests: list[Manifest] | None = None) -> bool:
    """Whether the pipeline's backups are base backups (its source, or what its vault holds)."""
    if getattr(config.source, "type_name", None) == SOURCE_TYPE:
        return True
    kind = type(config.source).__name__.lower()
    if "basebackup" in kind:
        return True
    return bool(manifests) and all(m.source_type == SOURCE_TYPE for m in manifests or [])


def owner_for(target: Path) -> tuple[int, int] | None:
    """Whom the restored files belong to when root restores: the target folder's owner, else
    ``postgres``; None when not root (the files are the current user's already)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(OSError):
        st = target.stat()
        if st.st_uid != 0:
            return st.st_uid, st.st_gid
    try:
        pg = pwd.getpwnam("postgres")
    except KeyError:
        return None
    return pg.pw_uid, pg.pw_gid


def check_target_dir(target: Path, *, delete_existing: bool) -> bool:
    """Refuse a target folder that cannot take a restore; True when it has contents to delete."""
    if target.exists() and not target.is_dir():
        raise RestoreError(f"--target-dir {target} exists and is not a folder")
    if not target.exists() or not any(target.iterdir()):
        return False
    if not delete_existing:
        raise RestoreError(
            f"--target-dir {target} is not empty; restore into a new or empty folder, or "
            "replace its contents with --delete-existing"
        )
    pid = target / "postmaster.pid"
    if pid.exists():
        with contextlib.suppress(OSError, ValueError, IndexError):
            number = int(pid.read_text().split()[0])
            os.kill(number, 0)
            raise RestoreError(
                f"--target-dir {target} is the data directory of a running server (pid "
                f"{number}): stop it first; nothing was changed"
            )
    return True


def _empty(target: Path) -> None:
    for entry in target.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _chown_tree(target: Path, owner: tuple[int, int] | None) -> None:
    if owner is None:
        return
    os.chown(target, *owner)
    for folder, dirs, files in os.walk(target):
        for name in dirs + files:
            os.lchown(Path(folder) / name, *owner)


def plan_restore(
    config: PipelineConfig,
    ref: str | None,
    target: RecoveryTarget,
    *,
    context: DecodeContext,
) -> tuple[RecoveryPlan, Manifest]:
    """Plan a recovery of ``config``'s vault to ``target`` (``ref``: a backup id to use)."""
    vault = Vault.from_config(config)
    manifests = [m for m in vault.contents().scheduled if m.source_type == SOURCE_TYPE]
    forced: str | None = None
    if ref is not None and ref != "latest":
        manifest = vault.manifest(ref)
        if manifest.source_type != SOURCE_TYPE:
            raise RestoreError(
                f"backup {manifest.backup_id} is a {manifest.source_type!r} backup, not a base "
                "backup: point-in-time recovery needs a base backup"
            )
        forced = manifest.backup_id
        manifests = [*[m for m in manifests if m.backup_id != forced], manifest]
    backups = base_backups(manifests)
    if not backups:
        raise PitrRefused(
            f"no base backup in vault {config.name!r} at {config.sink.describe()}: take one "
            'first (pgvault run with [source] type = "basebackup")'
        )
    chosen = next(b for b in backups if forced is None or b.backup_id == forced)
    archive = WalArchive(config.sink, config.name)
    state = load_state(archive, chosen.cluster, chosen.segment_size, context)
    marks = load_marks(config.sink, config.name) if target.kind == "name" else None
    result = plan(backups, state, target, backup_id=forced, marks=marks)
    return result, next(m for m in manifests if m.backup_id == result.backup.backup_id)


def recovery_settings(
    config: PipelineConfig,
    result: RecoveryPlan,
    *,
    command: list[str] | None = None,
    archive: bool = False,
    port: int | None = None,
) -> dict[str, str]:
    """The settings written into the restored ``postgresql.auto.conf``."""
    settings: dict[str, Any] = {
        "restore_command": restore_command(config, command or pgvault_command()),
        **result.target.settings(),
    }
    if not archive:
        settings["archive_mode"] = "off"
    if port is not None:
        settings["port"] = str(port)
    return settings


def restore_pitr(
    config: PipelineConfig,
    ref: str | None,
    target_dir: Path,
    target: RecoveryTarget,
    *,
    delete_existing: bool = False,
    command: list[str] | None = None,
    archive: bool = False,
    identities: tuple[Path, ...] = (),
    start: bool = False,
    port: int | None = None,
    timeout: float | None = None,
    progress: Progress | None = None,
) -> PitrResult:
    """Restore a base backup into ``target_dir`` set to recover to ``target`` (module doc)."""
    context = DecodeContext(configured=config.transforms, identities=identities)
    result, manifest = plan_restore(config, ref, target, context=context)
    has_contents = check_target_dir(target_dir, delete_existing=delete_existing)
    Vault.from_config(config).decoders(manifest, context)  # a missing key fails here
    owner = owner_for(target_dir)
    created = [p for p in (target_dir, *target_dir.parents) if not p.exists()]
    if has_contents:
        log.warning("deleting the contents of %s (--delete-existing)", target_dir)
        _empty(target_dir)
    target_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        materialize_base_backup(
            Vault.from_config(config), manifest, target_dir, context=context, progress=progress
        )
        # PostgreSQL refuses a data directory others can read.
        target_dir.chmod(0o700)
        _chown_tree(target_dir, owner)
        header = (
            f"pgvault restore of {manifest.backup_id} to {target.describe()}: recovery "
            "settings (older lines setting these keys are commented out above)"
        )
        lines = write_recovery(
            target_dir,
            recovery_settings(config, result, command=command, archive=archive, port=port),
            header=header,
            owner=owner,
        )
    except (Exception, KeyboardInterrupt):
        with contextlib.suppress(OSError):
            _empty(target_dir)
            for folder in created:
                folder.rmdir()
        raise
    report = None
    if start:
        from pgvault.postgres.cluster import server_bindir

        report = start_restored(
            target_dir,
            server_bindir(result.backup.cluster.major),
            port=port,
            owner=owner,
            timeout=timeout,
        )
    return PitrResult(result, target_dir, tuple(lines), report)
