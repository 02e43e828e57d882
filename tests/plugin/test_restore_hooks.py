"""pgvault_restore_started/succeeded/failed fire around pgvault.restore as docs/hooks.md says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pluggy
import pytest

import pgvault
from pgvault.plugin import hookimpl, hookspecs

ConfigMaker = Callable[..., Path]


class RestoreRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def pgvault_restore_started(
        self, config: pgvault.PipelineConfig, backup_id: str, target: str
    ) -> None:
        self.events.append(("started", (backup_id, target)))

    @hookimpl
    def pgvault_restore_succeeded(
        self, config: pgvault.PipelineConfig, result: pgvault.RestoreResult
    ) -> None:
        self.events.append(("succeeded", result))

    @hookimpl
    def pgvault_restore_failed(
        self, config: pgvault.PipelineConfig, backup_id: str, target: str, error: BaseException
    ) -> None:
        self.events.append(("failed", (backup_id, target, error)))


def test_restore_hooks_fire_around_a_restore(make_config: ConfigMaker, tmp_path: Path) -> None:
    """started (with latest resolved to the id) then succeeded with the result; a refused
    target: started then failed with the error the caller got; no such backup: no hook."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a")
    config = pgvault.load_config(make_config({"type": "files", "paths": [str(tmp_path / "data")]}))
    backup = pgvault.run(config).backup_id
    recorder = RestoreRecorder()
    pm = pluggy.PluginManager("pgvault")
    pm.add_hookspecs(hookspecs)
    pm.register(recorder)

    result = pgvault.restore(config, target_dir=tmp_path / "out", plugin_manager=pm)
    assert recorder.events == [("started", (backup, str(tmp_path / "out"))), ("succeeded", result)]
    assert (tmp_path / "out").rglob("a.txt")

    recorder.events.clear()
    with pytest.raises(pgvault.RestoreError, match="is not empty") as refused:
        pgvault.restore(config, backup[:10], target_dir=tmp_path / "out", plugin_manager=pm)
    assert recorder.events == [
        ("started", (backup, str(tmp_path / "out"))),
        ("failed", (backup, str(tmp_path / "out"), refused.value)),
    ]

    recorder.events.clear()
    with pytest.raises(pgvault.BackupNotFoundError):
        pgvault.restore(config, "20990101", target_dir=tmp_path / "x", plugin_manager=pm)
    assert recorder.events == []
