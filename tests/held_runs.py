"""Real ``pgvault run`` processes held in the middle of a run, until the test lets go (or signals
them).

* :func:`held_before_dump`: a test session locks a table, so the run waits in its look at the
  tables (their sizes), before pg_dump starts: it holds its run locks, no artifact yet.
* :func:`stopped_mid_dump`: the same, then the table is let go and the run is frozen with SIGSTOP
  as soon as its first artifact is being written (a ``.partial-`` file in a local vault): what a
  run looks like an hour into a long dump. SIGCONT lets it go on at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pgvault.testing import PostgresCluster

TABLE = "held"


def prepare(cluster: PostgresCluster, dbname: str) -> None:
    """Give ``dbname`` the table a held run waits on: a few MB, so its dump takes a moment."""
    cluster.execute(
        f"CREATE TABLE {TABLE} (id int, note text); "
        f"INSERT INTO {TABLE} SELECT g, md5(g::text) FROM generate_series(1, 200000) g",
        dbname,
    )


def start_run(config: Path, *args: str) -> subprocess.Popen[str]:
    """Start ``pgvault run CONFIG`` as its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "pgvault", "run", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )


def waiting(cluster: PostgresCluster, dbname: str) -> int:
    """How many sessions of ``dbname`` wait for a lock."""
    rows = cluster.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'",
        dbname,
    )
    return int(str(rows[0][0]))


def _until(proc: subprocess.Popen[str], done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 120
    while not done():
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"run ended before {what} (rc {proc.returncode}): {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"the run never got to {what}")
        time.sleep(0.002)


@contextlib.contextmanager
def held_before_dump(
    cluster: PostgresCluster, dbname: str, config: Path
) -> Iterator[subprocess.Popen[str]]:
    """Start ``pgvault run CONFIG``; yield it while it waits for the test's table lock."""
    conn = cluster.connect(dbname)
    try:
        conn.execute("BEGIN")
        conn.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        proc = start_run(config)
        _until(proc, lambda: waiting(cluster, dbname) >= 1, "its look at the tables")
        yield proc
    finally:
        conn.close()  # ends the transaction: the run goes on


@contextlib.contextmanager
def stopped_mid_dump(
    cluster: PostgresCluster, dbname: str, config: Path, vault: Path
) -> Iterator[subprocess.Popen[str]]:
    """Start ``pgvault run CONFIG`` (local sink at ``vault``); yield it frozen while it writes."""
    with held_before_dump(cluster, dbname, config) as proc:
        pass  # the table is let go here; the dump starts at once

    def writing() -> bool:
        return any(".partial-" in p.name for p in vault.rglob("*"))

    _until(proc, writing, "its first artifact")
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Wait for ``proc``; its exit code, stdout and stderr."""
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err
