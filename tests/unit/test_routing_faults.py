"""Faults recorded where they happened (issue 23): a round closed by deemed consent is on
time, a step is late only by working time lost, a step is completed only by whoever took
it, an apology is drafted in time to be signed before its latest moment, and refusals an
official reads are in Vietnamese. Each test fails on the code before the issue."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from contracts.common import DocumentRef, StepKind, Timeliness
from contracts.events import (
    ApologyDrafted,
    ApologyEscalated,
    ApologyIssued,
    Outcome,
    ResultDecision,
    RoundOutcome,
    StepOverdue,
)
from services.routing.domain import (
    STEP_DUE,
    Refusal,
    Route,
    RouteError,
    latest_apology_moment,
    step_timeliness,
)
from tests.unit.test_routing_apologies import WATCH_SECONDS, run_timers
from tests.unit.test_routing_route import (
    CAL,
    DESK,
    PERMIT,
    POLICE,
    SOCIAL,
    WARD,
    at,
    officer,
    start,
)

LEAD = "000.00.06.H29"
PLANNING = "000.00.07.H29"


def deemed(at_: datetime) -> tuple[RoundOutcome, ...]:
    return (
        RoundOutcome(
            request_id=uuid.uuid4(),
            agency_id=PLANNING,
            outcome=Outcome.DEEMED_CONSENT,
            decision=None,
            at=at_,
        ),
    )


def approved(when: datetime) -> Route:
    """A birth-group route whose ward decided at ``when``: at the police's step."""
    route = start()
    route.decide(
        officer(WARD, "agency_head"),
        when,
        CAL,
        decision=ResultDecision.APPROVED,
        documents=[DocumentRef(code="GKS")],
        reasons=[],
    )
    return route


# --- A: no false lateness ----------------------------------------------------------------------


def test_a_round_closed_by_deemed_consent_seconds_after_its_deadline_is_on_time() -> None:
    """The consult step's deadline is 17:00 of its last day; the round closes when the
    deadline timer fires, seconds later. Before: late, 0 working seconds, a fault against
    the lead agency that reached Form 05, the result notice and the apology's reason."""
    route = start(PERMIT)
    consult = route.open_step
    assert consult is not None and consult.kind is StepKind.CONSULT
    deadline = consult.deadline_at
    assert deadline is not None and CAL.local(deadline).hour == 17
    route.opinions_in(deadline + timedelta(seconds=7), CAL, deemed(deadline))
    assert consult.timeliness is Timeliness.ON_TIME and consult.late_working_seconds == 0
    assert not route.faults()


def test_deemed_consent_heard_the_next_morning_is_on_time_at_the_moment_it_was_deemed() -> None:
    """Routing hears of the round only the next morning (a service down overnight): the
    step ended when the opinion was deemed given, not when routing heard of it."""
    route = start(PERMIT)
    consult = route.open_step
    assert consult is not None and consult.deadline_at is not None
    deadline = consult.deadline_at
    next_morning = CAL.add_working_seconds(deadline, 2 * 3600)
    route.on_step_due(next_morning - timedelta(minutes=30), CAL)  # the step timer, first
    route.opinions_in(next_morning, CAL, deemed(deadline))
    assert consult.timeliness is Timeliness.ON_TIME and consult.completed_at == deadline
    assert not route.faults() and not consult.overdue


def test_a_round_deemed_on_a_monday_for_a_saturday_leaves_no_false_risk_behind() -> None:
    """Days run through days off, but the round's 12th day is a Saturday, so the opinions are
    deemed given on Monday (Civil Code Art. 148(5)). The appraisal then ends by the day the
    steps after it still fit in, and the dossier is not drafted an apology for nothing."""
    route = start(PERMIT)  # Monday 9 March 2026, 20 days: due Monday 30 March
    consult = route.open_step
    assert consult is not None and consult.deadline_at == CAL.end_of_day(at(23, 9).date())
    assert route.appointment_at == CAL.end_of_day(at(30, 9).date())
    route.opinions_in(consult.deadline_at + timedelta(seconds=20), CAL, deemed(consult.deadline_at))
    appraise = route.open_step
    assert appraise is not None and appraise.deadline_at == CAL.end_of_day(at(26, 9).date())
    assert not route.at_risk(consult.deadline_at + timedelta(seconds=21), CAL)
    assert not route.apologies and not route.faults()


def test_a_round_late_because_an_agency_replied_late_is_that_agencys_fault() -> None:
    route = start(PERMIT)
    consult = route.open_step
    assert consult is not None and consult.deadline_at is not None
    late_reply = CAL.add_working_seconds(consult.deadline_at, 3 * 3600)
    reply = RoundOutcome(
        request_id=uuid.uuid4(), agency_id=PLANNING, outcome=Outcome.REPLIED, at=late_reply
    )
    route.opinions_in(late_reply + timedelta(seconds=3), CAL, (reply,))
    assert consult.timeliness is Timeliness.LATE and consult.late_working_seconds == 3 * 3600
    (fault,) = route.faults()
    assert fault.agency_id == PLANNING and fault.agency_id != LEAD


def test_a_step_timer_at_the_deadline_records_no_fault_until_working_time_is_lost() -> None:
    route = approved(at(9, 10))
    police = route.open_step
    assert police is not None and police.deadline_at == at(10, 10)
    route.take_events()
    route.on_step_due(at(10, 10) + timedelta(seconds=5), CAL)
    # 10:00:05 is working time: 5 s lost, late
    assert [type(e) for e in route.take_events()] == [StepOverdue]
    # a deadline at the close of office: the timer fires at the next opening, not at 17:00
    late_day = start(PERMIT)
    step = late_day.open_step
    assert step is not None and step.deadline_at is not None
    due = {p.kind: p.due_at for p in late_day.timer_plan(CAL, WATCH_SECONDS, at(9, 10))}
    assert CAL.working_seconds_between(step.deadline_at, due[STEP_DUE]) == 1
    late_day.take_events()
    late_day.on_step_due(step.deadline_at + timedelta(seconds=30), CAL)
    assert not late_day.take_events() and not step.overdue


def test_a_step_ended_after_the_close_of_its_last_day_lost_no_working_time() -> None:
    deadline = at(12, 17)
    assert step_timeliness(at(12, 17, 0) + timedelta(seconds=5), deadline, CAL) == (
        Timeliness.ON_TIME,
        0,
    )
    assert step_timeliness(at(12, 20), deadline, CAL) == (Timeliness.ON_TIME, 0)
    assert step_timeliness(at(13, 8), deadline, CAL)[0] is Timeliness.LATE
    assert step_timeliness(at(11, 9), deadline, CAL) == (Timeliness.EARLY, 0)


# --- C: a step is completed by whoever took it -------------------------------------------------


def test_a_step_cannot_be_completed_before_someone_takes_it() -> None:
    route = approved(at(9, 10))
    with pytest.raises(RouteError) as e:
        route.complete(officer(POLICE), 3, at(9, 11), CAL)
    assert e.value.kind is Refusal.CONFLICT and e.value.field == "step"
    assert "chưa có người nhận xử lý" in e.value.reason
    route.take(officer(POLICE, person="an"), 3, at(9, 11))
    with pytest.raises(RouteError) as e:  # another officer of the police: not theirs
        route.complete(officer(POLICE, person="binh"), 3, at(9, 12), CAL)
    assert e.value.kind is Refusal.CONFLICT
    route.complete(officer(POLICE, person="an"), 3, at(9, 12), CAL)
    line = next(h for h in route.handovers if h.step == 3)
    assert line.receiver.person_id == "an"  # Form 05 has the receiver who signed
    route.take(officer(SOCIAL, person="chi"), 4, at(9, 13))
    route.complete(officer(SOCIAL, "agency_head"), 4, at(9, 14), CAL)  # the head, for chi


# --- 1: the apology in time ---------------------------------------------------------------------


def _late_at_the_last_working_step() -> Route:
    """Received Monday 09:00, due Thursday 17:00; the police finish on time Tuesday 10:00,
    the social insurance step (8 working hours) is idle: overdue Wednesday 10:00, with only
    the desk's 4 hours after it."""
    route = approved(at(9, 10))
    route.take(officer(POLICE), 3, at(9, 11))
    route.complete(officer(POLICE), 3, at(10, 10), CAL)
    route.take_events()
    return route


def test_an_overdue_step_with_a_working_day_or_less_left_is_drafted_for_at_once() -> None:
    """Before: nothing until the risk moment (Thursday 13:00), then an apology issued at
    once, after its latest moment (Wednesday 17:00)."""
    route = _late_at_the_last_working_step()
    assert route.appointment_at == at(12, 17)
    events = run_timers(route, at(10, 10), at(11, 12))
    drafts = [e for e in events if isinstance(e, ApologyDrafted)]
    assert len(drafts) == 1 and drafts[0].agency_id == SOCIAL
    assert drafts[0].drafted_at <= at(11, 10, 1)  # as soon as the step went overdue
    assert drafts[0].latest_issue_at == at(11, 17) and not drafts[0].after_latest_moment
    route.confirm_apology(
        officer(SOCIAL, "agency_head"),
        drafts[0].apology_id,
        at(11, 15),
        CAL,
        reason="Chờ dữ liệu từ Cơ sở dữ liệu quốc gia về bảo hiểm",
        appointment=at(16, 17),
        number="21/PXL-BHXH",
        signer_name="Phạm Thu Hà",
    )
    (issued,) = [e for e in route.take_events() if isinstance(e, ApologyIssued)]
    assert issued.issued_at <= latest_apology_moment(CAL, at(12, 17))
    assert not issued.after_latest_moment


def test_an_unsigned_draft_is_escalated_at_its_latest_moment_never_sent_unsigned() -> None:
    route = _late_at_the_last_working_step()
    events = run_timers(route, at(10, 10), at(13, 17))
    assert not [e for e in events if isinstance(e, ApologyIssued)]
    (up,) = [e for e in events if isinstance(e, ApologyEscalated)]
    assert up.escalated_at == at(11, 17) and up.agency_id == SOCIAL
    assert up.superior and up.head and "chưa được người đứng đầu ký" in up.why
    assert route.appointment_at == at(12, 17)  # unchanged without a signed letter


def test_the_latest_moment_is_never_after_the_working_day_before_the_appointment() -> None:
    for day in (9, 10, 11, 12, 13, 16):
        for hour, minute in ((7, 30), (8, 0), (10, 0), (11, 30), (13, 0), (16, 59), (17, 0)):
            appointment = at(day, hour, minute)
            latest = latest_apology_moment(CAL, appointment)
            eve = CAL.end_of_day(CAL.previous_working_day(CAL.local(appointment).date()))
            assert latest <= eve, (appointment, latest)


# --- F: refusals an official reads -------------------------------------------------------------


def test_refusals_name_roles_in_vietnamese_not_raw_ids() -> None:
    route = start()
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
    reason = e.value.reason
    assert "người đứng đầu cơ quan" in reason and "công chức, viên chức xử lý" in reason
    for raw in ("agency_head", "officer", " a ", "or above"):
        assert raw not in reason, reason
    with pytest.raises(RouteError) as e:
        route.mark_ready(officer(DESK), at(9, 10), CAL)
    assert "hồ sơ đang ở bước" in e.value.reason


# --- 2: the head signs; the escalation says what and to whom -------------------------------------


def test_form04_prints_the_number_and_the_name_the_head_signed_with() -> None:
    from contracts.common import Office
    from services.notification.domain import Contact
    from services.runtime import forms

    when = datetime(2026, 3, 11, 15, tzinfo=CAL.tz)
    issued = ApologyIssued(
        apology_id=uuid.UUID(int=9),
        code=f"{DESK}-260309-0001",
        number=1,
        agency_id=SOCIAL,
        agency_name="Bảo hiểm xã hội",
        reason="Chờ dữ liệu",
        previous_appointment_at=when + timedelta(days=1),
        appointment_at=when + timedelta(days=5),
        issued_at=when,
        issued_by=None,
        procedure_name="Liên thông khai sinh",
        received_at=when - timedelta(days=2),
        office=Office(
            parent_name="Bảo hiểm xã hội Việt Nam", name="Bảo hiểm xã hội", place="Hà Nội"
        ),
        document_number="21/PXL-BHXH",
        signer_name="Phạm Thu Hà",
        signer_title="Giám đốc Bảo hiểm xã hội",
    )
    contact = Contact(name="Nguyễn Văn An", email="an@example.vn")
    text = forms.FormBook.load().render(
        "form04", when.date(), forms.form04_context(issued, contact)
    )
    assert "Số: 21/PXL-BHXH" in text.text and "Phạm Thu Hà" in text.text


def test_the_escalation_tells_the_superior_the_deadline_missed_in_words() -> None:
    from services.notification.domain import apology_escalation_context
    from services.runtime import forms

    route = _late_at_the_last_working_step()
    run_timers(route, at(10, 10), at(11, 17, 30))
    escalations = [a for a in route.apologies if a.escalated_at is not None]
    assert escalations
    a = escalations[0]
    event = ApologyEscalated(
        apology_id=a.id,
        code=route.code,
        number=a.number,
        agency_id=a.agency_id,
        agency_name=a.agency_name,
        head=route.chains[a.agency_id].head,
        superior=route.chains[a.agency_id].superior,
        reason=a.reason,
        why="Phiếu xin lỗi và hẹn lại ngày trả kết quả số 1 chưa được người đứng đầu ký",
        appointment_at=route.appointment_at,
        latest_issue_at=a.latest_issue_at,
        drafted_at=a.drafted_at,
        escalated_at=a.escalated_at or a.latest_issue_at,
    )
    book = forms.FormBook.load()
    day = CAL.local(a.latest_issue_at).date()
    to_superior = book.render(
        "apology_escalation", day, apology_escalation_context(event, to_superior=True)
    ).text
    assert f"Kính gửi: {event.superior}" in to_superior and event.head in to_superior
    assert "11/03/2026" in to_superior or "11 tháng 3" in to_superior or "17:00" in to_superior
    assert "POST" not in to_superior and "/v1/" not in to_superior


def test_a_round_with_one_opinion_deemed_and_one_reply_late_is_late_by_the_late_reply() -> None:
    route = start(PERMIT)
    consult = route.open_step
    assert consult is not None and consult.deadline_at is not None
    late_reply = CAL.add_working_seconds(consult.deadline_at, 2 * 3600)
    outcomes = (
        *deemed(consult.deadline_at),
        RoundOutcome(
            request_id=uuid.uuid4(),
            agency_id="000.02.30.H29",
            outcome=Outcome.REPLIED,
            at=late_reply,
        ),
    )
    route.opinions_in(late_reply + timedelta(seconds=3), CAL, outcomes)
    assert consult.timeliness is Timeliness.LATE
    (fault,) = route.faults()
    assert fault.agency_id == "000.02.30.H29"


def test_only_the_agency_head_signs_and_in_their_own_name() -> None:
    route = _late_at_the_last_working_step()
    run_timers(route, at(10, 10), at(11, 12))
    a = route.apologies[0]
    dept_head = officer(SOCIAL, "department_head")
    with pytest.raises(RouteError) as e:
        route.confirm_apology(
            dept_head, a.id, at(11, 13), CAL, reason="x", appointment=at(16, 17), number="1"
        )
    assert e.value.field == "role"
    from services.routing.domain import Officer

    named = Officer(agency_id=SOCIAL, role="agency_head", person="ha", name="Phạm Thu Hà")
    with pytest.raises(RouteError) as e:
        route.confirm_apology(
            named,
            a.id,
            at(11, 13),
            CAL,
            reason="x",
            appointment=at(16, 17),
            number="1",
            signer_name="Người khác",
        )
    assert e.value.field == "signer_name"
    route.confirm_apology(
        named, a.id, at(11, 13), CAL, reason="x", appointment=at(16, 17), number="1"
    )
    assert route.apologies[0].signer_name == "Phạm Thu Hà"
