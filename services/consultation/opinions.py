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
)
from services.consultation import domain, store
from services.consultation.domain import Status
from services.consultation.templates import Role, Template, TemplateBook, render_subject
from services.runtime import timers
from services.runtime.calendar import format_local
from services.runtime.logging import get_logger
from services.runtime.service import Runtime

log = get_logger(__name__)
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
        """Open one request per consulted agency, unless the dossier already ended."""
        now = self.rt.clock.now()
        if not r.consult:
            return
        rnd = await store.lock_round(conn, r.code)
        if not rnd.may_open():
            # A withdrawal or stop overtook the routing (or the round is done): no
            # request, no timer, no event.
            log.info("round_not_opened", code=r.code, ended_by=rnd.ended_by)
            return
        rnd.open(len(r.consult), now)
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
            rnd.requests.append(domain.RequestState(rid, target.agency_id, Status.OPEN, None))
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
        await store.save_round(conn, rnd)

    async def _schedule(
        self,
        conn: asyncpg.Connection,
        template: Template,
        rid: uuid.UUID,
        due: datetime,
        *,
        generation: int = 0,
        now: datetime | None = None,
        climbed: int = 0,
    ) -> None:
        """Plan the request's timers. Each extension is a new generation with refs of its
        own, so re-planning never touches a timer row a scheduler may hold; a timer of an
        older generation that still fires finds itself superseded and does nothing."""
        for t in domain.timer_plan(self.calendar, template, rid, due):
            if now is not None and t.kind == domain.REMIND and t.due_at <= now:
                continue
            if t.kind == domain.ESCALATE and t.payload["step"] <= climbed:
                continue  # rungs already climbed stay climbed
            ref = t.ref if generation == 0 else t.ref.replace("/", f"/g{generation}/", 1)
            payload = {**t.payload, "gen": generation}
            await timers.schedule(conn, t.kind, ref, t.due_at, payload, owner=str(rid))

    # --- reading ---------------------------------------------------------------------------

    async def _locked(
        self, conn: asyncpg.Connection, rid: uuid.UUID
    ) -> tuple[domain.Round | None, asyncpg.Record | None]:
        """The request's round locked first, then the request as it is under that lock."""
        code = await store.dossier_of(conn, rid)
        if code is None:
            return None, None
        rnd = await store.lock_round(conn, code)
        return rnd, await store.get_request(conn, rid)

    async def read(self, rid: uuid.UUID, who: Principal) -> asyncpg.Record:
        async with self.rt.pool.acquire() as conn, conn.transaction():
            _, row = await self._locked(conn, rid)
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
            rnd, row = await self._locked(conn, rid)
            self._visible(row, who)
            assert row is not None and rnd is not None
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
            await store.cancel_timers(conn, [str(rid)])
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
            rnd.settle(rid, Status.REPLIED, body.decision.value)
            await self._complete(conn, rnd, cause)
            fresh = await store.get_request(conn, rid)
            assert fresh is not None
            return fresh

    # --- extending and cancelling ------------------------------------------------------------

    async def extend(
        self, rid: uuid.UUID, by: Duration, reason: str, who: Principal
    ) -> asyncpg.Record:
        now = self.rt.clock.now()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            rnd, row = await self._locked(conn, rid)
            self._visible(row, who)
            assert row is not None and rnd is not None
            if who.agency_id != row["lead_agency"]:
                raise OpinionError(403, "agency", "only the lead agency may extend a request")
            if Status(row["status"]) not in domain.ANSWERABLE:
                raise OpinionError(409, "status", f"the request is closed ({row['status']})")
            template = self.book.get(row["template_id"], row["template_version"])
            previous = row["due_at"]
            try:
                due = self.calendar.after(previous, by)
            except (OverflowError, ValueError):
                raise OpinionError(422, "by", "the new deadline is out of range") from None
            generation = row["extensions"] + 1
            await store.update_request(
                conn,
                rid,
                due_at=due,
                extensions=generation,
                status=Status.OPEN.value,
            )
            rnd.settle(rid, Status.OPEN)
            # Pending timers of the old plan are cancelled; fired escalation rungs stay as
            # the record of the climb, and only what lies after the present is planned.
            await store.cancel_timers(conn, [str(rid)])
            await self._schedule(
                conn,
                template,
                rid,
                due,
                generation=generation,
                now=now,
                climbed=row["escalation_step"],
            )
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
            await store.save_round(conn, rnd)
            fresh = await store.get_request(conn, rid)
            assert fresh is not None
            return fresh

    async def cancel_dossier(
        self, conn: asyncpg.Connection, env: Envelope, code: str, reason: str
    ) -> None:
        """Withdrawal or stop: remembered by the round even before routing reaches it, so
        a late routing opens nothing; what is open is cancelled."""
        now = self.rt.clock.now()
        rnd = await store.lock_round(conn, code)
        cancelled = {r.id for r in rnd.end(env.type, reason, now)}
        for row in await store.requests_of(conn, code):
            if row["id"] not in cancelled:
                continue
            await store.update_request(
                conn, row["id"], status=Status.CANCELLED.value, outcome_at=now
            )
            await store.cancel_timers(conn, [str(row["id"])])
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
        await self._complete(conn, rnd, env)

    # --- timers ------------------------------------------------------------------------------

    async def _timer_request(
        self, conn: asyncpg.Connection, timer: asyncpg.Record
    ) -> tuple[domain.Round, asyncpg.Record, Template] | None:
        """The timer's round locked first (without waiting if this batch already holds
        another round), then its request; None when there is nothing left to do."""
        rid = uuid.UUID(timer["ref"].split("/", 1)[0])
        code = await store.dossier_of(conn, rid)
        if code is None:
            return None
        rnd = await store.lock_round(conn, code, nowait_if_holding=True)
        row = await store.get_request(conn, rid)
        if row is None or Status(row["status"]) not in domain.ANSWERABLE:
            return None  # answered or cancelled meanwhile: nothing to do
        gen = timer["payload"].get("gen")
        if gen is not None and gen != row["extensions"]:
            return None  # planned before an extension: superseded
        return rnd, row, self.book.get(row["template_id"], row["template_version"])

    async def on_remind(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        found = await self._timer_request(conn, timer)
        if found is None:
            return
        rnd, row, _ = found
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
        await store.save_round(conn, rnd)

    async def on_escalate(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        found = await self._timer_request(conn, timer)
        if found is None:
            return
        rnd, row, template = found
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
        await store.save_round(conn, rnd)

    async def on_final(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        found = await self._timer_request(conn, timer)
        if found is None:
            return
        rnd, row, template = found
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
            rnd.settle(row["id"], Status.DEEMED_CONSENT, "agree")
            await self._complete(conn, rnd, cause)
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
            rnd.settle(row["id"], Status.LAPSED)
            await store.save_round(conn, rnd)

    # --- the round -----------------------------------------------------------------------------

    async def _complete(
        self, conn: asyncpg.Connection, rnd: domain.Round, cause: Envelope | None
    ) -> None:
        """Save the round; when this change gave every request an outcome, say so once."""
        now = self.rt.clock.now()
        outcomes = rnd.complete(now)
        await store.save_round(conn, rnd)
        if outcomes is None:
            return
        await self.rt.outbox.add(
            conn,
            ConsultationRoundCompleted(code=rnd.code, outcomes=outcomes, completed_at=now),
            subject=rnd.code,
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
