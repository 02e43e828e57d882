"""WAL to every destination: wal-push stores each file on all of them, a failing required one
fails the push (PostgreSQL retries), a failing optional one lags until copy fills it in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import pgvault
from pgvault.operations.copy import copy
from pgvault.transforms.api import DecodeContext
from pgvault.wal.archive import WalArchive
from pgvault.wal.names import WalError, WalName
from pgvault.wal.push import WalPusher
from tests.conftest import toml_value
from tests.wal.conftest import WalRig

Rig = Callable[..., WalRig]


def with_second_sink(rig: WalRig, path: Path, *, required: bool) -> pgvault.PipelineConfig:
    """The rig's config with a second local destination ``backup`` at ``path``."""
    text = rig.config.read_text().split('[[sink]]\nname = "backup"')[0]
    text = text.replace("[sink]\n", '[[sink]]\nname = "main"\n', 1)
    text += f'[[sink]]\nname = "backup"\ntype = "local"\npath = {toml_value(str(path))}\n'
    text += f"required = {toml_value(required)}\n"
    rig.config.write_text(text)
    return rig.load()


def decoded(config: pgvault.PipelineConfig, dest: str, name: str) -> bytes:
    archive = WalArchive(config.destination(dest).sink, config.name)
    (record,) = archive.clusters()
    out: list[bytes] = []
    archive.read(
        record.cluster, WalName.parse(name), DecodeContext(configured=config.transforms), out.append
    )
    return b"".join(out)


def test_wal_goes_to_every_destination_and_a_required_failure_fails_the_push(
    wal_rig: Rig, tmp_path: Path
) -> None:
    """A pushed segment decodes to its bytes on both destinations; with the second one broken
    and required, the push fails naming it, and the retry once it is back stores it there."""
    rig = wal_rig(None)
    (name,) = rig.switch(1)
    segment = rig.cluster.data / "pg_wal" / name
    config = with_second_sink(rig, tmp_path / "second", required=True)
    WalPusher(config, rig.cluster.data).push(segment)
    for dest in ("main", "backup"):
        assert decoded(config, dest, name) == segment.read_bytes()

    (later,) = rig.switch(1)
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    broken = with_second_sink(rig, blocked, required=True)
    with pytest.raises(WalError, match=r"destination 'backup' failed.*PostgreSQL retries"):
        WalPusher(broken, rig.cluster.data).push(rig.cluster.data / "pg_wal" / later)
    blocked.unlink()
    retried = WalPusher(broken, rig.cluster.data).push(rig.cluster.data / "pg_wal" / later)
    assert retried.outcome == "identical"  # on the primary; now stored on the second too
    assert decoded(broken, "backup", later) == (rig.cluster.data / "pg_wal" / later).read_bytes()


def test_an_optional_destination_lags_and_copy_fills_its_wal_in(
    wal_rig: Rig, tmp_path: Path
) -> None:
    """With required = false a broken second destination does not fail the push; after it is
    back, copy brings the missing WAL file (and the cluster record) over, once."""
    rig = wal_rig(None)
    (name,) = rig.switch(1)
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    config = with_second_sink(rig, blocked, required=False)
    assert WalPusher(config, rig.cluster.data).push(rig.cluster.data / "pg_wal" / name)
    blocked.unlink()
    copied = copy(config, "main", "backup")
    assert copied.ok and copied.wal_copied == 2  # the cluster record and the segment
    assert decoded(config, "backup", name) == (rig.cluster.data / "pg_wal" / name).read_bytes()
    assert copy(config, "main", "backup").wal_copied == 0
