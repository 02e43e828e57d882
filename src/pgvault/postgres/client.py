"""Talking to PostgreSQL and its client tools: finding binaries, connecting, running them.

Passwords never go on a command line (where ``ps`` shows them to every user): a DSN's password is
moved into the child's ``PGPASSWORD``. Children are identified to the server as ``pgvault``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pgvault.exceptions import ConfigError, SourceError, SourceUnavailableError
from pgvault.postgres.conninfo import make_conninfo, parse_conninfo

if TYPE_CHECKING:
    import psycopg

APPLICATION_NAME = "pgvault"


def split_dsn(dsn: str, **overrides: str) -> tuple[str, dict[str, str]]:
    """Turn ``dsn`` (URI or conninfo; empty means libpq defaults) into a password-free conninfo
    plus the environment a libpq child process needs (``PGPASSWORD``, ``PGAPPNAME``)."""
    try:
        params = parse_conninfo(dsn)
    except ValueError as exc:
        raise ConfigError(
            f"invalid PostgreSQL connection string: {conninfo_problem(exc)}"
        ) from None
    params.update(overrides)
    env = dict(os.environ)
    env.setdefault("PGAPPNAME", APPLICATION_NAME)
    password = params.pop("password", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo(params), env


def with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` (URI or conninfo) as a conninfo string that connects to database ``dbname``; any
    name, quotes and spaces included, is passed as it is."""
    try:
        params = parse_conninfo(dsn)
    except ValueError as exc:
        raise ConfigError(
            f"invalid PostgreSQL connection string: {conninfo_problem(exc)}"
        ) from None
    params["dbname"] = dbname
    return make_conninfo(params)


def check_dsn(dsn: str) -> None:
    """Raise ValueError (never quoting ``dsn``) if it is not a valid URI or conninfo string."""
    try:
        parse_conninfo(dsn)
    except ValueError as exc:
        raise ValueError(f"invalid PostgreSQL connection string: {conninfo_problem(exc)}") from None


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def conninfo_problem(exc: BaseException) -> str:
    """libpq's complaint about a connection string, with every quoted fragment withheld.

    libpq quotes the part it could not parse (``invalid percent-encoded token: "Pct%ZZ-…"``),
    and that part is often the password: a message must name the fault, never echo it.
    """
    line = first_line(str(exc)).strip()
    redacted = _QUOTED.sub(lambda m: m.group(0) if m.group(0) == '"="' else '"…"', line)
    if redacted.count('"') % 2:
        redacted = redacted.split('"', 1)[0].rstrip(" :")  # an unbalanced quote: cut it off
    if redacted != line:
        redacted += " (the quoted text is withheld: it may hold the password)"
    return redacted


def connect(dsn: str, **overrides: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to ``dsn`` (with ``overrides`` such as ``dbname``).

    The client encoding is always UTF8: on a ``SQL_ASCII`` database psycopg would otherwise
    return every text value as bytes (a snapshot id ``b'00000003-…'``, names as ``b'public'``).
    The server converts from every other encoding; from SQL_ASCII it passes bytes through, which
    suits names (pgvault's queries read names and counts, never table data).
    """
    # Imported here, where a connection is made: the config imports this module through the
    # sources, and most commands never connect (pgvault.postgres.conninfo reads DSNs without it).
    import psycopg

    kwargs: dict[str, str] = {
        "application_name": APPLICATION_NAME,
        "client_encoding": "UTF8",
        **overrides,
    }
    try:
        return psycopg.connect(dsn, autocommit=True, **kwargs)  # type: ignore[arg-type]
    except psycopg.ProgrammingError as exc:
        # Raised before any connection attempt: the string itself is malformed.
        raise SourceError(
            f"invalid PostgreSQL connection string: {conninfo_problem(exc)}"
        ) from None
    except psycopg.Error as exc:
        raise SourceUnavailableError(
            f"cannot connect to PostgreSQL: {first_line(str(exc))}"
        ) from None


def describe_dsn(dsn: str, **overrides: str) -> str:
    """``user@host:port/dbname`` for messages: never the password."""
    try:
        params = {**parse_conninfo(dsn), **overrides}
    except ValueError:
        return "<invalid dsn>"
    user = str(params.get("user") or os.environ.get("PGUSER", ""))
    host = str(params.get("host") or os.environ.get("PGHOST", "local socket"))
    port = str(params.get("port") or os.environ.get("PGPORT", "5432"))
    db = str(params.get("dbname") or os.environ.get("PGDATABASE", user))
    return f"{user + '@' if user else ''}{host}:{port}/{db}"


def find_binary(
    name: str, *, server_major: int | None = None, configured: str | None = None
) -> str:
    """Path of the PostgreSQL client tool ``name`` (pg_dump, pg_restore, psql).

    ``configured`` wins when given. Otherwise prefer the binaries of the server's major version
    (Debian installs several side by side), then ``$PG_BINDIR``, ``pg_config --bindir``, and
    ``PATH``. Raises SourceError naming every place looked in.
    """
    if configured:
        path = Path(configured)
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        found = shutil.which(configured)
        if found:
            return found
        raise SourceError(f"{name} not found at {configured}")
    candidates: list[Path] = []
    for candidate in _candidates(name, server_major):
        candidates.append(candidate)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    looked = ", ".join(str(c) for c in candidates) + (", " if candidates else "") + "PATH"
    hint = f" (install postgresql-client-{server_major})" if server_major else ""
    raise SourceError(f"{name} not found; looked in {looked}{hint}")


def _candidates(name: str, server_major: int | None) -> Iterator[Path]:
    """Where ``name`` may be, in order; ``pg_config`` runs only if the places before it fail
    (a child process of its own on every backup and restore, otherwise)."""
    if server_major:
        yield Path(f"/usr/lib/postgresql/{server_major}/bin/{name}")
    if os.environ.get("PG_BINDIR"):
        yield Path(os.environ["PG_BINDIR"], name)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return
        yield Path(bindir, name)


def tool_version(binary: str) -> str:
    """The version a client tool reports (``15.20``), or raise SourceError.

    Asked once per binary and process: a many-database dump starts a run per database, and a
    ``pg_dump --version`` child for each was a process spawn per database for the same answer.
    """
    try:  # keyed by the file's identity too: a long-lived worker may outlive an upgrade
        key = (binary, Path(binary).stat().st_mtime_ns)
    except OSError:
        return _ask_version(binary)  # which names the binary that cannot run
    found = _TOOL_VERSIONS.get(key)
    if found is None:
        found = _TOOL_VERSIONS[key] = _ask_version(binary)
    return found


_TOOL_VERSIONS: dict[tuple[str, int], str] = {}


def _ask_version(binary: str) -> str:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SourceError(f"cannot run {binary} --version: {exc}") from None
    m = re.search(r"(\d+(?:\.\d+)?)", out)
    return m.group(1) if m else out.strip()


def exit_description(binary: str, returncode: int, stderr: str) -> str:
    """One line saying how a client tool failed, with its own error text."""
    tool = Path(binary).name
    if returncode < 0:
        try:
            how = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"failed (exit {returncode})"
    text = tool_error_text(stderr)
    return f"{tool} {how}: {text}" if text else f"{tool} {how}"


def tool_error_text(stderr: str) -> str:
    """The meaningful part of a client tool's stderr, on one line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln or "FATAL:" in ln or "ERROR:" in ln]
    chosen = errors or lines[-3:]
    return " | ".join(chosen[:4])


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (also pg_dump's exact-match pattern)."""
    return '"' + name.replace('"', '""') + '"'


def first_line(text: str) -> str:
    """The first line of a (server or tool) message, for a one-line error."""
    return text.strip().splitlines()[0] if text.strip() else text


def child_env(base: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``base`` suitable for a child process (locale fixed for parseable messages)."""
    env = dict(base)
    env.setdefault("LC_MESSAGES", "C")
    return env


class _Collector:
    """Reads a child's pipe in a thread, keeping only the tail (a chatty tool can't fill memory)."""

    def __init__(self, pipe: object, limit: int = 256 * 1024, keep_all: bool = False) -> None:
        import threading

        self._pipe = pipe
        self._limit = limit
        self._keep_all = keep_all
        self._parts: list[bytes] = []
        self._size = 0
        self._thread = threading.Thread(target=self._read, daemon=True, name="pgvault-pipe")
        self._thread.start()

    def _read(self) -> None:
        pipe: Any = self._pipe
        try:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    return
                self._parts.append(chunk)
                self._size += len(chunk)
                while not self._keep_all and self._size > self._limit and len(self._parts) > 1:
                    self._size -= len(self._parts.pop(0))
        finally:
            pipe.close()

    def text(self, timeout: float | None = None) -> str:
        """Everything kept, once the pipe is closed (or after ``timeout``)."""
        self._thread.join(timeout)
        return b"".join(self._parts).decode("utf-8", "replace")


def pipe_into(
    argv: list[str], chunks: object, env: Mapping[str, str], *, keep_stdout: bool = False
) -> tuple[int, str, str]:
    """Run ``argv`` with ``chunks`` (an iterator of bytes) on its stdin.

    Returns ``(returncode, stdout, stderr)``. If the child exits early and closes its stdin, feeding
    stops without consuming the rest of ``chunks``: the caller decides whether that matters.
    Errors raised by ``chunks`` kill the child and propagate.
    """
    try:
        # Unbuffered stdin: a child that exits early must not leave a buffer that can never flush.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(env),
            bufsize=0,
        )
    except OSError as exc:
        raise SourceError(f"cannot run {argv[0]}: {exc.strerror}") from None
    assert proc.stdin is not None
    stdin = proc.stdin
    widen_pipe(stdin.fileno())
    out = _Collector(proc.stdout, keep_all=keep_stdout)
    err = _Collector(proc.stderr)
    try:
        with stdin:
            for chunk in chunks:  # type: ignore[attr-defined]
                view = memoryview(chunk)
                try:
                    while view:
                        view = view[stdin.write(view) or 0 :]
                except BrokenPipeError:
                    break
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    rc = proc.wait()
    return rc, out.text(), err.text()


PIPE_CAPACITY = 1 << 20
"""What :func:`widen_pipe` asks for: one chunk (``sources.api.CHUNK_SIZE``) at a time."""


def widen_pipe(fd: int) -> int:
    """Ask Linux for a pipe of :data:`PIPE_CAPACITY` on ``fd``, silently keeping the default
    (64 KiB) where the system refuses (other systems, a lowered ``pipe-max-size``); return the
    capacity it has (0 where that cannot be known).

    A client tool writes its archive in small pieces: with the default capacity a reader wakes
    for each of them; with 1 MiB it finds many at a time. Reading ``pg_dump -Fc -Z0`` of a
    181 MB table cost 0.13-0.16 CPU-s against 0.20-0.22 s (measured beside each other).
    """
    import fcntl

    command = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if command is None:
        return 0
    try:
        return int(fcntl.fcntl(fd, command, PIPE_CAPACITY))
    except OSError:
        with contextlib.suppress(OSError):
            return int(fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", 1032)))
        return 0


_SHORT_READ = 64 << 10
_NAP = 0.001


def pipe_chunks(pipe: IO[bytes], capacity: int, size: int) -> Iterator[bytes]:
    """The bytes of ``pipe`` (a child's stdout) in chunks of ``size``, the last one shorter.

    A reader faster than its writer wakes for every one of the writer's small writes
    (``pg_dump`` writes 4 KiB at a time): 70,000 wake-ups, paid by both processes, for a
    hundred 10 MB databases. So after a short read it naps for a millisecond while the pipe
    fills; a pipe of ``capacity`` 1 MiB holds about 7 ms of pg_dump's fastest output, so the
    writer never waits for it. A narrower pipe is read without naps (it would fill, and stall
    the writer). Measured on 100 databases of 10 MB: a twelfth of the reads; the reading CPU
    1.75-1.89 → 1.45-1.49 s (its thread), pg_dump's 3.79-4.11 → 3.55-3.68 s.
    """
    nap = capacity >= PIPE_CAPACITY
    # A BufferedReader's read1 makes one read at most (its read loops until ``size``).
    read1: Callable[[int], bytes] = getattr(pipe, "read1", pipe.read)
    while True:
        pieces: list[bytes] = []
        filled = 0
        while filled < size:
            piece: bytes = read1(size - filled)
            if not piece:
                break
            pieces.append(piece)
            filled += len(piece)
            if nap and len(piece) < _SHORT_READ and filled < size:
                time.sleep(_NAP)
        if filled:
            yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if filled < size:
            return
