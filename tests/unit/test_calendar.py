"""The working-day calendar: Vietnamese holidays, swaps, cut-off, hours, pauses."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.common import Duration, TimeUnit
from services.runtime.calendar import (
    VN_TZ,
    CalendarOverrides,
    CompressedCalendar,
    OverrideDay,
    WorkingCalendar,
    format_local,
)

cal = WorkingCalendar()


def vn(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


@pytest.mark.parametrize(
    ("day", "working"),
    [
        # Tết 2025: 27 Jan - 1 Feb off
        (date(2025, 1, 24), True),
        (date(2025, 1, 27), False),
        (date(2025, 1, 31), False),
        (date(2025, 2, 3), True),
        # Tết 2026: Mon 16 - Fri 20 Feb off
        (date(2026, 2, 13), True),
        (date(2026, 2, 16), False),
        (date(2026, 2, 20), False),
        (date(2026, 2, 23), True),
        # Tết 2027: Thu 4 - Wed 10 Feb off
        (date(2027, 2, 3), True),
        (date(2027, 2, 4), False),
        (date(2027, 2, 10), False),
        (date(2027, 2, 11), True),
        # 30/4 - 1/5 2025, with Fri 2 May swapped for Saturday 26 April
        (date(2025, 4, 30), False),
        (date(2025, 5, 1), False),
        (date(2025, 5, 2), False),
        (date(2025, 4, 26), True),
        (date(2025, 4, 27), False),
        # National Day 2025 (Mon 1 - Tue 2 Sep) and 2026 (Mon 31 Aug swapped for Sat 22 Aug)
        (date(2025, 9, 1), False),
        (date(2025, 9, 2), False),
        (date(2025, 9, 3), True),
        (date(2026, 8, 22), True),
        (date(2026, 8, 31), False),
        (date(2026, 9, 2), False),
        # Hùng Kings 2026 falls on Sunday, observed Monday; Culture Day from 2026
        (date(2026, 4, 27), False),
        (date(2026, 11, 24), False),
        (date(2026, 11, 23), True),
        # an ordinary weekend
        (date(2026, 11, 21), False),
        (date(2026, 11, 22), False),
    ],
)
def test_working_days(day: date, working: bool) -> None:
    assert cal.is_working_day(day) is working


def test_friday_before_tet_cutoff_does_not_cost_a_working_day__civil_code_art_147_2() -> None:
    three = Duration(value=3)
    early = cal.deadline(vn(2026, 2, 13, 14, 59), three)
    late = cal.deadline(vn(2026, 2, 13, 15, 30), three)
    # before the cut-off Friday is not counted (Art. 147(2)): Mon 23, Tue 24, Wed 25; after
    # it the clock starts at Mon 23 08:00 and Monday, whole, is the first day: Wed 25 too
    assert format_local(early) == "17:00 ngày 25/02/2026"
    assert format_local(late) == "17:00 ngày 25/02/2026"
    assert format_local(cal.clock_start(vn(2026, 2, 13, 15, 30))) == "08:00 ngày 23/02/2026"
    assert late == cal.deadline(
        vn(2026, 2, 13, 15, 30), Duration(value=24, unit=TimeUnit.WORKING_HOURS)
    )
    for d in (early, late):
        assert cal.is_working_day(d.astimezone(VN_TZ).date())


def test_received_on_a_day_off_ends_as_if_received_at_the_next_opening() -> None:
    sat = cal.deadline(vn(2026, 11, 21, 9, 0), Duration(value=1))
    mon = cal.deadline(vn(2026, 11, 23, 9, 0), Duration(value=1))
    # Sat 21 is deemed received Mon 23 08:00: Monday is whole and counts, as 8 working
    # hours from 08:00 would; Mon 23 09:00 -> Wed 25 (Mon not counted, Tue 24 Culture Day)
    assert format_local(sat) == "17:00 ngày 23/11/2026"
    assert sat == cal.deadline(
        vn(2026, 11, 21, 9, 0), Duration(value=8, unit=TimeUnit.WORKING_HOURS)
    )
    assert format_local(mon) == "17:00 ngày 25/11/2026"


def test_hours_skip_lunch_night_and_holidays() -> None:
    four_h = Duration(value=4, unit=TimeUnit.WORKING_HOURS)
    assert format_local(cal.deadline(vn(2026, 2, 13, 10, 0), four_h)) == "15:00 ngày 13/02/2026"
    # 14:00 Friday before Tết: 3h left that day, 1h on Mon 23 Feb
    assert format_local(cal.deadline(vn(2026, 2, 13, 14, 0), four_h)) == "09:00 ngày 23/02/2026"
    # after the 15:00 cut-off the clock starts the next working day
    assert format_local(cal.deadline(vn(2026, 2, 13, 15, 10), four_h)) == "12:00 ngày 23/02/2026"


def test_swap_saturday_is_counted() -> None:
    # Fri 25 Apr 2025 + 1 working day = Sat 26 Apr (a swapped working day)
    assert cal.add_working_days(date(2025, 4, 25), 1) == date(2025, 4, 26)
    assert cal.add_working_days(date(2025, 4, 26), 1) == date(2025, 4, 28)


def test_pause_moves_deadline_by_paused_working_time() -> None:
    due = cal.deadline(vn(2026, 11, 16, 9, 0), Duration(value=5))
    paused_at, resumed_at = vn(2026, 11, 17, 10, 0), vn(2026, 11, 19, 11, 30)
    paused = cal.working_seconds_between(paused_at, resumed_at)
    assert paused == 17.5 * 3600  # Tue 10-17 (6h), Wed (8h), Thu 8-11:30 (3.5h)
    moved = cal.extend(due, int(paused))
    assert cal.working_seconds_between(due, moved) == paused


def test_overrides_add_days_off_and_working_days() -> None:
    src = "Quyết định 1/QĐ-UBND ngày 01/11/2026 (test)"
    o = CalendarOverrides(
        days_off=[OverrideDay(date=date(2026, 12, 1), reason="provincial day", source=src)],
        working_days=[OverrideDay(date=date(2026, 12, 5), reason="swap", source=src)],
    )
    c = WorkingCalendar.from_overrides(o)
    assert not c.is_working_day(date(2026, 12, 1))
    assert c.is_working_day(date(2026, 12, 5))
    assert cal.is_working_day(date(2026, 12, 1))


def test_overrides_file_errors_name_the_file(tmp_path) -> None:
    f = tmp_path / "calendar.yaml"
    f.write_text("days_off: [not-a-date]\n")
    with pytest.raises(ValueError, match=r"calendar\.yaml"):
        CalendarOverrides.load(f)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        cal.clock_start(datetime(2026, 1, 5, 9, 0))


def test_before_and_after_are_inverse_over_working_time() -> None:
    due = vn(2026, 12, 10, 17, 0).astimezone(UTC)
    two_days = Duration(value=2)
    back = cal.before(due, two_days)
    # two working days before 17:00 on the 10th: the start of the 9th's working day
    assert format_local(back) == "08:00 ngày 09/12/2026"
    assert cal.after(back, two_days) == due


def test_compressed_calendar_makes_a_day_a_minute() -> None:
    c = CompressedCalendar(day=60)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert c.deadline(t, Duration(value=5)) == t + timedelta(minutes=5)
    assert c.after(t, Duration(value=4, unit=TimeUnit.WORKING_HOURS)) == t + timedelta(seconds=30)


working_days = st.dates(min_value=date(2024, 1, 1), max_value=date(2028, 12, 31))


@given(start=working_days, n=st.integers(min_value=0, max_value=300))
@settings(max_examples=200, deadline=None)
def test_adding_n_working_days_then_counting_gives_n(start: date, n: int) -> None:
    end = cal.add_working_days(start, n)
    assert cal.working_days_between(start, end) == n
    if n:
        assert cal.is_working_day(end)


@given(
    received=st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2028, 6, 30), timezones=st.just(VN_TZ)
    ),
    days=st.integers(min_value=1, max_value=60),
)
@settings(max_examples=200, deadline=None)
def test_deadline_never_lands_on_a_day_off(received: datetime, days: int) -> None:
    due = cal.deadline(received, Duration(value=days))
    assert cal.is_working_day(due.astimezone(VN_TZ).date())
    assert due > received


@given(
    start=st.datetimes(
        min_value=datetime(2024, 1, 1), max_value=datetime(2028, 6, 30), timezones=st.just(VN_TZ)
    ),
    seconds=st.integers(min_value=0, max_value=200 * 8 * 3600),
)
@settings(max_examples=200, deadline=None)
def test_working_seconds_round_trip(start: datetime, seconds: int) -> None:
    end = cal.add_working_seconds(start, seconds)
    assert cal.working_seconds_between(start, end) == seconds
