"""Each procedure's route (steps) as the routing service will run it: who acts (agency,
department, role), what kind of step it is, and a budget per step that adds up to the legal
processing time. The loader refuses a route that breaks the rule and names the file and the
field."""

from __future__ import annotations

import copy
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.agencies import AgencyBook, default_book
from contracts.common import ActingRole, Duration, Procedure, StepKind, TimeUnit
from services.intake.domain import CATALOGUE_DIR, Catalogue, CatalogueError, step_problems

TODAY = date(2026, 11, 23)
SHIPPED = 14  # 13 procedures and the Decree 63/2024 death group
DEATH_GROUP = "2.002913"  # replaces 2.002622 (Quyết định 3582/QĐ-UBND of Hải Phòng, secondary)

R, AP, C, W, A, RT = (
    StepKind.RECEIVE,
    StepKind.APPRAISE,
    StepKind.CONSULT,
    StepKind.WORK,
    StepKind.APPROVE,
    StepKind.RETURN,
)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


@pytest.fixture(scope="module")
def book() -> AgencyBook:
    return default_book()


def current(catalogue: Catalogue, code: str) -> Procedure:
    return catalogue.in_force(code, TODAY)


def route(p: Procedure) -> list[tuple[Any, ...]]:
    return [
        (s.kind, s.agency_id, s.department, s.role, s.duration.value, s.duration.unit)
        for s in p.steps
    ]


def spent(p: Procedure) -> int:
    """The budgets added up as the rule adds them, counted here on their own."""
    total = 0
    for s in p.steps:
        d = s.duration
        if p.processing_time.unit is TimeUnit.CALENDAR_DAYS:
            assert d.unit is TimeUnit.CALENDAR_DAYS, (p.code, s.order)
            total += d.value
        else:
            assert d.unit in (TimeUnit.WORKING_DAYS, TimeUnit.WORKING_HOURS), (p.code, s.order)
            total += d.value * (8 if d.unit is TimeUnit.WORKING_DAYS else 1)
    return total


def legal_total(p: Procedure) -> int:
    t = p.processing_time
    return {
        TimeUnit.CALENDAR_DAYS: t.value,
        TimeUnit.WORKING_DAYS: t.value * 8,
        TimeUnit.WORKING_HOURS: t.value,
        TimeUnit.WITHIN_THE_DAY: 8,
    }[t.unit]


# --- the shipped catalogue -------------------------------------------------------------------


def test_the_rule_accepts_the_shipped_catalogue(catalogue: Catalogue, book: AgencyBook) -> None:
    for p in catalogue.all():
        assert step_problems(p, book) == [], p.code


def test_every_shipped_procedure_now_carries_steps(catalogue: Catalogue) -> None:
    procedures = catalogue.all()
    assert len(procedures) == SHIPPED
    for p in procedures:
        assert p.steps, p.code
        kinds = [s.kind for s in p.steps]
        assert kinds[0] is R and kinds[-1] is RT, p.code
        assert kinds.count(A) == 1, p.code
        assert kinds.count(C) == (1 if p.consultations else 0), p.code
        assert [s.order for s in p.steps] == list(range(1, len(p.steps) + 1)), p.code
        assert p.steps[0].agency_id == p.steps[-1].agency_id == p.receiving_agency, p.code


@pytest.mark.parametrize("code", sorted({p.code for p in Catalogue.load().all()}))
def test_budgets_of_each_shipped_version_add_up_to_its_processing_time(
    catalogue: Catalogue, code: str
) -> None:
    for p in catalogue.versions[code]:
        assert spent(p) == legal_total(p), (code, p.version)
        assert p.steps[0].duration.value == 0
        assert all(s.duration.value > 0 for s in p.steps[1:])
        assert all(s.duration.legal_basis for s in p.steps)


def test_departments_named_exist_and_approvals_are_signed_by_a_head(
    catalogue: Catalogue, book: AgencyBook
) -> None:
    for p in catalogue.all():
        for s in p.steps:
            if s.department is not None:
                book.get(s.agency_id).department(s.department)  # raises if unknown
            if s.kind is A:
                assert s.role.rank >= ActingRole.DEPARTMENT_HEAD.rank, (p.code, s.order)
                assert s.agency_id == p.lead_agency, p.code
            if s.kind in (AP, C, W, R, RT):
                assert s.role is ActingRole.OFFICER, (p.code, s.order)


def test_birth_group_is_three_agencies_in_sequence__decree_63_2024(catalogue: Catalogue) -> None:
    p = current(catalogue, "3.000722")
    h = TimeUnit.WORKING_HOURS
    officer, head = ActingRole.OFFICER, ActingRole.AGENCY_HEAD
    assert route(p) == [
        (R, "000.01.50.H29", "TNTKQ", officer, 0, h),
        (A, "000.00.50.H29", "TPHT", head, 4, h),
        (W, "000.03.30.H29", "CUTRU", officer, 8, h),
        (W, "000.00.32.H29", "THE", officer, 8, h),
        (RT, "000.01.50.H29", "TNTKQ", officer, 4, h),
    ]
    assert [s.produces for s in p.steps[1:4]] == [
        "Giấy khai sinh (bản điện tử)",
        "Thông tin thường trú cập nhật vào Cơ sở dữ liệu về cư trú",
        "Thẻ bảo hiểm y tế (bản điện tử)",
    ]
    assert (p.processing_time.value, p.processing_time.unit) == (3, TimeUnit.WORKING_DAYS)
    assert len({s.order for s in p.steps}) == len(p.steps)  # no two parts share an order


def test_death_group_has_the_same_shape_and_its_national_code__decree_63_2024(
    catalogue: Catalogue, book: AgencyBook
) -> None:
    p = current(catalogue, DEATH_GROUP)
    assert "khai tử" in p.name and "xóa đăng ký thường trú" in p.name and "mai táng" in p.name
    assert p.group and "63/2024" in p.group
    assert re.fullmatch(r"[0-9]\.[0-9]{6}", p.code)  # a national code, not a local one
    assert "3582/QĐ-UBND" in p.legal_basis  # where the code was read, and that it is secondary
    assert not p.consultations
    assert [s.kind for s in p.steps] == [R, A, W, W, RT]
    assert [book.get(s.agency_id).name for s in p.steps[1:4]] == [
        "Ủy ban nhân dân phường Sài Gòn",
        "Công an phường Sài Gòn",
        "Bảo hiểm xã hội Thành phố Hồ Chí Minh",
    ]
    assert [s.department for s in p.steps[1:4]] == ["TPHT", "CUTRU", "CDBHXH"]
    assert all(s.produces for s in p.steps[1:4])
    assert "cần đối chiếu" in (p.processing_time.legal_basis or "")


def test_building_permit_opens_the_opinion_round_after_receipt__law_on_construction_art_102_1(
    catalogue: Catalogue,
) -> None:
    p = current(catalogue, "1.009972")
    d = TimeUnit.CALENDAR_DAYS
    officer, head = ActingRole.OFFICER, ActingRole.AGENCY_HEAD
    assert route(p) == [
        (R, "000.00.01.H29", "TNTKQ", officer, 0, d),
        (C, "000.00.06.H29", "QLHDXD", officer, 12, d),
        (AP, "000.00.06.H29", "QLHDXD", officer, 4, d),
        (A, "000.00.06.H29", None, head, 3, d),
        (RT, "000.00.01.H29", "TNTKQ", officer, 1, d),
    ]
    assert "12 ngày" in (p.steps[1].duration.legal_basis or "")
    assert "Điều 102" in (p.steps[1].duration.legal_basis or "")


def test_eia_council_appraises_before_the_irrigation_agency_is_asked__law_on_environmental_protection_art_34(
    catalogue: Catalogue,
) -> None:
    # The irrigation-works agency consents to the report the council appraised, before the
    # result is approved (LEP 2020 Art. 34; Circular 02/2022/TT-BTNMT Art. 16): not before
    # the council has met.
    p = current(catalogue, "1.004249")
    assert [s.kind for s in p.steps] == [R, AP, C, A, RT]
    assert "irrigation-works-opinion" in {c.template_id for c in p.consultations}
    assert "thủy lợi" in p.steps[2].action and "hội đồng" in p.steps[2].action
    assert {s.duration.unit for s in p.steps} == {TimeUnit.CALENDAR_DAYS}
    assert sum(s.duration.value for s in p.steps) == 30
    assert p.steps[2].agency_id == p.lead_agency


def test_land_and_company_keep_their_agencies_in_order__decrees_151_2025_and_168_2025(
    catalogue: Catalogue,
) -> None:
    land = current(catalogue, "1.013978")
    assert [s.agency_id for s in land.steps] == [
        "000.01.50.H29",
        "000.00.50.H29",
        "000.01.08.H29",
        "000.01.31.H29",
        "000.00.50.H29",
        "000.01.50.H29",
    ]
    assert [s.kind for s in land.steps] == [R, AP, W, W, A, RT]
    company = current(catalogue, "1.005370")
    assert [s.agency_id for s in company.steps] == [
        "000.00.01.H29",
        "000.01.05.H29",
        "000.00.31.H29",
        "000.01.05.H29",
        "000.00.32.H29",
        "000.00.01.H29",
    ]
    assert [s.kind for s in company.steps] == [R, AP, W, A, W, RT]


# --- the rule refuses, naming the file and the field ----------------------------------------


def shipped_entry(file: str, code: str) -> dict[str, Any]:
    raw = yaml.safe_load((CATALOGUE_DIR / file).read_text("utf-8"))
    return copy.deepcopy(next(e for e in raw if e["code"] == code))


def refused(tmp_path: Path, file: str, entry: dict[str, Any]) -> str:
    (tmp_path / file).write_text(yaml.safe_dump([entry], allow_unicode=True), "utf-8")
    with pytest.raises(CatalogueError) as err:
        Catalogue.load(tmp_path)
    return str(err.value)


PERMIT = ("construction_land.yaml", "1.009972")
BIRTH = ("civil.yaml", "3.000722")
MARRIAGE = ("civil.yaml", "1.000894")


def test_refuses_budgets_one_day_short(tmp_path: Path) -> None:
    e = shipped_entry(*PERMIT)
    e["steps"][2]["duration"]["value"] -= 1
    assert (
        "construction_land.yaml: procedure 1.009972 v1: field steps: budgets add up to 19"
        " calendar days, processing_time is 20 calendar days"
    ) in refused(tmp_path, PERMIT[0], e)


def test_refuses_budgets_one_hour_over(tmp_path: Path) -> None:
    e = shipped_entry(*BIRTH)
    e["steps"][4]["duration"]["value"] += 1
    assert (
        "civil.yaml: procedure 3.000722 v1: field steps: budgets add up to 25 working hours,"
        " processing_time is 3 working days (24 working hours)"
    ) in refused(tmp_path, BIRTH[0], e)


def test_refuses_a_within_the_day_route_longer_than_one_office_day(tmp_path: Path) -> None:
    e = shipped_entry(*MARRIAGE)
    e["steps"][1]["duration"]["value"] += 1
    assert (
        "civil.yaml: procedure 1.000894 v1: field steps: budgets add up to 9 working hours,"
        " processing_time is within the day"
    ) in refused(tmp_path, MARRIAGE[0], e)


def test_refuses_working_units_in_a_calendar_day_route(tmp_path: Path) -> None:
    e = shipped_entry(*PERMIT)
    e["steps"][3]["duration"] = {"value": 3, "unit": "working_days", "legal_basis": "Phân bổ"}
    msg = refused(tmp_path, PERMIT[0], e)
    assert re.search(
        r"construction_land\.yaml: procedure 1\.009972 v1: field steps\.duration of step 4:"
        r" unit working_days, but processing_time is in calendar_days",
        msg,
    ), msg


def test_refuses_calendar_days_in_a_working_day_route(tmp_path: Path) -> None:
    e = shipped_entry(*BIRTH)
    e["steps"][2]["duration"] = {"value": 1, "unit": "calendar_days", "legal_basis": "Phân bổ"}
    msg = refused(tmp_path, BIRTH[0], e)
    assert "civil.yaml: procedure 3.000722 v1: field steps.duration of step 3" in msg
    assert "every step is in working_days or working_hours" in msg


def test_refuses_a_route_without_its_receive_step(tmp_path: Path) -> None:
    e = shipped_entry(*PERMIT)
    e["steps"] = e["steps"][1:]
    for i, s in enumerate(e["steps"], 1):
        s["order"] = i
    msg = refused(tmp_path, PERMIT[0], e)
    assert (
        "construction_land.yaml: procedure 1.009972 v1: field steps.kind of step 1: consult,"
        " but the first step is the receive step"
    ) in msg


def test_refuses_a_route_without_its_return_step(tmp_path: Path) -> None:
    e = shipped_entry(*BIRTH)
    e["steps"] = e["steps"][:-1]
    msg = refused(tmp_path, BIRTH[0], e)
    assert (
        "civil.yaml: procedure 3.000722 v1: field steps.kind of step 4: work, but the last step"
        " is the return step"
    ) in msg


def test_refuses_a_receive_step_at_another_agency(tmp_path: Path) -> None:
    e = shipped_entry(*BIRTH)
    e["steps"][0]["agency_id"] = "000.00.50.H29"
    e["steps"][0].pop("department")
    assert (
        "civil.yaml: procedure 3.000722 v1: field steps.agency_id of step 1: 000.00.50.H29,"
        " but the receive step is at the receiving agency 000.01.50.H29"
    ) in refused(tmp_path, BIRTH[0], e)


def test_refuses_two_approve_steps(tmp_path: Path) -> None:
    e = shipped_entry(*BIRTH)
    e["steps"][3]["kind"] = "approve"
    e["steps"][3]["agency_id"] = "000.00.50.H29"
    e["steps"][3]["role"] = "agency_head"
    e["steps"][3].pop("department")
    assert (
        "civil.yaml: procedure 3.000722 v1: field steps: 2 approve steps (step 2, step 4),"
        " but a route has exactly one"
    ) in refused(tmp_path, BIRTH[0], e)


def test_refuses_an_approval_by_an_officer(tmp_path: Path) -> None:
    e = shipped_entry(*PERMIT)
    e["steps"][3]["role"] = "officer"
    assert "field steps.role of step 4: officer" in refused(tmp_path, PERMIT[0], e)


def test_refuses_a_consult_step_without_consultations(tmp_path: Path) -> None:
    e = shipped_entry(*BIRTH)
    e["steps"][2]["kind"] = "consult"
    e["steps"][2]["agency_id"] = "000.00.50.H29"
    e["steps"][2]["department"] = "TPHT"
    assert (
        "civil.yaml: procedure 3.000722 v1: field steps.kind of step 3: consult, but the"
        " version has no consultations"
    ) in refused(tmp_path, BIRTH[0], e)


def test_refuses_consultations_without_a_consult_step(tmp_path: Path) -> None:
    e = shipped_entry(*PERMIT)
    e["steps"][1]["kind"] = "appraise"
    msg = refused(tmp_path, PERMIT[0], e)
    assert (
        "construction_land.yaml: procedure 1.009972 v1: field steps: the version has"
        " consultations but no consult step"
    ) in msg
    e.pop("steps")  # and without any route at all
    assert "field steps: the version has consultations, so its route needs a consult step" in (
        refused(tmp_path, PERMIT[0], e)
    )


def test_a_version_without_steps_or_consultations_is_accepted(tmp_path: Path) -> None:
    e = shipped_entry(*MARRIAGE)
    e.pop("steps")
    (tmp_path / "civil.yaml").write_text(yaml.safe_dump([e], allow_unicode=True), "utf-8")
    assert not Catalogue.load(tmp_path).in_force("1.000894", TODAY).steps


def test_refuses_an_unknown_department(tmp_path: Path) -> None:
    e = shipped_entry(*PERMIT)
    e["steps"][2]["department"] = "QLXD-CU"
    assert (
        "construction_land.yaml: procedure 1.009972 v1: field steps.department of step 3:"
        " 000.00.06.H29 has no department 'QLXD-CU' in the agency registry (its departments:"
        " QLHDXD)"
    ) in refused(tmp_path, PERMIT[0], e)


def test_refuses_orders_that_do_not_run_in_sequence(tmp_path: Path) -> None:
    e = shipped_entry(*BIRTH)
    e["steps"][3]["order"] = 3  # the old shape: two parts sharing an order
    assert (
        "civil.yaml: procedure 3.000722 v1: field steps: orders are 1, 2, 3, 3, 5, but they"
        " must run 1..5 in sequence"
    ) in refused(tmp_path, BIRTH[0], e)


def test_refuses_a_receive_step_with_a_budget(tmp_path: Path) -> None:
    e = shipped_entry(*PERMIT)
    e["steps"][0]["duration"]["value"] = 1
    e["steps"][2]["duration"]["value"] -= 1
    assert (
        "field steps.duration of step 1: 1 calendar_days, but the receive step is done at"
        " receipt, its budget is 0"
    ) in refused(tmp_path, PERMIT[0], e)


def test_each_problem_names_its_own_file(tmp_path: Path) -> None:
    permit, birth = shipped_entry(*PERMIT), shipped_entry(*BIRTH)
    permit["steps"][1]["duration"]["value"] = 11
    birth["steps"][1]["duration"]["value"] = 3
    for file, entry in (("construction_land.yaml", permit), ("civil.yaml", birth)):
        (tmp_path / file).write_text(yaml.safe_dump([entry], allow_unicode=True), "utf-8")
    with pytest.raises(CatalogueError) as err:
        Catalogue.load(tmp_path)
    msg = str(err.value)
    assert "civil.yaml: procedure 3.000722 v1: field steps: budgets add up to 23" in msg
    assert "construction_land.yaml: procedure 1.009972 v1: field steps: budgets add up to 19" in msg


def test_step_problems_is_pure_and_mixes_working_days_and_hours(
    catalogue: Catalogue, book: AgencyBook
) -> None:
    p = current(catalogue, "1.005370")  # 1 working day and 4-hour steps in a 3-day total
    assert {s.duration.unit for s in p.steps} == {TimeUnit.WORKING_DAYS, TimeUnit.WORKING_HOURS}
    assert step_problems(p, book) == []
    steps = list(p.steps)
    steps[1] = steps[1].model_copy(
        update={"duration": Duration(value=2, unit=TimeUnit.WORKING_DAYS, legal_basis="x")}
    )
    longer = p.model_copy(update={"steps": tuple(steps)})
    assert step_problems(longer, book) == [
        "field steps: budgets add up to 32 working hours, processing_time is 3 working days"
        " (24 working hours)"
    ]
