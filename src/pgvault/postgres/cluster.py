"""Throwaway PostgreSQL clusters: initdb on a free port, in a temp folder, on loopback.

Restore drills use them (``drill.server = "ephemeral"``) so production is never touched, and the
test kit (:mod:`pgvault.testing`) uses them for real servers in tests. As root, ``initdb`` and
``pg_ctl`` refuse to run, so they are run as the ``postgres`` user through ``runuser``; the
cluster's folders are then owned by postgres and its parent made traversable. Settings favour
speed over durability (``fsync=off``): nothing in such a cluster is meant to survive it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import psycopg


class ClusterUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing or a cluster cannot start."""


def server_bindir(major: int | None = None) -> Path:
    """Folder of the PostgreSQL server binaries: for ``major`` if given (Debian's
    ``/usr/lib/postgresql/<major>/bin``), else ``$PG_BINDIR``, ``pg_config --bindir``, or the
    newest ``/usr/lib/postgresql/*/bin`` that has ``initdb``."""
    candidates: list[Path] = []
    if major is not None:
        candidates.append(Path(f"/usr/lib/postgresql/{major}/bin"))
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += debian
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise ClusterUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql (Debian: "
        "apt-get install postgresql-15) or set PG_BINDIR"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runuser() -> str:
    """The ``runuser`` command. It lives in /usr/sbin, which a minimal PATH (cron's, ``env -i
    PATH=/usr/bin:/bin``) lacks: fall back to its absolute path there."""
    found = shutil.which("runuser")
    if found:
        return found
    for candidate in ("/usr/sbin/runuser", "/sbin/runuser"):
        if Path(candidate).is_file():
            return candidate
    return "runuser"


def _as_postgres() -> list[str]:
    return [runuser(), "-u", "postgres", "--"] if os.geteuid() == 0 else []


def pg_ctl_start(
    bindir: Path,
    data: Path,
    log: Path,
    *,
    timeout: int = 60,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``pg_ctl start -w`` of the data directory ``data`` (as postgres when run as root), the
    server logging to ``log``; the finished pg_ctl, whose failure the caller judges."""
    return subprocess.run(
        [
            *_as_postgres(),
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            str(timeout),
            "start",
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=None if env is None else dict(env),
    )


class PostgresCluster:
    """One throwaway cluster. ``start()``, ``stop()``, ``destroy()``; connect with :meth:`dsn`.

    ``settings`` are appended to postgresql.conf (values as PostgreSQL expects them, quoted where
    needed). ``environment`` is added to the server's environment (``LOCPATH`` for locales of
    its own, say); ``initdb_args`` are passed to initdb (``["--wal-segsize=1"]`` for 1 MiB
    segments).
    """

    def __init__(
        self,
        *,
        settings: Mapping[str, str] | None = None,
        bindir: Path | None = None,
        base_dir: Path | None = None,
        environment: Mapping[str, str] | None = None,
        initdb_args: tuple[str, ...] = (),
    ) -> None:
        self.bindir = bindir or server_bindir()
        self.port = free_port()
        self.base = base_dir or Path(tempfile.mkdtemp(prefix="pgvault-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "run"
        self.log = self.base / "server.log"
        self.settings = dict(settings or {})
        self.environment = dict(environment or {})
        self.initdb_args = tuple(initdb_args)
        self._init()

    @property
    def major(self) -> int:
        """The server's major version (from the binaries' folder or ``postgres --version``)."""
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
        return int(out.split()[-1].split(".")[0])

    def _init(self) -> None:
        self.base.chmod(0o755)
        self.socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            os.chown(self.base, pg.pw_uid, pg.pw_gid)
            os.chown(self.socket_dir, pg.pw_uid, pg.pw_gid)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--locale=C",
                "--encoding=UTF8",
                "--no-sync",
                *self.initdb_args,
            ],
        )
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "50",
            **self.settings,
        }
        with (self.data / "postgresql.conf").open("a") as f:
            f.write("\n# pgvault test settings\n")
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(
            [*_as_postgres(), *argv],
            capture_output=True,
            text=True,
            cwd=self.base,
            env={**os.environ, **self.environment},
        )
        self._check(argv, result)

    def _check(self, argv: list[str], result: subprocess.CompletedProcess[str]) -> None:
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise ClusterUnavailable(
                f"{Path(argv[0]).name} failed: {result.stderr.strip() or result.stdout.strip()}"
                f"{' | ' + log[-2000:] if log else ''}"
            )

    def start(self) -> PostgresCluster:
        """Start the server and wait until it accepts connections."""
        started = pg_ctl_start(
            self.bindir,
            self.data,
            self.log,
            cwd=self.base,
            env={**os.environ, **self.environment},
        )
        self._check([str(self.bindir / "pg_ctl")], started)
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate)."""
        if (self.data / "postmaster.pid").exists():
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        """Stop the server and remove every file of the cluster."""
        with contextlib.suppress(ClusterUnavailable):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URI for ``dbname`` on this cluster (trust auth, user postgres)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit connection to ``dbname`` (client encoding UTF8, so that a SQL_ASCII
        database reads as text rather than bytes)."""
        return psycopg.connect(self.dsn(dbname), autocommit=True, client_encoding="UTF8")

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        """Run ``sql`` and return its rows (empty for statements without result)."""
        with self.connect(dbname) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its DSN."""
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists (closing other sessions)."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def databases(self) -> set[str]:
        """Names of the non-template databases."""
        return {
            str(r[0])
            for r in self.execute("SELECT datname FROM pg_database WHERE NOT datistemplate")
        }


@contextlib.contextmanager
def running_cluster(settings: Mapping[str, str] | None = None) -> Iterator[PostgresCluster]:
    """A started cluster for the duration of the block, destroyed afterwards."""
    cluster = PostgresCluster(settings=settings)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
