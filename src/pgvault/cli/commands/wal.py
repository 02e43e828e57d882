"""The WAL commands: ``wal-push``, ``wal-fetch`` (PostgreSQL's archive and restore commands,
with their exit code rules), ``wal-daemon``, ``wal-setup``, ``wal-check``, ``wal-prefetch``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from pathlib import Path

from pgvault.cli import common
from pgvault.cli.exits import (
    EXIT_ABORT_RECOVERY,
    EXIT_FAILED,
    EXIT_OK,
)
from pgvault.exceptions import ConfigError, PgVaultError
from pgvault.transforms.api import DecodeContext

log = logging.getLogger("pgvault")


def cmd_wal_push(args: argparse.Namespace) -> int:
    """``pgvault wal-push``: the synchronous archive_command."""
    from pgvault.observability import record_wal_metrics
    from pgvault.wal.push import WalPusher

    config = common.load(args)
    # PostgreSQL runs the archive command in the data directory: its pg_control says which
    # cluster this is.
    pusher = WalPusher(config, Path.cwd())
    try:
        result = pusher.push(args.path)
    except PgVaultError:
        if config.metrics_file is not None:
            with contextlib.suppress(Exception):
                record_wal_metrics(config.metrics_file, config.name, failed=1)
        raise
    if config.metrics_file is not None:
        try:
            record_wal_metrics(
                config.metrics_file, config.name, last_archived_at=result.finished_at, pushed=1
            )
        except Exception as exc:
            log.warning("could not update metrics file %s: %s", config.metrics_file, exc)
    return EXIT_OK


def _fetch_failed(mode: str, data_directory: Path) -> int:
    if mode == "auto":
        mode = "missing" if (data_directory / "standby.signal").exists() else "abort"
    if mode == "missing":
        print(
            "pgvault: reporting the file as not archived (fetch_on_error: standby); the server "
            "will retry or stream",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(
        "pgvault: recovery must stop rather than end early: fix this and start again",
        file=sys.stderr,
    )
    return EXIT_ABORT_RECOVERY


def cmd_wal_fetch(args: argparse.Namespace) -> int:
    """``pgvault wal-fetch``: the restore_command; exit 0, 1 (not archived) or 200 (abort)."""
    from pgvault.wal import prefetch
    from pgvault.wal.fetch import WalMissing, fetch

    data_directory = Path.cwd()
    try:
        config = common.load(args)
    except PgVaultError as exc:
        common.report(args, exc)
        return _fetch_failed(args.on_error or "auto", data_directory)
    mode = args.on_error or config.wal.fetch_on_error
    try:
        context = DecodeContext(configured=config.transforms, identities=tuple(args.identity))
        result = fetch(config, args.name, args.path, data_directory=data_directory, context=context)
    except WalMissing as exc:
        log.info("%s", exc)
        return EXIT_FAILED
    except (KeyboardInterrupt, SystemExit):
        raise
    except PgVaultError as exc:
        common.report(args, exc)
        return _fetch_failed(mode, data_directory)
    except Exception as exc:
        common.report(args, exc, prefix=common.INTERNAL)
        return _fetch_failed(mode, data_directory)
    # pg_rewind and other callers name their own targets: prefetch only for recovery.
    if args.path.name == "RECOVERYXLOG":
        from pgvault.wal.names import WalName

        prefetch.request(config, result.cluster, WalName.parse(result.name))
    return EXIT_OK


def cmd_wal_daemon(args: argparse.Namespace) -> int:
    """``pgvault wal-daemon``: push WAL ahead of PostgreSQL's archiver."""
    from pgvault.wal.daemon import WalDaemon

    WalDaemon(common.load(args)).run()
    return EXIT_OK


def cmd_wal_setup(args: argparse.Namespace) -> int:
    """``pgvault wal-setup``: the postgresql.conf lines for this pipeline."""
    import shlex

    from pgvault.wal.configure import setup_lines

    config = common.load(args)
    command = shlex.split(args.pgvault) if args.pgvault else None
    for line in setup_lines(config, command=command, sync=args.sync, ask_server=not args.no_server):
        print(line)
    return EXIT_OK


def cmd_wal_check(args: argparse.Namespace) -> int:
    """``pgvault wal-check``: timelines, ranges and gaps of the WAL archive."""
    from pgvault.observability import record_wal_metrics
    from pgvault.wal.chain import check_chain

    config = common.load(args)
    context = DecodeContext(configured=config.transforms, identities=tuple(args.identity))
    report = check_chain(config, context=context, ask_server=not args.no_server)
    if config.metrics_file is not None:
        try:
            record_wal_metrics(
                config.metrics_file,
                config.name,
                newest_at=report.newest_at,
                lost=sum(c.lost for c in report.clusters),
                pending=sum(c.pending for c in report.clusters),
                ready=report.ready,
                archiver_failed=report.server.failed_count if report.server else None,
            )
        except Exception as exc:
            log.warning("could not update metrics file %s: %s", config.metrics_file, exc)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            print(line)
    lost = sum(c.lost for c in report.clusters)
    return EXIT_FAILED if lost or not report.clusters else EXIT_OK


def cmd_wal_prefetch(args: argparse.Namespace) -> int:
    """``pgvault wal-prefetch``: the background prefetcher wal-fetch starts."""
    from pgvault.wal import prefetch
    from pgvault.wal.archive import ClusterId

    config = common.load(args)
    try:
        cluster = ClusterId.parse(args.cluster)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    prefetch.run(config, cluster)
    return EXIT_OK
