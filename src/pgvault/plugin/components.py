"""Finding sources, transforms and sinks by name through their entry-point groups.

The installed distributions' entry points are read once per process, here, for the components
and for the plugin manager (:mod:`pgvault.plugin.manager`) alike: each scan reads the metadata
of every installed distribution.
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Literal

from pgvault.exceptions import ConfigError, PluginError

Kind = Literal["source", "transform", "sink"]

GROUPS: dict[Kind, str] = {
    "source": "pgvault.sources",
    "transform": "pgvault.transforms",
    "sink": "pgvault.sinks",
}

# Components whose code ships with pgvault but needs an optional extra: a user asking for them
# gets told what to install instead of "unknown type".
EXTRAS: dict[tuple[Kind, str], str] = {
    ("sink", "s3"): "s3",
    ("sink", "minio"): "s3",
    ("sink", "gcs"): "gcs",
    ("sink", "sftp"): "sftp",
}


PLUGIN_GROUP = "pgvault"
"""The hook plugins' group (:mod:`pgvault.plugin.manager` loads it)."""


@cache
def _installed() -> dict[str, tuple[EntryPoint, ...]]:
    everything = entry_points()
    return {
        group: tuple(everything.select(group=group)) for group in (*GROUPS.values(), PLUGIN_GROUP)
    }


def group_entry_points(group: str) -> tuple[EntryPoint, ...]:
    """The installed entry points of ``group`` (a component group or :data:`PLUGIN_GROUP`), from
    the process's one scan: a run looks up its source, transforms and sink, and loads the hook
    plugins."""
    return _installed()[group]


def available(kind: Kind) -> dict[str, EntryPoint]:
    """Installed components of ``kind``, by name."""
    return {ep.name: ep for ep in group_entry_points(GROUPS[kind])}


def load_component(kind: Kind, name: str, *, path: str | None = None, key: str) -> type:
    """The class registered as ``name`` for ``kind``.

    Errors name the config key and suggest a close match.
    """
    found = available(kind)
    ep = found.get(name)
    if ep is None:
        extra = EXTRAS.get((kind, name))
        if extra:
            raise ConfigError(
                f"{kind} type {name!r} needs an optional extra: pip install 'pgvault[{extra}]'",
                path=path,
                key=key,
            )
        close = difflib.get_close_matches(name, list(found), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        known = ", ".join(sorted(found)) or "none installed"
        raise ConfigError(f"unknown {kind} type {name!r}{hint}; known: {known}", path=path, key=key)
    try:
        loaded = ep.load()
    except ImportError as exc:
        extra = EXTRAS.get((kind, name))
        how = f": pip install 'pgvault[{extra}]'" if extra else ""
        raise ConfigError(
            f"{kind} type {name!r} cannot be loaded, a dependency is missing ({exc.name}){how}",
            path=path,
            key=key,
        ) from exc
    except Exception as exc:
        raise PluginError(f"{kind} plugin {name!r} ({ep.value}) failed to load: {exc}") from exc
    if not isinstance(loaded, type):
        raise PluginError(f"{kind} plugin {name!r} ({ep.value}) is not a class")
    return loaded
