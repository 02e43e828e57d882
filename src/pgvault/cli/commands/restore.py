"""``pgvault restore`` (a database, a folder, or point-in-time recovery) and ``pgvault mark``."""

from __future__ import annotations

import argparse
import logging
import sys

from pgvault.cli import common
from pgvault.cli.exits import (
    EXIT_OK,
)
from pgvault.exceptions import Aborted, ConfigError
from pgvault.operations.pitr import cli as pitr_cli
from pgvault.operations.restore.database import list_archive
from pgvault.operations.restore.database import restore as restore_backup
from pgvault.operations.restore.options import RestoreOptions
from pgvault.operations.thaw import ThawOptions
from pgvault.vault.contents import Vault


def cmd_restore(args: argparse.Namespace) -> int:
    """``pgvault restore``: into a new database, a folder, or (a base backup) a data directory."""
    config = common.load(args)
    if pitr_cli.wanted(args, config):  # a base backup: point-in-time recovery (issue 14)
        return pitr_cli.run_restore(args, config)
    if args.jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    vault = Vault.from_config(config)
    if args.list:
        manifest = (
            vault.manifest_before(args.before) if args.before else vault.manifest(args.backup)
        )
        print(list_archive(config, manifest), end="")
        return EXIT_OK
    if not args.target_db and not args.target_dir:
        raise ConfigError("give --target-db NAME (database backups) or --target-dir DIR (files)")
    if args.drop_existing and args.target_db and not args.yes:
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
        )
    finally:
        if progress:
            progress.close()
    if result.safety_backup_id:
        print(f"safety backup of the replaced database: {result.safety_backup_id}")
    if result.created_roles:
        print(f"created role(s) the target lacked: {', '.join(result.created_roles)}")
    for note in result.notes:
        common.stderr(f"pgvault: warning: {note}", logging.WARNING)
    print(f"restored {result.backup_id} into {result.target}")
    if result.validation is not None:
        tables = result.validation.tables
        exact = sum(1 for t in tables if t.exact)
        print(f"validated {len(tables)} table(s) against the manifest ({exact} counted exactly)")
    return EXIT_OK


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
