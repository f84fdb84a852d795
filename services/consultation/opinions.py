"""Opinion requests' use cases: open a round, reply, extend, cancel, and what timers do.

Each one has the same shape: lock and load the dossier's round (the aggregate, always the
first lock), call its method, save it with its events in the outbox, in one transaction.
Rendering and labels stay here; the rules are in ``domain.Round``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from contracts.agencies import AgencyBook, default_book
from contracts.api import ReplyRequest
from contracts.common import Duration
from contracts.envelope import Envelope
from contracts.events import ConsultationRoundCompleted, DossierRouted, RoundToOpen
from services.consultation import domain, store
from services.consultation.domain import Refusal, Refused, Status
from services.consultation.templates import Role, TemplateBook, render_subject
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


HTTP_STATUS = {
    Refusal.NOT_FOUND: 404,
    Refusal.FORBIDDEN: 403,
    Refusal.CLOSED: 409,
    Refusal.INVALID: 422,
    Refusal.UNSIGNED: 401,
}


def _refused(exc: Refused) -> OpinionError:
    return OpinionError(HTTP_STATUS[exc.kind], exc.field, exc.reason)


def request_id(code: str, agency_id: str) -> uuid.UUID:
    """Deterministic: one request per consulted agency per dossier, however often routed."""
    return uuid.uuid5(REQUEST_NS, f"{code}/{agency_id}")


class Opinions:
    def __init__(
        self,
        rt: Runtime,
        book: TemplateBook,
        calendar: domain.Calendar,
        agencies: AgencyBook | None = None,
    ) -> None:
        self.rt = rt
        self.book = book
        self.calendar = calendar
        self.agencies = agencies or default_book()

    async def _save(
        self, conn: asyncpg.Connection, rnd: domain.Round, cause: Envelope | None = None
    ) -> None:
        """Save the round and put its events in the outbox, in order. An event without an
        outside cause (an HTTP call, a timer) causes the round's completion it led to."""
        events, rnd.events = rnd.events, []
        await store.save_round(conn, rnd)
        last: Envelope | None = None
        for ev in events:
            because = cause
            if because is None and isinstance(ev, ConsultationRoundCompleted):
                because = last
            last = await self.rt.outbox.add(conn, ev, subject=rnd.code, cause=because)

    async def _round_of(self, conn: asyncpg.Connection, rid: uuid.UUID) -> domain.Round | None:
        """The round of a request, locked first (the request's dossier never changes, so it
        is read without a lock)."""
        code = await store.dossier_of(conn, rid)
        if code is None:
            return None
        return await store.lock_round(conn, code)

    # --- opening ---------------------------------------------------------------------------

    async def open_round(
        self, conn: asyncpg.Connection, env: Envelope, code: str, r: DossierRouted | RoundToOpen
    ) -> None:
        """Open one request per consulted agency, unless the dossier already ended."""
        now = self.rt.clock.now()
        if not r.consult:
            return
        rnd = await store.lock_round(conn, code)
        if not rnd.may_open():
            # A withdrawal or stop overtook the routing (or the round is done): no
            # request, no timer, no event.
            log.info("round_not_opened", code=code, ended_by=rnd.ended_by)
            return
        for target in r.consult:
            template = self.book.in_force(target.template_id, now.date())
            rid = request_id(code, target.agency_id)
            due = self.calendar.deadline(now, template.deadline)
            ctx = {"code": code, "procedure_name": r.procedure_name}
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
                "deadline_text": template.deadline.describe(),
                "deemed": domain.deems(template, target.agency_id, self.agencies),
                "due_local": format_local(due),
                "due_iso": due.isoformat(),
            }
            inserted = await store.insert_request(
                conn,
                id=rid,
                dossier_code=code,
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
                continue  # this agency was asked already (a repeated routing)
            rnd.add_request(
                domain.Request(
                    id=rid,
                    dossier_code=code,
                    lead_agency=r.lead_agency,
                    agency_id=target.agency_id,
                    template_id=template.id,
                    template_version=template.version,
                    status=Status.OPEN,
                    due_at=due,
                ),
                template=template,
                calendar=self.calendar,
                agency_name=target.agency_name,
                subject=subject,
                actor=f"system@{r.lead_agency}",
                at=now,
                agencies=self.agencies,
            )
        await self._save(conn, rnd, env)

    # --- reading ---------------------------------------------------------------------------

    async def read(self, rid: uuid.UUID, who: Principal) -> asyncpg.Record:
        """A request for an agency that may see it; the asked agency's read is audited."""
        async with self.rt.pool.acquire() as conn, conn.transaction():
            rnd = await self._round_of(conn, rid)
            if rnd is None:
                raise OpinionError(404, "request_id", "no such request")
            try:
                req = rnd.visible(rid, who.agency_id)
            except Refused as exc:
                raise _refused(exc) from None
            if who.agency_id == req.agency_id:
                rnd.audit(req, "read", who.actor, self.rt.clock.now())
                await self._save(conn, rnd)
            row = await store.get_request(conn, rid)
            assert row is not None
            return row

    @staticmethod
    def visible(row: asyncpg.Record | None, who: Principal) -> None:
        if row is None:
            raise OpinionError(404, "request_id", "no such request")
        if who.agency_id not in (row["agency_id"], row["lead_agency"]):
            raise OpinionError(403, "agency", "this request belongs to another agency")

    # --- replying --------------------------------------------------------------------------

    async def reply(self, rid: uuid.UUID, body: ReplyRequest, who: Principal) -> asyncpg.Record:
        now = self.rt.clock.now()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            rnd = await self._round_of(conn, rid)
            if rnd is None:
                raise OpinionError(404, "request_id", "no such request")
            try:
                req = rnd.visible(rid, who.agency_id)
                rnd.record_reply(
                    rid,
                    agency_id=who.agency_id,
                    actor=who.actor,
                    template=self.book.get(req.template_id, req.template_version),
                    decision=body.decision,
                    conditions=body.conditions,
                    reasons=body.reasons,
                    signer_key=body.signer,
                    nonce=body.nonce,
                    signature=body.signature,
                    signer=await store.get_signer(conn, body.signer) if body.signer else None,
                    at=now,
                )
            except Refused as exc:
                raise _refused(exc) from None
            if not await store.use_nonce(conn, body.signer, body.nonce):
                raise OpinionError(409, "nonce", "this nonce was already used: replay refused")
            await self._save(conn, rnd)
            fresh = await store.get_request(conn, rid)
            assert fresh is not None
            return fresh

    # --- extending and cancelling ------------------------------------------------------------

    async def extend(
        self, rid: uuid.UUID, by: Duration, reason: str, who: Principal
    ) -> asyncpg.Record:
        now = self.rt.clock.now()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            rnd = await self._round_of(conn, rid)
            if rnd is None:
                raise OpinionError(404, "request_id", "no such request")
            try:
                req = rnd.visible(rid, who.agency_id)
                rnd.extend(
                    rid,
                    agency_id=who.agency_id,
                    actor=who.actor,
                    by=by,
                    reason=reason,
                    template=self.book.get(req.template_id, req.template_version),
                    calendar=self.calendar,
                    at=now,
                    agencies=self.agencies,
                )
            except Refused as exc:
                raise _refused(exc) from None
            await self._save(conn, rnd)
            fresh = await store.get_request(conn, rid)
            assert fresh is not None
            return fresh

    async def cancel_dossier(
        self, conn: asyncpg.Connection, env: Envelope, code: str, reason: str
    ) -> None:
        """Withdrawal or stop: remembered by the round even before routing reaches it, so
        a late routing opens nothing; what is open is cancelled."""
        rnd = await store.lock_round(conn, code)
        rnd.end(env.type, reason, self.rt.clock.now())
        await self._save(conn, rnd, env)

    # --- timers ------------------------------------------------------------------------------

    async def _on_timer(
        self, conn: asyncpg.Connection, timer: asyncpg.Record
    ) -> tuple[domain.Round, uuid.UUID, int | None, domain.Request] | None:
        """The timer's round, locked first (see ``store.lock_round_in_batch``)."""
        rid = uuid.UUID(timer["ref"].split("/", 1)[0])
        rnd = await store.lock_round_in_batch(conn, rid)
        if rnd is None:
            return None
        req = next((r for r in rnd.requests if r.id == rid), None)
        if req is None:
            return None
        gen = timer["payload"].get("gen")
        return rnd, rid, None if gen is None else int(gen), req

    async def on_remind(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        found = await self._on_timer(conn, timer)
        if found is None:
            return
        rnd, rid, gen, _ = found
        rnd.remind(rid, gen, int(timer["payload"].get("index", 0)), self.rt.clock.now())
        await self._save(conn, rnd)

    async def on_escalate(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        found = await self._on_timer(conn, timer)
        if found is None:
            return
        rnd, rid, gen, req = found
        template = self.book.get(req.template_id, req.template_version)
        step = int(timer["payload"]["step"])
        rnd.escalate(rid, gen, step, template, self.rt.clock.now(), self.agencies)
        await self._save(conn, rnd)

    async def on_final(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        found = await self._on_timer(conn, timer)
        if found is None:
            return
        rnd, rid, gen, req = found
        template = self.book.get(req.template_id, req.template_version)
        rnd.lapse(rid, gen, template, self.rt.clock.now(), self.agencies)
        await self._save(conn, rnd)


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
