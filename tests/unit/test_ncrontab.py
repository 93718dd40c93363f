"""The dev host's NCRONTAB parser (devtools.host.ncrontab): forms the timer trigger accepts, next occurrences,
and expressions it must reject."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devtools.host.ncrontab import CronSchedule, IntervalSchedule, ScheduleError, parse


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # every 5 minutes, across an hour boundary
        ("0 */5 * * * *", "2024-03-01T10:58:30", ["2024-03-01T11:00:00", "2024-03-01T11:05:00"]),
        # every 2 seconds, across a minute and a year boundary
        ("*/2 * * * * *", "2024-12-31T23:59:57", ["2024-12-31T23:59:58", "2025-01-01T00:00:00"]),
        # exactly on an occurrence: the next one is strictly after it
        ("0 0 * * * *", "2024-03-01T10:00:00", ["2024-03-01T11:00:00", "2024-03-01T12:00:00"]),
        # daily at 02:30, across a day boundary
        ("0 30 2 * * *", "2024-03-01T02:30:01", ["2024-03-02T02:30:00", "2024-03-03T02:30:00"]),
        # first of each month at 09:00, across a month and a year boundary
        ("0 0 9 1 * *", "2024-11-15T00:00:00", ["2024-12-01T09:00:00", "2025-01-01T09:00:00"]),
        # weekdays at 09:30 (Friday 2024-03-01 → Monday 2024-03-04)
        ("0 30 9 * * 1-5", "2024-03-01T10:00:00", ["2024-03-04T09:30:00", "2024-03-05T09:30:00"]),
        # Sunday is 0
        ("0 0 0 * * 0", "2024-03-01T00:00:00", ["2024-03-03T00:00:00", "2024-03-10T00:00:00"]),
        # lists and ranges with a step
        ("0 0,30 8-12/2 * * *", "2024-03-01T08:45:00", ["2024-03-01T10:00:00", "2024-03-01T10:30:00"]),
        # 'a/n' runs from a to the maximum
        ("0 50/5 * * * *", "2024-03-01T10:52:00", ["2024-03-01T10:55:00", "2024-03-01T11:50:00"]),
        # day 31 skips the months that lack it
        ("0 0 0 31 * *", "2024-01-31T00:00:00", ["2024-03-31T00:00:00", "2024-05-31T00:00:00"]),
        # Feb 29 only in leap years
        ("0 0 12 29 2 *", "2024-03-01T00:00:00", ["2028-02-29T12:00:00", "2032-02-29T12:00:00"]),
        # day of month AND day of week, as NCrontab does: Friday the 13th
        ("0 0 0 13 * 5", "2024-01-01T00:00:00", ["2024-09-13T00:00:00", "2024-12-13T00:00:00"]),
        # names, case-insensitive, any prefix of the English name
        ("0 0 6 * jan-Mar MON", "2024-03-20T00:00:00", ["2024-03-25T06:00:00", "2025-01-06T06:00:00"]),
        ("0 0 6 1 * friday", "2024-01-01T00:00:00", ["2024-03-01T06:00:00", "2024-11-01T06:00:00"]),
    ],
)
def test_next_occurrences(expression: str, start: str, expected: list[str]) -> None:
    schedule = parse(expression)

    assert schedule.occurrences(at(start), 2) == [at(text) for text in expected]


def test_parsed_fields_are_exposed() -> None:
    schedule = parse("5 0 */6 1,15 * 1-5")

    assert isinstance(schedule, CronSchedule)
    assert schedule.seconds == {5}
    assert schedule.minutes == {0}
    assert schedule.hours == {0, 6, 12, 18}
    assert schedule.days == {1, 15}
    assert schedule.months == set(range(1, 13))
    assert schedule.days_of_week == {1, 2, 3, 4, 5}


def test_naive_datetimes_stay_naive_and_microseconds_are_dropped() -> None:
    assert parse("* * * * * *").next_after(datetime(2024, 1, 1, 0, 0, 0, 999_999)) == datetime(
        2024, 1, 1, 0, 0, 1
    )


def test_timespan_means_every_that_long() -> None:
    schedule = parse("01:30:00")

    assert isinstance(schedule, IntervalSchedule)
    assert schedule.interval == timedelta(hours=1, minutes=30)
    assert schedule.next_after(at("2024-03-01T10:00:00")) == at("2024-03-01T11:30:00")
    assert parse("1.00:00:00").next_after(at("2024-03-01T10:00:00")) == at("2024-03-02T10:00:00")


@pytest.mark.parametrize(
    ("expression", "complaint"),
    [
        ("0 */5 * * *", "has 5 fields, expected 6 (NCRONTAB has a leading seconds field"),
        ("0 0 0 * * * *", "has 7 fields"),
        ("", "empty"),
        ("60 * * * * *", "second field '60' has 60, outside 0-59"),
        ("* 60 * * * *", "minute field"),
        ("* * 24 * * *", "hour field '24' has 24, outside 0-23"),
        ("* * * 0 * *", "day field '0' has 0, outside 1-31"),
        ("* * * * 13 *", "month field"),
        ("* * * * * 7", "day-of-week field '7' has 7, outside 0-6"),
        ("*/0 * * * * *", "invalid step"),
        ("*/x * * * * *", "invalid step"),
        ("5-1 * * * * *", "backwards range"),
        ("1,,2 * * * * *", "empty list item"),
        ("? * * * * *", "not a number"),
        ("0 0 0 L * *", "not a number"),
        ("0 0 0 * * MON#2", "not a number or a name"),
        ("0 0 0 * foo *", "not a number or a name"),
        ("every five minutes", "has 3 fields"),
        ("0 0 0 30 2 *", "never fires"),
        ("%SCHEDULE%", "unresolved app setting"),
        ("25:00:00", "out of range"),
        ("00:00:00", "longer than zero"),
        ("12:xx:00", "neither six NCRONTAB fields nor a TimeSpan"),
    ],
)
def test_invalid_expressions_are_rejected_with_a_reason(expression: str, complaint: str) -> None:
    with pytest.raises(ScheduleError) as error:
        parse(expression)

    assert complaint in str(error.value)


def test_schedule_error_is_a_value_error() -> None:
    assert issubclass(ScheduleError, ValueError)
