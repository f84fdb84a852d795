"""Vietnamese working calendar used by every deadline in the system.

Working days are Monday to Friday minus public holidays, plus the Saturdays the
government swaps in, as the ``holidays`` package knows them (lunar Tết included), with
the official decisions it does not know yet shipped as data (``calendar_vn.yaml``, each
entry citing its document) and an optional extra file over that. Office hours and the
receipt cut-off come from ``OfficeHours`` (default 08:00-12:00, 13:00-17:00, cut-off
15:00 in Asia/Ho_Chi_Minh, and ``after_cutoff``: whether a period in days received after
it starts a day later, ``same_day`` by default, see ``contracts.common.AfterCutoff`` for
the texts); a province or a procedure uses its own via ``with_office``.
Everything takes aware datetimes and returns UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

import holidays
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.common import AfterCutoff, Duration, OfficeHours, TimeUnit

VN_TZ = ZoneInfo("Asia/Ho_Chi_Minh")
HOUR = 3600
DAY_SECONDS = 8 * HOUR
"""The nominal working day (8 hours) that ``Duration.hours`` and demo time assume."""
DEFAULT_OFFICE = OfficeHours()
SHIPPED_OVERRIDES = Path(__file__).with_name("calendar_vn.yaml")
_MAX_DAYS_SCANNED = 3 * 366 * 10


class OverrideDay(BaseModel):
    """One day an official document makes off or working, and which document."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    date: dt.date
    reason: str = Field(min_length=1, max_length=500)
    source: str = Field(
        min_length=1, max_length=500, description="Document number and date it comes from"
    )


class CalendarOverrides(BaseModel):
    """Days off and working days decided beyond what the ``holidays`` package knows.

    Format (YAML)::

        days_off:     [{date: 2026-01-02, reason: ..., source: "Công văn 12729/VPCP-KGVX ..."}]
        working_days: [{date: 2026-01-10, reason: ..., source: ...}]
    """

    model_config = ConfigDict(extra="forbid")
    days_off: list[OverrideDay] = []
    working_days: list[OverrideDay] = []

    @model_validator(mode="after")
    def _no_day_both_off_and_working(self) -> CalendarOverrides:
        both = self.off_dates & self.working_dates
        if both:
            listed = ", ".join(sorted(d.isoformat() for d in both))
            raise ValueError(f"listed both as a day off and as a working day: {listed}")
        return self

    @property
    def off_dates(self) -> frozenset[date]:
        return frozenset(o.date for o in self.days_off)

    @property
    def working_dates(self) -> frozenset[date]:
        return frozenset(o.date for o in self.working_days)

    @classmethod
    def load(cls, path: str | Path | None) -> CalendarOverrides:
        """Read an overrides file; errors name the file. No path: no overrides."""
        if not path:
            return cls()
        data = yaml.safe_load(Path(path).read_text("utf-8")) or {}
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise ValueError(
                f"{path}: {exc}\n(each entry is {{date, reason, source}}; source names the "
                "document and its date)"
            ) from exc

    @classmethod
    def shipped(cls) -> CalendarOverrides:
        """The official decisions shipped with the code (``calendar_vn.yaml``)."""
        return _shipped().model_copy(deep=True)

    def layered(self, top: CalendarOverrides) -> CalendarOverrides:
        """These overrides with ``top`` over them: for a date in both, ``top`` wins."""
        decided = top.off_dates | top.working_dates
        return CalendarOverrides(
            days_off=[o for o in self.days_off if o.date not in decided] + top.days_off,
            working_days=[o for o in self.working_days if o.date not in decided] + top.working_days,
        )


@cache
def _shipped() -> CalendarOverrides:
    return CalendarOverrides.load(SHIPPED_OVERRIDES)


def _shipped_off() -> frozenset[date]:
    return _shipped().off_dates


def _shipped_working() -> frozenset[date]:
    return _shipped().working_dates


@dataclass
class _Shared:
    """What every office-hours variant of one calendar shares: which days work."""

    cache: dict[date, bool] = field(default_factory=dict)
    variants: dict[OfficeHours, WorkingCalendar] = field(default_factory=dict)
    table: holidays.HolidayBase | None = None


@dataclass(frozen=True)
class WorkingCalendar:
    """Working days and office hours; the cut-off at receipt; the four units of a period.

    Without arguments: the ``holidays`` package plus the shipped overrides. Build other
    day sets with ``from_overrides`` / ``load``, other office hours with ``with_office``.
    """

    days_off: frozenset[date] = field(default_factory=_shipped_off)
    extra_working_days: frozenset[date] = field(default_factory=_shipped_working)
    office: OfficeHours = DEFAULT_OFFICE
    tz: ZoneInfo = VN_TZ
    _shared: _Shared = field(default_factory=_Shared, compare=False, repr=False)

    @classmethod
    def from_overrides(
        cls, overrides: CalendarOverrides, office: OfficeHours = DEFAULT_OFFICE
    ) -> WorkingCalendar:
        """Exactly these overrides over the ``holidays`` package (not the shipped file)."""
        return cls(
            days_off=overrides.off_dates,
            extra_working_days=overrides.working_dates,
            office=office,
        )

    @classmethod
    def load(
        cls, extra: str | Path | None = None, office: OfficeHours | None = None
    ) -> WorkingCalendar:
        """The shipped overrides with an optional extra file (a deployment's) over them."""
        overrides = CalendarOverrides.shipped().layered(CalendarOverrides.load(extra))
        return cls.from_overrides(overrides, office or DEFAULT_OFFICE)

    def with_office(self, hours: OfficeHours) -> WorkingCalendar:
        """The same days with other office hours (a province's, a procedure's).

        Cheap: one variant per ``OfficeHours``, all sharing this calendar's day cache.
        """
        if hours == self.office:
            return self
        self._shared.variants.setdefault(self.office, self)
        variant = self._shared.variants.get(hours)
        if variant is None:
            variant = WorkingCalendar(
                days_off=self.days_off,
                extra_working_days=self.extra_working_days,
                office=hours,
                tz=self.tz,
                _shared=self._shared,
            )
            self._shared.variants[hours] = variant
        return variant

    @property
    def periods(self) -> tuple[tuple[time, time], ...]:
        return self.office.periods

    @property
    def cutoff(self) -> time:
        return self.office.cutoff

    @property
    def working_seconds_per_day(self) -> int:
        return self.office.working_seconds_per_day

    # --- days ----------------------------------------------------------------------------

    def _table(self) -> holidays.HolidayBase:
        if self._shared.table is None:
            self._shared.table = holidays.country_holidays("VN")
        return self._shared.table

    def is_working_day(self, d: date) -> bool:
        cached = self._shared.cache.get(d)
        if cached is None:
            if d in self.days_off:
                cached = False
            elif d in self.extra_working_days:
                cached = True
            else:
                cached = bool(self._table().is_working_day(d))
            self._shared.cache[d] = cached
        return cached

    def next_working_day(self, d: date) -> date:
        """The first working day strictly after ``d``."""
        for _ in range(_MAX_DAYS_SCANNED):
            d += timedelta(days=1)
            if self.is_working_day(d):
                return d
        raise ValueError("no working day within ten years")

    def previous_working_day(self, d: date) -> date:
        """The last working day strictly before ``d``."""
        for _ in range(_MAX_DAYS_SCANNED):
            d -= timedelta(days=1)
            if self.is_working_day(d):
                return d
        raise ValueError("no working day within ten years")

    def working_day_on_or_after(self, d: date) -> date:
        """``d`` if it is a working day, else the next one (Civil Code 2015 Art. 148(5))."""
        return d if self.is_working_day(d) else self.next_working_day(d)

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
        """Close of office on ``d``."""
        return datetime.combine(d, self.periods[-1][1], self.tz).astimezone(UTC)

    def start_of_day(self, d: date) -> datetime:
        """Opening of office on ``d``."""
        return datetime.combine(d, self.periods[0][0], self.tz).astimezone(UTC)

    def clock_start(self, received_at: datetime) -> datetime:
        """When the processing clock starts for a dossier received at ``received_at``.

        On a working day before the cut-off it starts at once; after the cut-off, or on a
        day off, it starts with the opening of the next working day.
        """
        local = self.local(received_at)
        if self.is_working_day(local.date()) and local.time() < self.cutoff:
            return local.astimezone(UTC)
        return self.start_of_day(self.next_working_day(local.date()))

    def receipt_day(self, received_at: datetime) -> date:
        """The working day the clock starts on: the receipt day, or the next working day."""
        return self.local(self.clock_start(received_at)).date()

    def period_start_day(self, received_at: datetime) -> date:
        """The day a period in days is counted from (that day itself not counted, Civil
        Code 2015 Art. 147(2)): the local date of receipt (``AfterCutoff.SAME_DAY``, the
        default), or, where the office hours say ``NEXT_DAY``, the working day the clock
        starts on for a receipt after the cut-off or on a day off."""
        if self.office.after_cutoff is AfterCutoff.NEXT_DAY:
            return self.receipt_day(received_at)
        return self.local(received_at).date()

    def deadline(self, received_at: datetime, period: Duration) -> datetime:
        """Appointment for a period counted from receipt; each unit its own way.

        * WORKING_DAYS: the N-th working day after the local date of receipt, at close
          of office. The day of receipt is not counted (Civil Code 2015 Art. 147(2)): the
          period starts the next day. A receipt after the cut-off, or on a day off, is
          deemed made at the opening of the next working day; that day is then whole and
          counts, exactly as the working-hours clock counts it from its opening. Counting
          from the calendar date of receipt gives both at once, and so "1 working day"
          and "8 working hours" received Monday 16:00 both end Tuesday at close: the
          cut-off is not charged twice. Before the cut-off the cut-off does not apply and
          the day of receipt is not counted either. This is ``AfterCutoff.SAME_DAY``, the
          default: the 15:00 rule governs the transfer (Decree 61/2018/NĐ-CP Art. 18(2);
          see ``AfterCutoff``), not the start of the period. A province that sets
          ``after_cutoff: next_day`` counts a receipt after the cut-off (or on a day off)
          from the next working day, so Monday 16:00 plus 1 working day ends Wednesday.
        * CALENDAR_DAYS: the date of receipt (``period_start_day``: with ``NEXT_DAY`` the
          next working day for a late receipt) plus N days (Art. 147(2)); a last day that
          is not a working day moves to the next working day (Art. 148(5)); ends at close
          of office, when the desk returns results (Art. 148(6) would allow midnight).
        * WITHIN_THE_DAY: close of office on the day of receipt; after the cut-off or on
          a day off, close of the next working day (not "a number of working hours").
        * WORKING_HOURS: working time from ``clock_start``.

        A period of 0 days is "within the day".
        """
        if period.unit is TimeUnit.WORKING_HOURS:
            return self.add_working_seconds(self.clock_start(received_at), period.value * HOUR)
        if period.unit is TimeUnit.WITHIN_THE_DAY or period.value == 0:
            return self.end_of_day(self.receipt_day(received_at))
        received_on = self.period_start_day(received_at)
        if period.unit is TimeUnit.WORKING_DAYS:
            return self.end_of_day(self.add_working_days(received_on, period.value))
        if period.unit is TimeUnit.CALENDAR_DAYS:
            last = received_on + timedelta(days=period.value)
            return self.end_of_day(self.working_day_on_or_after(last))
        raise ValueError(f"unknown time unit {period.unit!r}")

    def working_seconds(self, period: Duration) -> int:
        """A period as working time with these office hours: a working day (and "within
        the day") is a full office day; calendar days are not working time."""
        if period.unit is TimeUnit.WORKING_HOURS:
            return period.value * HOUR
        if period.unit is TimeUnit.WORKING_DAYS:
            return period.value * self.working_seconds_per_day
        if period.unit is TimeUnit.WITHIN_THE_DAY:
            return self.working_seconds_per_day
        raise ValueError("calendar days are not a quantity of working time")

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

    def subtract_working_seconds(self, end: datetime, seconds: int) -> datetime:
        """The moment ``seconds`` of working time before ``end``."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        local = self.local(end)
        remaining = timedelta(seconds=seconds)
        d = local.date()
        for _ in range(_MAX_DAYS_SCANNED):
            for a, b in reversed(list(self._intervals(d))):
                stop = min(b, local)
                if stop <= a:
                    continue
                if remaining <= stop - a:
                    return (stop - remaining).astimezone(UTC)
                remaining -= stop - a
            d -= timedelta(days=1)
        raise ValueError("period longer than ten years")

    def latest_working_moment(self, t: datetime) -> datetime:
        """``t`` if it falls in office hours, else the last close of office before it."""
        local = self.local(t)
        d = local.date()
        for _ in range(_MAX_DAYS_SCANNED):
            for a, b in reversed(list(self._intervals(d))):
                if a <= local:
                    return min(b, local).astimezone(UTC)
            d -= timedelta(days=1)
        raise ValueError("no working time within ten years")

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

    def extend_pause(
        self, deadline: datetime, since: datetime, until: datetime, *, calendar_days: bool
    ) -> datetime:
        """A deadline moved by the time spent waiting for the applicant, which does not
        count: by the working time waited; for a period counted in calendar days, by the
        days waited (from the day asked to the day complied), to close of office of a
        working day (Civil Code 2015 Art. 147-148)."""
        if not calendar_days:
            return self.extend(deadline, self.working_seconds_between(since, until))
        days = (self.local(until).date() - self.local(since).date()).days
        if days <= 0:
            return deadline
        last = self.local(deadline).date() + timedelta(days=days)
        return self.end_of_day(self.working_day_on_or_after(last))

    def before(self, deadline: datetime, period: Duration) -> datetime:
        """The moment a period before ``deadline`` (for reminders).

        Working days and hours: that much working time earlier (a day is a full office
        day). Calendar days: N days earlier at the same time of day, or the last close of
        office before it if that is outside office hours.
        """
        if period.unit is TimeUnit.CALENDAR_DAYS:
            earlier = self.local(deadline) - timedelta(days=period.value)
            return self.latest_working_moment(earlier)
        return self.subtract_working_seconds(deadline, self.working_seconds(period))

    def after(self, t: datetime, period: Duration) -> datetime:
        """The moment a period after ``t`` (for escalation steps and extensions).

        Working days and hours: that much working time later. Calendar days: close of
        office N days after ``t``'s date, moved to the next working day if that is a day
        off (Art. 148(5)). Within the day: close of office on ``t``'s day if ``t`` is
        before it on a working day, else close of the next working day. Nothing to add
        (value 0) gives ``t``, or the next working moment.
        """
        if period.unit is TimeUnit.WITHIN_THE_DAY:
            local = self.local(t)
            d = local.date()
            if self.is_working_day(d) and local < self.local(self.end_of_day(d)):
                return self.end_of_day(d)
            return self.end_of_day(self.next_working_day(d))
        if period.value == 0:
            return self.add_working_seconds(t, 0)
        if period.unit is TimeUnit.CALENDAR_DAYS:
            last = self.local(t).date() + timedelta(days=period.value)
            return self.end_of_day(self.working_day_on_or_after(last))
        return self.add_working_seconds(t, self.working_seconds(period))


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
    Every unit is taken at its nominal length (``Duration.hours``: 8 hours to a day).
    """

    day: float = 60.0

    def with_office(self, hours: OfficeHours) -> CompressedCalendar:
        """Demo time has no office hours: the same calendar."""
        return self

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
