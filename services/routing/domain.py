"""Routing's rules, free of I/O: a dossier's route through agencies and steps.

A ``Route`` is the aggregate of one dossier from receipt to return: its steps (from the
catalogue version the dossier was received under), which one it is at and who holds it,
every hand-over (the lines of Form 05), the pauses while the applicant supplements, the
decision, the result and its return, and the apologies (Form 04) when it cannot finish by
its appointment. Every change goes through a method, which checks the move, appends the
events it caused and says which timers the route needs next (``timer_plan``); the use
cases lock the route's row first, call one method and save it with its events.

Time comes from a ``WorkingCalendar`` passed in: a step's deadline is its start plus its
budget, counted as the law counts the budget's unit; a pause moves the open step's
deadline and the appointment by exactly the working time spent waiting.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from contracts.agencies import AgencyBook, AgencyError
from contracts.common import (
    ActingRole,
    DocumentRef,
    DossierStatus,
    Duration,
    MissingItem,
    Office,
    OfficeHours,
    Procedure,
    ReturnMethod,
    Step,
    StepKind,
    Timeliness,
    TimeUnit,
)
from contracts.envelope import EventPayload
from contracts.events import (
    ApologyDrafted,
    ApologyIssued,
    ApologyWithdrawn,
    ConsultTarget,
    DossierAdvanced,
    DossierDecided,
    DossierResumed,
    DossierRouted,
    FeeRequested,
    HandedOver,
    HandOver,
    Holder,
    ProcessingSupplementRequested,
    ResultDecision,
    ResultReady,
    ResultReturned,
    RoundToOpen,
    RouteClosed,
    StepCompleted,
    StepFault,
    StepOverdue,
    StepRef,
    StepTaken,
)
from services.runtime.calendar import WorkingCalendar, format_local

APOLOGY_NS = uuid.UUID("5b8e2f6a-1c3d-4e7f-9a0b-2d4c6e8f0a1b")

STEP_DUE = "routing.step_due"
"""Timer at the open step's deadline: is it late, and can the dossier still finish?"""
WATCH = "routing.watch"
"""Timer a set lead time before the appointment: is work left late?"""
RISK = "routing.risk"
"""Timer at the latest moment the open step can end for the dossier to finish in time."""
APOLOGY_DUE = "routing.apology_due"
"""Timer at the latest legal moment of a drafted apology: issue it unconfirmed."""

LATE_STEP = "quá hạn giải quyết của bước"
RISK_SLACK = timedelta(seconds=1)
ISSUE_SLACK = timedelta(minutes=1)
"""An apology issued by its own timer a little after its latest moment is not late."""
MAX_POSTPONEMENT = timedelta(days=366)
"""Why a step counts against its agency: past its budget."""

# --- errors ----------------------------------------------------------------------------------


class Refusal(StrEnum):
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    CONFLICT = "conflict"
    INVALID = "invalid"


class RouteError(Exception):
    """A move the route does not allow: what kind, which field, why."""

    def __init__(self, kind: Refusal, field: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.field = field
        self.reason = reason


def _conflict(reason: str, field: str = "code") -> RouteError:
    return RouteError(Refusal.CONFLICT, field, reason)


def _forbidden(reason: str, field: str) -> RouteError:
    return RouteError(Refusal.FORBIDDEN, field, reason)


def _invalid(reason: str, field: str) -> RouteError:
    return RouteError(Refusal.INVALID, field, reason)


@dataclass(frozen=True)
class Officer:
    """Who acts: a person of an agency (and department), with a role."""

    agency_id: str
    role: str
    person: str
    department: str | None = None
    name: str | None = None

    @property
    def rank(self) -> int:
        try:
            return ActingRole(self.role).rank
        except ValueError:
            return 0

    @property
    def is_agency_head(self) -> bool:
        return self.role == ActingRole.AGENCY_HEAD.value

    @property
    def is_head(self) -> bool:
        return self.rank >= ActingRole.DEPARTMENT_HEAD.rank

    @property
    def display(self) -> str:
        return self.name or self.person


@dataclass(frozen=True)
class TimerPlan:
    kind: str
    ref: str
    due_at: datetime
    payload: dict[str, Any]


# --- time ------------------------------------------------------------------------------------


def budget_end(
    cal: WorkingCalendar, start: datetime, budget: Duration, scale: float = 1.0
) -> datetime:
    """When a step that starts at ``start`` with ``budget`` is due.

    Working days and hours: that much working time later (times ``scale``, below 1 when the
    office day left is shorter than the budgets: see ``Route.budget_scale``). Calendar
    days: close of office N days after the start's date, moved off a day off (Civil Code
    Art. 147-148). Within the day, or a budget of 0 ("at once"): close of office on the day
    it starts, or on the next working day if it starts after closing.
    """
    if budget.value == 0 or budget.unit is TimeUnit.WITHIN_THE_DAY:
        return cal.after(start, Duration(value=0, unit=TimeUnit.WITHIN_THE_DAY))
    if budget.unit is TimeUnit.CALENDAR_DAYS:
        return cal.after(start, budget)
    return cal.add_working_seconds(start, math.floor(cal.working_seconds(budget) * scale))


def classify(done_at: datetime, deadline: datetime, cal: WorkingCalendar) -> Timeliness:
    """Early: finished on a day before the deadline's day; on time: on that day, at or
    before the deadline (17:00 of the last day is on time, a second later is not); late:
    after it."""
    if done_at > deadline:
        return Timeliness.LATE
    if cal.local(done_at).date() < cal.local(deadline).date():
        return Timeliness.EARLY
    return Timeliness.ON_TIME


def latest_start(
    cal: WorkingCalendar, end: datetime, budget: Duration, scale: float = 1.0
) -> datetime:
    """The latest moment a step with ``budget`` can start and still end by ``end`` (the
    inverse of ``budget_end``)."""
    if budget.value == 0 or budget.unit is TimeUnit.WITHIN_THE_DAY:
        return end
    if budget.unit is TimeUnit.CALENDAR_DAYS:
        return cal.latest_working_moment(end - timedelta(days=budget.value))
    return cal.subtract_working_seconds(end, math.floor(cal.working_seconds(budget) * scale))


def _working(d: Duration) -> bool:
    return d.unit in (TimeUnit.WORKING_DAYS, TimeUnit.WORKING_HOURS)


def latest_apology_moment(cal: WorkingCalendar, appointment: datetime) -> datetime:
    """The latest legal moment for Form 04: one working day before the appointment it
    replaces, at the close of office of the day before when that falls at an opening.
    Decree 61/2018/NĐ-CP, Art. 19(1)(c) as we read it ("chậm nhất 01 ngày trước ngày hết
    hạn"; clause to be checked), a rule Decree 118/2025/NĐ-CP keeps (article to be
    checked); domain.md states the same practice."""
    t = cal.subtract_working_seconds(appointment, cal.working_seconds_per_day)
    before = cal.latest_working_moment(t - timedelta(seconds=1))
    return before if cal.working_seconds_between(before, t) == 0 else t


# --- the plan of a route ---------------------------------------------------------------------


def _family(unit: TimeUnit) -> TimeUnit:
    return TimeUnit.CALENDAR_DAYS if unit is TimeUnit.CALENDAR_DAYS else TimeUnit.WORKING_HOURS


def default_steps(p: Procedure) -> tuple[Step, ...]:
    """The route of a procedure whose catalogue entry lists no steps (and no opinions):
    received at the desk, processed and decided by the lead agency within the whole legal
    time, returned by the desk at once."""
    zero = Duration(value=0, unit=_family(p.processing_time.unit))
    return (
        Step(
            order=1,
            kind=StepKind.RECEIVE,
            agency_id=p.receiving_agency,
            action="Tiếp nhận hồ sơ",
            duration=zero,
        ),
        Step(
            order=2,
            kind=StepKind.APPROVE,
            agency_id=p.lead_agency,
            role=ActingRole.DEPARTMENT_HEAD,
            action="Giải quyết hồ sơ",
            duration=p.processing_time,
        ),
        Step(
            order=3,
            kind=StepKind.RETURN,
            agency_id=p.receiving_agency,
            action="Trả kết quả",
            duration=zero,
        ),
    )


def plan_steps(p: Procedure, book: AgencyBook, receiving: str | None = None) -> tuple[StepRef, ...]:
    """The procedure's steps with the names forms print (agency, department). A dossier
    received at another desk than the catalogue's is received and returned there."""
    out = []
    for s in sorted(p.steps or default_steps(p), key=lambda s: s.order):
        desk = s.kind in (StepKind.RECEIVE, StepKind.RETURN) and s.agency_id == p.receiving_agency
        if desk and receiving and receiving != s.agency_id:
            s = s.model_copy(update={"agency_id": receiving, "department": None})
        agency_name, department_name = s.agency_id, None
        if s.agency_id in book.ids():
            agency = book.get(s.agency_id)
            agency_name = agency.name
            if s.department and s.department in {d.code for d in agency.departments}:
                department_name = agency.department(s.department).name
        out.append(
            StepRef(
                order=s.order,
                kind=s.kind,
                action=s.action,
                agency_id=s.agency_id,
                agency_name=agency_name,
                department=s.department,
                department_name=department_name,
                role=s.role,
                duration=s.duration,
            )
        )
    return tuple(out)


def consult_targets(procedure: Procedure) -> tuple[ConsultTarget, ...]:
    """One target per consulted agency, in catalogue order, never the lead agency itself."""
    seen: set[str] = set()
    out = []
    for c in procedure.consultations:
        if c.agency_id == procedure.lead_agency or c.agency_id in seen:
            continue
        seen.add(c.agency_id)
        out.append(
            ConsultTarget(
                agency_id=c.agency_id, agency_name=c.agency_name, template_id=c.template_id
            )
        )
    return tuple(out)


# --- the aggregate ---------------------------------------------------------------------------


class StepStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    SKIPPED = "skipped"


class StepState(BaseModel):
    """One step of one dossier: its plan and what happened to it."""

    model_config = ConfigDict(extra="forbid")
    ref: StepRef
    status: StepStatus = StepStatus.PENDING
    holder: Holder | None = None
    started_at: datetime | None = None
    deadline_at: datetime | None = None
    completed_at: datetime | None = None
    timeliness: Timeliness | None = None
    late_working_seconds: int = 0
    overdue: bool = False
    late_holder: Holder | None = Field(
        default=None, description="Who held the step when its deadline passed"
    )
    shift_days: int = Field(default=0, description="Days its dates moved for pauses")
    notes: list[str] = Field(default_factory=list)
    result: str | None = None
    documents: list[DocumentRef] = Field(default_factory=list)

    @property
    def order(self) -> int:
        return self.ref.order

    @property
    def kind(self) -> StepKind:
        return self.ref.kind


class ApologyStatus(StrEnum):
    DRAFTED = "drafted"
    ISSUED = "issued"
    WITHDRAWN = "withdrawn"


class Apology(BaseModel):
    """A Form 04 of the dossier: drafted for the agency at fault, issued (confirmed or at
    the latest legal moment), or withdrawn when no longer needed."""

    model_config = ConfigDict(extra="forbid")
    id: uuid.UUID
    number: int
    status: ApologyStatus = ApologyStatus.DRAFTED
    agency_id: str
    agency_name: str
    department: str | None = None
    department_name: str | None = None
    reason: str
    previous_appointment_at: datetime
    proposed_appointment_at: datetime
    latest_issue_at: datetime
    drafted_at: datetime
    appointment_at: datetime | None = None
    issued_at: datetime | None = None
    issued_by: Holder | None = None
    automatic: bool = False
    after_latest_moment: bool = False
    issue_number: int = 0
    """1 for the dossier's first issued apology, 2 for the second..."""


class Route(BaseModel):
    """One dossier's way from receipt to return (the aggregate routing owns)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    code: str
    procedure_code: str
    procedure_version: int
    procedure_name: str
    receiving_agency: str
    receiving_agency_name: str
    lead_agency: str
    lead_agency_name: str
    consult: list[ConsultTarget] = Field(default_factory=list)
    return_method: ReturnMethod = ReturnMethod.AT_DESK
    office_hours: OfficeHours | None = Field(
        default=None, description="The procedure's own office hours, where it has them"
    )
    offices: dict[str, Office] = Field(
        default_factory=dict, description="How forms name each agency of the route"
    )
    steps: list[StepState]
    current: int | None = Field(default=None, description="Index of the open step")
    state: DossierStatus = DossierStatus.PROCESSING
    received_at: datetime
    routed_at: datetime
    appointment_at: datetime
    legal_appointment_at: datetime
    paused_at: datetime | None = None
    paused_seconds: int = 0
    supplement_requests: int = 0
    supplement_violations: int = 0
    violations: list[StepFault] = Field(default_factory=list)
    decision: ResultDecision | None = None
    decision_documents: list[DocumentRef] = Field(default_factory=list)
    decision_reasons: list[str] = Field(default_factory=list)
    decided_at: datetime | None = None
    ready_at: datetime | None = None
    returned_at: datetime | None = None
    timeliness: Timeliness | None = None
    handovers: list[HandOver] = Field(default_factory=list)
    apologies: list[Apology] = Field(default_factory=list)
    calendar_days: bool = Field(
        default=False,
        description="The legal time is in calendar days: every budget is, and pauses move"
        " dates by the days waited",
    )
    fee_requests: int = 0
    budget_scale: float = Field(
        default=1.0,
        description="Below 1 when the working time from the clock's start to the appointment"
        " is shorter than the steps' budgets (a procedure 'within the day' received in the"
        " afternoon): every working budget shrinks alike so the steps still end by the"
        " appointment",
    )
    watched_for: datetime | None = Field(
        default=None, description="The appointment the lead-time watch last looked at"
    )
    ended_reason: str | None = None
    version: int = 0
    _events: list[EventPayload] = PrivateAttr(default_factory=list)

    # --- creation ---------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        code: str,
        procedure: Procedure,
        receiving_agency: str,
        receiving_agency_name: str,
        book: AgencyBook,
        cal: WorkingCalendar,
        received_at: datetime,
        clock_starts_at: datetime,
        appointment_at: datetime,
        received_by: str | None,
        return_method: ReturnMethod,
        now: datetime,
    ) -> Route:
        """A new route: the receipt step is done at receipt, and the dossier goes to the
        first step after it (``routing.dossier_routed``)."""
        refs = plan_steps(procedure, book, receiving_agency)
        route = cls(
            code=code,
            procedure_code=procedure.code,
            procedure_version=procedure.version,
            procedure_name=procedure.name,
            receiving_agency=receiving_agency,
            receiving_agency_name=receiving_agency_name,
            lead_agency=procedure.lead_agency,
            lead_agency_name=procedure.lead_agency_name,
            consult=list(consult_targets(procedure)),
            return_method=return_method,
            office_hours=procedure.office_hours,
            calendar_days=procedure.processing_time.unit is TimeUnit.CALENDAR_DAYS,
            steps=[StepState(ref=r) for r in refs],
            received_at=received_at,
            routed_at=now,
            appointment_at=appointment_at,
            legal_appointment_at=appointment_at,
        )
        budgets = [s.ref.duration for s in route.steps[1:] if _working(s.ref.duration)]
        if budgets and len(budgets) == len(route.steps) - 1:
            needed = sum(cal.working_seconds(d) for d in budgets)
            available = cal.working_seconds_between(clock_starts_at, appointment_at)
            if 0 < available < needed:
                route.budget_scale = available / needed
        for agency_id in sorted(route.agencies()):
            if agency_id in book.ids():
                route.offices[agency_id] = book.office(agency_id)
        first = route.steps[0]
        if first.kind is StepKind.RECEIVE:
            first.status = StepStatus.DONE
            first.holder = route._holder_of(first, person=received_by)
            first.started_at = first.completed_at = first.deadline_at = received_at
            first.timeliness = Timeliness.ON_TIME
            giver = first.holder
            nxt = 1
        else:  # a route without a receipt step: the desk hands it over all the same
            giver = Holder(
                agency_id=route.receiving_agency,
                agency_name=route.receiving_agency_name,
                person=received_by,
            )
            nxt = 0
        # a period in days is counted from the date of receipt, whatever the hour (Civil
        # Code Art. 147, as the appointment was); working time from the clock's start
        first_start = received_at if route.calendar_days else clock_starts_at
        line = route._hand_to(nxt, giver=giver, at=now, start=first_start, cal=cal)
        step = route.steps[nxt]
        route._emit(
            DossierRouted(
                code=code,
                procedure_code=procedure.code,
                procedure_version=procedure.version,
                procedure_name=procedure.name,
                lead_agency=procedure.lead_agency,
                lead_agency_name=procedure.lead_agency_name,
                consult=tuple(route.consult),
                appointment_at=appointment_at,
                routed_at=now,
                steps=refs,
                handover=line,
                step=step.ref,
                step_deadline_at=step.deadline_at,
                opens_round=step.kind is StepKind.CONSULT and bool(route.consult),
            )
        )
        route._review(now, cal)
        return route

    # --- what the route is ------------------------------------------------------------------

    @property
    def events(self) -> list[EventPayload]:
        return self._events

    def take_events(self) -> list[EventPayload]:
        out, self._events = self._events, []
        return out

    def _emit(self, event: EventPayload) -> None:
        self._events.append(event)

    @property
    def open_step(self) -> StepState | None:
        return None if self.current is None else self.steps[self.current]

    def agencies(self) -> frozenset[str]:
        """Every agency with a part in the dossier: they may read its route."""
        ids = {self.receiving_agency, self.lead_agency}
        ids.update(s.ref.agency_id for s in self.steps)
        ids.update(c.agency_id for c in self.consult)
        return frozenset(ids)

    def coordinating(self) -> tuple[str, ...]:
        """The agencies besides the lead that work on the dossier or give opinions (Form
        05's "cơ quan phối hợp"); the desk only receives and returns."""
        names = {
            s.ref.agency_name
            for s in self.steps
            if s.ref.agency_id != self.lead_agency
            and s.kind not in (StepKind.RECEIVE, StepKind.RETURN)
        }
        return tuple(sorted(names | {c.agency_name for c in self.consult}))

    def faults(self) -> list[StepFault]:
        """Steps that ended (or still run) past their budget, and second supplement
        requests: whose each was. In route order."""
        out: list[StepFault] = []
        for s in self.steps:
            if s.deadline_at is None or not (s.timeliness is Timeliness.LATE or s.overdue):
                continue
            out.append(self._fault(s, s.late_holder or self._held(s), LATE_STEP))
        return out + list(self.violations)

    def _fault(
        self, s: StepState, holder: Holder, reason: str, late_seconds: int | None = None
    ) -> StepFault:
        """``s`` counted against ``holder``'s agency and department, and why."""
        return StepFault(
            step=s.order,
            action=s.ref.action,
            agency_id=holder.agency_id,
            agency_name=holder.agency_name,
            department=holder.department,
            department_name=holder.department_name,
            deadline_at=s.deadline_at or self.appointment_at,
            late_working_seconds=s.late_working_seconds if late_seconds is None else late_seconds,
            reason=reason,
        )

    def _holder_at(self, s: StepState, t: datetime) -> Holder:
        """Who held the step at ``t``: the receiver of its last hand-over by then."""
        lines = [h for h in self.handovers if h.step == s.order and h.at <= t]
        return lines[-1].receiver if lines else self._held(s)

    def _held(self, s: StepState) -> Holder:
        """Who holds the step: whoever took it or was handed it, else its plan's agency."""
        return s.holder or self._holder_of(s)

    def _holder_of(self, s: StepState, person: str | None = None) -> Holder:
        return Holder(
            agency_id=s.ref.agency_id,
            agency_name=s.ref.agency_name,
            department=s.ref.department,
            department_name=s.ref.department_name,
            person=person,
        )

    # --- checks ------------------------------------------------------------------------------

    def _open(self, order: int | None = None) -> StepState:
        """The open step, if the dossier is being processed (and ``order`` names it)."""
        if self.state.final:
            raise _conflict(f"the dossier is closed ({self.state.value})")
        if self.state in (DossierStatus.RESULT_READY, DossierStatus.REFUSED):
            raise _conflict(f"the result is at the desk ({self.state.value})")
        if self.state.paused:
            raise _conflict("the dossier is waiting for the applicant; the clock is paused")
        step = self.open_step
        if step is None:
            raise _conflict("the dossier is at no step")
        if order is not None and order != step.order:
            raise _conflict(
                f"step {order} is not the current step: the dossier is at step {step.order}"
                f" ({step.ref.action})",
                "step",
            )
        return step

    def require_party(self, who: Officer) -> None:
        """403 unless the caller's agency has a part in the dossier."""
        if who.agency_id not in self.agencies():
            raise _forbidden("this dossier belongs to other agencies", "agency")

    def _require(self, who: Officer, step: StepState, role: ActingRole | None = None) -> None:
        """The caller may act on ``step``: of its agency (else 403 for a stranger, 409 for
        an agency of the route whose turn it is not), of its department unless the agency's
        head, and of its role or above."""
        self.require_party(who)
        holder = self._held(step)
        if who.agency_id != holder.agency_id:
            raise _conflict(
                f"the dossier is at step {step.order} ({step.ref.action}), held by"
                f" {holder.agency_name}, not by your agency",
                "agency",
            )
        need = role or step.ref.role
        if who.rank < need.rank:
            raise _forbidden(
                f"step {step.order} is acted on by a {need.value} or above, not a {who.role}",
                "role",
            )
        if holder.department and not who.is_agency_head and who.department != holder.department:
            raise _forbidden(
                f"step {step.order} is held by {holder.department_name or holder.department};"
                f" your department is {who.department or 'not stated in your token'}",
                "department",
            )

    # --- moves ---------------------------------------------------------------------------------

    def take(self, who: Officer, order: int, now: datetime, note: str | None = None) -> None:
        """A person takes the dossier in hand at its step (Form 05: the receiver signs)."""
        step = self._open(order)
        if step.kind in (StepKind.CONSULT, StepKind.RECEIVE):
            raise _conflict(f"step {order} ({step.kind.value}) runs by itself", "step")
        self._require(who, step)
        holder = self._held(step)
        if holder.person_id and holder.person_id != who.person and not who.is_head:
            raise _conflict(f"step {order} is already in the hands of {holder.person}", "step")
        step.holder = self._acting(step, who)
        if note:
            step.notes.append(note)
        self._sign_last_line(step)
        self._emit(
            StepTaken(code=self.code, step=step.ref, by=step.holder, taken_at=now, note=note)
        )

    def _sign_last_line(self, step: StepState) -> None:
        """The person who takes a step is the receiver of the line that handed it over."""
        for i in range(len(self.handovers) - 1, -1, -1):
            line = self.handovers[i]
            if line.step == step.order:
                if line.receiver.person is None and step.holder is not None:
                    receiver = line.receiver.model_copy(
                        update={
                            "person": step.holder.person,
                            "person_id": step.holder.person_id,
                        }
                    )
                    self.handovers[i] = line.model_copy(update={"receiver": receiver})
                return

    def complete(
        self,
        who: Officer,
        order: int,
        now: datetime,
        cal: WorkingCalendar,
        *,
        result: str | None = None,
        documents: Sequence[DocumentRef] = (),
        note: str | None = None,
    ) -> None:
        """An officer ends an assign, appraise or work step; the dossier goes on. The lead
        agency's head may also end the opinion round without the opinions still missing
        (a lapsed request with no legal basis for deemed consent waits otherwise), saying
        why: the open requests are cancelled."""
        step = self._open(order)
        if step.kind is StepKind.CONSULT and who.is_agency_head:
            self._require(who, step, role=ActingRole.AGENCY_HEAD)
            if not (note and note.strip()):
                raise _invalid("say why the round ends without every opinion", "note")
            self._finish(step, now, cal, by=self._acting(step, who), result=note, docs=())
            self._advance(now, cal, giver=step.holder, note=note)
            return
        if step.kind not in (StepKind.ASSIGN, StepKind.APPRAISE, StepKind.WORK):
            how = {
                StepKind.CONSULT: "ends when every opinion is in (or by the lead agency's"
                " head, with a note)",
                StepKind.APPROVE: "ends with the decision (POST .../decision)",
                StepKind.RETURN: "ends when the result is returned (POST .../return)",
                StepKind.RECEIVE: "ended at receipt",
            }[step.kind]
            raise _conflict(f"step {order} ({step.kind.value}) {how}", "step")
        self._require(who, step)
        self._finish(step, now, cal, by=self._acting(step, who), result=result, docs=documents)
        self._advance(now, cal, giver=step.holder, note=note)

    def reassign(
        self,
        who: Officer,
        book: AgencyBook,
        now: datetime,
        *,
        department: str,
        person: str | None,
        note: str | None,
    ) -> None:
        """Hand the dossier to another department (or person) of the same agency within
        its step: a line of Form 05; the step's deadline stays, its fault moves with it."""
        step = self._open()
        if step.kind in (StepKind.CONSULT, StepKind.RECEIVE):
            raise _conflict(f"step {step.order} ({step.kind.value}) runs by itself", "step")
        holder = self._held(step)
        self.require_party(who)
        if who.agency_id != holder.agency_id:
            raise _conflict(
                f"the dossier is at step {step.order}, held by {holder.agency_name}", "agency"
            )
        holds = holder.person_id is not None and holder.person_id == who.person
        heads = who.is_agency_head or (
            who.is_head and (holder.department is None or who.department == holder.department)
        )
        if not (holds or heads):
            raise _forbidden(
                "the agency's head, the head of the department holding it, or the person"
                " holding it hands it over",
                "role",
            )
        try:
            dept = book.get(holder.agency_id).department(department)
        except AgencyError as exc:
            raise _invalid(str(exc), "to_department") from None
        receiver = Holder(
            agency_id=holder.agency_id,
            agency_name=holder.agency_name,
            department=dept.code,
            department_name=dept.name,
            person_id=person,
        )
        giver = (
            holder
            if holder.person
            else holder.model_copy(update={"person": who.display, "person_id": who.person})
        )
        line = self._line(giver, receiver, now, step, note=note)
        step.holder = receiver
        self._emit(
            HandedOver(
                code=self.code,
                line=line,
                step=step.ref,
                deadline_at=step.deadline_at or now,
                state=self.state,
                status=self.state.portal,
            )
        )

    def request_supplement(
        self,
        who: Officer,
        now: datetime,
        items: Sequence[MissingItem],
        note: str | None,
    ) -> None:
        """Form 02 during processing: the clock pauses. The law allows one request; a
        second is recorded, flagged and attributed, and the dossier counts late."""
        step = self._open()
        if step.kind in (StepKind.CONSULT, StepKind.RETURN, StepKind.RECEIVE):
            raise _conflict(
                f"no supplement can be asked at step {step.order} ({step.kind.value});"
                " ask it at an appraisal, work or approval step",
                "step",
            )
        self._require(who, step, role=ActingRole.OFFICER)
        if not items:
            raise _invalid("name at least one document", "missing")
        self.supplement_requests += 1
        number = self.supplement_requests
        violation = number > 1
        by = self._acting(step, who)
        if violation:
            self.supplement_violations += 1
            self.violations.append(
                self._fault(
                    step,
                    by,
                    f"yêu cầu bổ sung hồ sơ lần thứ {number} (chỉ được yêu cầu một lần)",
                    late_seconds=0,
                )
            )
        self.paused_at = now
        self.state = DossierStatus.WAITING_SUPPLEMENT
        self._withdraw_drafts(now, "hồ sơ tạm dừng chờ người nộp bổ sung; xem xét lại khi tiếp tục")
        self._emit(
            ProcessingSupplementRequested(
                code=self.code,
                step=step.ref,
                items=tuple(items),
                note=note,
                requested_by=by,
                request_number=number,
                violation=violation,
                requested_at=now,
            )
        )

    def request_fee(
        self, who: Officer, now: datetime, amount_vnd: int | None, note: str | None
    ) -> None:
        """A fee or financial obligation to pay before the work goes on: the clock pauses
        (time waiting for the applicant does not count)."""
        step = self._open()
        if step.kind in (StepKind.CONSULT, StepKind.RETURN, StepKind.RECEIVE):
            raise _conflict(f"no payment can be asked at step {step.order} ({step.kind.value})")
        self._require(who, step, role=ActingRole.OFFICER)
        self.paused_at = now
        self.fee_requests += 1
        self.state = DossierStatus.WAITING_FEE
        self._withdraw_drafts(now, "hồ sơ tạm dừng chờ người nộp thực hiện nghĩa vụ tài chính")
        self._emit(
            FeeRequested(
                code=self.code,
                step=step.ref,
                amount_vnd=amount_vnd,
                note=note,
                requested_by=self._acting(step, who),
                requested_at=now,
            )
        )

    def fee_paid(self, who: Officer, at: datetime, now: datetime, cal: WorkingCalendar) -> None:
        """The payment arrived (recorded by the agency whose step it is): on again."""
        if self.state is not DossierStatus.WAITING_FEE:
            raise _conflict("the dossier is not waiting for a payment")
        step = self.open_step
        assert step is not None
        self._require(who, step, role=ActingRole.OFFICER)
        if at.tzinfo is None:
            raise _invalid("must carry a timezone, e.g. +07:00", "paid_at")
        if at > now:
            raise _invalid("is in the future", "paid_at")
        self.resume(at, cal)

    def resume(self, at: datetime, cal: WorkingCalendar) -> bool:
        """The applicant supplemented or paid: the open step's deadline and the appointment
        move by exactly the time spent waiting (working time; the days waited where the
        legal time is in calendar days). False if the route was not waiting."""
        if not self.state.paused or self.paused_at is None:
            return False
        step = self.open_step
        assert step is not None
        at = max(at, self.paused_at)
        paused = cal.working_seconds_between(self.paused_at, at)
        previous = self.appointment_at

        def moved(t: datetime) -> datetime:
            assert self.paused_at is not None
            return cal.extend_pause(t, self.paused_at, at, calendar_days=self.calendar_days)

        self.appointment_at = moved(self.appointment_at)
        self.legal_appointment_at = moved(self.legal_appointment_at)
        if step.deadline_at is not None:
            step.deadline_at = moved(step.deadline_at)
        if self.calendar_days:
            step.shift_days += max(
                0, (cal.local(at).date() - cal.local(self.paused_at).date()).days
            )
        paused_at, self.paused_at = self.paused_at, None
        self.paused_seconds += paused
        self.state = DossierStatus.PROCESSING
        self._emit(
            DossierResumed(
                code=self.code,
                paused_at=paused_at,
                resumed_at=at,
                paused_working_seconds=paused,
                previous_appointment_at=previous,
                appointment_at=self.appointment_at,
                step=step.ref,
                step_deadline_at=step.deadline_at or at,
            )
        )
        self._review(at, cal)
        return True

    def opinions_in(self, now: datetime, cal: WorkingCalendar) -> bool:
        """The opinion round completed: the consult step ends and the route goes on. False
        when the route is not at a consult step (a late or repeated completion)."""
        step = self.open_step
        if (
            step is None
            or step.kind is not StepKind.CONSULT
            or self.state is not DossierStatus.PROCESSING
        ):
            return False
        self._finish(step, now, cal, by=None, result="Đã có đủ ý kiến của các cơ quan", docs=())
        self._advance(now, cal, giver=step.holder, note="Đã có đủ ý kiến của các cơ quan")
        nxt = self.open_step
        self._emit(
            DossierAdvanced(
                code=self.code,
                lead_agency=self.lead_agency,
                step=nxt.ref.action if nxt else "return",
                advanced_at=now,
            )
        )
        return True

    def decide(
        self,
        who: Officer,
        now: datetime,
        cal: WorkingCalendar,
        *,
        decision: ResultDecision,
        documents: Sequence[DocumentRef],
        reasons: Sequence[str],
    ) -> None:
        """The approval step: approve with the result documents, or refuse with reasons
        (the written refusal is then the result, and the remaining work is skipped)."""
        step = self._open()
        if step.kind is not StepKind.APPROVE:
            raise _conflict(
                f"the dossier is at step {step.order} ({step.ref.action}), not at its approval",
                "step",
            )
        self._require(who, step)
        if decision is ResultDecision.APPROVED and not documents:
            raise _invalid("an approval carries the result documents", "documents")
        if decision is ResultDecision.REFUSED and not [r for r in reasons if r.strip()]:
            raise _invalid("a refusal gives its reasons", "reasons")
        by = self._acting(step, who)
        self.decision = decision
        self.decision_documents = list(documents)
        self.decision_reasons = [r for r in reasons if r.strip()]
        self.decided_at = now
        self._finish(
            step,
            now,
            cal,
            by=by,
            result="Phê duyệt" if decision is ResultDecision.APPROVED else "Từ chối giải quyết",
            docs=documents,
        )
        self._emit(
            DossierDecided(
                code=self.code,
                decision=decision,
                documents=tuple(documents),
                reasons=tuple(self.decision_reasons),
                decided_by=by,
                decided_at=now,
                step=step.ref,
            )
        )
        if decision is ResultDecision.REFUSED:
            ret = self._return_index()
            for s in self.steps[(self.current or 0) + 1 : ret]:
                s.status = StepStatus.SKIPPED
            self._advance(now, cal, giver=step.holder, note="Từ chối giải quyết", to=ret)
        else:
            self._advance(now, cal, giver=step.holder, note="Đã phê duyệt")

    def mark_ready(
        self, who: Officer, now: datetime, cal: WorkingCalendar, note: str | None = None
    ) -> None:
        """The result is at the desk: processing ends, early, on time or late against the
        appointment by law (moved only by pauses; a second supplement request makes it
        late), with its faults; the desk's return step ends here too (when the applicant
        collects is not the desk's lateness); open drafts of Form 04 are withdrawn."""
        step = self._open()
        if step.kind is not StepKind.RETURN:
            raise _conflict(
                f"the dossier is at step {step.order} ({step.ref.action}); the result is not"
                " at the desk yet",
                "step",
            )
        self._require(who, step)
        if self.decision is None:
            raise _conflict("no decision has been made", "step")
        self.ready_at = now
        t = classify(now, self.legal_appointment_at, cal)
        self.timeliness = Timeliness.LATE if self.supplement_violations else t
        self.state = (
            DossierStatus.RESULT_READY
            if self.decision is ResultDecision.APPROVED
            else DossierStatus.REFUSED
        )
        self._finish(
            step,
            now,
            cal,
            by=self._acting(step, who),
            result="Kết quả đã có tại bộ phận trả kết quả",
            docs=(),
        )
        if note:
            step.notes.append(note)
        self._withdraw_drafts(now, "hồ sơ đã có kết quả")
        self._emit(
            ResultReady(
                code=self.code,
                procedure_code=self.procedure_code,
                procedure_name=self.procedure_name,
                decision=self.decision,
                documents=tuple(self.decision_documents),
                reasons=tuple(self.decision_reasons),
                ready_at=now,
                received_at=self.received_at,
                appointment_at=self.appointment_at,
                legal_appointment_at=self.legal_appointment_at,
                timeliness=self.timeliness,
                faults=tuple(self.faults()),
                apologies=sum(1 for a in self.apologies if a.status is ApologyStatus.ISSUED),
                return_method=self.return_method,
                receiving_agency=self.receiving_agency,
                receiving_agency_name=self.receiving_agency_name,
                lead_agency=self.lead_agency,
                lead_agency_name=self.lead_agency_name,
                coordinating=self.coordinating(),
                handovers=tuple(self.handovers),
                note=note,
                state=self.state,
                status=self.state.portal,
            )
        )

    def return_result(
        self,
        who: Officer,
        now: datetime,
        cal: WorkingCalendar,
        method: ReturnMethod,
        note: str | None = None,
    ) -> None:
        """The result handed to the applicant (at the desk, by post, online): the end."""
        if self.state not in (DossierStatus.RESULT_READY, DossierStatus.REFUSED):
            if self.state.final:
                raise _conflict(f"the dossier is closed ({self.state.value})")
            raise _conflict("the result is not ready at the desk yet", "step")
        step = self.open_step
        assert step is not None
        self._require(who, step)
        by = self._acting(step, who)
        if note:
            step.notes.append(note)
        self.current = None
        self.returned_at = now
        self.state = DossierStatus.RETURNED
        self._emit(
            ResultReturned(
                code=self.code,
                method=method,
                returned_at=now,
                returned_by=by,
                timeliness=self.timeliness or Timeliness.ON_TIME,
                note=note,
            )
        )

    def close(self, state: DossierStatus, reason: str | None, now: datetime) -> bool:
        """A withdrawal by the applicant or a stop by the agency ends the route without a
        result. Not once the result is at the desk or returned (intake then follows the
        result, not the late withdrawal). False if it changed nothing."""
        if self.state.final or self.state in (DossierStatus.RESULT_READY, DossierStatus.REFUSED):
            # returned, ended before, or its result already at the desk: nothing to stop
            return False
        step = self.open_step
        drafts = sum(1 for a in self.apologies if a.status is ApologyStatus.DRAFTED)
        self._withdraw_drafts(now, f"hồ sơ kết thúc ({state.value})")
        self.state = state
        self.ended_reason = reason
        self.paused_at = None
        self.current = None
        self._emit(
            RouteClosed(
                code=self.code,
                state=state,
                status=state.portal,
                reason=reason,
                at_step=step.order if step else None,
                closed_at=now,
                withdrawn_apologies=drafts,
            )
        )
        return True

    # --- timers ------------------------------------------------------------------------------

    def on_step_due(self, now: datetime, cal: WorkingCalendar) -> None:
        """The open step's deadline: past it and still open, the step is late, its agency
        at fault; then can the dossier still finish by its appointment?"""
        step = self.open_step
        if self.state is not DossierStatus.PROCESSING or step is None or step.overdue:
            return
        if step.deadline_at is None or now < step.deadline_at:
            return
        step.overdue = True
        step.late_working_seconds = cal.working_seconds_between(step.deadline_at, now)
        step.late_holder = holder = self._holder_at(step, step.deadline_at)
        self._emit(
            StepOverdue(
                code=self.code,
                fault=self._fault(step, holder, LATE_STEP),
                detected_at=now,
            )
        )
        self._review(now, cal)

    def on_watch(self, now: datetime, cal: WorkingCalendar) -> None:
        """The lead time before the appointment: is the open step already late?"""
        self.watched_for = self.appointment_at
        self._review(now, cal, watching=True)

    def on_risk(self, now: datetime, cal: WorkingCalendar) -> None:
        """The open step's latest moment passed: the dossier cannot finish in time."""
        self._review(now, cal)

    def on_apology_due(self, apology_id: uuid.UUID, now: datetime, cal: WorkingCalendar) -> None:
        """The latest legal moment of a draft: issued unconfirmed if the dossier still
        cannot finish in time; kept while its step is late but the rest could still fit;
        else withdrawn (``_review``)."""
        a = self._apology(apology_id)
        if a is not None and a.status is ApologyStatus.DRAFTED:
            self._review(now, cal)

    def confirm_apology(
        self,
        who: Officer,
        apology_id: uuid.UUID,
        now: datetime,
        cal: WorkingCalendar,
        *,
        reason: str,
        appointment: datetime | None,
    ) -> Apology:
        """The agency at fault confirms its Form 04, in its words, maybe with its own new
        appointment (later than the one it replaces and than now)."""
        self.require_party(who)
        a = self._apology(apology_id)
        if a is None:
            raise RouteError(Refusal.NOT_FOUND, "apology", f"no apology {apology_id}")
        if who.agency_id != a.agency_id:
            raise _forbidden(f"the apology is {a.agency_name}'s to confirm", "agency")
        if not who.is_head:
            raise _forbidden("a head of the agency confirms an apology", "role")
        if a.status is not ApologyStatus.DRAFTED:
            raise _conflict(f"apology {a.number} is {a.status.value}", "apology")
        if self.state is not DossierStatus.PROCESSING:
            raise _conflict(f"the dossier is {self.state.value}: nothing to apologise for now")
        if appointment is not None:
            if appointment.tzinfo is None:
                raise _invalid("must carry a timezone, e.g. +07:00", "appointment_at")
            if appointment <= max(now, self.appointment_at):
                raise _invalid(
                    "the new appointment comes after the one it replaces and after now",
                    "appointment_at",
                )
            if appointment > now + MAX_POSTPONEMENT:
                raise _invalid("the new appointment is more than a year away", "appointment_at")
        self._issue(
            a,
            now,
            cal,
            by=Holder(
                agency_id=who.agency_id,
                agency_name=a.agency_name,
                department=who.department,
                person=who.display,
                person_id=who.person,
            ),
            reason=reason,
            appointment=appointment,
        )
        return a

    def timer_plan(
        self, cal: WorkingCalendar, watch_seconds: int, now: datetime
    ) -> list[TimerPlan]:
        """The timers this route needs now, each carrying the route's version so a timer
        claimed before a change recognises it is stale. The risk moment only while it is
        ahead (past it, every move reviews the route anyway)."""
        if self.state is not DossierStatus.PROCESSING:
            return []
        plans: list[TimerPlan] = []
        payload: dict[str, Any] = {"code": self.code, "version": self.version}
        step = self.open_step
        if step is not None and step.deadline_at is not None and not step.overdue:
            ref = f"{self.code}/{STEP_DUE}/{self.version}"
            plans.append(TimerPlan(STEP_DUE, ref, step.deadline_at, payload))
        if self.watched_for != self.appointment_at:
            due = cal.subtract_working_seconds(self.appointment_at, watch_seconds)
            plans.append(TimerPlan(WATCH, f"{self.code}/{WATCH}/{self.version}", due, payload))
        risk = self.risk_moment(cal)
        if risk is not None and risk + RISK_SLACK > now:
            due = risk + RISK_SLACK  # at_risk holds from just after the moment
            plans.append(TimerPlan(RISK, f"{self.code}/{RISK}/{self.version}", due, payload))
        for a in self.apologies:
            if a.status is ApologyStatus.DRAFTED:
                plans.append(
                    TimerPlan(
                        APOLOGY_DUE,
                        f"{self.code}/{APOLOGY_DUE}/{a.id}/{self.version}",
                        a.latest_issue_at,
                        {**payload, "apology_id": str(a.id)},
                    )
                )
        return plans

    # --- forecasts and apologies -------------------------------------------------------------

    def _later(self) -> list[StepState]:
        """The steps still to come after the open one, up to and with the return."""
        ret = self._return_index()
        return [
            s
            for s in self.steps[(self.current or 0) + 1 : ret + 1]
            if s.status is StepStatus.PENDING
        ]

    def forecast_end(
        self, now: datetime, cal: WorkingCalendar, *, restart: bool = False
    ) -> datetime:
        """When the result can be returned at the earliest, if the open step ends by its
        deadline (or now, if it is past it; with ``restart``, if it is past it, the open
        step gets its whole budget again from now) and every later step takes its whole
        budget. A route in calendar days adds the days up and moves only the last one off a
        day off, as the appointment itself was counted (Civil Code Art. 147-148)."""
        step = self.open_step
        if step is None or step.deadline_at is None or step.started_at is None:
            return now
        late = now >= step.deadline_at
        later = self._later()
        if self.calendar_days:
            days = step.ref.duration.value
            if restart and late:
                base = cal.local(now).date() + timedelta(days=days)
            else:
                raw_end = cal.local(step.started_at).date() + timedelta(days=days + step.shift_days)
                base = max(cal.local(now).date(), raw_end)
            return self._calendar_end(cal, base, later)
        if restart and late:
            t = budget_end(cal, now, step.ref.duration, self.budget_scale)
        else:
            t = max(now, step.deadline_at)
        for s in later:
            t = budget_end(cal, t, s.ref.duration, self.budget_scale)
        return t

    @staticmethod
    def _calendar_end(cal: WorkingCalendar, base: date, later: list[StepState]) -> datetime:
        last = base + timedelta(days=sum(s.ref.duration.value for s in later))
        return cal.end_of_day(cal.working_day_on_or_after(last))

    def risk_moment(self, cal: WorkingCalendar) -> datetime | None:
        """The latest moment the open step can end for the later steps' budgets still to
        fit before the appointment: past it, the dossier cannot finish in time
        (``at_risk`` holds from just after it)."""
        step = self.open_step
        if step is None or step.started_at is None:
            return None
        later = self._later()
        if self.calendar_days:
            # the last day the open step may end on: the latest D with the later steps'
            # days, counted from D, ending by the appointment
            appointment = self.appointment_at
            d = cal.local(appointment).date() - timedelta(
                days=sum(s.ref.duration.value for s in later)
            )
            for _ in range(400):
                if self._calendar_end(cal, d + timedelta(days=1), later) > appointment:
                    break
                d += timedelta(days=1)
            while d > date.min and self._calendar_end(cal, d, later) > appointment:
                d -= timedelta(days=1)
            return datetime.combine(d + timedelta(days=1), time(0), cal.tz).astimezone(UTC)
        t = self.appointment_at
        for s in reversed(later):
            t = latest_start(cal, t, s.ref.duration, self.budget_scale)
        return t

    def at_risk(self, now: datetime, cal: WorkingCalendar) -> bool:
        """Unfinished, and the work left cannot be done by the appointment."""
        if self.state is not DossierStatus.PROCESSING or self.open_step is None:
            return False
        return self.forecast_end(now, cal) > self.appointment_at

    def _draft(self) -> Apology | None:
        return next((a for a in self.apologies if a.status is ApologyStatus.DRAFTED), None)

    def _proposal(self, now: datetime, cal: WorkingCalendar) -> datetime:
        """A new appointment with room in it: the open step, if late, gets its whole budget
        again from now, every later step its own; at the close of that day, and never
        before the close of the working day after the appointment it replaces."""
        forecast = self.forecast_end(now, cal, restart=True)
        proposed = cal.end_of_day(cal.local(forecast).date())
        floor = cal.end_of_day(cal.next_working_day(cal.local(self.appointment_at).date()))
        return max(proposed, floor)

    def _review(self, now: datetime, cal: WorkingCalendar, *, watching: bool = False) -> None:
        """After every move and timer, the rule of Form 04.

        The dossier is at risk when the work left cannot be done by its appointment. Then
        (or, at the lead-time watch, when its open step is already late) the agency at
        fault gets a draft to confirm. An unconfirmed draft is issued at its latest legal
        moment if the dossier is still at risk, or as soon as it is after that moment; it
        is withdrawn when the dossier catches up (not at risk, no step late). Discovered
        only after the latest moment, the apology goes out at once, flagged."""
        if self.state is not DossierStatus.PROCESSING:
            return
        step = self.open_step
        overdue = step is not None and step.overdue
        risk = self.at_risk(now, cal)
        draft = self._draft()
        if draft is not None:
            if risk and now >= draft.latest_issue_at:
                self._issue(draft, now, cal, by=None, reason=draft.reason, appointment=None)
            elif not risk and not overdue:
                self._withdraw(draft, now, "hồ sơ có thể trả kết quả đúng hẹn")
            return
        if not (risk or (watching and overdue)):
            return
        fault = self._fault_now()
        number = len(self.apologies) + 1
        latest = latest_apology_moment(cal, self.appointment_at)
        late = fault.late_working_seconds > 0 or now > fault.deadline_at
        a = Apology(
            id=uuid.uuid5(APOLOGY_NS, f"{self.code}/{number}"),
            number=number,
            agency_id=fault.agency_id,
            agency_name=fault.agency_name,
            department=fault.department,
            department_name=fault.department_name,
            reason=(
                f"Bước «{fault.action}» do {fault.agency_name} thực hiện"
                f" {'đã quá hạn' if late else 'không kịp hạn'}"
                f" (hạn {format_local(fault.deadline_at)}); thời gian còn lại không đủ để trả"
                f" kết quả đúng hẹn {format_local(self.appointment_at)}."
            ),
            previous_appointment_at=self.appointment_at,
            proposed_appointment_at=self._proposal(now, cal),
            latest_issue_at=max(now, latest),
            drafted_at=now,
        )
        self.apologies.append(a)
        if risk and now >= latest:
            a.after_latest_moment = now > latest
            self._issue(a, now, cal, by=None, reason=a.reason, appointment=None)
            return
        self._emit(
            ApologyDrafted(
                apology_id=a.id,
                code=self.code,
                number=number,
                agency_id=a.agency_id,
                agency_name=a.agency_name,
                department=a.department,
                department_name=a.department_name,
                reason=a.reason,
                previous_appointment_at=a.previous_appointment_at,
                proposed_appointment_at=a.proposed_appointment_at,
                latest_issue_at=a.latest_issue_at,
                drafted_at=now,
            )
        )

    def _fault_now(self) -> StepFault:
        """Whose the lateness is: the open step when it is overdue, else the last late
        step, else the open step."""
        step = self.open_step
        assert step is not None
        faults = [f for f in self.faults() if f.reason == LATE_STEP]
        if step.overdue or not faults:
            return self._fault(step, step.late_holder or self._held(step), LATE_STEP)
        return faults[-1]

    def _issue(
        self,
        a: Apology,
        now: datetime,
        cal: WorkingCalendar,
        *,
        by: Holder | None,
        reason: str,
        appointment: datetime | None,
    ) -> None:
        if appointment is None:
            appointment = max(a.proposed_appointment_at, self._proposal(now, cal))
        if appointment <= self.appointment_at:  # drafted before a pause moved the appointment
            appointment = self._proposal(now, cal)
        appointment = appointment.astimezone(UTC)
        a.after_latest_moment = a.after_latest_moment or now > a.latest_issue_at + ISSUE_SLACK
        a.status = ApologyStatus.ISSUED
        a.issued_at = now
        a.issued_by = by
        a.automatic = by is None
        a.reason = reason
        a.appointment_at = appointment
        a.issue_number = sum(1 for x in self.apologies if x.status is ApologyStatus.ISSUED)
        previous, self.appointment_at = self.appointment_at, appointment
        self._emit(
            ApologyIssued(
                apology_id=a.id,
                code=self.code,
                number=a.issue_number,
                repeat=a.issue_number > 1,
                agency_id=a.agency_id,
                agency_name=a.agency_name,
                reason=reason,
                previous_appointment_at=previous,
                appointment_at=appointment,
                issued_at=now,
                issued_by=by,
                automatic=a.automatic,
                after_latest_moment=a.after_latest_moment,
                procedure_name=self.procedure_name,
                received_at=self.received_at,
                office=self.offices.get(a.agency_id),
            )
        )

    def _withdraw(self, a: Apology, now: datetime, reason: str) -> None:
        a.status = ApologyStatus.WITHDRAWN
        self._emit(
            ApologyWithdrawn(
                apology_id=a.id,
                code=self.code,
                agency_id=a.agency_id,
                reason=reason,
                withdrawn_at=now,
            )
        )

    def _withdraw_drafts(self, now: datetime, reason: str) -> None:
        for a in self.apologies:
            if a.status is ApologyStatus.DRAFTED:
                self._withdraw(a, now, reason)

    def _apology(self, apology_id: uuid.UUID) -> Apology | None:
        return next((a for a in self.apologies if a.id == apology_id), None)

    # --- stepping ----------------------------------------------------------------------------

    def _return_index(self) -> int:
        for i, s in enumerate(self.steps):
            if s.kind is StepKind.RETURN:
                return i
        return len(self.steps) - 1

    def _acting(self, step: StepState, who: Officer) -> Holder:
        holder = self._held(step)
        return holder.model_copy(update={"person": who.display, "person_id": who.person})

    def _finish(
        self,
        step: StepState,
        now: datetime,
        cal: WorkingCalendar,
        *,
        by: Holder | None,
        result: str | None,
        docs: Sequence[DocumentRef],
    ) -> None:
        assert step.started_at is not None and step.deadline_at is not None
        step.status = StepStatus.DONE
        step.completed_at = now
        step.timeliness = classify(now, step.deadline_at, cal)
        step.late_working_seconds = (
            cal.working_seconds_between(step.deadline_at, now)
            if step.timeliness is Timeliness.LATE
            else 0
        )
        if step.timeliness is Timeliness.LATE and step.late_holder is None:
            step.late_holder = self._holder_at(step, step.deadline_at)
        if by is not None:
            step.holder = by
        step.result = result
        step.documents = list(docs)
        self._emit(
            StepCompleted(
                code=self.code,
                step=step.ref,
                started_at=step.started_at,
                deadline_at=step.deadline_at,
                completed_at=now,
                timeliness=step.timeliness,
                late_working_seconds=step.late_working_seconds,
                by=by,
                result=result,
                documents=tuple(docs),
            )
        )

    def _advance(
        self,
        now: datetime,
        cal: WorkingCalendar,
        *,
        giver: Holder | None,
        note: str | None,
        to: int | None = None,
    ) -> None:
        """Hand the dossier to the next step (or ``to``) and start its clock."""
        nxt = (self.current or 0) + 1 if to is None else to
        if nxt >= len(self.steps):
            self.current = None
            return
        prev = self.open_step
        assert giver is not None
        line = self._hand_to(nxt, giver=giver, at=now, start=now, cal=cal, note=note, prev=prev)
        step = self.steps[nxt]
        opens = step.kind is StepKind.CONSULT and bool(self.consult)
        self._emit(
            HandedOver(
                code=self.code,
                line=line,
                step=step.ref,
                deadline_at=step.deadline_at or now,
                round=RoundToOpen(
                    procedure_name=self.procedure_name,
                    lead_agency=self.lead_agency,
                    lead_agency_name=self.lead_agency_name,
                    consult=tuple(self.consult),
                )
                if opens
                else None,
                state=self.state,
                status=self.state.portal,
            )
        )
        self._review(now, cal)

    def _hand_to(
        self,
        index: int,
        *,
        giver: Holder,
        at: datetime,
        start: datetime,
        cal: WorkingCalendar,
        note: str | None = None,
        prev: StepState | None = None,
    ) -> HandOver:
        step = self.steps[index]
        step.status = StepStatus.ACTIVE
        step.started_at = start
        step.deadline_at = budget_end(cal, start, step.ref.duration, self.budget_scale)
        step.holder = self._holder_of(step)
        self.current = index
        prev = prev or (self.steps[index - 1] if index > 0 else None)
        return self._line(giver, step.holder, at, step, note=note, prev=prev)

    def _line(
        self,
        giver: Holder,
        receiver: Holder,
        at: datetime,
        step: StepState,
        *,
        note: str | None,
        prev: StepState | None = None,
    ) -> HandOver:
        finished = prev if prev is not None and prev.status is StepStatus.DONE else None
        line = HandOver(
            seq=len(self.handovers) + 1,
            giver=giver,
            receiver=receiver,
            at=at,
            step=step.order,
            step_action=step.ref.action,
            step_deadline_at=step.deadline_at,
            giver_step=finished.order if finished else None,
            giver_deadline_at=finished.deadline_at if finished else None,
            giver_timeliness=finished.timeliness if finished else None,
            note=note,
        )
        self.handovers.append(line)
        return line
