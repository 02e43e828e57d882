"""Retention planning: the worked example of the docs, calendar edge cases, and properties over
random histories (the newest is kept, the kept set is what the policy names, order is moot)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pgvault
from pgvault.settings import TIERS, RetentionPolicy
from pgvault.units import Duration, TimeZoneName, parse_duration
from pgvault.vault.retention import plan, started_from_id

BERLIN = ZoneInfo("Europe/Berlin")


@attrs.frozen
class B:
    """A complete backup as plan() sees it."""

    backup_id: str
    started_at: datetime
    kind: str = "scheduled"
    labels: dict[str, str] = attrs.field(factory=dict)


def policy(**kwargs: Any) -> RetentionPolicy:
    if isinstance(kwargs.get("timezone"), str):
        kwargs["timezone"] = TimeZoneName(kwargs["timezone"])
    if isinstance(kwargs.get("keep_within"), str):
        kwargs["keep_within"] = Duration.parse(kwargs["keep_within"])
    return RetentionPolicy(**kwargs)


def daily(first: date, last: date, hour: int = 2, zone: ZoneInfo = BERLIN) -> list[B]:
    out = []
    d = first
    while d <= last:
        out.append(B(d.isoformat(), datetime(d.year, d.month, d.day, hour, tzinfo=zone)))
        d += timedelta(days=1)
    return out


def test_worked_example_of_the_docs() -> None:
    """docs/retention.md's year of dailies under daily 7 / weekly 5 / monthly 12 keeps these 21."""
    history = daily(date(2025, 11, 1), date(2026, 11, 20))
    result = plan(
        history,
        policy(keep_daily=7, keep_weekly=5, keep_monthly=12, timezone="Europe/Berlin"),
        datetime(2026, 11, 20, 12, tzinfo=BERLIN),
    )
    kept = {d.backup_id: d.reasons for d in result.kept}
    assert kept == {
        "2026-11-20": ("newest", "daily 2026-11-20", "weekly 2026-W47", "monthly 2026-11"),
        "2026-11-19": ("daily 2026-11-19",),
        "2026-11-18": ("daily 2026-11-18",),
        "2026-11-17": ("daily 2026-11-17",),
        "2026-11-16": ("daily 2026-11-16",),
        "2026-11-15": ("daily 2026-11-15", "weekly 2026-W46"),
        "2026-11-14": ("daily 2026-11-14",),
        "2026-11-08": ("weekly 2026-W45",),
        "2026-11-01": ("weekly 2026-W44",),
        "2026-10-31": ("monthly 2026-10",),
        "2026-10-25": ("weekly 2026-W43",),
        "2026-09-30": ("monthly 2026-09",),
        "2026-08-31": ("monthly 2026-08",),
        "2026-07-31": ("monthly 2026-07",),
        "2026-06-30": ("monthly 2026-06",),
        "2026-05-31": ("monthly 2026-05",),
        "2026-04-30": ("monthly 2026-04",),
        "2026-03-31": ("monthly 2026-03",),
        "2026-02-28": ("monthly 2026-02",),
        "2026-01-31": ("monthly 2026-01",),
        "2025-12-31": ("monthly 2025-12",),
    }
    assert len(result.removed) == len(history) - 21
    assert all(d.reasons == ("no rule keeps it",) for d in result.removed)

    # The next day's backup rotates the oldest daily out; nothing else changes.
    tomorrow = daily(date(2025, 11, 1), date(2026, 11, 21))
    after = plan(tomorrow, result.policy, datetime(2026, 11, 21, 12, tzinfo=BERLIN))
    gone = {d.backup_id for d in result.kept} - {d.backup_id for d in after.kept}
    assert gone == {"2026-11-14"}


def test_calendar_periods_follow_the_configured_time_zone() -> None:
    """00:30 in Berlin is the previous day in UTC: a backup's day depends on the zone."""
    # 2026-03-29 00:30 in Berlin (UTC+1) is 2026-03-28 23:30 UTC; 23:00 Berlin is the same UTC day.
    late = B("late", datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN))
    early = B("early", datetime(2026, 3, 28, 23, 0, tzinfo=BERLIN))
    in_berlin = plan([late, early], policy(keep_daily=2, timezone="Europe/Berlin"), late.started_at)
    in_utc = plan([late, early], policy(keep_daily=2, timezone="UTC"), late.started_at)
    assert in_berlin.decision("early").reasons == ("daily 2026-03-28",)
    assert in_berlin.decision("late").reasons == ("newest", "daily 2026-03-29")
    assert not in_utc.decision("early").keep  # both are 2026-03-28 in UTC: only the newest stays
    assert in_utc.decision("late").reasons == ("newest", "daily 2026-03-28")


def test_hourly_tells_apart_the_repeated_hour_of_a_dst_fall_back() -> None:
    """On 2026-10-25 Berlin lives 02:00-03:00 twice; both real hours count as hours."""
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 CEST
    second = datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET
    result = plan(
        [B("first", first), B("second", second)],
        policy(keep_hourly=2, timezone="Europe/Berlin"),
        second,
    )
    assert result.decision("first").reasons == ("hourly 2026-10-25 02:00",)
    assert result.decision("second").reasons == ("newest", "hourly 2026-10-25 02:00")


def test_tiers_count_periods_that_have_backups_so_a_stopped_job_keeps_its_history() -> None:
    """After a 40-day outage, keep_daily = 7 still keeps 7 backups, not the newest alone."""
    history = daily(date(2026, 1, 1), date(2026, 1, 20))
    now = datetime(2026, 3, 1, tzinfo=UTC)
    result = plan(history, policy(keep_daily=7, keep_within="3d"), now)
    assert [d.backup_id for d in result.kept] == [f"2026-01-{d}" for d in range(20, 13, -1)]
    within = [d.backup_id for d in result.kept if any(r.startswith("within") for r in d.reasons)]
    assert within == ["2026-01-20", "2026-01-19", "2026-01-18", "2026-01-17"]


def test_keep_last_numbers_the_newest() -> None:
    """keep_last = 3 keeps the three newest, whatever their dates, each saying its rank."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    history = [B(f"b{i}", start + timedelta(minutes=i)) for i in range(5)]
    result = plan(history, policy(keep_last=3), datetime(2026, 1, 2, tzinfo=UTC))
    assert [(d.backup_id, d.reasons) for d in result.kept] == [
        ("b4", ("newest", "last #1")),
        ("b3", ("last #2",)),
        ("b2", ("last #3",)),
    ]


def test_incomplete_folders_are_removed_only_after_the_grace_period() -> None:
    """A folder without a manifest is a possible running backup until it is older than the grace."""
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    running = "20261120T110000Z-aaaaaa"  # started an hour ago
    leftover = "20261117T020000Z-bbbbbb"
    foreign = "not-a-pgvault-id"
    result = plan(
        [B("20261120T020000Z-cccccc", datetime(2026, 11, 20, 2, tzinfo=UTC))],
        policy(keep_last=1, incomplete_grace=Duration.parse("1d")),
        now,
        incomplete=[running, leftover, foreign],
    )
    assert result.decision(running).keep
    assert "may still be running (grace 1d)" in result.decision(running).reasons[0]
    assert not result.decision(leftover).keep
    assert result.decision(leftover).reasons == (
        "incomplete leftover, started 3d 10h ago (grace 1d)",
    )
    assert result.decision(foreign).keep
    assert started_from_id(leftover) == datetime(2026, 11, 17, 2, tzinfo=UTC)


def test_a_safety_backup_is_pinned_and_never_takes_a_days_slot() -> None:
    """A restore's safety backup is kept until its keep_until, and the day's own backup stays."""
    scheduled = B("scheduled", datetime(2026, 11, 20, 2, tzinfo=UTC))
    safety = B(
        "safety",
        datetime(2026, 11, 20, 15, tzinfo=UTC),
        kind="safety",
        labels={"keep_until": "2026-11-27T15:00:00Z"},
    )
    pol = policy(keep_daily=7)
    before = plan([scheduled, safety], pol, datetime(2026, 11, 21, tzinfo=UTC))
    assert before.decision("scheduled").reasons == ("daily 2026-11-20",)
    assert before.decision("safety").reasons == ("newest", "pinned until 2026-11-27 15:00 UTC")
    newer = B("next", datetime(2026, 11, 28, 2, tzinfo=UTC))
    after = plan([scheduled, safety, newer], pol, datetime(2026, 11, 28, 3, tzinfo=UTC))
    assert not after.decision("safety").keep
    assert after.decision("scheduled").keep


def test_duplicate_ids_are_refused() -> None:
    """Two backups with one id are a broken vault listing, not something to plan around."""
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="duplicate backup ids: x"):
        plan([B("x", t), B("x", t + timedelta(hours=1))], policy(keep_last=1), t)


def test_an_empty_vault_plans_nothing() -> None:
    """No backups, no decisions."""
    assert plan([], policy(keep_daily=1), datetime.now(UTC)).decisions == ()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("keep_daly = 7", "retention.keep_daly: unknown key (did you mean 'keep_daily'?)"),
        ('keep_within = "30x"', "retention.keep_within: unknown unit 'x'"),
        ("keep_within = 30", "retention.keep_within: expected a duration string"),
        ("keep_daily = -1", "keep_daily must be a whole number ≥ 0, got -1"),
        ('keep_daily = "7"', "retention.keep_daily: expected an integer, got string '7'"),
        (
            'keep_daily = 7\ntimezone = "Europe/Berln"',
            "retention.timezone: unknown time zone 'Europe/Berln'",
        ),
        ("keep_daily = 0", "retention: invalid value: the policy keeps nothing"),
        ("", "retention: invalid value: the policy keeps nothing"),
        (
            'keep_daily = 7\nincomplete_grace = "1 month"',
            "retention.incomplete_grace: unknown unit",
        ),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path: Path, table: str, message: str) -> None:
    """Typos, wrong types, unknown zones and a policy that keeps nothing are config errors."""
    path = tmp_path / "pipeline.toml"
    path.write_text(
        'name = "x"\n[source]\ntype = "files"\npaths = ["."]\n[sink]\ntype = "local"\n'
        f'path = "v"\n[retention]\n{table}\n'
    )
    with pytest.raises(pgvault.ConfigError) as info:
        pgvault.load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_config_reads_durations_and_zone(tmp_path: Path) -> None:
    """A [retention] table becomes a typed policy; the user's text is kept for messages."""
    path = tmp_path / "pipeline.toml"
    path.write_text(
        'name = "x"\n[source]\ntype = "files"\npaths = ["."]\n[sink]\ntype = "local"\npath = "v"\n'
        '[retention]\nkeep_daily = 7\nkeep_within = "1w 2d"\ntimezone = "America/Sao_Paulo"\n'
    )
    pol = pgvault.load_config(path).retention
    assert pol is not None and pol.keep_daily == 7
    assert pol.keep_within == Duration(timedelta(days=9), "1w 2d")
    assert str(pol.timezone) == "America/Sao_Paulo"
    assert pol.describe() == "daily 7, within 1w 2d (America/Sao_Paulo)"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("26h", 26 * 3600),
        ("1w 2d", 9 * 86400),
        ("90 min", 5400),
        ("1.5h", 5400),
        ("2 days", 2 * 86400),
        ("1y", 365 * 86400),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    """Durations read the units people write."""
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "3 months", "1d x", "-1d"])
def test_bad_durations_are_refused(text: str) -> None:
    """Ambiguous or malformed durations (months have no fixed length) are errors."""
    with pytest.raises(ValueError):
        parse_duration(text)


# Properties over random histories

ZONES = ["UTC", "Europe/Berlin", "America/Sao_Paulo", "Australia/Lord_Howe", "Asia/Kolkata"]

times = st.datetimes(
    min_value=datetime(2024, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
histories = st.lists(times, max_size=60, unique=True).map(
    lambda ts: [B(f"{t:%Y%m%dT%H%M%S%f}Z-{i:04x}", t) for i, t in enumerate(ts)]
)
counts = st.integers(min_value=0, max_value=6)
durations = st.none() | st.sampled_from(["6h", "3d", "30d"]).map(Duration.parse)


@st.composite
def policies(draw: st.DrawFn) -> RetentionPolicy:
    """Random policies; one that would keep nothing gets keep_last = 1 (it is a config error)."""
    hourly, daily, weekly, monthly, yearly = (draw(counts) for _ in TIERS)
    within = draw(durations)
    some = within or hourly or daily or weekly or monthly or yearly
    return RetentionPolicy(
        keep_last=draw(counts) or (0 if some else 1),
        keep_hourly=hourly,
        keep_daily=daily,
        keep_weekly=weekly,
        keep_monthly=monthly,
        keep_yearly=yearly,
        keep_within=within,
        timezone=TimeZoneName(draw(st.sampled_from(ZONES))),
    )


def _period_key(tier: str, dt: datetime, zone: ZoneInfo) -> tuple[Any, ...]:
    local = dt.astimezone(zone)
    return {
        "hourly": (local.year, local.month, local.day, local.hour, local.utcoffset()),
        "daily": (local.year, local.month, local.day),
        "weekly": tuple(local.isocalendar())[:2],
        "monthly": (local.year, local.month),
        "yearly": (local.year,),
    }[tier]


def reference_kept(backups: Iterable[B], pol: RetentionPolicy) -> set[str]:
    """The policy's definition, written the slow, obvious way."""
    items = list(backups)
    if not items:
        return set()
    newest_first = sorted(items, key=lambda b: (b.started_at, b.backup_id), reverse=True)
    kept = {newest_first[0].backup_id}
    kept |= {b.backup_id for b in newest_first[: pol.keep_last]}
    zone = ZoneInfo(str(pol.timezone))
    for tier in TIERS:
        groups: dict[tuple[Any, ...], list[B]] = {}
        for b in items:
            groups.setdefault(_period_key(tier, b.started_at, zone), []).append(b)
        newest_of_each = sorted(
            (max(g, key=lambda b: (b.started_at, b.backup_id)) for g in groups.values()),
            key=lambda b: (b.started_at, b.backup_id),
            reverse=True,
        )
        kept |= {b.backup_id for b in newest_of_each[: pol.tier(tier)]}
    if pol.keep_within is not None:
        top = newest_first[0].started_at
        kept |= {b.backup_id for b in items if top - b.started_at <= pol.keep_within.delta}
    return kept


NOW = datetime(2028, 1, 1, tzinfo=UTC)


@settings(max_examples=150, deadline=None)
@given(histories, policies())
def test_property_the_newest_is_always_kept(history: list[B], pol: RetentionPolicy) -> None:
    """Whatever the policy and history, the newest complete backup survives."""
    result = plan(history, pol, NOW)
    if history:
        newest = max(history, key=lambda b: (b.started_at, b.backup_id))
        assert result.decision(newest.backup_id).keep
        assert result.kept


@settings(max_examples=150, deadline=None)
@given(histories, policies())
def test_property_the_kept_set_is_exactly_what_the_policy_names(
    history: list[B], pol: RetentionPolicy
) -> None:
    """plan() keeps the same set as a naive reading of the policy, and says why for each."""
    result = plan(history, pol, NOW)
    assert {d.backup_id for d in result.kept} == reference_kept(history, pol)
    assert {d.backup_id for d in result.decisions} == {b.backup_id for b in history}
    for d in result.decisions:
        assert d.reasons
        assert d.keep == (d.reasons != ("no rule keeps it",))
    for tier in TIERS:
        named = sum(1 for d in result.decisions for r in d.reasons if r.startswith(f"{tier} "))
        zone = ZoneInfo(str(pol.timezone))
        periods = {_period_key(tier, b.started_at, zone) for b in history}
        assert named == min(pol.tier(tier), len(periods))


@settings(max_examples=100, deadline=None)
@given(histories, policies(), st.randoms(use_true_random=False))
def test_property_input_order_does_not_matter(
    history: list[B], pol: RetentionPolicy, rnd: random.Random
) -> None:
    """Shuffling the input gives the identical plan."""
    shuffled = list(history)
    rnd.shuffle(shuffled)
    assert plan(shuffled, pol, NOW) == plan(history, pol, NOW)


@settings(max_examples=100, deadline=None)
@given(histories, policies(), st.sampled_from([*TIERS, "last"]))
def test_property_a_larger_count_never_removes_more(
    history: list[B], pol: RetentionPolicy, tier: str
) -> None:
    """Raising any count only ever keeps more: tiers never compete with each other."""
    field = f"keep_{tier}"
    bigger = attrs.evolve(pol, **{field: getattr(pol, field) + 1})
    before = {d.backup_id for d in plan(history, pol, NOW).kept}
    after = {d.backup_id for d in plan(history, bigger, NOW).kept}
    assert before <= after


future_times = st.lists(
    st.datetimes(
        min_value=datetime(2028, 1, 1, 0, 6), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    max_size=5,
    unique=True,
).map(lambda ts: [B(f"{t:%Y%m%dT%H%M%S%f}Z-f{i:03x}", t) for i, t in enumerate(ts)])


def _decisions(result: Any, ids: Iterable[str]) -> dict[str, Any]:
    return {i: (result.decision(i).keep, result.decision(i).reasons) for i in ids}


@settings(max_examples=100, deadline=None)
@given(histories, future_times, policies())
def test_property_future_dated_backups_are_kept_and_change_nothing_else(
    history: list[B], ahead: list[B], pol: RetentionPolicy
) -> None:
    """Backups dated beyond now + the clock tolerance are all kept, and the decision about every
    other backup is the same as if they were not there: a clock that jumped ahead can never make
    the rules count back from it."""
    ids = [b.backup_id for b in history]
    alone = plan(history, pol, NOW)
    mixed = plan([*history, *ahead], pol, NOW)
    assert _decisions(mixed, ids) == _decisions(alone, ids)
    for b in ahead:
        decision = mixed.decision(b.backup_id)
        assert decision.keep and decision.reasons[0].startswith("dated ")


@settings(max_examples=100, deadline=None)
@given(histories, st.sets(st.from_regex(r"\A2\d{7}T\d{6}Z-d[0-9a-f]{5}\Z"), max_size=4), policies())
def test_property_damaged_backups_are_kept_and_change_nothing_else(
    history: list[B], damaged: set[str], pol: RetentionPolicy
) -> None:
    """Every damaged folder is kept (never removed for want of a readable manifest), and the
    decisions about the readable backups are those of a vault without it."""
    ids = [b.backup_id for b in history]
    with_damage = plan(history, pol, NOW, damaged=damaged, incomplete=damaged)
    assert _decisions(with_damage, ids) == _decisions(plan(history, pol, NOW), ids)
    for backup_id in damaged:
        decision = with_damage.decision(backup_id)
        assert decision.keep and decision.reasons[0].startswith("damaged manifest")


def test_a_backup_within_the_clock_tolerance_counts() -> None:
    """A backup dated a minute ahead (ordinary clock differences) counts as the newest; one
    dated ten minutes ahead does not."""
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    near = B("near", now + timedelta(minutes=1))
    far = B("far", now + timedelta(minutes=10))
    old = B("old", now - timedelta(days=1))
    result = plan([near, far, old], policy(keep_last=1), now)
    assert result.decision("near").reasons == ("newest", "last #1")
    assert result.decision("far").reasons == (
        "dated 10m in the future (a clock ahead by more than 5m?): kept, not counted",
    )
    assert not result.decision("old").keep
