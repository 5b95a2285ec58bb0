"""Calendar math of limit periods and report windows (SPEC §3: Limits, Periods for reads).

Expected values in the tables are worked out by hand from the calendar (weekdays, month lengths,
leap years), never taken from the code under test. The Hypothesis properties check the
invariants that must hold for every moment in 2000–2100 and every timezone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carnil_analytics.periods import (
    HOURLY_RANGE_MAX,
    LimitPeriod,
    ReportPeriod,
    Resolution,
    Window,
    add_months,
    anchored_window,
    calendar_window,
    limit_window,
    range_window,
    report_window,
)

DAILY, WEEKLY, MONTHLY = LimitPeriod.DAILY, LimitPeriod.WEEKLY, LimitPeriod.MONTHLY
DAY, WEEK = timedelta(days=1), timedelta(weeks=1)
FIXED_LENGTH = {DAILY: DAY, WEEKLY: WEEK}
IST = timezone(timedelta(hours=5, minutes=30))  # +05:30
NEW_YORK, CHICAGO = ZoneInfo("America/New_York"), ZoneInfo("America/Chicago")
EST = timezone(timedelta(hours=-5))  # -05:00


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# 14:37:12.5 — a reset time in the middle of a day, with a fractional second.
MIDDAY = (14, 37, 12, 500_000)


def mid(year: int, month: int, day: int) -> datetime:
    """``year-month-day`` at 14:37:12.5 UTC."""
    return utc(year, month, day, *MIDDAY)


def is_utc(moment: datetime) -> bool:
    return moment.utcoffset() == timedelta(0)


def is_midnight(moment: datetime) -> bool:
    return (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)


# --------------------------------------------------------------------------------------------
# calendar_window
# --------------------------------------------------------------------------------------------

CALENDAR_CASES = [
    # UTC day
    (DAILY, utc(2026, 3, 18, 12), utc(2026, 3, 18), utc(2026, 3, 19)),
    (DAILY, utc(2026, 3, 18), utc(2026, 3, 18), utc(2026, 3, 19)),
    (DAILY, utc(2026, 3, 18, 23, 59, 59, 999_999), utc(2026, 3, 18), utc(2026, 3, 19)),
    (DAILY, utc(2026, 2, 28, 6), utc(2026, 2, 28), utc(2026, 3, 1)),
    (DAILY, utc(2028, 2, 28, 6), utc(2028, 2, 28), utc(2028, 2, 29)),
    (DAILY, utc(2026, 12, 31, 23), utc(2026, 12, 31), utc(2027, 1, 1)),
    # ISO week from Monday 00:00 UTC
    (WEEKLY, utc(2026, 3, 18, 12), utc(2026, 3, 16), utc(2026, 3, 23)),  # Wednesday
    (WEEKLY, utc(2026, 3, 1, 23, 59, 59), utc(2026, 2, 23), utc(2026, 3, 2)),  # Sunday, last second
    (WEEKLY, utc(2026, 3, 1, 23, 59, 59, 999_999), utc(2026, 2, 23), utc(2026, 3, 2)),
    (WEEKLY, utc(2026, 3, 2), utc(2026, 3, 2), utc(2026, 3, 9)),  # Monday 00:00:00
    (WEEKLY, utc(2026, 12, 31, 8), utc(2026, 12, 28), utc(2027, 1, 4)),  # Thursday, year end
    (WEEKLY, utc(2027, 1, 1), utc(2026, 12, 28), utc(2027, 1, 4)),  # Friday, new year
    (WEEKLY, utc(2027, 1, 3, 23, 59, 59), utc(2026, 12, 28), utc(2027, 1, 4)),  # Sunday
    (WEEKLY, utc(2027, 1, 4), utc(2027, 1, 4), utc(2027, 1, 11)),  # Monday
    (WEEKLY, utc(2028, 2, 29, 12), utc(2028, 2, 28), utc(2028, 3, 6)),  # leap day, Tuesday
    # calendar month
    (MONTHLY, utc(2026, 1, 31, 15), utc(2026, 1, 1), utc(2026, 2, 1)),
    (MONTHLY, utc(2026, 1, 1), utc(2026, 1, 1), utc(2026, 2, 1)),
    (MONTHLY, utc(2028, 2, 29, 12), utc(2028, 2, 1), utc(2028, 3, 1)),
    (MONTHLY, utc(2027, 2, 28, 23, 59, 59), utc(2027, 2, 1), utc(2027, 3, 1)),
    (MONTHLY, utc(2027, 2, 28, 23, 59, 59, 999_999), utc(2027, 2, 1), utc(2027, 3, 1)),
    (MONTHLY, utc(2027, 3, 1), utc(2027, 3, 1), utc(2027, 4, 1)),
    (MONTHLY, utc(2026, 4, 30, 22), utc(2026, 4, 1), utc(2026, 5, 1)),
    (MONTHLY, utc(2026, 12, 15), utc(2026, 12, 1), utc(2027, 1, 1)),
    (MONTHLY, utc(2026, 12, 31, 23, 59, 59), utc(2026, 12, 1), utc(2027, 1, 1)),
]


@pytest.mark.parametrize(("period", "now", "start", "end"), CALENDAR_CASES)
def test_calendar_window(period, now, start, end):
    window = calendar_window(period, now)
    assert (window.start, window.end) == (start, end)
    assert is_utc(window.start) and is_utc(window.end)
    assert now in window


@pytest.mark.parametrize(("period", "now", "start", "end"), CALENDAR_CASES)
def test_limit_window_without_reset_at_is_the_calendar_window(period, now, start, end):
    assert limit_window(period, now) == Window(start, end)
    assert limit_window(period, now, None) == Window(start, end)


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        # 2026-03-19 03:00 +05:30 is 2026-03-18 21:30 UTC: still the 18th.
        (DAILY, datetime(2026, 3, 19, 3, tzinfo=IST), utc(2026, 3, 18), utc(2026, 3, 19)),
        # 2026-03-18 20:00 -05:00 is 2026-03-19 01:00 UTC: already the 19th.
        (DAILY, datetime(2026, 3, 18, 20, tzinfo=EST), utc(2026, 3, 19), utc(2026, 3, 20)),
        # Monday 2026-03-02 03:00 +05:30 is Sunday 21:30 UTC: the previous ISO week.
        (WEEKLY, datetime(2026, 3, 2, 3, tzinfo=IST), utc(2026, 2, 23), utc(2026, 3, 2)),
        # Sunday 2026-03-01 20:00 -05:00 is Monday 01:00 UTC: the next ISO week.
        (WEEKLY, datetime(2026, 3, 1, 20, tzinfo=EST), utc(2026, 3, 2), utc(2026, 3, 9)),
        # 2026-04-01 02:00 +05:30 is 2026-03-31 20:30 UTC: still March.
        (MONTHLY, datetime(2026, 4, 1, 2, tzinfo=IST), utc(2026, 3, 1), utc(2026, 4, 1)),
        # 2026-12-31 22:00 -05:00 is 2027-01-01 03:00 UTC: already January.
        (MONTHLY, datetime(2026, 12, 31, 22, tzinfo=EST), utc(2027, 1, 1), utc(2027, 2, 1)),
    ],
)
def test_calendar_window_converts_aware_inputs_to_utc_first(period, now, start, end):
    for window in (calendar_window(period, now), limit_window(period, now)):
        assert (window.start, window.end) == (start, end)
        assert is_utc(window.start) and is_utc(window.end)
        assert now in window


def test_window_is_half_open():
    window = Window(utc(2026, 3, 18), utc(2026, 3, 19))
    assert utc(2026, 3, 18) in window
    assert utc(2026, 3, 18, 23, 59, 59, 999_999) in window
    assert utc(2026, 3, 19) not in window
    assert utc(2026, 3, 17, 23, 59, 59, 999_999) not in window
    # Membership compares instants, whatever the timezone of the moment.
    assert datetime(2026, 3, 19, 5, 29, tzinfo=IST) in window
    assert datetime(2026, 3, 19, 5, 30, tzinfo=IST) not in window


# --------------------------------------------------------------------------------------------
# add_months
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "months", "expected"),
    [
        (utc(2026, 1, 15), 0, utc(2026, 1, 15)),
        (utc(2026, 1, 15), 1, utc(2026, 2, 15)),
        (utc(2026, 1, 31), 1, utc(2026, 2, 28)),  # clamped, common year
        (utc(2028, 1, 31), 1, utc(2028, 2, 29)),  # clamped, leap year
        (utc(2026, 1, 31), 2, utc(2026, 3, 31)),  # from the anchor: no drift to the 28th
        (utc(2026, 5, 31), 1, utc(2026, 6, 30)),
        (utc(2026, 3, 31), -1, utc(2026, 2, 28)),
        (utc(2028, 3, 31), -1, utc(2028, 2, 29)),
        (utc(2026, 3, 30), -1, utc(2026, 2, 28)),
        (utc(2026, 1, 15), 12, utc(2027, 1, 15)),  # + 12 months keeps the day
        (utc(2026, 1, 31), 12, utc(2027, 1, 31)),
        (utc(2028, 2, 29), 12, utc(2029, 2, 28)),  # leap day clamped in a common year
        (utc(2028, 2, 29), 48, utc(2032, 2, 29)),  # ... and kept in the next leap year
        (utc(2026, 12, 31), 1, utc(2027, 1, 31)),  # Dec -> Jan
        (utc(2026, 11, 30), 1, utc(2026, 12, 30)),
        (utc(2026, 12, 15), 13, utc(2028, 1, 15)),
        (utc(2026, 1, 10), -1, utc(2025, 12, 10)),  # Jan -> Dec of the previous year
        (utc(2026, 2, 15), -3, utc(2025, 11, 15)),
        (utc(2026, 3, 31), -13, utc(2025, 2, 28)),
        (utc(2026, 1, 15), -12, utc(2025, 1, 15)),
        (utc(2026, 1, 15), -24, utc(2024, 1, 15)),
        (utc(2026, 1, 15), -25, utc(2023, 12, 15)),
    ],
)
def test_add_months(anchor, months, expected):
    assert add_months(anchor, months) == expected


def test_add_months_keeps_time_of_day_and_timezone():
    anchor = datetime(2026, 1, 31, *MIDDAY, tzinfo=IST)
    moved = add_months(anchor, 1)
    assert moved == datetime(2026, 2, 28, *MIDDAY, tzinfo=IST)
    assert moved.tzinfo is IST


# --------------------------------------------------------------------------------------------
# anchored_window / limit_window with reset_at
# --------------------------------------------------------------------------------------------

RESET_MIDDAY = mid(2026, 3, 18)
ANCHORED_CASES = [
    # daily, mid-day reset: before reset_at the period is [reset_at - 1 day, reset_at)
    (DAILY, RESET_MIDDAY, utc(2026, 3, 18, 9), mid(2026, 3, 17), RESET_MIDDAY),
    (DAILY, RESET_MIDDAY, mid(2026, 3, 17), mid(2026, 3, 17), RESET_MIDDAY),
    (
        DAILY,
        RESET_MIDDAY,
        RESET_MIDDAY - timedelta(microseconds=1),
        mid(2026, 3, 17),
        RESET_MIDDAY,
    ),
    # now == reset_at rolls over
    (DAILY, RESET_MIDDAY, RESET_MIDDAY, RESET_MIDDAY, mid(2026, 3, 19)),
    # now past reset_at: advanced by whole days
    (DAILY, RESET_MIDDAY, utc(2026, 3, 21, 15), mid(2026, 3, 21), mid(2026, 3, 22)),
    (DAILY, RESET_MIDDAY, utc(2026, 3, 21, 14), mid(2026, 3, 20), mid(2026, 3, 21)),
    # reset_at far in the future: still the period that contains now
    (
        DAILY,
        mid(2027, 6, 1),
        utc(2026, 3, 18, 9),
        mid(2026, 3, 17),
        mid(2026, 3, 18),
    ),
    # reset_at far in the past
    (DAILY, utc(2001, 1, 1, 6), utc(2026, 3, 18, 5), utc(2026, 3, 17, 6), utc(2026, 3, 18, 6)),
    # weekly, reset on Wednesday 2026-03-18 06:00
    (WEEKLY, utc(2026, 3, 18, 6), utc(2026, 3, 16), utc(2026, 3, 11, 6), utc(2026, 3, 18, 6)),
    (WEEKLY, utc(2026, 3, 18, 6), utc(2026, 3, 18, 6), utc(2026, 3, 18, 6), utc(2026, 3, 25, 6)),
    (WEEKLY, utc(2026, 3, 18, 6), utc(2026, 4, 2), utc(2026, 4, 1, 6), utc(2026, 4, 8, 6)),
    (WEEKLY, utc(2026, 12, 30), utc(2027, 1, 8), utc(2027, 1, 6), utc(2027, 1, 13)),
    # 2020-01-01 is a Wednesday, as is 2026-03-18
    (WEEKLY, utc(2020, 1, 1), utc(2026, 3, 18, 12), utc(2026, 3, 18), utc(2026, 3, 25)),
    (WEEKLY, utc(2020, 1, 1), utc(2026, 3, 17, 23), utc(2026, 3, 11), utc(2026, 3, 18)),
    (WEEKLY, utc(2031, 1, 1), utc(2026, 3, 18, 12), utc(2026, 3, 18), utc(2026, 3, 25)),  # future
    (WEEKLY, RESET_MIDDAY, utc(2026, 3, 25, 14), RESET_MIDDAY, mid(2026, 3, 25)),
    # monthly, reset on the 15th at 10:00
    (MONTHLY, utc(2026, 3, 15, 10), utc(2026, 3, 1), utc(2026, 2, 15, 10), utc(2026, 3, 15, 10)),
    (
        MONTHLY,
        utc(2026, 3, 15, 10),
        utc(2026, 3, 15, 10),
        utc(2026, 3, 15, 10),
        utc(2026, 4, 15, 10),
    ),
    (MONTHLY, utc(2026, 3, 15, 10), utc(2026, 5, 20), utc(2026, 5, 15, 10), utc(2026, 6, 15, 10)),
    (
        MONTHLY,
        utc(2026, 3, 15, 10),
        utc(2026, 5, 15, 9),
        utc(2026, 4, 15, 10),
        utc(2026, 5, 15, 10),
    ),
    (MONTHLY, utc(2026, 12, 15, 8), utc(2027, 1, 20), utc(2027, 1, 15, 8), utc(2027, 2, 15, 8)),
    (MONTHLY, utc(2027, 1, 15, 8), utc(2026, 12, 20), utc(2026, 12, 15, 8), utc(2027, 1, 15, 8)),
    # previous month clamped: [Feb 28, Mar 31)
    (MONTHLY, utc(2026, 3, 31), utc(2026, 3, 10), utc(2026, 2, 28), utc(2026, 3, 31)),
    # monthly anchored on the 31st: Jan 31 -> Feb 28 -> Mar 31 -> Apr 30 -> May 31
    (MONTHLY, utc(2026, 1, 31), utc(2026, 2, 10), utc(2026, 1, 31), utc(2026, 2, 28)),
    (MONTHLY, utc(2026, 1, 31), utc(2026, 2, 28), utc(2026, 2, 28), utc(2026, 3, 31)),
    (MONTHLY, utc(2026, 1, 31), utc(2026, 3, 30), utc(2026, 2, 28), utc(2026, 3, 31)),
    (MONTHLY, utc(2026, 1, 31), utc(2026, 3, 31), utc(2026, 3, 31), utc(2026, 4, 30)),
    (MONTHLY, utc(2026, 1, 31), utc(2026, 4, 30, 12), utc(2026, 4, 30), utc(2026, 5, 31)),
    (MONTHLY, utc(2026, 1, 31), utc(2027, 2, 1), utc(2027, 1, 31), utc(2027, 2, 28)),
    (MONTHLY, utc(2028, 1, 31), utc(2028, 2, 29), utc(2028, 2, 29), utc(2028, 3, 31)),
    (MONTHLY, utc(2030, 1, 31), utc(2026, 3, 5), utc(2026, 2, 28), utc(2026, 3, 31)),  # future
    (MONTHLY, utc(2020, 8, 31), utc(2026, 3, 5), utc(2026, 2, 28), utc(2026, 3, 31)),  # past
    # mid-day monthly anchor on the 31st
    (
        MONTHLY,
        mid(2026, 1, 31),
        utc(2026, 3, 31, 14, 37, 12, 499_999),
        mid(2026, 2, 28),
        mid(2026, 3, 31),
    ),
    (
        MONTHLY,
        mid(2026, 1, 31),
        mid(2026, 3, 31),
        mid(2026, 3, 31),
        mid(2026, 4, 30),
    ),
]


@pytest.mark.parametrize(("period", "reset_at", "now", "start", "end"), ANCHORED_CASES)
def test_anchored_window(period, reset_at, now, start, end):
    for window in (anchored_window(period, reset_at, now), limit_window(period, now, reset_at)):
        assert (window.start, window.end) == (start, end)
        assert is_utc(window.start) and is_utc(window.end)
        assert now in window


@pytest.mark.parametrize("period", list(LimitPeriod))
def test_reset_at_in_the_future_gives_the_period_ending_at_reset_at(period):
    reset_at = mid(2026, 3, 31)
    previous = {
        DAILY: mid(2026, 3, 30),
        WEEKLY: mid(2026, 3, 24),
        MONTHLY: mid(2026, 2, 28),  # same day-time of February, clamped
    }[period]
    for now in (previous, reset_at - timedelta(microseconds=1)):
        assert limit_window(period, now, reset_at) == Window(previous, reset_at)


@pytest.mark.parametrize("period", list(LimitPeriod))
def test_now_equal_to_reset_at_rolls_over(period):
    reset_at = mid(2026, 1, 31)
    following = {
        DAILY: mid(2026, 2, 1),
        WEEKLY: mid(2026, 2, 7),
        MONTHLY: mid(2026, 2, 28),
    }[period]
    before = limit_window(period, reset_at - timedelta(microseconds=1), reset_at)
    at = limit_window(period, reset_at, reset_at)
    assert before.end == reset_at
    assert at == Window(reset_at, following)
    assert reset_at not in before and reset_at in at


def test_monthly_anchor_on_31st_does_not_drift():
    reset_at = utc(2026, 1, 31, 9)
    ends = []
    now = reset_at
    for _ in range(12):
        window = limit_window(MONTHLY, now, reset_at)
        ends.append(window.end)
        now = window.end  # step into the next period
    assert [end.day for end in ends] == [28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31]
    assert ends[-1] == utc(2027, 1, 31, 9)
    assert all(end.hour == 9 for end in ends)


@pytest.mark.parametrize(
    ("period", "reset_at", "now", "start", "end"),
    [
        # 20:07:12.5 +05:30 is 14:37:12.5 UTC
        (
            DAILY,
            datetime(2026, 3, 18, 20, 7, 12, 500_000, tzinfo=IST),
            utc(2026, 3, 20, 9),
            mid(2026, 3, 19),
            mid(2026, 3, 20),
        ),
        # reset and now both in +05:30; the window is reported in UTC
        (
            WEEKLY,
            datetime(2026, 3, 18, 4, tzinfo=IST),
            datetime(2026, 3, 25, 3, tzinfo=IST),
            utc(2026, 3, 17, 22, 30),
            utc(2026, 3, 24, 22, 30),
        ),
        # 2026-02-01 02:00 +05:30 is 2026-01-31 20:30 UTC: the monthly anchor is the 31st (UTC)
        (
            MONTHLY,
            datetime(2026, 2, 1, 2, tzinfo=IST),
            utc(2026, 2, 15),
            utc(2026, 1, 31, 20, 30),
            utc(2026, 2, 28, 20, 30),
        ),
        (
            MONTHLY,
            datetime(2026, 2, 1, 2, tzinfo=IST),
            datetime(2026, 3, 1, 1, tzinfo=IST),  # 2026-02-28 19:30 UTC
            utc(2026, 1, 31, 20, 30),
            utc(2026, 2, 28, 20, 30),
        ),
        # The series is fixed in UTC, not in reset_at's wall clock: 10:00 EDT is 14:00 UTC, and
        # in December (EST) the reset stays at 14:00 UTC (09:00 New York time).
        (
            DAILY,
            datetime(2026, 7, 15, 10, tzinfo=NEW_YORK),
            datetime(2026, 12, 15, 8, 30, tzinfo=NEW_YORK),  # 13:30 UTC
            utc(2026, 12, 14, 14),
            utc(2026, 12, 15, 14),
        ),
    ],
)
def test_anchored_window_with_non_utc_inputs(period, reset_at, now, start, end):
    window = limit_window(period, now, reset_at)
    assert (window.start, window.end) == (start, end)
    assert is_utc(window.start) and is_utc(window.end)


# --------------------------------------------------------------------------------------------
# report_window / range_window
# --------------------------------------------------------------------------------------------

REPORT_SHAPES = {
    "day": (24, Resolution.HOUR, 1),
    "week": (7, Resolution.DAY, 7),
    "month": (30, Resolution.DAY, 30),
    "year": (365, Resolution.DAY, 365),
}


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", mid(2026, 3, 18), utc(2026, 3, 17, 15), utc(2026, 3, 18, 15)),
        ("day", utc(2026, 3, 18, 15), utc(2026, 3, 17, 16), utc(2026, 3, 18, 16)),  # on the hour
        ("day", utc(2026, 1, 1, 0, 30), utc(2025, 12, 31, 1), utc(2026, 1, 1, 1)),
        # 2026-03-19 01:15 +05:30 is 2026-03-18 19:45 UTC
        (
            "day",
            datetime(2026, 3, 19, 1, 15, tzinfo=IST),
            utc(2026, 3, 17, 20),
            utc(2026, 3, 18, 20),
        ),
        ("week", mid(2026, 3, 18), utc(2026, 3, 12), utc(2026, 3, 19)),
        ("week", utc(2026, 3, 18), utc(2026, 3, 12), utc(2026, 3, 19)),  # at midnight
        ("week", utc(2027, 1, 2, 23), utc(2026, 12, 27), utc(2027, 1, 3)),
        # 2026-03-18 20:00 -05:00 is already 2026-03-19 UTC
        ("week", datetime(2026, 3, 18, 20, tzinfo=EST), utc(2026, 3, 13), utc(2026, 3, 20)),
        ("month", mid(2026, 3, 18), utc(2026, 2, 17), utc(2026, 3, 19)),
        ("month", utc(2028, 3, 18, 1), utc(2028, 2, 18), utc(2028, 3, 19)),  # spans Feb 29
        ("year", mid(2026, 3, 18), utc(2025, 3, 19), utc(2026, 3, 19)),
        ("year", mid(2028, 3, 18), utc(2027, 3, 20), utc(2028, 3, 19)),  # 365, not 366
    ],
)
def test_report_window(period, now, start, end):
    count, resolution, days = REPORT_SHAPES[period]
    report = report_window(period, now)
    assert report.label == period
    assert (report.start, report.end) == (start, end)
    assert is_utc(report.start) and is_utc(report.end)
    assert report.resolution is resolution
    assert report.days == days
    buckets = report.buckets()
    assert len(buckets) == count
    assert buckets[0] == start
    # the bucket containing now is the last one
    assert buckets[-1] <= now < buckets[-1] + resolution.length == end


@pytest.mark.parametrize("period", list(ReportPeriod))
def test_report_window_accepts_the_enum(period):
    now = utc(2026, 3, 18, 12)
    assert report_window(period, now) == report_window(period.value, now)


@pytest.mark.parametrize("period", ["quarter", "", "Day", "daily"])
def test_report_window_rejects_unknown_periods(period):
    with pytest.raises(ValueError):
        report_window(period, utc(2026, 3, 18))


@pytest.mark.parametrize(
    ("start", "end", "resolution", "wide_start", "wide_end", "buckets"),
    [
        # hourly: floored / ceiled to the hour
        (utc(2026, 3, 18, 10, 30), utc(2026, 3, 18, 12, 15), Resolution.HOUR,
         utc(2026, 3, 18, 10), utc(2026, 3, 18, 13), 3),
        # already aligned: unchanged
        (utc(2026, 3, 18, 10), utc(2026, 3, 18, 12), Resolution.HOUR,
         utc(2026, 3, 18, 10), utc(2026, 3, 18, 12), 2),
        # exactly two days is still hourly
        (utc(2026, 3, 18, 10, 30), utc(2026, 3, 20, 10, 30), Resolution.HOUR,
         utc(2026, 3, 18, 10), utc(2026, 3, 20, 11), 49),
        (utc(2026, 3, 18), utc(2026, 3, 20), Resolution.HOUR,
         utc(2026, 3, 18), utc(2026, 3, 20), 48),
        # one microsecond more is daily
        (utc(2026, 3, 18, 10, 30), utc(2026, 3, 20, 10, 30, 0, 1), Resolution.DAY,
         utc(2026, 3, 18), utc(2026, 3, 21), 3),
        (utc(2026, 3, 1), utc(2026, 3, 8), Resolution.DAY, utc(2026, 3, 1), utc(2026, 3, 8), 7),
        (utc(2026, 12, 30, 18), utc(2027, 1, 2, 6), Resolution.DAY,
         utc(2026, 12, 30), utc(2027, 1, 3), 4),
        # 10:30 +05:30 is 05:00 UTC, 12:10 +05:30 is 06:40 UTC
        (datetime(2026, 3, 18, 10, 30, tzinfo=IST), datetime(2026, 3, 18, 12, 10, tzinfo=IST),
         Resolution.HOUR, utc(2026, 3, 18, 5), utc(2026, 3, 18, 7), 2),
        # 2026-03-18 22:00 -05:00 is 2026-03-19 03:00 UTC
        (utc(2026, 3, 15, 12), datetime(2026, 3, 18, 22, tzinfo=EST), Resolution.DAY,
         utc(2026, 3, 15), utc(2026, 3, 20), 5),
    ],
)  # fmt: skip
def test_range_window(start, end, resolution, wide_start, wide_end, buckets):
    report = range_window(start, end)
    assert report.label == "custom"
    assert report.resolution is resolution
    assert (report.start, report.end) == (wide_start, wide_end)
    assert is_utc(report.start) and is_utc(report.end)
    assert len(report.buckets()) == buckets
    assert report.days == pytest.approx((end - start) / DAY)


def test_hourly_range_limit_is_two_days():
    assert timedelta(days=2) == HOURLY_RANGE_MAX


@pytest.mark.parametrize(
    ("resolution", "moment", "floor", "ceil"),
    [
        (Resolution.HOUR, utc(2026, 3, 18, 10, 30), utc(2026, 3, 18, 10), utc(2026, 3, 18, 11)),
        (Resolution.HOUR, utc(2026, 3, 18, 10), utc(2026, 3, 18, 10), utc(2026, 3, 18, 10)),
        (Resolution.HOUR, utc(2026, 3, 18, 23, 0, 0, 1), utc(2026, 3, 18, 23), utc(2026, 3, 19)),
        (Resolution.DAY, utc(2026, 3, 18, 10, 30), utc(2026, 3, 18), utc(2026, 3, 19)),
        (Resolution.DAY, utc(2026, 3, 18), utc(2026, 3, 18), utc(2026, 3, 18)),
        (Resolution.DAY, utc(2026, 12, 31, 0, 0, 0, 1), utc(2026, 12, 31), utc(2027, 1, 1)),
        # 10:00 +05:30 is 04:30 UTC: not on a UTC hour
        (Resolution.HOUR, datetime(2026, 3, 18, 10, tzinfo=IST),
         utc(2026, 3, 18, 4), utc(2026, 3, 18, 5)),
        # 10:30 +05:30 is 05:00 UTC: on the hour, so the ceiling is itself
        (Resolution.HOUR, datetime(2026, 3, 18, 10, 30, tzinfo=IST),
         utc(2026, 3, 18, 5), utc(2026, 3, 18, 5)),
        # 05:30 +05:30 is midnight UTC
        (Resolution.DAY, datetime(2026, 3, 19, 5, 30, tzinfo=IST),
         utc(2026, 3, 19), utc(2026, 3, 19)),
    ],
)  # fmt: skip
def test_resolution_floor_and_ceil(resolution, moment, floor, ceil):
    assert resolution.floor(moment) == floor
    assert resolution.ceil(moment) == ceil
    assert is_utc(resolution.floor(moment)) and is_utc(resolution.ceil(moment))


def test_range_window_with_an_ambiguous_local_end():
    # 2026-11-01 01:00 America/Chicago (fold=0, CDT) is 06:00 UTC, on the hour.
    start = datetime(2026, 11, 1, 0, tzinfo=CHICAGO)  # 05:00 UTC
    end = datetime(2026, 11, 1, 1, tzinfo=CHICAGO)
    report = range_window(start, end)
    assert (report.start, report.end) == (utc(2026, 11, 1, 5), utc(2026, 11, 1, 6))
    assert len(report.buckets()) == 1


@pytest.mark.parametrize(
    ("resolution", "moment", "expected"),
    [
        # 01:00 CDT (fold=0) is 06:00 UTC: already on the hour, its ceiling is itself
        (Resolution.HOUR, datetime(2026, 11, 1, 1, tzinfo=CHICAGO), utc(2026, 11, 1, 6)),
        # 01:00 CST (fold=1) is 07:00 UTC
        (Resolution.HOUR, datetime(2026, 11, 1, 1, fold=1, tzinfo=CHICAGO), utc(2026, 11, 1, 7)),
    ],
)
def test_resolution_ceil_of_an_ambiguous_local_time(resolution, moment, expected):
    assert resolution.ceil(moment) == expected


# --------------------------------------------------------------------------------------------
# Hypothesis properties
# --------------------------------------------------------------------------------------------

_MAX_OFFSET_MINUTES = 23 * 60 + 59
fixed_offsets = st.integers(-_MAX_OFFSET_MINUTES, _MAX_OFFSET_MINUTES).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
zones = st.one_of(st.just(UTC), fixed_offsets, st.timezones())
aware = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 12, 31, 23, 59, 59, 999_999),
    timezones=zones,
)
periods = st.sampled_from(list(LimitPeriod))


def months_between(earlier: datetime, later: datetime) -> int:
    return (later.year - earlier.year) * 12 + (later.month - earlier.month)


def assert_period_length(period: LimitPeriod, window: Window) -> None:
    length = window.end - window.start
    if period in FIXED_LENGTH:
        assert length == FIXED_LENGTH[period]
    else:
        assert length in {timedelta(days=days) for days in (28, 29, 30, 31)}


@settings(max_examples=300, deadline=None)
@given(period=periods, now=aware, reset_at=st.none() | aware)
def test_limit_window_properties(period, now, reset_at):
    window = limit_window(period, now, reset_at)
    assert window.start <= now < window.end
    assert now in window
    assert is_utc(window.start) and is_utc(window.end)
    assert_period_length(period, window)

    if reset_at is None:
        # calendar-aligned
        assert is_midnight(window.start) and is_midnight(window.end)
        if period is WEEKLY:
            assert window.start.weekday() == 0
        if period is MONTHLY:
            assert window.start.day == 1 and window.end.day == 1
            assert months_between(window.start, window.end) == 1
        return

    # anchored: end (and start) are reachable from reset_at by whole periods
    anchor = reset_at.astimezone(UTC)
    if period in FIXED_LENGTH:
        assert (window.end - anchor) % FIXED_LENGTH[period] == timedelta(0)
    else:
        k = months_between(anchor, window.end)
        assert window.end == add_months(anchor, k)
        assert window.start == add_months(anchor, k - 1)
    if period is not WEEKLY:
        # daily and monthly resets keep the time of day of reset_at
        assert window.end.time() == anchor.time()


@settings(max_examples=200, deadline=None)
@given(period=periods, now=aware, reset_at=st.none() | aware)
def test_limit_periods_tile_time(period, now, reset_at):
    """Consecutive periods share their boundary; the boundary belongs to the later one."""
    window = limit_window(period, now, reset_at)
    assert limit_window(period, window.start, reset_at) == window
    assert limit_window(period, window.end - timedelta(microseconds=1), reset_at) == window
    following = limit_window(period, window.end, reset_at)
    assert following.start == window.end
    assert following.end > window.end
    preceding = limit_window(period, window.start - timedelta(microseconds=1), reset_at)
    assert preceding.end == window.start


@settings(deadline=None)
@given(period=st.sampled_from([DAILY, WEEKLY]), now=aware, reset_at=aware,
       shift=st.integers(-200, 200))  # fmt: skip
def test_fixed_anchor_shifted_by_whole_periods_is_the_same_series(period, now, reset_at, shift):
    # shift the instant (aware arithmetic within one ZoneInfo zone is wall-clock, not elapsed)
    shifted = reset_at.astimezone(UTC) + shift * FIXED_LENGTH[period]
    assert limit_window(period, now, shifted) == limit_window(period, now, reset_at)


@settings(deadline=None)
@given(now=aware, reset_at=aware, shift=st.integers(-200, 200))
def test_monthly_anchor_shifted_by_whole_months_is_the_same_series(now, reset_at, shift):
    anchor = reset_at.astimezone(UTC)
    if anchor.day > 28:  # clamping would change the anchor day
        anchor = anchor.replace(day=28)
    shifted = add_months(anchor, shift)
    assert limit_window(MONTHLY, now, shifted) == limit_window(MONTHLY, now, anchor)


@settings(deadline=None)
@given(period=periods, now=aware, moment=aware)
def test_anchor_on_a_calendar_boundary_gives_the_calendar_window(period, now, moment):
    """A reset_at on UTC midnight (a Monday for weekly, the 1st for monthly) is the calendar."""
    boundary = calendar_window(period, moment).start
    assert limit_window(period, now, boundary) == calendar_window(period, now)


@settings(max_examples=300, deadline=None)
@given(anchor=aware, months=st.integers(-1200, 1200))
def test_add_months_properties(anchor, months):
    moved = add_months(anchor, months)
    assert months_between(anchor, moved) == months
    assert moved.time() == anchor.time() and moved.tzinfo is anchor.tzinfo
    assert moved.day <= anchor.day
    if anchor.day <= 28:
        assert moved.day == anchor.day
    else:
        # clamped to the last day of the target month, or kept
        next_day = moved + DAY
        assert moved.day == anchor.day or next_day.month != moved.month


@settings(max_examples=150, deadline=None)
@given(period=st.sampled_from(list(ReportPeriod)), now=aware)
def test_report_window_properties(period, now):
    count, resolution, days = REPORT_SHAPES[period.value]
    report = report_window(period.value, now)
    buckets = report.buckets()
    assert len(buckets) == count
    assert report.resolution is resolution
    assert report.days == days
    assert buckets[0] == report.start
    assert all(b - a == resolution.length for a, b in zip(buckets, buckets[1:], strict=False))
    assert buckets[-1] + resolution.length == report.end
    assert buckets[-1] <= now < report.end
    for bucket in (report.start, report.end):
        assert is_utc(bucket)
        assert (bucket.minute, bucket.second, bucket.microsecond) == (0, 0, 0)
        if resolution is Resolution.DAY:
            assert bucket.hour == 0


@settings(max_examples=200, deadline=None)
@given(start=aware, span=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)))
def test_range_window_properties(start, span):
    end = start.astimezone(UTC) + span  # elapsed time, not wall-clock time in start's zone
    report = range_window(start, end)
    resolution = Resolution.HOUR if span <= timedelta(days=2) else Resolution.DAY
    step = resolution.length
    assert report.resolution is resolution
    assert report.days == pytest.approx(span / DAY)
    # start floored, end ceiled, each by less than one bucket
    assert report.start <= start < report.start + step
    assert report.end - step < end <= report.end
    for bucket in (report.start, report.end):
        assert is_utc(bucket)
        assert (bucket.minute, bucket.second, bucket.microsecond) == (0, 0, 0)
        if resolution is Resolution.DAY:
            assert bucket.hour == 0
    buckets = report.buckets()
    assert len(buckets) * step == report.end - report.start
    assert all(b - a == step for a, b in zip(buckets, buckets[1:], strict=False))


@pytest.mark.parametrize("period", ["daily", "weekly", "monthly"])
def test_period_names_are_accepted_as_strings(period):
    now = utc(2026, 3, 18, 12)
    assert calendar_window(period, now) == calendar_window(LimitPeriod(period), now)
    anchor = utc(2026, 1, 31, 9)
    assert anchored_window(period, anchor, now) == anchored_window(LimitPeriod(period), anchor,
                                                                   now)
