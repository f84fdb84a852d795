"""Form 04 and fault rules of a route, driven by its own timer plan without PostgreSQL:
no apology for a dossier merely received (every procedure, every receipt time), an idle
officer's dossier apologised for once per missed appointment (drafted first, issued at the
latest moment), faults that stay with whoever held a step when it fell late, and the moves
around the result."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from contracts.common import DocumentRef, DossierStatus, ReturnMethod, StepKind, Timeliness
from contracts.envelope import EventPayload
from contracts.events import (
    ApologyDrafted,
    ApologyEscalated,
    ApologyIssued,
    ApologyWithdrawn,
    ResultDecision,
)
from services.intake.domain import Catalogue, schedule
from services.routing.domain import (
    APOLOGY_DUE,
    RISK,
    STEP_DUE,
    WATCH,
    Refusal,
    Route,
    RouteError,
)
from tests.unit.test_routing_route import (
    BOOK,
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

WATCH_SECONDS = 16 * 3600
CATALOGUE = Catalogue.load()


def run_timers(route: Route, now: datetime, until: datetime) -> list[EventPayload]:
    """Fire the route's timers in due order until ``until``, as the scheduler and the use
    cases would (each firing saves the route, so its version moves on)."""
    events: list[EventPayload] = []
    while True:
        plans = route.timer_plan(CAL, WATCH_SECONDS, now)
        if not plans:
            return events
        plan = min(plans, key=lambda p: p.due_at)
        if plan.due_at > until:
            return events
        now = max(now, plan.due_at)
        if plan.kind == STEP_DUE:
            route.on_step_due(now, CAL)
        elif plan.kind == WATCH:
            route.on_watch(now, CAL)
        elif plan.kind == RISK:
            route.on_risk(now, CAL)
        elif plan.kind == APOLOGY_DUE:
            route.on_apology_due(uuid.UUID(plan.payload["apology_id"]), now, CAL)
        route.version += 1
        events += route.take_events()


@pytest.mark.parametrize(
    "code", sorted({p.code for p in CATALOGUE.all()}), ids=lambda c: f"procedure-{c}"
)
def test_a_dossier_merely_received_is_never_apologised_for(code: str) -> None:
    """Every catalogue procedure, received at any minute of a working week (and on the
    Saturday): its steps' budgets fit its appointment, so routing drafts nothing."""
    book_hours = BOOK.office_hours
    for day in range(9, 15):
        for minute in range(6 * 60, 20 * 60, 37):
            received = at(day, minute // 60, minute % 60)
            proc = CATALOGUE.in_force(code, received.date())
            cal = CAL.with_office(proc.office_hours or book_hours(proc.receiving_agency))
            sched = schedule(cal, proc, received)
            route = Route.start(
                code=f"{DESK}-260309-0001",
                procedure=proc,
                receiving_agency=proc.receiving_agency,
                receiving_agency_name=proc.receiving_agency_name,
                book=BOOK,
                cal=cal,
                received_at=received,
                clock_starts_at=sched.clock_starts_at,
                appointment_at=sched.appointment_at,
                received_by=None,
                return_method=ReturnMethod.AT_DESK,
                now=received,
            )
            assert not route.apologies, (code, received)
            assert route.forecast_end(received, cal) <= route.appointment_at, (code, received)


def test_an_idle_officer_costs_one_apology_per_missed_appointment_each_drafted_first() -> None:
    route = start()
    route.decide(
        officer(WARD, "agency_head"),
        at(9, 9, 30),
        CAL,
        decision=ResultDecision.APPROVED,
        documents=[DocumentRef(code="GKS")],
        reasons=[],
    )
    route.take_events()
    events = run_timers(route, at(9, 9, 30), at(20, 17))  # the police do nothing for 2 weeks
    drafted = [e for e in events if isinstance(e, ApologyDrafted)]
    escalated = [e for e in events if isinstance(e, ApologyEscalated)]
    withdrawn = [e for e in events if isinstance(e, ApologyWithdrawn)]
    assert not [e for e in events if isinstance(e, ApologyIssued)]  # never unsigned
    assert len(drafted) == len(escalated) == 1 and not withdrawn
    (draft,), (up,) = drafted, escalated
    assert up.apology_id == draft.apology_id and up.escalated_at == draft.latest_issue_at
    assert draft.latest_issue_at <= CAL.end_of_day(
        CAL.previous_working_day(CAL.local(draft.previous_appointment_at).date())
    )
    assert all(f.agency_id == POLICE for f in route.faults())
    # the head signs a week late: one apology, flagged; the next one is drafted first
    route.confirm_apology(
        officer(POLICE, "agency_head"),
        draft.apology_id,
        at(20, 17),
        CAL,
        reason="Lý do",
        appointment=at(27, 17),
        number="3/PXL",
        signer_name="Trần Văn Bình",
    )
    (signed,) = [e for e in route.take_events() if isinstance(e, ApologyIssued)]
    assert signed.after_latest_moment and not signed.automatic
    later = run_timers(route, at(20, 17), at(27, 17))
    again = [e for e in later if isinstance(e, ApologyDrafted)]
    assert again and again[0].number == 2
    assert not [e for e in later if isinstance(e, ApologyIssued)]


def test_an_apology_drafted_while_late_is_withdrawn_when_the_dossier_catches_up() -> None:
    route = start()
    route.decide(
        officer(WARD, "agency_head"),
        at(9, 9, 30),
        CAL,
        decision=ResultDecision.APPROVED,
        documents=[DocumentRef(code="GKS")],
        reasons=[],
    )
    run_timers(route, at(9, 9, 30), at(11, 13, 30))  # past the risk moment: drafted
    assert route.apologies and route.apologies[0].status.value == "drafted"
    route.take_events()
    route.take(officer(POLICE), 3, at(11, 13, 35))
    route.complete(officer(POLICE), 3, at(11, 13, 40), CAL)
    route.take(officer(SOCIAL), 4, at(11, 13, 45))
    route.complete(officer(SOCIAL), 4, at(11, 14), CAL)  # the rest now fits
    events = route.take_events()
    assert any(isinstance(e, ApologyWithdrawn) for e in events)
    assert not any(isinstance(e, ApologyIssued) for e in events)


def test_a_withdrawal_that_crossed_the_result_ends_the_route_as_intake_has_it() -> None:
    """Intake accepted the withdrawal before it heard the result was ready: a final status
    never moves (issue 23, item 6), so routing ends the route withdrawn too, keeping how
    processing ended."""
    route = start()
    route.decide(
        officer(WARD, "agency_head"),
        at(9, 10),
        CAL,
        decision=ResultDecision.REFUSED,
        documents=[],
        reasons=["Không đủ điều kiện"],
    )
    route.mark_ready(officer(DESK), at(9, 11), CAL)
    timeliness = route.timeliness
    assert route.close(DossierStatus.WITHDRAWN, "rút", at(9, 12))
    assert route.state is DossierStatus.WITHDRAWN and route.timeliness == timeliness
    with pytest.raises(RouteError) as e:
        route.return_result(officer(DESK), at(16, 9), CAL, ReturnMethod.AT_DESK)
    assert e.value.kind is Refusal.CONFLICT
    assert not route.close(DossierStatus.STOPPED, "dừng", at(9, 13))  # ended: nothing more


def test_a_result_collected_a_week_later_is_not_the_desks_fault() -> None:
    route = start()
    route.decide(
        officer(WARD, "agency_head"),
        at(9, 10),
        CAL,
        decision=ResultDecision.REFUSED,
        documents=[],
        reasons=["Không đủ điều kiện"],
    )
    route.mark_ready(officer(DESK), at(9, 11), CAL)
    route.return_result(officer(DESK), at(16, 9), CAL, ReturnMethod.AT_DESK, "nhận tại quầy")
    assert route.state is DossierStatus.RETURNED
    desk = route.steps[-1]
    assert desk.timeliness is not Timeliness.LATE  # collected a week later: not the desk's
    assert not [f for f in route.faults() if f.agency_id == DESK]
    assert "nhận tại quầy" in desk.notes


def test_a_closed_route_is_at_no_step_and_says_so() -> None:
    route = start()
    route.take_events()
    assert route.close(DossierStatus.STOPPED, "Hồ sơ giả mạo", at(9, 10))
    closed = route.take_events()
    assert type(closed[0]).__name__ == "RouteClosed" and closed[0].status == 8  # type: ignore[attr-defined]
    assert route.open_step is None and route.timer_plan(CAL, WATCH_SECONDS, at(9, 10)) == []


def test_a_late_step_stays_the_fault_of_whoever_held_it_when_it_fell_late() -> None:
    route = start()
    route.take_events()
    route.reassign(
        officer(WARD, "agency_head"),
        BOOK,
        at(9, 9, 10),
        department="TPHT",
        person=None,
        note=None,
    )
    # past the 14:30 deadline the head moves it on to another department...
    route.reassign(
        officer(WARD, "agency_head"), BOOK, at(9, 16), department="VHXH", person=None, note=None
    )
    route.on_step_due(at(9, 16, 5), CAL)
    route.decide(
        officer(WARD, "agency_head"),
        at(10, 9),
        CAL,
        decision=ResultDecision.APPROVED,
        documents=[DocumentRef(code="GKS")],
        reasons=[],
    )
    (fault,) = route.faults()
    assert (fault.agency_id, fault.department) == (WARD, "TPHT")  # not VHXH


def test_only_the_agency_head_the_holding_departments_head_or_the_holder_hands_over() -> None:
    route = start()
    route.reassign(
        officer(WARD, "agency_head"),
        BOOK,
        at(9, 9, 10),
        department="TPHT",
        person=None,
        note=None,
    )
    other_head = officer(WARD, "department_head")
    other_head = type(other_head)(
        agency_id=WARD, role="department_head", person="vp-head", department="VP"
    )
    with pytest.raises(RouteError) as e:
        route.reassign(other_head, BOOK, at(9, 9, 20), department="VP", person=None, note=None)
    assert e.value.kind is Refusal.FORBIDDEN
    tpht_head = type(other_head)(
        agency_id=WARD, role="department_head", person="tpht-head", department="TPHT"
    )
    route.reassign(tpht_head, BOOK, at(9, 9, 30), department="VHXH", person=None, note=None)
    assert route.open_step is not None and route.open_step.holder is not None
    assert route.open_step.holder.department == "VHXH"


def test_the_lead_agencys_head_may_end_a_round_that_waits_without_a_legal_basis() -> None:
    route = start(PERMIT)
    route.take_events()
    head = officer("000.00.06.H29", "agency_head")
    with pytest.raises(RouteError) as e:
        route.complete(head, 2, at(30, 9), CAL)
    assert e.value.field == "note"
    with pytest.raises(RouteError) as e:
        route.complete(officer("000.00.06.H29"), 2, at(30, 9), CAL, note="x")
    assert e.value.kind is Refusal.CONFLICT  # an officer waits for the opinions
    route.complete(head, 2, at(30, 9), CAL, note="Sở Quy hoạch - Kiến trúc không trả lời")
    events = route.take_events()
    done = events[0]
    assert type(done).__name__ == "StepCompleted" and done.by is not None  # type: ignore[attr-defined]
    assert route.open_step is not None and route.open_step.kind is StepKind.APPRAISE


def test_a_pause_in_a_calendar_day_procedure_moves_dates_by_the_days_waited() -> None:
    from contracts.common import MissingItem

    route = start(PERMIT)
    route.opinions_in(at(10, 10), CAL)
    route.take_events()
    before, deadline = route.appointment_at, route.open_step.deadline_at  # type: ignore[union-attr]
    item = MissingItem(code="BVTK", name="Bản vẽ", reason="thiếu")
    route.request_supplement(officer("000.00.06.H29"), at(10, 11), [item], None)
    route.resume(at(20, 9), CAL)  # ten days later
    assert CAL.local(route.appointment_at).date() == CAL.local(before).date() + timedelta(days=10)
    assert route.open_step is not None and route.open_step.deadline_at is not None
    moved = CAL.local(route.open_step.deadline_at).date() - CAL.local(deadline).date()  # type: ignore[arg-type]
    assert moved.days >= 10


def test_confirming_asks_a_later_date_within_a_year_and_a_processing_dossier() -> None:
    route = start()
    route.decide(
        officer(WARD, "agency_head"),
        at(9, 9, 30),
        CAL,
        decision=ResultDecision.APPROVED,
        documents=[DocumentRef(code="GKS")],
        reasons=[],
    )
    run_timers(route, at(9, 9, 30), at(11, 13, 30))
    a = route.apologies[0]
    head = officer(POLICE, "agency_head")
    bad: list[tuple[Any, str]] = [
        (route.appointment_at, "appointment_at"),
        (at(9, 9) + timedelta(days=400), "appointment_at"),
    ]
    for when, field in bad:
        with pytest.raises(RouteError) as e:
            route.confirm_apology(
                head, a.id, at(11, 14), CAL, reason="Lý do", appointment=when, number="1/PXL"
            )
        assert e.value.field == field
    with pytest.raises(RouteError) as e:
        route.confirm_apology(
            head, a.id, at(11, 14), CAL, reason="Lý do", appointment=at(16, 17), number=" "
        )
    assert e.value.field == "number"  # never a blank "Số:"
    route.confirm_apology(
        head,
        a.id,
        at(11, 14),
        CAL,
        reason="Lý do",
        appointment=at(16, 17),
        number="1/PXL",
        signer_name="Trần Văn Bình",
    )
    assert route.appointment_at == at(16, 17)
    assert (
        route.appointment_at.tzinfo is not None and route.appointment_at.utcoffset() == timedelta(0)
    )
