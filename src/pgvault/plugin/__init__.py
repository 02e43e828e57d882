"""Plugin machinery: hook specs, the plugin manager, and component discovery."""

from pgvault.plugin.hookspecs import hookimpl, hookspec
from pgvault.plugin.manager import call_hook, get_plugin_manager

__all__ = ["call_hook", "get_plugin_manager", "hookimpl", "hookspec"]
