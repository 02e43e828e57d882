"""``pgvault check``, ``drill`` and ``doctor``: is the vault healthy, does a backup restore,
is the setup sound. ``check`` and ``doctor`` exit like Nagios plugins."""

from __future__ import annotations

import argparse
import json

from pgvault.cli import common
from pgvault.cli.commands import storage
from pgvault.cli.exits import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNKNOWN,
)
from pgvault.exceptions import PgVaultError
from pgvault.operations.check import check as check_vault
from pgvault.operations.drill import drill as run_drill


def cmd_check(args: argparse.Namespace) -> int:
    """``pgvault check``: the vault against the thresholds; Nagios exit codes."""
    # Monitors read the exit code and the first stdout line: whatever keeps the check from
    # running must be UNKNOWN there (Nagios' "cannot check"), never the WARNING an ordinary
    # failure's exit code 1 would mean.
    try:
        config = common.load(args)
        result = check_vault(config)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        prefix = "" if isinstance(exc, PgVaultError) else "internal error (please report it): "
        common.report(args, exc, prefix=prefix)
        text = str(exc).replace("\n", " ") or type(exc).__name__
        print(f"UNKNOWN: {prefix}{text}")
        return EXIT_UNKNOWN
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.nagios_lines():
            print(line)
    return int(result.status)


def cmd_drill(args: argparse.Namespace) -> int:
    """``pgvault drill``: restore a backup somewhere harmless and prove it works."""
    config = common.load(args)
    cold = storage.cold_drill(config, args)  # archived backups (issue 15)
    if cold is not None:
        return cold
    result = run_drill(config, args.backup, identities=tuple(args.identity))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        state = "PASSED" if result.ok else "FAILED"
        tables = len(result.validation.tables) if result.validation else 0
        print(
            f"drill {result.drill_id} of backup {result.backup_id}: {state} in "
            f"{result.duration_seconds:.1f}s ({tables} table(s) validated, "
            f"{sum(c.ok for c in result.checks)}/{len(result.checks)} check(s) passed)"
        )
        for c in result.checks:
            mark = "ok  " if c.ok else "FAIL"
            print(f"  {mark} {c.label}: {c.error or c.value} (expected {c.expected})")
    if not result.ok:
        common.stderr(f"pgvault: error: drill failed: {result.error}")
        return EXIT_FAILED
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """``pgvault doctor``: config, database, tools, sink, keys, space, clocks; Nagios exit codes."""
    from pgvault.operations.doctor import doctor, doctor_config_error

    # Like check: monitors read the first line and the exit code, so a config that cannot be
    # loaded is a CRITICAL line too.
    try:
        config = common.load(args)
    except PgVaultError as exc:
        result = doctor_config_error(exc)
    else:
        result = doctor(config)
    for line in result.lines():
        print(line)
    return int(result.status)
