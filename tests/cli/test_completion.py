"""`pgvault completion SHELL`: the scripts really complete pgvault's commands and options in
bash, zsh and fish (each shell run for real with the script loaded)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import pgvault_cli


def script(shell: str, tmp_path: Path) -> Path:
    out = pgvault_cli("completion", shell)
    assert out.returncode == 0, out.stderr
    path = tmp_path / f"pgvault.{shell}"
    path.write_text(out.stdout)
    return path


def need(shell: str) -> str:
    found = shutil.which(shell)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        # Like the server fixtures: install what the test needs (Debian's own package).
        subprocess.run(
            ["apt-get", "install", "-y", "-q", shell],
            capture_output=True,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            check=False,
        )
        found = shutil.which(shell)
    if found is None:
        # CI must fail without the shell; a developer's machine may lack it and says so.
        if os.environ.get("CI"):
            pytest.fail(f"{shell} is not installed (apt-get install -y {shell})")
        pytest.skip(f"{shell} is not installed (apt-get install -y {shell})")
    return found


def test_bash_completes_commands_and_options(tmp_path: Path) -> None:
    """`pgvault res<TAB>` offers restore; `pgvault prune --d<TAB>` offers --dry-run and --debug;
    complete -p shows the function registered for pgvault."""
    path = script("bash", tmp_path)
    probe = (
        f"source {path}; complete -p pgvault; "
        'COMP_WORDS=(pgvault res); COMP_CWORD=1; _pgvault; echo "1:${COMPREPLY[*]}"; '
        'COMP_WORDS=(pgvault prune --d); COMP_CWORD=2; _pgvault; echo "2:${COMPREPLY[*]}"'
    )
    out = subprocess.run([need("bash"), "-c", probe], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "complete -o filenames -F _pgvault pgvault"
    assert lines[1] == "1:restore"
    assert sorted(lines[2][2:].split()) == ["--debug", "--dry-run"]


def test_fish_completes_commands_and_options(tmp_path: Path) -> None:
    """fish's own `complete -C` offers drill for `pgvault dr` and --deep for `verify --de`."""
    path = script("fish", tmp_path)
    fish = need("fish")
    probe = f"source {path}; complete -C 'pgvault dr'; complete -C 'pgvault verify --de'"
    out = subprocess.run([fish, "--no-config", "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    words = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert "drill" in words and "--deep" in words and "--debug" in words


def test_zsh_loads_the_function_and_describes_commands(tmp_path: Path) -> None:
    """The zsh script loads under compinit and registers _pgvault for pgvault, with each
    command and its help in the list it describes."""
    path = script("zsh", tmp_path)
    zsh = need("zsh")
    probe = (
        "autoload -Uz compinit && compinit -u -D; "
        f"source {path}; print -r -- ${{_comps[pgvault]}}; functions _pgvault"
    )
    out = subprocess.run([zsh, "-f", "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    first, *body = out.stdout.splitlines()
    assert first == "_pgvault"
    assert any("'restore:restore a backup into a new database or folder'" in b for b in body)


def test_install_writes_where_the_shell_looks(tmp_path: Path) -> None:
    """--install writes bash's script under ~/.local/share/bash-completion/completions."""
    out = subprocess.run(
        [sys.executable, "-m", "pgvault", "completion", "bash", "--install"],
        capture_output=True,
        text=True,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    written = tmp_path / ".local/share/bash-completion/completions/pgvault"
    assert "complete -o filenames -F _pgvault pgvault" in written.read_text()
