"""pgvault's failures reach an embedding application's own logging (at ERROR, propagating past
setup_logging), and under systemd the CLI's stderr lines carry journald priorities."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import pgvault
from pgvault.observability import LogSettings, setup_logging


class AppHandler(logging.Handler):
    """What an application's Sentry or log-shipping handler on the root logger would see."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def app_handler() -> Iterator[AppHandler]:
    pgvault_logger = logging.getLogger("pgvault")
    saved = (pgvault_logger.handlers[:], pgvault_logger.level, pgvault_logger.propagate)
    handler = AppHandler()
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)
    for h in pgvault_logger.handlers:
        if h not in saved[0]:
            h.close()
    pgvault_logger.handlers[:], pgvault_logger.level, pgvault_logger.propagate = saved


def files_config(tmp_path: Path, paths: str) -> Path:
    path = tmp_path / "app.toml"
    path.write_text(
        f'name = "app"\n[source]\ntype = "files"\npaths = [{paths}]\n'
        '[sink]\ntype = "local"\npath = "vault"\n'
    )
    return path


def test_an_embedding_applications_handler_sees_failures(
    app_handler: AppHandler, tmp_path: Path
) -> None:
    """After setup_logging, a failed backup and a failed restore are ERROR records reaching the
    application's root handler, with the pipeline and the cause."""
    setup_logging(LogSettings())
    config = pgvault.load_config(files_config(tmp_path, '"missing"'))
    with pytest.raises(pgvault.SourceError):
        pgvault.run(config)
    (tmp_path / "data").mkdir()
    good = pgvault.load_config(files_config(tmp_path, '"data"'))
    pgvault.run(good)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(pgvault.RestoreError):
        pgvault.restore(good, target_dir=tmp_path / "busy")
    backup, restore = app_handler.records
    assert backup.name == "pgvault.run" and backup.levelno == logging.ERROR
    assert "of app failed" in backup.getMessage() and "is not a folder" in backup.getMessage()
    assert restore.name == "pgvault.restore" and "is not empty" in restore.getMessage()


def test_under_systemd_stderr_lines_carry_journald_priorities(tmp_path: Path) -> None:
    """With JOURNAL_STREAM naming the stderr pipe (as systemd sets it), -v info lines start
    with <6> and the error line with <3>; without it, no prefix."""
    config = files_config(tmp_path, '"missing"')
    read_end, write_end = os.pipe()
    st = os.fstat(write_end)
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
    run = subprocess.run(
        [sys.executable, "-m", "pgvault", "run", str(config), "-v"],
        stdout=subprocess.DEVNULL,
        stderr=write_end,
        env=env,
    )
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        lines = pipe.read().splitlines()
    assert run.returncode == 1
    assert any(line.startswith("<6>pgvault: INFO: backup ") for line in lines), lines
    [error] = [line for line in lines if "error" in line]
    assert error.startswith("<3>pgvault: error: ") and "is not a folder" in error
    assert all(line[:3] in ("<6>", "<4>", "<3>", "<7>") for line in lines)

    plain = subprocess.run(
        [sys.executable, "-m", "pgvault", "run", str(config)],
        capture_output=True,
        text=True,
        env=env,  # inherited, but stderr is not that stream: no prefixes
    )
    assert plain.stderr.startswith("pgvault: error: ") and plain.stderr.count("\n") == 1
