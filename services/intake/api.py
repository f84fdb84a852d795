"""Intake's HTTP API: procedures, the desk, and the portal's inbound door."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException, Response
from fastapi.responses import JSONResponse

from contracts.api import (
    IDEMPOTENCY_KEY_MAX,
    IDEMPOTENCY_KEY_PATTERN,
    DossierAccepted,
    DossierView,
    EndDossier,
    ProcedureList,
    RequestSupplement,
    SubmitDossier,
    SupplementDossier,
    TimelineEntry,
)
from contracts.common import Procedure
from services.intake import portal, store
from services.intake.desk import Desk, DeskError
from services.intake.domain import Catalogue
from services.runtime.service import Runtime

# The payloads live in contracts; the old names keep the endpoints below unchanged.
SupplementRequest = RequestSupplement
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


def _error(exc: DeskError) -> HTTPException:
    return HTTPException(
        exc.status,
        detail={"detail": exc.reason, "errors": [{"field": exc.field, "reason": exc.reason}]},
        headers=None if exc.retry_after is None else {"Retry-After": str(exc.retry_after)},
    )


def build_router(rt: Runtime, catalogue: Catalogue, desk: Desk) -> APIRouter:
    r = APIRouter(prefix="/v1")

    @r.get("/procedures", response_model=ProcedureList, tags=["catalogue"])
    async def procedures(all_versions: bool = False) -> ProcedureList:
        items = catalogue.all() if all_versions else catalogue.current()
        return ProcedureList(items=items)

    @r.get("/procedures/{code}", response_model=list[Procedure], tags=["catalogue"])
    async def procedure(code: str) -> list[Procedure]:
        versions = catalogue.versions.get(code)
        if not versions:
            raise HTTPException(404, detail=f"no procedure {code}")
        return list(versions)

    @r.post("/dossiers", status_code=201, response_model=DossierAccepted, tags=["desk"])
    async def submit(
        cmd: SubmitDossier,
        response: Response,
        idempotency_key: IdempotencyKey = None,
    ) -> DossierAccepted:
        try:
            result = await desk.submit(cmd, idempotency_key)
        except DeskError as exc:
            raise _error(exc) from None
        response.headers["Location"] = f"/v1/dossiers/{result.accepted.code}"
        if result.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return result.accepted

    @r.get("/dossiers/{code}", response_model=DossierView, tags=["desk"])
    async def get(code: str) -> DossierView:
        row = await store.get_dossier(rt.pool, code)
        if row is None:
            raise HTTPException(404, detail=f"no dossier {code}")
        events = await store.timeline(rt.pool, code)
        return DossierView(
            code=row["code"],
            procedure_code=row["procedure_code"],
            procedure_version=row["procedure_version"],
            procedure_name=row["procedure_name"],
            channel=row["channel"],
            applicant=row["applicant"],
            status=row["status"],
            outcome=row["outcome"],
            received_at=row["received_at"],
            appointment_at=row["appointment_at"],
            documents=row["documents"],
            supplement_requests=row["supplement_requests"],
            paused_since=row["paused_at"],
            timeline=[TimelineEntry(**dict(e)) for e in events],
        )

    @r.post("/dossiers/{code}/supplements", tags=["desk"])
    async def supplement(code: str, cmd: SupplementDossier) -> dict[str, Any]:
        try:
            return await desk.supplement(code, cmd)
        except DeskError as exc:
            raise _error(exc) from None

    @r.post("/dossiers/{code}/supplement-requests", status_code=201, tags=["desk"])
    async def request_supplement(code: str, cmd: SupplementRequest) -> dict[str, Any]:
        try:
            return await desk.request_supplement(code, cmd.missing, cmd.note)
        except DeskError as exc:
            raise _error(exc) from None

    @r.post("/dossiers/{code}/withdrawal", tags=["desk"])
    async def withdraw(code: str, cmd: EndRequest) -> dict[str, Any]:
        try:
            return await desk.end(code, withdrawn=True, reason=cmd.reason)
        except DeskError as exc:
            raise _error(exc) from None

    @r.post("/dossiers/{code}/stop", tags=["desk"])
    async def stop(code: str, cmd: EndRequest) -> dict[str, Any]:
        try:
            return await desk.end(code, withdrawn=False, reason=cmd.reason)
        except DeskError as exc:
            raise _error(exc) from None

    @r.post("/portal/dossiers", tags=["portal"])
    async def portal_inbound(body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
        try:
            payload, cmd = portal.parse(body)
        except portal.PortalInvalid as exc:
            return JSONResponse(status_code=422, content=portal.failure(-1, exc.field, exc.reason))
        except ValueError as exc:
            return JSONResponse(status_code=422, content=portal.failure(-1, "body", str(exc)))
        try:
            result = await desk.submit(cmd, portal.idempotency_key(payload), portal=True)
        except DeskError as exc:
            return JSONResponse(
                status_code=exc.status, content=portal.failure(-exc.status, exc.field, exc.reason)
            )
        return JSONResponse(
            status_code=200, content=portal.success(result.accepted, payload.MaHoSo)
        )

    @r.get("/stats", tags=["ops"])
    async def stats() -> dict[str, Any]:
        return {"by_status": await store.count_by_status(rt.pool)}

    return r
