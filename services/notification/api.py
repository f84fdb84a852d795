"""Notification's HTTP API: what was sent about a dossier, and each notice as a page.

Notices carry personal data and the applicant's lookup code: the applicant (with that
code) and the dossier's receiving and lead agencies read them whole, every officer's read
audited; operators see them with personal data and the body masked.
"""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from contracts.api import NotificationView
from services.notification import store
from services.runtime import auth, forms
from services.runtime.auth import BearerCred, LookupCred, responses
from services.runtime.service import Runtime

REDACTED = "[ẩn: dữ liệu cá nhân]"


def _view(r: Any) -> dict[str, Any]:
    return {k: r[k] for k in NotificationView.model_fields}


def _redacted(v: dict[str, Any]) -> dict[str, Any]:
    return {**v, "recipient": auth.mask(v["recipient"]), "body_text": REDACTED}


def build_router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1")
    g = rt.guards

    async def lookup_ok(code: str, secret: str) -> bool:
        row = await rt.pool.fetchrow(
            "SELECT lookup_hash FROM dossier_access WHERE dossier_code = $1", code
        )
        if row is None:  # the receipt event has not reached us yet: nothing to show
            raise HTTPException(404, detail=f"no notifications for {code} yet")
        return auth.lookup_matches(row["lookup_hash"], code, secret)

    async def allowed(code: str, cred: BearerCred, lookup: LookupCred, request: Request) -> bool:
        """Who may read ``code``'s notices; True when they must be masked (operators)."""
        who = await g.resolve(code, cred, lookup, lookup_ok)
        if isinstance(who, auth.Applicant):
            return False
        assert isinstance(who, auth.Staff)
        row = await rt.pool.fetchrow(
            "SELECT receiving_agency, lead_agency FROM dossier_access WHERE dossier_code = $1",
            code,
        )
        if who.is_operator:
            return True
        if row is None:
            raise HTTPException(404, detail=f"no notifications for {code}")
        auth.require_agency(who, (row["receiving_agency"], row["lead_agency"]), operators=True)
        await auth.audit_read(rt.pool, who, code, f"GET {request.url.path}", rt.clock.now())
        return False

    @r.get(
        "/notifications",
        response_model=list[NotificationView],
        tags=["notification"],
        responses=responses(401, 403, 404, 422),
    )
    async def list_(
        dossier: Annotated[str, Query(min_length=1, max_length=40)],
        cred: BearerCred,
        lookup: LookupCred,
        request: Request,
    ) -> list[Any]:
        masked = await allowed(dossier, cred, lookup, request)
        rows = await store.of_dossier(rt.pool, dossier)
        views = [{**_view(x), "dossier_code": x["dossier_code"]} for x in rows]
        return [_redacted(v) for v in views] if masked else views

    async def one(nid: UUID, cred: BearerCred, lookup: LookupCred, request: Request) -> Any:
        row = await store.get(rt.pool, nid)
        if row is None:  # authenticate first: a stranger learns nothing from a 404
            if cred is None:
                raise auth.unauthorized("missing bearer token or lookup code")
            await rt.auth.tokens.verify(cred.credentials, rt.clock.now())
            raise HTTPException(404, detail=f"no notification {nid}")
        return row, await allowed(row["dossier_code"], cred, lookup, request)

    @r.get(
        "/notifications/{nid}",
        response_model=NotificationView,
        tags=["notification"],
        responses=responses(401, 403, 404, 422),
    )
    async def get(nid: UUID, cred: BearerCred, lookup: LookupCred, request: Request) -> Any:
        row, masked = await one(nid, cred, lookup, request)
        return _redacted(_view(row)) if masked else _view(row)

    @r.get(
        "/notifications/{nid}/html",
        response_class=HTMLResponse,
        tags=["notification"],
        responses=responses(401, 403, 404, 422, non_json_route=True),
    )
    async def html(nid: UUID, cred: BearerCred, lookup: LookupCred, request: Request) -> str:
        row, masked = await one(nid, cred, lookup, request)
        body = f"<p>{REDACTED}</p>" if masked else row["body_html"]
        return forms.html_page(row["subject"], body)

    return r
