"""Recovery targets: where a point-in-time recovery stops, read strictly from the user.

PostgreSQL takes at most one of ``recovery_target``, ``recovery_target_time``, ``_lsn``,
``_name`` and ``_xid``, and reads a time without a zone in the *server's* time zone, which is
how restores end up an hour off. pgvault asks for exactly one target kind (or none: replay to
the end of the archive) and refuses a time that does not say which instant it means: a time
needs an explicit UTC offset (``+02:00``, ``Z``) or an IANA zone name after it
(``2026-12-02 14:32:05 Europe/Berlin``); abbreviations such as ``CET`` or ``EST`` are refused
(several zones share them), and so is a wall-clock time a zone's DST change makes ambiguous
(it happens twice) or impossible (it never happens).

The action after the target defaults to ``promote``, not PostgreSQL's ``pause``: a restore
that pauses waits, read-only, for an operator who has usually gone home.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from pgvault.exceptions import ConfigError
from pgvault.wal.names import format_lsn, parse_lsn

Kind = Literal["end", "time", "lsn", "name", "xid", "immediate"]
Action = Literal["pause", "promote", "shutdown"]

MAX_NAME_BYTES = 63
"""PostgreSQL's limit on a restore point name (``MAXFNAMELEN - 1``)."""

_OFFSET = re.compile(r"(?:[+-]\d{2}(?::?\d{2})?|Z)$", re.IGNORECASE)
_MARK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class TargetError(ConfigError):
    """A recovery target option that cannot mean one point: the message names the option."""


@attrs.frozen
class RecoveryTarget:
    """Where recovery stops and what the server does there.

    ``kind`` ``end`` replays all archived WAL (no recovery target); ``immediate`` stops as soon
    as the base backup is consistent. ``exclusive`` stops just before the target (time, LSN and
    xid targets only). ``timeline`` is ``latest``, ``current`` or a timeline number as text.
    """

    kind: Kind = "end"
    time: datetime | None = None
    lsn: int | None = None
    name: str | None = None
    xid: int | None = None
    exclusive: bool = False
    timeline: str = "latest"
    action: Action = "promote"

    def describe(self) -> str:
        """The target in words: ``time 2026-12-02 13:32:05+00:00 (inclusive)``."""
        if self.kind == "end":
            return "the end of the archive"
        if self.kind == "immediate":
            return "the end of the base backup (immediate)"
        value = {
            "time": lambda: self.time.isoformat(sep=" ") if self.time else "?",
            "lsn": lambda: format_lsn(self.lsn or 0),
            "name": lambda: repr(self.name),
            "xid": lambda: str(self.xid),
        }[self.kind]()
        how = "" if self.kind == "name" else " (exclusive)" if self.exclusive else " (inclusive)"
        return f"{self.kind} {value}{how}"

    def settings(self) -> dict[str, str]:
        """The ``recovery_target*`` settings for postgresql.auto.conf (unquoted values)."""
        out: dict[str, str] = {}
        if self.kind == "immediate":
            out["recovery_target"] = "immediate"
        elif self.kind == "time" and self.time is not None:
            # Written in UTC with its offset: the server's own time zone never comes into it.
            out["recovery_target_time"] = self.time.astimezone(UTC).isoformat(sep=" ")
        elif self.kind == "lsn" and self.lsn is not None:
            out["recovery_target_lsn"] = format_lsn(self.lsn)
        elif self.kind == "name" and self.name is not None:
            out["recovery_target_name"] = self.name
        elif self.kind == "xid" and self.xid is not None:
            out["recovery_target_xid"] = str(self.xid)
        if self.kind in ("time", "lsn", "xid"):
            out["recovery_target_inclusive"] = "off" if self.exclusive else "on"
        out["recovery_target_timeline"] = self.timeline
        if self.kind != "end":
            out["recovery_target_action"] = self.action
        return out


def parse_time(text: str) -> datetime:
    """An aware datetime from ``text``: ISO 8601 with an offset, or a local time followed by an
    IANA zone name. :class:`TargetError` (one line, quoting the text) for anything else."""
    raw = text.strip()
    where = f"--target-time {text!r}"
    head, _, zone_name = raw.rpartition(" ")
    if head and not _OFFSET.search(raw) and re.fullmatch(r"[A-Za-z][A-Za-z0-9_+/-]*", zone_name):
        return _in_zone(head, zone_name, where)
    try:
        when = datetime.fromisoformat(raw.replace(" ", "T", 1) if "T" not in raw else raw)
    except ValueError:
        raise TargetError(
            f"{where}: not a time; use ISO 8601 with an offset (2026-12-02T14:32:05+01:00, "
            "…Z for UTC) or a time and a zone name (2026-12-02 14:32:05 Europe/Berlin)"
        ) from None
    if when.tzinfo is None:
        raise TargetError(
            f"{where} has no time zone, so it could mean several instants: add an offset "
            f"({raw}+00:00 for UTC) or a zone name ({raw} Europe/Berlin)"
        )
    return when


def _in_zone(local_text: str, zone_name: str, where: str) -> datetime:
    if "/" not in zone_name and zone_name.upper() not in ("UTC", "GMT"):
        raise TargetError(
            f"{where}: {zone_name!r} is not a zone pgvault accepts: abbreviations are ambiguous "
            "(several zones share them); use an offset (+01:00) or an IANA name (Europe/Berlin)"
        )
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise TargetError(f"{where}: unknown time zone {zone_name!r}") from None
    try:
        local = datetime.fromisoformat(local_text.replace(" ", "T", 1))
    except ValueError:
        raise TargetError(
            f"{where}: {local_text!r} is not a local time (2026-12-02 14:32:05)"
        ) from None
    if local.tzinfo is not None:
        raise TargetError(f"{where}: give an offset or a zone name, not both")
    first, second = local.replace(tzinfo=zone), local.replace(tzinfo=zone, fold=1)
    # A time in a spring-forward gap does not survive the round trip through UTC.
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != local:
        raise TargetError(f"{where}: {local_text} does not exist in {zone_name} (a DST change)")
    if first.utcoffset() != second.utcoffset():
        raise TargetError(
            f"{where}: {local_text} happens twice in {zone_name} (a DST change): say which with "
            f"an offset, {_offset_text(first)} or {_offset_text(second)}"
        )
    return first


def _offset_text(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


def parse_timeline(text: str) -> str:
    """``latest``, ``current`` or a timeline number (decimal, at least 1)."""
    value = text.strip().lower()
    if value in ("latest", "current"):
        return value
    if value.isdigit() and 1 <= int(value) < 1 << 32:
        return str(int(value))
    raise TargetError(f"--target-timeline {text!r}: use latest, current or a timeline number")


def parse_mark_name(text: str, option: str = "--target-name") -> str:
    """A restore point name pgvault can record and PostgreSQL can match."""
    if not _MARK_NAME.match(text) or len(text.encode()) > MAX_NAME_BYTES:
        raise TargetError(
            f"{option} {text!r}: a restore point name is 1 to {MAX_NAME_BYTES} letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return text


def build_target(
    *,
    time: str | None = None,
    lsn: str | None = None,
    name: str | None = None,
    xid: str | None = None,
    immediate: bool = False,
    exclusive: bool = False,
    timeline: str | None = None,
    action: str | None = None,
) -> RecoveryTarget:
    """The target the options describe; :class:`TargetError` naming the option at fault."""
    given = [
        option
        for option, value in (
            ("--target-time", time),
            ("--target-lsn", lsn),
            ("--target-name", name),
            ("--target-xid", xid),
            ("--target-immediate", immediate or None),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise TargetError(f"give at most one recovery target, not {' and '.join(given)}")
    kind: Kind = "end"
    values: dict[str, object] = {}
    if time is not None:
        kind, values["time"] = "time", parse_time(time)
    elif lsn is not None:
        try:
            kind, values["lsn"] = "lsn", parse_lsn(lsn)
        except ValueError:
            raise TargetError(f"--target-lsn {lsn!r}: not an LSN (such as 0/3000060)") from None
    elif name is not None:
        kind, values["name"] = "name", parse_mark_name(name)
    elif xid is not None:
        if not xid.strip().isdigit() or not 3 <= int(xid) < 1 << 64:
            raise TargetError(f"--target-xid {xid!r}: not a transaction id (a number, 3 or more)")
        kind, values["xid"] = "xid", int(xid)
    elif immediate:
        kind = "immediate"
    if exclusive and kind not in ("time", "lsn", "xid"):
        raise TargetError(
            "--target-exclusive needs --target-time, --target-lsn or --target-xid "
            f"(not {given[0] if given else 'the end of the archive'})"
        )
    if action is not None and action not in ("pause", "promote", "shutdown"):
        raise TargetError(f"--target-action {action!r}: use pause, promote or shutdown")
    if action is not None and action != "promote" and kind == "end":
        raise TargetError(
            f"--target-action {action} needs a recovery target: replaying to the end of the "
            "archive always ends by promoting"
        )
    # Stopping at the backup's end never needs another timeline (pgBackRest does the same).
    default_timeline = "current" if kind == "immediate" else "latest"
    return RecoveryTarget(
        kind=kind,
        exclusive=exclusive,
        timeline=parse_timeline(timeline) if timeline is not None else default_timeline,
        action=action or "promote",  # type: ignore[arg-type]
        **values,  # type: ignore[arg-type]
    )


def utc_text(when: datetime) -> str:
    """``2026-12-02 13:32:05 UTC``: a moment as reports print it."""
    when = when.astimezone(UTC)
    spec = "seconds" if when.microsecond == 0 else "milliseconds"
    return when.replace(tzinfo=None).isoformat(sep=" ", timespec=spec) + " UTC"


def age_before(now: datetime, age: timedelta) -> datetime:
    """The moment ``age`` before ``now`` (drills: ``target_age``)."""
    return now.astimezone(UTC) - age
