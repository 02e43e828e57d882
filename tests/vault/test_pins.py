"""Pins and labels: retention never removes a pinned backup until its date, a damaged pin still
protects its backup, ``run --label --keep-until`` protects the backup before a migration, and
``list`` shows all of it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.vault.contents import Vault
from pgvault.vault.pins import FOREVER, pin, pin_key, read_pins, unpin
from tests.conftest import pgvault_cli
from tests.fake_backups import daily_history, fake_backup

ConfigMaker = Callable[..., Path]

KEEP_LAST_2 = """
[retention]
keep_last = 2
incomplete_grace = "1d"
"""
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def config_path(make_config: ConfigMaker, files_source: dict[str, Any]) -> Path:
    return make_config(files_source, extra=KEEP_LAST_2)


def test_pins_survive_prune_until_their_date(config_path: Path) -> None:
    """A backup pinned for ever and one pinned to a later date survive keep_last = 2; one whose
    pin expired goes, and its pin object with it."""
    config = pgvault.load_config(config_path)
    vault = Vault.from_config(config)
    ids = daily_history(vault, datetime(2026, 11, 1, 1, tzinfo=UTC), 10)
    pin(vault, ids[0], note="audit 2026", now=NOW)
    pin(vault, ids[1], until=NOW + timedelta(days=30), now=NOW)
    pin(vault, ids[2], until=NOW - timedelta(days=1), now=NOW)  # expired by `now`

    result = pgvault.prune(config, now=NOW)

    left = {m.backup_id for m in vault.backups()}
    assert left == {ids[0], ids[1], ids[-1], ids[-2]}
    assert "pinned forever (pin)" in result.plan.decision(ids[0]).reasons
    assert any(
        r.startswith("pinned until 2026-12-20") for r in result.plan.decision(ids[1]).reasons
    )
    assert not vault.sink.exists(pin_key(vault, ids[2]))  # gone with its backup
    assert set(read_pins(vault).pins) == {ids[0], ids[1]}
    # A pin never makes a backup 'latest'.
    assert vault.manifest("latest").backup_id == ids[-1]

    # Once the dated pin has passed, the next prune removes that backup.
    later = pgvault.prune(config, now=NOW + timedelta(days=31))
    assert later.removed == (ids[1],)
    assert {m.backup_id for m in vault.backups()} == {ids[0], ids[-1], ids[-2]}


def test_damaged_pin_still_protects_and_is_reported(config_path: Path) -> None:
    """A pin object that is not JSON, or names another backup, keeps its backup; list says the
    pin is damaged; unpin removes it; a pin object for no backup keeps nothing."""
    config = pgvault.load_config(config_path)
    vault = Vault.from_config(config)
    ids = daily_history(vault, datetime(2026, 11, 10, 1, tzinfo=UTC), 5)
    vault.sink.write_bytes(pin_key(vault, ids[0]), b"\x00garbage{")
    forged = json.dumps({"format_version": 1, "backup_id": ids[2], "until": None})
    vault.sink.write_bytes(pin_key(vault, ids[1]), forged.encode())
    vault.sink.write_bytes(pin_key(vault, "20200101T000000Z-000000"), b"{}")

    result = pgvault.prune(config, now=NOW)
    assert {m.backup_id for m in vault.backups()} == {ids[0], ids[1], ids[3], ids[4]}
    assert any("pin object damaged" in r for r in result.plan.decision(ids[1]).reasons)

    out = pgvault_cli("list", config_path)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith(ids[0]))
    assert "pin object damaged (not valid JSON)" in line
    rows = json.loads(pgvault_cli("list", config_path, "--json").stdout)
    by_id = {r["backup_id"]: r for r in rows}
    assert "names another backup" in by_id[ids[1]]["pin_damaged"]

    assert unpin(vault, ids[0]) == ids[0]
    assert pgvault.prune(config, now=NOW).removed == (ids[0],)


def test_pin_cli_and_labelled_run(config_path: Path) -> None:
    """`run --label --keep-until` and `pin --until --note` show in list, list --json and prune
    --dry-run; unpin and bad input are one clear line with exit 2."""
    first = pgvault_cli("run", config_path, "--label", "before-migration-42", "--keep-until", "30d")
    assert first.returncode == 0, first.stderr
    before = first.stdout.split()[-1]
    for _ in range(2):
        assert pgvault_cli("run", config_path).returncode == 0
    newest = pgvault_cli("run", config_path).stdout.split()[-1]

    out = pgvault_cli("pin", config_path, "latest", "--until", "2099-01-01", "--note", "release")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"backup {newest}: pinned until 2099-01-01 00:00 UTC (release)"

    listing = pgvault_cli("list", config_path).stdout.splitlines()
    assert listing[0].split()[-1] == "NOTE"
    row = next(x for x in listing if x.startswith(before))
    assert "label before-migration-42; keep until " in row
    assert "pinned until 2099-01-01 00:00 UTC (release)" in next(
        x for x in listing if x.startswith(newest)
    )
    rows = {
        r["backup_id"]: r for r in json.loads(pgvault_cli("list", config_path, "--json").stdout)
    }
    assert rows[before]["labels"]["label"] == "before-migration-42"
    assert rows[newest]["pin"]["until"] == "2099-01-01T00:00:00Z"
    assert rows[newest]["pin"]["note"] == "release"

    dry = pgvault_cli("prune", config_path, "--dry-run")
    line = next(x for x in dry.stdout.splitlines() if before in x)
    assert line.startswith("keep") and "(keep_until label)" in line

    assert pgvault_cli("unpin", config_path, newest).returncode == 0
    again = pgvault_cli("unpin", config_path, newest)
    assert again.returncode == 2 and f"backup {newest} is not pinned" in again.stderr
    past = pgvault_cli("pin", config_path, "latest", "--until", "2001-01-01")
    assert past.returncode == 2 and "--until '2001-01-01' is in the past" in past.stderr
    missing = pgvault_cli("pin", config_path, "19990101T000000Z-abcdef")
    assert missing.returncode == 1 and "no complete backup" in missing.stderr


def test_keep_until_forever_label_on_a_scheduled_backup(config_path: Path) -> None:
    """A scheduled backup labelled keep_until = forever outlives keep_last and still counts."""
    config = pgvault.load_config(config_path)
    vault = Vault.from_config(config)
    old = fake_backup(vault, datetime(2026, 1, 1, tzinfo=UTC), labels={"keep_until": "forever"})
    daily_history(vault, datetime(2026, 11, 10, 1, tzinfo=UTC), 4)
    pgvault.prune(config, now=NOW)
    assert old in {m.backup_id for m in vault.backups()}
    assert len(vault.backups()) == 3
    assert FOREVER.year == 9999
