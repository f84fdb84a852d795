"""Intake's HTTP API: procedures, the desk, and the portal's inbound door."""

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    Body,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
)
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from contracts.api import (
    IDEMPOTENCY_KEY_MAX,
    IDEMPOTENCY_KEY_PATTERN,
    DossierAccepted,
    DossierView,
    EndDossier,
    PortalSyncView,
    ProcedureList,
    StatusChange,
    SubmitDossier,
    SupplementDossier,
    TimelineEntry,
)
from contracts.common import AGENCY_ID_PATTERN, Procedure, Timeliness
from services.intake import portal, store
from services.intake.desk import Actor, Desk, DeskError
from services.intake.domain import Catalogue
from services.intake.portal_sync import PortalSync
from services.runtime import auth, forms
from services.runtime.auth import responses
from services.runtime.portal_client import PortalUnavailable
from services.runtime.service import Runtime

# The payloads live in contracts; the old names keep the endpoints below unchanged.
EndRequest = EndDossier
IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=IDEMPOTENCY_KEY_MAX,
        pattern=f"^{IDEMPOTENCY_KEY_PATTERN}$",
        description="1 to 200 printable ASCII characters; a retry with the same key and body"
        " answers the first result",
    ),
]


class PortalToken(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int


class StepResult(BaseModel):
    """What a desk action changed: the dossier's code and national-portal status."""

    model_config = ConfigDict(extra="allow")
    code: str
    status: int


def _error(exc: DeskError) -> HTTPException:
    return HTTPException(
        exc.status,
        detail={"detail": exc.reason, "errors": [{"field": exc.field, "reason": exc.reason}]},
        headers=None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)},
    )


def register_row(row: Any, masked: bool) -> forms.RegisterRow:
    """A dossier as a line of Form 06; personal data masked for operators."""
    a = row["applicant"]
    contact = ", ".join(x for x in (a.get("address"), a.get("phone")) if x) or None
    return forms.RegisterRow(
        code=row["code"],
        procedure_name=row["procedure_name"],
        register_number=row["register_number"],
        sets=row["sets"],
        applicant_name=auth.mask(a["name"]) if masked else a["name"],
        applicant_contact=(auth.mask(contact) if masked and contact else contact),
        lead_agency_name=row["lead_agency_name"],
        received_at=row["received_at"],
        appointment_at=row["appointment_at"],
        transferred_at=row["routed_at"],
        result_received_at=row["ready_at"],
        returned_at=row["returned_at"],
        note=None if row["state"] in (None, "returned") else row["state"],
    )


def build_router(rt: Runtime, catalogue: Catalogue, desk: Desk, sync: PortalSync) -> APIRouter:
    """Every route names the principals it accepts; see README "Who may do what"."""
    r = APIRouter(prefix="/v1")
    g = rt.guards
    forms_book = forms.FormBook.load()

    async def stored_hash(code: str) -> str | None:
        return await rt.pool.fetchval(  # type: ignore[no-any-return]
            "SELECT lookup_hash FROM dossiers WHERE code = $1", code
        )

    door = auth.LookupDoor(
        lambda: rt.pool, stored_hash, auth.GuessLimits.of(rt.settings), rt.clock.now
    )
    Anyone = Annotated[auth.Staff | auth.PortalClient, Depends(g.staff_or_portal())]
    AnyStaff = Annotated[auth.Staff, Depends(g.staff())]
    Operator = Annotated[auth.Staff, Depends(g.staff({auth.OPERATOR}))]
    Head = Annotated[auth.Staff, Depends(g.staff(auth.HEADS))]
    StaffOrApplicant = Annotated[auth.Staff | auth.Applicant, Depends(g.staff_or_applicant(door))]
    Portal = Annotated[auth.PortalClient, Depends(g.portal())]

    async def agencies(code: str) -> tuple[str, str]:
        row = await rt.pool.fetchrow(
            "SELECT receiving_agency, lead_agency FROM dossiers WHERE code = $1", code
        )
        if row is None:
            raise HTTPException(404, detail=f"no dossier {code}")
        return row["receiving_agency"], row["lead_agency"]

    # Who may act is settled by dependencies, before FastAPI reads the body: an outsider
    # gets 403 (or 401, 404), never a 422 that would tell what a valid body looks like.
    async def receiver(who: AnyStaff) -> auth.Staff:
        """Staff of an agency that may receive dossiers (the body names which; the desk
        checks it is the caller's own): not operators, not an agency that receives none."""
        if who.is_operator:
            raise auth.forbidden("operators may not do this", "role")
        if not desk.receives(who.agency_id):
            raise auth.forbidden(
                f"{who.agency_id} receives no dossiers: neither an agency of the catalogue"
                " nor a one-stop desk",
                "agency",
            )
        return who

    async def desk_or_applicant(code: str, who: StaffOrApplicant) -> auth.Staff | auth.Applicant:
        """The applicant (lookup code), or staff of the dossier's receiving agency."""
        if isinstance(who, auth.Staff):
            receiving, _ = await agencies(code)
            auth.require_agency(who, (receiving,), operators=False)
        return who

    async def deciding_head(code: str, who: Head) -> auth.Staff:
        """A head of the dossier's lead or receiving agency."""
        receiving, lead = await agencies(code)
        auth.require_agency(who, (receiving, lead), operators=False)
        return who

    Receiver = Annotated[auth.Staff, Depends(receiver)]
    DeskOrApplicant = Annotated[auth.Staff | auth.Applicant, Depends(desk_or_applicant)]
    DecidingHead = Annotated[auth.Staff, Depends(deciding_head)]

    async def limited(who: Actor) -> int | None:
        return await auth.rate_limit(
            rt.pool, who.key, rt.settings.submit_rate_per_minute, rt.clock.now()
        )

    def too_many(retry_after: int) -> HTTPException:
        return HTTPException(
            429,
            detail={
                "detail": "too many submissions from this caller",
                "errors": [{"field": "authorization", "reason": f"retry after {retry_after}s"}],
            },
            headers={"Retry-After": str(retry_after)},
        )

    @r.get(
        "/procedures",
        response_model=ProcedureList,
        tags=["catalogue"],
        responses=responses(401, 403, 422),
    )
    async def procedures(who: Anyone, all_versions: bool = False) -> ProcedureList:
        items = catalogue.all() if all_versions else catalogue.current()
        return ProcedureList(items=items)

    @r.get(
        "/procedures/{code}",
        response_model=list[Procedure],
        tags=["catalogue"],
        responses=responses(401, 403, 404, 422),
    )
    async def procedure(code: str, who: Anyone) -> list[Procedure]:
        versions = catalogue.versions.get(code)
        if not versions:
            raise HTTPException(404, detail=f"no procedure {code}")
        return list(versions)

    @r.post(
        "/dossiers",
        status_code=201,
        response_model=DossierAccepted,
        tags=["desk"],
        responses=responses(401, 403, 409, 422, 429, 503),
    )
    async def submit(
        cmd: SubmitDossier,
        response: Response,
        who: Receiver,
        idempotency_key: IdempotencyKey = None,
    ) -> DossierAccepted:
        """A desk officer records a dossier for their own agency (rate-limited per caller);
        only a head may back-date ``received_at``, with a reason, within a bound."""
        retry = await limited(who)
        if retry is not None:
            raise too_many(retry)
        try:
            result = await desk.submit(cmd, idempotency_key, who)
        except DeskError as exc:
            raise _error(exc) from None
        response.headers["Location"] = f"/v1/dossiers/{result.accepted.code}"
        if result.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return result.accepted

    @r.get(
        "/dossiers/{code}",
        response_model=DossierView,
        tags=["desk"],
        responses=responses(401, 403, 404, 422, lookup=True),
    )
    async def get(code: str, who: StaffOrApplicant, request: Request) -> DossierView:
        """The applicant (lookup code) and the agencies with a part in the dossier (the
        receiving and lead agencies, and those its route passes through) see everything;
        operators see personal data masked; every officer's read is audited."""
        row = await store.get_dossier(rt.pool, code)
        if row is None:
            raise HTTPException(404, detail=f"no dossier {code}")
        redacted = False
        if isinstance(who, auth.Staff):
            parties = (row["receiving_agency"], row["lead_agency"], *row["parties"])
            auth.require_agency(who, parties, operators=True)
            redacted = who.is_operator
        events = await store.timeline(rt.pool, code)
        history = await store.status_history(rt.pool, code)
        if isinstance(who, auth.Staff) and not redacted:
            await auth.audit_read(rt.pool, who, code, f"GET {request.url.path}", rt.clock.now())
        hide = auth.redact if redacted else (lambda x: x)
        # routing's verdict (routing.result_ready), once the result is ready
        timeliness = Timeliness(row["timeliness"]) if row["timeliness"] else None
        return DossierView(
            code=row["code"],
            procedure_code=row["procedure_code"],
            procedure_version=row["procedure_version"],
            procedure_name=row["procedure_name"],
            channel=row["channel"],
            applicant=hide({"applicant": row["applicant"]})["applicant"],
            redacted=redacted,
            status=row["status"],
            outcome=row["outcome"],
            received_at=row["received_at"],
            appointment_at=row["appointment_at"],
            documents=row["documents"],
            supplement_requests=row["supplement_requests"],
            supplement_violations=row["supplement_violations"],
            submitted_at=row["submitted_at"],
            return_method=row["return_method"],
            paused_since=row["paused_at"],
            state=row["state"],
            apologies=row["apologies"],
            legal_appointment_at=row["legal_appointment_at"],
            timeliness=timeliness,
            timeliness_label=timeliness.label if timeliness else None,
            status_history=[StatusChange(**dict(h)) for h in history],
            timeline=[TimelineEntry(**{**dict(e), "data": hide(e["data"])}) for e in events],
        )

    @r.post(
        "/dossiers/{code}/supplements",
        response_model=StepResult,
        tags=["desk"],
        responses=responses(401, 403, 404, 409, 422, lookup=True),
    )
    async def supplement(code: str, cmd: SupplementDossier, who: DeskOrApplicant) -> Any:
        """The applicant hands in what was missing: online with the lookup code, or at the
        receiving agency's desk."""
        try:
            return await desk.supplement(code, cmd, who)
        except DeskError as exc:
            raise _error(exc) from None

    @r.post(
        "/dossiers/{code}/withdrawal",
        response_model=StepResult,
        tags=["desk"],
        responses=responses(401, 403, 404, 409, 422, lookup=True),
    )
    async def withdraw(code: str, cmd: EndRequest, who: DeskOrApplicant) -> Any:
        """The applicant withdraws: with the lookup code, or in writing at the receiving desk."""
        try:
            return await desk.end(code, withdrawn=True, reason=cmd.reason)
        except DeskError as exc:
            raise _error(exc) from None

    @r.post(
        "/dossiers/{code}/stop",
        response_model=StepResult,
        tags=["desk"],
        responses=responses(401, 403, 404, 409, 422),
    )
    async def stop(code: str, cmd: EndRequest, who: DecidingHead) -> Any:
        """A stop is a decision: a head of the lead or receiving agency, with a reason."""
        try:
            return await desk.end(code, withdrawn=False, reason=cmd.reason)
        except DeskError as exc:
            raise _error(exc) from None

    @r.post(
        "/portal/token",
        response_model=PortalToken,
        tags=["portal"],
        responses=responses(401, 403),
    )
    async def portal_token(who: Portal) -> PortalToken:
        """Client credentials (HTTP Basic) for a short-lived portal token."""
        return PortalToken(
            access_token=rt.auth.portal.mint(who, rt.clock.now()),
            expires_in=int(rt.auth.portal.ttl.total_seconds()),
        )

    @r.post(
        "/portal/dossiers",
        response_model=portal.PortalAnswer,
        tags=["portal"],
        responses={
            **responses(401, 403),
            **{
                c: {"model": portal.PortalAnswer, "description": d}
                for c, d in (
                    (409, "Conflicts with an earlier submission"),
                    (422, "Invalid payload: error_code -1 and the field"),
                    (429, "Too many submissions from this client"),
                    (503, "Daily serial numbers exhausted"),
                )
            },
        },
    )
    async def portal_inbound(body: Annotated[Any, Body()], who: Portal) -> JSONResponse:
        """The portal's DongBoHoSoMC-shaped payload; every error in the portal's shape."""
        if not isinstance(body, dict):
            return JSONResponse(
                status_code=422, content=portal.failure(-1, "body", "must be a JSON object")
            )
        retry = await limited(who)
        if retry is not None:
            return JSONResponse(
                status_code=429,
                content=portal.failure(-429, "client", f"too many requests; retry in {retry}s"),
                headers={"Retry-After": str(retry)},
            )
        try:
            payload, cmd = portal.parse(body)
        except portal.PortalInvalid as exc:
            return JSONResponse(status_code=422, content=portal.failure(-1, exc.field, exc.reason))
        except ValueError as exc:
            return JSONResponse(status_code=422, content=portal.failure(-1, "body", str(exc)))
        try:
            result = await desk.submit(cmd, portal.idempotency_key(payload), who)
        except DeskError as exc:
            return JSONResponse(
                status_code=exc.status, content=portal.failure(-exc.status, exc.field, exc.reason)
            )
        return JSONResponse(
            status_code=200, content=portal.success(result.accepted, payload.MaHoSo)
        )

    @r.get(
        "/registers/{agency_id}/{day}",
        response_class=Response,
        tags=["desk"],
        responses={
            200: {
                "description": "Form 06 (Sổ theo dõi hồ sơ) of the agency's desk for the day",
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "text/html": {"schema": {"type": "string"}},
                },
            },
            **responses(401, 403, 422, non_json_route=True),
        },
    )
    async def register(
        agency_id: Annotated[str, Path(pattern=AGENCY_ID_PATTERN, max_length=13)],
        day: date,
        who: AnyStaff,
        request: Request,
        format: Literal["text", "html"] = "text",
    ) -> Response:
        """The register of dossiers a receiving agency's desk took in on a day (local
        date), with their transfer, result and return: its own staff see it whole (the read
        is audited), operators with names and contacts masked."""
        auth.require_agency(who, (agency_id,), operators=True)
        if not 2000 <= day.year <= 2100:
            raise HTTPException(
                422,
                detail={
                    "detail": "no register for that year",
                    "errors": [{"field": "day", "reason": "a day of the years 2000 to 2100"}],
                },
            )
        start = datetime.combine(day, time(0), rt.calendar.tz)
        rows = await store.register(rt.pool, agency_id, start, start + timedelta(days=1))
        masked = who.is_operator
        if not masked:
            await auth.audit_read(
                rt.pool,
                who,
                f"register {agency_id} {day}",
                f"GET {request.url.path}",
                rt.clock.now(),
            )
        lines = [register_row(row, masked) for row in rows]
        known = agency_id in desk.agencies.ids()
        office = desk.agencies.office(agency_id) if known else None
        name = office.name if office else agency_id
        # a day before the first version of the form is printed in that first version
        first = min(v.effective_from for v in forms_book.forms["form06"].versions)
        context = forms.form06_context(office, name, day, lines)
        rendered = forms_book.render("form06", max(day, first), context)
        return forms.response(rendered, format)

    @r.get(
        "/dossiers/{code}/portal-sync",
        response_model=PortalSyncView,
        tags=["portal"],
        responses=responses(401, 403, 404, 422),
    )
    async def portal_sync(code: str, who: AnyStaff) -> PortalSyncView:
        """Whether the national portal holds the dossier as we do: synced, pending, or
        failing with the portal's reason. The record as we would send it now (personal
        data) only to the dossier's own agencies, not to operators."""
        row = await store.get_dossier(rt.pool, code)
        if row is None:
            raise HTTPException(404, detail=f"no dossier {code}")
        parties = (row["receiving_agency"], row["lead_agency"], *row["parties"])
        auth.require_agency(who, parties, operators=True)
        state = await store.sync_state(rt.pool, code)
        known = state["portal"] or {}
        if not sync.enabled and not (state["pending"] or state["failed"] or state["sent"]):
            status = "off"
        elif state["failed"] or (state["pending"] and state["last_error"]):
            status = "failing"
        elif state["pending"]:
            status = "pending"
        elif known.get("known"):
            status = "synced"
        else:
            status = "not_synced"
        return PortalSyncView(
            code=code,
            status=status,
            pending=state["pending"],
            failed=state["failed"],
            sent=state["sent"],
            attempts=state["attempts"],
            last_error=state["last_error"],
            portal_known=bool(known.get("known")),
            portal_status=known.get("last_status"),
            synced_at=known.get("synced_at"),
            checked_at=known.get("checked_at"),
            record=None if who.is_operator else sync.record_of(row),
        )

    @r.get("/ops/portal-sync/failed", tags=["ops"], responses=responses(401, 403, 422))
    async def portal_failed(
        who: Operator, limit: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> list[dict[str, Any]]:
        """Updates the portal refused, with its answer (no personal data: the payload is
        not shown); retry one after fixing what it refused."""
        return [dict(r) for r in await store.failed_sync(rt.pool, limit)]

    @r.post(
        "/ops/portal-sync/{sync_id}/retry", tags=["ops"], responses=responses(401, 403, 404, 422)
    )
    async def portal_retry(sync_id: int, who: Operator) -> dict[str, Any]:
        if not await store.retry_failed_sync(rt.pool, sync_id, rt.clock.now()):
            raise HTTPException(404, detail=f"no refused update {sync_id}")
        return {"id": sync_id, "status": "pending"}

    @r.post(
        "/ops/portal-sync/reconcile", tags=["ops"], responses=responses(401, 403, 409, 422, 503)
    )
    async def portal_reconcile(
        who: Operator, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> dict[str, int]:
        """Compare what the portal holds of up to ``limit`` dossiers with ours now, and
        queue again what differs."""
        if not sync.enabled:
            # this deployment has no portal: nothing to compare, and no retry will help
            raise HTTPException(
                409, detail="no portal is configured (INTAKE_PORTAL_URL is not set)"
            )
        try:
            return await sync.reconcile(limit)
        except PortalUnavailable as exc:
            raise HTTPException(
                503, detail=f"the portal cannot be reached: {exc}", headers={"Retry-After": "60"}
            ) from None

    @r.get("/stats", tags=["ops"], responses=responses(401, 403))
    async def stats(who: Operator) -> dict[str, Any]:
        return {"by_status": await store.count_by_status(rt.pool)}

    return r
