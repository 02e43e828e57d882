"""The settings values: what a pipeline's ``[restore]``, ``[drill]``, ``[check]``, ``[logging]``,
``[retention]`` and ``[schedule]`` tables say, as frozen attrs classes.

A leaf: it imports nothing of pgvault but :mod:`pgvault.units` and :mod:`pgvault.exceptions`.
:mod:`pgvault.config` builds these values from TOML; the operations and the engine take them as
arguments, so nothing needs the config module at run time. (``[wal]`` is
:class:`pgvault.wal.settings.WalSettings`, a leaf of the same kind beside the WAL code.)
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import attrs

from pgvault.units import (
    ByteSize,
    CronSpec,
    Duration,
    SpaceThreshold,
    TimeZoneName,
    parse_duration,
)

_DEFAULT_MAX_AGE = Duration.parse("26h")  # a daily backup, plus two hours of slack
_TEN_MIB = ByteSize(10 * 2**20)

TIERS = ("hourly", "daily", "weekly", "monthly", "yearly")
"""Calendar tiers, shortest period first."""

_UTC = TimeZoneName("UTC")
_TWO_DAYS = Duration.parse("2d")


def _duration_text(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    parse_duration(value)


@attrs.frozen
class RestoreSettings:
    """The ``[restore]`` table: how restores validate and keep what they replace.

    ``estimate_tolerance`` is the relative difference allowed between a table's planner estimate
    at backup time and its rows after restore (estimates can be stale; exact counts from
    ``count_tables`` must match exactly). ``safety_keep`` is how long retention keeps the safety
    backup taken before ``--drop-existing``. ``work_dir`` holds the temporary file of a parallel
    restore. ``maintenance_db`` is the database pgvault connects to on the target server to
    create and drop databases (default: the DSN's own, unless it is the target, else
    ``postgres``, else ``template1``).
    """

    estimate_tolerance: float = attrs.field(default=0.5, validator=attrs.validators.ge(0.0))
    safety_keep: str = attrs.field(default="7d", validator=_duration_text)
    work_dir: Path | None = None
    maintenance_db: str | None = None


def _one_expectation(instance: DrillCheck, attribute: attrs.Attribute[Any], value: Any) -> None:
    given = [n for n in ("equals", "at_least", "at_most") if getattr(instance, n) is not None]
    if not given:
        raise ValueError(
            f"check {instance.sql!r} needs an expectation: equals, at_least or at_most"
        )


@attrs.frozen
class DrillCheck:
    """One ``[[drill.check]]``: a query returning one value, and what that value must be.

    ``equals`` compares as text (so ``equals = "t"`` or ``equals = 3`` both read naturally);
    ``at_least``/``at_most`` compare as numbers. ``name`` labels the check in reports.
    """

    sql: str = attrs.field(validator=_one_expectation)
    name: str | None = None
    equals: str | int | float | bool | None = None
    at_least: float | None = None
    at_most: float | None = None

    @property
    def label(self) -> str:
        """``name``, or the query."""
        return self.name or self.sql


@attrs.frozen
class DrillSettings:
    """The ``[drill]`` table.

    ``server``: ``"source"`` restores into a temporary database on the source's server (or on
    ``dsn`` if given); ``"ephemeral"`` into a throwaway cluster made with initdb on this machine
    (the backup's roles are created there from its globals; objects go to the default
    tablespace). ``check``: the ``[[drill.check]]`` list.
    """

    server: Literal["source", "ephemeral"] = "source"
    dsn: str | None = None
    check: tuple[DrillCheck, ...] = ()
    # --- point-in-time recovery drills (issue 14): base backups only ---
    target_age: Duration | None = None
    """Base backups: replay to this long before now (``"1h"``) instead of the archive's end."""
    pgvault: str | None = None
    """Base backups: how the ``postgres`` user starts pgvault in ``restore_command``."""


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{attribute.name} must be ≥ 0, got {value}")


@attrs.frozen
class CheckThresholds:
    """The ``[check]`` table. Every threshold has a default, so a bare ``check`` is useful."""

    max_age: Duration = _DEFAULT_MAX_AGE
    """CRITICAL when the newest complete backup started longer ago than this."""
    warn_age: Duration | None = None
    """WARNING when the newest backup is older than this (but not yet ``max_age``)."""
    min_count: int = attrs.field(default=1, validator=_non_negative)
    """WARNING when the vault holds fewer complete backups than this."""
    min_size: ByteSize | None = None
    """CRITICAL when the newest backup stored fewer bytes than this (``"1MiB"``)."""
    max_shrink: float | None = attrs.field(default=50.0, validator=_non_negative)
    """WARNING when the newest backup is this many percent smaller than the one before."""
    min_free: SpaceThreshold | None = None
    """WARNING when free space where the sink stores is below this (``"5GiB"`` or ``"10%"``)."""
    max_drill_age: Duration | None = None
    """WARNING when no restore drill passed within this time; CRITICAL when the latest failed."""
    max_wal_age: Duration | None = None
    """CRITICAL when the newest archived WAL file was stored longer ago than this (or none is):
    the data a failure now would lose. Set it above ``archive_timeout``."""
    wal_gaps: Literal["critical", "warning", "ignore"] = "critical"
    """How to report segments missing inside the archived WAL (lost: recovery cannot pass
    them); segments still ``.ready`` in ``[wal] pg_wal`` are pending, not lost."""

    def __attrs_post_init__(self) -> None:
        if self.max_shrink is not None and self.max_shrink > 100:
            raise ValueError(f"max_shrink is a percentage ≤ 100, got {self.max_shrink}")
        if self.warn_age is not None and self.warn_age.delta >= self.max_age.delta:
            raise ValueError(
                f"warn_age ({self.warn_age}) must be shorter than max_age ({self.max_age})"
            )


@attrs.frozen
class LogSettings:
    """The ``[logging]`` table: where pgvault's logs go and in what shape."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written to ``file``."""
    stderr_level: Literal["debug", "info", "warning", "error"] = "warning"
    """Lowest level written to stderr: ``info`` shows every run's record (journald, Docker);
    the default keeps cron quiet. The CLI's ``-v``/``--debug``/``-q`` override it per command."""
    format: Literal["text", "json"] = "text"
    """``text`` lines, or one JSON object per line with the run's fields as keys."""
    file: Path | None = None
    """Also log to this file (relative paths are resolved against the config file)."""
    max_bytes: ByteSize = _TEN_MIB
    """Rotate the file when it reaches this size (``"10MiB"``)."""
    keep_files: int = attrs.field(default=5)
    """Rotated files to keep beside the current one."""

    @keep_files.validator
    def _check_keep(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < 0:
            raise ValueError(f"keep_files must be ≥ 0, got {value}")


def _count(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{attribute.name} must be a whole number ≥ 0, got {value!r}")


@attrs.frozen
class RetentionPolicy:
    """The ``[retention]`` table: which complete backups to keep (see the module docs)."""

    keep_last: int = attrs.field(default=0, validator=_count)
    """Keep the n newest backups."""
    keep_hourly: int = attrs.field(default=0, validator=_count)
    """Keep the newest backup of each of the n most recent hours that have one."""
    keep_daily: int = attrs.field(default=0, validator=_count)
    """Keep the newest backup of each of the n most recent days that have one."""
    keep_weekly: int = attrs.field(default=0, validator=_count)
    """Keep the newest backup of each of the n most recent ISO weeks (Monday to Sunday)."""
    keep_monthly: int = attrs.field(default=0, validator=_count)
    """Keep the newest backup of each of the n most recent months that have one."""
    keep_yearly: int = attrs.field(default=0, validator=_count)
    """Keep the newest backup of each of the n most recent years that have one."""
    keep_within: Duration | None = None
    """Keep every backup started within this time of the newest one (``"30d"``)."""
    timezone: TimeZoneName = _UTC
    """Time zone whose calendar defines hours, days, weeks, months and years."""
    keep_wal_within: Duration | None = None
    """WAL archived this long before the horizon is kept too (``"1d"``): before the oldest kept
    backup's start in a vault without base backups, before the horizon base backup's start in
    one with them (see :mod:`pgvault.vault.wal_retention`). Older WAL is removed by prune,
    history files never. Without any kept backup no WAL is removed."""
    pitr_within: Duration | None = None
    """Keep every moment this long before the end of the WAL archive reachable by point-in-time
    recovery (``"7d"``): the newest base backup that ended before that keeps its WAL from its
    start on. Base backups kept only by the other rules keep just the WAL from their start to
    their stop (see :mod:`pgvault.vault.wal_retention`)."""
    incomplete_grace: Duration = _TWO_DAYS
    """Age after which a backup folder without a manifest is a leftover, not a run in progress.

    Must exceed your longest backup run: a younger incomplete folder is never touched."""

    def __attrs_post_init__(self) -> None:
        rules = (self.keep_last, *(self.tier(t) for t in TIERS), self.keep_within)
        if not (any(rules) or self.pitr_within):
            raise ValueError(
                "the policy keeps nothing: set at least one of keep_last, keep_hourly, "
                "keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within or pitr_within"
            )
        if self.keep_within is not None and self.keep_within.delta.total_seconds() <= 0:
            raise ValueError("keep_within must be a positive duration")
        if self.pitr_within is not None and self.pitr_within.delta.total_seconds() <= 0:
            raise ValueError("pitr_within must be a positive duration")

    def tier(self, name: str) -> int:
        """The count configured for calendar tier ``name`` (``"daily"`` …)."""
        return int(getattr(self, f"keep_{name}"))

    def describe(self) -> str:
        """The policy in one line: ``last 3, daily 7, weekly 4, monthly 12 (Europe/Berlin)``."""
        parts = [f"last {self.keep_last}"] if self.keep_last else []
        parts += [f"{t} {self.tier(t)}" for t in TIERS if self.tier(t)]
        if self.keep_within:
            parts.append(f"within {self.keep_within}")
        if self.pitr_within:
            parts.append(f"PITR within {self.pitr_within}")
        return ", ".join(parts) + f" ({self.timezone})"


SCHEDULED_JOBS = ("backup", "prune", "check", "drill", "report")
"""The jobs a ``[schedule]`` table can time, in the order schedulers list them."""


def _not_negative_delta(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value < timedelta(0):
        raise ValueError(f"{attribute.name} cannot be negative")


def _positive_delta(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= timedelta(0):
        raise ValueError(f"{attribute.name} must be longer than 0s")


@attrs.frozen
class ScheduleSettings:
    """The ``[schedule]`` table: when each job of the pipeline runs, for the schedulers that
    start them (``pgvault schedule --cron|--systemd``, the Celery beat schedule).

    Each job is a :class:`~pgvault.units.CronSpec` (``"0 2 * * *"``, ``"weekly"``) or absent
    (not scheduled). The times are the host's local time, as cron's and systemd's are.
    """

    backup: CronSpec | None = None
    """When ``pgvault run`` takes a backup."""
    prune: CronSpec | None = None
    """When ``pgvault prune`` applies the retention policy."""
    check: CronSpec | None = None
    """When ``pgvault check`` runs (and pings monitoring through the notifiers)."""
    drill: CronSpec | None = None
    """When ``pgvault drill`` restores the latest backup to prove it."""
    report: CronSpec | None = None
    """When ``pgvault report --notify`` sends the report through the notifiers."""
    randomized_delay: timedelta = attrs.field(default=timedelta(0), validator=_not_negative_delta)
    """Start each job up to this much later, at random (``"10m"``): many hosts given one
    schedule do not all hit the database and the sink in the same second."""
    timeout: timedelta | None = attrs.field(default=None, validator=_positive_delta)
    """Stop a job that runs longer than this (``"6h"``); none by default."""

    def jobs(self) -> tuple[tuple[str, CronSpec], ...]:
        """The scheduled jobs as ``(name, spec)``, in :data:`SCHEDULED_JOBS` order."""
        found = ((name, getattr(self, name)) for name in SCHEDULED_JOBS)
        return tuple((name, spec) for name, spec in found if spec is not None)
