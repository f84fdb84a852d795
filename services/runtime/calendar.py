"""Vietnamese working-day calendar used by every deadline in the system.

Working days are Monday to Friday minus public holidays, plus the Saturdays the
government swaps in, as the ``holidays`` package knows them (lunar Tết included), with
an override table for extra days an authority grants. Office hours are 08:00-12:00 and
13:00-17:00 in Asia/Ho_Chi_Minh: 8 working hours to a day. Everything takes and returns
aware datetimes and returns UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
import yaml
from pydantic import BaseModel, ConfigDict

from contracts.common import Duration, TimeUnit

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
HOUR = 3600
DAY_SECONDS = 8 * HOUR
_MAX_DAYS_SCANNED = 3 * 366 * 10


class CalendarOverrides(BaseModel):
    """Extra days off an authority grants, and extra working days (e.g. provincial)."""

    model_config = ConfigDict(extra="forbid")
    days_off: list[date] = []
    working_days: list[date] = []

    @classmethod
    def load(cls, path: str | Path | None) -> CalendarOverrides:
        if not path:
            return cls()
        data = yaml.safe_load(Path(path).read_text("utf-8")) or {}
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class WorkingCalendar:
    """Working days and working hours; the 15:00 cut-off at receipt."""

    days_off: frozenset[date] = frozenset()
    extra_working_days: frozenset[date] = frozenset()
    cutoff: time = time(15, 0)
    periods: tuple[tuple[time, time], ...] = ((time(8, 0), time(12, 0)), (time(13, 0), time(17, 0)))
    tz: ZoneInfo = VN_TZ
    _cache: dict[date, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_overrides(cls, overrides: CalendarOverrides) -> WorkingCalendar:
        return cls(
            days_off=frozenset(overrides.days_off),
            extra_working_days=frozenset(overrides.working_days),
        )

    @cached_property
    def _holidays(self) -> holidays.HolidayBase:
        vietnam: holidays.HolidayBase = holidays.country_holidays("VN")
        return vietnam

    # --- days ----------------------------------------------------------------------------

    def is_working_day(self, d: date) -> bool:
        cached = self._cache.get(d)
        if cached is None:
            if d in self.days_off:
                cached = False
            elif d in self.extra_working_days:
                cached = True
            else:
                cached = bool(self._holidays.is_working_day(d))
            self._cache[d] = cached
        return cached

    def next_working_day(self, d: date) -> date:
        """The first working day strictly after ``d``."""
        for _ in range(_MAX_DAYS_SCANNED):
            d += timedelta(days=1)
            if self.is_working_day(d):
                return d
        raise ValueError("no working day within ten years")

    def add_working_days(self, d: date, n: int) -> date:
        """The n-th working day after ``d`` (``d`` itself does not count); n=0 gives ``d``."""
        if n < 0:
            raise ValueError("n must be >= 0")
        for _ in range(n):
            d = self.next_working_day(d)
        return d

    def working_days_between(self, start: date, end: date) -> int:
        """How many working days lie in (start, end]."""
        count, d = 0, start
        while d < end:
            d += timedelta(days=1)
            count += self.is_working_day(d)
        return count

    # --- hours ---------------------------------------------------------------------------

    def _intervals(self, d: date) -> Iterable[tuple[datetime, datetime]]:
        if self.is_working_day(d):
            for a, b in self.periods:
                yield (
                    datetime.combine(d, a, self.tz),
                    datetime.combine(d, b, self.tz),
                )

    def local(self, t: datetime) -> datetime:
        return _aware(t).astimezone(self.tz)

    def end_of_day(self, d: date) -> datetime:
        return datetime.combine(d, self.periods[-1][1], self.tz).astimezone(UTC)

    def start_of_day(self, d: date) -> datetime:
        return datetime.combine(d, self.periods[0][0], self.tz).astimezone(UTC)

    def clock_start(self, received_at: datetime) -> datetime:
        """When the processing clock starts for a dossier received at ``received_at``.

        On a working day before the cut-off it starts at once; after the cut-off, or on a
        day off, it starts with the next working day.
        """
        local = self.local(received_at)
        if self.is_working_day(local.date()) and local.time() < self.cutoff:
            return local.astimezone(UTC)
        return self.start_of_day(self.next_working_day(local.date()))

    def receipt_day(self, received_at: datetime) -> date:
        """The day the clock counts from: the receipt day, or the next working day."""
        return self.local(self.clock_start(received_at)).date()

    def deadline(self, received_at: datetime, period: Duration) -> datetime:
        """Appointment for a period counted from receipt.

        Days: the period starts the next day and ends at the close of its last working
        day. Hours: working hours counted from when the clock starts.
        """
        if period.unit is TimeUnit.WORKING_DAYS:
            last = self.add_working_days(self.receipt_day(received_at), period.value)
            return self.end_of_day(last)
        return self.add_working_seconds(self.clock_start(received_at), period.value * HOUR)

    def add_working_seconds(self, start: datetime, seconds: int) -> datetime:
        """The moment ``seconds`` of working time after ``start``."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        cursor = self.local(start)
        remaining = timedelta(seconds=seconds)
        d = cursor.date()
        for _ in range(_MAX_DAYS_SCANNED):
            for a, b in self._intervals(d):
                begin = max(a, cursor)
                if begin >= b:
                    continue
                if remaining <= b - begin:
                    return (begin + remaining).astimezone(UTC)
                remaining -= b - begin
            d += timedelta(days=1)
        raise ValueError("period longer than ten years")

    def working_seconds_between(self, start: datetime, end: datetime) -> int:
        """Working time in [start, end), in seconds; 0 if end <= start."""
        a_t, b_t = self.local(start), self.local(end)
        if b_t <= a_t:
            return 0
        total = timedelta()
        d = a_t.date()
        while d <= b_t.date():
            for a, b in self._intervals(d):
                lo, hi = max(a, a_t), min(b, b_t)
                if hi > lo:
                    total += hi - lo
            d += timedelta(days=1)
        return int(total.total_seconds())

    def extend(self, deadline: datetime, paused_seconds: int) -> datetime:
        """Move a deadline by paused working time (time waiting for the applicant)."""
        if paused_seconds <= 0:
            return deadline
        return self.add_working_seconds(deadline, paused_seconds)

    def before(self, deadline: datetime, period: Duration) -> datetime:
        """The moment a period of working time before ``deadline`` (for reminders)."""
        target = period.value * (DAY_SECONDS if period.unit is TimeUnit.WORKING_DAYS else HOUR)
        local = self.local(deadline)
        remaining = timedelta(seconds=target)
        d = local.date()
        for _ in range(_MAX_DAYS_SCANNED):
            for a, b in reversed(list(self._intervals(d))):
                end = min(b, local)
                if end <= a:
                    continue
                if remaining <= end - a:
                    return (end - remaining).astimezone(UTC)
                remaining -= end - a
            d -= timedelta(days=1)
        raise ValueError("period longer than ten years")

    def after(self, t: datetime, period: Duration) -> datetime:
        """The moment a period of working time after ``t`` (for escalation steps)."""
        return self.add_working_seconds(t, period.hours * HOUR)


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("naive datetime: times must carry a timezone")
    return t


def format_local(t: datetime | None, fmt: str = "%H:%M ngày %d/%m/%Y") -> str | None:
    """A UTC time shown in Asia/Ho_Chi_Minh, as a desk officer reads it."""
    return None if t is None else _aware(t).astimezone(VN_TZ).strftime(fmt)


@dataclass(frozen=True)
class CompressedCalendar:
    """Demo time: every moment is working time and one working day lasts ``day`` seconds.

    Lets the dev stack show reminders, escalation and deemed consent within minutes.
    """

    day: float = 60.0

    def _scale(self, working_seconds: float) -> timedelta:
        return timedelta(seconds=working_seconds * self.day / DAY_SECONDS)

    def _seconds(self, period: Duration) -> float:
        return period.hours * HOUR

    def deadline(self, received_at: datetime, period: Duration) -> datetime:
        return _aware(received_at) + self._scale(self._seconds(period))

    def before(self, deadline: datetime, period: Duration) -> datetime:
        return _aware(deadline) - self._scale(self._seconds(period))

    def after(self, t: datetime, period: Duration) -> datetime:
        return _aware(t) + self._scale(self._seconds(period))

    def add_working_seconds(self, start: datetime, seconds: int) -> datetime:
        return _aware(start) + self._scale(seconds)

    def working_seconds_between(self, start: datetime, end: datetime) -> int:
        span = (end - start).total_seconds()
        return max(0, int(span * DAY_SECONDS / self.day))
