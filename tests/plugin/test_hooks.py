"""Every hook is documented and tested (enforced here, the way datasette does), and the prune,
check, drill and notifier-registration hooks fire as docs/hooks.md says."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pluggy
import pytest
from pytest_httpserver import HTTPServer

import pgvault
from pgvault.notify import webhook
from pgvault.notify.api import Event, Notifier, NotifierPlugin, notifier_types
from pgvault.operations.check import CheckResult
from pgvault.operations.drill import DrillResult
from pgvault.operations.prune import PruneResult
from pgvault.plugin import call_hook, get_plugin_manager, hookimpl, hookspecs
from pgvault.vault.contents import Vault
from tests.fake_backups import daily_history

ROOT = Path(__file__).resolve().parents[2]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("pgvault_"))
ConfigMaker = Callable[..., Path]


def manager(*plugins: object) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("pgvault")
    pm.add_hookspecs(hookspecs)
    for p in plugins:
        pm.register(p)
    return pm


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_and_has_a_test(hook: str) -> None:
    """A hook without a docs/hooks.md section, or without a test plugin implementing it, fails."""
    docs = (ROOT / "docs" / "hooks.md").read_text()
    assert re.search(rf"^#+ `{hook}\(", docs, re.M), f"docs/hooks.md has no section for {hook}"
    tests = [p.read_text() for p in (ROOT / "tests").rglob("test_*.py")]
    assert any(f"def {hook}(" in t for t in tests), f"no test implements {hook}"


def test_the_hook_list_is_what_the_docs_describe() -> None:
    """docs/hooks.md documents no hook that does not exist."""
    docs = (ROOT / "docs/hooks.md").read_text()
    documented = set(re.findall(r"^#+ `(pgvault_\w+)\(", docs, re.M))
    assert documented == set(HOOKS)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    @hookimpl
    def pgvault_prune_done(self, config: pgvault.PipelineConfig, result: PruneResult) -> None:
        self.events.append(("prune_done", result))

    @hookimpl
    def pgvault_check_failed(self, config: pgvault.PipelineConfig, result: CheckResult) -> None:
        self.events.append(("check_failed", result))

    @hookimpl
    def pgvault_drill_succeeded(self, config: pgvault.PipelineConfig, result: DrillResult) -> None:
        self.events.append(("drill_succeeded", result))

    @hookimpl
    def pgvault_drill_failed(self, config: pgvault.PipelineConfig, result: DrillResult) -> None:
        self.events.append(("drill_failed", result))


@pytest.fixture
def config(make_config: ConfigMaker, tmp_path: Path) -> pgvault.PipelineConfig:
    (tmp_path / "data").mkdir()
    return pgvault.load_config(
        make_config(
            {"type": "files", "paths": [str(tmp_path / "data")]},
            extra="[retention]\nkeep_last = 2\n",
        )
    )


def test_prune_done_fires_after_a_real_prune_only(config: pgvault.PipelineConfig) -> None:
    """prune_done carries the result (plan, removed ids) once per prune; a dry run is silent."""
    recorder = Recorder()
    ids = daily_history(Vault.from_config(config), datetime(2026, 1, 1, tzinfo=UTC), 4)
    pgvault.prune(config, dry_run=True, plugin_manager=manager(recorder))
    assert recorder.events == []
    result = pgvault.prune(config, plugin_manager=manager(recorder))
    assert recorder.events == [("prune_done", result)]
    assert sorted(result.removed) == ids[:2]


def test_check_failed_fires_when_not_ok(config: pgvault.PipelineConfig) -> None:
    """check_failed fires for a CRITICAL vault, with the result, and not once the vault is fine."""
    recorder = Recorder()
    pm = manager(recorder)
    critical = pgvault.check(config, plugin_manager=pm)
    assert recorder.events == [("check_failed", critical)]
    daily_history(Vault.from_config(config), datetime.now(UTC) - timedelta(hours=1), 1)
    assert pgvault.check(config, plugin_manager=pm).ok
    assert len(recorder.events) == 1


def drill_result(ok: bool) -> DrillResult:
    return DrillResult(
        drill_id="20261120T030000Z-d1",
        backup_id="20261120T020000Z-b1",
        started_at=datetime(2026, 11, 20, 3, tzinfo=UTC),
        duration_seconds=12.5,
        ok=ok,
        server="ephemeral",
        validation=None,
        checks=(),
        error=None if ok else "table public.users: 0 rows, the manifest recorded 3000",
    )


def test_drill_hooks_reach_recorders_and_notifiers(
    config: pgvault.PipelineConfig, httpserver: HTTPServer
) -> None:
    """drill_succeeded / drill_failed carry the DrillResult; the webhook notifier reports them."""
    httpserver.expect_request("/hook", method="POST").respond_with_json({})
    hook = webhook.Webhook(
        url=httpserver.url_for("/hook"), events=("drill_succeeded", "drill_failed")
    )
    cfg = attrs.evolve(config, notify=(hook,))
    recorder = Recorder()
    pm = manager(recorder, webhook.plugin)
    call_hook("pgvault_drill_succeeded", pm=pm, config=cfg, result=drill_result(True))
    call_hook("pgvault_drill_failed", pm=pm, config=cfg, result=drill_result(False))
    assert [name for name, _ in recorder.events] == ["drill_succeeded", "drill_failed"]
    ok, failed = (json.loads(req.get_data()) for req, _ in httpserver.log)
    assert ok["event"] == "drill_succeeded" and ok["run_id"] == "20261120T020000Z-b1"
    assert failed["ok"] is False and "0 rows, the manifest recorded 3000" in failed["message"]


@attrs.frozen
class Pager(Notifier):
    """A third party's notifier: it only records what it was sent."""

    type_name: ClassVar[str] = "pager"
    sent: list[Event] = attrs.field(factory=list, eq=False)
    service: str = "db"

    def send(self, event: Event) -> None:
        self.sent.append(event)

    def describe(self) -> str:
        return f"pager {self.service}"


class PagerPlugin(NotifierPlugin):
    """Registers Pager, exactly as a third-party package's entry point would."""

    @hookimpl
    def pgvault_notifier_types(self) -> list[type[Notifier]]:
        return [Pager]


def test_notifier_types_registers_third_party_notifiers(config: pgvault.PipelineConfig) -> None:
    """A plugin's pgvault_notifier_types adds its type beside the built-ins; its hooks deliver."""
    plugin = PagerPlugin(Pager)
    pm = manager(plugin, webhook.plugin)
    types = notifier_types(pm)
    assert types == {"pager": Pager, "webhook": webhook.Webhook}
    pager = Pager(events=("backup_succeeded",))
    manifest = pgvault.run(attrs.evolve(config, notify=(pager,)), plugin_manager=pm)
    [event] = pager.sent
    assert event.name == "backup_succeeded" and event.run_id == manifest.backup_id

    with pytest.raises(pgvault.PluginError, match="two plugins register notifier type 'pager'"):

        class Impostor(Pager):
            pass

        Impostor.type_name = "pager"
        notifier_types(manager(plugin, NotifierPlugin(Impostor)))


def test_built_in_notifiers_are_entry_point_plugins() -> None:
    """webhook, healthchecks, email and telegram load from the pgvault entry-point group."""
    pm = get_plugin_manager()
    names = {name for name, _ in pm.list_name_plugin()}
    assert {"webhook", "healthchecks", "email", "telegram"} <= names
    assert set(notifier_types()) >= {"webhook", "healthchecks", "email", "telegram"}


class StepRecorder:
    def __init__(self) -> None:
        self.steps: list[tuple[str, str | None]] = []

    @hookimpl
    def pgvault_restore_step(
        self, backup_id: str, target: str, step: str, safety_backup_id: str | None
    ) -> None:
        self.steps.append((step, safety_backup_id))


def test_restore_step_fires_in_order_through_a_replace(
    pg_cluster: Any, rich_db: str, make_config: ConfigMaker
) -> None:
    """restore_step reports each step of a replace in order, with the safety backup's id from
    the moment it exists."""
    config = pgvault.load_config(make_config({"type": "pg_dump", "dsn": pg_cluster.dsn(rich_db)}))
    manifest = pgvault.run(config)
    pg_cluster.drop_database("steps_copy")
    pg_cluster.create_database("steps_copy")
    recorder = StepRecorder()
    result = pgvault.restore(
        config,
        manifest.backup_id,
        target_db="steps_copy",
        drop_existing=True,
        plugin_manager=manager(recorder),
    )
    safety = result.safety_backup_id
    assert safety is not None
    assert recorder.steps == [
        ("checked", None),
        ("safety_backup", safety),
        ("dropped", safety),
        ("created", safety),
        ("loading", safety),
        ("validated", safety),
    ]
    pg_cluster.drop_database("steps_copy")
