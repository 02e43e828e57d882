"""Run logs and the Prometheus textfile: one structured record per run, as text or JSON lines, in a
rotating file; counters that survive processes and pipelines sharing one metrics file."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pgvault
from pgvault.observability import read_metrics, setup_logging
from pgvault.settings import LogSettings
from tests.conftest import pgvault_cli

SAMPLE = re.compile(r'^pgvault_[a-z_]+\{name="[a-z-]+"\} -?[0-9.e+]+$')


@pytest.fixture(autouse=True)
def restore_pgvault_logging() -> Iterator[None]:
    """setup_logging replaces the pgvault logger's handlers: put pytest's capture back after."""
    root = logging.getLogger("pgvault")
    saved = (root.handlers[:], root.level, root.propagate)
    yield
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:], root.level, root.propagate = saved


@pytest.fixture
def pipeline(tmp_path: Path) -> Callable[..., Path]:
    """Write a files-source pipeline with top-level and [logging] lines; return its path."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("x" * 5000)

    def write(
        top: str = "", logging_table: str = "", name: str = "app", broken: bool = False
    ) -> Path:
        path = tmp_path / f"{name}.toml"
        source = "missing" if broken else "data"
        path.write_text(
            f'name = "{name}"\n{top}\n[source]\ntype = "files"\npaths = ["{source}"]\n'
            f'[sink]\ntype = "local"\npath = "vault"\n'
            + (f"[logging]\n{logging_table}\n" if logging_table else "")
        )
        return path

    return write


def test_every_run_is_one_json_record_in_the_log_file(
    pipeline: Callable[..., Path], tmp_path: Path
) -> None:
    """A success and a failure each leave a JSON line with id, name, sizes, duration, outcome."""
    log_file = tmp_path / "logs" / "pgvault.log"
    path = pipeline(logging_table=f'file = "{log_file}"\nformat = "json"')
    config = pgvault.load_config(path)
    setup_logging(config.logging)
    manifest = pgvault.run(config)
    broken = pgvault.load_config(
        pipeline(logging_table=f'file = "{log_file}"\nformat = "json"', name="bad", broken=True)
    )
    with pytest.raises(pgvault.SourceError):
        pgvault.run(broken)
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    runs = [r for r in records if r.get("event") == "backup"]
    ok, failed = runs
    assert ok["run_id"] == manifest.backup_id and ok["name"] == "app"
    assert ok["outcome"] == "succeeded" and ok["size"] == manifest.size
    assert ok["raw_size"] == manifest.raw_size and ok["duration_seconds"] >= 0
    assert ok["logger"] == "pgvault.run" and ok["level"] == "info"
    assert failed["outcome"] == "failed" and failed["name"] == "bad"
    assert "is not a folder" in failed["error"] and "size" not in failed


def test_the_log_file_rotates(pipeline: Callable[..., Path], tmp_path: Path) -> None:
    """max_bytes and keep_files bound the log's disk use."""
    log_file = tmp_path / "pgvault.log"
    config = pgvault.load_config(
        pipeline(logging_table=f'file = "{log_file}"\nmax_bytes = "1KiB"\nkeep_files = 2')
    )
    setup_logging(config.logging)
    for _ in range(12):
        pgvault.run(config)
    names = sorted(p.name for p in tmp_path.glob("pgvault.log*"))
    assert names == ["pgvault.log", "pgvault.log.1", "pgvault.log.2"]
    assert all(p.stat().st_size <= 1024 for p in tmp_path.glob("pgvault.log*"))
    line = log_file.read_text().splitlines()[-1]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} INFO pgvault.run: backup ", line)


def test_stderr_shows_run_records_only_when_asked(pipeline: Callable[..., Path]) -> None:
    """stderr_level = "info" with JSON prints the run record on stderr (journald, Docker); by
    default a successful run prints nothing there (cron stays quiet)."""
    quiet = pgvault_cli("run", pipeline())
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = pgvault_cli(
        "run", pipeline(logging_table='stderr_level = "info"\nformat = "json"', name="loud")
    )
    assert loud.returncode == 0, loud.stderr
    records = [json.loads(line) for line in loud.stderr.splitlines()]
    [run] = [r for r in records if r.get("event") == "backup"]
    assert run["run_id"] == loud.stdout.strip() and run["outcome"] == "succeeded"


def test_an_unwritable_log_file_is_a_config_error(
    pipeline: Callable[..., Path], tmp_path: Path
) -> None:
    """A log file that cannot be opened is one line naming logging.file, exit 2."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    out = pgvault_cli("run", pipeline(logging_table=f'file = "{blocker}/sub/pgvault.log"'))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and ": logging.file: cannot open log file" in out.stderr


def test_metrics_count_runs_and_failures_across_processes(
    pipeline: Callable[..., Path], tmp_path: Path
) -> None:
    """Two successes and a failure from three processes, and a second pipeline, in one textfile."""
    metrics = tmp_path / "textfile" / "pgvault.prom"
    top = f'metrics_file = "{metrics}"'
    app = pipeline(top=top)
    assert pgvault_cli("run", app).returncode == 0
    assert pgvault_cli("run", app).returncode == 0
    assert pgvault_cli("run", pipeline(top=top, name="app-bad", broken=True)).returncode == 1
    assert pgvault_cli("check", app).returncode == 0

    samples = read_metrics(metrics)
    app_l, bad_l = '{name="app"}', '{name="app-bad"}'
    assert samples["pgvault_runs_total", app_l] == 2
    assert samples["pgvault_failures_total", app_l] == 0
    assert samples["pgvault_last_run_success", app_l] == 1
    assert samples["pgvault_last_size_bytes", app_l] > 5000
    assert samples["pgvault_runs_total", bad_l] == 1
    assert samples["pgvault_failures_total", bad_l] == 1
    assert samples["pgvault_last_run_success", bad_l] == 0
    assert ("pgvault_last_success_timestamp_seconds", bad_l) not in samples
    assert samples["pgvault_check_status", app_l] == 0 and samples["pgvault_backups", app_l] == 2

    text = metrics.read_text()
    for line in text.splitlines():
        assert line.startswith(("# HELP pgvault_", "# TYPE pgvault_")) or SAMPLE.match(line), line
    assert "# TYPE pgvault_runs_total counter" in text
    assert oct(metrics.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in metrics.parent.iterdir()) == ["pgvault.prom", "pgvault.prom.lock"]


def test_log_settings_from_config(pipeline: Callable[..., Path]) -> None:
    """[logging] is validated like every table: a typo names its key."""
    typo = r"logging\.levle: unknown key \(did you mean 'level'\?\)"
    with pytest.raises(pgvault.ConfigError, match=typo):
        pgvault.load_config(pipeline(logging_table='levle = "debug"'))
    with pytest.raises(pgvault.ConfigError, match=r"logging\.format: invalid value 'yaml'"):
        pgvault.load_config(pipeline(logging_table='format = "yaml"'))
    assert pgvault.load_config(pipeline()).logging == LogSettings()


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A world-traversable folder like /var/lib/prometheus/node-exporter (the test's own tmp
    folder is 0700, so another user could not even reach a file in it)."""
    folder = Path(tempfile.mkdtemp(prefix="pgvault-textfile-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _hold_lock(lock: Path, *user: str) -> subprocess.Popen[str]:
    """``flock -s`` on ``lock`` (as ``user`` through runuser), held until killed."""
    argv = [*(["runuser", "-u", *user, "--"] if user else []), "flock", "-s", str(lock)]
    holder = subprocess.Popen(
        [*argv, "sh", "-c", "echo held; exec sleep 300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: killed whole, sleep included
    )
    assert holder.stdout is not None
    holder.stdout.readline()  # "held", or "" when flock could not open the file at all
    return holder


def _release(holder: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(holder.pid, signal.SIGKILL)
    holder.communicate()


def _bounded(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # The guard against the bug itself (a run that hangs forever), not a timing assertion.
    return subprocess.run(
        [sys.executable, "-m", "pgvault", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (nobody)")
def test_another_user_cannot_hang_run_or_check_through_the_metrics_lock(
    pipeline: Callable[..., Path], shared_folder: Path
) -> None:
    """``flock -s`` by ``nobody`` on the metrics lock file cannot make run or check wait: the lock
    file is 0600, so nobody cannot even open it, and both still record their metrics."""
    metrics = shared_folder / "pgvault.prom"
    app = pipeline(top=f'metrics_file = "{metrics}"')
    assert _bounded("run", app).returncode == 0
    lock = shared_folder / "pgvault.prom.lock"
    holder = _hold_lock(lock, "nobody")
    try:
        run = _bounded("run", app)
        assert run.returncode == 0, run.stderr
        check = _bounded("check", app)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        _release(holder)
    assert oct(lock.stat().st_mode & 0o777) == "0o600"
    samples = read_metrics(metrics)
    assert samples["pgvault_runs_total", '{name="app"}'] == 2
    assert samples["pgvault_backups", '{name="app"}'] == 2


def test_a_held_metrics_lock_delays_a_run_a_little_and_never_fails_it(
    pipeline: Callable[..., Path], shared_folder: Path
) -> None:
    """A process of pgvault's own user that holds the metrics lock forever costs a run a few
    seconds and a warning naming the lock file: the backup succeeds, only its metrics are lost."""
    metrics = shared_folder / "pgvault.prom"
    app = pipeline(top=f'metrics_file = "{metrics}"')
    assert _bounded("run", app).returncode == 0
    lock = shared_folder / "pgvault.prom.lock"
    holder = _hold_lock(lock)
    try:
        run = _bounded("run", app)
        check = _bounded("check", app)
    finally:
        _release(holder)
    assert run.returncode == 0, run.stderr
    assert f"could not update metrics file {metrics}" in run.stderr
    assert "held by another process" in run.stderr
    assert check.returncode == 0 and "held by another process" in check.stderr
    backups = pgvault.Vault.from_config(pgvault.load_config(app)).backups()
    assert len(backups) == 2
    assert read_metrics(metrics)["pgvault_runs_total", '{name="app"}'] == 1
