"""prune on a real local vault: removes exactly what the plan removes, manifest first, leaves
runs in progress alone, explains itself on --dry-run, and keeps a real pg_dump backup restorable."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

import pgvault
from pgvault.exceptions import SinkError
from pgvault.sinks.api import ObjectInfo, ObjectWriter, Sink
from pgvault.testing import PostgresCluster
from pgvault.vault.contents import Vault
from pgvault.vault.manifest import MANIFEST_NAME
from tests.conftest import pgvault_cli
from tests.fake_backups import daily_history, fake_backup

ConfigMaker = Callable[..., Path]

RETENTION = """
[retention]
keep_daily = 7
keep_weekly = 5
keep_monthly = 12
timezone = "Europe/Berlin"
incomplete_grace = "1d"
"""


@pytest.fixture
def config(make_config: ConfigMaker, files_source: dict[str, Any]) -> pgvault.PipelineConfig:
    return pgvault.load_config(make_config(files_source, extra=RETENTION))


def test_prune_removes_exactly_what_the_plan_removes(config: pgvault.PipelineConfig) -> None:
    """Sixty dailies under daily 7 / weekly 5 / monthly 12 shrink to the planned set, data too."""
    vault = Vault.from_config(config)
    ids = daily_history(vault, datetime(2026, 9, 22, 1, tzinfo=UTC), 60)
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    result = pgvault.prune(config, now=now)
    assert result.ok and not result.dry_run
    kept = {d.backup_id for d in result.plan.kept}
    assert set(result.removed) == set(ids) - kept
    assert {m.backup_id for m in vault.backups()} == kept
    assert vault.incomplete() == []
    folders = {p.name for p in (Path(config.sink.describe()) / "test" / "backups").iterdir()}
    assert folders == kept  # the data went too, and the emptied folders with it
    # 7 days + 3 more Sundays + 2 more month ends (Oct 31, Sep 30).
    assert len(kept) == 12


def test_dry_run_changes_nothing_and_says_why(
    config: pgvault.PipelineConfig, make_config: ConfigMaker, files_source: dict[str, Any]
) -> None:
    """--dry-run lists every backup with keep/remove and the reason, and removes nothing."""
    vault = Vault.from_config(config)
    daily_history(vault, datetime(2026, 9, 22, 1, tzinfo=UTC), 60)
    before = sorted(m.backup_id for m in vault.backups())

    result = pgvault.prune(config, dry_run=True)
    assert result.dry_run and result.removed == ()
    assert sorted(m.backup_id for m in vault.backups()) == before

    path = make_config(files_source, extra=RETENTION)
    out = pgvault_cli("prune", path, "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 61  # one per backup, then the summary
    assert lines[0].startswith("keep  ") and "newest, daily 2026-11-20" in lines[0]
    assert any("monthly 2026-10" in line for line in lines)
    assert any(line.startswith("remove") and "no rule keeps it" in line for line in lines)
    assert lines[-1].startswith("dry run (daily 7, weekly 5, monthly 12 (Europe/Berlin))")
    assert "nothing was changed" in lines[-1]
    assert sorted(m.backup_id for m in vault.backups()) == before

    as_json = json.loads(pgvault_cli("prune", path, "--dry-run", "--json").stdout)
    assert as_json["dry_run"] is True and len(as_json["backups"]) == 60
    first = as_json["backups"][0]
    assert first["action"] == "keep" and "newest" in first["reasons"]


@attrs.define
class RecordingSink(Sink):
    """A local sink that records deletions and can fail the n-th data deletion (a dying prune)."""

    inner: Sink
    deleted: list[str] = attrs.field(factory=list)
    fail_data_deletes: bool = False
    type_name = "recording"

    def open_writer(self, key: str) -> ObjectWriter:
        return self.inner.open_writer(key)

    def open_reader(self, key: str) -> Iterator[bytes]:
        return self.inner.open_reader(key)

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        if self.fail_data_deletes and not key.endswith(MANIFEST_NAME):
            raise SinkError(f"recording sink: connection lost deleting {key}")
        self.deleted.append(key)
        self.inner.delete(key)

    def describe(self) -> str:
        return self.inner.describe()


def test_manifest_goes_first_so_an_interrupted_prune_leaves_no_dangling_manifest(
    config: pgvault.PipelineConfig,
) -> None:
    """Each removal deletes the manifest before the data; a prune dying midway leaves only an
    incomplete folder, which the next prune cleans once it is past the grace period."""
    sink = RecordingSink(config.sink)
    cfg = attrs.evolve(config, sink=sink)
    vault = Vault.from_config(cfg)
    ids = daily_history(vault, datetime(2026, 11, 1, 1, tzinfo=UTC), 10)
    now = datetime(2026, 11, 10, 12, tzinfo=UTC)

    # Daily 7 keeps Nov 4-10, weekly keeps Nov 1 (the newest of its ISO week): Nov 2-3 go.
    victims = {ids[1], ids[2]}
    sink.fail_data_deletes = True
    broken = pgvault.prune(cfg, now=now)
    assert not broken.ok
    assert {f.backup_id for f in broken.failures} == victims
    assert all("connection lost" in f.message for f in broken.failures)
    # No manifest points at data that may be gone: the victims are merely incomplete now.
    assert {m.backup_id for m in vault.backups()} == set(ids) - victims
    assert vault.incomplete() == sorted(victims)
    for backup_id in victims:
        assert vault.backup_prefix(backup_id) + MANIFEST_NAME in sink.deleted

    sink.fail_data_deletes = False
    sink.deleted.clear()
    healed = pgvault.prune(cfg, now=now + timedelta(days=2))
    assert healed.ok and set(healed.removed) == victims
    assert vault.incomplete() == []
    assert not any(MANIFEST_NAME in k for k in sink.deleted)  # only leftovers' data was left


def test_manifest_is_deleted_before_any_data(config: pgvault.PipelineConfig) -> None:
    """In a clean prune too, each removed backup loses its manifest before any data object."""
    sink = RecordingSink(config.sink)
    cfg = attrs.evolve(config, sink=sink)
    vault = Vault.from_config(cfg)
    daily_history(vault, datetime(2026, 11, 1, 1, tzinfo=UTC), 10)
    result = pgvault.prune(cfg, now=datetime(2026, 11, 10, 12, tzinfo=UTC))
    assert len(result.removed) == 2
    for backup_id in result.removed:
        mine = [k for k in sink.deleted if k.startswith(vault.backup_prefix(backup_id))]
        assert mine[0].endswith(MANIFEST_NAME) and len(mine) == 2


def test_runs_in_progress_are_never_touched(config: pgvault.PipelineConfig) -> None:
    """A manifest-less folder younger than the grace period stays; an older one is removed,
    temporary files of interrupted writes included."""
    vault = Vault.from_config(config)
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    fake_backup(vault, now - timedelta(hours=10))
    running = fake_backup(vault, now - timedelta(hours=2), complete=False)
    dead = fake_backup(vault, now - timedelta(days=3), complete=False)
    stale_dir = Path(config.sink.describe()) / "test" / "backups" / "20261101T010000Z-abcdef"
    stale_dir.mkdir(parents=True)
    (stale_dir / ".dump.pgdump.partial-1234").write_bytes(b"half")
    running_partial = Path(config.sink.describe()) / "test" / "backups" / running / ".x.partial-9"
    running_partial.write_bytes(b"writing")

    assert vault.incomplete() == sorted([dead, running, stale_dir.name])  # partials count too
    result = pgvault.prune(config, now=now)
    assert set(result.removed) == {dead, stale_dir.name}
    assert set(result.leftovers) == {dead, stale_dir.name}
    assert result.partials_removed == 1
    assert vault.incomplete() == [running]
    assert running_partial.exists()
    assert not stale_dir.exists()
    assert "may still be running" in result.plan.decision(running).reasons[0]


def test_prune_without_retention_is_a_config_error(
    make_config: ConfigMaker, files_source: dict[str, Any]
) -> None:
    """No [retention] table: prune refuses, in one line, exit 2, and removes nothing."""
    path = make_config(files_source)
    with pytest.raises(pgvault.ConfigError, match=r"retention: prune needs a \[retention\] table"):
        pgvault.prune(pgvault.load_config(path))
    out = pgvault_cli("prune", path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "prune needs a [retention] table" in out.stderr


def test_prune_keeps_a_real_backup_restorable(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> None:
    """With a real pg_dump backup as the newest, prune removes the old ones and the real one still
    verifies deeply (its data was not touched)."""
    path = make_config(
        {"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)},
        extra="[retention]\nkeep_last = 1\nkeep_monthly = 2\n",
    )
    config = pgvault.load_config(path)
    vault = Vault.from_config(config)
    old = daily_history(vault, datetime.now(UTC) - timedelta(days=100), 5)
    manifest = pgvault.run(config)
    out = pgvault_cli("prune", path)
    assert out.returncode == 0, out.stderr
    remaining = [m.backup_id for m in vault.backups()]
    assert remaining[0] == manifest.backup_id and len(remaining) == 2
    assert remaining[1] == old[-1]  # the newest of an older month
    assert out.stdout.splitlines()[-1] == "kept 2, removed 4 of 4"
    assert vault.verify(vault.manifest(manifest.backup_id), deep=True).ok


@pytest.mark.parametrize("kind", ["local", "s3", "gcs", "sftp"])
def test_prune_and_check_work_on_every_sink(
    kind: str,
    request: pytest.FixtureRequest,
    config: pgvault.PipelineConfig,
) -> None:
    """On each sink, against its real server: prune leaves exactly the planned backups (and the
    incomplete leftover goes), and check reads the result."""
    sink = config.sink if kind == "local" else request.getfixturevalue(f"{kind}_sink")
    cfg = attrs.evolve(config, sink=sink)
    vault = Vault.from_config(cfg)
    now = datetime.now(UTC)
    ids = daily_history(vault, now - timedelta(days=9, hours=1), 10)
    leftover = fake_backup(vault, now - timedelta(days=3), complete=False)
    result = pgvault.prune(cfg, now=now)
    assert result.ok and leftover in result.removed
    kept = {d.backup_id for d in result.plan.kept}
    assert {m.backup_id for m in vault.backups()} == kept and ids[-1] in kept
    assert vault.incomplete() == []
    assert sink.list(vault.backup_prefix(ids[0])) == [] or ids[0] in kept
    checked = pgvault.check(cfg, now=now)
    assert checked.ok, checked.lines()
    assert checked.backups == len(kept) and checked.newest is not None
    assert checked.newest.backup_id == ids[-1]


def test_a_future_dated_backup_neither_anchors_retention_nor_is_pruned(
    make_config: ConfigMaker, files_source: dict[str, Any]
) -> None:
    """A backup dated 399 days ahead (a clock that jumped, then was fixed) is kept and reported;
    keep_within still counts back from the genuine newest, so the last minutes' backups stay."""
    path = make_config(files_source, extra='[retention]\nkeep_within = "2d"\n')
    config = pgvault.load_config(path)
    vault = Vault.from_config(config)
    now = datetime.now(UTC)
    genuine = [fake_backup(vault, now - timedelta(minutes=m)) for m in (3, 2, 1)]
    old = fake_backup(vault, now - timedelta(days=5))
    ahead = fake_backup(vault, now + timedelta(days=399))
    result = pgvault.prune(config)
    assert result.removed == (old,)
    assert {m.backup_id for m in vault.backups()} == {*genuine, ahead}
    why = result.plan.decision(ahead).reasons
    assert len(why) == 1 and why[0].startswith("dated 398d 23h in the future")
    assert result.plan.decision(genuine[-1]).reasons == ("newest", "within 2d")
