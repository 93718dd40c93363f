"""NCRONTAB schedules as the Azure Functions timer trigger reads them. Pure: no I/O, no clock.

Two forms are accepted:

* six fields, seconds first: ``sec min hour day month day-of-week``, e.g. ``0 */5 * * * *``. Each field is
  ``*``, a value, a range ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (from ``a`` to the field's maximum),
  or a comma-separated list of those. Months and days of week may be given by English name or a prefix of
  it (``Jan``, ``MON``, ``friday``; case-insensitive); day of week is 0-6 with 0 = Sunday. As in NCrontab,
  a day must match both the day-of-month and the day-of-week field (``0 0 0 13 * FRI`` is every Friday
  the 13th).
* a TimeSpan ``[d.]hh:mm:ss``, meaning "every that long" (the runtime allows it on App Service plans only).

``parse`` raises ``ScheduleError`` (a ``ValueError``) with a message that says what is wrong. Times are wall
clock times in the time zone of the datetime given to ``next_after`` (the runtime's default is UTC).
"""

from __future__ import annotations

import abc
import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["CronSchedule", "IntervalSchedule", "Schedule", "ScheduleError", "monitor_disabled", "parse"]


class ScheduleError(ValueError):
    """The expression is not a valid NCRONTAB schedule (or TimeSpan)."""


class Schedule(abc.ABC):
    """A parsed schedule: knows its next occurrence after any instant."""

    expression: str

    @abc.abstractmethod
    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (same tzinfo as ``moment``)."""

    def occurrences(self, start: datetime, count: int) -> list[datetime]:
        """The next ``count`` occurrences after ``start``."""
        found: list[datetime] = []
        moment = start
        for _ in range(count):
            moment = self.next_after(moment)
            found.append(moment)
        return found


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


# Full English names; as in NCrontab any prefix selects the first name it starts (``Fri``, ``friday``).
_MONTHS = "JANUARY FEBRUARY MARCH APRIL MAY JUNE JULY AUGUST SEPTEMBER OCTOBER NOVEMBER DECEMBER"
_DAYS = "SUNDAY MONDAY TUESDAY WEDNESDAY THURSDAY FRIDAY SATURDAY"
_MONTH_NAMES = {name: number for number, name in enumerate(_MONTHS.split(), start=1)}
_DAY_NAMES = {name: number for number, name in enumerate(_DAYS.split())}

_FIELDS = (
    _Field("second", 0, 59, {}),
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day", 1, 31, {}),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day-of-week", 0, 6, _DAY_NAMES),
)

# Feb 29 may fall on a required weekday only once in 28 years; no valid schedule waits longer.
_SEARCH_DAYS = 366 * 29

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?$")


@dataclass(frozen=True)
class CronSchedule(Schedule):
    """A six-field NCRONTAB schedule; each attribute is the set of values its field allows."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]

    def next_after(self, moment: datetime) -> datetime:
        start = moment.replace(microsecond=0) + timedelta(seconds=1)
        day = start.replace(hour=0, minute=0, second=0)
        first_day = True
        for _ in range(_SEARCH_DAYS):
            if day.month not in self.months:
                day = _first_of_next_month(day)
                first_day = False
                continue
            # Python's weekday() is Monday=0; NCRONTAB's is Sunday=0.
            if day.day in self.days and (day.weekday() + 1) % 7 in self.days_of_week:
                found = self._first_time_of_day(day, start if first_day else None)
                if found is not None:
                    return found
            day = _next_day(day)
            first_day = False
        raise ScheduleError(f"schedule {self.expression!r} has no occurrence after {moment.isoformat()}")

    def _first_time_of_day(self, day: datetime, not_before: datetime | None) -> datetime | None:
        """The first allowed time on ``day``, at or after ``not_before`` when that is on the same day."""
        floor = (not_before.hour, not_before.minute, not_before.second) if not_before else (0, 0, 0)
        for hour in sorted(self.hours):
            if hour < floor[0]:
                continue
            for minute in sorted(self.minutes):
                if (hour, minute) < floor[:2]:
                    continue
                for second in sorted(self.seconds):
                    if (hour, minute, second) >= floor:
                        return day.replace(hour=hour, minute=minute, second=second)
        return None


@dataclass(frozen=True)
class IntervalSchedule(Schedule):
    """A TimeSpan schedule: every ``interval``, counted from the previous occurrence."""

    expression: str
    interval: timedelta

    def next_after(self, moment: datetime) -> datetime:
        return moment + self.interval


def monitor_disabled(schedule: Schedule, now: datetime) -> bool:
    """Whether the runtime turns the schedule monitor off for ``schedule`` because it fires more often than
    once a minute (the timer extension's ``ShouldDisableScheduleMonitor``).

    A TimeSpan under one minute qualifies. A cron schedule qualifies only when every field but the seconds
    allows all its values and more than one occurrence falls within the minute after ``now``: so
    ``*/5 * * * * *`` does, ``0 * * * * *`` and ``* 1-5 * * * *`` do not.
    """
    if isinstance(schedule, IntervalSchedule):
        return schedule.interval < timedelta(minutes=1)
    if not isinstance(schedule, CronSchedule):
        return False
    wildcards = [
        (schedule.minutes, _FIELDS[1]),
        (schedule.hours, _FIELDS[2]),
        (schedule.days, _FIELDS[3]),
        (schedule.months, _FIELDS[4]),
        (schedule.days_of_week, _FIELDS[5]),
    ]
    if any(values != frozenset(range(field.low, field.high + 1)) for values, field in wildcards):
        return False
    first = schedule.next_after(now)
    return schedule.next_after(first) < now + timedelta(minutes=1)


def parse(expression: str) -> Schedule:
    """Parse an NCRONTAB expression (six fields) or a TimeSpan (``hh:mm:ss``).

    Raises ScheduleError naming the offending field and value. App-setting references (``%NAME%``) must be
    resolved by the caller first.
    """
    if not isinstance(expression, str):
        raise ScheduleError(f"schedule must be a string, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise ScheduleError("schedule is empty")
    if "%" in text:
        raise ScheduleError(f"schedule {expression!r} contains an unresolved app setting reference (%NAME%)")
    if ":" in text and " " not in text:
        return _parse_timespan(expression, text)
    parts = text.split()
    if len(parts) != len(_FIELDS):
        hint = " (NCRONTAB has a leading seconds field: 'sec min hour day month day-of-week')"
        raise ScheduleError(
            f"schedule {expression!r} has {len(parts)} fields, expected {len(_FIELDS)}"
            + (hint if len(parts) == 5 else "")
        )
    values = [_parse_field(part, field, expression) for part, field in zip(parts, _FIELDS, strict=True)]
    seconds, minutes, hours, days, months, days_of_week = values
    if not any(day <= _max_days(month) for month in months for day in days):
        raise ScheduleError(
            f"schedule {expression!r} never fires: no allowed day exists in the allowed months"
        )
    return CronSchedule(expression, seconds, minutes, hours, days, months, days_of_week)


def _parse_timespan(expression: str, text: str) -> IntervalSchedule:
    match = _TIMESPAN.match(text)
    if not match:
        raise ScheduleError(
            f"schedule {expression!r} is neither six NCRONTAB fields nor a TimeSpan [d.]hh:mm:ss"
        )
    days, hours, minutes, seconds = (int(group) if group else 0 for group in match.groups())
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ScheduleError(f"TimeSpan schedule {expression!r} is out of range (hh < 24, mm < 60, ss < 60)")
    interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if interval <= timedelta(0):
        raise ScheduleError(f"TimeSpan schedule {expression!r} must be longer than zero")
    return IntervalSchedule(expression, interval)


def _parse_field(text: str, field: _Field, expression: str) -> frozenset[int]:
    allowed: set[int] = set()
    if "" in text.split(","):
        raise ScheduleError(f"schedule {expression!r}: {field.name} field {text!r} has an empty list item")
    for item in text.split(","):
        allowed.update(_parse_item(item, field, expression))
    return frozenset(allowed)


def _parse_item(item: str, field: _Field, expression: str) -> range:
    def fail(why: str) -> ScheduleError:
        return ScheduleError(f"schedule {expression!r}: {field.name} field {item!r} {why}")

    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise fail("has an invalid step (expected a positive integer after '/')")
        step = int(step_text)
    if base == "*":
        low, high = field.low, field.high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(first, field, fail), _value(last, field, fail)
        if low > high:
            raise fail(f"is a backwards range ({low} > {high})")
    else:
        low = _value(base, field, fail)
        # 'a/n' runs from a to the field's maximum, as in NCrontab.
        high = field.high if slash else low
    return range(low, high + 1, step)


def _value(text: str, field: _Field, fail: Callable[[str], ScheduleError]) -> int:
    named = [number for name, number in field.names.items() if text and name.startswith(text.upper())]
    if text.isdigit():
        number = int(text)
    elif named:
        number = min(named)
    else:
        raise fail(f"has {text!r}, which is not a number" + (" or a name" if field.names else ""))
    if not field.low <= number <= field.high:
        raise fail(f"has {number}, outside {field.low}-{field.high}")
    return number


def _max_days(month: int) -> int:
    return 29 if month == 2 else calendar.monthrange(2001, month)[1]


def _next_day(day: datetime) -> datetime:
    # Add calendar days on the wall clock, whatever the tzinfo.
    return datetime.combine(day.date() + timedelta(days=1), day.time(), tzinfo=day.tzinfo)


def _first_of_next_month(day: datetime) -> datetime:
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return day.replace(year=year, month=month, day=1)
