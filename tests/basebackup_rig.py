"""Clusters that archive WAL into a vault, and pipelines that take base backups of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import render_config
from tests.wal.conftest import WalRig, chown_postgres

Rig = Callable[..., WalRig]


def basebackup_config(rig: WalRig, *, name: str = "base.toml", **source: Any) -> Path:
    """A pipeline beside the rig's: same vault, transforms and [wal], a basebackup source."""
    _, _, rest = rig.config.read_text().partition("[[transform]]")
    head = render_config(
        name="main",
        source={"type": "basebackup", "dsn": rig.cluster.dsn(), **source},
        sink={"type": "local", "path": str(rig.vault)},
        transforms=[],
    ).split("[sink]")[0]
    path = rig.folder / name
    path.write_text(head + "[[transform]]" + rest)
    chown_postgres(path)
    return path


@pytest.fixture
def archiving(wal_rig: Rig) -> Iterator[WalRig]:
    """A cluster archiving through wal-push into its vault, with a table ``t`` of 1000 rows and
    one segment archived already (so the vault's folders belong to postgres, as they do when
    PostgreSQL archives before the first backup)."""
    rig = wal_rig("push")
    rig.cluster.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")
    (name,) = rig.switch(1)
    rig.wait_archived(name)
    yield rig
