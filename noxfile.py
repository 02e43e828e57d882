"""Developer and CI sessions: ``nox -s tests tests_oldest`` is the README's test command and what
CI runs."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = False
nox.options.sessions = ["tests", "tests_oldest", "lint", "typing"]

PYTHON = "3.11"
OLDEST = "3.11.2"
"""The oldest Python pgvault claims (``requires-python``): Debian 12's own ``/usr/bin/python3``,
which operators install on. Its standard library lacks things later 3.11 releases have (tarfile
extraction filters arrived in 3.11.4), so the tests that lean on it run there too."""

OLDEST_TESTS = [
    # Files restores: tarfile; the rest: tomllib, datetime/zoneinfo, fcntl, logging, zlib.
    "tests/operations/restore/test_files.py",
    "tests/sources/test_files.py",
    "tests/test_config.py",
    "tests/vault/test_retention.py",
    "tests/transforms/test_keys.py",
    "tests/test_observability.py",
    "tests/transforms/test_compress.py",
]


def compile_package(session: nox.Session) -> None:
    """Compile pgvault's modules to bytecode, as an installed package has them.

    The suite starts ``pgvault`` hundreds of times (the CLI, ``archive_command``,
    ``restore_command``). An editable install has no bytecode, and where
    ``PYTHONDONTWRITEBYTECODE`` is set (this machine sets it) every start would compile a
    hundred modules again: about a fifth of the CLI tests' time.
    """
    session.run("python", "-m", "compileall", "-q", "src/pgvault")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, against real PostgreSQL clusters started by the fixtures."""
    # The lock keeps a fresh machine's install to seconds: unconstrained, pip backtracks for
    # minutes through s3fs/gcsfs/aiobotocore/boto3 releases that pin each other exactly.
    session.install("-c", "constraints/test.txt", "-e", ".[test]")
    compile_package(session)
    # One worker per core (xdist): the fixtures take free ports and private folders, so
    # workers share nothing but the machine's broker and cache, where each run has its own
    # queue and key prefix.
    session.run("pytest", "-n", "auto", *session.posargs)


@nox.session(python=OLDEST)
def tests_oldest(session: nox.Session) -> None:
    """The standard-library-sensitive tests on the oldest Python claimed (Debian 12's 3.11.2)."""
    session.install("-c", "constraints/test.txt", "-e", ".[test]")
    compile_package(session)
    session.run("pytest", *(session.posargs or OLDEST_TESTS))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff: lint rules, and formatting as ruff format writes it."""
    session.install("ruff")
    paths = ["src", "tests", "benchmarks", "plugins", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session(python=PYTHON)
def typing(session: nox.Session) -> None:
    """mypy strict on the package."""
    # The shipped test kit (pgvault.testing) imports pytest and the sink extras: type-check
    # against the same locked environment the tests use.
    session.install("-c", "constraints/test.txt", "-e", ".[test]", "mypy")
    session.run("mypy")


@nox.session(python=PYTHON)
def plugins(session: nox.Session) -> None:
    """Install each separately packaged plugin in plugins/ beside the core; run its own tests."""
    from pathlib import Path

    folders = sorted(p.parent for p in Path("plugins").glob("*/pyproject.toml"))
    if not folders:
        session.error("no plugin packages in plugins/")
    for folder in folders:
        session.install("-e", ".", "-e", f"{folder}[test]")
        with session.chdir(folder):
            session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def benchmarks(session: nox.Session) -> None:
    """Build the datasets, measure, and write docs/benchmarks.md with its charts (slow: about
    40 min, plus about an hour for every dataset, the scaling curves, many databases and the
    fixed costs at the issue's sizes; ``nox -s benchmarks -- --no-scaling`` skips those)."""
    # pgBackRest and barman-cli-cloud (the WAL and base backup peers) come from Debian: the
    # benchmarks install them with apt-get when missing and running as root, else say so.
    # lz4 is measured to decide whether it is worth offering; it is not a pgvault dependency.
    # The WAL benchmark runs moto (S3 over TLS) and the s3 sink: the test extra has them.
    session.install("-c", "constraints/test.txt", "-e", ".[test]", "lz4")
    session.run("python", "-m", "benchmarks.run", *session.posargs)
