"""Opinion requests' use cases: open a round, reply, extend, cancel, and what timers do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from contracts.api import ReplyRequest
from contracts.common import Duration, TimeUnit
from contracts.envelope import Envelope
from contracts.events import (
    ConsultationCancelled,
    ConsultationDeemedConsent,
    ConsultationEscalated,
    ConsultationExtended,
    ConsultationLapsed,
    ConsultationReminded,
    ConsultationReplied,
    ConsultationRequested,
    ConsultationRoundCompleted,
    DossierRouted,
    Outcome,
    RoundOutcome,
)
from services.consultation import domain, store
from services.consultation.domain import Status
from services.consultation.templates import Role, Template, TemplateBook, render_subject
from services.runtime import timers
from services.runtime.calendar import format_local
from services.runtime.service import Runtime

REQUEST_NS = uuid.UUID("3c5e7d0a-9f64-4b1a-8d2e-51a0c6b7e4f2")
_render = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "render"),
    undefined=StrictUndefined,
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
)
DECISION_LABELS = {
    "agree": "Đồng ý",
    "disagree": "Không đồng ý",
    "agree_with_conditions": "Đồng ý có điều kiện",
}
FIELD_LABELS = {"conditions": "điều kiện", "reasons": "lý do"}
ROLE_LABELS = {
    Role.OFFICER: "chuyên viên",
    Role.DEPARTMENT_HEAD: "trưởng phòng",
    Role.AGENCY_HEAD: "thủ trưởng cơ quan",
    Role.COORDINATOR: "cơ quan điều phối",
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a person of an agency, with a role."""

    agency_id: str
    role: str
    person: str

    @property
    def actor(self) -> str:
        return f"{self.person}@{self.agency_id} ({self.role})"


class OpinionError(Exception):
    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.field = field
        self.reason = reason


def request_id(code: str, agency_id: str) -> uuid.UUID:
    """Deterministic: one request per consulted agency per dossier, however often routed."""
    return uuid.uuid5(REQUEST_NS, f"{code}/{agency_id}")


def _period_text(d: Duration) -> str:
    unit = "ngày làm việc" if d.unit is TimeUnit.WORKING_DAYS else "giờ làm việc"
    return f"{d.value:02d} {unit}"


class Opinions:
    def __init__(self, rt: Runtime, book: TemplateBook, calendar: domain.Calendar) -> None:
        self.rt = rt
        self.book = book
        self.calendar = calendar

    # --- opening ---------------------------------------------------------------------------

    async def open_round(self, conn: asyncpg.Connection, env: Envelope, r: DossierRouted) -> None:
        now = self.rt.clock.now()
        if not r.consult:
            return
        await store.open_round(conn, r.code, len(r.consult), now)
        for target in r.consult:
            template = self.book.in_force(target.template_id, now.date())
            rid = request_id(r.code, target.agency_id)
            due = self.calendar.deadline(now, template.deadline)
            ctx = {"code": r.code, "procedure_name": r.procedure_name}
            subject = render_subject(template, **ctx)
            view = {
                **ctx,
                "template": template,
                "subject": subject,
                "sender_name": r.lead_agency_name,
                "agency_name": target.agency_name,
                "decisions": [
                    (
                        DECISION_LABELS[d.value],
                        ", ".join(FIELD_LABELS[f] for f in rule.requires),
                    )
                    for d, rule in template.reply.decisions.items()
                ],
                "signer_roles": ", ".join(ROLE_LABELS[x] for x in template.reply.signer_roles),
                "deadline_text": _period_text(template.deadline),
                "due_local": format_local(due),
                "due_iso": due.isoformat(),
            }
            inserted = await store.insert_request(
                conn,
                id=rid,
                dossier_code=r.code,
                lead_agency=r.lead_agency,
                lead_agency_name=r.lead_agency_name,
                agency_id=target.agency_id,
                agency_name=target.agency_name,
                template_id=template.id,
                template_version=template.version,
                subject=subject,
                body_text=_render.get_template("request.txt.j2").render(**view),
                body_html=_render.get_template("request.html.j2").render(**view),
                requested_at=now,
                due_at=due,
            )
            if not inserted:
                continue
            row = {"id": rid}
            await store.audit(
                conn,
                row,
                "opened",
                f"system@{r.lead_agency}",
                now,
                {"due_at": due.isoformat(), "template": f"{template.id}@{template.version}"},
            )
            await self._schedule(conn, template, rid, due)
            await self.rt.outbox.add(
                conn,
                ConsultationRequested(
                    request_id=rid,
                    code=r.code,
                    lead_agency=r.lead_agency,
                    agency_id=target.agency_id,
                    agency_name=target.agency_name,
                    template_id=template.id,
                    template_version=template.version,
                    subject=subject,
                    requested_at=now,
                    due_at=due,
                ),
                subject=r.code,
                cause=env,
            )

    async def _schedule(
        self, conn: asyncpg.Connection, template: Template, rid: uuid.UUID, due: datetime
    ) -> None:
        for t in domain.timer_plan(self.calendar, template, rid, due):
            await timers.schedule(conn, t.kind, t.ref, t.due_at, t.payload, owner=str(rid))

    # --- reading ---------------------------------------------------------------------------

    async def read(self, rid: uuid.UUID, who: Principal) -> asyncpg.Record:
        async with self.rt.pool.acquire() as conn, conn.transaction():
            row = await store.get_request(conn, rid, for_update=True)
            self._visible(row, who)
            assert row is not None
            if who.agency_id == row["agency_id"]:
                await store.audit(conn, row, "read", who.actor, self.rt.clock.now())
            return row

    @staticmethod
    def _visible(row: asyncpg.Record | None, who: Principal) -> None:
        if row is None:
            raise OpinionError(404, "request_id", "no such request")
        if who.agency_id not in (row["agency_id"], row["lead_agency"]):
            raise OpinionError(403, "agency", "this request belongs to another agency")

    # --- replying --------------------------------------------------------------------------

    async def reply(self, rid: uuid.UUID, body: ReplyRequest, who: Principal) -> asyncpg.Record:
        now = self.rt.clock.now()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            row = await store.get_request(conn, rid, for_update=True)
            self._visible(row, who)
            assert row is not None
            if who.agency_id != row["agency_id"]:
                raise OpinionError(403, "agency", "only the asked agency may answer")
            if Status(row["status"]) not in domain.ANSWERABLE:
                raise OpinionError(
                    409,
                    "status",
                    f"the request is closed ({row['status']}); its outcome is final",
                )
            template = self.book.get(row["template_id"], row["template_version"])
            try:
                domain.check_reply_content(template, body.decision, body.conditions, body.reasons)
                if not body.signer or not body.nonce or not body.signature:
                    raise domain.ReplyError(
                        "signature", "a reply must be signed: signer, nonce and signature"
                    )
                message = domain.canonical_reply(
                    rid, body.decision, body.conditions, body.reasons, body.signer, body.nonce
                )
                domain.verify_signature(
                    await store.get_signer(conn, body.signer),
                    agency_id=row["agency_id"],
                    allowed_roles=template.reply.signer_roles,
                    message=message,
                    signature_b64=body.signature,
                )
            except domain.ReplyError as exc:
                status = 422 if exc.field in ("decision", "conditions", "reasons") else 401
                raise OpinionError(status, exc.field, exc.reason) from None
            if not await store.use_nonce(conn, body.signer, body.nonce):
                raise OpinionError(409, "nonce", "this nonce was already used: replay refused")
            await store.update_request(
                conn,
                rid,
                status=Status.REPLIED.value,
                decision=body.decision.value,
                conditions=body.conditions,
                reasons=body.reasons,
                signer=body.signer,
                signature=body.signature,
                outcome_at=now,
            )
            await store.audit(
                conn,
                row,
                "replied",
                who.actor,
                now,
                {"decision": body.decision.value, "signer": body.signer, "nonce": body.nonce},
            )
            await timers.cancel(conn, [str(rid)])
            cause = await self.rt.outbox.add(
                conn,
                ConsultationReplied(
                    request_id=rid,
                    code=row["dossier_code"],
                    agency_id=row["agency_id"],
                    decision=body.decision,
                    conditions=body.conditions,
                    reasons=body.reasons,
                    signer=body.signer,
                    replied_at=now,
                ),
                subject=row["dossier_code"],
            )
            await self._maybe_complete(conn, row["dossier_code"], cause)
            fresh = await store.get_request(conn, rid)
            assert fresh is not None
            return fresh

    # --- extending and cancelling ------------------------------------------------------------

    async def extend(
        self, rid: uuid.UUID, by: Duration, reason: str, who: Principal
    ) -> asyncpg.Record:
        now = self.rt.clock.now()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            row = await store.get_request(conn, rid, for_update=True)
            self._visible(row, who)
            assert row is not None
            if who.agency_id != row["lead_agency"]:
                raise OpinionError(403, "agency", "only the lead agency may extend a request")
            if Status(row["status"]) not in domain.ANSWERABLE:
                raise OpinionError(409, "status", f"the request is closed ({row['status']})")
            template = self.book.get(row["template_id"], row["template_version"])
            previous = row["due_at"]
            due = self.calendar.after(previous, by)
            await store.update_request(
                conn,
                rid,
                due_at=due,
                extensions=row["extensions"] + 1,
                status=Status.OPEN.value,
            )
            await timers.cancel(conn, [str(rid)])
            # Free the refs of cancelled timers and of fired reminders and finals so they can
            # be planned anew; fired escalation rungs stay as the record of the climb.
            await conn.execute(
                "DELETE FROM timers WHERE owner = $1"
                " AND (status = 'cancelled' OR (status <> 'pending' AND kind <> $2))",
                str(rid),
                domain.ESCALATE,
            )
            # Rungs already climbed stay climbed: only plan what lies after the present.
            for t in domain.timer_plan(self.calendar, template, rid, due):
                if t.kind == domain.REMIND and t.due_at <= now:
                    continue
                if t.kind == domain.ESCALATE and t.payload["step"] <= row["escalation_step"]:
                    continue
                await timers.schedule(conn, t.kind, t.ref, t.due_at, t.payload, owner=str(rid))
            await store.audit(
                conn,
                row,
                "extended",
                who.actor,
                now,
                {
                    "previous_due_at": previous.isoformat(),
                    "due_at": due.isoformat(),
                    "reason": reason,
                },
            )
            await self.rt.outbox.add(
                conn,
                ConsultationExtended(
                    request_id=rid,
                    code=row["dossier_code"],
                    agency_id=row["agency_id"],
                    previous_due_at=previous,
                    due_at=due,
                    reason=reason,
                    extended_at=now,
                ),
                subject=row["dossier_code"],
            )
            fresh = await store.get_request(conn, rid)
            assert fresh is not None
            return fresh

    async def cancel_dossier(
        self, conn: asyncpg.Connection, env: Envelope, code: str, reason: str
    ) -> None:
        now = self.rt.clock.now()
        for row in await store.requests_of(conn, code):
            if Status(row["status"]) not in domain.ANSWERABLE:
                continue
            await store.update_request(
                conn, row["id"], status=Status.CANCELLED.value, outcome_at=now
            )
            await timers.cancel(conn, [str(row["id"])])
            await store.audit(
                conn, row, "cancelled", f"system ({env.type})", now, {"reason": reason}
            )
            await self.rt.outbox.add(
                conn,
                ConsultationCancelled(
                    request_id=row["id"],
                    code=code,
                    agency_id=row["agency_id"],
                    reason=reason,
                    cancelled_at=now,
                ),
                subject=code,
                cause=env,
            )
        await self._maybe_complete(conn, code, env)

    # --- timers ------------------------------------------------------------------------------

    async def _timer_request(
        self, conn: asyncpg.Connection, timer: asyncpg.Record
    ) -> tuple[asyncpg.Record, Template] | None:
        rid = uuid.UUID(timer["ref"].split("/", 1)[0])
        row = await store.get_request(conn, rid, for_update=True)
        if row is None or Status(row["status"]) not in domain.ANSWERABLE:
            return None  # answered or cancelled meanwhile: nothing to do
        return row, self.book.get(row["template_id"], row["template_version"])

    async def on_remind(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        found = await self._timer_request(conn, timer)
        if found is None:
            return
        row, _ = found
        now = self.rt.clock.now()
        await store.update_request(conn, row["id"], reminders_sent=row["reminders_sent"] + 1)
        await store.audit(
            conn, row, "reminded", "system", now, {"reminder": timer["payload"].get("index", 0)}
        )
        await self.rt.outbox.add(
            conn,
            ConsultationReminded(
                request_id=row["id"],
                code=row["dossier_code"],
                agency_id=row["agency_id"],
                due_at=row["due_at"],
                reminded_at=now,
            ),
            subject=row["dossier_code"],
        )

    async def on_escalate(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        found = await self._timer_request(conn, timer)
        if found is None:
            return
        row, template = found
        n = int(timer["payload"]["step"])
        step = template.escalation[n - 1]
        now = self.rt.clock.now()
        await store.update_request(conn, row["id"], escalation_step=max(n, row["escalation_step"]))
        await store.audit(
            conn,
            row,
            "escalated",
            "system",
            now,
            {
                "step": n,
                "notify_role": step.notify_role.value,
                "notify_name": step.notify_name,
                "ask": step.ask,
            },
        )
        await self.rt.outbox.add(
            conn,
            ConsultationEscalated(
                request_id=row["id"],
                code=row["dossier_code"],
                agency_id=row["agency_id"],
                step=n,
                notify_role=step.notify_role.value,
                notify_name=step.notify_name,
                ask=step.ask,
                escalated_at=now,
            ),
            subject=row["dossier_code"],
        )

    async def on_final(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        found = await self._timer_request(conn, timer)
        if found is None:
            return
        row, template = found
        now = self.rt.clock.now()
        if template.final.deemed_consent and template.final.legal_basis:
            basis = template.final.legal_basis
            await store.update_request(
                conn,
                row["id"],
                status=Status.DEEMED_CONSENT.value,
                legal_basis=basis,
                decision="agree",
                outcome_at=now,
            )
            await store.audit(conn, row, "deemed_consent", "system", now, {"legal_basis": basis})
            cause = await self.rt.outbox.add(
                conn,
                ConsultationDeemedConsent(
                    request_id=row["id"],
                    code=row["dossier_code"],
                    agency_id=row["agency_id"],
                    legal_basis=basis,
                    deemed_at=now,
                ),
                subject=row["dossier_code"],
            )
            await self._maybe_complete(conn, row["dossier_code"], cause)
        elif row["status"] == Status.OPEN.value:
            await store.update_request(conn, row["id"], status=Status.LAPSED.value)
            await store.audit(
                conn, row, "lapsed", "system", now, {"escalation_step": row["escalation_step"]}
            )
            await self.rt.outbox.add(
                conn,
                ConsultationLapsed(
                    request_id=row["id"],
                    code=row["dossier_code"],
                    agency_id=row["agency_id"],
                    lapsed_at=now,
                ),
                subject=row["dossier_code"],
            )

    # --- the round -----------------------------------------------------------------------------

    async def _maybe_complete(
        self, conn: asyncpg.Connection, code: str, cause: Envelope | None
    ) -> None:
        rows = await store.requests_of(conn, code)
        if not rows or any(Status(r["status"]) not in domain.FINAL_STATUSES for r in rows):
            return
        now = self.rt.clock.now()
        if not await store.complete_round(conn, code, now):
            return
        outcomes = tuple(
            RoundOutcome(
                request_id=r["id"],
                agency_id=r["agency_id"],
                outcome=Outcome(r["status"]),  # final statuses are named as outcomes
                decision=r["decision"],
            )
            for r in rows
        )
        await self.rt.outbox.add(
            conn,
            ConsultationRoundCompleted(code=code, outcomes=outcomes, completed_at=now),
            subject=code,
            cause=cause,
        )


def view(row: asyncpg.Record, now: datetime, *, with_body: bool = False) -> dict[str, Any]:
    open_ = row["status"] in domain.ANSWERABLE
    return {
        "id": row["id"],
        "dossier_code": row["dossier_code"],
        "lead_agency": row["lead_agency"],
        "agency_id": row["agency_id"],
        "agency_name": row["agency_name"],
        "template_id": row["template_id"],
        "template_version": row["template_version"],
        "subject": row["subject"],
        "status": row["status"],
        "requested_at": row["requested_at"],
        "due_at": row["due_at"],
        "seconds_left": int((row["due_at"] - now).total_seconds()) if open_ else None,
        "decision": row["decision"],
        "outcome": row["status"] if not open_ else None,
        "legal_basis": row["legal_basis"],
        "escalation_step": row["escalation_step"],
        "body_text": row["body_text"] if with_body else None,
    }
