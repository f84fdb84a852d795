"""Consultation's HTTP API: each agency's inbox, replies, extensions, signers, audit."""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from contracts.api import ConsultationView, ReplyRequest
from contracts.common import AgencyId, Duration
from services.consultation import domain, store
from services.consultation.inputs import (
    CursorError,
    PlainText,
    Text,
    decode_cursor,
    encode_cursor,
    problem,
    public_key_bytes,
    unstorable_fields,
)
from services.consultation.opinions import (
    NO_SUCH_REQUEST,
    OpinionError,
    Opinions,
    Principal,
    view,
)
from services.consultation.templates import Role, TemplateBook
from services.runtime import auth
from services.runtime.auth import responses
from services.runtime.service import Runtime


class ExtendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    by: Duration
    reason: Text = Field(min_length=3, max_length=2000)


class SignerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key_id: PlainText = Field(min_length=3, max_length=200)
    agency_id: AgencyId
    person: Text = Field(min_length=2, max_length=200)
    role: Role
    public_key: str = Field(
        max_length=100, description="base64 of the raw 32-byte Ed25519 public key"
    )
    active: bool = True


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agency_id: PlainText = Field(max_length=40)
    role: PlainText = Field(default="department_head", max_length=40)
    person: PlainText = Field(default="demo", max_length=200)


def _raise(exc: OpinionError) -> HTTPException:
    return HTTPException(
        exc.status,
        detail={"detail": exc.reason, "errors": [{"field": exc.field, "reason": exc.reason}]},
    )


def build_router(rt: Runtime, opinions: Opinions, book: TemplateBook) -> APIRouter:
    r = APIRouter(prefix="/v1")

    Caller = Annotated[auth.Staff, Depends(rt.guards.staff())]
    OperatorCaller = Annotated[auth.Staff, Depends(rt.guards.staff({auth.OPERATOR}))]

    def principal(c: auth.Staff) -> Principal:
        return Principal(agency_id=c.agency_id, role=c.role, person=c.person)

    # Who may answer or extend is settled before FastAPI reads the body: another agency (or
    # an operator) gets 403, an unknown request 404, never a 422 telling what a valid body
    # is. The use case checks it again under the round's lock.
    async def of_request(rid: UUID, c: Caller, column: str, reason: str) -> auth.Staff:
        row = await store.get_request(rt.pool, rid)
        try:
            Opinions.visible(row, principal(c))
        except OpinionError as exc:
            raise _raise(exc) from None
        assert row is not None
        if c.agency_id != row[column]:
            raise _raise(OpinionError(403, "agency", reason))
        return c

    async def asked(rid: UUID, c: Caller) -> auth.Staff:
        """Staff of the agency the request asks."""
        return await of_request(rid, c, "agency_id", "chỉ cơ quan được lấy ý kiến mới được trả lời")

    async def lead(rid: UUID, c: Caller) -> auth.Staff:
        """Staff of the lead agency that sent the request."""
        return await of_request(
            rid, c, "lead_agency", "chỉ cơ quan chủ trì mới được gia hạn lấy ý kiến"
        )

    Asked = Annotated[auth.Staff, Depends(asked)]
    Lead = Annotated[auth.Staff, Depends(lead)]

    @r.get(
        "/consultations",
        response_model=list[ConsultationView],
        tags=["consultation"],
        responses=responses(401, 403, 422),
    )
    async def list_(
        c: Caller,
        dossier: Annotated[str | None, Query(max_length=40, pattern=r"^[0-9A-Za-z.\-]+$")] = None,
        open_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Requests of a dossier: all for an operator; for an agency, those it was asked or sent."""
        now = rt.clock.now()
        if c.is_operator:
            rows = await store.list_requests(rt.pool, dossier=dossier, open_only=open_only)
        else:
            rows = await store.list_requests(
                rt.pool, dossier=dossier, agency=c.agency_id, open_only=open_only
            ) + await store.list_requests(
                rt.pool, dossier=dossier, lead=c.agency_id, open_only=open_only
            )
            rows = list({row["id"]: row for row in rows}.values())
        return [view(row, now) for row in rows]

    @r.get(
        "/inbox",
        response_model=list[ConsultationView],
        tags=["consultation"],
        responses={
            **responses(401, 403, 422),
            200: {
                "headers": {
                    "X-Next-Cursor": {"description": "pass as ?cursor= for the next page"},
                    "Link": {"description": 'the next page, rel="next" (RFC 8288)'},
                }
            },
        },
    )
    async def inbox(
        c: Caller,
        response: Response,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> list[dict[str, Any]]:
        """The calling agency's open requests, soonest deadline first, with time left; one
        page at a time, the next page's cursor in ``X-Next-Cursor`` and ``Link``."""
        now = rt.clock.now()
        try:
            after = decode_cursor(cursor) if cursor is not None else None
        except CursorError as exc:
            raise HTTPException(422, detail=problem("cursor", str(exc))) from None
        rows = await store.inbox_page(rt.pool, c.agency_id, after=after, limit=limit + 1)
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = encode_cursor(rows[-1]["due_at"], rows[-1]["id"])
            response.headers["X-Next-Cursor"] = nxt
            response.headers["Link"] = f'</v1/inbox?cursor={nxt}&limit={limit}>; rel="next"'
        return [view(row, now) for row in rows]

    @r.get(
        "/consultations/{rid}",
        response_model=ConsultationView,
        tags=["consultation"],
        responses=responses(401, 403, 404, 422),
    )
    async def read(rid: UUID, c: Caller) -> dict[str, Any]:
        try:
            row = (
                await opinions.read(rid, principal(c))
                if not c.is_operator
                else (await store.get_request(rt.pool, rid))
            )
        except OpinionError as exc:
            raise _raise(exc) from None
        if row is None:
            raise _raise(OpinionError(404, "request_id", NO_SUCH_REQUEST))
        return view(row, rt.clock.now(), with_body=True)

    @r.post(
        "/consultations/{rid}/reply",
        response_model=ConsultationView,
        tags=["consultation"],
        responses=responses(401, 403, 404, 409, 422),
    )
    async def reply(rid: UUID, body: ReplyRequest, c: Asked) -> dict[str, Any]:
        if bad := unstorable_fields(body):
            raise HTTPException(422, detail=problem(*bad[0]))
        try:
            row = await opinions.reply(rid, body, principal(c))
        except OpinionError as exc:
            raise _raise(exc) from None
        return view(row, rt.clock.now())

    @r.post(
        "/consultations/{rid}/extension",
        response_model=ConsultationView,
        tags=["consultation"],
        responses=responses(401, 403, 404, 409, 422),
    )
    async def extend(rid: UUID, body: ExtendRequest, c: Lead) -> dict[str, Any]:
        try:
            row = await opinions.extend(rid, body.by, body.reason, principal(c))
        except OpinionError as exc:
            raise _raise(exc) from None
        return view(row, rt.clock.now())

    @r.get("/consultations/{rid}/audit", tags=["audit"], responses=responses(401, 403, 404, 422))
    async def audit_trail(rid: UUID, c: Caller) -> list[dict[str, Any]]:
        row = await store.get_request(rt.pool, rid)
        if not c.is_operator:
            try:
                Opinions.visible(row, principal(c))
            except OpinionError as exc:
                raise _raise(exc) from None
        return [dict(a) for a in await store.audit_rows(rt.pool, rid)]

    @r.get("/audit/verify", tags=["audit"], responses=responses(401, 403))
    async def verify(c: OperatorCaller) -> dict[str, Any]:
        broken = await store.verify_audit(rt.pool)
        if broken is None:
            return {"ok": True}
        return {"ok": False, "first_broken": broken.__dict__}

    @r.post("/signers", status_code=201, tags=["signers"], responses=responses(401, 403, 422))
    async def register_signer(body: SignerIn, c: OperatorCaller) -> dict[str, str]:
        raw = public_key_bytes(body.public_key)
        if raw is None:
            raise HTTPException(
                422,
                detail=problem(
                    "public_key", "khóa công khai phải là 32 byte Ed25519 mã hóa base64 (ASCII)"
                ),
            )
        await store.save_signer(
            rt.pool,
            domain.Signer(body.key_id, body.agency_id, body.person, body.role, raw, body.active),
        )
        return {"key_id": body.key_id}

    @r.get("/templates", tags=["templates"], responses=responses(401, 403))
    async def templates(c: Caller) -> list[dict[str, Any]]:
        return [t.model_dump(mode="json") for t in book.all()]

    if rt.settings.dev_mode:  # the route does not exist outside development mode

        @r.post("/dev/tokens", tags=["dev"], responses=responses(422))
        async def dev_token(body: TokenIn) -> dict[str, str]:
            """Development mode only: mint a token for any agency and role."""
            return {
                "token": rt.auth.mint_dev(
                    agency_id=body.agency_id, role=body.role, person=body.person
                )
            }

    return r
