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

from contracts.agencies import AgencyBook, AgencyError, Commune
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
    ApologyEscalated,
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
    Outcome,
    ProcessingSupplementRequested,
    ResultDecision,
    ResultReady,
    ResultReturned,
    RoundOutcome,
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
"""Timer at the latest legal moment of a drafted apology: unsigned, it is escalated."""

LATE_STEP = "quá hạn giải quyết của bước"
RISK_SLACK = timedelta(seconds=1)
ISSUE_SLACK = timedelta(minutes=1)
"""An apology signed a little after its latest moment (the request in flight) is not late."""
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


def _role_label(role: str) -> str:
    try:
        return ActingRole(role).label
    except ValueError:
        return "không có vai trò xử lý hồ sơ"


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


def step_timeliness(
    done_at: datetime, deadline: datetime, cal: WorkingCalendar
) -> tuple[Timeliness, int]:
    """How a step ended, and the working seconds it lost: a step is late only by the
    holder's working time past its budget. Ending at 17:00:05 of the last day, or at night,
    loses none: on time (the round closed by the deadline timer a few seconds after 17:00 is
    not a fault). Early: on a day before the deadline's day."""
    lost = cal.working_seconds_between(deadline, done_at) if done_at > deadline else 0
    if lost > 0:
        return Timeliness.LATE, lost
    if cal.local(done_at).date() < cal.local(deadline).date():
        return Timeliness.EARLY, 0
    return Timeliness.ON_TIME, 0


def overdue_moment(cal: WorkingCalendar, deadline: datetime) -> datetime:
    """The first moment a step still open has lost working time: one working second past
    its deadline (the next opening, for a deadline at the close of office)."""
    return cal.add_working_seconds(deadline, 1)


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
    replaces, never later than the close of the working day before the appointment's day.
    Decree 61/2018/NĐ-CP, Art. 19(1)(c) as we read it ("chậm nhất 01 ngày trước ngày hết
    hạn"; clause to be checked), a rule Decree 118/2025/NĐ-CP keeps (article to be
    checked); domain.md states the same practice."""
    t = cal.subtract_working_seconds(appointment, cal.working_seconds_per_day)
    before = cal.latest_working_moment(t - timedelta(seconds=1))
    t = before if cal.working_seconds_between(before, t) == 0 else t
    day = cal.local(appointment).date()
    eve = cal.end_of_day(cal.previous_working_day(day))
    return min(t, eve)


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


@dataclass(frozen=True)
class Locality:
    """Where a dossier's applicant lives and its land (or building, or business seat)
    lies, as commune keys of the agency book; either may be unknown."""

    residence: str | None = None
    property: str | None = None


def _is_desk(p: Procedure, s: Step) -> bool:
    return s.kind in (StepKind.RECEIVE, StepKind.RETURN) and s.agency_id == p.receiving_agency


def _localized(book: AgencyBook, commune: Commune, s: Step) -> Step:
    """A step of a commune body of the catalogue, given to the same kind of body of the
    competent commune, with the same department (the book must hold it there)."""
    agency_id = book.localize(s.agency_id, commune)
    if agency_id == s.agency_id:
        return s
    if s.department is not None and s.department not in {
        d.code for d in book.get(agency_id).departments
    }:
        raise AgencyError(f"{agency_id} ({commune.name}) has no department {s.department}")
    return s.model_copy(update={"agency_id": agency_id})


def localize_procedure(
    p: Procedure, book: AgencyBook, receiving: str | None, locality: Locality
) -> Procedure:
    """The procedure as the competent commune does it: for a commune-level procedure,
    every step, the lead agency and every consulted agency that is a body of a commune
    (the catalogue's default one) becomes the body of the same kind (``BodyKind``) of the
    commune the procedure's ``competence`` names (the applicant's residence, the land's
    commune, or the receiving one); the desk steps stay at the receiving desk. A commune
    the book does not know raises ``CompetenceError``; any other procedure is unchanged."""
    commune = book.competent_commune(p, receiving, locality.residence, locality.property)
    if commune is None:
        return p
    steps = tuple(s if _is_desk(p, s) else _localized(book, commune, s) for s in p.steps)
    consultations = []
    for c in p.consultations:
        there = book.localize(c.agency_id, commune)
        if there != c.agency_id:
            c = c.model_copy(update={"agency_id": there, "agency_name": book.get(there).name})
        consultations.append(c)
    lead = book.localize(p.lead_agency, commune)
    name = book.get(lead).name if lead != p.lead_agency else p.lead_agency_name
    return p.model_copy(
        update={
            "steps": steps,
            "lead_agency": lead,
            "lead_agency_name": name,
            "consultations": tuple(consultations),
        }
    )


def plan_steps(
    p: Procedure,
    book: AgencyBook,
    receiving: str | None = None,
    locality: Locality | None = None,
) -> tuple[StepRef, ...]:
    """The procedure's steps with the names forms print (agency, department). A dossier
    received at another desk than the catalogue's is received and returned there; with a
    ``locality``, a commune-level procedure's other steps go to the competent commune
    (``localize_procedure``)."""
    if locality is not None:
        p = localize_procedure(p, book, receiving, locality)
    out = []
    for s in sorted(p.steps or default_steps(p), key=lambda s: s.order):
        desk = _is_desk(p, s)
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


class Chain(BaseModel):
    """Who answers for an agency's lateness: its head, and whom the head answers to (for a
    body of a commune, the chairman of its People's Committee; for a vertical agency such as
    the police, its own superior, whom a chairman cannot command; else the province's
    chairman). An unsigned apology is escalated to them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    head: str
    superior: str
    superior_agency_id: str | None = None


def chain_of(book: AgencyBook, agency_id: str) -> Chain:
    """The agency's head and superior, from the agency registry."""
    a = book.get(agency_id)
    if a.vertical:
        assert a.superior is not None  # the registry requires it of a vertical agency
        parent = a.parent if a.parent in book.ids() else None
        return Chain(head=a.head, superior=a.superior, superior_agency_id=parent)
    if a.parent and a.parent in book.ids():
        up = book.get(a.parent)
        return Chain(head=a.head, superior=up.head, superior_agency_id=up.id)
    province = book.province(a.province)
    return Chain(
        head=a.head, superior=province.chairman, superior_agency_id=province.chairman_agency
    )


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

    @property
    def label(self) -> str:
        return {"drafted": "đang chờ xác nhận", "issued": "đã ban hành", "withdrawn": "đã hủy"}[
            self.value
        ]


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
    escalated_at: datetime | None = Field(
        default=None, description="When its head's superior and the operators were told"
    )
    document_number: str | None = None
    signer_name: str | None = None
    signer_title: str | None = None


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
    chains: dict[str, Chain] = Field(
        default_factory=dict, description="Each agency's head and superior, from the registry"
    )
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
                route.chains[agency_id] = chain_of(book, agency_id)
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
            raise _conflict(f"hồ sơ đã kết thúc ({self.state.label})")
        if self.state in (DossierStatus.RESULT_READY, DossierStatus.REFUSED):
            raise _conflict(f"kết quả đã ở bộ phận trả kết quả ({self.state.label})")
        if self.state.paused:
            raise _conflict("hồ sơ đang chờ người nộp; thời hạn giải quyết đang tạm dừng")
        step = self.open_step
        if step is None:
            raise _conflict("hồ sơ không ở bước nào")
        if order is not None and order != step.order:
            raise _conflict(
                f"bước {order} không phải bước hiện tại: hồ sơ đang ở bước {step.order}"
                f" ({step.ref.action})",
                "step",
            )
        return step

    def require_party(self, who: Officer) -> None:
        """403 unless the caller's agency has a part in the dossier."""
        if who.agency_id not in self.agencies():
            raise _forbidden(
                "hồ sơ này thuộc các cơ quan khác, cơ quan của ông/bà không tham gia", "agency"
            )

    def _require(self, who: Officer, step: StepState, role: ActingRole | None = None) -> None:
        """The caller may act on ``step``: of its agency (else 403 for a stranger, 409 for
        an agency of the route whose turn it is not), of its department unless the agency's
        head, and of its role or above."""
        self.require_party(who)
        holder = self._held(step)
        if who.agency_id != holder.agency_id:
            raise _conflict(
                f"hồ sơ đang ở bước {step.order} ({step.ref.action}) do {holder.agency_name}"
                " giữ, không phải cơ quan của ông/bà",
                "agency",
            )
        need = role or step.ref.role
        if who.rank < need.rank:
            raise _forbidden(
                f"bước {step.order} do {need.label} trở lên thực hiện; vai trò của ông/bà là"
                f" {_role_label(who.role)}",
                "role",
            )
        if holder.department and not who.is_agency_head and who.department != holder.department:
            raise _forbidden(
                f"bước {step.order} do {holder.department_name or holder.department} giữ;"
                f" phòng, ban của ông/bà là {who.department or 'không ghi trong thẻ đăng nhập'}",
                "department",
            )

    # --- moves ---------------------------------------------------------------------------------

    def take(self, who: Officer, order: int, now: datetime, note: str | None = None) -> None:
        """A person takes the dossier in hand at its step (Form 05: the receiver signs)."""
        step = self._open(order)
        if step.kind in (StepKind.CONSULT, StepKind.RECEIVE):
            raise _conflict(f"bước {order} ({step.kind.label}) tự chạy, không cần nhận", "step")
        self._require(who, step)
        holder = self._held(step)
        if holder.person_id and holder.person_id != who.person and not who.is_head:
            raise _conflict(f"bước {order} đã do {holder.person} nhận xử lý", "step")
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
                raise _invalid("nêu lý do kết thúc lấy ý kiến khi chưa đủ ý kiến", "note")
            self._finish(step, now, cal, by=self._acting(step, who), result=note, docs=())
            self._advance(now, cal, giver=step.holder, note=note)
            return
        if step.kind not in (StepKind.ASSIGN, StepKind.APPRAISE, StepKind.WORK):
            how = {
                StepKind.CONSULT: "kết thúc khi có đủ ý kiến (hoặc do người đứng đầu cơ"
                " quan chủ trì quyết định, có ghi lý do)",
                StepKind.APPROVE: "kết thúc bằng quyết định phê duyệt hoặc từ chối",
                StepKind.RETURN: "kết thúc khi trả kết quả cho người nộp",
                StepKind.RECEIVE: "đã kết thúc khi tiếp nhận",
            }[step.kind]
            raise _conflict(f"bước {order} ({step.kind.label}) {how}", "step")
        self._require(who, step)
        holder = self._held(step)
        if holder.person_id is None:
            raise _conflict(
                f"bước {order} chưa có người nhận xử lý: người xử lý nhận hồ sơ (ký nhận trên"
                " Phiếu kiểm soát quá trình giải quyết) trước khi hoàn thành bước",
                "step",
            )
        if holder.person_id != who.person and not who.is_head:
            raise _conflict(
                f"bước {order} do {holder.person or holder.person_id} nhận xử lý; chỉ người đó"
                " hoặc người đứng đầu hoàn thành thay",
                "step",
            )
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
            raise _conflict(
                f"bước {step.order} ({step.kind.label}) tự chạy, không chuyển giao được", "step"
            )
        holder = self._held(step)
        self.require_party(who)
        if who.agency_id != holder.agency_id:
            raise _conflict(f"hồ sơ đang ở bước {step.order} do {holder.agency_name} giữ", "agency")
        holds = holder.person_id is not None and holder.person_id == who.person
        heads = who.is_agency_head or (
            who.is_head and (holder.department is None or who.department == holder.department)
        )
        if not (holds or heads):
            raise _forbidden(
                "chỉ người đứng đầu cơ quan, người đứng đầu phòng, ban đang giữ hồ sơ hoặc"
                " người đang xử lý mới chuyển giao được",
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
                f"không thể yêu cầu bổ sung ở bước {step.order} ({step.kind.label}); yêu cầu ở"
                " bước thẩm định, thực hiện hoặc phê duyệt",
                "step",
            )
        self._require(who, step, role=ActingRole.OFFICER)
        if not items:
            raise _invalid("nêu ít nhất một giấy tờ cần bổ sung", "missing")
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
            raise _conflict(
                f"không thể yêu cầu thực hiện nghĩa vụ tài chính ở bước {step.order}"
                f" ({step.kind.label})"
            )
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
            raise _conflict("hồ sơ không chờ thực hiện nghĩa vụ tài chính")
        step = self.open_step
        assert step is not None
        self._require(who, step, role=ActingRole.OFFICER)
        if at.tzinfo is None:
            raise _invalid("thời điểm phải ghi múi giờ, ví dụ +07:00", "paid_at")
        if at > now:
            raise _invalid("thời điểm nộp ở tương lai", "paid_at")
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
                legal_appointment_at=self.legal_appointment_at,
                step=step.ref,
                step_deadline_at=step.deadline_at or at,
            )
        )
        self._review(at, cal)
        return True

    def opinions_in(
        self, now: datetime, cal: WorkingCalendar, outcomes: Sequence[RoundOutcome] = ()
    ) -> bool:
        """The opinion round completed: the consult step ends and the route goes on. False
        when the route is not at a consult step (a late or repeated completion).

        The step ended when its work was done: at the last outcome (a reply, or the
        deadline of an opinion deemed given), not when routing heard of it. A round closed
        by deemed consent at its deadline is on time by definition: the law makes silence
        consent at that moment (e.g. Law on Construction 2014, Art. 102(1) as amended in
        2020; Circular 02/2022/TT-BTNMT, Art. 16), so the lead agency lost no time."""
        step = self.open_step
        if (
            step is None
            or step.kind is not StepKind.CONSULT
            or self.state is not DossierStatus.PROCESSING
        ):
            return False
        assert step.started_at is not None
        moments = [o.at for o in outcomes if o.at is not None]
        done = min(now, max(moments)) if moments else now
        done = max(done, step.started_at)
        deadline = step.deadline_at
        assert deadline is not None
        late = [
            o
            for o in outcomes
            if o.at is not None
            and o.outcome is Outcome.REPLIED
            and step_timeliness(o.at, deadline, cal)[0] is Timeliness.LATE
        ]
        # deemed given at the deadline is on time; a reply that came late is not, and the
        # time was lost by the agency whose late opinion came last, not by the lead
        deemed = not late and any(o.outcome is Outcome.DEEMED_CONSENT for o in outcomes)
        if late:
            last = max(late, key=lambda o: o.at or done)
            names = {c.agency_id: c.agency_name for c in self.consult}
            step.late_holder = Holder(
                agency_id=last.agency_id, agency_name=names.get(last.agency_id, last.agency_id)
            )
        self._finish(
            step,
            done,
            cal,
            by=None,
            result="Đã có đủ ý kiến của các cơ quan",
            docs=(),
            on_time=deemed,
        )
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
                f"hồ sơ đang ở bước {step.order} ({step.ref.action}), chưa đến bước phê duyệt",
                "step",
            )
        self._require(who, step)
        if decision is ResultDecision.APPROVED and not documents:
            raise _invalid("phê duyệt phải kèm văn bản kết quả", "documents")
        if decision is ResultDecision.REFUSED and not [r for r in reasons if r.strip()]:
            raise _invalid("từ chối phải nêu lý do", "reasons")
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
                f"hồ sơ đang ở bước {step.order} ({step.ref.action}); kết quả chưa đến bộ"
                " phận trả kết quả",
                "step",
            )
        self._require(who, step)
        if self.decision is None:
            raise _conflict("chưa có quyết định giải quyết", "step")
        self.ready_at = now
        t, _ = step_timeliness(now, self.legal_appointment_at, cal)  # no working time lost
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
                raise _conflict(f"hồ sơ đã kết thúc ({self.state.label})")
            raise _conflict("kết quả chưa có tại bộ phận trả kết quả", "step")
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
        result. Intake refuses one once it knows the result is at the desk; one it accepted
        while the result was on its way still ends the route (a final status never moves:
        intake and routing agree on 7 or 8), and how processing ended stays recorded. Not
        once returned. False if it changed nothing."""
        if self.state.final:
            return False  # returned or ended before: nothing to stop
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
                agency_id=self.lead_agency,
                agency_name=self.lead_agency_name,
                office=self.offices.get(self.lead_agency),
                procedure_name=self.procedure_name,
                received_at=self.received_at,
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
        if step.deadline_at is None or now < overdue_moment(cal, step.deadline_at):
            return  # no working time lost yet (a deadline at 17:00 is not late at 17:00:05)
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
        """The latest legal moment of a draft: still unsigned and still needed, it is
        escalated to the head's superior and the operators (never sent unsigned); no longer
        needed, it is withdrawn (``_review``)."""
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
        appointment: datetime,
        number: str,
        signer_name: str | None = None,
    ) -> Apology:
        """The head of the agency at fault signs its Form 04: the reason in its words, the
        letter's number, the new appointment (later than the one it replaces and than now)
        and their name. Circular 03/2025/TT-VPCP, Form 04 (an apology with a request to
        extend, signed by the head); Decree 30/2020/NĐ-CP, Annex I (number, signer)."""
        self.require_party(who)
        a = self._apology(apology_id)
        if a is None:
            raise RouteError(Refusal.NOT_FOUND, "apology", f"không có phiếu xin lỗi {apology_id}")
        if who.agency_id != a.agency_id:
            raise _forbidden(f"phiếu xin lỗi do {a.agency_name} xác nhận", "agency")
        if not who.is_agency_head:
            raise _forbidden("người đứng đầu cơ quan ký phiếu xin lỗi", "role")
        if a.status is not ApologyStatus.DRAFTED:
            raise _conflict(f"phiếu xin lỗi số {a.number} {a.status.label}", "apology")
        if self.state is not DossierStatus.PROCESSING:
            raise _conflict(f"hồ sơ {self.state.label}: không còn gì để xin lỗi")
        if appointment.tzinfo is None:
            raise _invalid("ngày hẹn phải ghi múi giờ, ví dụ +07:00", "appointment_at")
        if appointment <= max(now, self.appointment_at):
            raise _invalid(
                "ngày hẹn mới phải sau ngày hẹn cũ và sau thời điểm hiện tại", "appointment_at"
            )
        if appointment > now + MAX_POSTPONEMENT:
            raise _invalid("ngày hẹn mới xa hơn một năm", "appointment_at")
        if not number.strip():
            raise _invalid("ghi số của văn bản (Số: …)", "number")
        # the signer is the person logged in: a name in the body only where the token
        # carries none, never another person's
        token_name = (who.name or "").strip()
        name = token_name or (signer_name or "").strip()
        if not name:
            raise _invalid("ghi họ tên người ký", "signer_name")
        if token_name and signer_name and signer_name.strip() != token_name:
            raise _invalid("họ tên người ký phải là người đăng nhập", "signer_name")
        chain = self.chains.get(a.agency_id)
        a.document_number = number.strip()
        a.signer_name = name
        a.signer_title = chain.head if chain else None
        self._issue(
            a,
            now,
            by=Holder(
                agency_id=who.agency_id,
                agency_name=a.agency_name,
                department=who.department,
                person=name,
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
            due = overdue_moment(cal, step.deadline_at)
            plans.append(TimerPlan(STEP_DUE, ref, due, payload))
        if self.watched_for != self.appointment_at:
            due = cal.subtract_working_seconds(self.appointment_at, watch_seconds)
            plans.append(TimerPlan(WATCH, f"{self.code}/{WATCH}/{self.version}", due, payload))
        risk = self.risk_moment(cal)
        if risk is not None and risk + RISK_SLACK > now:
            due = risk + RISK_SLACK  # at_risk holds from just after the moment
            plans.append(TimerPlan(RISK, f"{self.code}/{RISK}/{self.version}", due, payload))
        for a in self.apologies:
            if a.status is ApologyStatus.DRAFTED and a.escalated_at is None:
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
                raw_end = min(raw_end, cal.local(step.deadline_at).date())  # capped to fit
                # days run through days off: a step's deadline moved off a weekend (Art.
                # 148(5)) costs the plan nothing until working time is actually lost
                lost = now >= overdue_moment(cal, step.deadline_at)
                base = max(cal.local(now).date(), raw_end) if lost else raw_end
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
            d = self._last_day(cal, later)
            return datetime.combine(d + timedelta(days=1), time(0), cal.tz).astimezone(UTC)
        t = self.appointment_at
        for s in reversed(later):
            t = latest_start(cal, t, s.ref.duration, self.budget_scale)
        return t

    def _last_day(self, cal: WorkingCalendar, later: list[StepState]) -> date:
        """In days: the last day a step may end on for ``later``'s days, counted from it,
        to end by the appointment."""
        appointment = self.appointment_at
        d = cal.local(appointment).date() - timedelta(days=sum(s.ref.duration.value for s in later))
        for _ in range(400):
            if self._calendar_end(cal, d + timedelta(days=1), later) > appointment:
                break
            d += timedelta(days=1)
        while d > date.min and self._calendar_end(cal, d, later) > appointment:
            d -= timedelta(days=1)
        return d

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

        A draft goes to the agency at fault as soon as the dossier is at risk (the work left
        cannot be done by the appointment), or its open step is overdue when waiting for the
        risk would pass the latest legal moment (the later steps add up to a working day or
        less) or at the lead-time watch. The head signs it (``confirm_apology``). At its
        latest moment, unsigned and still needed, it is escalated to the head's superior and
        the operators, and the dossier is flagged; it is never sent unsigned. Drafted only
        after that moment, it is escalated at once. It is withdrawn when the dossier catches
        up (not at risk, no step overdue)."""
        if self.state is not DossierStatus.PROCESSING:
            return
        step = self.open_step
        overdue = step is not None and step.overdue
        risk = self.at_risk(now, cal)
        draft = self._draft()
        if draft is not None:
            if not risk and not overdue:
                self._withdraw(draft, now, "hồ sơ có thể trả kết quả đúng hẹn")
            elif now >= draft.latest_issue_at and draft.escalated_at is None:
                self._escalate(draft, now, "chưa được người đứng đầu ký đến thời điểm muộn nhất")
            return
        latest = latest_apology_moment(cal, self.appointment_at)
        if not (risk or (overdue and (watching or self._too_late_to_wait(cal, latest)))):
            return
        fault = self._fault_now()
        number = len(self.apologies) + 1
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
            latest_issue_at=latest,
            drafted_at=now,
            after_latest_moment=now > latest,
        )
        self.apologies.append(a)
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
                after_latest_moment=a.after_latest_moment,
            )
        )
        if now >= latest:
            self._escalate(a, now, "chỉ phát hiện sau thời điểm muộn nhất để gửi phiếu xin lỗi")

    def _too_late_to_wait(self, cal: WorkingCalendar, latest: datetime) -> bool:
        """Whether the risk moment (when the dossier can no longer finish in time) comes
        only at or after the latest moment to apologise: then an overdue step is drafted
        for at once, or the apology could only be late."""
        risk = self.risk_moment(cal)
        return risk is None or risk + RISK_SLACK >= latest

    def _escalate(self, a: Apology, now: datetime, why: str) -> None:
        """Tell the head's superior and the operators that a Form 04 is unsigned."""
        a.escalated_at = now
        chain = self.chains.get(a.agency_id) or Chain(
            head=f"Người đứng đầu {a.agency_name}",
            superior=f"Cấp trên trực tiếp của {a.agency_name}",
        )
        self._emit(
            ApologyEscalated(
                apology_id=a.id,
                code=self.code,
                number=a.number,
                agency_id=a.agency_id,
                agency_name=a.agency_name,
                head=chain.head,
                superior=chain.superior,
                superior_agency_id=chain.superior_agency_id,
                reason=a.reason,
                why=f"Phiếu xin lỗi và hẹn lại ngày trả kết quả số {a.number} {why}",
                appointment_at=self.appointment_at,
                latest_issue_at=a.latest_issue_at,
                drafted_at=a.drafted_at,
                escalated_at=now,
                after_latest_moment=a.after_latest_moment,
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
        *,
        by: Holder,
        reason: str,
        appointment: datetime,
    ) -> None:
        """The signed Form 04 goes to the applicant; its date becomes the appointment the
        dossier is now held to (the legal one stays, for lateness)."""
        appointment = appointment.astimezone(UTC)
        a.after_latest_moment = a.after_latest_moment or now > a.latest_issue_at + ISSUE_SLACK
        a.status = ApologyStatus.ISSUED
        a.issued_at = now
        a.issued_by = by
        a.automatic = False
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
                automatic=False,
                after_latest_moment=a.after_latest_moment,
                procedure_name=self.procedure_name,
                received_at=self.received_at,
                office=self.offices.get(a.agency_id),
                document_number=a.document_number,
                signer_name=a.signer_name,
                signer_title=a.signer_title,
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
        on_time: bool = False,
    ) -> None:
        """End ``step`` at ``now``: late only by working time lost past its deadline
        (``step_timeliness``); with ``on_time`` (deemed consent at the deadline) never late.
        A step found overdue by its timer that ends without loss is cleared of the fault."""
        assert step.started_at is not None and step.deadline_at is not None
        step.status = StepStatus.DONE
        step.completed_at = now
        timeliness, lost = step_timeliness(now, step.deadline_at, cal)
        if on_time and timeliness is Timeliness.LATE:
            timeliness, lost = Timeliness.ON_TIME, 0
        step.timeliness, step.late_working_seconds = timeliness, lost
        if timeliness is Timeliness.LATE:
            if step.late_holder is None:
                step.late_holder = self._holder_at(step, step.deadline_at)
        else:
            step.overdue, step.late_holder = False, None
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
        if self.calendar_days and step.kind is not StepKind.CONSULT:
            # days run through days off, but a step's own deadline is moved off one (Civil
            # Code Art. 148(5)): after a step that ended on a Monday for a Saturday, the
            # budgets left no longer fit. A step then ends by the day the steps after it
            # still fit in, so one that keeps its deadline never makes the dossier late.
            # (An opinion round keeps the period the law gives the asked agencies.)
            ret = self._return_index()
            later = [s for s in self.steps[index + 1 : ret + 1] if s.status is StepStatus.PENDING]
            cap = cal.latest_working_moment(cal.end_of_day(self._last_day(cal, later)))
            if start < cap < step.deadline_at:
                step.deadline_at = cap
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
