"""Recovery targets: one instant or a one-line refusal naming the option."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from pgvault.operations.pitr.targets import TargetError, build_target, parse_time


def test_times_with_an_offset_or_a_zone_name_mean_one_instant() -> None:
    """An offset, Z, or an IANA zone after the time all give the same UTC instant."""
    want = datetime(2026, 12, 2, 13, 32, 5, tzinfo=UTC)
    for text in (
        "2026-12-02T14:32:05+01:00",
        "2026-12-02 14:32:05+01",
        "2026-12-02T13:32:05Z",
        "2026-12-02 14:32:05 Europe/Berlin",
        "2026-12-02 13:32:05 UTC",
    ):
        assert parse_time(text) == want, text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("2026-12-02 14:32:05", "has no time zone"),
        ("2026-12-02T14:32:05 CET", "abbreviations are ambiguous"),
        ("2026-12-02 14:32:05 Mars/Olympus", "unknown time zone"),
        ("2026-10-25 02:30:00 Europe/Berlin", "happens twice"),
        ("2026-03-29 02:30:00 Europe/Berlin", "does not exist"),
        ("yesterday", "not a time"),
    ],
)
def test_a_time_that_could_mean_several_instants_is_refused(text: str, words: str) -> None:
    """Naive times, abbreviations and DST-ambiguous wall-clock times are refused in one line."""
    with pytest.raises(TargetError) as err:
        parse_time(text)
    assert words in str(err.value)
    assert "--target-time" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_settings_pin_the_instant_in_utc_and_promote_by_default() -> None:
    """The written recovery_target_time is UTC with its offset; the action is promote."""
    target = build_target(time="2026-12-02 14:32:05.250 Europe/Berlin", exclusive=True)
    assert target.settings() == {
        "recovery_target_time": "2026-12-02 13:32:05.250000+00:00",
        "recovery_target_inclusive": "off",
        "recovery_target_timeline": "latest",
        "recovery_target_action": "promote",
    }
    assert target.time == datetime(
        2026, 12, 2, 14, 32, 5, 250000, tzinfo=timezone(timedelta(hours=1))
    )


def test_each_target_kind_writes_its_setting() -> None:
    """lsn, name, xid and immediate each become their own recovery_target* line."""
    assert build_target(lsn="0/3000060").settings()["recovery_target_lsn"] == "0/3000060"
    assert build_target(name="before-migration").settings()["recovery_target_name"] == (
        "before-migration"
    )
    assert build_target(xid="745", action="pause").settings() == {
        "recovery_target_xid": "745",
        "recovery_target_inclusive": "on",
        "recovery_target_timeline": "latest",
        "recovery_target_action": "pause",
    }
    immediate = build_target(immediate=True).settings()
    assert immediate["recovery_target"] == "immediate"
    assert immediate["recovery_target_timeline"] == "current"
    assert build_target().settings() == {"recovery_target_timeline": "latest"}
    assert build_target(timeline="3").settings()["recovery_target_timeline"] == "3"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"time": "2026-12-02T14:32:05Z", "lsn": "0/1"}, "at most one recovery target"),
        ({"lsn": "nonsense"}, "--target-lsn 'nonsense': not an LSN"),
        ({"xid": "-4"}, "--target-xid"),
        ({"name": "a/b"}, "restore point name"),
        ({"name": "x" * 64}, "restore point name"),
        ({"name": "p", "exclusive": True}, "--target-exclusive needs"),
        ({"exclusive": True}, "--target-exclusive needs"),
        ({"action": "shutdown"}, "needs a recovery target"),
        ({"timeline": "newest"}, "--target-timeline 'newest'"),
        ({"timeline": "0"}, "--target-timeline '0'"),
    ],
)
def test_bad_target_options_are_one_line_naming_the_option(
    options: dict[str, object], words: str
) -> None:
    """Conflicting or malformed target options are refused before anything is read."""
    with pytest.raises(TargetError) as err:
        build_target(**options)  # type: ignore[arg-type]
    assert words in str(err.value)
