"""A dossier's route without PostgreSQL: steps in sequence across agencies, hand-overs,
pauses, decision, result, return, lateness and apologies (routing's domain)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from contracts.agencies import default_book
from contracts.common import (
    ActingRole,
    Consulted,
    DocumentRef,
    DossierStatus,
    Duration,
    MissingItem,
    Procedure,
    RequiredDocument,
    ReturnMethod,
    Step,
    StepKind,
    Timeliness,
    TimeUnit,
)
from contracts.events import (
    ApologyDrafted,
    ApologyEscalated,
    ApologyIssued,
    DossierRouted,
    HandedOver,
    ProcessingSupplementRequested,
    ResultDecision,
    ResultReady,
    StepOverdue,
)
from services.routing.domain import (
    APOLOGY_DUE,
    RISK,
    STEP_DUE,
    Officer,
    Refusal,
    Route,
    RouteError,
    classify,
    latest_apology_moment,
)
from services.runtime.calendar import WorkingCalendar

VN = ZoneInfo("Asia/Ho_Chi_Minh")
BOOK = default_book()
CAL = WorkingCalendar().with_office(BOOK.office_hours("000.01.50.H29"))  # 07:30-11:30, 13-17
DESK, WARD, POLICE, SOCIAL = "000.01.50.H29", "000.00.50.H29", "000.03.30.H29", "000.00.32.H29"


def wh(n: int) -> Duration:
    return Duration(value=n, unit=TimeUnit.WORKING_HOURS, legal_basis="phân bổ nội bộ")


BIRTH = Procedure(
    code="2.000986",
    version=1,
    effective_from=datetime(2025, 7, 1).date(),
    name="Liên thông khai sinh, thường trú, thẻ bảo hiểm y tế",
    field="Hộ tịch",
    legal_basis="Nghị định 63/2024/NĐ-CP",
    level="commune",
    processing_time=Duration(value=3, legal_basis="Nghị định 63/2024/NĐ-CP"),
    required_documents=(
        RequiredDocument(code="TK", name="Tờ khai điện tử liên thông"),
        RequiredDocument(code="GCS", name="Giấy chứng sinh"),
    ),
    receiving_agency=DESK,
    receiving_agency_name="Trung tâm Phục vụ hành chính công phường Sài Gòn",
    lead_agency=WARD,
    lead_agency_name="Ủy ban nhân dân phường Sài Gòn",
    steps=(
        Step(order=1, kind=StepKind.RECEIVE, agency_id=DESK, action="Tiếp nhận", duration=wh(0)),
        Step(
            order=2,
            kind=StepKind.APPROVE,
            agency_id=WARD,
            role=ActingRole.AGENCY_HEAD,
            action="Đăng ký khai sinh",
            duration=wh(4),
        ),
        Step(order=3, agency_id=POLICE, action="Đăng ký thường trú", duration=wh(8)),
        Step(order=4, agency_id=SOCIAL, action="Cấp thẻ bảo hiểm y tế", duration=wh(8)),
        Step(order=5, kind=StepKind.RETURN, agency_id=DESK, action="Trả kết quả", duration=wh(4)),
    ),
)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment of the week of Monday 9 March 2026 (no holiday), local time."""
    return datetime(2026, 3, day, hour, minute, tzinfo=VN)


def officer(agency: str, role: str = "officer", person: str | None = None) -> Officer:
    return Officer(agency_id=agency, role=role, person=person or f"{role}@{agency}")


def start(procedure: Procedure = BIRTH, received: datetime | None = None) -> Route:
    received = received or at(9, 9)
    appointment = CAL.deadline(received, procedure.processing_time)
    return Route.start(
        code=f"{DESK}-260309-0001",
        procedure=procedure,
        receiving_agency=procedure.receiving_agency,
        receiving_agency_name=procedure.receiving_agency_name,
        book=BOOK,
        cal=CAL,
        received_at=received,
        clock_starts_at=CAL.clock_start(received),
        appointment_at=appointment,
        received_by="Lê Thị Hoa",
        return_method=ReturnMethod.AT_DESK,
        now=received + timedelta(seconds=1),
    )


def kinds(route: Route) -> list[str]:
    return [type(e).__name__ for e in route.take_events()]


def test_a_birth_dossier_goes_through_three_agencies_in_sequence() -> None:
    route = start()
    assert route.appointment_at == at(12, 17)  # 3 working days after Monday
    routed = route.take_events()[0]
    assert isinstance(routed, DossierRouted) and routed.step is not None
    assert routed.step.agency_id == WARD and not routed.opens_round
    assert routed.handover is not None and routed.handover.giver.person == "Lê Thị Hoa"
    assert route.steps[1].deadline_at == at(9, 14, 30)  # 4 working hours from 09:00

    with pytest.raises(RouteError) as e:
        route.decide(
            officer(WARD),
            at(9, 10),
            CAL,
            decision=ResultDecision.APPROVED,
            documents=[DocumentRef(code="GKS")],
            reasons=[],
        )
    assert e.value.kind is Refusal.FORBIDDEN and e.value.field == "role"
    route.decide(
        officer(WARD, "agency_head"),
        at(9, 10),
        CAL,
        decision=ResultDecision.APPROVED,
        documents=[DocumentRef(code="GKS")],
        reasons=[],
    )
    assert [type(e).__name__ for e in route.take_events()] == [
        "StepCompleted",
        "DossierDecided",
        "HandedOver",
    ]
    assert route.open_step is not None and route.open_step.ref.agency_id == POLICE

    route.take(officer(POLICE), 3, at(9, 10, 30))
    route.complete(officer(POLICE), 3, at(9, 15), CAL, result="Đã đăng ký thường trú")
    route.take(officer(SOCIAL), 4, at(10, 8))
    route.complete(officer(SOCIAL), 4, at(10, 9), CAL, result="Thẻ BHYT số ...")
    route.mark_ready(officer(DESK), at(10, 10), CAL)
    ready = next(e for e in route.take_events() if isinstance(e, ResultReady))
    assert ready.timeliness is Timeliness.EARLY and ready.state is DossierStatus.RESULT_READY
    assert [h.receiver.agency_id for h in ready.handovers] == [WARD, POLICE, SOCIAL, DESK]
    assert all(h.giver_timeliness is not Timeliness.LATE for h in ready.handovers)
    route.return_result(officer(DESK), at(10, 11), CAL, ReturnMethod.AT_DESK)
    assert route.state is DossierStatus.RETURNED and route.state.portal == 10


def test_wrong_moves_are_conflicts_and_strangers_are_forbidden() -> None:
    route = start()
    with pytest.raises(RouteError) as e:
        route.complete(officer(POLICE), 3, at(9, 10), CAL)
    assert e.value.kind is Refusal.CONFLICT and "bước 3 không phải bước hiện tại" in e.value.reason
    with pytest.raises(RouteError) as e:
        route.take(officer(POLICE), 2, at(9, 10))
    assert e.value.kind is Refusal.CONFLICT and e.value.field == "agency"
    with pytest.raises(RouteError) as e:
        route.take(officer("000.00.06.H29"), 2, at(9, 10))
    assert e.value.kind is Refusal.FORBIDDEN
    with pytest.raises(RouteError) as e:
        route.mark_ready(officer(DESK), at(9, 10), CAL)
    assert e.value.kind is Refusal.CONFLICT
    route.close(DossierStatus.WITHDRAWN, "rút", at(9, 11))
    with pytest.raises(RouteError) as e:
        route.take(officer(WARD, "agency_head"), 2, at(9, 12))
    assert e.value.kind is Refusal.CONFLICT and "đã kết thúc" in e.value.reason


def test_a_late_step_is_attributed_and_an_unsigned_apology_escalated_at_its_latest_moment() -> None:
    route = start()
    route.decide(
        officer(WARD, "agency_head"),
        at(9, 10),
        CAL,
        decision=ResultDecision.APPROVED,
        documents=[DocumentRef(code="GKS")],
        reasons=[],
    )
    route.take_events()
    police = route.open_step
    assert police is not None and police.deadline_at == at(10, 10)  # 8 working hours
    plan = {p.kind: p.due_at for p in route.timer_plan(CAL, 16 * 3600, at(9, 10))}
    assert plan[STEP_DUE] == at(10, 10) + timedelta(seconds=1)  # the first working second lost
    assert plan[RISK] == at(11, 13) + timedelta(seconds=1)  # 12 working hours before Thu 17:00

    route.on_step_due(at(10, 10, 1), CAL)
    overdue = route.take_events()
    assert isinstance(overdue[0], StepOverdue) and overdue[0].fault.agency_id == POLICE
    assert len(overdue) == 1  # late, but the rest still fits

    route.on_risk(at(11, 13, 5), CAL)
    drafted = route.take_events()[0]
    assert isinstance(drafted, ApologyDrafted) and drafted.agency_id == POLICE
    assert drafted.latest_issue_at == at(11, 17)  # one working day before Thursday 17:00
    assert drafted.proposed_appointment_at > route.appointment_at
    plan = {p.kind: p for p in route.timer_plan(CAL, 16 * 3600, at(11, 13, 5))}
    assert plan[APOLOGY_DUE].due_at == at(11, 17) and RISK not in plan

    route.on_apology_due(drafted.apology_id, at(11, 17, 1), CAL)
    (escalated,) = route.take_events()  # never sent unsigned: the superior is told
    assert isinstance(escalated, ApologyEscalated) and escalated.agency_id == POLICE
    assert escalated.superior and escalated.head and "17:00" not in escalated.superior
    assert escalated.latest_issue_at == at(11, 17) and route.appointment_at == at(12, 17)
    assert APOLOGY_DUE not in {p.kind for p in route.timer_plan(CAL, 16 * 3600, at(11, 17, 1))}
    route.confirm_apology(
        officer(POLICE, "agency_head", "truong-ca"),
        drafted.apology_id,
        at(12, 8),
        CAL,
        reason="Chậm cập nhật cơ sở dữ liệu cư trú",
        appointment=at(16, 17),
        number="12/PXL-CAP",
        signer_name="Trần Văn Bình",
    )
    issued = route.take_events()[0]
    assert isinstance(issued, ApologyIssued) and not issued.automatic and not issued.repeat
    assert issued.after_latest_moment  # signed after Wednesday 17:00: flagged
    assert (issued.document_number, issued.signer_name) == ("12/PXL-CAP", "Trần Văn Bình")
    assert issued.previous_appointment_at == at(12, 17)
    assert route.appointment_at == issued.appointment_at == at(16, 17)

    route.take(officer(POLICE), 3, at(12, 8, 30))
    route.complete(officer(POLICE), 3, at(12, 9), CAL)
    route.take(officer(SOCIAL), 4, at(12, 9, 30))
    route.complete(officer(SOCIAL), 4, at(12, 16), CAL)
    route.mark_ready(officer(DESK), at(13, 8), CAL)  # the desk within its 4 hours
    ready = next(e for e in route.take_events() if isinstance(e, ResultReady))
    assert ready.timeliness is Timeliness.LATE  # against the appointment in law
    assert ready.apologies == 1
    assert [(f.step, f.agency_id) for f in ready.faults] == [(3, POLICE)]
    line = next(h for h in ready.handovers if h.giver.agency_id == POLICE)
    assert line.giver_timeliness is Timeliness.LATE


def test_a_confirmed_apology_takes_the_agencys_reason_and_date_and_a_second_is_flagged() -> None:
    route = start()
    route.decide(
        officer(WARD, "agency_head"),
        at(9, 10),
        CAL,
        decision=ResultDecision.APPROVED,
        documents=[DocumentRef(code="GKS")],
        reasons=[],
    )
    route.on_step_due(at(10, 10, 1), CAL)
    route.on_risk(at(11, 14), CAL)
    a = route.apologies[0]
    new = at(16, 17)
    with pytest.raises(RouteError) as e:
        route.confirm_apology(
            officer(POLICE), a.id, at(11, 14, 30), CAL, reason="x", appointment=new, number="1"
        )
    assert e.value.field == "role"
    with pytest.raises(RouteError) as e:
        route.confirm_apology(
            officer(WARD, "agency_head"),
            a.id,
            at(11, 14, 30),
            CAL,
            reason="x",
            appointment=new,
            number="1",
        )
    assert e.value.field == "agency"
    with pytest.raises(RouteError) as e:  # the token names no one: the signer's name is asked
        route.confirm_apology(
            officer(POLICE, "agency_head"),
            a.id,
            at(11, 14, 30),
            CAL,
            reason="x",
            appointment=new,
            number="1",
        )
    assert e.value.field == "signer_name"
    route.confirm_apology(
        officer(POLICE, "agency_head"),
        a.id,
        at(11, 14, 30),
        CAL,
        reason="Hệ thống cơ sở dữ liệu cư trú gián đoạn",
        appointment=new,
        number="15/PXL-CAP",
        signer_name="Trần Văn Bình",
    )
    issued = next(e for e in route.take_events() if isinstance(e, ApologyIssued))
    assert issued.appointment_at == new and not issued.automatic and issued.issued_by
    assert issued.reason == "Hệ thống cơ sở dữ liệu cư trú gián đoạn"
    assert issued.signer_title == "Trưởng Công an phường Sài Gòn"
    assert not issued.after_latest_moment
    # on the day of the new appointment with two steps left: past the latest moment of a
    # second apology, so it is drafted and escalated at once, flagged; never sent unsigned
    route.on_risk(at(16, 10), CAL)
    again = [e for e in route.take_events() if isinstance(e, (ApologyDrafted, ApologyEscalated))]
    assert [type(e) for e in again] == [ApologyDrafted, ApologyEscalated]
    assert again[0].number == 2 and again[0].after_latest_moment  # type: ignore[union-attr]
    assert not [a for a in route.apologies if a.status.value == "issued" and a.number == 2]


def test_a_supplement_during_processing_pauses_and_moves_everything_by_the_time_waited() -> None:
    route = start()
    route.take_events()
    with pytest.raises(RouteError) as e:
        route.request_supplement(officer(POLICE), at(9, 10), [], None)
    assert e.value.kind is Refusal.CONFLICT  # not the police's turn
    item = MissingItem(code="GCS", name="Giấy chứng sinh", reason="bản mờ")
    route.request_supplement(officer(WARD), at(9, 10), [item], None)
    req = route.take_events()[0]
    assert isinstance(req, ProcessingSupplementRequested) and not req.violation
    assert route.state is DossierStatus.WAITING_SUPPLEMENT and route.state.portal == 5
    assert route.timer_plan(CAL, 16 * 3600, at(9, 10)) == []
    before_appointment, before_deadline = route.appointment_at, route.steps[1].deadline_at
    assert route.resume(at(10, 14), CAL)  # Monday 10:00 to Tuesday 14:00
    waited = CAL.working_seconds_between(at(9, 10), at(10, 14))
    assert waited == 37800  # 1.5 + 4 working hours on Monday, 4 + 1 on Tuesday
    assert route.paused_seconds == waited
    assert CAL.working_seconds_between(before_appointment, route.appointment_at) == waited
    assert route.steps[1].deadline_at == CAL.extend(before_deadline, waited)  # type: ignore[arg-type]
    route.take_events()
    route.request_supplement(officer(WARD), at(10, 15), [item], None)
    second = route.take_events()[0]
    assert isinstance(second, ProcessingSupplementRequested) and second.violation
    assert route.faults()[-1].agency_id == WARD


def test_refusal_skips_to_the_return_and_the_refusal_is_the_result() -> None:
    route = start()
    with pytest.raises(RouteError) as e:
        route.decide(
            officer(WARD, "agency_head"),
            at(9, 10),
            CAL,
            decision=ResultDecision.REFUSED,
            documents=[],
            reasons=[" "],
        )
    assert e.value.kind is Refusal.INVALID
    route.decide(
        officer(WARD, "agency_head"),
        at(9, 10),
        CAL,
        decision=ResultDecision.REFUSED,
        documents=[],
        reasons=["Không đủ điều kiện"],
    )
    assert route.open_step is not None and route.open_step.kind is StepKind.RETURN
    assert [s.status.value for s in route.steps] == ["done", "done", "skipped", "skipped", "active"]
    route.mark_ready(officer(DESK), at(9, 11), CAL)
    assert route.state is DossierStatus.REFUSED and route.state.portal == 9


PERMIT = BIRTH.model_copy(
    update={
        "code": "1.009972",
        "processing_time": Duration(value=20, unit=TimeUnit.CALENDAR_DAYS, legal_basis="Điều 102"),
        "receiving_agency": "000.00.01.H29",
        "receiving_agency_name": "Trung tâm Phục vụ hành chính công Thành phố Hồ Chí Minh",
        "lead_agency": "000.00.06.H29",
        "lead_agency_name": "Sở Xây dựng Thành phố Hồ Chí Minh",
        "level": "province",
        "consultations": (
            Consulted(
                agency_id="000.00.07.H29",
                agency_name="Sở Quy hoạch - Kiến trúc Thành phố Hồ Chí Minh",
                template_id="planning-architecture-opinion",
            ),
        ),
        "steps": tuple(
            Step(
                order=i,
                kind=k,
                agency_id=a,
                action=k.value,
                role=r,
                duration=Duration(value=d, unit=TimeUnit.CALENDAR_DAYS),
            )
            for i, (k, a, d, r) in enumerate(
                [
                    (StepKind.RECEIVE, "000.00.01.H29", 0, ActingRole.OFFICER),
                    (StepKind.CONSULT, "000.00.06.H29", 12, ActingRole.OFFICER),
                    (StepKind.APPRAISE, "000.00.06.H29", 4, ActingRole.OFFICER),
                    (StepKind.APPROVE, "000.00.06.H29", 3, ActingRole.AGENCY_HEAD),
                    (StepKind.RETURN, "000.00.01.H29", 1, ActingRole.OFFICER),
                ],
                start=1,
            )
        ),
    }
)


def test_a_permit_opens_its_round_at_once_and_moves_on_when_opinions_are_in() -> None:
    route = start(PERMIT)
    routed = route.take_events()[0]
    assert isinstance(routed, DossierRouted) and routed.opens_round and len(routed.consult) == 1
    with pytest.raises(RouteError):
        route.complete(officer("000.00.06.H29"), 2, at(9, 10), CAL)
    assert route.opinions_in(at(11, 10), CAL)
    moved = route.take_events()
    assert [type(e).__name__ for e in moved] == ["StepCompleted", "HandedOver", "DossierAdvanced"]
    handed = moved[1]
    assert isinstance(handed, HandedOver) and handed.round is None and handed.step.order == 3
    assert not route.opinions_in(at(11, 11), CAL)  # a repeated completion changes nothing


def test_on_time_at_17_00_of_the_last_day_and_late_a_second_after() -> None:
    deadline = at(12, 17)
    assert classify(at(12, 17), deadline, CAL) is Timeliness.ON_TIME
    assert classify(deadline + timedelta(seconds=1), deadline, CAL) is Timeliness.LATE
    assert classify(at(12, 8), deadline, CAL) is Timeliness.ON_TIME
    assert classify(at(11, 16, 59), deadline, CAL) is Timeliness.EARLY
    assert latest_apology_moment(CAL, deadline) == at(11, 17)


def test_within_the_day_received_in_the_afternoon_shrinks_the_budgets_to_the_day_left() -> None:
    """Birth registration is returned within the day: received at 14:00 the office has 3
    working hours left, so its 8 hours of step budgets shrink alike and no apology is
    drafted for a dossier that is merely received late in the day."""
    from services.intake.domain import Catalogue

    proc = Catalogue.load().in_force("1.001193", at(9, 14).date())
    route = start(proc, received=at(9, 14))
    assert route.appointment_at == at(9, 17)
    assert route.budget_scale == pytest.approx(3 / 8)
    assert route.forecast_end(at(9, 14), CAL) <= route.appointment_at
    assert not route.apologies and not route.at_risk(at(9, 14), CAL)


def test_a_fee_to_pay_pauses_the_clock_until_it_is_paid() -> None:
    route = start()
    route.take_events()
    route.request_fee(officer(WARD), at(9, 10), 50_000, "Lệ phí đăng ký")
    assert route.state is DossierStatus.WAITING_FEE and route.state.portal == 6
    with pytest.raises(RouteError):
        route.fee_paid(officer(WARD), at(9, 11), at(9, 10, 30), CAL)  # in the future
    before = route.appointment_at
    route.fee_paid(officer(WARD), at(9, 11), at(9, 12), CAL)
    assert route.state is DossierStatus.PROCESSING and route.paused_seconds == 3600
    assert CAL.working_seconds_between(before, route.appointment_at) == 3600
    assert [type(e).__name__ for e in route.take_events()] == ["FeeRequested", "DossierResumed"]
    with pytest.raises(RouteError) as e:
        route.fee_paid(officer(WARD), at(9, 13), at(9, 13), CAL)
    assert e.value.kind is Refusal.CONFLICT


def test_a_step_handed_to_another_department_is_that_departments_fault_when_late() -> None:
    route = start()
    route.take_events()
    with pytest.raises(RouteError) as e:
        route.reassign(officer(WARD), BOOK, at(9, 9, 30), department="TPHT", person=None, note=None)
    assert e.value.field == "role"  # an officer who does not hold it may not pass it on
    with pytest.raises(RouteError) as e:
        route.reassign(
            officer(WARD, "agency_head"),
            BOOK,
            at(9, 9, 30),
            department="NOPE",
            person=None,
            note=None,
        )
    assert e.value.kind is Refusal.INVALID and e.value.field == "to_department"
    route.reassign(
        officer(WARD, "agency_head"),
        BOOK,
        at(9, 9, 30),
        department="TPHT",
        person="Hà",
        note="Chuyển công chức hộ tịch",
    )
    handed = route.take_events()[0]
    assert isinstance(handed, HandedOver) and handed.line.receiver.department == "TPHT"
    assert handed.line.step == 2 and route.handovers[-1].note == "Chuyển công chức hộ tịch"
    route.on_step_due(at(9, 15), CAL)  # 4 working hours from 09:00 ended at 14:30
    fault = route.faults()[0]
    assert (fault.agency_id, fault.department, fault.step) == (WARD, "TPHT", 2)
    assert fault.late_working_seconds == 30 * 60
