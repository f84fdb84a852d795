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

from contracts.agencies import AgencyBook, AgencyError, default_book
from contracts.api import ReplyRequest
from contracts.common import Duration
from contracts.envelope import Envelope
from contracts.events import ConsultationRoundCompleted, DossierRouted, RoundToOpen
from services.consultation import domain, store
from services.consultation.domain import (
    DECISION_LABELS,
    FIELD_LABELS,
    ROLE_LABELS,
    Refusal,
    Refused,
    Status,
)
from services.consultation.templates import Template, TemplateBook, render_subject
from services.runtime.calendar import VN_TZ, format_local
from services.runtime.forms import day_of
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
NATION = "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM"
MOTTO = "Độc lập - Tự do - Hạnh phúc"
"""Quốc hiệu and Tiêu ngữ, the first part of every administrative document (Decree
30/2020/NĐ-CP, Art. 8(2)(a) and Appendix I)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a person of an agency, with a role."""

    agency_id: str
    role: str
    person: str

    @property
    def actor(self) -> str:
        return f"{self.person}@{self.agency_id} ({self.role})"


NO_SUCH_REQUEST = "không có văn bản lấy ý kiến này"


def _province(agencies: AgencyBook, agency_id: str) -> str | None:
    """The place name of the agency's province (Địa danh, Decree 30/2020/NĐ-CP, Appendix I)."""
    try:
        return agencies.province(agency_id.rsplit(".", 1)[-1]).place
    except AgencyError:
        return None


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


def letter_number(serial: int, agency_id: str) -> str:
    """The letter's "Số": its serial in the lead agency's year (Decree 30/2020/NĐ-CP, Art.
    15(1),(3)), then the symbol. Appendix I makes a công văn's symbol the abbreviations of
    the issuing agency and the drafting unit; the agency registry holds no abbreviation
    yet, so the agency's code in the national list (QCVN 102:2016/BTTTT) stands in."""
    return f"{serial:02d}/{agency_id}"


def signer_title(head: str, agency_name: str) -> str:
    """The signer's position as the signature block prints it (Decree 30/2020/NĐ-CP,
    Appendix I): the head's title without the agency's name, which the header already
    gives ("Giám đốc Sở Xây dựng Thành phố Hồ Chí Minh" -> "GIÁM ĐỐC")."""
    title = head[: -len(agency_name)].strip() if head.endswith(agency_name) else head
    return (title or head).upper()


def attached(template: Template, documents: list[dict[str, Any]] | None) -> list[str]:
    """The documents sent with the request: those of the template's list the dossier was
    really handed in with, by their names, in the template's order. Unknown (no receipt
    has reached consultation): none is listed rather than one that may be missing."""
    if not documents:
        return []
    by_code = {d.get("code"): d for d in documents}
    out = []
    for c in template.attachments:
        d = by_code.get(c)
        if d is not None:
            copies = int(d.get("copies") or 1)
            name = d.get("name") or c
            out.append(f"{name} ({copies:02d} bản)" if copies > 1 else name)
    return out


def cited(basis: str | None) -> str | None:
    """A legal basis as a sentence cites it after "Căn cứ": "khoản", "điểm" in lower case,
    "Điều" and the names of texts capitalised (Decree 30/2020/NĐ-CP, Appendix II)."""
    if basis and basis.startswith(("Khoản ", "Điểm ")):
        return basis[0].lower() + basis[1:]
    return basis


def letter(
    template: Template,
    *,
    code: str,
    procedure_name: str,
    subject: str,
    lead_agency: str,
    lead_agency_name: str,
    agency_id: str,
    agency_name: str,
    number: str,
    issued_at: datetime,
    due: datetime,
    documents: list[dict[str, Any]] | None,
    agencies: AgencyBook,
) -> tuple[str, str]:
    """The opinion request as the lead agency's official letter (công văn), text and HTML,
    with the parts of Decree 30/2020/NĐ-CP, Art. 8(2): Quốc hiệu and Tiêu ngữ, the issuing
    agency under its parent, number and symbol, place and date, the summary ("V/v ..."),
    whom it is addressed to, the content (what is asked, the documents sent, what a reply
    holds and how to send it, by when, what silence means), where it goes, and the
    signer's position. It says what to do in words: no path, no service name."""
    lead = domain.agency_of(agencies, lead_agency)
    parent = domain.agency_of(agencies, lead.parent) if lead and lead.parent else None
    view = {
        "code": code,
        "procedure_name": procedure_name,
        "template": template,
        "subject": subject,
        "nation": NATION,
        "motto": MOTTO,
        "parent_name": parent.name if parent else (lead.parent_name if lead else None),
        "sender_name": lead_agency_name,
        "number": number,
        "place": lead.place if lead and lead.place else _province(agencies, lead_agency),
        "issued_day": day_of(issued_at),
        "agency_name": agency_name,
        "attachments": attached(template, documents),
        "signer_title": signer_title(lead.head, lead.name) if lead else "THỦ TRƯỞNG CƠ QUAN",
        "decisions": [
            (DECISION_LABELS[d.value], ", ".join(FIELD_LABELS[f] for f in rule.requires))
            for d, rule in template.reply.decisions.items()
        ],
        "signer_roles": ", ".join(ROLE_LABELS[x] for x in template.reply.signer_roles),
        "deadline_text": template.deadline.describe(),
        "deemed": domain.deems(template, agency_id, agencies),
        "due_local": format_local(due),
        "due_iso": due.isoformat(),
        "deadline_basis": cited(template.deadline.legal_basis),
    }
    return (
        _render.get_template("request.txt.j2").render(**view),
        _render.get_template("request.html.j2").render(**view),
    )


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
        documents = await store.documents_of(conn, code)
        for target in r.consult:
            template = self.book.in_force(target.template_id, now.date())
            rid = request_id(code, target.agency_id)
            if await store.get_request(conn, rid) is not None:
                continue  # this agency was asked already (a repeated routing)
            due = self.calendar.deadline(now, template.deadline)
            subject = render_subject(template, code=code, procedure_name=r.procedure_name)
            number = letter_number(
                await store.next_letter_number(conn, r.lead_agency, now.astimezone(VN_TZ).year),
                r.lead_agency,
            )
            body_text, body_html = letter(
                template,
                code=code,
                procedure_name=r.procedure_name,
                subject=subject,
                lead_agency=r.lead_agency,
                lead_agency_name=r.lead_agency_name,
                agency_id=target.agency_id,
                agency_name=target.agency_name,
                number=number,
                issued_at=now,
                due=due,
                documents=documents,
                agencies=self.agencies,
            )
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
                body_text=body_text,
                body_html=body_html,
                requested_at=now,
                due_at=due,
                number=number,
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
                number=number,
            )
        await self._save(conn, rnd, env)

    # --- reading ---------------------------------------------------------------------------

    async def read(self, rid: uuid.UUID, who: Principal) -> asyncpg.Record:
        """A request for an agency that may see it; the asked agency's read is audited."""
        async with self.rt.pool.acquire() as conn, conn.transaction():
            rnd = await self._round_of(conn, rid)
            if rnd is None:
                raise OpinionError(404, "request_id", NO_SUCH_REQUEST)
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
            raise OpinionError(404, "request_id", NO_SUCH_REQUEST)
        if who.agency_id not in (row["agency_id"], row["lead_agency"]):
            raise OpinionError(403, "agency", "văn bản lấy ý kiến này thuộc cơ quan khác")

    # --- replying --------------------------------------------------------------------------

    async def reply(self, rid: uuid.UUID, body: ReplyRequest, who: Principal) -> asyncpg.Record:
        now = self.rt.clock.now()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            rnd = await self._round_of(conn, rid)
            if rnd is None:
                raise OpinionError(404, "request_id", NO_SUCH_REQUEST)
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
                raise OpinionError(
                    409, "nonce", "số dùng một lần (nonce) này đã được dùng: không nhận gửi lại"
                )
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
                raise OpinionError(404, "request_id", NO_SUCH_REQUEST)
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
        rnd, rid, gen, req = found
        template = self.book.get(req.template_id, req.template_version)
        index = int(timer["payload"].get("index", 0))
        now = self.rt.clock.now()
        rnd.remind(rid, gen, index, now, template, self.calendar, self.agencies)
        await self._save(conn, rnd)

    async def on_escalate(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        found = await self._on_timer(conn, timer)
        if found is None:
            return
        rnd, rid, gen, req = found
        template = self.book.get(req.template_id, req.template_version)
        step = int(timer["payload"]["step"])
        rnd.escalate(rid, gen, step, template, self.rt.clock.now(), self.agencies, self.calendar)
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
