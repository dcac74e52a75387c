"""Snapshot policies: the schedule format, when a policy runs next, how many snapshots it keeps.
Plain logic, no I/O.

Schedules are CloudStack's: ``MM`` (HOURLY), ``MM:HH`` (DAILY), ``MM:HH:DD`` (WEEKLY, DD 1-7 with
1 = Sunday as Java's Calendar counts; MONTHLY, DD 1-28). Times are wall-clock times in the
policy's time zone: a daily 02:30 stays 02:30 local across DST changes. A wall time that does
not exist (the hour skipped in spring) runs at the same offset past the skipped hour (02:30 ->
03:30); one that happens twice (autumn) runs once, at its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from secstor.domain.errors import InvalidParameter


class IntervalType(str, Enum):
    HOURLY = "HOURLY"
    DAILY = "DAILY"
    WEEKLY = "WEEKLY"
    MONTHLY = "MONTHLY"


_FORMAT = {
    IntervalType.HOURLY: "MM",
    IntervalType.DAILY: "MM:HH",
    IntervalType.WEEKLY: "MM:HH:DD (DD 1-7, 1 = Sunday)",
    IntervalType.MONTHLY: "MM:HH:DD (DD 1-28)",
}
_PARTS = {IntervalType.HOURLY: 1, IntervalType.DAILY: 2, IntervalType.WEEKLY: 3, IntervalType.MONTHLY: 3}
_LAST_DAY = {IntervalType.WEEKLY: 7, IntervalType.MONTHLY: 28}


@dataclass(frozen=True)
class Schedule:
    interval: IntervalType
    minute: int
    hour: int = 0
    day: int = 0  # weekly: 1 = Sunday .. 7 = Saturday; monthly: day of the month


def parse_interval(value: str, param: str = "intervaltype") -> IntervalType:
    try:
        return IntervalType(value.strip().upper())
    except ValueError:
        raise InvalidParameter(f"Invalid {param} {value}: use HOURLY, DAILY, WEEKLY or MONTHLY",
                               param) from None


def parse_timezone(name: str, param: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidParameter(f"Invalid {param} {name}: not a known time zone (use an IANA name such as "
                               f"Europe/Berlin)", param) from None


def parse_schedule(interval: IntervalType, text: str, param: str = "schedule") -> Schedule:
    """``text`` as a Schedule of ``interval``; 431 naming ``param`` unless it has the interval's form."""
    parts = text.strip().split(":")
    bad = InvalidParameter(f"Invalid {param} {text!r} for interval type {interval.value}: expected "
                           f"{_FORMAT[interval]}", param)
    if len(parts) != _PARTS[interval] or not all(p.isdigit() for p in parts):
        raise bad
    numbers = [int(p) for p in parts] + [0, 0]
    minute, hour, day = numbers[0], numbers[1], numbers[2]
    if minute > 59 or hour > 23:
        raise bad
    if interval in _LAST_DAY and not 1 <= day <= _LAST_DAY[interval]:
        raise bad
    return Schedule(interval, minute, hour, day)


def _to_utc(day: date, at: time, tz: ZoneInfo) -> datetime:
    # fold=0: a repeated wall time is its first occurrence; a skipped one keeps the offset in
    # force before the jump, which lands as far past the jump as the time was into the gap.
    return datetime.combine(day, at, tzinfo=tz).astimezone(timezone.utc)


def _day_matches(schedule: Schedule, day: date) -> bool:
    if schedule.interval == IntervalType.WEEKLY:
        return (day.weekday() + 1) % 7 + 1 == schedule.day  # Monday=0 -> 2, Sunday=6 -> 1
    if schedule.interval == IntervalType.MONTHLY:
        return day.day == schedule.day
    return True


def next_run(schedule: Schedule, tz: ZoneInfo, after: datetime) -> datetime:
    """The first run strictly after ``after`` (an aware time), as UTC."""
    after = after.astimezone(timezone.utc)
    if schedule.interval == IntervalType.HOURLY:
        # Every real hour, at the minute the local clock shows MM (half-hour zones included);
        # stepping real minutes keeps a repeated or skipped local hour right.
        t = after.replace(second=0, microsecond=0)
        for _ in range(2 * 60 + 1):
            t += timedelta(minutes=1)
            if t.astimezone(tz).minute == schedule.minute:
                return t
        raise AssertionError("an hour always contains every minute")
    at = time(schedule.hour, schedule.minute)
    day = after.astimezone(tz).date() - timedelta(days=1)  # a skipped time may land on the next local day
    for _ in range(64):  # a monthly day 1-28 occurs within any 64 days
        if _day_matches(schedule, day):
            candidate = _to_utc(day, at, tz)
            if candidate > after:
                return candidate
        day += timedelta(days=1)
    raise AssertionError("every schedule matches within 64 days")


def retention(max_snaps: int, interval_limit: int) -> int:
    """How many of a policy's snapshots to keep: its maxsnaps, capped by snapshot.max.<interval>."""
    return max(0, min(max_snaps, interval_limit))


def interval_limit_setting(interval: IntervalType) -> str:
    return f"snapshot.max.{interval.value.lower()}"
