"""Config value types that read themselves from TOML: durations, byte sizes, time zones.

Each type has a ``from_config(value)`` classmethod that :func:`pgvault.config.structure` calls
for a field annotated with it; a ``ValueError`` it raises becomes a config error naming the file
and the exact key. The types keep the text the user wrote, so messages quote the threshold the way
it stands in the config ("max_age 26h"), not a recomputed form.
"""

from __future__ import annotations

import re
from datetime import timedelta
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
