"""The base backup source on real clusters that archive their WAL into the vault."""

from __future__ import annotations

import pgvault
from pgvault.vault import Vault
from tests.basebackup_rig import archiving, basebackup_config  # noqa: F401
from tests.wal.conftest import WalRig, pgvault_for_postgres, wal_rig  # noqa: F401


def test_a_base_backup_records_its_cluster_and_wal_range(archiving: WalRig) -> None:  # noqa: F811
    """A run stores the data tar and backup_manifest, and its manifest records the cluster,
    the WAL range and times under the keys restores rely on."""
    config = pgvault.load_config(basebackup_config(archiving))
    manifest = pgvault.run(config)
    src = manifest.source
    roles = {a.role: a.stream for a in manifest.artifacts}
    assert roles == {"basebackup": "base", "backup_manifest": "backup_manifest"}
    (sysid,) = archiving.cluster.execute("SELECT system_identifier FROM pg_control_system()")[0]
    assert src["system_identifier"] == str(sysid)
    assert src["major"] == 15 and src["segment_size"] == 1 << 20
    assert src["timeline"] == src["stop_timeline"] == 1
    assert src["backup_label"].startswith(f"START WAL LOCATION: {src['start_lsn']} ")
    assert src["start_wal"] <= src["stop_wal"] and src["started_at"] <= src["stopped_at"]
    assert src["tablespaces"] == [] and src["data_bytes"] > 0
    assert Vault.from_config(config).verify(manifest).ok
