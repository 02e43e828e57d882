"""``pgvault restore`` (a database, a folder, or point-in-time recovery) and ``pgvault mark``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pgvault.cli import common
from pgvault.cli.exits import (
    EXIT_OK,
)
from pgvault.exceptions import Aborted, ConfigError, PgVaultError
from pgvault.operations.pitr import cli as pitr_cli
from pgvault.operations.restore.database import list_archive
from pgvault.operations.restore.database import restore as restore_backup
from pgvault.operations.restore.options import RestoreOptions, RestoreResult
from pgvault.operations.restore.parts import split_assignments
from pgvault.operations.thaw import ThawOptions
from pgvault.vault.contents import Vault
from pgvault.vault.parts import part_names


def cmd_restore(args: argparse.Namespace) -> int:
    """``pgvault restore``: into a new database, a folder, or (a base backup) a data directory."""
    config = common.load(args)
    vault = Vault.from_config(config)
    target_dbs, target_dirs = _part_targets(args, vault)
    if pitr_cli.wanted(args, config):  # a base backup: point-in-time recovery (issue 14)
        return pitr_cli.run_restore(args, config)
    if args.jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    if args.list and (args.target_db or args.target_dir or target_dbs or target_dirs):
        raise ConfigError("--list restores nothing: give it without --target-db/--target-dir")
    if args.list:
        manifest = (
            vault.manifest_before(args.before) if args.before else vault.manifest(args.backup)
        )
        print(list_archive(config, manifest), end="")
        return EXIT_OK
    parted = args.part or target_dbs or target_dirs or _has_parts(vault, args)
    if not parted and not args.target_db and not args.target_dir:
        raise ConfigError("give --target-db NAME (database backups) or --target-dir DIR (files)")
    if args.drop_existing and not args.yes:
        if parted:  # several databases may be replaced: no single name to type
            raise ConfigError("--drop-existing of a backup of parts needs --yes")
        if args.target_db:
            _confirm_drop(args.target_db)
    progress = common.progress(args, "restore")
    try:
        result = restore_backup(
            config,
            args.backup,
            _options(args),
            target_db=args.target_db,
            target_dir=args.target_dir,
            dsn=args.dsn,
            before=args.before,
            progress=progress,
            source=args.source,
            thaw=ThawOptions(args.thaw_days, args.thaw_speed, wait=args.wait)
            if args.thaw
            else None,
            target_dbs=target_dbs,
            target_dirs=target_dirs,
        )
    finally:
        if progress:
            progress.close()
    for name, part in result.parts:
        _print_result(part, f"part {name} of ")
    if not result.parts:
        _print_result(result)
    return EXIT_OK


def _print_result(result: RestoreResult, what: str = "") -> None:
    if result.safety_backup_id:
        print(f"safety backup of the replaced database: {result.safety_backup_id}")
    if result.created_roles:
        print(f"created role(s) the target lacked: {', '.join(result.created_roles)}")
    for note in result.notes:
        common.stderr(f"pgvault: warning: {note}", logging.WARNING)
    print(f"restored {what}{result.backup_id} into {result.target}")
    if result.validation is not None:
        tables = result.validation.tables
        exact = sum(1 for t in tables if t.exact)
        print(f"validated {len(tables)} table(s) against the manifest ({exact} counted exactly)")


def _part_targets(args: argparse.Namespace, vault: Vault) -> tuple[dict[str, str], dict[str, Path]]:
    """Split the repeatable ``--target-db``/``--target-dir`` values into the one plain value
    (left in ``args``, as every backup without parts and point-in-time recovery read it) and the
    ``PART=VALUE`` ones, read as such only where PART is a part of the backup restored."""
    names = _part_names(vault, args) if "=" in "".join(args.target_db + args.target_dir) else []
    db, dbs = split_assignments(args.target_db, names)
    folder, folders = split_assignments(args.target_dir, names)
    args.target_db, args.target_dir = db, (Path(folder) if folder is not None else None)
    return dbs, {name: Path(value) for name, value in folders.items()}


def _part_names(vault: Vault, args: argparse.Namespace) -> list[str]:
    """The parts of the backup restored, as the primary destination has it; none if it cannot
    tell (restore then reports the backup's own trouble in its words)."""
    try:
        manifest = (
            vault.manifest_before(args.before) if args.before else vault.manifest(args.backup)
        )
    except PgVaultError:
        return []
    return part_names(manifest)


def _has_parts(vault: Vault, args: argparse.Namespace) -> bool:
    return bool(_part_names(vault, args))


def _options(args: argparse.Namespace) -> RestoreOptions:
    """The restore's choices, as given on the command line."""
    return RestoreOptions(
        jobs=args.jobs,
        drop_existing=args.drop_existing,
        no_owner=args.no_owner,
        no_privileges=args.no_privileges,
        role=args.role,
        tables=tuple(args.table),
        schemas=tuple(args.schema),
        create_roles=not args.no_roles,
        tablespace_map=dict(args.tablespace_map),
        no_tablespaces=args.no_tablespaces,
        subscriptions=args.subscriptions,
        locale=args.locale,
        work_dir=args.work_dir,
        identities=tuple(args.identity),
        allow_outside_symlinks=args.allow_outside_symlinks,
        parts=tuple(args.part),
    )


def _confirm_drop(name: str) -> None:
    if not sys.stdin.isatty():
        raise ConfigError("--drop-existing needs --yes when not run from a terminal")
    print(
        f"This replaces database {name!r}: a safety backup is taken, then it is dropped.",
        file=sys.stderr,
    )
    answer = input(f"Type the database name ({name}) to confirm: ").strip()
    if answer != name:
        raise Aborted("confirmation did not match; nothing was changed")


def cmd_mark(args: argparse.Namespace) -> int:
    """``pgvault mark``: a named restore point (point-in-time recovery, issue 14)."""
    return pitr_cli.run_mark(args, common.load(args))
