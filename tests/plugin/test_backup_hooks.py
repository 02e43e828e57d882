"""Backup hooks fire for plugins, in order, and a broken plugin never fails a backup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy
import pytest

import pgvault
from pgvault.plugin import hookimpl, hookspecs
from pgvault.testing import PostgresCluster

ConfigMaker = Callable[..., Path]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def pgvault_backup_started(self, config: pgvault.PipelineConfig, backup_id: str) -> None:
        self.events.append(("started", backup_id))

    @hookimpl
    def pgvault_backup_succeeded(
        self, config: pgvault.PipelineConfig, manifest: pgvault.Manifest
    ) -> None:
        self.events.append(("succeeded", manifest.backup_id))

    @hookimpl
    def pgvault_backup_failed(
        self, config: pgvault.PipelineConfig, backup_id: str, error: BaseException
    ) -> None:
        self.events.append(("failed", str(error)))


class Broken:
    @hookimpl
    def pgvault_backup_succeeded(
        self, config: pgvault.PipelineConfig, manifest: pgvault.Manifest
    ) -> None:
        raise RuntimeError("notifier down")


def manager(*plugins: object) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("pgvault")
    pm.add_hookspecs(hookspecs)
    for p in plugins:
        pm.register(p)
    return pm


def test_started_and_succeeded_fire_with_the_backup(
    pg_cluster: PostgresCluster, rich_db: str, make_config: ConfigMaker
) -> None:
    """A successful run announces start, then success with the manifest's id."""
    recorder = Recorder()
    config = pgvault.load_config(make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)}))
    manifest = pgvault.run(config, plugin_manager=manager(recorder))
    assert recorder.events == [("started", manifest.backup_id), ("succeeded", manifest.backup_id)]


def test_failed_fires_with_the_error(pg_cluster: PostgresCluster, make_config: ConfigMaker) -> None:
    """A failed run announces the failure with the error the user sees."""
    recorder = Recorder()
    config = pgvault.load_config(make_config({"type": "pg_dump", "dsn": pg_cluster.dsn("absent")}))
    with pytest.raises(pgvault.SourceError):
        pgvault.run(config, plugin_manager=manager(recorder))
    assert recorder.events[0][0] == "started"
    assert recorder.events[1][0] == "failed" and 'database "absent"' in recorder.events[1][1]


def test_a_broken_plugin_never_fails_the_backup(
    pg_cluster: PostgresCluster,
    rich_db: str,
    make_config: ConfigMaker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A plugin that raises is logged; the backup succeeds and other plugins still run."""
    recorder = Recorder()
    config = pgvault.load_config(make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)}))
    manifest = pgvault.run(config, plugin_manager=manager(Broken(), recorder))
    assert ("succeeded", manifest.backup_id) in recorder.events
    assert "notifier down" in caplog.text
