"""The gcs sink against the GCS emulator: whole backups, storage class, errors and retries."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pgvault
from pgvault.exceptions import ConfigError, SinkError
from pgvault.plugin.components import load_component
from pgvault.testing import PostgresCluster
from pgvault.testing.servers import FlakyProxy, GcsServer
from pgvault.testing.storage_fixtures import TEST_SINK_OPTIONS, make_sink
from tests.conftest import snapshot_database

ConfigMaker = Callable[..., Path]


def test_backup_verify_restore_through_gcs(
    pg_cluster: PostgresCluster,
    rich_db: str,
    make_config: ConfigMaker,
    gcs_sink_options: dict[str, Any],
) -> None:
    """A pg_dump backup to GCS is listed, deep-verified and restored with identical rows."""
    path = make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)}, sink=gcs_sink_options)
    config = pgvault.load_config(path)
    manifest = pgvault.run(config)
    vault = pgvault.Vault.from_config(config)
    assert [m.backup_id for m in vault.backups()] == [manifest.backup_id]
    assert vault.verify(manifest, deep=True).ok
    pgvault.restore(config, manifest.backup_id, target_db="restored_from_gcs")
    restored = snapshot_database(pg_cluster, "restored_from_gcs")
    assert restored == snapshot_database(pg_cluster, rich_db)
    pg_cluster.drop_database("restored_from_gcs")


def test_storage_class_applies(gcs_server: GcsServer) -> None:
    """storage_class is set on the stored objects."""
    bucket = gcs_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    sink = make_sink(gcs_server.sink_options(bucket, storage_class="NEARLINE", **TEST_SINK_OPTIONS))
    sink.write_bytes("obj", b"data")
    info = sink._fs().info(f"{bucket}/obj")  # type: ignore[attr-defined]
    assert info["storageClass"] == "NEARLINE"


def test_no_such_bucket_fails_at_once(gcs_server: GcsServer) -> None:
    """A missing bucket is reported as such, without retrying."""
    sink = make_sink(gcs_server.sink_options("pgvault-no-bucket", **TEST_SINK_OPTIONS))
    with pytest.raises(SinkError, match="no such bucket 'pgvault-no-bucket'") as info:
        sink.list("")
    assert "attempts" not in str(info.value)


def test_run_succeeds_through_a_flaky_server(
    gcs_server: GcsServer, tmp_path: Path, make_config: ConfigMaker
) -> None:
    """The store answers 503 and 429 for a while: the run retries and succeeds."""
    bucket = gcs_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    proxy = FlakyProxy(gcs_server.endpoint)
    try:
        folder = tmp_path / "files"
        folder.mkdir()
        (folder / "blob").write_bytes(b"0123456789abcdef" * (700 * 1024))  # 11.2 MB, 3 chunks
        options = {
            **gcs_server.sink_options(bucket, **TEST_SINK_OPTIONS),
            "endpoint_url": proxy.endpoint,
            "retry_attempts": 4,
        }
        config = pgvault.load_config(
            make_config({"type": "files", "paths": [str(folder)]}, [], sink=options)
        )
        proxy.fail(2, 503)
        proxy.fail(1, 429)
        manifest = pgvault.run(config)
        assert proxy.failed == 3
        assert pgvault.Vault.from_config(config).verify(manifest).ok
    finally:
        proxy.stop()


def test_forbidden_fails_at_once(gcs_server: GcsServer) -> None:
    """A 403 answer is reported as access denied after one request."""
    bucket = gcs_server.create_bucket(f"pgvault-{uuid.uuid4().hex[:12]}")
    proxy = FlakyProxy(gcs_server.endpoint)
    try:
        sink = make_sink(
            {**gcs_server.sink_options(bucket, **TEST_SINK_OPTIONS), "endpoint_url": proxy.endpoint}
        )
        proxy.fail(1, 403, "Forbidden")
        with pytest.raises(SinkError, match="access denied"):
            sink.write_bytes("k", b"v")
        assert proxy.requests == 1
    finally:
        proxy.stop()


def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without gcsfs installed, asking for a gcs sink says: pip install 'pgvault[gcs]'."""
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    monkeypatch.setitem(sys.modules, "gcsfs.core", None)
    monkeypatch.delitem(sys.modules, "pgvault.sinks.gcs", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'pgvault\[gcs\]'"):
        load_component("sink", "gcs", key="sink.type")
