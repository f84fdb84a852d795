"""The working calendar against the law: each test names the rule it checks.

Expected dates are counted by hand from the official schedules, not from the code:
New Year 2026 (Công văn 12729/VPCP-KGVX, 25/12/2025: Thu 1 - Sun 4 Jan off, Fri 2 Jan
worked on Sat 10 Jan), Tết 2026 (Sat 14 - Sun 22 Feb), Tết 2027 (Labour Code 2019
Art. 112 as ``holidays`` computes it: Thu 4 - Wed 10 Feb; no official schedule yet).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contracts.common import AfterCutoff, Duration, OfficeHours, TimeUnit
from services.runtime.calendar import (
    VN_TZ,
    CalendarOverrides,
    CompressedCalendar,
    OverrideDay,
    WorkingCalendar,
    format_local,
)

cal = WorkingCalendar()
HCMC = OfficeHours(
    periods=((time(7, 30), time(11, 30)), (time(13, 0), time(17, 0))),
    cutoff=time(15, 0),
    legal_basis="Giờ làm việc của các cơ quan hành chính TP. Hồ Chí Minh",
)
hcmc = cal.with_office(HCMC)
SHORT = OfficeHours(periods=((time(7, 0), time(11, 0)), (time(13, 0), time(16, 30))))
"""An office day of 7.5 hours: what holds for 8 must hold for any total."""


def vn(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=VN_TZ)


def close(d: str) -> str:
    """Close of office on a dd/mm/yyyy day, as ``format_local`` prints it."""
    return f"17:00 ngày {d}"


def wd(n: int) -> Duration:
    return Duration(value=n, unit=TimeUnit.WORKING_DAYS)


def wh(n: int) -> Duration:
    return Duration(value=n, unit=TimeUnit.WORKING_HOURS)


def cd(n: int) -> Duration:
    return Duration(value=n, unit=TimeUnit.CALENDAR_DAYS)


TODAY = Duration(value=0, unit=TimeUnit.WITHIN_THE_DAY)
PERIODS = (1, 3, 5, 10, 15, 20)


def table(received: datetime, ends: tuple[str, ...]) -> list[tuple[datetime, int, str]]:
    return [(received, n, e) for n, e in zip(PERIODS, ends, strict=True)]


# --- which days work --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2025, 12, 31), True),
        (date(2026, 1, 1), False),  # New Year's Day
        (date(2026, 1, 2), False),  # Friday swapped out
        (date(2026, 1, 3), False),
        (date(2026, 1, 4), False),
        (date(2026, 1, 5), True),
        (date(2026, 1, 9), True),
        (date(2026, 1, 10), True),  # Saturday worked instead of Friday 2
        (date(2026, 1, 11), False),
        (date(2026, 1, 12), True),
        (date(2026, 1, 17), False),  # an ordinary Saturday again
    ],
)
def test_new_year_2026_off_1_to_4_january_saturday_10_worked__cv_12729_vpcp_kgvx_2025(
    day: date, working: bool
) -> None:
    assert cal.is_working_day(day) is working


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2026, 2, 13), True),
        *((date(2026, 2, d), False) for d in range(14, 23)),  # Sat 14 - Sun 22: 9 days
        (date(2026, 2, 23), True),
    ],
)
def test_tet_2026_off_14_to_22_february__labour_code_2019_art_112(day: date, working: bool) -> None:
    assert cal.is_working_day(day) is working


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2027, 2, 3), True),
        *((date(2027, 2, d), False) for d in range(4, 11)),  # Thu 4 - Wed 10
        (date(2027, 2, 11), True),
        (date(2027, 2, 12), True),
    ],
)
def test_tet_2027_off_4_to_10_february__labour_code_2019_art_112(day: date, working: bool) -> None:
    assert cal.is_working_day(day) is working


# --- working days: the first day is not counted; the cut-off is not charged twice -------

NEW_YEAR_2026 = [
    *table(
        vn(2025, 12, 31, 10, 0),
        ("05/01/2026", "07/01/2026", "09/01/2026", "15/01/2026", "22/01/2026", "29/01/2026"),
    ),
    # received on the swapped-out Friday: counted from the next working day, Monday 5
    *table(
        vn(2026, 1, 2, 10, 0),
        ("05/01/2026", "07/01/2026", "09/01/2026", "15/01/2026", "22/01/2026", "29/01/2026"),
    ),
    # Friday 9 + 1 working day is the worked Saturday 10
    *table(
        vn(2026, 1, 9, 10, 0),
        ("10/01/2026", "13/01/2026", "15/01/2026", "22/01/2026", "29/01/2026", "05/02/2026"),
    ),
    # after the cut-off on the worked Saturday: Monday 12 is the first day
    *table(
        vn(2026, 1, 10, 16, 0),
        ("12/01/2026", "14/01/2026", "16/01/2026", "23/01/2026", "30/01/2026", "06/02/2026"),
    ),
]

TET_2026 = [
    *table(
        vn(2026, 2, 12, 10, 0),
        ("13/02/2026", "24/02/2026", "26/02/2026", "05/03/2026", "12/03/2026", "19/03/2026"),
    ),
    *table(
        vn(2026, 2, 13, 10, 0),
        ("23/02/2026", "25/02/2026", "27/02/2026", "06/03/2026", "13/03/2026", "20/03/2026"),
    ),
    # after the cut-off the Friday before Tết: same appointments as before it
    *table(
        vn(2026, 2, 13, 16, 0),
        ("23/02/2026", "25/02/2026", "27/02/2026", "06/03/2026", "13/03/2026", "20/03/2026"),
    ),
    # received during Tết (online): counted from Monday 23
    *table(
        vn(2026, 2, 17, 9, 0),
        ("23/02/2026", "25/02/2026", "27/02/2026", "06/03/2026", "13/03/2026", "20/03/2026"),
    ),
    *table(
        vn(2026, 2, 23, 9, 0),
        ("24/02/2026", "26/02/2026", "02/03/2026", "09/03/2026", "16/03/2026", "23/03/2026"),
    ),
]

TET_2027 = [
    *table(
        vn(2027, 2, 2, 10, 0),
        ("03/02/2027", "12/02/2027", "16/02/2027", "23/02/2027", "02/03/2027", "09/03/2027"),
    ),
    *table(
        vn(2027, 2, 3, 10, 0),
        ("11/02/2027", "15/02/2027", "17/02/2027", "24/02/2027", "03/03/2027", "10/03/2027"),
    ),
    *table(
        vn(2027, 2, 3, 15, 30),
        ("11/02/2027", "15/02/2027", "17/02/2027", "24/02/2027", "03/03/2027", "10/03/2027"),
    ),
    *table(
        vn(2027, 2, 8, 9, 0),
        ("11/02/2027", "15/02/2027", "17/02/2027", "24/02/2027", "03/03/2027", "10/03/2027"),
    ),
]


@pytest.mark.parametrize(("received", "n", "ends"), NEW_YEAR_2026)
def test_working_days_around_new_year_2026__civil_code_art_147_2_cv_12729_vpcp_kgvx(
    received: datetime, n: int, ends: str
) -> None:
    assert format_local(cal.deadline(received, wd(n))) == close(ends)


@pytest.mark.parametrize(("received", "n", "ends"), TET_2026)
def test_working_days_around_tet_2026__civil_code_art_147_2(
    received: datetime, n: int, ends: str
) -> None:
    assert format_local(cal.deadline(received, wd(n))) == close(ends)


@pytest.mark.parametrize(("received", "n", "ends"), TET_2027)
def test_working_days_around_tet_2027__civil_code_art_147_2(
    received: datetime, n: int, ends: str
) -> None:
    assert format_local(cal.deadline(received, wd(n))) == close(ends)


@pytest.mark.parametrize(
    "received",
    [
        vn(2026, 3, 2, 15, 0),  # at the cut-off on a Monday
        vn(2026, 3, 2, 16, 0),
        vn(2026, 3, 2, 23, 59),
        vn(2026, 1, 10, 15, 30),  # the worked Saturday
        vn(2026, 3, 7, 10, 0),  # an ordinary Saturday
        vn(2026, 1, 1, 9, 0),  # New Year's Day
        vn(2026, 1, 2, 9, 0),  # the swapped-out Friday (shipped override)
        vn(2026, 2, 13, 15, 30),  # after the cut-off, Tết next
        vn(2026, 2, 18, 9, 0),  # in Tết
        vn(2026, 11, 24, 9, 0),  # Vietnam Culture Day
    ],
)
@pytest.mark.parametrize("n", [1, 2, 5, 15])
def test_after_the_cutoff_or_on_a_day_off_n_working_days_equal_8n_working_hours(
    received: datetime, n: int
) -> None:
    assert cal.deadline(received, wd(n)) == cal.deadline(received, wh(8 * n))
    assert hcmc.deadline(received, wd(n)) == hcmc.deadline(received, wh(8 * n))


def test_received_monday_16h_one_working_day_and_eight_hours_end_tuesday_close() -> None:
    received = vn(2026, 3, 2, 16, 0)
    assert format_local(cal.deadline(received, wd(1))) == close("03/03/2026")
    assert format_local(cal.deadline(received, wh(8))) == close("03/03/2026")


def test_before_the_cutoff_the_day_of_receipt_is_not_counted__civil_code_art_147_2() -> None:
    received = vn(2026, 3, 2, 9, 0)
    assert format_local(cal.deadline(received, wd(1))) == close("03/03/2026")
    # working hours run from receipt: here 8 hours end Tuesday 09:00, before the day count
    assert format_local(cal.deadline(received, wh(8))) == "09:00 ngày 03/03/2026"


received_times = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 6, 30), timezones=st.just(VN_TZ)
)


@given(received=received_times, n=st.integers(min_value=1, max_value=40))
@settings(max_examples=300, deadline=None)
def test_property_after_cutoff_or_day_off_n_working_days_are_n_full_office_days(
    received: datetime, n: int
) -> None:
    local = received.astimezone(VN_TZ)
    assume(not cal.is_working_day(local.date()) or local.time() >= cal.cutoff)
    for c in (cal, hcmc, cal.with_office(SHORT)):  # the same days and cut-off
        by_days = c.deadline(received, wd(n))
        by_time = c.add_working_seconds(c.clock_start(received), n * c.working_seconds_per_day)
        assert by_days == by_time
        if c.working_seconds_per_day == 8 * 3600:
            assert by_days == c.deadline(received, wh(8 * n))


@given(received=received_times, n=st.integers(min_value=1, max_value=40))
@settings(max_examples=200, deadline=None)
def test_property_working_days_end_at_close_of_a_working_day_after_receipt(
    received: datetime, n: int
) -> None:
    due = cal.deadline(received, wd(n))
    local_due = due.astimezone(VN_TZ)
    assert cal.is_working_day(local_due.date())
    assert local_due.time() == time(17, 0)
    assert cal.working_days_between(received.astimezone(VN_TZ).date(), local_due.date()) == n


# --- calendar days ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "days", "ends"),
    [
        (vn(2026, 1, 9, 10, 0), 15, "26/01/2026"),  # Sat 24 -> Mon 26
        (vn(2025, 12, 22, 10, 0), 20, "12/01/2026"),  # Sun 11 -> Mon 12
        (vn(2026, 2, 2, 10, 0), 15, "23/02/2026"),  # Tue 17, Tết -> Mon 23
        (vn(2026, 11, 9, 10, 0), 15, "25/11/2026"),  # Tue 24, Culture Day -> Wed 25
        (vn(2026, 8, 22, 10, 0), 10, "03/09/2026"),  # Tue 1 Sep, National Day -> Thu 3
        (vn(2026, 3, 2, 10, 0), 20, "23/03/2026"),  # Sun 22 -> Mon 23
        (vn(2025, 12, 29, 10, 0), 4, "05/01/2026"),  # Fri 2 Jan, swapped out -> Mon 5
    ],
)
def test_calendar_days_ending_on_a_day_off_end_next_working_day__civil_code_art_148_5(
    received: datetime, days: int, ends: str
) -> None:
    assert format_local(cal.deadline(received, cd(days))) == close(ends)


@pytest.mark.parametrize(
    ("received", "days", "ends"),
    [
        (vn(2026, 3, 2, 10, 0), 10, "12/03/2026"),
        (vn(2026, 3, 2, 16, 30), 10, "12/03/2026"),  # the cut-off does not move calendar days
        (vn(2026, 3, 1, 10, 0), 10, "11/03/2026"),  # received on a Sunday
        (vn(2026, 12, 4, 10, 0), 10, "14/12/2026"),  # criminal-record certificate, 10 days
        (vn(2026, 1, 1, 10, 0), 9, "10/01/2026"),  # ends on the worked Saturday: it stands
    ],
)
def test_calendar_days_count_from_the_day_after_receipt__civil_code_art_147_2(
    received: datetime, days: int, ends: str
) -> None:
    assert format_local(cal.deadline(received, cd(days))) == close(ends)


def test_calendar_days_differ_from_working_days_for_the_same_figure() -> None:
    # building permit: 15 days (calendar) vs 15 working days, received Monday 2 March 2026
    received = vn(2026, 3, 2, 9, 0)
    assert format_local(cal.deadline(received, cd(15))) == close("17/03/2026")
    assert format_local(cal.deadline(received, wd(15))) == close("23/03/2026")


# --- within the day ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "ends"),
    [
        (vn(2026, 3, 2, 7, 0), "02/03/2026"),  # before opening
        (vn(2026, 3, 2, 14, 59), "02/03/2026"),
        (vn(2026, 1, 10, 9, 0), "10/01/2026"),  # the worked Saturday
    ],
)
def test_within_the_day_before_the_cutoff_ends_at_close_of_that_day(
    received: datetime, ends: str
) -> None:
    assert format_local(cal.deadline(received, TODAY)) == close(ends)


@pytest.mark.parametrize(
    ("received", "ends"),
    [
        (vn(2026, 3, 2, 15, 0), "03/03/2026"),  # at the cut-off
        (vn(2026, 3, 2, 16, 30), "03/03/2026"),
        (vn(2026, 3, 7, 9, 0), "09/03/2026"),  # Saturday
        (vn(2026, 2, 13, 15, 30), "23/02/2026"),  # Friday before Tết
        (vn(2025, 12, 31, 15, 30), "05/01/2026"),  # over the New Year swap
        (vn(2026, 1, 2, 9, 0), "05/01/2026"),  # the swapped-out Friday
    ],
)
def test_within_the_day_after_the_cutoff_or_on_a_day_off_ends_next_working_day(
    received: datetime, ends: str
) -> None:
    assert format_local(cal.deadline(received, TODAY)) == close(ends)


def test_within_the_day_is_not_a_number_of_working_hours() -> None:
    received = vn(2026, 3, 2, 14, 0)
    assert format_local(cal.deadline(received, TODAY)) == close("02/03/2026")
    assert cal.deadline(received, TODAY) != cal.deadline(received, wh(4))
    assert cal.deadline(received, TODAY) != cal.deadline(received, wh(8))


# --- office hours ------------------------------------------------------------------------


def test_hcmc_office_opens_0730_and_a_receipt_at_0745_counts() -> None:
    received = vn(2026, 3, 2, 7, 45)
    assert hcmc.clock_start(received) == received.astimezone(UTC)
    # 07:45-11:30 is 3h45, then 15 minutes after lunch
    assert format_local(hcmc.deadline(received, wh(4))) == "13:15 ngày 02/03/2026"
    assert format_local(cal.deadline(received, wh(4))) == "12:00 ngày 02/03/2026"
    assert format_local(hcmc.start_of_day(date(2026, 3, 2))) == "07:30 ngày 02/03/2026"
    assert hcmc.working_seconds_between(vn(2026, 3, 2, 7, 30), vn(2026, 3, 2, 17, 0)) == 8 * 3600
    assert hcmc.working_seconds_between(received, vn(2026, 3, 2, 8, 0)) == 15 * 60
    assert cal.working_seconds_between(received, vn(2026, 3, 2, 8, 0)) == 0
    assert format_local(hcmc.deadline(received, TODAY)) == close("02/03/2026")


def test_with_office_is_cached_and_shares_the_days() -> None:
    assert cal.with_office(HCMC) is hcmc
    assert hcmc.with_office(cal.office) is cal
    assert cal.with_office(cal.office) is cal
    assert hcmc._shared is cal._shared
    assert not hcmc.is_working_day(date(2026, 1, 2))
    assert hcmc.is_working_day(date(2026, 1, 10))


def test_another_office_total_keeps_days_and_seconds_consistent() -> None:
    short = cal.with_office(SHORT)
    assert short.working_seconds_per_day == 7 * 3600 + 1800
    due = short.deadline(vn(2026, 3, 2, 9, 0), wd(2))
    assert format_local(due) == "16:30 ngày 04/03/2026"
    # one working day before a close of office is that day's opening
    assert format_local(short.before(due, wd(1))) == "07:00 ngày 04/03/2026"
    assert short.after(short.before(due, wd(1)), wd(1)) == due


# --- before / after ----------------------------------------------------------------------


def test_before_in_calendar_days_is_n_days_earlier_clamped_to_working_time() -> None:
    assert format_local(cal.before(vn(2026, 3, 12, 17, 0), cd(3))) == "17:00 ngày 09/03/2026"
    assert format_local(cal.before(vn(2026, 2, 23, 17, 0), cd(10))) == "17:00 ngày 13/02/2026"
    # Sunday 22 Feb 10:00 is a day off, in Tết's wake: the last close before it
    assert format_local(cal.before(vn(2026, 2, 25, 10, 0), cd(3))) == "17:00 ngày 13/02/2026"
    # at lunch: the morning's close
    assert format_local(cal.before(vn(2026, 3, 12, 12, 30), cd(3))) == "12:00 ngày 09/03/2026"


def test_after_in_calendar_days_ending_on_a_day_off_ends_next_working_day__art_148_5() -> None:
    t = vn(2026, 2, 2, 17, 0)
    assert format_local(cal.after(t, cd(15))) == close("23/02/2026")
    assert cal.after(t, cd(15)) == cal.deadline(t, cd(15))
    assert format_local(cal.after(vn(2026, 3, 2, 17, 0), cd(3))) == close("05/03/2026")


def test_after_within_the_day() -> None:
    assert format_local(cal.after(vn(2026, 3, 2, 10, 0), TODAY)) == close("02/03/2026")
    assert format_local(cal.after(vn(2026, 3, 2, 17, 0), TODAY)) == close("03/03/2026")
    assert format_local(cal.after(vn(2026, 3, 7, 10, 0), TODAY)) == close("09/03/2026")


def test_before_after_and_extend_keep_working_over_the_new_year_swap() -> None:
    due = cal.deadline(vn(2025, 12, 31, 10, 0), wd(5))  # Fri 9 Jan 17:00
    back = cal.before(due, wd(5))
    assert format_local(back) == "08:00 ngày 05/01/2026"
    assert cal.after(back, wd(5)) == due
    assert format_local(cal.extend(due, 8 * 3600)) == close("10/01/2026")  # the worked Saturday


def test_compressed_calendar_accepts_every_unit() -> None:
    c = CompressedCalendar(day=60)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert c.deadline(t, cd(5)) == t + timedelta(minutes=5)
    assert c.deadline(t, TODAY) == t + timedelta(minutes=1)
    assert c.deadline(t, wh(4)) == t + timedelta(seconds=30)
    assert c.before(t, cd(2)) == t - timedelta(minutes=2)
    assert c.after(t, TODAY) == t + timedelta(minutes=1)
    assert c.with_office(HCMC) is c


# --- overrides ---------------------------------------------------------------------------

DOCUMENT_NUMBER = re.compile(r"\b\d+/[0-9A-ZĐ-]+\b.*\bngày \d{1,2}/\d{1,2}/\d{4}\b")


def test_every_shipped_override_cites_a_document_number_and_its_date() -> None:
    shipped = CalendarOverrides.shipped()
    entries = shipped.days_off + shipped.working_days
    assert entries
    for e in entries:
        assert e.reason.strip()
        assert DOCUMENT_NUMBER.search(e.source), e.source


def test_shipped_overrides_hold_the_new_year_2026_swap__cv_12729_vpcp_kgvx_2025() -> None:
    shipped = CalendarOverrides.shipped()
    assert date(2026, 1, 2) in shipped.off_dates
    assert date(2026, 1, 10) in shipped.working_dates
    assert all("12729/VPCP-KGVX" in e.source for e in shipped.days_off + shipped.working_days)


def test_an_extra_file_is_layered_over_the_shipped_one(tmp_path: Path) -> None:
    f = tmp_path / "province.yaml"
    f.write_text(
        "days_off:\n"
        "  - {date: 2026-01-10, reason: 'test: province keeps Saturday off',"
        " source: 'Quyết định 9/QĐ-UBND ngày 05/01/2026'}\n"
        "  - {date: 2026-12-01, reason: provincial day,"
        " source: 'Quyết định 10/QĐ-UBND ngày 01/11/2026'}\n",
        "utf-8",
    )
    c = WorkingCalendar.load(f)
    assert not c.is_working_day(date(2026, 1, 10))  # the extra file wins
    assert not c.is_working_day(date(2026, 1, 2))  # the shipped day off stays
    assert not c.is_working_day(date(2026, 12, 1))
    assert WorkingCalendar.load(None) == WorkingCalendar()


def test_an_override_without_its_source_is_refused_naming_the_file(tmp_path: Path) -> None:
    f = tmp_path / "calendar.yaml"
    f.write_text("days_off:\n  - {date: 2026-12-01, reason: provincial day}\n", "utf-8")
    with pytest.raises(
        ValueError, match=r"calendar\.yaml[\s\S]*days_off\.0\.source\s+Field required"
    ):
        CalendarOverrides.load(f)


def test_the_old_list_of_dates_format_is_refused_naming_the_file(tmp_path: Path) -> None:
    f = tmp_path / "old.yaml"
    f.write_text("days_off: [2026-12-01]\n", "utf-8")
    with pytest.raises(ValueError, match=r"old\.yaml"):
        CalendarOverrides.load(f)


def test_a_day_both_off_and_working_is_refused() -> None:
    src = "Quyết định 1/QĐ-UBND ngày 01/11/2026"
    day = OverrideDay(date=date(2026, 12, 1), reason="x", source=src)
    with pytest.raises(ValueError, match="2026-12-01"):
        CalendarOverrides(days_off=[day], working_days=[day])


# --- issue 23: the 15:00 cut-off and the start of a period in days ----------------------------

NEXT_DAY = HCMC.model_copy(update={"after_cutoff": AfterCutoff.NEXT_DAY})
next_day = cal.with_office(NEXT_DAY)


def test_the_default_after_cutoff_is_same_day_as_the_governing_texts_give__civil_code_art_147_2() -> (
    None
):
    # Decree 61/2018/NĐ-CP Art. 18(2): after 15:00 the dossier is *transferred* at the start
    # of the next working day; the period is counted by Civil Code Art. 147(2).
    assert OfficeHours().after_cutoff is AfterCutoff.SAME_DAY
    assert HCMC.after_cutoff is AfterCutoff.SAME_DAY
    assert "Art. 18(2)" in (AfterCutoff.__doc__ or "") and "Art. 147(2)" in (
        AfterCutoff.__doc__ or ""
    )


def test_shipped_province_sets_its_rule_with_its_source__decree_61_2018_art_18_2() -> None:
    from contracts.agencies import default_book

    hours = default_book().province("H29").office_hours
    assert hours.after_cutoff is AfterCutoff.SAME_DAY
    assert "khoản 2 Điều 18" in (hours.legal_basis or "")
    assert "khoản 2 Điều 147" in (hours.legal_basis or "")


@pytest.mark.parametrize(
    ("calendar", "expected"),
    [(hcmc, "03/03/2026"), (next_day, "04/03/2026")],
    ids=["same_day", "next_day"],
)
def test_monday_16h_plus_one_working_day_by_the_province_setting(
    calendar: WorkingCalendar, expected: str
) -> None:
    received = vn(2026, 3, 2, 16, 0)  # Monday, after the 15:00 cut-off
    assert format_local(calendar.deadline(received, wd(1))) == close(expected)


@pytest.mark.parametrize("calendar", [hcmc, next_day], ids=["same_day", "next_day"])
def test_before_the_cutoff_the_setting_changes_nothing(calendar: WorkingCalendar) -> None:
    received = vn(2026, 3, 2, 9, 0)
    assert format_local(calendar.deadline(received, wd(3))) == close("05/03/2026")
    assert format_local(calendar.deadline(received, cd(3))) == close("05/03/2026")


def test_next_day_moves_calendar_days_and_a_day_off_receipt_too() -> None:
    friday_late = vn(2026, 3, 6, 16, 0)  # Friday 16:00: deemed received Monday 9 March
    assert format_local(hcmc.deadline(friday_late, cd(3))) == close("09/03/2026")
    assert format_local(next_day.deadline(friday_late, cd(3))) == close("12/03/2026")
    saturday = vn(2026, 3, 7, 10, 0)
    assert format_local(hcmc.deadline(saturday, wd(1))) == close("09/03/2026")
    assert format_local(next_day.deadline(saturday, wd(1))) == close("10/03/2026")


@pytest.mark.parametrize("calendar", [hcmc, next_day], ids=["same_day", "next_day"])
def test_hours_and_within_the_day_follow_the_cutoff_whatever_the_setting(
    calendar: WorkingCalendar,
) -> None:
    received = vn(2026, 3, 2, 16, 0)
    assert format_local(calendar.deadline(received, wh(8))) == close("03/03/2026")
    within = Duration(value=0, unit=TimeUnit.WITHIN_THE_DAY)
    assert format_local(calendar.deadline(received, within)) == close("03/03/2026")
