"""Config value types: cron schedules read strictly, and their systemd equivalents checked
against systemd's own calendar parser."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from pgvault.units import CronSpec

BASE = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("0 2 * * *", "0 2 * * *"),
        ("  */15   *  * * * ", "*/15 * * * *"),
        ("daily", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("WEEKLY", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("5 4 * jan-mar sun", "5 4 * 1-3 0"),
        ("0 22 * * 7", "0 22 * * 0"),
        ("0 0 * * 5-7", "0 0 * * 0,5-6"),
        ("0 0 * * */7", "0 0 * * */7"),
        ("10-50/20 8-18/5 1,15 * Mon,wed,FRI", "10-50/20 8-18/5 1,15 * 1,3,5"),
    ],
)
def test_cron_expressions_are_normalized(text: str, expression: str) -> None:
    """Aliases expand, names become numbers, Sunday is 0, and the fields are the expression's."""
    spec = CronSpec.parse(text)
    assert spec.expression == expression
    fields = (spec.minute, spec.hour, spec.day_of_month, spec.month, spec.day_of_week)
    assert " ".join(fields) == expression
    assert CronSpec.parse(spec.expression) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("61 * * * *", "minute: 61 is out of range 0-59"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month: 0 is out of range 1-31"),
        ("0 0 * 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "day of week: 8 is out of range 0-7"),
        ("0 0 * foo *", "month: 'foo' is not a number or a name (jan,"),
        ("0 0 * * mon-", "day of week: cannot read 'mon-'"),
        ("*/0 * * * *", "minute: step must be at least 1"),
        ("5/10 * * * *", "minute: '5/10' is not cron syntax (a step needs a range: '5-59/10'"),
        ("0 5-2 * * *", "hour: range '5-2' runs backwards"),
        ("0 0 31 2 *", "day of month: '31' never occurs in month '2'"),
        ("0 0 * *", "a cron expression has 5 fields"),
        ("0 0 * * * *", "got 6"),
        ("@yearly", "unknown schedule alias '@yearly'"),
        ("", "got 0"),
    ],
)
def test_bad_cron_expressions_name_the_field(text: str, message: str) -> None:
    """Each mistake is one line that names the field at fault."""
    with pytest.raises(ValueError) as info:
        CronSpec.parse(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_matches_follows_crons_day_rule() -> None:
    """Both day fields restricted: either matches; one starting with '*': both must."""
    either = CronSpec.parse("0 0 13 * 5")
    assert either.days_match_either and not CronSpec.parse("0 0 */2 * 5").days_match_either
    assert either.matches(datetime(2026, 2, 13))  # a Friday the 13th
    assert either.matches(datetime(2026, 1, 13))  # a Tuesday
    assert either.matches(datetime(2026, 1, 2))  # a Friday
    both = CronSpec.parse("0 0 */2 * 5")
    assert both.matches(datetime(2026, 1, 9))  # Friday, odd day
    assert not both.matches(datetime(2026, 1, 2 + 14))  # Friday, even day
    assert not both.matches(datetime(2026, 1, 3))  # odd, Saturday


EXPRESSIONS = [
    "*/15 * * * *",
    "0 2 * * *",
    "30 4 1,15 * 5",
    "0 0 * * 1-5",
    "5 4 * jan-mar sun",
    "0 */6 * * *",
    "0 22 * * 7",
    "15 10 1-7 * *",
    "0 0 29 2 *",
    "10-50/20 8-18/5 * * mon,wed,fri",
    "0 0 * * 5-7",
    "0 3 */2 * *",
    "0 0 */2 * 5",
    "weekly",
    "monthly",
]


def _systemd_next(calendar: str, count: int) -> list[datetime]:
    out = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            f"--iterations={count}",
            "--base-time=2026-01-01 00:00:00 UTC",
            calendar,
        ],
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin", "SYSTEMD_COLORS": "0"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    times = []
    for line in out.splitlines():
        label, _, value = line.strip().partition(": ")
        if label in ("Next elapse", "Iter. #2") or label.startswith("Iter. #"):
            # "Thu 2026-01-01 02:00:00 UTC"
            stamp = value.split(" ", 1)[1].removesuffix(" UTC")
            times.append(datetime.fromisoformat(stamp).replace(tzinfo=UTC))
    assert len(times) == count, out
    return times


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("text", EXPRESSIONS)
def test_systemd_calendars_fire_when_cron_would(text: str) -> None:
    """systemd's own parser, asked for the next 40 elapses of the OnCalendar= values, lists the
    very minutes at which the cron rules start the job."""
    spec = CronSpec.parse(text)
    count = 40
    expected = []
    when = BASE
    for _ in range(count):
        when = spec.next_after(when)
        expected.append(when)
    merged = sorted({t for cal in spec.systemd_calendars() for t in _systemd_next(cal, count)})
    assert merged[:count] == expected


def test_one_calendar_unless_both_day_fields_are_restricted() -> None:
    """systemd ANDs a weekday with a date, so cron's 'either day' takes two OnCalendar= lines."""
    assert CronSpec.parse("0 2 * * *").systemd_calendar() == "*-*-* 02:00:00"
    assert CronSpec.parse("*/15 * * * 1-5").systemd_calendar() == "Mon..Fri *-*-* *:00/15:00"
    either = CronSpec.parse("30 4 1,15 * 5")
    assert either.systemd_calendars() == ("*-*-01,15 04:30:00", "Fri *-*-* 04:30:00")
    with pytest.raises(ValueError, match="two OnCalendar= lines"):
        either.systemd_calendar()
