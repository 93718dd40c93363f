"""The dev host's timer schedules: the NCRONTAB parser (devtools.host.ncrontab) — forms the timer trigger
accepts, next occurrences, expressions it must reject — and the schedule monitor's rules
(devtools.host.schedule_monitor): which timers are monitored, when a timer is past due at startup, what is
recorded after a run, and the state file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devtools.host.ncrontab import CronSchedule, IntervalSchedule, ScheduleError, monitor_disabled, parse
from devtools.host.schedule_monitor import (
    ScheduleStatus,
    TimerStateStore,
    check_past_due,
    status_after_run,
)


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


# -- schedule monitor ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "now", "disabled"),
    [
        # the timer extension's own test cases (ShouldDisableScheduleMonitor_ReturnsExpectedValue)
        ("* * * * * *", None, True),
        ("*/5 * * * * *", None, True),
        ("  */5    * *      * * *", None, True),
        ("10,20,45 * * * * *", None, True),
        ("0 */5 * * * *", None, False),
        ("0 30 * * * *", None, False),
        ("* 30 * * * *", None, False),
        ("* */30 * * * *", None, False),
        ("0 * * * * *", None, False),
        ("30 * * * * *", None, False),
        ("* 1-5 * * * *", None, False),
        ("* */20 * * * *", "2020-10-30T00:00:00", False),
        ("* */20 * * * *", "2020-10-30T00:20:00", False),
        ("* */20 * * * *", "2020-10-30T00:15:00", False),
        ("* */20 * * * *", "2020-10-30T00:19:30", False),
        ("* * 12 * * Mon", None, False),
        ("* 59 11 * * 1,2,3,4,5", None, False),
        # a step of 1 is a wildcard too; TimeSpans under a minute are not monitored
        ("*/30 * */1 * * *", "2024-03-01T10:00:10", True),
        ("00:00:30", None, True),
        ("00:01:00", None, False),
    ],
)
def test_sub_minute_schedules_are_not_monitored(expression: str, now: str | None, disabled: bool) -> None:
    moment = at(now) if now else datetime.now(UTC)

    assert monitor_disabled(parse(expression), moment) is disabled


HOURLY = parse("0 0 * * * *")


def test_first_start_records_the_next_occurrence_and_is_not_past_due() -> None:
    status, write, late = check_past_due(None, HOURLY, at("2024-03-01T10:20:00"))

    assert status == ScheduleStatus(None, at("2024-03-01T11:00:00"), at("2024-03-01T10:20:00"))
    assert write is True
    assert late == timedelta(0)


def test_a_stored_next_in_the_past_is_past_due_by_that_much() -> None:
    stored = ScheduleStatus(at("2024-03-01T09:00:00"), at("2024-03-01T10:00:00"), at("2024-03-01T09:00:00"))

    status, write, late = check_past_due(stored, HOURLY, at("2024-03-01T12:30:00"))

    assert (status, write, late) == (stored, False, timedelta(hours=2, minutes=30))


def test_a_stored_next_in_the_future_is_not_past_due() -> None:
    stored = ScheduleStatus(at("2024-03-01T09:00:00"), at("2024-03-01T10:00:00"), at("2024-03-01T09:00:00"))

    assert check_past_due(stored, HOURLY, at("2024-03-01T09:59:59")) == (stored, False, timedelta(0))


def test_a_changed_schedule_is_recomputed_from_now_and_does_not_count_as_missed() -> None:
    # recorded under "every hour"; the schedule is now daily at 09:30, which would have been due at 09:30
    stored = ScheduleStatus(at("2024-03-01T07:00:00"), at("2024-03-01T08:00:00"), at("2024-03-01T07:00:00"))

    status, write, late = check_past_due(stored, parse("0 30 9 * * *"), at("2024-03-01T12:00:00"))

    assert status == ScheduleStatus(None, at("2024-03-02T09:30:00"), at("2024-03-01T12:00:00"))
    assert (write, late) == (True, timedelta(0))


def test_a_changed_schedule_whose_next_is_still_ahead_keeps_counting_from_the_last_run() -> None:
    stored = ScheduleStatus(at("2024-03-01T07:00:00"), at("2024-03-01T08:00:00"), at("2024-03-01T07:00:00"))

    status, write, late = check_past_due(stored, parse("0 30 7 * * *"), at("2024-03-01T07:10:00"))

    assert status == ScheduleStatus(None, at("2024-03-01T07:30:00"), at("2024-03-01T07:00:00"))
    assert (write, late) == (True, timedelta(0))


def test_a_status_without_last_counts_from_last_updated() -> None:
    stored = ScheduleStatus(None, at("2024-03-01T10:00:00"), at("2024-03-01T09:20:00"))

    assert check_past_due(stored, HOURLY, at("2024-03-01T10:00:01")) == (stored, False, timedelta(seconds=1))


def test_after_a_run_next_counts_from_the_run_or_from_the_occurrence_if_it_fired_early() -> None:
    previous = ScheduleStatus(None, at("2024-03-01T10:00:00"), at("2024-03-01T09:20:00"))
    early = at("2024-03-01T09:59:59")

    on_time = status_after_run(HOURLY, at("2024-03-01T10:00:00"), previous, scheduled=True)
    fired_early = status_after_run(HOURLY, early, previous, scheduled=True)
    past_due = status_after_run(HOURLY, early, previous, scheduled=False)

    assert on_time == ScheduleStatus(
        at("2024-03-01T10:00:00"), at("2024-03-01T11:00:00"), at("2024-03-01T10:00:00")
    )
    assert fired_early == on_time
    assert past_due == ScheduleStatus(early, at("2024-03-01T10:00:00"), early)


def test_state_store_keeps_other_timers_and_round_trips(tmp_path: Path) -> None:
    store = TimerStateStore(tmp_path)
    (tmp_path / "timers.json").write_text(json.dumps({"other_app_timer": {"next": "2024-01-01T00:00:00Z"}}))
    status = ScheduleStatus(at("2024-03-01T10:00:00"), at("2024-03-01T11:00:00"), at("2024-03-01T10:00:00"))

    store.put("hourly", status)

    assert store.get("hourly") == status
    assert store.get("missing") is None
    document = json.loads((tmp_path / "timers.json").read_text())
    assert document["hourly"] == {
        "last": "2024-03-01T10:00:00+00:00",
        "next": "2024-03-01T11:00:00+00:00",
        "lastUpdated": "2024-03-01T10:00:00+00:00",
    }
    assert document["other_app_timer"] == {"next": "2024-01-01T00:00:00Z"}
    assert [path.name for path in tmp_path.iterdir()] == ["timers.json"]  # no temporary file left behind


def test_state_store_reads_times_without_offset_as_utc_and_ignores_bad_entries(tmp_path: Path) -> None:
    (tmp_path / "timers.json").write_text(
        json.dumps(
            {"plain": {"last": "2024-03-01T10:00:00", "next": "2024-03-01T11:00:00"}, "bad": {"last": 1}}
        )
    )
    store = TimerStateStore(tmp_path)

    assert store.get("plain") == ScheduleStatus(at("2024-03-01T10:00:00"), at("2024-03-01T11:00:00"), None)
    assert store.get("bad") is None


def test_state_store_starts_afresh_from_a_corrupt_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "timers.json").write_text("{not json")
    store = TimerStateStore(tmp_path)
    status = ScheduleStatus(None, at("2024-03-01T11:00:00"), at("2024-03-01T10:20:00"))

    assert store.get("hourly") is None
    store.put("hourly", status)

    assert store.get("hourly") == status
    assert "is not valid JSON" in caplog.text


def test_function_sees_the_schedule_status_as_the_worker_passes_it() -> None:
    assert ScheduleStatus(None, at("2024-03-01T11:00:00"), at("2024-03-01T10:20:00")).for_function() == {
        "Last": "0001-01-01T00:00:00",
        "Next": "2024-03-01T11:00:00+00:00",
        "LastUpdated": "2024-03-01T10:20:00+00:00",
    }
