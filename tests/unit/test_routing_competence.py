"""Territorial competence (issue 23, item 3): a commune-level dossier is decided by the
commune the procedure names (the applicant's residence, the land's, or the receiving one
for a procedure done regardless of administrative boundaries), whichever ward's desk
received it; the book maps a catalogue step by the kind of its body, not by its name."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from contracts.agencies import BodyKind, CompetenceError, default_book
from contracts.common import (
    Competence,
    CompetenceLevel,
    Procedure,
    ReturnMethod,
    StepKind,
)
from contracts.events import StepRef
from services.intake.domain import Catalogue
from services.routing.domain import Locality, Route, localize_procedure, plan_steps
from services.runtime.calendar import WorkingCalendar

VN = ZoneInfo("Asia/Ho_Chi_Minh")
BOOK = default_book()
CATALOGUE = Catalogue.load()
DAY = datetime(2026, 3, 2).date()
# ward A receives; the applicant or the land is in ward B
A, B = BOOK.commune("BEN_THANH"), BOOK.commune("TAN_DINH")
DESK_A = A.bodies[BodyKind.SERVICE_CENTRE]


def _proc(code: str) -> Procedure:
    return CATALOGUE.in_force(code, DAY)


def _birth_group() -> Procedure:
    """The Decree 63/2024 birth group (its code is being checked against the national
    database, so found by name)."""
    (p,) = [x for x in CATALOGUE.current() if "khai sinh, đăng ký thường trú" in x.name]
    return p


def _desk_and_work(refs: tuple[StepRef, ...]) -> tuple[list[str], list[StepRef]]:
    desk = [r.agency_id for r in refs if r.kind in (StepKind.RECEIVE, StepKind.RETURN)]
    work = [r for r in refs if r.kind not in (StepKind.RECEIVE, StepKind.RETURN)]
    return desk, work


def test_the_book_holds_at_least_five_real_wards_each_with_all_its_bodies() -> None:
    """Resolution 1685/NQ-UBTVQH15 of 16/6/2025: the wards of Hồ Chí Minh City."""
    assert len(BOOK.communes) >= 5
    for c in BOOK.communes:
        assert set(c.bodies) == set(BodyKind)
        assert "1685/NQ-UBTVQH15" in c.source
        ubnd = BOOK.get(c.bodies[BodyKind.PEOPLE_COMMITTEE])
        assert ubnd.name == f"Ủy ban nhân dân {c.name}"
        assert {"VP", "TPHT", "VHXH"} <= {d.code for d in ubnd.departments}
        assert BOOK.get(c.bodies[BodyKind.SERVICE_CENTRE]).desk is not None
        police = BOOK.get(c.bodies[BodyKind.POLICE])
        assert police.vertical and "CUTRU" in {d.code for d in police.departments}
    # every commune one-stop desk of the book belongs to a commune of the book
    for desk in BOOK.desks(CompetenceLevel.COMMUNE):
        assert BOOK.commune_of(desk) is not None


def test_every_commune_procedure_names_its_competence_with_an_article() -> None:
    for p in CATALOGUE.current():
        if p.level is CompetenceLevel.COMMUNE:
            assert p.competence is not None, p.code
            basis = p.competence_basis
            assert "Luật" in basis or "Nghị định" in basis, p.code
            # an article, or an honest word that it could not be confirmed
            assert "Điều" in basis or "chưa đối chiếu" in basis, p.code


@pytest.mark.parametrize(
    "code", [p.code for p in CATALOGUE.current() if p.level is CompetenceLevel.COMMUNE]
)
def test_every_commune_procedure_can_be_planned_in_every_commune(code: str) -> None:
    """The departments a step names exist in the same kind of body of every commune."""
    p = _proc(code)
    for c in BOOK.communes:
        plan_steps(p, BOOK, DESK_A, Locality(residence=c.code, property=c.code))


def test_residence_bound_received_at_ward_a_for_an_applicant_of_ward_b_is_decided_by_b() -> None:
    """Birth registration: Law on Civil Status 2014, Art. 13(1), the father's or
    mother's commune; the residence entry by that commune's police (Law on Residence)."""
    p = _birth_group()
    assert p.competence is Competence.RESIDENCE
    refs = plan_steps(p, BOOK, DESK_A, Locality(residence=B.code))
    desk, work = _desk_and_work(refs)
    assert desk == [DESK_A, DESK_A]  # received and returned where it was handed in
    by_kind = {r.kind: r for r in work}
    assert by_kind[StepKind.APPROVE].agency_id == B.bodies[BodyKind.PEOPLE_COMMITTEE]
    assert by_kind[StepKind.APPROVE].agency_name == "Ủy ban nhân dân phường Tân Định"
    assert "Tân Định" in (by_kind[StepKind.APPROVE].department_name or "")
    police = [r for r in work if r.department == "CUTRU"]
    assert [r.agency_id for r in police] == [B.bodies[BodyKind.POLICE]]
    # the social-insurance step is the city's: it stays
    assert "000.00.32.H29" in {r.agency_id for r in work}
    # nothing of phường Sài Gòn (the catalogue's default) or of ward A's UBND is left
    saigon = set(BOOK.commune("SAI_GON").bodies.values())
    assert not saigon & {r.agency_id for r in refs}
    assert A.bodies[BodyKind.PEOPLE_COMMITTEE] not in {r.agency_id for r in refs}
    local = localize_procedure(p, BOOK, DESK_A, Locality(residence=B.code))
    assert local.lead_agency == B.bodies[BodyKind.PEOPLE_COMMITTEE]
    assert local.lead_agency_name == "Ủy ban nhân dân phường Tân Định"


def test_a_route_of_the_localized_procedure_has_ward_b_as_its_lead() -> None:
    p = localize_procedure(_proc("1.000894"), BOOK, DESK_A, Locality(residence=B.code))
    at = datetime(2026, 3, 2, 8, 0, tzinfo=VN)
    route = Route.start(
        code=f"{DESK_A}-260302-0001",
        procedure=p,
        receiving_agency=DESK_A,
        receiving_agency_name=BOOK.get(DESK_A).name,
        book=BOOK,
        cal=WorkingCalendar().with_office(BOOK.office_hours(DESK_A)),
        received_at=at,
        clock_starts_at=at,
        appointment_at=datetime(2026, 3, 2, 16, 0, tzinfo=VN),
        received_by=None,
        return_method=ReturnMethod.AT_DESK,
        now=at,
    )
    assert route.lead_agency == B.bodies[BodyKind.PEOPLE_COMMITTEE]
    assert route.steps[1].ref.agency_id == B.bodies[BodyKind.PEOPLE_COMMITTEE]
    assert route.steps[-1].ref.agency_id == DESK_A


def test_a_boundary_free_procedure_is_decided_by_the_receiving_ward() -> None:
    """A copy of a civil-status extract: Law on Civil Status 2014, Art. 63(1), and
    Decree 118/2025/NĐ-CP (procedures done regardless of administrative boundaries)."""
    p = _proc("2.000635")
    assert p.competence is Competence.RECEIVING
    refs = plan_steps(p, BOOK, DESK_A, Locality(residence=B.code))
    desk, work = _desk_and_work(refs)
    assert desk == [DESK_A, DESK_A]
    assert {r.agency_id for r in work} == {A.bodies[BodyKind.PEOPLE_COMMITTEE]}


def test_a_property_bound_procedure_goes_to_the_lands_ward() -> None:
    """First land registration: the commune where the land lies (Land Law 2024; Decree
    151/2025/NĐ-CP); the city's land registration office and tax office stay."""
    p = _proc("1.013978")
    assert p.competence is Competence.PROPERTY
    c = BOOK.commune("XOM_CHIEU")
    refs = plan_steps(p, BOOK, DESK_A, Locality(residence=B.code, property=c.code))
    desk, work = _desk_and_work(refs)
    assert desk == [DESK_A, DESK_A]
    ward = [r.agency_id for r in work if r.kind in (StepKind.APPRAISE, StepKind.APPROVE)]
    assert ward == [c.bodies[BodyKind.PEOPLE_COMMITTEE]] * 2
    assert {"000.01.08.H29", "000.01.31.H29"} <= {r.agency_id for r in work}
    # a household business: the ward's economy office where its seat lies
    refs = plan_steps(_proc("1.001612"), BOOK, DESK_A, Locality(property=c.code))
    assert {r.agency_id for r in _desk_and_work(refs)[1]} == {c.bodies[BodyKind.ECONOMY]}


@pytest.mark.parametrize(
    ("code", "locality", "field"),
    [
        ("1.001193", Locality(residence="PHU_LAM_CU"), "applicant.commune"),
        ("1.009973", Locality(property="KHONG_CO"), "property_commune"),
    ],
)
def test_a_commune_the_book_does_not_know_is_refused_naming_the_field(
    code: str, locality: Locality, field: str
) -> None:
    with pytest.raises(CompetenceError) as e:
        plan_steps(_proc(code), BOOK, DESK_A, locality)
    assert e.value.field == field
    assert field in e.value.reason and "không có trong danh mục" in e.value.reason


def test_without_a_locality_the_receiving_ward_decides_and_old_plans_are_unchanged() -> None:
    p = _proc("1.001193")
    refs = plan_steps(p, BOOK, DESK_A, Locality())
    assert {r.agency_id for r in _desk_and_work(refs)[1]} == {A.bodies[BodyKind.PEOPLE_COMMITTEE]}
    # no locality at all (an already localized procedure, or a province one): as before
    assert plan_steps(p, BOOK, DESK_A) == plan_steps(p, BOOK, DESK_A, None)
    province = _proc("1.009972")
    assert plan_steps(province, BOOK, None, Locality(residence=B.code)) == plan_steps(
        province, BOOK
    )


def test_the_bench_load_spreads_commune_decisions_over_the_wards() -> None:
    from bench.pipeline import mix

    deciders: set[str] = set()
    for k in mix():
        p = _proc(k.procedure)
        if p.level is not CompetenceLevel.COMMUNE:
            continue
        where = Locality(k.body["applicant"].get("commune"), k.body.get("property_commune"))
        found = BOOK.commune_of(localize_procedure(p, BOOK, k.desk, where).lead_agency)
        assert found is not None
        deciders.add(found[0].code)
    assert deciders == {c.code for c in BOOK.communes} and len(deciders) >= 5


def test_a_dossier_received_at_another_wards_centre_names_that_centre() -> None:
    """Forms and events name the desk that received the dossier, not the catalogue's."""
    from services.intake.desk import _desk_name
    from services.intake.domain import Catalogue

    book = default_book()
    p = Catalogue.load().all()[0]
    here = _desk_name(p, p.receiving_agency)
    assert here == p.receiving_agency_name
    other = next(a for a in book.agencies if a.desk and a.id != p.receiving_agency)
    assert _desk_name(p, other.id) == other.name
