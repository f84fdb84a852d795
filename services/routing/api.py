"""Routing's HTTP API: a dossier's route, and officers' moves on it.

Reading: staff of any agency with a part in the dossier, and operators; moves: officers,
department heads and agency heads of the agency whose turn it is (a stranger agency gets
403; an agency of the route whose turn it is not, a step out of order or a closed dossier
get 409, each with the reason). Routes hold no personal data.
"""

from collections.abc import Awaitable
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response

from contracts.api import (
    ApologyView,
    CompleteStep,
    ConfirmApology,
    DecideDossier,
    FeePaid,
    HandOverRequest,
    MarkResultReady,
    RequestFee,
    RequestSupplement,
    ReturnResult,
    RouteView,
    StepView,
    TakeStep,
    WorkItem,
)
from contracts.common import ActingRole
from contracts.envelope import DOSSIER_CODE_PATTERN
from services.routing.domain import ApologyStatus, Officer, Refusal, Route, RouteError
from services.routing.usecases import Routing
from services.runtime import auth, forms
from services.runtime.auth import responses
from services.runtime.service import Runtime

STATUS = {
    Refusal.NOT_FOUND: 404,
    Refusal.FORBIDDEN: 403,
    Refusal.CONFLICT: 409,
    Refusal.INVALID: 422,
}
ACTING_ROLES = {r.value for r in ActingRole}

Code = Annotated[str, Path(pattern=DOSSIER_CODE_PATTERN, max_length=26)]


def _raise(exc: RouteError) -> HTTPException:
    return HTTPException(
        STATUS[exc.kind],
        detail={"detail": exc.reason, "errors": [{"field": exc.field, "reason": exc.reason}]},
    )


def officer(who: auth.Staff) -> Officer:
    return Officer(
        agency_id=who.agency_id,
        role=who.role,
        person=who.person,
        department=who.department,
        name=who.name,
    )


def view(route: Route) -> RouteView:
    """The route as its parties read it."""
    return RouteView(
        code=route.code,
        procedure_code=route.procedure_code,
        procedure_version=route.procedure_version,
        procedure_name=route.procedure_name,
        receiving_agency=route.receiving_agency,
        lead_agency=route.lead_agency,
        state=route.state,
        status=route.state.portal,
        current_step=route.open_step.order if route.open_step else None,
        received_at=route.received_at,
        appointment_at=route.appointment_at,
        legal_appointment_at=route.legal_appointment_at,
        paused_since=route.paused_at,
        paused_working_seconds=route.paused_seconds,
        supplement_requests=route.supplement_requests,
        supplement_violations=route.supplement_violations,
        decision=route.decision,
        ready_at=route.ready_at,
        returned_at=route.returned_at,
        timeliness=route.timeliness,
        steps=[
            StepView(
                order=s.order,
                kind=s.kind,
                action=s.ref.action,
                agency_id=s.ref.agency_id,
                agency_name=s.ref.agency_name,
                department=s.ref.department,
                department_name=s.ref.department_name,
                role=s.ref.role.value,
                duration=s.ref.duration.describe(),
                status=s.status.value,
                started_at=s.started_at,
                deadline_at=s.deadline_at,
                holder=s.holder,
                completed_at=s.completed_at,
                timeliness=s.timeliness,
                late_working_seconds=s.late_working_seconds,
                overdue=s.overdue,
                result=s.result,
                documents=s.documents,
            )
            for s in route.steps
        ],
        handovers=route.handovers,
        apologies=[
            ApologyView(
                id=a.id,
                number=a.number,
                status=a.status.value,
                agency_id=a.agency_id,
                agency_name=a.agency_name,
                reason=a.reason,
                previous_appointment_at=a.previous_appointment_at,
                proposed_appointment_at=a.proposed_appointment_at,
                appointment_at=a.appointment_at,
                latest_issue_at=a.latest_issue_at,
                drafted_at=a.drafted_at,
                issued_at=a.issued_at,
                automatic=a.automatic,
                after_latest_moment=a.after_latest_moment,
                repeat=a.status is ApologyStatus.ISSUED and a.issue_number > 1,
                escalated_at=a.escalated_at,
                document_number=a.document_number,
                signer_name=a.signer_name,
                signer_title=a.signer_title,
            )
            for a in route.apologies
        ],
        faults=route.faults(),
        consult=[c.model_dump(mode="json") for c in route.consult],
    )


def router(rt: Runtime, routing: Routing, book: forms.FormBook) -> APIRouter:
    r = APIRouter(prefix="/v1", tags=["routing"])
    AnyStaff = Annotated[auth.Staff, Depends(rt.guards.staff())]
    Acting = Annotated[auth.Staff, Depends(rt.guards.staff(ACTING_ROLES))]
    moves = responses(401, 403, 404, 409, 422)

    async def party(code: Code, who: Acting) -> auth.Staff:
        """Staff of an agency with a part in the dossier, of a role that acts: settled
        before FastAPI reads the body, so a stranger agency gets 403 (an unknown dossier
        404), never a 422 telling what a valid move looks like. The move checks it again
        under the route's lock, with whose turn it is."""
        route = await routing.route(code)
        if route is None:
            raise _raise(
                RouteError(Refusal.NOT_FOUND, "code", f"chưa có tuyến xử lý của hồ sơ {code}")
            )
        try:
            route.require_party(officer(who))
        except RouteError as exc:
            raise _raise(exc) from None
        return who

    Party = Annotated[auth.Staff, Depends(party)]

    @r.get("/routes/{code}", response_model=RouteView, responses=responses(401, 403, 404, 422))
    async def get(code: Code, who: AnyStaff) -> RouteView:
        route = await routing.route(code)
        if route is None:
            raise HTTPException(404, detail=f"không có hồ sơ {code}")
        if not who.is_operator:
            try:
                route.require_party(officer(who))
            except RouteError as exc:
                raise _raise(exc) from None
        return view(route)

    @r.get(
        "/routes/{code}/form05",
        response_class=Response,
        responses={
            200: {
                "description": "Form 05 (Phiếu kiểm soát quá trình giải quyết hồ sơ), now",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "text/html": {"schema": {"type": "string"}},
                },
            },
            **responses(401, 403, 404, 422, non_json_route=True),
        },
    )
    async def form05(
        code: Code, who: AnyStaff, format: Literal["text", "html"] = "text"
    ) -> Response:
        """The process control slip as it stands: a line per hand-over, with how each
        giver's step ended (early, on time, late)."""
        route = await routing.route(code)
        if route is None:
            raise HTTPException(404, detail=f"không có hồ sơ {code}")
        if not who.is_operator:
            try:
                route.require_party(officer(who))
            except RouteError as exc:
                raise _raise(exc) from None
        slip = forms.ControlSlip(
            code=route.code,
            procedure_name=route.procedure_name,
            office=route.offices.get(route.receiving_agency),
            receiving_agency_name=route.receiving_agency_name,
            lead_agency_name=route.lead_agency_name,
            coordinating=route.coordinating(),
            handovers=route.handovers,
            printed_at=rt.clock.now(),
        )
        # the version in force when it is printed, as the result notice prints it
        on = rt.calendar.local(slip.printed_at).date()
        rendered = book.render("form05", on, forms.form05_context(slip))
        return forms.response(rendered, format)

    @r.get("/worklist", response_model=list[WorkItem], responses=responses(401, 403, 422))
    async def worklist(
        who: Acting,
        department: Annotated[str | None, Query(max_length=40, pattern=r"^[A-Z0-9_-]+$")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[WorkItem]:
        """The dossiers at one of the calling agency's steps, soonest deadline first."""
        out = []
        for route in await routing.worklist(who.agency_id, department, limit):
            s = route.open_step
            if s is None:
                continue
            out.append(
                WorkItem(
                    code=route.code,
                    procedure_name=route.procedure_name,
                    step=s.order,
                    action=s.ref.action,
                    kind=s.kind,
                    department=s.holder.department if s.holder else s.ref.department,
                    holder=s.holder.person if s.holder else None,
                    started_at=s.started_at,
                    deadline_at=s.deadline_at,
                    overdue=s.overdue,
                    state=route.state,
                )
            )
        return out

    async def run(move: Awaitable[Route]) -> RouteView:
        try:
            route = await move
        except RouteError as exc:
            raise _raise(exc) from None
        return view(route)

    @r.post("/routes/{code}/steps/{order}/take", response_model=RouteView, responses=moves)
    async def take(
        code: Code, order: Annotated[int, Path(ge=1, le=100)], cmd: TakeStep, who: Party
    ) -> RouteView:
        """Take the dossier in hand at its current step (Form 05: the receiver)."""
        return await run(routing.take(code, officer(who), order, cmd.note))

    @r.post("/routes/{code}/steps/{order}/complete", response_model=RouteView, responses=moves)
    async def complete(
        code: Code, order: Annotated[int, Path(ge=1, le=100)], cmd: CompleteStep, who: Party
    ) -> RouteView:
        """End an assign, appraise or work step with what it produced; on to the next."""
        return await run(routing.complete(code, officer(who), order, cmd))

    @r.post("/routes/{code}/handover", response_model=RouteView, responses=moves)
    async def hand_over(code: Code, cmd: HandOverRequest, who: Party) -> RouteView:
        """Hand the dossier to another department of the same agency within its step."""
        return await run(routing.hand_over(code, officer(who), cmd))

    @r.post("/routes/{code}/supplement-request", response_model=RouteView, responses=moves)
    async def supplement(code: Code, cmd: RequestSupplement, who: Party) -> RouteView:
        """Form 02 during processing: the clock pauses until the applicant complies. The
        law allows one; a second is recorded, flagged and counts the dossier late."""
        return await run(routing.request_supplement(code, officer(who), cmd))

    @r.post("/routes/{code}/fee-request", response_model=RouteView, responses=moves)
    async def fee_request(code: Code, cmd: RequestFee, who: Party) -> RouteView:
        """A fee or financial obligation to pay before the work goes on: the clock pauses."""
        return await run(routing.request_fee(code, officer(who), cmd))

    @r.post("/routes/{code}/fee-paid", response_model=RouteView, responses=moves)
    async def fee_paid(code: Code, cmd: FeePaid, who: Party) -> RouteView:
        """The payment arrived: the clock runs again, everything moved by the time waited."""
        return await run(routing.fee_paid(code, officer(who), cmd))

    @r.post("/routes/{code}/decision", response_model=RouteView, responses=moves)
    async def decide(code: Code, cmd: DecideDossier, who: Party) -> RouteView:
        """Approve with the result documents, or refuse with the reasons."""
        return await run(routing.decide(code, officer(who), cmd))

    @r.post("/routes/{code}/result-ready", response_model=RouteView, responses=moves)
    async def result_ready(code: Code, cmd: MarkResultReady, who: Party) -> RouteView:
        """The result is at the desk: the applicant is told; processing has ended."""
        return await run(routing.result_ready(code, officer(who), cmd.note))

    @r.post("/routes/{code}/return", response_model=RouteView, responses=moves)
    async def return_(code: Code, cmd: ReturnResult, who: Party) -> RouteView:
        """The result handed to the applicant: the dossier ends."""
        return await run(routing.return_result(code, officer(who), cmd))

    @r.post(
        "/routes/{code}/apologies/{apology_id}/confirm", response_model=RouteView, responses=moves
    )
    async def confirm(code: Code, apology_id: UUID, cmd: ConfirmApology, who: Party) -> RouteView:
        """The agency at fault confirms its drafted Form 04, which goes to the applicant."""
        return await run(routing.confirm_apology(code, officer(who), apology_id, cmd))

    return r
