"""Calendar math: limit periods and their rollover, and the bucketed windows of reports.

Everything is UTC. A limit period is a half-open interval [start, end); ``end`` is the reset time.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache


class LimitPeriod(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


@dataclass(frozen=True)
class Window:
    """A half-open interval of time [start, end)."""

    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


_FIXED_LENGTH = {LimitPeriod.DAILY: timedelta(days=1), LimitPeriod.WEEKLY: timedelta(weeks=1)}


def add_months(anchor: datetime, months: int) -> datetime:
    """``anchor`` moved by whole months, its day clamped to the target month's last day."""
    index = anchor.year * 12 + (anchor.month - 1) + months
    year, month = divmod(index, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


def calendar_window(period: LimitPeriod, now: datetime) -> Window:
    """The UTC calendar day, ISO week (from Monday) or month that contains ``now``."""
    period = LimitPeriod(period)
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period is LimitPeriod.DAILY:
        return Window(day, day + timedelta(days=1))
    if period is LimitPeriod.WEEKLY:
        monday = day - timedelta(days=day.weekday())
        return Window(monday, monday + timedelta(weeks=1))
    first = day.replace(day=1)
    return Window(first, add_months(first, 1))


def anchored_window(period: LimitPeriod, reset_at: datetime, now: datetime) -> Window:
    """The period containing ``now`` in the series of resets ``reset_at`` ± whole periods.

    ``reset_at`` fixes the phase of the series: when it is in the past the period has rolled
    over (it advances by whole periods), and when it lies more than one period ahead the
    current period is still the one that contains ``now``. Monthly resets keep ``reset_at``'s
    day and time, clamped to the last day of shorter months (Jan 31 → Feb 28 → Mar 31).
    """
    period, reset_at = LimitPeriod(period), reset_at.astimezone(UTC)
    if period is LimitPeriod.MONTHLY:
        k = (now.year - reset_at.year) * 12 + (now.month - reset_at.month)
        while add_months(reset_at, k) <= now:
            k += 1
        while add_months(reset_at, k - 1) > now:
            k -= 1
        return Window(add_months(reset_at, k - 1), add_months(reset_at, k))
    length = _FIXED_LENGTH[period]
    k = (now - reset_at) // length + 1
    end = reset_at + k * length
    return Window(end - length, end)


@lru_cache(maxsize=4096)  # a scrape asks this for every meter with the same "now"
def limit_window(period: LimitPeriod, now: datetime, reset_at: datetime | None = None) -> Window:
    """The current period of a limit: calendar-aligned, or anchored on ``reset_at``."""
    now = now.astimezone(UTC)
    if reset_at is None:
        return calendar_window(period, now)
    return anchored_window(period, reset_at, now)


class Resolution(StrEnum):
    HOUR = "hour"
    DAY = "day"

    @property
    def length(self) -> timedelta:
        return timedelta(hours=1) if self is Resolution.HOUR else timedelta(days=1)

    def floor(self, moment: datetime) -> datetime:
        moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        return moment if self is Resolution.HOUR else moment.replace(hour=0)

    def ceil(self, moment: datetime) -> datetime:
        # Compare in UTC: aware datetimes in a fold (DST ending) never equal another zone's.
        moment = moment.astimezone(UTC)
        floor = self.floor(moment)
        return floor if floor == moment else floor + self.length


class ReportPeriod(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


# (number of buckets, bucket resolution) of each named report period.
_REPORT_SHAPE = {
    ReportPeriod.DAY: (24, Resolution.HOUR),
    ReportPeriod.WEEK: (7, Resolution.DAY),
    ReportPeriod.MONTH: (30, Resolution.DAY),
    ReportPeriod.YEAR: (365, Resolution.DAY),
}

# Explicit ranges up to this long are reported in hourly buckets, longer ones in daily buckets.
HOURLY_RANGE_MAX = timedelta(days=2)


@dataclass(frozen=True)
class ReportWindow:
    """What a report covers: bucket-aligned [start, end), its buckets, and its length in days."""

    label: str
    start: datetime
    end: datetime
    resolution: Resolution
    days: float

    def buckets(self) -> list[datetime]:
        step, moment, out = self.resolution.length, self.start, []
        while moment < self.end:
            out.append(moment)
            moment += step
        return out


def report_window(period: str, now: datetime) -> ReportWindow:
    """The buckets of a named period, ending with the bucket that contains ``now``.

    ``day`` is the 24 hours up to and including the current hour; ``week``, ``month`` and
    ``year`` are the last 7, 30 and 365 UTC days including today.
    """
    named = ReportPeriod(period)
    count, resolution = _REPORT_SHAPE[named]
    end = resolution.floor(now) + resolution.length
    days = count / 24 if resolution is Resolution.HOUR else count
    return ReportWindow(named.value, end - count * resolution.length, end, resolution, days)


def range_window(start: datetime, end: datetime) -> ReportWindow:
    """An explicit range, widened to whole buckets (hourly up to two days, else daily)."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    resolution = Resolution.HOUR if end - start <= HOURLY_RANGE_MAX else Resolution.DAY
    days = (end - start) / timedelta(days=1)
    return ReportWindow("custom", resolution.floor(start), resolution.ceil(end), resolution, days)
