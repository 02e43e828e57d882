"""The pluggy plugin manager and the isolating way pgvault calls hooks.

Built-in plugins and third-party ones are both found through the ``pgvault`` entry-point group,
so a built-in notifier has no privilege a third party's lacks.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import pluggy

from pgvault.plugin import hookspecs
from pgvault.plugin.components import PLUGIN_GROUP, group_entry_points

log = logging.getLogger("pgvault.plugin")

PROJECT_NAME = "pgvault"
ENTRY_POINT_GROUP = PLUGIN_GROUP


@cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every installed ``pgvault`` plugin registered."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    # What pluggy's load_setuptools_entrypoints does, from the scan the components already made
    # (it would read every distribution's metadata a second time).
    for ep in group_entry_points(ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is None and not pm.is_blocked(ep.name):
            pm.register(ep.load(), name=ep.name)
    return pm


def call_hook(name: str, pm: pluggy.PluginManager | None = None, **kwargs: Any) -> None:
    """Call every implementation of hook ``name``, isolating failures.

    A plugin that raises is logged (with its name) and the remaining implementations still run:
    a broken notifier must never fail or hide a backup.
    """
    pm = pm or get_plugin_manager()
    hook = getattr(pm.hook, name)
    for impl in reversed(hook.get_hookimpls()):
        args = {arg: kwargs[arg] for arg in impl.argnames if arg in kwargs}
        try:
            impl.function(**args)
        except Exception as exc:
            log.warning("plugin %s failed in %s: %s", impl.plugin_name, name, exc)
