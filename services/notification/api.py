"""Notification's HTTP API: what was sent about a dossier, and each notice as a page;
operators' resends and what came from outside and was refused; the SMS gateway's
delivery receipts.

Notices carry personal data and the applicant's lookup code: the applicant (with that
code) and the dossier's receiving and lead agencies read them whole, every officer's read
audited; operators see them with personal data and the body masked. The receipts' webhook
has no token (the gateway has none): the body's signature is its only credential.
"""

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import ValidationError

from contracts.api import (
    InboundRejectView,
    NotificationView,
    ResendNotification,
    SmsReceipt,
    SmsReceiptAccepted,
)
from services.notification import domain, store
from services.runtime import auth, forms
from services.runtime.auth import BearerCred, LookupCred, Staff, responses
from services.runtime.logging import get_logger
from services.runtime.ops import loads, problem
from services.runtime.service import Runtime

REDACTED = "[ẩn: dữ liệu cá nhân]"
STATUS_SHOWN = {"pending": "queued"}
"""The database keeps the value it had before the API said ``queued``."""
UNSIGNED_KEPT = 8 * 1024
"""Of a receipt without a valid signature (anyone can post one) only the first bytes are
kept, with the size and SHA-256 of the whole: the table cannot be filled by strangers."""

log = get_logger(__name__)


def _view(r: Any) -> dict[str, Any]:
    v = {k: r[k] for k in NotificationView.model_fields}
    v["status"] = STATUS_SHOWN.get(v["status"], v["status"])
    return v


def _reject_view(r: Any) -> dict[str, Any]:
    return {
        **{k: r[k] for k in InboundRejectView.model_fields if k != "body"},
        "headers": {k: domain.masked_text(str(v).encode()) for k, v in r["headers"].items()},
        "body": domain.masked_text(bytes(r["body"])),
    }


_signature = APIKeyHeader(
    name="X-Signature",
    auto_error=False,
    scheme_name="smsGatewaySignature",
    description="The SMS gateway: hex HMAC-SHA256 of the exact body bytes, keyed with the"
    " webhook secret (NOTIFICATION_SMS_WEBHOOK_SECRET). No token.",
)
SignatureCred = Annotated[str | None, Depends(_signature)]


def _phone(value: str) -> str:
    return "0" + value[3:] if value.startswith("+84") else value


def _redacted(v: dict[str, Any]) -> dict[str, Any]:
    return {**v, "recipient": auth.mask(v["recipient"]), "body_text": REDACTED}


STATUS_LABEL = {
    "pending": "đang chờ gửi",
    "sending": "đang được gửi",
    "sent": "đã gửi",
    "delivered": "đã đến người nhận",
    "failed": "gửi không thành công",
}
"""A notification's status as a refusal a person reads names it."""


def _refused(status: int, field: str, reason: str) -> HTTPException:
    """A refusal a person reads (the applicant, an officer, an operator): in Vietnamese,
    naming the field and the reason, in the error shape every service answers with."""
    return HTTPException(
        status, detail={"detail": reason, "errors": [{"field": field, "reason": reason}]}
    )


def build_router(rt: Runtime) -> APIRouter:
    r = APIRouter(prefix="/v1")
    g = rt.guards

    async def stored_hash(code: str) -> str | None:
        # None too when the receipt event has not reached us yet: the same 401 as a wrong
        # code, so nobody learns here which dossiers exist
        return await rt.pool.fetchval(  # type: ignore[no-any-return]
            "SELECT lookup_hash FROM dossier_access WHERE dossier_code = $1", code
        )

    door = auth.LookupDoor(
        lambda: rt.pool, stored_hash, auth.GuessLimits.of(rt.settings), rt.clock.now
    )

    async def allowed(
        code: str, cred: BearerCred, lookup: LookupCred, request: Request
    ) -> tuple[bool, bool]:
        """Who may read ``code``'s notices: (masked, applicant). Masked for operators; the
        applicant (with the lookup code) reads only the notices addressed to them, never the
        agencies' own (``domain.addressed_to_applicant``)."""
        who = await g.resolve(code, cred, lookup, door, auth.client_address(request))
        if isinstance(who, auth.Applicant):
            return False, True
        assert isinstance(who, auth.Staff)
        row = await rt.pool.fetchrow(
            "SELECT receiving_agency, lead_agency FROM dossier_access WHERE dossier_code = $1",
            code,
        )
        if who.is_operator:
            return True, False
        if row is None:
            raise _refused(404, "dossier", f"Không có thông báo nào của hồ sơ {code}")
        auth.require_agency(who, (row["receiving_agency"], row["lead_agency"]), operators=True)
        await auth.audit_read(rt.pool, who, code, f"GET {request.url.path}", rt.clock.now())
        return False, False

    @r.get(
        "/notifications",
        response_model=list[NotificationView],
        tags=["notification"],
        responses=responses(401, 403, 404, 422, lookup=True),
    )
    async def list_(
        dossier: Annotated[str, Query(min_length=1, max_length=40)],
        cred: BearerCred,
        lookup: LookupCred,
        request: Request,
    ) -> list[Any]:
        masked, applicant = await allowed(dossier, cred, lookup, request)
        rows = await store.of_dossier(rt.pool, dossier)
        if applicant:
            rows = [x for x in rows if domain.addressed_to_applicant(x["channel"])]
        views = [{**_view(x), "dossier_code": x["dossier_code"]} for x in rows]
        return [_redacted(v) for v in views] if masked else views

    async def one(nid: UUID, cred: BearerCred, lookup: LookupCred, request: Request) -> Any:
        row = await store.get(rt.pool, nid)
        if row is None:  # authenticate first: a stranger learns nothing from a 404
            if cred is None and lookup:  # as a wrong code for a dossier that does not exist
                await g.resolve(str(nid), None, lookup, door, auth.client_address(request))
            if cred is None:
                raise auth.unauthorized(
                    "Thiếu mã xác thực (Bearer) hoặc mã tra cứu hồ sơ (X-Lookup-Code)"
                )
            await rt.auth.tokens.verify(cred.credentials, rt.clock.now())
            raise _refused(404, "nid", f"Không có thông báo {nid}")
        masked, applicant = await allowed(row["dossier_code"], cred, lookup, request)
        if applicant and not domain.addressed_to_applicant(row["channel"]):
            # an agency's notice: to the applicant, as if it did not exist
            raise _refused(404, "nid", f"Không có thông báo {nid}")
        return row, masked

    @r.get(
        "/notifications/{nid}",
        response_model=NotificationView,
        tags=["notification"],
        responses=responses(401, 403, 404, 422, lookup=True),
    )
    async def get(nid: UUID, cred: BearerCred, lookup: LookupCred, request: Request) -> Any:
        row, masked = await one(nid, cred, lookup, request)
        return _redacted(_view(row)) if masked else _view(row)

    @r.get(
        "/notifications/{nid}/html",
        response_class=HTMLResponse,
        tags=["notification"],
        responses=responses(401, 403, 404, 422, non_json_route=True, lookup=True),
    )
    async def html(nid: UUID, cred: BearerCred, lookup: LookupCred, request: Request) -> str:
        row, masked = await one(nid, cred, lookup, request)
        body = f"<p>{REDACTED}</p>" if masked else row["body_html"]
        return forms.html_page(row["subject"], body)

    # --- operators ------------------------------------------------------------------------

    operator = Depends(g.staff({auth.OPERATOR}))

    @r.post(
        "/notifications/{nid}/resend",
        response_model=NotificationView,
        tags=["notification"],
        responses=responses(401, 403, 404, 409, 422),
    )
    async def resend(nid: UUID, body: ResendNotification, who: Staff = operator) -> Any:
        """Put a failed, or a delivered but disputed, notification back in line with the same
        id (so the same message id: the receiver recognises it), counted, and who, when and
        why kept (``notification_resends``)."""
        now = rt.clock.now()
        async with rt.pool.acquire() as conn, conn.transaction():
            row = await store.get(conn, nid)
            if row is None:
                raise _refused(404, "nid", f"Không có thông báo {nid}")
            unreachable = domain.unreachable_reason(
                domain.Recipient(row["channel"], row["recipient"])
            )
            if unreachable:
                raise _refused(409, "recipient", f"Không gửi lại được: {unreachable}")
            updated = await store.resend(
                conn,
                nid,
                at=now,
                person=who.person,
                role=who.role,
                agency_id=who.agency_id,
                reason=body.reason,
            )
            if updated is None:
                shown = STATUS_LABEL.get(row["status"], row["status"])
                raise _refused(
                    409,
                    "nid",
                    f"Thông báo {nid} {shown}: đã ở trong hàng chờ gửi, không cần gửi lại",
                )
        log.info("notification_resent", id=str(nid), by=who.actor, resends=updated["resends"])
        return _redacted(_view(updated))

    @r.get(
        "/ops/inbound-rejects",
        response_model=list[InboundRejectView],
        tags=["ops"],
        responses=responses(401, 403, 422),
    )
    async def inbound_rejects(
        _: Staff = operator,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        source: Annotated[str | None, Query(pattern=r"^[a-z-]{1,40}$")] = None,
    ) -> list[dict[str, Any]]:
        """What came from outside and was refused, newest first: receipts with a bad
        signature or body, answers of the gateway or the portal we did not understand."""
        return [_reject_view(x) for x in await store.rejects(rt.pool, limit, source)]

    # --- the SMS gateway ---------------------------------------------------------------------

    @r.post(
        "/sms/receipts",
        status_code=202,
        response_model=SmsReceiptAccepted,
        tags=["notification"],
        responses=responses(400, 401, 422),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": SmsReceipt.model_json_schema()}},
            }
        },
    )
    async def sms_receipt(request: Request, x_signature: SignatureCred) -> Any:
        """A delivery receipt from the SMS gateway: the SMS is ``delivered``, or ``failed``
        with the gateway's reason. For the gateway only: no token, the signature of the
        body proves who sent it. Whatever is refused is stored whole for operators."""
        raw = await request.body()
        headers = dict(request.headers)
        now = rt.clock.now()

        async def refuse(
            status: int, field: str, reason: str, *, signed: bool = True, errors: Any = None
        ) -> JSONResponse:
            rid = await store.save_reject(
                rt.pool,
                source="sms-receipt",
                reason=domain.printable(reason),
                field=field,
                status=status,
                body=raw,
                keep=store.MAX_STORED_BODY if signed else UNSIGNED_KEPT,
                headers=headers,
                at=now,
            )
            log.warning("sms_receipt_refused", status=status, field=field, reason=reason, id=rid)
            if errors:
                return JSONResponse(
                    status_code=status, content={"detail": "receipt refused", "errors": errors}
                )
            return problem(status, "receipt refused", field, reason)

        bad_signature = domain.signature_problem(rt.settings.sms_webhook_secret, raw, x_signature)
        if bad_signature:
            return await refuse(401, "header.X-Signature", bad_signature, signed=False)
        try:
            data = loads(raw)  # UTF-8 only, as the edge holds every JSON body
        except ValueError as exc:
            return await refuse(400, "body", str(exc))
        try:
            receipt = SmsReceipt.model_validate(data)
        except ValidationError as exc:
            errors = [
                {
                    "field": ".".join(str(p) for p in e["loc"]) or "body",
                    "reason": e["msg"],
                    "type": e["type"],
                }
                for e in exc.errors(include_url=False, include_input=False)
            ]
            first = errors[0]
            return await refuse(422, first["field"], first["reason"], errors=errors)
        try:
            nid = UUID(receipt.client_ref)
        except ValueError:
            return await refuse(422, "client_ref", "not a notification id")
        row = await store.get(rt.pool, nid)
        if row is None or row["channel"] != domain.SMS:
            return await refuse(422, "client_ref", "no SMS notification has this client_ref")
        if _phone(receipt.to) != row["recipient"]:
            return await refuse(422, "to", "not the number this message was sent to")
        if row["message_id"] and row["message_id"] != receipt.id:
            return await refuse(422, "id", "not the gateway's id of this message")
        async with rt.pool.acquire() as conn, conn.transaction():
            outcome = await store.record_receipt(
                conn,
                nid,
                receipt.id,
                receipt.status,
                receipt.reason,
                receipt.at,
                now,
            )
        log.info("sms_receipt", id=str(nid), status=receipt.status, outcome=outcome)
        return JSONResponse(status_code=202, content={"status": "accepted", "outcome": outcome})

    return r
