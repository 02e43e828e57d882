"""The dependency rule of docs/architecture.md, checked on the source (tests/import_graph.py)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pgvault
from tests.fake_backups import fake_backup
from tests.import_graph import cycles, edges

COMPOSERS = {"pgvault", "pgvault.cli.common"}
"""Modules allowed to import the composition root (pgvault.config) at run time."""


def test_no_import_circle_at_run_time() -> None:
    """No circle among run-time imports, module-level or inside functions."""
    assert cycles(edges(), {"module", "lazy"}) == []


def test_no_type_checking_circle_through_config() -> None:
    """Type-only circles exist (hooks name the config, the config holds notifiers), never
    through the config module."""
    for component in cycles(edges(), {"module", "lazy", "typing"}):
        assert "pgvault.config" not in component


def test_only_the_cli_and_the_api_import_config() -> None:
    """The composition root is imported at run time only by the command line, the top-level API
    and the shipped test kit (which builds components the way config does)."""
    importers = {
        a
        for a, b, kind in edges()
        if b == "pgvault.config" and kind != "typing" and not a.startswith("pgvault.testing.")
    }
    assert importers <= COMPOSERS


def test_integrations_call_the_public_api() -> None:
    """pgvault.integrations (Celery …) import at run time only the top-level API, the config
    lookup and the exceptions: they are callers of the API, like a user's program."""
    imported = {
        b for a, b, kind in edges() if a.startswith("pgvault.integrations") and kind != "typing"
    }
    assert imported <= {"pgvault", "pgvault.config_lookup", "pgvault.exceptions"}


def test_settings_is_a_leaf() -> None:
    """pgvault.settings imports nothing of pgvault but units and exceptions."""
    imported = {b for a, b, _ in edges() if a == "pgvault.settings"}
    assert imported <= {"pgvault.units", "pgvault.exceptions"}


def _fresh(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout + result.stderr


def test_import_pgvault_loads_almost_nothing() -> None:
    """``import pgvault`` loads no driver and no operation: the CLI's --help stays fast."""
    out = _fresh(
        "import sys, pgvault; print(sorted(m for m in sys.modules"
        " if m.startswith(('psycopg', 'pgvault.operations', 'pgvault.engine', 'pgvault.config'))))"
    )
    assert out.strip() == "[]"


HEAVY = ("psycopg", "pgvault.operations", "pgvault.engine", "pgvault.vault", "pgvault.config")
"""What a command's handler may import, and parsing the command line must not."""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["restore", "--help"], ["no-such-command"], ["completion", "fish"]],
)
def test_parsing_the_command_line_imports_no_operation(argv: list[str]) -> None:
    """``pgvault --help`` (and a usage error, ``--version``, ``completion``) runs on the parser
    alone: the handlers' modules, and what they import, load only when their command runs."""
    out = _fresh(
        "import sys\n"
        "from pgvault.cli.app import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = {HEAVY!r}\n"
        "found = sorted(m for m in sys.modules\n"
        "               if any(m == h or m.startswith(h + '.') for h in heavy))\n"
        "print('HEAVY', found, file=sys.stderr)\n"
    )
    assert "HEAVY []" in out, out


def test_every_command_has_a_handler() -> None:
    """The dispatch table and the parser name the same commands, and every handler resolves."""
    import argparse

    from pgvault.cli.app import COMMANDS, handler
    from pgvault.cli.parser import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    for name in COMMANDS:
        assert callable(handler(name))


def test_the_parser_knows_wal_fetch_s_abort_code() -> None:
    """wal-fetch's usage errors abort recovery with the code wal.fetch uses (kept apart so that
    parsing imports no WAL code)."""
    from pgvault.cli.exits import EXIT_ABORT_RECOVERY
    from pgvault.wal.fetch import EXIT_ABORT_RECOVERY as FETCH_ABORT

    assert EXIT_ABORT_RECOVERY == FETCH_ABORT


def test_public_names_resolve() -> None:
    """Every name in ``pgvault.__all__`` resolves, and the functions are functions."""
    import pgvault

    for name in pgvault.__all__:
        assert getattr(pgvault, name) is not None
    assert callable(pgvault.restore) and pgvault.restore.__module__.startswith(
        "pgvault.operations.restore"
    )
    assert isinstance(pgvault.__version__, str)


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("pgvault.restore", "RestoreResult", "pgvault.operations.restore.database"),
        ("pgvault.health", "CheckResult", "pgvault.operations.check"),
        ("pgvault.pruning", "PruneResult", "pgvault.operations.prune"),
        ("pgvault.keys", "key_id", "pgvault.transforms.keys"),
        ("pgvault.manifest", "Manifest", "pgvault.vault.manifest"),
        ("pgvault.pipeline", "run", "pgvault.engine.pipeline"),
        ("pgvault.cluster_globals", "decode_globals", "pgvault.postgres.globals"),
    ],
)
def test_old_module_paths_warn_and_re_export(old: str, name: str, new: str) -> None:
    """An old module path still imports its names, with a DeprecationWarning naming the new."""
    import importlib

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_old_package_names_warn() -> None:
    """``from pgvault.vault import Vault`` (vault.py became a package) warns and works."""
    from pgvault.vault.contents import Vault

    with pytest.warns(DeprecationWarning, match=r"pgvault\.vault\.contents"):
        from pgvault.vault import Vault as OldVault  # type: ignore[attr-defined]
    assert OldVault is Vault


def test_the_restore_function_is_never_shadowed() -> None:
    """``import pgvault.restore`` (the old module path) leaves ``pgvault.restore`` the function,
    as ``import pgvault.restore as r`` always gave it."""
    out = _fresh(
        "import warnings; warnings.simplefilter('ignore')\n"
        "import pgvault.restore as r, pgvault\n"
        "from pgvault.restore import RestoreResult\n"
        "print(callable(r), r is pgvault.restore, pgvault.restore.__name__, RestoreResult.__name__)"
    )
    assert out.strip() == "True True restore RestoreResult"


def test_encrypt_keeps_the_names_it_had_before_its_split() -> None:
    """Code importing the format or the keyring from ``pgvault.transforms.encrypt`` still works:
    the names are the very objects of the modules that now own them."""
    from pgvault.transforms import encrypt, encryption_format, keyring

    for name in ("MAGIC", "FORMAT_VERSION", "MAX_SEGMENT_SIZE", "Header", "KeySource", "nonce"):
        assert getattr(encrypt, name) is getattr(encryption_format, name)
    assert encrypt.Keyring is keyring.Keyring
    assert set(encrypt.__all__) <= set(dir(encrypt))


def test_listing_a_vault_loads_no_driver(tmp_path: Path) -> None:
    """``pgvault list`` of a pg_dump pipeline checks its whole config (the DSN included) but
    never connects: psycopg, the cipher library and the copy operation stay unloaded."""
    config = tmp_path / "app.toml"
    config.write_text(
        'name = "app"\n[source]\ntype = "pg_dump"\n'
        'dsn = "postgresql://backup:pw@127.0.0.1:1/app?sslmode=disable"\n'
        '[[transform]]\ntype = "zstd"\n[sink]\ntype = "local"\npath = "vault"\n'
    )
    vault = pgvault.Vault.from_config(pgvault.load_config(config))
    backup_id = fake_backup(vault, datetime.now(UTC) - timedelta(hours=1))
    out = _fresh(
        "import sys\n"
        "from pgvault.cli.app import main\n"
        f"code = main(['list', {str(config)!r}])\n"
        "found = sorted(m for m in sys.modules if m.split('.')[0] in\n"
        "               ('psycopg', 'psycopg_binary', 'cryptography'))\n"
        "print('EXIT', code, 'LOADED', found, 'pgvault.operations.copy' in sys.modules,\n"
        "      file=sys.stderr)\n"
    )
    assert backup_id in out
    assert "EXIT 0 LOADED [] False" in out, out


def test_a_bad_source_dsn_still_fails_run_before_the_backup(tmp_path: Path) -> None:
    """The DSN is checked without psycopg, and still when the config loads: ``pgvault run``
    refuses an unknown connection option with exit 2, one line, before any backup starts."""
    config = tmp_path / "app.toml"
    vault = tmp_path / "vault"
    config.write_text(
        'name = "app"\n[source]\ntype = "pg_dump"\ndsn = "host=127.0.0.1 hots=db"\n'
        f'[sink]\ntype = "local"\npath = "{vault}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "pgvault", "run", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"pgvault: error: {config}: source: invalid value: dsn: invalid PostgreSQL connection "
        'string: invalid connection option "…" (the quoted text is withheld: it may hold the '
        "password)\n"
    )
    assert not vault.exists() or not any(vault.rglob("*"))
