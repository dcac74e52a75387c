"""Snapshot policy schedules: parsing and the next run time, DST-correct in the policy's zone."""

from datetime import datetime, timezone

import pytest

from secstor.domain.errors import InvalidParameter
from secstor.domain.snapshot_policy import IntervalType, next_run, parse_interval, parse_schedule, parse_timezone

pytestmark = pytest.mark.nodb

UTC = timezone.utc
BERLIN = parse_timezone("Europe/Berlin")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("interval,text", [
    ("HOURLY", "60"), ("HOURLY", "5:1"), ("DAILY", "30"), ("DAILY", "30:24"), ("WEEKLY", "0:1:8"),
    ("WEEKLY", "0:1:0"), ("MONTHLY", "0:1:29"), ("MONTHLY", "a:b:c"), ("DAILY", "-1:2"),
])
def test_bad_schedules_are_refused_naming_the_parameter(interval, text):
    with pytest.raises(InvalidParameter) as err:
        parse_schedule(parse_interval(interval), text)
    assert err.value.param == "schedule"


def test_bad_timezone_and_interval_name_their_parameter():
    with pytest.raises(InvalidParameter) as err:
        parse_timezone("Mars/Olympus")
    assert err.value.param == "timezone"
    with pytest.raises(InvalidParameter) as err:
        parse_interval("YEARLY")
    assert err.value.param == "intervaltype"


def test_daily_keeps_local_wall_time_across_spring_and_autumn_dst():
    daily = parse_schedule(IntervalType.DAILY, "30:01")
    # Berlin is UTC+1 in winter, UTC+2 from 2026-03-29 02:00 local.
    assert next_run(daily, BERLIN, utc(2026, 3, 28, 1, 0)) == utc(2026, 3, 29, 0, 30)  # 01:30 CET
    assert next_run(daily, BERLIN, utc(2026, 3, 29, 0, 30)) == utc(2026, 3, 29, 23, 30)  # 01:30 CEST
    # Autumn: back to UTC+1 on 2026-10-25 03:00 local.
    assert next_run(daily, BERLIN, utc(2026, 10, 24, 0, 0)) == utc(2026, 10, 24, 23, 30)
    assert next_run(daily, BERLIN, utc(2026, 10, 24, 23, 30)) == utc(2026, 10, 26, 0, 30)


def test_skipped_wall_time_runs_once_after_the_jump_and_repeated_one_runs_once():
    daily = parse_schedule(IntervalType.DAILY, "30:02")
    # 02:30 does not exist in Berlin on 2026-03-29: it runs at 03:30 CEST (01:30 UTC).
    assert next_run(daily, BERLIN, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 1, 30)
    # 02:30 happens twice on 2026-10-25: only the first (CEST, 00:30 UTC) is a run.
    first = next_run(daily, BERLIN, utc(2026, 10, 24, 12, 0))
    assert first == utc(2026, 10, 25, 0, 30)
    assert next_run(daily, BERLIN, first) == utc(2026, 10, 26, 1, 30)


def test_hourly_runs_every_real_hour_even_in_the_repeated_hour():
    hourly = parse_schedule(IntervalType.HOURLY, "15")
    runs, t = [], utc(2026, 10, 24, 23, 20)
    for _ in range(4):
        t = next_run(hourly, BERLIN, t)
        runs.append(t)
    assert runs == [utc(2026, 10, 25, h, 15) for h in range(0, 4)]
    # A half-hour zone: minute 15 local is minute 45 UTC.
    assert next_run(hourly, parse_timezone("Asia/Kolkata"), utc(2026, 1, 1, 10, 0)) == utc(2026, 1, 1, 10, 45)


def test_weekly_counts_sunday_as_day_one_and_monthly_picks_the_day():
    weekly = parse_schedule(IntervalType.WEEKLY, "00:10:1")
    assert next_run(weekly, parse_timezone("UTC"), utc(2026, 11, 18, 0, 0)) == utc(2026, 11, 22, 10, 0)  # a Sunday
    monthly = parse_schedule(IntervalType.MONTHLY, "00:00:28")
    assert next_run(monthly, parse_timezone("America/New_York"), utc(2026, 2, 28, 5, 0)) == utc(2026, 3, 28, 4, 0)
