"""``pgvault schedule``: crontab lines that cron reads and that really run under cron's empty
environment, systemd units that ``systemd-analyze verify`` accepts, and healthchecks pinged
once, never twice."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from croniter import croniter
from pytest_httpserver import HTTPServer

import pgvault
from pgvault.operations.schedule import Installation, crontab
from tests.conftest import pgvault_cli, render_config

JOB_LINE = re.compile(r"^(\S+ \S+ \S+ \S+ \S+)  (\S+)  (.+)$")
SCHEDULE = """
[schedule]
backup = "30 2 * * *"
prune = "@daily"
check = "*/15 * * * 1-5"
drill = "0 5 1,15 * sun"
report = "0 8 * * mon"
randomized_delay = "1s"
timeout = "10m"
"""


def _write(folder: Path, source: dict[str, Any], extra: str, name: str = "app") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(
        render_config(
            name=name,
            source=source,
            # ${VAULT}: set only by the env file, so a job that did not read it fails.
            sink={"type": "local", "path": "${VAULT}"},
            transforms=None,
            extra=extra,
        )
        + "\n[retention]\nkeep_last = 3\n"
    )
    return path


def job_lines(text: str) -> dict[str, tuple[str, str, str]]:
    """The crontab's job lines by job (from the comment above each), after checking that every
    other line is a comment, a blank or a variable."""
    found: dict[str, tuple[str, str, str]] = {}
    job = None
    for line in text.splitlines():
        if line.startswith("# ") and ":" in line and line[2:].split(":")[0].isalpha():
            job = job or line[2:].split(":")[0]
            continue
        if not line or line.startswith("#") or re.match(r"^[A-Z]+=\S+$", line):
            continue
        m = JOB_LINE.match(line)
        assert m, f"not a cron.d job line: {line!r}"
        assert job is not None
        found[job] = (m.group(1), m.group(2), m.group(3))
        job = None
    return found


def run_like_cron(command: str) -> subprocess.CompletedProcess[str]:
    """What cron does with a line's command: '\\%' becomes '%', and /bin/sh -c runs it with
    (next to) no environment."""
    return subprocess.run(
        ["/bin/sh", "-c", command.replace(r"\%", "%")],
        env={},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def scheduled(tmp_path: Path, files_source: dict[str, Any]) -> tuple[Path, Path]:
    """A files pipeline with every job scheduled, in a folder whose name needs quoting (a space,
    a % that cron would cut the line at), and its env file; returns (config, vault)."""
    folder = tmp_path / "my configs %x"
    vault = tmp_path / "vault"
    config = _write(folder, files_source, SCHEDULE)
    (folder / "app.env").write_text(f"VAULT={vault}\n")
    return config, vault


def test_cron_lines_read_as_the_schedule_by_an_independent_parser(
    scheduled: tuple[Path, Path],
) -> None:
    """croniter reads each job's five fields, and its next 30 times are the schedule's."""
    config_path, _ = scheduled
    config = pgvault.load_config(config_path, env={"VAULT": "/x"})
    lines = job_lines(crontab(config, Installation.current(env_file=None)))
    assert list(lines) == ["backup", "prune", "check", "drill", "report"]
    for job, (fields, user, _) in lines.items():
        spec = getattr(config.schedule, job)
        assert fields == spec.expression and croniter.is_valid(fields)
        assert user == Installation.current().user
        theirs = croniter(fields, datetime(2026, 1, 1))
        when = datetime(2026, 1, 1)
        for _ in range(30):
            when = spec.next_after(when)
            assert theirs.get_next(datetime) == when, (job, fields)


def test_cron_lines_run_under_crons_empty_environment(scheduled: tuple[Path, Path]) -> None:
    """The backup line, run as cron runs it, stores a backup (reading the env file, through a
    path with a space and a %); then the check line finds it OK and prune keeps it."""
    config_path, vault = scheduled
    result = pgvault_cli("schedule", config_path, "--cron", env={"VAULT": "/x"})
    assert result.returncode == 0, result.stderr
    lines = job_lines(result.stdout)
    for _, _, command in lines.values():
        assert command.startswith("env -i PATH=")
        assert str(config_path).replace("%", r"\%") in command.replace("'\"'\"'", "'")
    backup = run_like_cron(lines["backup"][2])
    assert backup.returncode == 0, backup.stderr
    assert backup.stdout == ""  # the backup id goes to /dev/null, not into cron's mail
    config = pgvault.load_config(config_path, env={"VAULT": str(vault)})
    assert len(pgvault.Vault.from_config(config).backups()) == 1
    check = run_like_cron(lines["check"][2])
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout == ""  # OK: silent
    prune = run_like_cron(lines["prune"][2])
    assert prune.returncode == 0, prune.stderr


def test_a_failing_check_line_prints_its_problems(scheduled: tuple[Path, Path]) -> None:
    """Under cron, a check that is not OK exits non-zero and prints what is wrong (for the mail)."""
    config_path, _ = scheduled
    lines = job_lines(pgvault_cli("schedule", config_path, "--cron", env={"VAULT": "/x"}).stdout)
    check = run_like_cron(lines["check"][2])  # the vault is empty
    assert check.returncode == 2
    assert check.stdout.startswith("CRITICAL")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_units_pass_systemd_analyze_verify(
    scheduled: tuple[Path, Path], tmp_path: Path
) -> None:
    """Every generated .service and .timer is accepted by systemd-analyze verify, warnings
    included; the timers carry the schedule, Persistent=, the delay and the timeout."""
    config_path, _ = scheduled
    out = tmp_path / "units"
    result = pgvault_cli(
        "schedule", config_path, "--systemd", "--output-dir", out, env={"VAULT": "/x"}
    )
    assert result.returncode == 0, result.stderr
    files = sorted(out.iterdir())
    assert len(files) == 10
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, files)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    assert verify.returncode == 0 and verify.stderr == "", verify.stderr
    timer = (out / "pgvault-app-drill.timer").read_text()
    # cron's "day 1 or 15, or a Sunday" takes two OnCalendar= lines.
    assert "OnCalendar=*-*-01,15 05:00:00\nOnCalendar=Sun *-*-* 05:00:00\n" in timer
    assert "Persistent=true" in timer and "RandomizedDelaySec=1s" in timer
    service = (out / "pgvault-app-backup.service").read_text()
    assert "TimeoutStartSec=10min" in service
    env_file = str(config_path.with_suffix(".env")).replace("%", "%%")
    assert f"EnvironmentFile={env_file}\n" in service
    assert "ExecStart=" + str(Installation.current().command[0]) in service


def test_systemd_output_names_each_unit_file(scheduled: tuple[Path, Path]) -> None:
    """Printed, each unit is headed by its path, and the enable command lists the timers."""
    config_path, _ = scheduled
    text = pgvault_cli("schedule", config_path, "--systemd", env={"VAULT": "/x"}).stdout
    headers = re.findall(r"^# /etc/systemd/system/(\S+)$", text, re.M)
    assert headers == [
        f"pgvault-app-{job}.{kind}"
        for job in ("backup", "prune", "check", "drill", "report")
        for kind in ("service", "timer")
    ]
    assert "systemctl enable --now pgvault-app-backup.timer pgvault-app-prune.timer" in text


def _hc_env(folder: Path, httpserver: HTTPServer, vault: Path) -> None:
    (folder / "app.env").write_text(
        f"VAULT={vault}\nHC_PING_URL={httpserver.url_for('/ping/abc')}\n"
    )


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        # pgvault's notifier pings start and success itself: the job adds nothing.
        ("", ["/ping/abc/start", "/ping/abc"]),
        # The notifier only reports failures: the job pings success, once.
        ('events = ["backup_failed"]\n', ["/ping/abc"]),
    ],
    ids=["notifier-pings", "job-pings"],
)
def test_healthchecks_is_pinged_once_per_run(
    tmp_path: Path,
    files_source: dict[str, Any],
    httpserver: HTTPServer,
    events: str,
    expected: list[str],
) -> None:
    """Whichever pings (pgvault's notifier or the generated job), a run's success reaches the
    check exactly once."""
    httpserver.expect_request(re.compile("/ping/abc.*"), method="POST").respond_with_data("OK")
    httpserver.expect_request(re.compile("/ping/abc.*"), method="GET").respond_with_data("OK")
    folder = tmp_path / "cfg"
    notify = f'[[notify]]\ntype = "healthchecks"\nurl_env = "HC_PING_URL"\n{events}'
    config_path = _write(folder, files_source, notify + '[schedule]\nbackup = "daily"\n')
    _hc_env(folder, httpserver, tmp_path / "vault")
    text = pgvault_cli("schedule", config_path, "--cron", env={"VAULT": "/x"}).stdout
    assert ("curl" in text) == (events != "")
    backup = run_like_cron(job_lines(text)["backup"][2])
    assert backup.returncode == 0, backup.stderr
    assert [request.path for request, _ in httpserver.log] == expected


def test_nothing_scheduled_is_a_config_error(tmp_path: Path, files_source: dict[str, Any]) -> None:
    """Without [schedule] the command says what to add, naming the file, and exits 2."""
    config_path = _write(tmp_path, files_source, "")
    result = pgvault_cli("schedule", config_path, "--cron", env={"VAULT": str(tmp_path)})
    assert result.returncode == 2
    assert f"{config_path}: schedule: nothing is scheduled: add a [schedule] table" in result.stderr


def test_systemd_quoting_keeps_specifiers_and_variables_literal(tmp_path: Path) -> None:
    """A path with %, $ and a space reaches ExecStart= as written (systemd would expand them)."""
    from pgvault.operations.schedule import _systemd_arg

    assert _systemd_arg("/opt/pgvault/bin/pgvault") == "/opt/pgvault/bin/pgvault"
    assert _systemd_arg("/etc/my %i $HOME.toml") == '"/etc/my %%i $$HOME.toml"'
    assert _systemd_arg('a"b\\c') == '"a\\"b\\\\c"'


def test_an_installation_is_this_interpreters_pgvault() -> None:
    """The command is the pgvault script beside this Python (a venv's bin), not resolved out of
    the venv, and that folder is first on the jobs' PATH."""
    import sys

    here = Installation.current()
    assert here.command[0] == os.path.join(
        os.path.dirname(os.path.abspath(sys.executable)), "pgvault"
    )
    assert here.path.split(":")[0] == os.path.dirname(os.path.abspath(sys.executable))
    assert here.path.endswith("/usr/local/bin:/usr/bin:/bin")
    with pytest.raises(pgvault.ConfigError, match="--user no-such-user-x: no such user"):
        Installation.current(user="no-such-user-x")


def test_the_scheduling_page_shows_what_the_command_prints() -> None:
    """docs/scheduling.md's crontab and units are the code's output for its example config
    (regenerate with python -m tests.operations.schedule_docs)."""
    from tests.operations.schedule_docs import DOC, rewrite

    doc = DOC.read_text()
    assert doc.count("<!-- generated: ") == 2
    assert rewrite(doc) == doc, "run: python -m tests.operations.schedule_docs"
