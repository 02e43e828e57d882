"""Config value types that read themselves from TOML: durations, byte sizes, time zones, cron
schedules.

Each type has a ``from_config(value)`` classmethod that :func:`pgvault.config.structure` calls
for a field annotated with it; a ``ValueError`` it raises becomes a config error naming the file
and the exact key. The types keep the text the user wrote, so messages quote the threshold the way
it stands in the config ("max_age 26h"), not a recomputed form.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_DURATION_UNITS: dict[str, float] = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 7 * 86400,
    "week": 7 * 86400,
    "weeks": 7 * 86400,
    "y": 365 * 86400,
    "year": 365 * 86400,
    "years": 365 * 86400,
}
# Months are deliberately absent: "1 month" has no fixed length, and a retention rule that
# silently means 30 days is the kind of surprise this module exists to prevent.


MAX_DURATION = timedelta(days=1000 * 365)
"""The longest duration a config may give ("1000y"): longer ones are typing mistakes, and would
overflow date arithmetic (a date is at most the year 9999)."""


def parse_duration(text: str) -> timedelta:
    """``"30d"``, ``"26h"``, ``"1w 2d"``, ``"90 min"`` → a :class:`timedelta`.

    Units: s, m (minutes), h, d, w, y (365 days); at most :data:`MAX_DURATION`. Raises
    ``ValueError`` with the accepted forms.
    """
    rest = text.strip().lower()
    if not rest:
        raise ValueError("empty duration (use e.g. '30d', '26h', '1w')")
    total = 0.0
    pos = 0
    for m in _DURATION_PART.finditer(rest):
        if rest[pos : m.start()].strip():
            break
        unit = _DURATION_UNITS.get(m.group(2))
        if unit is None:
            raise ValueError(
                f"unknown unit {m.group(2)!r} in duration {text!r} "
                "(use s, m, h, d, w or y, e.g. '30d'; months have no fixed length)"
            )
        total += float(m.group(1)) * unit
        pos = m.end()
    if pos == 0 or rest[pos:].strip():
        raise ValueError(f"invalid duration {text!r} (use e.g. '30d', '26h', '1w 2d')")
    # Compared as seconds first: timedelta itself overflows (OverflowError) far below what
    # the digits can say.
    if total > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is too long (at most 1000y)")
    return timedelta(seconds=total)


def human_duration(delta: timedelta) -> str:
    """A short reading of ``delta``: ``3d 4h``, ``26h``, ``5m 3s``, ``0s``."""
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{u}" for n, u in parts if n][:2]
    return sign + (" ".join(shown) if shown else "0s")


@attrs.frozen
class Duration:
    """A length of time from the config (``"30d"``); ``text`` is what the user wrote."""

    delta: timedelta
    text: str

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ``text`` (see :func:`parse_duration`)."""
        return cls(parse_duration(text), text.strip())

    @classmethod
    def from_config(cls, value: Any) -> Duration:
        """Read a TOML value: a duration string; a bare number is refused (which unit?)."""
        if isinstance(value, Duration):
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected a duration string such as '30d' or '26h', got {value!r}")
        return cls.parse(value)

    def __str__(self) -> str:
        return self.text


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    # Bare letters follow du/df -h: powers of 1024.
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
    "t": 2**40,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_size(value: int | str) -> int:
    """``"10MB"`` (10⁶), ``"10MiB"`` or ``"10M"`` (10 * 2²⁰), or an integer → bytes."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as '10MiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative: {value}")
        return value
    m = _SIZE_RE.match(value.lower())
    if not m or m.group(2) not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r} (use bytes or e.g. '500MB', '2GiB', '10M')")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


class ByteSize(int):
    """A number of bytes from the config: an integer or ``"10MiB"``-style text."""

    @classmethod
    def from_config(cls, value: Any) -> ByteSize:
        """Read a TOML integer or size string."""
        if not isinstance(value, (int, str)):
            raise ValueError(f"expected a size such as '10MiB' or a number of bytes, got {value!r}")
        return cls(parse_size(value))


@attrs.frozen
class SpaceThreshold:
    """Free space to keep: an absolute size (``"5GiB"``) or a share of the disk (``"10%"``)."""

    text: str
    size: int | None = None
    percent: float | None = None

    @classmethod
    def from_config(cls, value: Any) -> SpaceThreshold:
        """Read ``"10%"``, ``"5GiB"`` or a number of bytes."""
        if isinstance(value, str) and value.strip().endswith("%"):
            try:
                pct = float(value.strip()[:-1])
            except ValueError:
                raise ValueError(f"invalid percentage {value!r}") from None
            if not 0 <= pct <= 100:
                raise ValueError(f"a percentage is between 0 and 100, got {value!r}")
            return cls(text=value.strip(), percent=pct)
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            raise ValueError(f"expected a size ('5GiB') or a percentage ('10%'), got {value!r}")
        return cls(text=str(value).strip(), size=parse_size(value))

    def bytes_of(self, total: int) -> int:
        """The threshold in bytes on a disk of ``total`` bytes."""
        if self.percent is not None:
            return int(total * self.percent / 100)
        return self.size or 0

    def __str__(self) -> str:
        return self.text


class TimeZoneName(str):
    """An IANA time zone name (``"Europe/Berlin"``), checked when the config is read."""

    known: ClassVar[str] = "an IANA name such as 'UTC' or 'Europe/Berlin'"

    @classmethod
    def from_config(cls, value: Any) -> TimeZoneName:
        """Read and check a time zone name."""
        if not isinstance(value, str):
            raise ValueError(f"expected a time zone name, {cls.known}; got {value!r}")
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} ({cls.known})") from None
        return cls(value)

    @property
    def zone(self) -> ZoneInfo:
        """The zone itself."""
        return ZoneInfo(self)


# --- cron expressions (issue 16: the [schedule] table) ---

_CRON_ALIASES = {
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 0",
    "monthly": "0 0 1 * *",
}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


@attrs.frozen
class _CronField:
    """One field's rules: its name in messages, its range, and the names it accepts."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0


_CRON_FIELDS = (
    _CronField("minute", 0, 59),
    _CronField("hour", 0, 23),
    _CronField("day of month", 1, 31),
    _CronField("month", 1, 12, _MONTH_NAMES, 1),
    # 7 is Sunday too, as in every cron; it is folded into 0 when the field is normalized.
    _CronField("day of week", 0, 7, _DAY_NAMES, 0),
)
_CRON_TERM = re.compile(r"^(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/([0-9]+))?$")


def _cron_number(text: str, spec: _CronField) -> int:
    if text.isdigit():
        value = int(text)
    elif text in spec.names:
        value = spec.names.index(text) + spec.name_base
    else:
        named = f" or a name ({', '.join(spec.names)})" if spec.names else ""
        raise ValueError(f"{spec.name}: {text!r} is not a number{named}")
    if not spec.low <= value <= spec.high:
        raise ValueError(f"{spec.name}: {value} is out of range {spec.low}-{spec.high}")
    return value


def _cron_values(text: str, spec: _CronField) -> tuple[frozenset[int], str]:
    """The values a field matches, and the field with names turned into numbers.

    The grammar is Vixie cron's (what cronie and Debian's cron accept): terms ``*``, ``n``,
    ``a-b``, each optionally ``/step`` except a bare number (``5/10`` is refused by cron).
    """
    values: set[int] = set()
    terms: list[str] = []
    for term in text.split(","):
        m = _CRON_TERM.match(term)
        if not m:
            raise ValueError(f"{spec.name}: cannot read {term!r} in {text!r}")
        star, first, last, step_text = m.groups()
        if star:
            low, high = spec.low, spec.high
        else:
            low = _cron_number(first, spec)
            high = _cron_number(last, spec) if last is not None else low
            if last is None and step_text is not None:
                raise ValueError(
                    f"{spec.name}: {term!r} is not cron syntax (a step needs a range: "
                    f"'{low}-{spec.high}/{step_text}' or '*/{step_text}')"
                )
            if high < low:
                raise ValueError(f"{spec.name}: range {term!r} runs backwards")
        step = 1
        if step_text is not None:
            step = int(step_text)
            if step < 1:
                raise ValueError(f"{spec.name}: step must be at least 1 in {term!r}")
        values.update(range(low, high + 1, step))
        shown = "*" if star else (f"{low}-{high}" if last is not None else str(low))
        terms.append(shown + (f"/{step}" if step_text is not None else ""))
    return frozenset(values), ",".join(terms)


def _compress(values: frozenset[int], sep: str, show: Any = str) -> str:
    """Sorted values as a list of runs: ``1,3..5`` (systemd) or ``1,3-5`` (cron)."""
    ordered = sorted(values)
    runs: list[str] = []
    start = prev = ordered[0]
    for v in [*ordered[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        runs.append(show(start) if start == prev else f"{show(start)}{sep}{show(prev)}")
        if v is not None:
            start = prev = v
    return ",".join(runs)


def _systemd_field(values: frozenset[int], low: int, high: int) -> str:
    """A field of an ``OnCalendar=`` time or date: ``*``, ``start/step`` or a list of runs."""
    if values == frozenset(range(low, high + 1)):
        return "*"
    ordered = sorted(values)
    if len(ordered) > 2:
        step = ordered[1] - ordered[0]
        # systemd's "a/n" repeats to the end of the range: usable when the progression does.
        if ordered == list(range(ordered[0], high + 1, step)) and ordered[-1] + step > high:
            return f"{ordered[0]:02d}/{step}"
    return _compress(values, "..", lambda v: f"{v:02d}")


@attrs.frozen
class CronSpec:
    """When a scheduled job runs: a 5-field cron expression, read strictly.

    ``parse`` takes ``minute hour day-of-month month day-of-week`` with numbers, ``*``, ranges
    ``a-b``, steps ``*/n`` and ``a-b/n``, lists, month and day names (``jan``, ``mon-fri``), and
    the aliases ``hourly``, ``daily``, ``weekly``, ``monthly`` (also with ``@``). ``expression``
    is the normalized form: single spaces, names as numbers, Sunday as 0, so any cron
    implementation (and Celery's ``crontab``) reads it the same way. The five field attributes
    are the fields of ``expression``.

    Days follow cron's rule: when both day of month and day of week are restricted (neither
    starts with ``*``), a day matches if *either* does; otherwise both must.
    """

    expression: str
    minute: str
    hour: str
    day_of_month: str
    month: str
    day_of_week: str
    text: str = attrs.field(eq=False)
    """What the config said (``"weekly"``), for messages."""
    _sets: tuple[frozenset[int], ...] = attrs.field(eq=False, repr=False, alias="sets")

    @classmethod
    def parse(cls, text: str) -> CronSpec:
        """Read ``text``; ``ValueError`` with one line naming the field at fault."""
        if not isinstance(text, str):
            raise ValueError(f"expected a cron expression such as '0 2 * * *', got {text!r}")
        lowered = text.strip().lower()
        expanded = _CRON_ALIASES.get(lowered.removeprefix("@"), lowered)
        if lowered.startswith("@") and lowered[1:] not in _CRON_ALIASES:
            raise ValueError(
                f"unknown schedule alias {text.strip()!r} (use @hourly, @daily, @weekly, "
                "@monthly or 5 cron fields)"
            )
        parts = expanded.split()
        if len(parts) != 5:
            raise ValueError(
                f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts)} in {text.strip()!r}"
            )
        fields: list[str] = []
        sets: list[frozenset[int]] = []
        for part, rules in zip(parts, _CRON_FIELDS, strict=True):
            values, normal = _cron_values(part, rules)
            sets.append(frozenset(v % 7 for v in values) if rules.high == 7 else values)
            if rules.name == "day of week" and 7 in values and not normal.startswith("*"):
                # Sunday as 7 becomes 0, so that readers that stop at 6 (Celery) agree. A field
                # starting with "*" keeps its text: it means the same over 0-6, and rewriting it
                # would change cron's day rule (see the class docs).
                normal = _compress(frozenset(v % 7 for v in values), "-")
            fields.append(normal)
        minute, hour, dom, month, dow = fields
        spec = cls(" ".join(fields), minute, hour, dom, month, dow, text.strip(), tuple(sets))
        if not spec._possible():
            raise ValueError(f"day of month: {dom!r} never occurs in month {month!r}")
        return spec

    @classmethod
    def from_config(cls, value: Any) -> CronSpec:
        """Read a TOML string (see :meth:`parse`)."""
        if isinstance(value, CronSpec):
            return value
        return cls.parse(value)

    def values(self, field: str) -> frozenset[int]:
        """The numbers field ``field`` (``"minute"``, ``"day_of_week"`` …) matches; Sunday is 0."""
        return self._sets[("minute", "hour", "day_of_month", "month", "day_of_week").index(field)]

    @property
    def days_match_either(self) -> bool:
        """Whether a day runs when *either* day field matches (both restricted, cron's rule);
        otherwise both must. Schedulers that always AND them (systemd, Celery's ``crontab``)
        need two entries for such a spec."""
        return not self.day_of_month.startswith("*") and not self.day_of_week.startswith("*")

    def _possible(self) -> bool:
        if self.days_match_either:
            return True
        longest = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
        days = self.values("day_of_month")
        return any(min(days) <= longest.get(m, 31) for m in self.values("month"))

    def matches(self, when: datetime) -> bool:
        """Whether cron would start the job at ``when`` (its minute; seconds are ignored)."""
        if when.minute not in self.values("minute") or when.hour not in self.values("hour"):
            return False
        if when.month not in self.values("month"):
            return False
        dom = when.day in self.values("day_of_month")
        dow = (when.isoweekday() % 7) in self.values("day_of_week")
        return (dom or dow) if self.days_match_either else (dom and dow)

    def next_after(self, when: datetime) -> datetime:
        """The first minute strictly after ``when`` at which cron starts the job (same tzinfo;
        wall-clock arithmetic, as cron's)."""
        start = when.replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.replace(hour=0, minute=0)
        hours, minutes = sorted(self.values("hour")), sorted(self.values("minute"))
        # Eight years covers every possible day, 29 February included.
        for _ in range(8 * 366 + 1):
            if self.matches(day.replace(hour=hours[0], minute=minutes[0])):
                for hour in hours:
                    for minute in minutes:
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= start:
                            return candidate
            day += timedelta(days=1)
        raise ValueError(f"{self.text!r} never runs")  # unreachable: parse refuses such specs

    def systemd_calendars(self) -> tuple[str, ...]:
        """``OnCalendar=`` values that together fire exactly when cron would.

        One value, except when both day fields are restricted: cron then runs on either, and
        systemd ANDs a weekday with a date, so each gets its own ``OnCalendar=`` line.
        """
        time = (
            f"{_systemd_field(self.values('hour'), 0, 23)}:"
            f"{_systemd_field(self.values('minute'), 0, 59)}:00"
        )
        month = _systemd_field(self.values("month"), 1, 12)
        dom = _systemd_field(self.values("day_of_month"), 1, 31)
        days = self.values("day_of_week")
        weekday = _compress(days, "..", lambda v: _SYSTEMD_DAYS[v]) + " "
        if len(days) == 7:
            weekday = ""
        if self.days_match_either:
            return (f"*-{month}-{dom} {time}", f"{weekday}*-{month}-* {time}")
        return (f"{weekday}*-{month}-{dom} {time}",)

    def systemd_calendar(self) -> str:
        """The one ``OnCalendar=`` value meaning this schedule; ``ValueError`` when it takes two
        (see :meth:`systemd_calendars`)."""
        calendars = self.systemd_calendars()
        if len(calendars) != 1:
            raise ValueError(
                f"{self.text!r} restricts both day of month and day of week (cron runs on "
                "either), which takes two OnCalendar= lines: use systemd_calendars()"
            )
        return calendars[0]

    def __str__(self) -> str:
        return self.expression
