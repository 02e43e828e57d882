"""The README's test command is the one CI runs, and it needs no pip outside a venv."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Run the tests: one command", 1)[1]
    block = re.search(r"```sh\n(.*?)\n```", section, re.S)
    assert block is not None, "README has no sh block under 'Run the tests'"
    return block.group(1).strip()


def test_ci_runs_exactly_the_readme_command() -> None:
    """.ci/run's test line is the README's command, character for character."""
    command = readme_test_command()
    assert "\n" not in command
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in lines


def test_readme_command_installs_nox_into_its_own_venv() -> None:
    """No bare ``pip install`` (PEP 668 refuses it on Debian 12's python3): nox goes into .venv-ci,
    which git ignores."""
    command = readme_test_command()
    assert command.startswith("python3 -m venv .venv-ci && .venv-ci/bin/pip install nox")
    assert not re.search(r"(^|&& )pip ", command)
    assert ".venv-ci/" in (ROOT / ".gitignore").read_text().splitlines()
