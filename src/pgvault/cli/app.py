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
import importlib
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from pgvault.cli import common
from pgvault.cli.exits import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from pgvault.cli.parser import build_parser
from pgvault.config_lookup import with_default_config
from pgvault.exceptions import Aborted, ConfigError, PgVaultError

_C = "pgvault.cli.commands."
COMMANDS: dict[str, str] = {
    "run": _C + "backup:cmd_run",
    "keygen": _C + "backup:cmd_keygen",
    "list": _C + "listing:cmd_list",
    "show": _C + "listing:cmd_show",
    "verify": _C + "listing:cmd_verify",
    "restore": _C + "restore:cmd_restore",
    "mark": _C + "restore:cmd_mark",
    "prune": _C + "retention:cmd_prune",
    "pin": _C + "retention:cmd_pin",
    "unpin": _C + "retention:cmd_unpin",
    "check": _C + "health:cmd_check",
    "drill": _C + "health:cmd_drill",
    "doctor": _C + "health:cmd_doctor",
    "copy": _C + "storage:cmd_copy",
    "thaw": _C + "storage:cmd_thaw",
    "export": _C + "storage:cmd_export",
    "cat": _C + "storage:cmd_cat",
    "wal-push": _C + "wal:cmd_wal_push",
    "wal-fetch": _C + "wal:cmd_wal_fetch",
    "wal-daemon": _C + "wal:cmd_wal_daemon",
    "wal-setup": _C + "wal:cmd_wal_setup",
    "wal-check": _C + "wal:cmd_wal_check",
    "wal-prefetch": _C + "wal:cmd_wal_prefetch",
    "report": _C + "report:cmd_report",
    "schedule": _C + "schedule:cmd_schedule",
    "completion": "pgvault.cli.completion:cmd_completion",
}
"""Each command's handler as ``module:function``, imported only when that command runs: the
handlers' modules import the driver, the engine and the operations, which ``--help``, a usage
error and every other command do without."""

log = logging.getLogger("pgvault")


def handler(command: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs ``command`` (importing its module now)."""
    module, _, name = COMMANDS[command].partition(":")
    function: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return function


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
    parser = build_parser()
    # A config found by name or by $PGVAULT_CONFIG (pgvault.config_lookup); keygen takes none.
    given = sys.argv[1:] if argv is None else argv
    args, extra = parser.parse_known_args(with_default_config(given, set(COMMANDS) - {"keygen"}))
    # argparse binds `copy CONFIG`'s trailing ids at CONFIG, before --from/--to: take the ids
    # that follow the options here (anything else stays the usual usage error).
    if extra and args.command == "copy" and not any(e.startswith("-") for e in extra):
        args.backups = [*args.backups, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _setup_logging(args)
    # By default SIGTERM kills Python on the spot: no cleanup, pg_dump left running. (Only the
    # main thread may set handlers; main() called from another thread keeps the default.)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        code = handler(args.command)(args)
        # Output to a pipe is buffered: flush while a closed reader can still be told apart.
        sys.stdout.flush()
        return code
    except BrokenPipeError as exc:
        if not _stdout_closed():  # another pipe than stdout: a bug, reported as one
            common.report(args, exc, prefix=common.INTERNAL)
            return EXIT_FAILED
        # `pgvault list | head`: the reader has all it wanted. Exit as quietly as coreutils do,
        # and keep Python's own flush at exit from writing into the closed pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    except Terminated as exc:
        common.stderr(f"pgvault: terminated (SIGTERM); {_left_behind(exc)}", logging.WARNING)
        return EXIT_TERMINATED
    except KeyboardInterrupt as exc:
        common.stderr(f"pgvault: interrupted; {_left_behind(exc)}", logging.WARNING)
        return EXIT_INTERRUPTED
    except Aborted as exc:
        common.stderr(f"pgvault: {exc}", logging.WARNING)
        return EXIT_FAILED
    except ConfigError as exc:
        common.report(args, exc)
        return EXIT_USAGE
    except PgVaultError as exc:
        common.report(args, exc)
        return EXIT_FAILED
    except Exception as exc:
        # A bug, not a user mistake: say so, in one line unless --debug.
        common.report(args, exc, prefix=common.INTERNAL)
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


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    from pgvault.observability import stderr_handler  # not needed for --help

    root = logging.getLogger("pgvault")
    # The CLI prints a failure's one error line itself: its stderr handler drops the failure's
    # log record (files, journald and root handlers still get it).
    root.handlers[:] = [stderr_handler("text", level, caller_reports=True)]
    root.setLevel(level)
