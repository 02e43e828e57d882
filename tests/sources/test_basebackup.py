"""The base backup source on real clusters that archive their WAL into the vault."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

import pgvault
from pgvault.exceptions import PgVaultError, SinkError, SourceError
from pgvault.sinks.api import ObjectWriter
from pgvault.sinks.local import LocalSink
from pgvault.vault.contents import Vault
from tests.basebackup_rig import archiving, archiving_shared, basebackup_config  # noqa: F401
from tests.wal.conftest import (  # noqa: F401
    WalRig,
    pgvault_for_postgres,
    postgres_folder,
    wal_rig,
)

Rig = Callable[..., WalRig]


def test_a_base_backup_records_its_cluster_and_wal_range(archiving_shared: WalRig) -> None:  # noqa: F811
    """A run stores the data tar and backup_manifest, and its manifest records the cluster,
    the WAL range and times under the keys restores rely on."""
    rig = archiving_shared
    config = pgvault.load_config(basebackup_config(rig))
    manifest = pgvault.run(config)
    src = manifest.source
    roles = {a.role: a.stream for a in manifest.artifacts}
    assert roles == {"basebackup": "base", "backup_manifest": "backup_manifest"}
    (sysid,) = rig.cluster.execute("SELECT system_identifier FROM pg_control_system()")[0]
    assert src["system_identifier"] == str(sysid)
    assert src["major"] == 15 and src["segment_size"] == 1 << 20
    assert src["timeline"] == src["stop_timeline"] == 1
    assert src["backup_label"].startswith(f"START WAL LOCATION: {src['start_lsn']} ")
    assert src["start_wal"] <= src["stop_wal"] and src["started_at"] <= src["stopped_at"]
    assert src["tablespaces"] == [] and src["data_bytes"] > 0
    assert Vault.from_config(config).verify(manifest).ok


def _stored_backups(rig: WalRig) -> list[str]:
    """Every object under the vault's backups/ (complete or not)."""
    root = rig.vault / "main" / "backups"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_server_that_does_not_archive_is_refused_at_start(wal_rig: Rig) -> None:  # noqa: F811
    """archive_mode = off: one line saying why, before pg_basebackup starts; nothing stored."""
    rig = wal_rig(None, settings={"archive_mode": "off"})
    config = pgvault.load_config(basebackup_config(rig))
    with pytest.raises(SourceError, match=r"does not archive WAL \(archive_mode = off\)") as err:
        pgvault.run(config)
    assert "\n" not in str(err.value)
    assert _stored_backups(rig) == []


def test_a_tablespace_outside_the_data_directory_is_refused(archiving_shared: WalRig) -> None:  # noqa: F811
    """A second tablespace: refused at start, naming it and what to do instead."""
    rig = archiving_shared
    before = _stored_backups(rig)
    folder = postgres_folder("pgvault-ts-")
    rig.cluster.execute(f"CREATE TABLESPACE extra LOCATION '{folder}'")
    try:
        config = pgvault.load_config(basebackup_config(rig))
        with pytest.raises(SourceError, match=r"tablespaces outside the data directory \(extra "):
            pgvault.run(config)
        assert _stored_backups(rig) == before
    finally:
        # The module's cluster is shared: leave it as it was.
        rig.cluster.execute("DROP TABLESPACE extra")


def test_broken_archiving_fails_the_backup_within_wal_wait(wal_rig: Rig) -> None:  # noqa: F811
    """archive_command fails: PostgreSQL would wait forever; pgvault gives up after wal_wait,
    names the first segment missing from the vault and says archiving is broken."""
    rig = wal_rig(None)  # archive_command = '/bin/false'
    config = pgvault.load_config(basebackup_config(rig, wal_wait="2s"))
    with pytest.raises(SourceError) as err:
        pgvault.run(config)
    text = str(err.value)
    assert "archiving is broken" in text and "pg_stat_archiver" in text
    assert re.search(r"first segment missing from the vault: [0-9A-F]{24}\)", text), text
    assert _stored_backups(rig) == []


def test_wal_archived_elsewhere_fails_naming_the_first_missing_segment(wal_rig: Rig) -> None:  # noqa: F811
    """PostgreSQL archives (archive_command = true), but not into this vault: the backup waits
    wal_wait for the vault, then fails naming the first of its segments that never arrived."""
    rig = wal_rig(None, settings={"archive_command": "'true'"})
    config = pgvault.load_config(basebackup_config(rig, wal_wait="1s"))
    with pytest.raises(SourceError, match=r"WAL segment [0-9A-F]{24} \(of ") as err:
        pgvault.run(config)
    assert "did not reach the WAL archive of vault 'main'" in str(err.value)
    assert _stored_backups(rig) == []


class _Interrupt:
    """A progress receiver that does ``action`` once, when the first bytes have been read."""

    def __init__(self, action: Callable[[], None]) -> None:
        self._action = action
        self._done = False

    def advance(self, raw: int = 0, stored: int = 0) -> None:
        if raw and not self._done:
            self._done = True
            self._action()


def _pg_basebackup_pid(rig: WalRig) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            argv
            and argv[0].endswith(b"pg_basebackup")
            and any(f"port={rig.cluster.port}".encode() in a for a in argv)
        ):
            return int(entry.name)
    raise AssertionError("pg_basebackup is not running")


class _FullDisk(LocalSink):
    """A local sink whose artifact writes fail with ENOSPC after 2 MiB (a disk filling up)."""

    def open_writer(self, key: str) -> ObjectWriter:
        inner = super().open_writer(key)
        sink = self

        class Writer(ObjectWriter):
            written = 0

            def write(self, data: bytes) -> None:
                self.written += len(data)
                if self.written > 2 << 20 and "/backups/" in key:
                    inner.abort()
                    raise SinkError(f"local sink: cannot write {sink.path}/{key}: disk full")
                inner.write(data)

            def commit(self) -> None:
                inner.commit()

            def abort(self) -> None:
                inner.abort()

        return Writer()


@pytest.mark.parametrize("how", ["kill", "connection", "server-stop", "disk-full"])
def test_an_interrupted_base_backup_leaves_no_backup(
    request: pytest.FixtureRequest,
    how: str,
) -> None:
    """pg_basebackup killed, its connection ended, the server stopped, or the sink full, after
    the first bytes: the run fails with the cause and the vault holds nothing of it."""
    # Only the server stop needs a cluster of its own; the others leave the module's running.
    rig: WalRig = request.getfixturevalue(
        "archiving" if how == "server-stop" else "archiving_shared"
    )
    config = pgvault.load_config(basebackup_config(rig))
    backups_before = Vault.from_config(config).backups()
    stored_before = _stored_backups(rig)
    actions: dict[str, Callable[[], None]] = {
        "kill": lambda: os.kill(_pg_basebackup_pid(rig), signal.SIGKILL),
        "connection": lambda: rig.cluster.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE backend_type = 'walsender'"
        ),
        "server-stop": lambda: rig.cluster.stop("immediate"),
        "disk-full": lambda: None,
    }
    expected = {
        "kill": "pg_basebackup was killed by SIGKILL",
        "connection": "pg_basebackup failed",
        "server-stop": "pg_basebackup failed",
        "disk-full": "disk full",
    }
    if how == "disk-full":
        config = attrs.evolve(config, sink=_FullDisk(path=rig.vault))
    with pytest.raises(PgVaultError, match=expected[how]):
        pgvault.run(config, progress=_Interrupt(actions[how]))
    assert Vault.from_config(config).backups() == backups_before
    assert _stored_backups(rig) == stored_before
