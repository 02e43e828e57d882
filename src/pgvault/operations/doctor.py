"""``pgvault doctor``: is everything a backup needs in place? Checked without taking one.

Each check is one :class:`Finding` (one output line): the config loads; the database answers
with the rights ``pg_dump`` needs; the client tools are there and new enough for the server; the
sink is reachable and writable (a test object is written, read back and removed); key files are
readable and private; there is free space; the clocks of this host, the sink and the database
agree; and, when the config has a ``[wal]`` table, the server archives to this vault the way
``pgvault wal-setup`` prints it. The worst finding is the exit code, as ``pgvault check``'s:
0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (could not be checked).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from pgvault.exceptions import PgVaultError
from pgvault.operations.check import Status

if TYPE_CHECKING:
    import psycopg

    from pgvault.pipeline_config import PipelineConfig

CLOCK_WARN = timedelta(seconds=60)
"""A skew above this makes ages, retention and PITR targets wrong by as much: WARNING."""
CLOCK_CRITICAL = timedelta(minutes=15)
"""S3 refuses requests signed more than 15 minutes off: CRITICAL."""

__all__ = [
    "CLOCK_CRITICAL",
    "CLOCK_WARN",
    "DoctorResult",
    "Finding",
    "Status",
    "doctor",
    "doctor_config_error",
]


@attrs.frozen
class Finding:
    """One check's outcome: ``status``, the check's ``name`` and what it found."""

    name: str
    status: Status
    detail: str

    def line(self) -> str:
        """The output line: ``OK     sink: …``."""
        return f"{self.status.name:<8} {self.name}: {self.detail}"


@attrs.frozen
class DoctorResult:
    """Every finding, in the order the checks ran."""

    findings: tuple[Finding, ...]

    @property
    def status(self) -> Status:
        """The worst finding's status (OK when there are none)."""
        return max((f.status for f in self.findings), default=Status.OK)

    def lines(self) -> list[str]:
        """One line per check."""
        return [f.line() for f in self.findings]


def doctor_config_error(exc: BaseException) -> DoctorResult:
    """The result when the config itself cannot be loaded: nothing else can be checked."""
    text = str(exc).replace("\n", " ") or type(exc).__name__
    return DoctorResult((Finding("config", Status.CRITICAL, text),))


def doctor(config: PipelineConfig, *, now: Callable[[], datetime] | None = None) -> DoctorResult:
    """Run every check on ``config`` (already loaded) and return the findings."""
    clock = now or (lambda: datetime.now(UTC))
    found: list[Finding] = [Finding("config", Status.OK, f"{config.where()} loads")]
    found += _source_checks(config, clock)
    found += _sink_checks(config, clock)
    found += _key_checks(config)
    found += _wal_checks(config)
    return DoctorResult(tuple(found))


def _guard(name: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """A check that raises is CRITICAL when pgvault's own error says what is wrong, UNKNOWN for
    anything else (it could not be checked)."""
    try:
        return check()
    except PgVaultError as exc:
        return [Finding(name, Status.CRITICAL, _one_line(exc))]
    except Exception as exc:
        return [Finding(name, Status.UNKNOWN, f"could not check: {_one_line(exc)}")]


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


# The database and its client tools


def _source_checks(config: PipelineConfig, clock: Callable[[], datetime]) -> list[Finding]:
    from pgvault.sources.pg_dump import PgDumpSource
    from pgvault.sources.set import SourceSet

    source = config.source
    if isinstance(source, SourceSet):  # each part checked as its own source, named by its part
        return [
            attrs.evolve(f, name=f"{m.name}: {f.name}")
            for m in source.members
            for f in _source_checks(attrs.evolve(config, source=m.source), clock)
        ]
    if not isinstance(source, PgDumpSource):
        missing = [str(p) for p in getattr(source, "paths", ()) if not Path(p).is_dir()]
        if missing:
            return [Finding("source", Status.CRITICAL, f"not folders: {', '.join(missing)}")]
        return [Finding("source", Status.OK, source.describe())]
    from pgvault.postgres.client import connect, describe_dsn

    where = describe_dsn(source.dsn)
    try:
        conn = connect(source.dsn)
    except PgVaultError as exc:
        return [Finding("database", Status.CRITICAL, f"{where}: {_one_line(exc)}")]
    with conn:
        found = _guard("database", lambda: _rights(conn, source, where))
        found += _guard("client tools", lambda: _tools(conn, source))
        found += _guard("clock", lambda: _db_clock(conn, clock))
    return found


def _rights(conn: psycopg.Connection[Any], source: Any, where: str) -> list[Finding]:
    from pgvault.sources.pg_dump import schema_selected

    row = conn.execute(
        "SELECT current_user, current_database(), current_setting('server_version'), "
        "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
    ).fetchone()
    assert row is not None
    user, database, version, superuser = row
    unusable = [
        str(r[0])
        for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE NOT has_schema_privilege(oid, 'USAGE') "
            "AND nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp%' ORDER BY 1"
        ).fetchall()
    ]
    # pg_dump reads every table and sequence it dumps: one it may not SELECT stops the dump.
    unreadable = [
        (str(r[0]), str(r[1]))
        for r in conn.execute(
            "SELECT n.nspname, n.nspname || '.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'S', 'm') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' "
            "AND NOT CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'SELECT') "
            "ELSE has_table_privilege(c.oid, 'SELECT') END ORDER BY 2"
        ).fetchall()
    ]
    if source.schemas:
        unusable = [s for s in unusable if schema_selected(s, source.schemas)]
        unreadable = [t for t in unreadable if schema_selected(t[0], source.schemas)]
    unreadable = [t for t in unreadable if not schema_selected(t[0], source.exclude_schemas)]
    head = f"{where} ({database} as {user}, PostgreSQL {version})"
    problems = []
    if unusable:
        problems.append(f"no USAGE on schema {', '.join(unusable[:5])}")
    if unreadable:
        more = f" and {len(unreadable) - 5} more" if len(unreadable) > 5 else ""
        names = ", ".join(t[1] for t in unreadable[:5])
        problems.append(f"no SELECT on {names}{more}")
    if source.globals and source.role_passwords and not superuser:
        problems.append("role_passwords = true needs a superuser (pg_authid)")
    if problems:
        return [
            Finding(
                "database", Status.CRITICAL, f"{head}: pg_dump would fail: " + "; ".join(problems)
            )
        ]
    return [Finding("database", Status.OK, f"{head}: can read every table pg_dump dumps")]


def _tools(conn: psycopg.Connection[Any], source: Any) -> list[Finding]:
    from pgvault.postgres.client import find_binary, tool_version

    major = conn.info.server_version // 10000
    out = []
    for name in ("pg_dump", "pg_restore"):
        configured = source.pg_dump if name == "pg_dump" else None
        if configured is None and source.pg_dump and name == "pg_restore":
            beside = Path(source.pg_dump).with_name("pg_restore")
            configured = str(beside) if beside.is_file() else None
        try:
            binary = find_binary(name, server_major=major, configured=configured)
        except PgVaultError as exc:
            out.append(Finding(name, Status.CRITICAL, _one_line(exc)))
            continue
        version = tool_version(binary)
        tool_major = _major(version)
        if tool_major is None:
            out.append(Finding(name, Status.UNKNOWN, f"{binary}: unreadable version {version!r}"))
        elif tool_major < major:
            # pg_dump refuses a server newer than itself ("server version mismatch").
            out.append(
                Finding(
                    name,
                    Status.CRITICAL,
                    f"{binary} is {version}, older than the server's {major}: "
                    f"install postgresql-client-{major}",
                )
            )
        else:
            out.append(Finding(name, Status.OK, f"{binary} {version} (server {major})"))
    return out


def _major(version: str) -> int | None:
    m = re.match(r"(\d+)", version)
    return int(m.group(1)) if m else None


def _db_clock(conn: psycopg.Connection[Any], clock: Callable[[], datetime]) -> list[Finding]:
    before = clock()
    row = conn.execute("SELECT now()").fetchone()
    after = clock()
    assert row is not None
    server: datetime = row[0]
    return [_skew_finding("clock", "database server", server, before, after)]


def _skew_finding(
    name: str, other: str, theirs: datetime, before: datetime, after: datetime
) -> Finding:
    # Their time was taken between our two readings: the skew is how far outside that it is.
    skew = max(before - theirs, theirs - after, timedelta(0))
    text = f"{other}'s clock is {_human(skew)} {'behind' if theirs < before else 'ahead'}"
    if skew <= CLOCK_WARN:
        return Finding(
            name,
            Status.OK,
            f"{other}'s clock agrees with this host's (within {_human(CLOCK_WARN)})",
        )
    status = Status.CRITICAL if skew > CLOCK_CRITICAL else Status.WARNING
    return Finding(name, status, f"{text}: set up NTP (timedatectl set-ntp true)")


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


# The sink


def _sink_checks(config: PipelineConfig, clock: Callable[[], datetime]) -> list[Finding]:
    sink = config.sink
    where = sink.describe()
    try:
        sink.check()
        key = f"{config.name}/.doctor/{secrets.token_hex(8)}"
        payload = secrets.token_bytes(64)
        before = clock()
        sink.write_bytes(key, payload)
        after = clock()
        try:
            listed = [i for i in sink.list(f"{config.name}/.doctor/") if i.key == key]
            if sink.read_bytes(key) != payload:
                raise PgVaultError(f"{where}: test object {key} read back different bytes")
        finally:
            sink.delete(key)
        if sink.exists(key):
            raise PgVaultError(f"{where}: test object {key} is still there after delete")
    except PgVaultError as exc:
        return [Finding("sink", Status.CRITICAL, _one_line(exc))]
    except Exception as exc:
        return [Finding("sink", Status.CRITICAL, f"{where}: {_one_line(exc)}")]
    found = [Finding("sink", Status.OK, f"{where}: test object written, read back and removed")]
    found += _guard("free space", lambda: _free_space(config))
    modified = listed[0].modified if listed else None
    if modified is None:
        found.append(Finding("sink clock", Status.OK, f"{where} does not report write times"))
    else:
        # Write times are often whole seconds: allow one either side.
        slack = timedelta(seconds=1)
        found.append(_skew_finding("sink clock", "sink", modified, before - slack, after + slack))
    return found


def _free_space(config: PipelineConfig) -> list[Finding]:
    from pgvault.engine.progress import human_bytes
    from pgvault.operations.check import ReportsDiskUsage

    sink = config.sink
    if not isinstance(sink, ReportsDiskUsage):
        return [Finding("free space", Status.OK, f"{sink.describe()}: no fixed capacity to check")]
    total, free = sink.disk_usage()
    limit = config.check.min_free
    text = f"{human_bytes(free)} free of {human_bytes(total)}"
    if limit is not None and free < limit.bytes_of(total):
        return [Finding("free space", Status.WARNING, f"{text}, below min_free {limit}")]
    newest = _newest_size(config)
    if newest is not None and free < newest:
        return [
            Finding(
                "free space",
                Status.WARNING,
                f"{text}, less than the newest backup's {human_bytes(newest)}",
            )
        ]
    return [Finding("free space", Status.OK, text)]


def _newest_size(config: PipelineConfig) -> int | None:
    from pgvault.vault.contents import Vault

    with contextlib.suppress(PgVaultError):
        scheduled = Vault.from_config(config).contents().scheduled
        if scheduled:
            return max(scheduled, key=lambda m: m.started_at).size
    return None


# Keys


def _key_checks(config: PipelineConfig) -> list[Finding]:
    from pgvault.transforms.encrypt import Aes256Gcm

    found: list[Finding] = []
    for t in config.transforms:
        if not isinstance(t, Aes256Gcm):
            continue
        for what, path in _key_files(t):
            found.append(_key_file(what, path))
        for env_name in [t.passphrase_env, *t.old_passphrase_envs]:
            if env_name and not os.environ.get(env_name):
                found.append(
                    Finding("keys", Status.CRITICAL, f"passphrase_env {env_name} is not set")
                )
            elif env_name:
                found.append(Finding("keys", Status.OK, f"passphrase_env {env_name} is set"))
    return found


def _key_files(t: Any) -> Iterator[tuple[str, Path]]:
    if t.key_file is not None:
        yield "key_file", Path(t.key_file)
    for p in t.old_key_files:
        yield "old_key_files", Path(p)
    for p in t.identity_files:
        yield "identity_files", Path(p)
    for p in t.recipient_files:
        yield "recipient_files", Path(p)


def _key_file(what: str, path: Path) -> Finding:
    try:
        mode = path.stat().st_mode
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        return Finding("keys", Status.CRITICAL, f"{what} {path}: cannot read: {exc.strerror}")
    if not stat.S_ISREG(mode):
        return Finding("keys", Status.CRITICAL, f"{what} {path}: not a file")
    # A public key may be world-readable; a secret must not be.
    if what != "recipient_files" and mode & 0o077:
        return Finding(
            "keys",
            Status.WARNING,
            f"{what} {path}: readable by others (mode {mode & 0o777:o}): chmod 600 {path}",
        )
    return Finding("keys", Status.OK, f"{what} {path}: readable, mode {mode & 0o777:o}")


# WAL archiving


def _wal_checks(config: PipelineConfig) -> list[Finding]:
    from pgvault.wal.settings import WalSettings

    if config.wal == WalSettings():
        return []
    return _guard("wal", lambda: _wal_server(config))


def _wal_server(config: PipelineConfig) -> list[Finding]:
    import psycopg

    from pgvault.wal.chain import wal_dsn
    from pgvault.wal.configure import archive_command, pgvault_command

    dsn = wal_dsn(config)
    if not dsn:
        return [Finding("wal", Status.UNKNOWN, "no server to ask ([wal] dsn or the source's dsn)")]
    try:
        with psycopg.connect(dsn, connect_timeout=10, autocommit=True) as conn:
            names = ("archive_mode", "wal_level", "archive_command")
            values = {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]
    except psycopg.Error as exc:
        return [Finding("wal", Status.CRITICAL, f"server not reachable: {_one_line(exc)}")]
    found = []
    for name, good in (("archive_mode", ("on", "always")), ("wal_level", ("replica", "logical"))):
        if values[name] in good:
            found.append(Finding(f"wal {name}", Status.OK, values[name]))
        else:
            found.append(
                Finding(
                    f"wal {name}",
                    Status.CRITICAL,
                    f"{values[name]}, needs {good[0]} (set it and restart the server)",
                )
            )
    command = pgvault_command()
    expected = [
        _unquote(archive_command(config, command)),
        _unquote(archive_command(config, command, sync=True)),
    ]
    actual = values["archive_command"]
    if actual in expected:
        found.append(Finding("wal archive_command", Status.OK, "as pgvault wal-setup prints it"))
    elif _same_command(actual, expected):
        found.append(
            Finding(
                "wal archive_command",
                Status.OK,
                "archives to this config (another pgvault path than wal-setup prints)",
            )
        )
    else:
        found.append(
            Finding(
                "wal archive_command",
                Status.CRITICAL,
                f"is {actual!r}; pgvault wal-setup prints {expected[0]!r}",
            )
        )
    return found


def _unquote(conf: str) -> str:
    """A postgresql.conf string literal (``'…'``, quotes doubled) back to its value."""
    return conf[1:-1].replace("''", "'")


def _same_command(actual: str, expected: list[str]) -> bool:
    """Whether ``actual`` runs the same subcommand on the same config as one of ``expected``,
    whatever the pgvault executable's path (a venv moved, ``python -m pgvault``)."""
    try:
        words = shlex.split(actual)
    except ValueError:
        return False
    for line in expected:
        want = shlex.split(line)
        # The tail from the subcommand (wal-push CONFIG %p) or the ack.sh arguments must match.
        if "wal-push" in want and "wal-push" in words:
            i, j = want.index("wal-push"), words.index("wal-push")
            if want[i:] == words[j:]:
                return True
    return False
