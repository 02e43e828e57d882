"""The shipped pytest plugin loads only into projects that ask for it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# A test module in someone else's project: at collection it says whether pgvault's fixtures
# module was imported; `pytest --fixtures` then lists the fixture names the project sees.
PROBE = """
import sys

print(f"PROBE loaded={'pgvault.testing.fixtures' in sys.modules}")

def test_nothing():
    pass
"""


def run_pytest(project: Path, *args: str) -> str:
    """``loaded=… pg_database=…`` as the project's own pytest run sees it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "--fixtures", "-p", "no:cacheprovider", *args],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    probe = next(line for line in done.stdout.splitlines() if line.startswith("PROBE"))
    listed = any(line.startswith("pg_database") for line in done.stdout.splitlines())
    return f"{probe} pg_database={listed}"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh project folder (its own rootdir) with one test, run by the venv pgvault is in."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "someapp"\n')
    (tmp_path / "test_app.py").write_text(PROBE)
    return tmp_path


def test_a_project_that_installs_pgvault_does_not_get_its_fixtures(project: Path) -> None:
    """Installing pgvault adds neither its fixtures nor their import to another project's run."""
    assert run_pytest(project) == "PROBE loaded=False pg_database=False"


def test_conftest_pytest_plugins_opts_in(project: Path) -> None:
    """``pytest_plugins = ["pgvault.testing"]`` in conftest.py brings the fixtures in."""
    (project / "conftest.py").write_text('pytest_plugins = ["pgvault.testing"]\n')
    assert run_pytest(project) == "PROBE loaded=True pg_database=True"


def test_command_line_opts_in(project: Path) -> None:
    """``pytest -p pgvault.testing`` brings the fixtures in for one run."""
    assert run_pytest(project, "-p", "pgvault.testing") == "PROBE loaded=True pg_database=True"
