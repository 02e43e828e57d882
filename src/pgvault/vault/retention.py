"""Retention: which backups a policy keeps, and why. Pure planning, no I/O.

A policy names tiers (grandfather-father-son, the way restic and borg count them):

* ``keep_last = n`` keeps the n newest complete backups;
* ``keep_hourly/daily/weekly/monthly/yearly = n`` keep the newest backup in each of the n most
  recent calendar periods (hours, days, ISO weeks, months, years in ``timezone``) that hold a
  backup, counted back from the newest;
* ``keep_within = "30d"`` keeps every backup started within that time of the newest one;
* ``pitr_within = "7d"`` keeps the base backups that point-in-time recovery needs to reach every
  moment of that time before the end of the WAL archive (chosen by
  :mod:`pgvault.operations.pitr.retention`, which also says which WAL each kept backup keeps).

One backup may satisfy several tiers at once (the newest of a day can also be the newest of its
week, month and year), so nothing is ever copied into daily/weekly/monthly folders. Periods and
``keep_within`` count back from the newest backup, not from the clock, so a pipeline whose job
stopped running keeps its history instead of losing it one day at a time.

The newest complete backup is always kept. The tiers count the pipeline's own runs (manifest
``kind = "scheduled"``); other backups, such as the safety backup a restore takes of the database
it replaces, are kept until their ``keep_until`` label, so one never takes a day's slot from the
scheduled backup of that day. A pin (``pgvault pin``, see :mod:`pgvault.vault.pins`) or a
``keep_until`` label on a scheduled backup (``run --keep-until``) keeps it until then too, while
it still counts for the tiers like any run. Incomplete backups (folders without a manifest) are
kept while younger than ``incomplete_grace`` (a run may still be writing them), then removed.

Two kinds of backup are kept and take no part in the counting, so that neither can make a
genuine backup go: a *future-dated* one (recorded time beyond now plus
:data:`~pgvault.vault.manifest.CLOCK_TOLERANCE`: a clock that jumped ahead would otherwise be "the
newest" that every rule counts back from), and a *damaged* one (a manifest that cannot be read,
which an operator should look at before anything removes it).

:func:`plan` is the whole decision; :mod:`pgvault.operations.prune` applies it to a vault.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol

import attrs

from pgvault.settings import TIERS, RetentionPolicy
from pgvault.units import human_duration
from pgvault.vault.manifest import CLOCK_TOLERANCE, future_dated, id_time


class Dated(Protocol):
    """What planning needs of a complete backup (a :class:`~pgvault.vault.manifest.Manifest` fits).

    An object may also have ``kind`` (default ``"scheduled"``) and ``labels`` (``keep_until``, an
    ISO time, pins it until then).
    """

    @property
    def backup_id(self) -> str:
        """Unique id of the backup."""

    @property
    def started_at(self) -> datetime:
        """When the backup started: the point in time its data is from."""


@attrs.frozen
class Decision:
    """What the plan does with one backup folder, and why."""

    backup_id: str
    started_at: datetime | None
    """Start time (UTC); for an incomplete folder, read from its id (None if unreadable)."""
    complete: bool
    keep: bool
    reasons: tuple[str, ...]
    """Why: every rule that keeps it (``"daily 2026-11-20"``, ``"monthly 2026-10"``), or why not."""

    @property
    def action(self) -> str:
        """``keep`` or ``remove``."""
        return "keep" if self.keep else "remove"


@attrs.frozen
class RetentionPlan:
    """The decision for every backup folder: complete ones newest first, then damaged ones, then
    incomplete ones."""

    policy: RetentionPolicy
    now: datetime
    decisions: tuple[Decision, ...]

    @property
    def kept(self) -> tuple[Decision, ...]:
        """Folders the plan keeps."""
        return tuple(d for d in self.decisions if d.keep)

    @property
    def removed(self) -> tuple[Decision, ...]:
        """Folders the plan removes."""
        return tuple(d for d in self.decisions if not d.keep)

    def decision(self, backup_id: str) -> Decision:
        """The decision about ``backup_id``."""
        for d in self.decisions:
            if d.backup_id == backup_id:
                return d
        raise KeyError(backup_id)


def _utc(dt: datetime) -> datetime:
    # A naive time in a manifest or a test is UTC by pgvault's convention, never local time.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def started_from_id(backup_id: str) -> datetime | None:
    """The start time encoded in a pgvault backup id (``20261120T020000Z-ab12cd``), if any."""
    return id_time(backup_id)


def _keep_until(labels: object) -> datetime | None:
    value = labels.get("keep_until") if isinstance(labels, dict) else None
    if not isinstance(value, str):
        return None
    if value == "forever":
        return datetime.max.replace(tzinfo=UTC)
    try:
        return _utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _pinned_text(until: datetime) -> str:
    if until.year == datetime.max.year:
        return "pinned forever"
    return f"pinned until {until:%Y-%m-%d %H:%M} UTC"


def _period(tier: str, zone: tzinfo) -> Callable[[datetime], tuple[tuple[Any, ...], str]]:
    """For ``tier``: a function from a UTC time to (period key, period label) in ``zone``."""

    def key(dt: datetime) -> tuple[tuple[Any, ...], str]:
        local = dt.astimezone(zone)
        if tier == "hourly":
            # The offset tells apart the two 01:00 hours of a DST fall-back: both are real hours.
            return (local.date(), local.hour, local.utcoffset()), local.strftime("%Y-%m-%d %H:00")
        if tier == "daily":
            return (local.date(),), local.strftime("%Y-%m-%d")
        if tier == "weekly":
            year, week, _ = local.isocalendar()
            return (year, week), f"{year}-W{week:02d}"
        if tier == "monthly":
            return (local.year, local.month), local.strftime("%Y-%m")
        return (local.year,), f"{local.year}"

    return key


def plan(
    backups: Iterable[Dated],
    policy: RetentionPolicy,
    now: datetime,
    *,
    incomplete: Iterable[str] = (),
    damaged: Iterable[str] = (),
    pins: Mapping[str, tuple[datetime, str]] | None = None,
    pitr: Mapping[str, str] | None = None,
) -> RetentionPlan:
    """Decide, for every backup, whether ``policy`` keeps it and why.

    ``backups`` are the complete backups in any order (ids must be unique); ``incomplete`` the ids
    of folders without a manifest; ``damaged`` those of folders whose manifest cannot be read,
    which are always kept; ``pins`` maps backup ids to the time their pin (``pgvault pin``)
    keeps them until and the reason to give; ``pitr`` maps the base backups the
    ``pitr_within`` promise needs to the reason (chosen from the WAL archive by
    :func:`pgvault.operations.pitr.retention.pitr_keep`: they are kept, and counted by the rules
    like any other). A pinned backup, or a scheduled one with a
    ``keep_until`` label, is kept until then and still counted by the rules (a pin adds a reason
    to keep, and changes nothing the rules count). ``now`` decides whether an incomplete folder
    is past its grace period, whether a pin or ``keep_until`` has passed and which backups are
    future-dated (kept, never counted); the rules themselves count back from the newest backup
    that is not. The result does not depend on the order of the input.
    """
    now = _utc(now)
    every: list[tuple[str, datetime]] = []
    pinned: dict[str, datetime | None] = {}
    # Scheduled backups kept until a time: a keep_until label (run --keep-until) or a pin.
    held: dict[str, list[tuple[datetime, str]]] = {}
    for b in backups:
        every.append((b.backup_id, _utc(b.started_at)))
        until = _keep_until(getattr(b, "labels", None))
        if getattr(b, "kind", "scheduled") != "scheduled":
            pinned[b.backup_id] = until
        elif until is not None:
            held.setdefault(b.backup_id, []).append((until, "keep_until label"))
    for backup_id, (until, why) in (pins or {}).items():
        held.setdefault(backup_id, []).append((_utc(until), why))
    every.sort(key=lambda item: (item[1], item[0]), reverse=True)
    ids = [i for i, _ in every]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate backup ids: {', '.join(dupes)}")
    reasons: dict[str, list[str]] = {i: [] for i in ids}
    future = {i for i, started in every if future_dated(i, started, now)}
    present = [item for item in every if item[0] not in future]
    # The rules count the pipeline's own runs; other kinds are pinned by their label alone.
    ordered = [item for item in present if item[0] not in pinned]

    for backup_id, started in every:
        if backup_id in future:
            ahead = human_duration(max(started, started_from_id(backup_id) or started) - now)
            reasons[backup_id].append(
                f"dated {ahead} in the future (a clock ahead by more than "
                f"{human_duration(CLOCK_TOLERANCE)}?): kept, not counted"
            )
    if present:
        reasons[present[0][0]].append("newest")
    for backup_id, until in pinned.items():
        if until is not None and now < until:
            reasons[backup_id].append(_pinned_text(until))
    for backup_id, holds in held.items():
        if backup_id not in reasons:
            continue  # a pin whose backup is gone or damaged keeps nothing here
        for until, why in holds:
            if now < until:
                reasons[backup_id].append(f"{_pinned_text(until)} ({why})")
    for backup_id, why in (pitr or {}).items():
        if backup_id in reasons:  # a base backup that is gone or damaged is nothing to keep
            reasons[backup_id].append(why)
    for n, (backup_id, _) in enumerate(ordered[: policy.keep_last], start=1):
        reasons[backup_id].append(f"last #{n}")
    zone = policy.timezone.zone
    for tier in TIERS:
        wanted = policy.tier(tier)
        if not wanted:
            continue
        period = _period(tier, zone)
        seen: set[tuple[Any, ...]] = set()
        for backup_id, started in ordered:
            if len(seen) >= wanted:
                break
            key, label = period(started)
            if key not in seen:
                # Newest first, so the first backup met in a period is that period's newest.
                seen.add(key)
                reasons[backup_id].append(f"{tier} {label}")
    if policy.keep_within is not None and ordered:
        newest = ordered[0][1]
        for backup_id, started in ordered:
            if newest - started <= policy.keep_within.delta:
                reasons[backup_id].append(f"within {policy.keep_within}")

    decisions = [
        Decision(
            backup_id=i,
            started_at=started,
            complete=True,
            keep=bool(reasons[i]),
            reasons=tuple(reasons[i]) or ("no rule keeps it",),
        )
        for i, started in every
    ]
    unreadable = set(damaged) - set(ids)
    for backup_id in sorted(unreadable, reverse=True):
        why = "damaged manifest (see pgvault list): left alone for you to inspect"
        decisions.append(Decision(backup_id, started_from_id(backup_id), False, True, (why,)))
    grace = policy.incomplete_grace
    for backup_id in sorted(set(incomplete) - set(ids) - unreadable, reverse=True):
        begun = started_from_id(backup_id)
        if begun is None:
            keep, why = True, "incomplete, age unknown (not a pgvault id): left alone"
        elif begun > now + CLOCK_TOLERANCE:
            keep, why = True, "incomplete, dated in the future (a clock ahead?): left alone"
        elif now - begun < grace.delta:
            age = human_duration(now - begun)
            keep, why = True, f"incomplete, started {age} ago: may still be running (grace {grace})"
        else:
            age = human_duration(now - begun)
            keep, why = False, f"incomplete leftover, started {age} ago (grace {grace})"
        decisions.append(Decision(backup_id, begun, False, keep, (why,)))
    return RetentionPlan(policy=policy, now=now, decisions=tuple(decisions))
