"""The command-line face of point-in-time recovery: ``restore``'s target options and ``mark``.

The options themselves are defined in :mod:`pgvault.cli.parser` (parsing imports no operation);
``pgvault restore`` hands a restore over to :func:`run_restore` when :func:`wanted` says it is one
of a base backup.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pgvault.cli.parser import add_pitr_restore_arguments
from pgvault.exceptions import Aborted, ConfigError

from .targets import build_target, utc_text

if TYPE_CHECKING:
    from pgvault.pipeline_config import PipelineConfig


def _target_options() -> tuple[str, ...]:
    """The dests of every point-in-time option of ``restore`` but ``--timeout`` (which only
    bounds ``--start``), read from the parser so that a new option is never forgotten here."""
    parser = argparse.ArgumentParser(add_help=False)
    add_pitr_restore_arguments(parser)
    return tuple(name for name in vars(parser.parse_args([])) if name != "timeout")


_TARGET_OPTIONS = _target_options()
"""The options any of which makes a ``restore`` a point-in-time recovery."""


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
