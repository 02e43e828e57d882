"""Real clusters that archive through pgvault, as PostgreSQL runs it: as the postgres user.

PostgreSQL runs archive_command and restore_command as ``postgres``, which cannot execute the
test interpreter under /root. :func:`pgvault_for_postgres` builds, once per session, a small
launcher postgres can run: Debian's ``/usr/bin/python3`` (same 3.11 ABI) with ``PYTHONPATH`` set to
this worktree's ``src`` and the test venv's site-packages (both world-readable). Config, key,
vault and spool live in folders postgres owns. Clusters use 1 MiB segments (``--wal-segsize=1``)
unless a test says otherwise: sizes do not matter to what they prove, and they are quick.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.postgres.cluster import pg_ctl_start, runuser
from pgvault.testing import PostgresCluster
from pgvault.transforms import keys
from tests.conftest import render_config

AS_ROOT = os.geteuid() == 0


def chown_postgres(path: Path, *, tree: bool = False) -> None:
    """Give ``path`` (with ``tree``, everything under it too) to postgres, when root."""
    if AS_ROOT:
        pg = pwd.getpwnam("postgres")
        os.chown(path, pg.pw_uid, pg.pw_gid)
        for sub in path.rglob("*") if tree else ():
            os.chown(sub, pg.pw_uid, pg.pw_gid)


def postgres_folder(prefix: str) -> Path:
    """A new folder in /tmp owned by postgres (our tmp_path is not traversable by it)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    chown_postgres(folder)
    return folder


def as_postgres(argv: list[str]) -> list[str]:
    """``argv`` run as postgres when the tests run as root."""
    return [runuser(), "-u", "postgres", "--", *argv] if AS_ROOT else argv


@pytest.fixture(scope="session")
def pgvault_for_postgres() -> Iterator[list[str]]:
    """The command that starts this worktree's pgvault as the postgres user."""
    if not AS_ROOT:
        yield [sys.executable, "-m", "pgvault"]
        return
    folder = postgres_folder("pgvault-launcher-")
    src = Path(pgvault.__file__).resolve().parents[1]
    site = sysconfig.get_paths()["purelib"]
    launcher = folder / "pgvault"
    launcher.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(f'{src}:{site}')} PYTHONDONTWRITEBYTECODE=1 "
        'exec /usr/bin/python3 -m pgvault "$@"\n'
    )
    launcher.chmod(0o755)
    check = subprocess.run(
        as_postgres([str(launcher), "--version"]), capture_output=True, text=True, timeout=60
    )
    if check.returncode != 0:
        pytest.fail(f"postgres cannot run pgvault through {launcher}: {check.stderr.strip()}")
    yield [str(launcher)]
    shutil.rmtree(folder, ignore_errors=True)


class WalRig:
    """One cluster archiving into one vault through pgvault, with its config, key and spool."""

    def __init__(
        self,
        cluster: PostgresCluster,
        folder: Path,
        command: list[str],
        sink: dict[str, Any] | None,
        wal: dict[str, Any],
        encrypt: bool,
    ) -> None:
        self.cluster = cluster
        self.folder = folder
        self.command = command
        self.vault = folder / "vault"
        self.spool = folder / "spool"
        self.key = folder / "wal.key"
        for path in (self.vault, self.spool):
            path.mkdir(exist_ok=True)
            chown_postgres(path)
        if encrypt and not self.key.exists():
            keys.write_key_file(self.key)
            chown_postgres(self.key)
        transforms: list[dict[str, Any]] = [{"type": "zstd", "level": 1}]
        if encrypt:
            transforms.append({"type": "aes-256-gcm", "key_file": str(self.key)})
        self.sink = sink or {"type": "local", "path": str(self.vault)}
        table = {"pg_wal": str(cluster.data / "pg_wal"), "spool": str(self.spool), **wal}
        extra = "[wal]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in table.items())
        self.config = folder / "main.toml"
        self.config.write_text(
            render_config(
                name="main",
                source={"type": "pg_dump", "dsn": cluster.dsn()},
                sink=self.sink,
                transforms=transforms,
                extra=extra,
            )
        )
        chown_postgres(self.config)

    @property
    def push_command(self) -> str:
        """The synchronous archive_command."""
        return shlex.join([*self.command, "wal-push", str(self.config)]) + " %p"

    def load(self) -> pgvault.PipelineConfig:
        """The rig's config, loaded."""
        return pgvault.load_config(self.config)

    def switch(self, count: int = 1) -> list[str]:
        """Write a little and switch WAL ``count`` times; the names of the segments closed."""
        names = []
        with self.cluster.connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS rig_t (x int)")
            for _ in range(count):
                conn.execute("INSERT INTO rig_t VALUES (1)")
                row = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
                assert row is not None
                names.append(str(row[0]))
        return names

    def archived(self) -> tuple[int, str | None, int]:
        """pg_stat_archiver: (archived_count, last_archived_wal, failed_count)."""
        row = self.cluster.execute(
            "SELECT archived_count, last_archived_wal, failed_count FROM pg_stat_archiver"
        )[0]
        return int(str(row[0])), None if row[1] is None else str(row[1]), int(str(row[2]))

    def wait_archived(self, name: str, timeout: float = 60.0) -> None:
        """Wait until PostgreSQL has archived ``name`` (its .done status file exists)."""
        done = self.cluster.data / "pg_wal" / "archive_status" / f"{name}.done"
        deadline = time.monotonic() + timeout
        while not done.exists():
            if time.monotonic() > deadline:
                log = self.cluster.log.read_text()[-3000:]
                raise AssertionError(f"{name} not archived within {timeout}s; server log:\n{log}")
            time.sleep(0.05)

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run pgvault as postgres (in the data directory, as PostgreSQL would)."""
        return subprocess.run(
            as_postgres([*self.command, *args]),
            capture_output=True,
            text=True,
            cwd=cwd or self.cluster.data,
            timeout=timeout,
        )


def _toml(value: Any) -> str:
    from tests.conftest import toml_value

    return toml_value(value)


@pytest.fixture
def wal_rig(
    pg_cluster_factory: Callable[..., PostgresCluster], pgvault_for_postgres: list[str]
) -> Iterator[Callable[..., WalRig]]:
    """Make a :class:`WalRig`: ``wal_rig(archive="push"|"daemon"|None, sink=..., wal={...})``.

    ``archive="push"`` sets archive_command to ``pgvault wal-push``; ``"daemon"`` to the
    command wal-setup prints for the daemon; None leaves archiving off.
    """
    folders: list[Path] = []

    def make(
        archive: str | None = "push",
        *,
        sink: dict[str, Any] | None = None,
        wal: dict[str, Any] | None = None,
        encrypt: bool = True,
        segsize_mib: int = 1,
        settings: dict[str, str] | None = None,
    ) -> WalRig:
        folder = postgres_folder("pgvault-wal-")
        folders.append(folder)
        conf = {"wal_level": "replica", "archive_mode": "on", "archive_command": "'/bin/false'"}
        conf.update(settings or {})
        cluster = pg_cluster_factory(settings=conf, initdb_args=(f"--wal-segsize={segsize_mib}",))
        rig = WalRig(cluster, folder, pgvault_for_postgres, sink, wal or {}, encrypt)
        if archive is not None:
            set_archive_command(rig, archive)
        return rig

    yield make
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def set_archive_command(rig: WalRig, how: str) -> None:
    """Point the rig's cluster at ``pgvault wal-push`` (``push``) or the daemon's ack script."""
    from pgvault.wal.configure import archive_command

    if how == "push":
        value = "'" + rig.push_command.replace("'", "''") + "'"
    else:
        value = archive_command(rig.load(), rig.command)
    rig.cluster.execute(f"ALTER SYSTEM SET archive_command = {value}")
    rig.cluster.execute("SELECT pg_reload_conf()")


class RestoredCluster:
    """A data directory made from a base backup, started with a restore_command: recovery."""

    def __init__(self, source: PostgresCluster, data: Path, settings: dict[str, str]) -> None:
        from pgvault.testing.postgres import free_port

        self.source = source
        self.data = data
        self.port = free_port()
        self.socket_dir = data.parent / "run"
        self.socket_dir.mkdir(exist_ok=True)
        chown_postgres(self.socket_dir)
        self.log = data.parent / "restored.log"
        conf = {
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            # A restored copy must not archive into the source's WAL.
            "archive_mode": "off",
            **settings,
        }
        with (data / "postgresql.conf").open("a") as f:
            f.write("\n# restored for a test\n")
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        (data / "recovery.signal").touch()
        chown_postgres(data / "recovery.signal")

    def start(
        self, timeout: int = 120, *, wait_promoted: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """pg_ctl start, then (``wait_promoted``) wait until recovery is over."""
        started = pg_ctl_start(
            self.source.bindir, self.data, self.log, timeout=timeout, cwd=self.data.parent
        )
        if started.returncode != 0 or not wait_promoted:
            return started
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.execute("SELECT pg_is_in_recovery()") == [(False,)]:
                    return started
            except Exception:
                if not (self.data / "postmaster.pid").exists():
                    return subprocess.CompletedProcess(started.args, 1, "", "server stopped")
            time.sleep(0.1)
        return subprocess.CompletedProcess(started.args, 1, "", "recovery did not end in time")

    def stop(self) -> None:
        """Stop it (immediately: it is thrown away)."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                as_postgres(
                    [
                        str(self.source.bindir / "pg_ctl"),
                        "-D",
                        str(self.data),
                        "-m",
                        "immediate",
                        "stop",
                    ]
                ),
                capture_output=True,
                cwd=self.data.parent,
            )

    def execute(self, sql: str) -> list[tuple[object, ...]]:
        """Run ``sql`` on it."""
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []


def base_backup(rig: WalRig, into: Path) -> Path:
    """A base backup of the rig's cluster (pg_basebackup -X none: its WAL comes from the
    archive, so it returns only once the end segment is archived)."""
    into.mkdir(exist_ok=True)
    chown_postgres(into)
    data = into / "data"
    done = subprocess.run(
        as_postgres(
            [
                str(rig.cluster.bindir / "pg_basebackup"),
                "-D",
                str(data),
                "-h",
                str(rig.cluster.socket_dir),
                "-p",
                str(rig.cluster.port),
                "-U",
                "postgres",
                "-X",
                "none",
                "-c",
                "fast",
                "--no-sync",
            ]
        ),
        capture_output=True,
        text=True,
        timeout=180,
        cwd=into,
    )
    assert done.returncode == 0, done.stderr
    return data


def python_child(pid: int) -> int:
    """The pgvault process under ``runuser`` (or ``pid`` itself when not root)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"python" in cmdline:
                return int(entry.name)
        if os.geteuid() != 0:
            return pid
        time.sleep(0.05)
    raise AssertionError(f"no pgvault process under {pid}")
