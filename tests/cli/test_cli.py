"""The pgvault command: its output contract, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

import pgvault
from pgvault.testing import PostgresCluster
from pgvault.vault.manifest import new_backup_id
from tests.conftest import pgvault_cli, snapshot_database
from tests.fake_backups import fake_backup

ConfigMaker = Callable[..., Path]


@pytest.fixture
def config_path(pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker) -> Path:
    return make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)})


def test_run_prints_only_the_backup_id_when_not_on_a_terminal(config_path: Path) -> None:
    """Under cron, `run` prints the id and nothing else: no progress, no noise on stderr."""
    result = pgvault_cli("run", config_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[-1].count("-") == 1 and lines[-1][8] == "T"


def test_list_show_verify_round(config_path: Path) -> None:
    """list --json is newest first; show prints the manifest; verify exits 0, then 1 on damage."""
    first = pgvault_cli("run", config_path).stdout.strip()
    second = pgvault_cli("run", config_path).stdout.strip()
    listed = json.loads(pgvault_cli("list", config_path, "--json").stdout)
    assert [b["backup_id"] for b in listed] == [second, first]
    assert listed[0]["source"].startswith("pg_dump rich")
    human = pgvault_cli("list", config_path).stdout
    assert human.splitlines()[0].startswith("ID") and second in human

    shown = json.loads(pgvault_cli("show", config_path, "latest").stdout)
    assert shown["backup_id"] == second

    ok = pgvault_cli("verify", config_path, "--all", "--deep")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("OK ") == 2

    artifact = config_path.parent / "vault/test/backups" / first / shown["artifacts"][0]["path"]
    artifact.write_bytes(artifact.read_bytes()[:-10])
    bad = pgvault_cli("verify", config_path, first)
    assert bad.returncode == 1
    assert f"FAILED {first}: artifact {shown['artifacts'][0]['path']}" in bad.stderr
    assert pgvault_cli("verify", config_path, second).returncode == 0


def test_config_error_is_one_line_exit_2_and_debug_shows_traceback(tmp_path: Path) -> None:
    """A user mistake gets one stderr line and exit 2; --debug adds the traceback."""
    path = tmp_path / "p.toml"
    path.write_text('name = "x"\n[source]\ntype = "pg_dumb"\n[sink]\ntype = "local"\npath = "v"\n')
    result = pgvault_cli("run", path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "source.type: unknown source type 'pg_dumb' (did you mean 'pg_dump'?)" in result.stderr
    assert "Traceback" not in result.stderr
    debug = pgvault_cli("run", path, "--debug")
    assert "Traceback" in debug.stderr and debug.returncode == 2


def test_failed_run_exits_1_with_the_cause(
    pg_cluster: PostgresCluster, make_config: ConfigMaker
) -> None:
    """A failing pg_dump gives exit 1 and the server's words on one line; stdout stays empty."""
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn("missing_db")})
    result = pgvault_cli("run", path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert 'database "missing_db" does not exist' in result.stderr
    assert result.stderr.count("\n") == 1
    assert json.loads(pgvault_cli("list", path, "--json").stdout) == []


def test_restore_creates_refuses_and_replaces_with_safety_backup(
    pg_cluster: PostgresCluster, rich_db: str, config_path: Path
) -> None:
    """Restore makes a new database; an existing one is refused unless --drop-existing --yes,
    which first stores a safety backup."""
    backup_id = pgvault_cli("run", config_path).stdout.strip()
    pg_cluster.drop_database("cli_copy")
    created = pgvault_cli("restore", config_path, backup_id, "--target-db", "cli_copy")
    assert created.returncode == 0, created.stderr
    assert snapshot_database(pg_cluster, "cli_copy") == snapshot_database(pg_cluster, rich_db)

    pg_cluster.execute("CREATE TABLE extra (x int)", "cli_copy")
    refused = pgvault_cli("restore", config_path, "latest", "--target-db", "cli_copy")
    assert refused.returncode == 1
    assert "database 'cli_copy' already exists" in refused.stderr
    assert ("public", "extra") in pg_cluster.execute(
        "SELECT schemaname::text, tablename::text FROM pg_tables", "cli_copy"
    )

    unconfirmed = pgvault_cli(
        "restore", config_path, "latest", "--target-db", "cli_copy", "--drop-existing", input=""
    )
    assert unconfirmed.returncode == 2
    assert "--drop-existing needs --yes" in unconfirmed.stderr

    replaced = pgvault_cli(
        "restore", config_path, backup_id, "--target-db", "cli_copy", "--drop-existing", "--yes"
    )
    assert replaced.returncode == 0, replaced.stderr
    assert "safety backup of the replaced database:" in replaced.stdout
    listed = json.loads(pgvault_cli("list", config_path, "--json").stdout)
    safety = [b for b in listed if b["kind"] == "safety"]
    assert len(safety) == 1 and safety[0]["source"] == "pg_dump cli_copy (custom)"
    assert snapshot_database(pg_cluster, "cli_copy") == snapshot_database(pg_cluster, rich_db)
    pg_cluster.drop_database("cli_copy")


def test_parallel_restore_from_a_single_archive(
    pg_cluster: PostgresCluster, rich_db: str, config_path: Path, tmp_path: Path
) -> None:
    """--jobs 2 restores through a work file (pg_restore needs to seek), then removes it."""
    pgvault_cli("run", config_path)
    work = tmp_path / "work"
    work.mkdir()
    pg_cluster.drop_database("cli_parallel")
    result = pgvault_cli(
        "restore",
        config_path,
        "latest",
        "--target-db",
        "cli_parallel",
        "--jobs",
        "2",
        "--work-dir",
        work,
    )
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == []
    assert snapshot_database(pg_cluster, "cli_parallel") == snapshot_database(pg_cluster, rich_db)
    pg_cluster.drop_database("cli_parallel")


def test_missing_config_and_unknown_backup(config_path: Path, tmp_path: Path) -> None:
    """Each is one line naming the file or the backup id."""
    missing = pgvault_cli("list", tmp_path / "nope.toml")
    assert missing.returncode == 2 and "nope.toml: config file not found" in missing.stderr
    unknown = pgvault_cli("show", config_path, "20000101T000000Z-abcdef")
    assert unknown.returncode == 1
    assert "no complete backup '20000101T000000Z-abcdef'" in unknown.stderr


def _wait_for(ready: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _pg_dumps_waiting_on_a_lock(cluster: PostgresCluster, dbname: str) -> int:
    rows = cluster.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        f"AND datname = '{dbname}' AND query LIKE 'LOCK TABLE %IN ACCESS SHARE MODE'"
    )
    return int(str(rows[0][0]))


# pg_dump locks a partitioned table itself, which pgvault's own look at the tables does not
# touch: with ONLY the parent locked, it is pg_dump, a child process, that waits.
PARTITIONED = """
CREATE TABLE parts (id int) PARTITION BY RANGE (id);
CREATE TABLE parts_low PARTITION OF parts FOR VALUES FROM (0) TO (1000);
INSERT INTO parts SELECT generate_series(0, 999);
"""


def _pg_dump_processes(cluster: PostgresCluster) -> list[str]:
    """Command lines of running pg_dump processes that talk to ``cluster``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not a process
            continue
        line = b" ".join(argv).decode(errors="replace")
        if argv and argv[0].endswith(b"pg_dump") and f"port={cluster.port}" in line:
            found.append(line)
    return found


def _terminate_once_pg_dump_waits(
    cluster: PostgresCluster, dbname: str, table: str, *args: str | Path
) -> subprocess.CompletedProcess[str]:
    """Run ``pgvault ARGS`` while ``table`` is locked, so its pg_dump of ``dbname`` waits; send
    SIGTERM once it does, as systemd, docker stop or ``timeout`` would; return the outcome."""
    with cluster.connect(dbname) as holder, holder.transaction():
        holder.execute(f"LOCK TABLE ONLY {table} IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgvault", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(lambda: _pg_dumps_waiting_on_a_lock(cluster, dbname) == 1, "pg_dump to wait")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
        # Checked while the lock still holds: a pg_dump left behind would still be waiting.
        assert _pg_dump_processes(cluster) == []
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigterm_stops_a_backup_and_leaves_nothing(
    pg_cluster: PostgresCluster, make_config: ConfigMaker, tmp_path: Path
) -> None:
    """SIGTERM during a backup (pg_dump waiting on a lock): exit 143 with one line, nothing
    listed or stored, and the pg_dump stopped rather than left waiting."""
    pg_cluster.drop_database("sigterm_src")
    pg_cluster.create_database("sigterm_src")
    pg_cluster.execute(PARTITIONED, dbname="sigterm_src")
    config_path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn("sigterm_src")})
    result = _terminate_once_pg_dump_waits(pg_cluster, "sigterm_src", "parts", "run", config_path)
    assert result.returncode == 143, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "pgvault: terminated (SIGTERM); nothing was left half-written"
    )
    assert json.loads(pgvault_cli("list", config_path, "--json").stdout) == []
    assert [p for p in (tmp_path / "vault").rglob("*") if p.is_file()] == []
    pg_cluster.drop_database("sigterm_src")


def test_sigterm_during_a_replacing_restore_keeps_the_old_database(
    pg_cluster: PostgresCluster, rich_db: str, config_path: Path
) -> None:
    """SIGTERM while --drop-existing takes its safety backup: the database to be replaced is
    still there, unchanged, and no half-made safety backup is listed."""
    backup_id = pgvault_cli("run", config_path).stdout.strip()
    pg_cluster.drop_database("keep_me")
    pg_cluster.create_database("keep_me")
    pg_cluster.execute(PARTITIONED, dbname="keep_me")
    before = snapshot_database(pg_cluster, "keep_me")
    result = _terminate_once_pg_dump_waits(
        pg_cluster,
        "keep_me",
        "parts",
        "restore",
        config_path,
        backup_id,
        "--target-db",
        "keep_me",
        "--drop-existing",
        "--yes",
    )
    assert result.returncode == 143, result.stderr
    assert snapshot_database(pg_cluster, "keep_me") == before
    listed = json.loads(pgvault_cli("list", config_path, "--json").stdout)
    assert [b["backup_id"] for b in listed] == [backup_id]
    pg_cluster.drop_database("keep_me")


def test_a_closed_reader_ends_every_command_quietly(
    make_config: ConfigMaker, tmp_path: Path
) -> None:
    """`pgvault list | head -1` shows the header and pgvault exits 141 with nothing on stderr, like
    coreutils; so does every printing command whose reader is already gone."""
    path = make_config(
        {"type": "files", "paths": [str(tmp_path)]}, extra="[retention]\nkeep_last = 2000\n"
    )
    vault = pgvault.Vault.from_config(pgvault.load_config(path))
    now = datetime.now(UTC)
    model = vault.manifest(fake_backup(vault, now - timedelta(minutes=1)))
    root = path.parent / "vault" / "test" / "backups"
    data = (root / model.backup_id / "dump.pgdump").read_bytes()
    for i in range(2, 1000):  # ~110 KB of listing: more than a pipe holds
        # Written as plain files: a thousand fsynced sink writes would only cost time here.
        started = now - timedelta(minutes=i)
        copy = attrs.evolve(model, backup_id=new_backup_id(started), started_at=started)
        folder = root / copy.backup_id
        folder.mkdir()
        (folder / "dump.pgdump").write_bytes(data)
        (folder / "manifest.json").write_text(copy.to_json())
    piped = subprocess.run(
        f'"{sys.executable}" -m pgvault list "{path}" | head -1; echo "${{PIPESTATUS[0]}}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=300,
    )
    header, status = piped.stdout.splitlines()
    assert header.startswith("ID ") and status == "141"
    assert piped.stderr == ""
    for args in (["show", "latest"], ["verify"], ["prune", "--dry-run"], ["check"], ["list"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            closed = subprocess.run(
                [sys.executable, "-m", "pgvault", args[0], str(path), *args[1:]],
                stdout=write_end,
                stderr=subprocess.PIPE,
                text=True,
                timeout=300,
            )
        finally:
            os.close(write_end)
        assert (closed.returncode, closed.stderr) == (141, ""), args
