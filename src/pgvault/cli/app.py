"""The ``pgvault`` command: a thin layer over the Python API.

Each command takes the config path first. Data goes to stdout (``--json`` where it prints data);
errors are one line on stderr, with a traceback only under ``--debug``. Exit codes: 0 success,
1 failure (backup failed, verification found a problem), 2 bad usage or config, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM: systemd, docker stop, ``timeout``), after the same cleanup.
``check`` exits like a Nagios plugin instead: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN when it cannot
check at all (config unreadable, vault unreachable, bug), with an ``UNKNOWN:`` line on stdout for
monitors that read only that, and performance data after ``|`` on the status line. Under systemd
(``JOURNAL_STREAM``) stderr lines carry journald priorities (``<3>`` for errors). The WAL
commands PostgreSQL runs keep its rules: ``wal-push`` never exits above 125 for a failure (1; 2 for
a bad config or argument), and ``wal-fetch`` exits 1 only when the file is
definitely not archived, 200 (recovery aborts) for anything else, or 1 with ``fetch_on_error``
set for a standby.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from pgvault.cli import storage as cli_storage
from pgvault.config import PipelineConfig, load_config
from pgvault.config_lookup import find_config, with_default_config
from pgvault.engine.pipeline import pgvault_version
from pgvault.engine.pipeline import run as run_backup
from pgvault.engine.progress import TerminalProgress, human_bytes
from pgvault.exceptions import Aborted, ConfigError, PgVaultError
from pgvault.observability import journal_prefix, setup_logging, stderr_handler
from pgvault.operations.check import check as check_vault
from pgvault.operations.destinations import overview
from pgvault.operations.drill import drill as run_drill
from pgvault.operations.pitr import cli as pitr_cli
from pgvault.operations.pitr.window import window_lines as pitr_window_lines
from pgvault.operations.prune import PruneResult
from pgvault.operations.prune import prune as prune_vault
from pgvault.operations.restore.database import list_archive
from pgvault.operations.restore.database import restore as restore_backup
from pgvault.operations.thaw import ThawOptions
from pgvault.transforms.api import DecodeContext
from pgvault.transforms.digest import MD5_SIDECAR
from pgvault.vault.contents import DamagedBackup, Vault, VaultContents, VerifyProblem, VerifyReport
from pgvault.vault.manifest import MANIFEST_NAME, Manifest, id_time
from pgvault.vault.pins import FOREVER, Pins, parse_until, pin, read_pins, unpin
from pgvault.wal.fetch import EXIT_ABORT_RECOVERY

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CRITICAL = 2
EXIT_UNKNOWN = 3  # check: nothing could be checked (Nagios UNKNOWN)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM killed
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head` reports for yes

log = logging.getLogger("pgvault")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every other mistake
        self.exit(EXIT_USAGE, f"pgvault: error: {message} (see --help)\n")


class _FetchParser(_Parser):
    """wal-fetch's arguments: a restore_command with a mistake in it must stop recovery, not
    look like "file not archived" (exit 1 or 2 would end recovery early)."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_ABORT_RECOVERY, f"pgvault: error: {message} (see --help)\n")


def _add_common(parser: argparse.ArgumentParser, default: object) -> None:
    """The flags every command takes, before or after the command name."""
    parser.add_argument(
        "--debug", action="store_true", default=default, help="show tracebacks and debug logs"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log progress steps"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="no progress line; only warnings and errors on stderr",
    )


def _build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    _add_common(common, default=False)
    # Subcommands take the same flags, but their defaults must not reset what was given before
    # the command (`pgvault --debug run …`): SUPPRESS leaves unset flags out of the namespace.
    sub_common = _Parser(add_help=False)
    _add_common(sub_common, default=argparse.SUPPRESS)

    parser = _Parser(
        prog="pgvault",
        description="Back PostgreSQL up and bring it back.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"pgvault {pgvault_version()}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[sub_common])
        p.add_argument("config", type=Path, help="pipeline config: a TOML file or a name (app)")
        return p

    p = command("run", "take one backup; prints its id as the last line")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    # --- issue 15 (h15b): labels and pins -------------------------------------------------
    p.add_argument("--label", metavar="NAME", help="name this backup (e.g. before-migration-42)")
    p.add_argument(
        "--keep-until",
        metavar="WHEN",
        help="retention keeps this backup until WHEN: 'forever', a date (UTC), or a duration",
    )

    p = command("pin", "keep a backup whatever the retention policy says, until a date or forever")
    p.add_argument("backup", help="backup id, id prefix, or 'latest'")
    p.add_argument("--until", default="forever", metavar="WHEN", help="date, duration or forever")
    p.add_argument("--note", default="", metavar="TEXT", help="why it is pinned")

    p = command("unpin", "remove a backup's pin (retention decides about it again)")
    p.add_argument("backup", help="backup id, id prefix, or 'latest'")

    p = command("export", "write a backup's decoded files and an MD5SUMS into a folder")
    p.add_argument("backup", help="backup id, id prefix, or 'latest'")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--part", action="append", default=[], metavar="P", help="only this part")
    p.add_argument("--identity", type=Path, action="append", default=[], help="private key file")

    p = command("cat", "write one decoded artifact to stdout (e.g. | pg_restore -l)")
    p.add_argument("backup", help="backup id, id prefix, or 'latest'")
    p.add_argument("artifact", help="artifact name, e.g. dump.pgdump (see pgvault show)")
    p.add_argument("--identity", type=Path, action="append", default=[], help="private key file")
    # --- end issue 15 (h15b) ----------------------------------------------------------------

    p = command("list", "list complete backups, newest first")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("show", "print a backup's manifest")
    p.add_argument("backup", help="backup id, id prefix, or 'latest'")

    p = command("verify", "re-read artifacts and check their digests")
    p.add_argument("backup", nargs="?", default="latest", help="backup id or 'latest' (default)")
    p.add_argument("--all", action="store_true", help="verify every complete backup")
    p.add_argument("--deep", action="store_true", help="also decode and check the dump format")
    p.add_argument(
        "--archived",
        choices=("fail", "skip", "thaw"),
        default="fail",
        help="with --deep, a backup in an archive class: fail (default), skip the deep check "
        "(sizes only), or thaw it and check it deep once readable",
    )
    cli_storage.add_thaw_options(p)
    p.add_argument("--identity", type=Path, action="append", default=[], help="private key file")
    p.add_argument("--json", action="store_true", help="print JSON reports")

    p = command("restore", "restore a backup into a new database or folder")
    p.add_argument("backup", nargs="?", default="latest", help="backup id, id prefix, or 'latest'")
    p.add_argument(
        "--before",
        type=_timestamp,
        metavar="TIME",
        help="the newest backup started at or before TIME (ISO 8601; UTC if no zone)",
    )
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-db", metavar="NAME", help="database to create and restore into")
    target.add_argument("--target-dir", type=Path, metavar="DIR", help="folder for files backups")
    target.add_argument("--list", action="store_true", help="print the archive's table of contents")
    p.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="NAME",
        help="restore only this table, with its partitions and what it needs; PostgreSQL's "
        "name rules: quote mixed case, spaces, dots, e.g. 'app.\"Weird Name\"' (repeatable)",
    )
    p.add_argument(
        "--schema",
        action="append",
        default=[],
        metavar="NAME",
        help="restore only this schema, whole (repeatable; adds up with --table)",
    )
    p.add_argument("--no-privileges", action="store_true", help="do not restore GRANTs")
    p.add_argument(
        "--no-roles",
        action="store_true",
        help="do not create the roles the target lacks from the backup's globals",
    )
    p.add_argument(
        "--tablespace-map",
        action="append",
        default=[],
        type=_tablespace_pair,
        metavar="OLD=NEW",
        help="create the objects of tablespace OLD in NEW (repeatable; custom archives)",
    )
    p.add_argument(
        "--no-tablespaces",
        action="store_true",
        help="create every object in the target's default tablespace",
    )
    p.add_argument(
        "--subscriptions",
        action="store_true",
        help="also restore logical replication subscriptions (disabled, not connected)",
    )
    p.add_argument(
        "--locale",
        metavar="NAME",
        help="create the database with this libc locale instead of the source's "
        "(keeps the source's encoding)",
    )
    p.add_argument("--dsn", help="server to restore to (default: the config's source server)")
    p.add_argument("--jobs", type=int, default=1, help="parallel restore jobs (default 1)")
    p.add_argument("--drop-existing", action="store_true", help="replace an existing database")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--no-owner", action="store_true", help="do not restore object ownership")
    p.add_argument("--role", help="role to restore as (SET ROLE)")
    p.add_argument("--work-dir", type=Path, help="folder for the temporary file of --jobs > 1")
    p.add_argument(
        "--allow-outside-symlinks",
        action="store_true",
        help="files backups: also restore symlinks that lead outside --target-dir (e.g. of /etc)",
    )
    p.add_argument("--identity", type=Path, action="append", default=[], help="private key file")
    # Several destinations and archive classes (issue 15): see pgvault.cli.storage.
    p.add_argument("--from", dest="source", metavar="SINK", help="read from this destination")
    p.add_argument(
        "--thaw", action="store_true", help="request the retrieval of an archived backup first"
    )
    p.add_argument("--wait", action="store_true", help="with --thaw: wait until it is readable")
    cli_storage.add_thaw_options(p)
    # --- point-in-time recovery (issue 14): options and the mark command live in pitr.cli ---
    pitr_cli.add_restore_arguments(p)
    pitr_cli.add_mark_command(command("mark", "create a named restore point and record it"))
    # --- end point-in-time recovery ---

    p = command("prune", "remove the backups the [retention] policy does not keep")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="change nothing: list every backup with keep/remove and the reason",
    )
    p.add_argument("--json", action="store_true", help="print the plan and outcome as JSON")

    p = command(
        "check", "check the vault against the [check] thresholds (exit 0 OK, 1 WARNING, 2 CRITICAL)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = command("drill", "restore a backup somewhere harmless and prove it works")
    p.add_argument("backup", nargs="?", default="latest", help="backup id or 'latest' (default)")
    p.add_argument(
        "--archived",
        choices=("fail", "skip", "thaw"),
        default="fail",
        help="a backup in an archive class: fail (default), skip the drill (exit 0), or thaw "
        "it and drill once readable",
    )
    cli_storage.add_thaw_options(p)
    p.add_argument("--identity", type=Path, action="append", default=[], help="private key file")
    p.add_argument("--json", action="store_true", help="print the drill result as JSON")

    cli_storage.add_parsers(command)

    p = command("wal-push", "archive one WAL file, synchronously (the plain archive_command)")
    p.add_argument("path", type=Path, help="the file PostgreSQL archives (%%p)")

    sub._parser_class = _FetchParser  # argparse takes the class per group, not per command
    p = sub.add_parser(
        "wal-fetch",
        help="restore one WAL file (restore_command: wal-fetch CONFIG %%f %%p)",
        description="Write archived WAL file NAME to PATH, complete or not at all. Exit 0: "
        "written; 1: not archived; 200: recovery must stop (unreachable sink, damaged object).",
        parents=[sub_common],
    )
    sub._parser_class = _Parser
    p.add_argument("config", type=Path, help="pipeline config: a TOML file or a name (app)")
    p.add_argument("name", help="the file PostgreSQL asks for (%%f)")
    p.add_argument("path", type=Path, help="where to write it (%%p)")
    p.add_argument(
        "--on-error",
        choices=("auto", "abort", "missing"),
        help="overrides [wal] fetch_on_error: abort recovery (exit 200) or report the file "
        "missing (exit 1, for standbys) when the sink fails or an object is damaged",
    )
    p.add_argument("--identity", type=Path, action="append", default=[], help="private key file")

    p = command("wal-daemon", "push WAL ahead of PostgreSQL's archiver (run it under systemd)")

    p = command("wal-setup", "print the postgresql.conf lines for this pipeline and check them")
    p.add_argument("--sync", action="store_true", help="archive_command without the daemon")
    p.add_argument(
        "--pgvault",
        metavar="COMMAND",
        help="how PostgreSQL starts pgvault (default: the pgvault beside this Python)",
    )
    p.add_argument("--no-server", action="store_true", help="do not connect to the server")

    p = command("wal-check", "check the WAL archive: timelines, ranges, gaps, newest file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--identity", type=Path, action="append", default=[], help="private key file")
    p.add_argument("--no-server", action="store_true", help="do not connect to the server")

    p = command("wal-prefetch", "internal: the background prefetcher wal-fetch starts")
    p.add_argument("cluster", help="<major>-<system identifier>")

    # --- issue 16 (operating a fleet): doctor, schedule ---
    p = command("doctor", "check config, database, tools, sink, keys, space, clocks; no backup")
    # --- end issue 16 ---

    # keygen makes a key, not a backup: the one command without a config.
    p = sub.add_parser(
        "keygen",
        help="make a key file (or an X25519 key pair) for aes-256-gcm",
        description="Write a new random key file (mode 0600), or with --x25519 an identity PATH "
        "(private, 0600) and its public key PATH.pub; never overwrites a file.",
        parents=[sub_common],
    )
    p.add_argument("--out", type=Path, required=True, metavar="PATH", help="file to create")
    p.add_argument("--x25519", action="store_true", help="make an X25519 key pair for recipients")

    # report (issue 16): what the vault did over a period.
    p = command("report", "report backups taken and failed, size and duration trends, cost, drills")
    p.add_argument("--since", default="30d", help="period to report on (default 30d)")
    p.add_argument("--format", choices=("text", "json", "html"), default="text")
    p.add_argument("--chart", type=Path, metavar="FILE.svg", help="also draw the chart as SVG")
    p.add_argument("--prices", type=Path, metavar="FILE", help="price table (JSON) to use")

    # completion (issue 16): prints or installs a shell's completion script; no config either.
    p = sub.add_parser(
        "completion",
        help="print (or --install) the shell completion script for bash, zsh or fish",
        description="Print the completion script for SHELL, or with --install write it where "
        "the shell finds it for your user.",
        parents=[sub_common],
    )
    p.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")
    p.add_argument("--install", action="store_true", help="write it to the user's folder")
    return parser


def _tablespace_pair(text: str) -> tuple[str, str]:
    old, eq, new = text.partition("=")
    if not eq or not old or not new:
        raise argparse.ArgumentTypeError(f"--tablespace-map {text!r}: use OLD=NEW")
    return old, new


def _timestamp(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: use ISO 8601, e.g. 2026-11-20T12:00 or 2026-11-20T12:00+02:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. It unwinds like Ctrl-C, so the same cleanup runs: a backup's partial
    objects are removed, a restore's new database is dropped, a drill's database too, and child
    processes (pg_dump holding a snapshot, pg_restore) are stopped."""


def _on_sigterm(signum: int, frame: object) -> None:
    # One is enough: a second SIGTERM (an impatient supervisor) must not cut the cleanup short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated("terminated by SIGTERM")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pgvault`` command; returns the exit code."""
    parser = _build_parser()
    # A config found by name or by $PGVAULT_CONFIG (pgvault.config_lookup); keygen takes none.
    given = sys.argv[1:] if argv is None else argv
    args, extra = parser.parse_known_args(with_default_config(given, set(_COMMANDS) - {"keygen"}))
    # argparse binds `copy CONFIG`'s trailing ids at CONFIG, before --from/--to: take the ids
    # that follow the options here (anything else stays the usual usage error).
    if extra and args.command == "copy" and not any(e.startswith("-") for e in extra):
        args.backups = [*args.backups, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args)
    handler: Callable[[argparse.Namespace], int] = _COMMANDS[args.command]
    # By default SIGTERM kills Python on the spot: no cleanup, pg_dump left running. (Only the
    # main thread may set handlers; main() called from another thread keeps the default.)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        code = handler(args)
        # Output to a pipe is buffered: flush while a closed reader can still be told apart.
        sys.stdout.flush()
        return code
    except BrokenPipeError as exc:
        if not _stdout_closed():  # another pipe than stdout: a bug, reported as one
            _report(args, exc, prefix="internal error (please report it): ")
            return EXIT_FAILED
        # `pgvault list | head`: the reader has all it wanted. Exit as quietly as coreutils do,
        # and keep Python's own flush at exit from writing into the closed pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except Terminated as exc:
        _stderr(f"pgvault: terminated (SIGTERM); {_left_behind(exc)}", logging.WARNING)
        return EXIT_TERMINATED
    except KeyboardInterrupt as exc:
        _stderr(f"pgvault: interrupted; {_left_behind(exc)}", logging.WARNING)
        return EXIT_INTERRUPTED
    except Aborted as exc:
        _stderr(f"pgvault: {exc}", logging.WARNING)
        return EXIT_FAILED
    except ConfigError as exc:
        _report(args, exc)
        return EXIT_USAGE
    except PgVaultError as exc:
        _report(args, exc)
        return EXIT_FAILED
    except Exception as exc:
        # A bug, not a user mistake: say so, in one line unless --debug.
        _report(args, exc, prefix="internal error (please report it): ")
        return EXIT_FAILED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll reports an error on its end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True  # no usable stdout at all: nothing left to tell it


def _left_behind(exc: BaseException) -> str:
    """What an interrupted command left: the state a restore noted on its way out (a replaced
    database's safety backup and the command that brings it back), else the default, true
    for every other command: partial backups are removed, new databases dropped."""
    notes = getattr(exc, "__notes__", None)
    if notes:
        return " ".join(str(n) for n in notes)
    return "nothing was left half-written"


def _stderr(line: str, level: int = logging.ERROR) -> None:
    """One line to stderr; with its journald priority (``<3>``) under systemd."""
    print(f"{journal_prefix(level)}{line}", file=sys.stderr)


def _report(args: argparse.Namespace, exc: BaseException, prefix: str = "") -> None:
    if args.debug:
        traceback.print_exception(exc)
    text = str(exc).replace("\n", " ") or type(exc).__name__
    _stderr(f"pgvault: error: {prefix}{text}")


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    root = logging.getLogger("pgvault")
    # The CLI prints a failure's one error line itself: its stderr handler drops the failure's
    # log record (files, journald and root handlers still get it).
    root.handlers[:] = [stderr_handler("text", level, caller_reports=True)]
    root.setLevel(level)


def _progress(args: argparse.Namespace, label: str) -> TerminalProgress | None:
    if args.quiet or not TerminalProgress.wanted():
        return None
    return TerminalProgress(label)


_NOTIFYING = {"run", "prune", "check", "drill"}
"""Commands that may send notifications: they need the notifiers' secrets up front."""


def _config(args: argparse.Namespace) -> PipelineConfig:
    config = load_config(find_config(args.config))
    if args.command in _NOTIFYING and not getattr(args, "dry_run", False):
        config.require_notify_env()
    # The config's [logging] table sets level, format and file; -v, --debug and -q override the
    # level for this one command.
    override = (
        logging.DEBUG
        if args.debug
        else logging.INFO
        if args.verbose
        else logging.WARNING
        if args.quiet
        else None
    )
    try:
        setup_logging(config.logging, stderr_level=override, caller_reports=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot open log file: {exc.strerror or exc}", path=config.where(), key="logging.file"
        ) from exc
    return config


def _cmd_prune(args: argparse.Namespace) -> int:
    config = _config(args)
    if len(config.destinations) > 1:
        return cli_storage.prune_each(config, args, _print_prune)
    result = prune_vault(config, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_prune(result)
    for failure in result.failures:
        _stderr(f"pgvault: error: could not remove {failure.backup_id}: {failure.message}")
    wal_failures = result.wal.failures if result.wal else ()
    for message in wal_failures:
        _stderr(f"pgvault: error: could not remove WAL file {message}")
    return EXIT_OK if result.ok and not wal_failures else EXIT_FAILED


def _print_prune(result: PruneResult) -> None:
    plan = result.plan
    zone = plan.policy.timezone.zone
    if result.dry_run:
        words = {True: "keep", False: "remove"}
    else:
        failed = {f.backup_id for f in result.failures}
        words = {True: "kept", False: "removed"}
    rows = []
    for d in plan.decisions:
        action = words[d.keep]
        if not result.dry_run and not d.keep and d.backup_id in failed:
            action = "FAILED"
        when = d.started_at.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if d.started_at else "?"
        rows.append((action, d.backup_id, when, ", ".join(d.reasons)))
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    kept, removed = len(plan.kept), len(plan.removed)
    cleaned = [i for i in result.leftovers if result.dry_run or i in result.removed]
    if cleaned:
        done = "would clean" if result.dry_run else "cleaned"
        print(f"{done} {len(cleaned)} unfinished backup folder(s): {', '.join(cleaned)}")
    for move in result.moves:
        done = "would move" if result.dry_run else "FAILED to move" if move.error else "moved"
        print(f"{done} {move.key} from {move.from_class} to {move.to_class}")
    if result.wal is not None:
        for line in result.wal.lines(dry_run=result.dry_run):
            print(line)
    if result.dry_run:
        print(
            f"dry run ({plan.policy.describe()}): would keep {kept}, remove {removed}; "
            "nothing was changed"
        )
    else:
        print(
            f"kept {kept}, removed {len(result.removed)} of {removed}"
            + (
                f", {result.partials_removed} unfinished write(s) cleaned"
                if result.partials_removed
                else ""
            )
        )


def _cmd_check(args: argparse.Namespace) -> int:
    # Monitors read the exit code and the first stdout line: whatever keeps the check from
    # running must be UNKNOWN there (Nagios' "cannot check"), never the WARNING an ordinary
    # failure's exit code 1 would mean.
    try:
        config = _config(args)
        result = check_vault(config)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        prefix = "" if isinstance(exc, PgVaultError) else "internal error (please report it): "
        _report(args, exc, prefix=prefix)
        text = str(exc).replace("\n", " ") or type(exc).__name__
        print(f"UNKNOWN: {prefix}{text}")
        return EXIT_UNKNOWN
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.nagios_lines():
            print(line)
    return int(result.status)


def _cmd_run(args: argparse.Namespace) -> int:
    config = _config(args)
    labels = _run_labels(args)
    progress = _progress(args, f"backup {config.name}")
    try:
        manifest = run_backup(config, labels=labels, progress=progress)
    finally:
        if progress:
            progress.close()
    if args.json:
        print(manifest.to_json(), end="")
    elif sys.stderr.isatty():
        print(
            f"backup {manifest.backup_id} complete: {human_bytes(manifest.size)} stored "
            f"({human_bytes(manifest.raw_size)} raw) in {manifest.duration_seconds:.1f}s",
            file=sys.stderr,
        )
    print(manifest.backup_id)
    return EXIT_OK


# --- issue 15 (h15b): labels and pins -----------------------------------------------------


def _run_labels(args: argparse.Namespace) -> dict[str, str]:
    labels: dict[str, str] = {}
    if args.label is not None:
        if not args.label.strip() or not args.label.isprintable() or len(args.label) > 200:
            raise ConfigError(f"--label {args.label!r}: use up to 200 printable characters")
        labels["label"] = args.label
    if args.keep_until is not None:
        until = parse_until(args.keep_until, option="--keep-until")
        labels["keep_until"] = (
            "forever"
            if until == FOREVER
            else until.isoformat(timespec="seconds").replace("+00:00", "Z")
        )
    return labels


def _cmd_pin(args: argparse.Namespace) -> int:
    config = _config(args)
    record = pin(
        Vault.from_config(config), args.backup, until=parse_until(args.until), note=args.note
    )
    print(f"backup {record.backup_id}: {record.describe()}")
    return EXIT_OK


def _cmd_unpin(args: argparse.Namespace) -> int:
    backup_id = unpin(Vault.from_config(_config(args)), args.backup)
    print(f"backup {backup_id}: unpinned (retention decides about it again)")
    return EXIT_OK


def _keep_text(m: Manifest, pins: Pins) -> str:
    """The NOTE column of ``list``: label, keep_until, pin."""
    parts = []
    label = m.labels.get("label")
    if isinstance(label, str) and label:
        parts.append(f"label {_printable(label)}")
    keep = m.labels.get("keep_until")
    if isinstance(keep, str) and keep:
        parts.append(f"keep until {_printable(keep)}")
    pinned = pins.describe(m.backup_id)
    if pinned:
        parts.append(pinned)
    return "; ".join(parts)


def _printable(text: str) -> str:
    # Labels come from the vault: a control character must not drive the terminal.
    return "".join(ch if ch.isprintable() else " " for ch in text)[:200]


def _cmd_export(args: argparse.Namespace) -> int:
    from pgvault.operations.export import export
    from pgvault.vault.parts import artifacts_of

    config = _config(args)
    vault = Vault.from_config(config)
    manifest = vault.manifest(args.backup)
    chosen = artifacts_of(manifest, args.part) if args.part else None
    context = DecodeContext(configured=config.transforms, identities=tuple(args.identity))
    result = export(vault, manifest, args.out, artifacts=chosen, context=context)
    for f in result.files:
        print(f"{f.path}  {human_bytes(f.size)}")
    print(f"{result.md5sums}  (check with: cd {result.out_dir} && md5sum -c {MD5_SIDECAR})")
    return EXIT_OK


def _cmd_cat(args: argparse.Namespace) -> int:
    from pgvault.operations.export import cat, find_artifact

    config = _config(args)
    if sys.stdout.isatty():
        raise ConfigError("stdout is a terminal: pipe cat into a program or redirect it to a file")
    vault = Vault.from_config(config)
    manifest = vault.manifest(args.backup)
    art = find_artifact(manifest, args.artifact)
    context = DecodeContext(configured=config.transforms, identities=tuple(args.identity))
    cat(vault, manifest, art, sys.stdout.buffer, context=context)
    return EXIT_OK


# --- end issue 15 (h15b) --------------------------------------------------------------------


def _summary(m: Manifest, *, future: bool = False) -> dict[str, Any]:
    return {
        "backup_id": m.backup_id,
        "status": "complete",
        "started_at": m.to_dict()["started_at"],
        "kind": m.kind,
        "future": future,
        "size": m.size,
        "raw_size": m.raw_size,
        "duration_seconds": round(m.duration_seconds, 3),
        "source": _source_text(m),
        "labels": {k: v for k, v in m.labels.items() if isinstance(v, str)},
    }


def _damaged_summary(d: DamagedBackup) -> dict[str, Any]:
    when = id_time(d.backup_id)
    return {
        "backup_id": d.backup_id,
        "status": "damaged",
        "started_at": when.isoformat().replace("+00:00", "Z") if when else None,
        "key": d.key,
        "error": d.reason,
    }


def _warn_about(contents: VaultContents) -> None:
    """Name on stderr what ``list`` shows but nothing counts: damaged and future-dated backups."""
    for d in contents.damaged:
        print(
            f"pgvault: WARNING: damaged backup {d.backup_id} ({d.key}): {d.reason}", file=sys.stderr
        )
    for m in contents.future:
        print(
            f"pgvault: WARNING: backup {m.backup_id} is dated in the future (a clock ahead?): "
            "it is never 'latest', not counted and not pruned",
            file=sys.stderr,
        )


def _source_text(m: Manifest) -> str:
    src = m.source
    if m.source_type == "pg_dump":
        return f"pg_dump {src.get('database', '?')} ({src.get('format', '?')})"
    if m.source_type == "files":
        return f"files: {src.get('files', '?')} files"
    return m.source_type


def _print_wal_ranges(config: PipelineConfig) -> None:
    from pgvault.wal.archive import WalArchive
    from pgvault.wal.chain import summarize

    try:
        chains = summarize(WalArchive(config.sink, config.name), pg_wal=config.wal.pg_wal)
    except PgVaultError as exc:
        # The backups listed above are still worth seeing: say so, do not fail the listing.
        _stderr(f"pgvault: warning: cannot read the WAL archive: {exc}", logging.WARNING)
        return
    for chain in chains:
        print(f"WAL of {chain.cluster}: {chain.files} file(s), {human_bytes(chain.stored_bytes)}")
        for t in chain.timelines:
            spans = ", ".join(
                f"{chain.name(t.timeline, r.first)}..{chain.name(t.timeline, r.last)}"
                for r in t.ranges
            )
            lost = sum(
                g.count for g in chain.gaps if g.timeline == t.timeline and g.state == "lost"
            )
            print(
                f"  timeline {t.timeline}: {spans or 'no segments'}"
                + (f" ({lost} segment(s) missing: see wal-check)" if lost else "")
            )


def _cmd_list(args: argparse.Namespace) -> int:
    config = _config(args)
    # Every destination's backups, each with where it is stored (and in which class).
    view = overview(config)
    contents = next(s.contents for s in view.states if s.contents is not None)
    backups = view.backups
    pins = read_pins(Vault.from_config(config))
    future = {m.backup_id for m in backups if contents.is_future(m)}
    stored = cli_storage.wants_stored_column(config, view)
    cli_storage.warn_destinations(view, config)
    if args.json:
        rows_json = [
            {
                **_summary(m, future=m.backup_id in future),
                "pin": pins.pins[m.backup_id].to_dict() if m.backup_id in pins.pins else None,
                **(
                    {"pin_damaged": pins.damaged[m.backup_id].reason}
                    if m.backup_id in pins.damaged
                    else {}
                ),
                "stored": cli_storage.stored_json(view, m.backup_id),
            }
            for m in backups
        ]
        rows_json += [_damaged_summary(d) for d in contents.damaged]
        print(json.dumps(rows_json, indent=2))
        _warn_about(contents)
        return EXIT_OK
    if not backups:
        print(
            f"no complete backups in vault {config.name!r} at {config.sink.describe()}",
            file=sys.stderr,
        )
        _warn_about(contents)
        _print_wal_ranges(config)
        return EXIT_OK
    rows: list[tuple[str, ...]] = [
        ("ID", "STARTED (UTC)", "KIND", "SIZE", "RAW", "TIME", "SOURCE", "NOTE")
    ]
    rows[0] += ("STORED",) if stored else ()
    for m in backups:
        rows.append(
            (
                m.backup_id,
                m.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                f"{m.kind} (future-dated)" if m.backup_id in future else m.kind,
                human_bytes(m.size),
                human_bytes(m.raw_size),
                f"{m.duration_seconds:.1f}s",
                _source_text(m),
                _keep_text(m, pins),
            )
            + ((cli_storage.stored_column(view, m.backup_id),) if stored else ())
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    _warn_about(contents)
    _print_wal_ranges(config)
    # --- point-in-time recovery window (issue 14) ---
    for line in pitr_window_lines(config, list(contents.scheduled)):
        print(line)
    return EXIT_OK


def _cmd_show(args: argparse.Namespace) -> int:
    manifest = Vault.from_config(_config(args)).manifest(args.backup)
    print(manifest.to_json(), end="")
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    config = _config(args)
    vault = Vault.from_config(config)
    damaged: tuple[DamagedBackup, ...] = ()
    if args.all:
        contents = vault.contents()
        manifests = list(contents.backups)
        damaged = contents.damaged
    else:
        manifests = [vault.manifest(args.backup)]
    context = DecodeContext(configured=config.transforms, identities=tuple(args.identity))
    reports: list[VerifyReport] = []
    for m in manifests:
        deep, note, pending = args.deep, None, False
        if args.deep and args.archived != "fail":
            deep, note, pending = cli_storage.deep_or_shallow(config, m, args)
        if deep and m.source_type == "basebackup":
            # -- A base backup is checked as a whole: restored to scratch with its WAL range,
            # then pg_verifybackup (issue 14).
            from pgvault.operations.basebackup_restore import verify_base_backup

            report = verify_base_backup(vault, m, context)
        else:
            report = vault.verify(m, deep=deep, context=context)
        if pending:  # a retrieval under way: not verified yet
            report = attrs.evolve(report, problems=(VerifyProblem("(archived)", note or ""),))
        elif note and not args.json:
            print(note)
        reports.append(report)
        if args.json:
            continue
        if report.ok:
            how = "deep" if args.deep else "digests"
            n = len(report.checked)
            if report.archived:
                text = (
                    f"{n} artifact(s), {n - len(report.archived)} with matching {how}, "
                    f"{len(report.archived)} archived (size checked from the listing)"
                )
            else:
                text = f"{n} artifact(s), {how} match"
            print(f"OK {m.backup_id}: {text}")
            for path, note in report.details.items():
                print(f"   {path}: {note}")
        for problem in report.problems:
            _stderr(f"pgvault: FAILED {m.backup_id}: artifact {problem}")
    for d in damaged:
        # A manifest that cannot be read verifies nothing: FAILED, like a bad artifact.
        reports.append(
            VerifyReport(d.backup_id, args.deep, (), (VerifyProblem(MANIFEST_NAME, d.reason),))
        )
        if not args.json:
            _stderr(f"pgvault: FAILED {d.backup_id}: {MANIFEST_NAME}: {d.reason}")
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "backup_id": r.backup_id,
                        "ok": r.ok,
                        "deep": r.deep,
                        "checked": list(r.checked),
                        "problems": [
                            {"artifact": p.artifact, "message": p.message} for p in r.problems
                        ],
                        "details": r.details,
                    }
                    for r in reports
                ],
                indent=2,
            )
        )
    return EXIT_OK if all(r.ok for r in reports) else EXIT_FAILED


def _cmd_restore(args: argparse.Namespace) -> int:
    config = _config(args)
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
    progress = _progress(args, "restore")
    try:
        result = restore_backup(
            config,
            args.backup,
            target_db=args.target_db,
            target_dir=args.target_dir,
            dsn=args.dsn,
            before=args.before,
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
        _stderr(f"pgvault: warning: {note}", logging.WARNING)
    print(f"restored {result.backup_id} into {result.target}")
    if result.validation is not None:
        tables = result.validation.tables
        exact = sum(1 for t in tables if t.exact)
        print(f"validated {len(tables)} table(s) against the manifest ({exact} counted exactly)")
    return EXIT_OK


def _cmd_drill(args: argparse.Namespace) -> int:
    config = _config(args)
    cold = cli_storage.cold_drill(config, args)  # archived backups (issue 15)
    if cold is not None:
        return cold
    result = run_drill(config, args.backup, identities=tuple(args.identity))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        state = "PASSED" if result.ok else "FAILED"
        tables = len(result.validation.tables) if result.validation else 0
        print(
            f"drill {result.drill_id} of backup {result.backup_id}: {state} in "
            f"{result.duration_seconds:.1f}s ({tables} table(s) validated, "
            f"{sum(c.ok for c in result.checks)}/{len(result.checks)} check(s) passed)"
        )
        for c in result.checks:
            mark = "ok  " if c.ok else "FAIL"
            print(f"  {mark} {c.label}: {c.error or c.value} (expected {c.expected})")
    if not result.ok:
        _stderr(f"pgvault: error: drill failed: {result.error}")
        return EXIT_FAILED
    return EXIT_OK


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


def _cmd_keygen(args: argparse.Namespace) -> int:
    from pgvault.transforms import keys

    if args.x25519:
        identity, pub_path = keys.write_identity(args.out)
        print(f"wrote identity {args.out} (secret, mode 0600) and {pub_path}", file=sys.stderr)
        print(f"public key: {identity.recipient}")
        print(f"key id: {identity.key_id}")
    else:
        kid = keys.write_key_file(args.out)
        print(f"wrote key file {args.out} (secret, mode 0600)", file=sys.stderr)
        print(f"key id: {kid}")
    return EXIT_OK


def _cmd_wal_push(args: argparse.Namespace) -> int:
    from pgvault.observability import record_wal_metrics
    from pgvault.wal.push import WalPusher

    config = _config(args)
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


def _cmd_wal_fetch(args: argparse.Namespace) -> int:
    from pgvault.wal import prefetch
    from pgvault.wal.fetch import WalMissing, fetch

    data_directory = Path.cwd()
    try:
        config = _config(args)
    except PgVaultError as exc:
        _report(args, exc)
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
        _report(args, exc)
        return _fetch_failed(mode, data_directory)
    except Exception as exc:
        _report(args, exc, prefix="internal error (please report it): ")
        return _fetch_failed(mode, data_directory)
    # pg_rewind and other callers name their own targets: prefetch only for recovery.
    if args.path.name == "RECOVERYXLOG":
        from pgvault.wal.names import WalName

        prefetch.request(config, result.cluster, WalName.parse(result.name))
    return EXIT_OK


def _cmd_wal_daemon(args: argparse.Namespace) -> int:
    from pgvault.wal.daemon import WalDaemon

    WalDaemon(_config(args)).run()
    return EXIT_OK


def _cmd_wal_setup(args: argparse.Namespace) -> int:
    import shlex

    from pgvault.wal.configure import setup_lines

    config = _config(args)
    command = shlex.split(args.pgvault) if args.pgvault else None
    for line in setup_lines(config, command=command, sync=args.sync, ask_server=not args.no_server):
        print(line)
    return EXIT_OK


def _cmd_wal_check(args: argparse.Namespace) -> int:
    from pgvault.observability import record_wal_metrics
    from pgvault.wal.chain import check_chain

    config = _config(args)
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


def _cmd_wal_prefetch(args: argparse.Namespace) -> int:
    from pgvault.wal import prefetch
    from pgvault.wal.archive import ClusterId

    config = _config(args)
    try:
        cluster = ClusterId.parse(args.cluster)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    prefetch.run(config, cluster)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from pgvault.operations.report.chart import svg
    from pgvault.operations.report.report import build, load_prices
    from pgvault.units import Duration

    config = _config(args)
    try:
        since = Duration.parse(args.since).delta
    except ValueError as exc:
        raise ConfigError(f"--since: {exc}") from None
    try:
        prices = load_prices(args.prices)
    except (OSError, ValueError, AttributeError) as exc:
        raise ConfigError(f"--prices {args.prices}: cannot read the price table: {exc}") from None
    report = build(config, since=since, prices=prices)
    chart = svg(report)
    if args.chart:
        args.chart.write_text(chart)
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=2))
    elif args.format == "html":
        print(report.html(chart))
    else:
        print(report.text(), end="")
    return EXIT_OK


def _cmd_completion(args: argparse.Namespace) -> int:
    from pgvault.cli.completion import GENERATORS, install_path

    script = GENERATORS[args.shell](_build_parser())
    if not args.install:
        print(script, end="")
        return EXIT_OK
    path = install_path(args.shell)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    print(f"wrote {path}", file=sys.stderr)
    if args.shell == "zsh":
        print(
            "add to ~/.zshrc: fpath=(~/.zfunc $fpath); autoload -Uz compinit; compinit",
            file=sys.stderr,
        )
    return EXIT_OK


# --- issue 16 (operating a fleet): doctor, schedule ---


def _cmd_doctor(args: argparse.Namespace) -> int:
    from pgvault.operations.doctor import doctor, doctor_config_error

    # Like check: monitors read the first line and the exit code, so a config that cannot be
    # loaded is a CRITICAL line too.
    try:
        config = _config(args)
    except PgVaultError as exc:
        result = doctor_config_error(exc)
    else:
        result = doctor(config)
    for line in result.lines():
        print(line)
    return int(result.status)


# --- end issue 16 ---

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "completion": _cmd_completion,
    "report": _cmd_report,
    "run": _cmd_run,
    "copy": lambda args: cli_storage.cmd_copy(args, _config(args)),
    "thaw": lambda args: cli_storage.cmd_thaw(args, _config(args)),
    "list": _cmd_list,
    "show": _cmd_show,
    "verify": _cmd_verify,
    "restore": _cmd_restore,
    "prune": _cmd_prune,
    "check": _cmd_check,
    "drill": _cmd_drill,
    "keygen": _cmd_keygen,
    "mark": lambda args: pitr_cli.run_mark(args, _config(args)),
    "wal-push": _cmd_wal_push,
    "wal-fetch": _cmd_wal_fetch,
    "wal-daemon": _cmd_wal_daemon,
    "wal-setup": _cmd_wal_setup,
    "wal-check": _cmd_wal_check,
    "wal-prefetch": _cmd_wal_prefetch,
    "pin": _cmd_pin,  # issue 15 (h15b)
    "unpin": _cmd_unpin,
    "export": _cmd_export,
    "cat": _cmd_cat,
    "doctor": _cmd_doctor,  # issue 16
}
