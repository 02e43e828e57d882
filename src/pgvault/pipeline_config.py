"""The pipeline as a value: :class:`PipelineConfig`, what :mod:`pgvault.config` builds from one
TOML file and everything else takes as an argument.

Kept apart from the TOML parsing so that the engine, the operations and the plugin hooks can
name it without depending on the composition root. It imports the settings leaves at run time and
the stage contracts only for type checkers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from pgvault.exceptions import ConfigError
from pgvault.plugin.exec_hooks import ExecHook
from pgvault.settings import (
    CheckThresholds,
    DrillSettings,
    LogSettings,
    RestoreSettings,
    RetentionPolicy,
    ScheduleSettings,
)
from pgvault.sinks.destinations import Destination
from pgvault.wal.settings import WalSettings

if TYPE_CHECKING:
    from pgvault.notify.api import Notifier
    from pgvault.sinks.api import Sink
    from pgvault.sources.api import Source
    from pgvault.transforms.api import Transform

__all__ = ["PipelineConfig"]


@attrs.frozen
class PipelineConfig:
    """A loaded pipeline: what to back up, how to transform it, where to store it."""

    name: str
    """The vault's name; one sink may hold many vaults."""
    source: Source
    sink: Sink
    transforms: tuple[Transform, ...] = ()
    checksums: tuple[str, ...] = ("sha256",)
    """Digest algorithms over stored bytes; sha256 is always included."""
    path: Path | None = None
    """The file this config was loaded from, for messages."""
    restore: RestoreSettings = attrs.field(factory=RestoreSettings)
    """The ``[restore]`` table: validation tolerance, safety backup retention, work folder."""
    drill: DrillSettings = attrs.field(factory=DrillSettings)
    """The ``[drill]`` table: where drills restore, and their SQL checks."""
    retention: RetentionPolicy | None = None
    """The ``[retention]`` table: which backups ``prune`` keeps; prune refuses to run without it."""
    check: CheckThresholds = attrs.field(factory=CheckThresholds)
    """The ``[check]`` table: thresholds of ``pgvault check`` (defaults when absent)."""
    notify: tuple[Notifier, ...] = ()
    """The ``[[notify]]`` tables: each handled by the notifier plugin of its ``type``."""
    logging: LogSettings = attrs.field(factory=LogSettings)
    """The ``[logging]`` table: level, text or JSON lines, optional rotating file."""
    metrics_file: Path | None = None
    """Prometheus textfile (node_exporter) rewritten after each run and check."""
    wal: WalSettings = attrs.field(factory=WalSettings)
    """The ``[wal]`` table: continuous WAL archiving (defaults when absent)."""
    hooks: tuple[ExecHook, ...] = ()
    """The ``[[hook]]`` tables: commands run before and after operations (exec hooks)."""
    schedule: ScheduleSettings = attrs.field(factory=ScheduleSettings)
    """The ``[schedule]`` table: when each job runs (cron, systemd and Celery beat read it)."""
    # --- several destinations (issue 15): ``sink`` is the first (primary) one's sink.
    destinations: tuple[Destination, ...] = attrs.field(
        default=attrs.Factory(
            lambda self: (Destination(self.sink.type_name, self.sink),), takes_self=True
        )
    )
    """Every ``[[sink]]`` (or the one ``[sink]``), primary first; see
    :mod:`pgvault.sinks.destinations`."""

    def __attrs_post_init__(self) -> None:
        # ``sink`` is the primary destination's sink, whatever built this value: code that
        # swaps it (``attrs.evolve(config, sink=...)``, as embedding applications and tests do)
        # must not keep writing to the old primary through ``destinations``.
        primary = self.destinations[0] if self.destinations else None
        if primary is None:
            fixed: tuple[Destination, ...] = (Destination(self.sink.type_name, self.sink),)
        elif primary.sink is not self.sink:
            fixed = (attrs.evolve(primary, sink=self.sink), *self.destinations[1:])
        else:
            return
        object.__setattr__(self, "destinations", fixed)

    def destination(self, name: str) -> Destination:
        """The destination called ``name``; ConfigError naming the known ones otherwise."""
        for dest in self.destinations:
            if dest.name == name:
                return dest
        known = ", ".join(d.name for d in self.destinations)
        raise ConfigError(f"no destination called {name!r}; this pipeline has: {known}")

    def for_destination(self, dest: Destination) -> PipelineConfig:
        """This config with ``dest`` as its only sink and its retention as the policy: what a
        command that works on one place (prune, check, restore) runs on."""
        return attrs.evolve(
            self, sink=dest.sink, retention=dest.retention or self.retention, destinations=(dest,)
        )

    # --- end of several destinations

    def where(self) -> str:
        """The config file's name for messages, or ``<config>`` when built in code."""
        return str(self.path) if self.path else "<config>"

    def require_notify_env(self, env: Mapping[str, str] | None = None) -> None:
        """Raise ConfigError naming the first ``[[notify]]`` ``*_env`` option whose environment
        variable is unset or empty.

        The commands that notify (``run``, ``prune``, ``check``, ``drill``) call this before they
        start, so a notifier that could never send is a config error up front rather than
        retries after the backup. Commands that never notify (``list``, ``show``, ``verify``,
        ``restore``) do not need the notifiers' secrets, so a restore on a bare machine does not
        either.
        """
        env = os.environ if env is None else env
        for i, notifier in enumerate(self.notify):
            for field in attrs.fields(type(notifier)):
                value = getattr(notifier, field.name)
                wanted = field.name.endswith("_env") and isinstance(value, str) and value
                if wanted and not env.get(value):
                    raise ConfigError(
                        f"environment variable {value} is not set (or empty); "
                        f"{notifier.type_name} needs it to send",
                        path=self.where(),
                        key=f"notify[{i}].{field.name}",
                    )
