"""The whole ``pgvault`` argument parser, built from argparse and pgvault's cheap leaf modules.

Nothing here may import a driver, an operation, the engine, the vault or the config at module
level: ``pgvault --help``, ``--version`` and a mistyped option are answered from this module
alone, and the completion generator (:mod:`pgvault.cli.completion`) reads the same parser. The
handlers live in :mod:`pgvault.cli.commands` and are imported only when their command runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgvault.cli.exits import EXIT_ABORT_RECOVERY, EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2, like every other mistake
        self.exit(EXIT_USAGE, f"pgvault: error: {message} (see --help)\n")


class _FetchParser(_Parser):
    """wal-fetch's arguments: a restore_command with a mistake in it must stop recovery, not
    look like "file not archived" (exit 1 or 2 would end recovery early)."""

    def error(self, message: str) -> Any:
        self.exit(EXIT_ABORT_RECOVERY, f"pgvault: error: {message} (see --help)\n")


class _Version(argparse.Action):
    """``--version``: the installed version, read only when asked (importlib.metadata costs
    more than building the whole parser)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import version

        print(f"pgvault {version('pgvault')}")  # stdout, as argparse's own version action does
        parser.exit()


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


def build_parser() -> argparse.ArgumentParser:
    """The parser of every ``pgvault`` command (its ``command`` is the subcommand's name)."""
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
    parser.add_argument("--version", action=_Version, help="show program's version number and exit")
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
    _add_backup(p)
    p.add_argument("--until", default="forever", metavar="WHEN", help="date, duration or forever")
    p.add_argument("--note", default="", metavar="TEXT", help="why it is pinned")

    p = command("unpin", "remove a backup's pin (retention decides about it again)")
    _add_backup(p)

    p = command("export", "write a backup's decoded files and an MD5SUMS into a folder")
    _add_backup(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write into")
    p.add_argument("--part", action="append", default=[], metavar="P", help="only this part")
    _add_identity(p)

    p = command("cat", "write one decoded artifact to stdout (e.g. | pg_restore -l)")
    _add_backup(p)
    p.add_argument("artifact", help="artifact name, e.g. dump.pgdump (see pgvault show)")
    _add_identity(p)
    # --- end issue 15 (h15b) ----------------------------------------------------------------

    p = command("list", "list complete backups, newest first")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("show", "print a backup's manifest")
    _add_backup(p)
    p.add_argument(
        "--parts", action="store_true", help="a backup of parts: one line per part, not the JSON"
    )

    p = command("verify", "re-read artifacts and check their digests")
    _add_latest_backup(p)
    p.add_argument("--all", action="store_true", help="verify every complete backup")
    p.add_argument("--deep", action="store_true", help="also decode and check the dump format")
    _add_archived_options(
        p,
        "with --deep, a backup in an archive class: fail (default), skip the deep check "
        "(sizes only), or thaw it and check it deep once readable",
    )
    p.add_argument("--json", action="store_true", help="print JSON reports")

    p = command("restore", "restore a backup into a new database or folder")
    p.add_argument("backup", nargs="?", default="latest", help="backup id, id prefix, or 'latest'")
    p.add_argument(
        "--before",
        type=_timestamp,
        metavar="TIME",
        help="the newest backup started at or before TIME (ISO 8601; UTC if no zone)",
    )
    # Repeatable, as PART=NAME / PART=DIR, for backups of parts (issue 15); the restore command
    # turns them back into one plain value (what every other backup takes) and the per-part ones.
    p.add_argument(
        "--target-db",
        action="append",
        default=[],
        metavar="NAME",
        help="database to create and restore into (a backup of parts: PART=NAME, repeatable)",
    )
    p.add_argument(
        "--target-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="folder for files backups (a backup of parts: PART=DIR, repeatable)",
    )
    p.add_argument(
        "--part",
        action="append",
        default=[],
        metavar="NAME",
        help="a backup of parts: restore only this part (repeatable; default all)",
    )
    p.add_argument("--list", action="store_true", help="print the archive's table of contents")
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
    _add_identity(p)
    # Several destinations and archive classes (issue 15).
    p.add_argument("--from", dest="source", metavar="SINK", help="read from this destination")
    p.add_argument(
        "--thaw", action="store_true", help="request the retrieval of an archived backup first"
    )
    p.add_argument("--wait", action="store_true", help="with --thaw: wait until it is readable")
    add_thaw_options(p)
    # --- point-in-time recovery (issue 14) ---
    add_pitr_restore_arguments(p)
    _add_mark_arguments(command("mark", "create a named restore point and record it"))
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
    _add_latest_backup(p)
    _add_archived_options(
        p,
        "a backup in an archive class: fail (default), skip the drill (exit 0), or thaw it and "
        "drill once readable",
    )
    p.add_argument("--json", action="store_true", help="print the drill result as JSON")

    p = command("copy", "copy backups a destination lacks from another (artifacts, then manifest)")
    p.add_argument("--from", dest="source", required=True, metavar="SINK", help="destination name")
    p.add_argument("--to", dest="target", required=True, metavar="SINK", help="destination name")
    p.add_argument("backups", nargs="*", metavar="ID", help="only these (ids, prefixes, 'latest')")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")

    p = command("thaw", "request the retrieval of a backup in an archive storage class")
    _add_backup(p)
    p.add_argument("--from", dest="source", metavar="SINK", help="destination (default: first)")
    add_thaw_options(p)
    p.add_argument("--status", action="store_true", help="only show where the retrieval stands")
    p.add_argument("--json", action="store_true", help="print JSON")

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
    _add_identity(p)

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
    _add_identity(p)
    p.add_argument("--no-server", action="store_true", help="do not connect to the server")

    p = command("wal-prefetch", "internal: the background prefetcher wal-fetch starts")
    p.add_argument("cluster", help="<major>-<system identifier>")

    # --- issue 16 (operating a fleet): doctor, schedule ---
    p = command("doctor", "check config, database, tools, sink, keys, space, clocks; no backup")
    p = command("schedule", "print crontab lines or systemd units for the [schedule] jobs")
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--cron", action="store_true", help="an /etc/cron.d file")
    kind.add_argument("--systemd", action="store_true", help="a .service and .timer per job")
    p.add_argument("--user", help="user the jobs run as (default: you)")
    p.add_argument(
        "--env-file",
        type=Path,
        metavar="FILE",
        help="KEY=value file read before each job, for secrets (default: CONFIG's name with "
        ".env, when it exists)",
    )
    p.add_argument(
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="with --systemd: write the units into DIR (e.g. /etc/systemd/system)",
    )
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
    p.add_argument("--notify", action="store_true", help='also send it to events = ["report"]')

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


def _add_backup(p: argparse.ArgumentParser) -> None:
    """The one backup a command works on (pin, unpin, export, cat, show, thaw)."""
    p.add_argument("backup", help="backup id, id prefix, or 'latest'")


def _add_latest_backup(p: argparse.ArgumentParser) -> None:
    """The backup verify and drill check, the newest if none is named."""
    p.add_argument("backup", nargs="?", default="latest", help="backup id or 'latest' (default)")


def _add_identity(p: argparse.ArgumentParser) -> None:
    """``--identity``, repeatable: the private key files of a command that decrypts."""
    p.add_argument("--identity", type=Path, action="append", default=[], help="private key file")


def _add_archived_options(p: argparse.ArgumentParser, archived_help: str) -> None:
    """verify's and drill's ``--archived`` (what to do with a backup in an archive class; the
    help says what skipping means for the command), the thaw options and ``--identity``."""
    p.add_argument(
        "--archived", choices=("fail", "skip", "thaw"), default="fail", help=archived_help
    )
    add_thaw_options(p)
    _add_identity(p)


def add_thaw_options(p: argparse.ArgumentParser) -> None:
    """``--thaw-days`` and ``--thaw-speed`` (thaw, restore, verify, drill)."""
    p.add_argument(
        "--thaw-days", type=int, default=7, metavar="N", help="keep the thawed copy N days (7)"
    )
    p.add_argument(
        "--thaw-speed",
        choices=("Standard", "Bulk", "Expedited"),
        default="Standard",
        help="retrieval speed (and price): Standard (default), Bulk, Expedited",
    )


def add_pitr_restore_arguments(parser: argparse.ArgumentParser) -> None:
    """The point-in-time recovery options of ``pgvault restore`` (issue 14); which of them make
    a restore one is :data:`pgvault.operations.pitr.cli._TARGET_OPTIONS`, read from here."""
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


def _add_mark_arguments(sub: argparse.ArgumentParser) -> None:
    """The arguments of ``pgvault mark CONFIG NAME``."""
    sub.add_argument("name", help="restore point name (letters, digits, . _ -)")
    sub.add_argument(
        "--no-switch",
        action="store_true",
        help="do not switch WAL afterwards (the mark is archived when its segment fills)",
    )
    sub.add_argument("--json", action="store_true", help="print the mark as JSON")


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
