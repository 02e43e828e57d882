"""The command-line face of point-in-time recovery: ``restore``'s target options and ``mark``.

``pgvault.cli`` stays a thin dispatcher: it adds these arguments to its ``restore`` parser and
hands a restore over to :func:`run_restore` when :func:`wanted` says it is one of a base backup.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pgvault.exceptions import Aborted, ConfigError

from .targets import build_target, utc_text

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig

_TARGET_OPTIONS = (
    "target_time",
    "target_lsn",
    "target_name",
    "target_xid",
    "target_immediate",
    "target_exclusive",
    "target_timeline",
    "target_action",
    "delete_existing",
    "start",
    "port",
    "pgvault",
    "archive",
)


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    """The point-in-time recovery options of ``pgvault restore``."""
    group = parser.add_argument_group(
        "point-in-time recovery (base backups; --target-dir is the new data directory)"
    )
    group.add_argument(
        "--target-time",
        metavar="TIME",
        help="recover to TIME, with an offset or zone: 2026-12-02T14:32:05+01:00, "
        "'2026-12-02 14:32:05 Europe/Berlin'",
    )
    group.add_argument("--target-lsn", metavar="LSN", help="recover to this LSN (0/3000060)")
    group.add_argument("--target-name", metavar="NAME", help="recover to a pgvault mark")
    group.add_argument("--target-xid", metavar="XID", help="recover to this transaction's commit")
    group.add_argument(
        "--target-immediate", action="store_true", help="stop as soon as the backup is consistent"
    )
    group.add_argument(
        "--target-exclusive", action="store_true", help="stop just before the target"
    )
    group.add_argument(
        "--target-timeline", metavar="TLI", help="latest (default), current or a number"
    )
    group.add_argument(
        "--target-action",
        choices=("pause", "promote", "shutdown"),
        help="what the server does at the target (default promote; PostgreSQL's is pause)",
    )
    group.add_argument(
        "--delete-existing",
        action="store_true",
        help="replace the contents of a non-empty --target-dir (asks first)",
    )
    group.add_argument(
        "--start", action="store_true", help="start the cluster and wait for recovery to end"
    )
    group.add_argument("--port", type=int, help="port of the restored cluster")
    group.add_argument(
        "--pgvault",
        metavar="COMMAND",
        help="how the server's user starts pgvault in restore_command (default: the pgvault "
        "beside this Python)",
    )
    group.add_argument(
        "--archive",
        action="store_true",
        help="leave archive_mode as the source had it (default: off, so the copy never "
        "archives into the source's WAL)",
    )
    group.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="with --start: give up waiting after this"
    )


def wanted(args: argparse.Namespace, config: PipelineConfig) -> bool:
    """Whether this ``restore`` is a point-in-time recovery of a base backup."""
    if any(getattr(args, name, None) for name in _TARGET_OPTIONS):
        return True
    if not getattr(args, "target_dir", None):
        return False
    from pgvault.vault.contents import Vault

    from .plan import SOURCE_TYPE

    if getattr(config.source, "type_name", None) == SOURCE_TYPE:
        return True
    try:
        return Vault.from_config(config).manifest(args.backup).source_type == SOURCE_TYPE
    except Exception:
        return False  # the ordinary restore reports the problem in its own words


def _confirm_delete(target: Path) -> None:
    if not sys.stdin.isatty():
        raise ConfigError("--delete-existing needs --yes when not run from a terminal")
    print(
        f"This deletes everything in {target}, then restores a base backup there.", file=sys.stderr
    )
    answer = input(f"Type the folder ({target}) to confirm: ").strip()
    if answer != str(target):
        raise Aborted("confirmation did not match; nothing was changed")


def run_restore(args: argparse.Namespace, config: PipelineConfig) -> int:
    """``pgvault restore`` of a base backup; the exit code."""
    from .restore import check_target_dir, restore_pitr

    if not args.target_dir:
        raise ConfigError("point-in-time recovery needs --target-dir DATADIR (the new cluster)")
    if args.target_db or args.list:
        raise ConfigError("a base backup restores into --target-dir, not --target-db or --list")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: not a TCP port")
    target = build_target(
        time=args.target_time,
        lsn=args.target_lsn,
        name=args.target_name,
        xid=args.target_xid,
        immediate=args.target_immediate,
        exclusive=args.target_exclusive,
        timeline=args.target_timeline,
        action=args.target_action,
    )
    target_dir = args.target_dir.absolute()
    # Ask only when there is something to delete (and before any planning output).
    if args.delete_existing and not args.yes and check_target_dir(target_dir, delete_existing=True):
        _confirm_delete(target_dir)
    ref = None if args.backup == "latest" else args.backup
    result = restore_pitr(
        config,
        ref,
        target_dir,
        target,
        delete_existing=args.delete_existing,
        command=shlex.split(args.pgvault) if args.pgvault else None,
        archive=args.archive,
        identities=tuple(args.identity),
        start=args.start,
        port=args.port,
        timeout=args.timeout,
    )
    for line in result.lines():
        print(line)
    if result.started is not None and not result.started.ok:
        return 1
    return 0


def add_mark_command(sub: argparse.ArgumentParser) -> None:
    """The arguments of ``pgvault mark CONFIG NAME``."""
    sub.add_argument("name", help="restore point name (letters, digits, . _ -)")
    sub.add_argument(
        "--no-switch",
        action="store_true",
        help="do not switch WAL afterwards (the mark is archived when its segment fills)",
    )
    sub.add_argument("--json", action="store_true", help="print the mark as JSON")


def run_mark(args: argparse.Namespace, config: PipelineConfig) -> int:
    """``pgvault mark``; the exit code."""
    from pgvault.wal.names import format_lsn

    from .marks import mark

    made = mark(config, args.name, switch=not args.no_switch)
    if args.json:
        print(
            json.dumps(
                {
                    "name": made.name,
                    "lsn": format_lsn(made.lsn),
                    "time": made.time.isoformat(),
                    "timeline": made.timeline,
                }
            )
        )
    else:
        print(
            f"restore point {made.name!r} at {format_lsn(made.lsn)} on timeline {made.timeline}, "
            f"{utc_text(made.time)}: restore to it with --target-name {made.name}"
        )
    return 0
