"""Notification's subscribers: what to tell whom, queued for the sender loop."""

from __future__ import annotations

import html
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from contracts.agencies import AgencyError, default_book
from contracts.common import Channel, DossierStatus
from contracts.envelope import Envelope
from contracts.events import (
    ApologyDrafted,
    ApologyEscalated,
    ApologyIssued,
    ApologyWithdrawn,
    ConsultationDeemedConsent,
    ConsultationEscalated,
    ConsultationExtended,
    ConsultationReminded,
    ConsultationRequested,
    DossierReceived,
    DossierRefused,
    FeeRequested,
    ResultReady,
    RouteClosed,
    SupplementRequested,
)
from services.notification import domain, store
from services.runtime import auth, forms
from services.runtime.calendar import format_local
from services.runtime.consumer import Handler, RetryLater
from services.runtime.forms import FormBook, Rendered
from services.runtime.logging import get_logger
from services.runtime.service import Runtime
from services.runtime.settings import ServiceSettings
from services.runtime.timers import TimerHandler

DELIVER = "notification.deliver"
"""Timer kind of deliveries scheduled before migration 0002 (now the sender loop's job)."""

UNBLOCKING = frozenset({"dossier.received"})
"""What parked routing events wait for: the receipt is applied even while they wait, and
they follow it (``EventConsumer.unblocking``)."""

log = get_logger(__name__)


def configured_channels(s: ServiceSettings) -> frozenset[str]:
    """The electronic channels this deployment delivers: a channel whose endpoint is not
    configured (an empty URL or host) is simply not used."""
    out = set()
    if s.smtp_host:
        out.add(domain.EMAIL)
    if s.sms_url:
        out.add(domain.SMS)
    if s.portal_url:
        out.add(domain.PORTAL)
    return frozenset(out)


class Notifier:
    def __init__(
        self, rt: Runtime, forms: FormBook, channels: Collection[str] | None = None
    ) -> None:
        self.rt = rt
        self.forms = forms
        self.channels = frozenset(
            configured_channels(rt.settings) if channels is None else channels
        )
        self.unseal_key = auth.unseal_key_for_notification(rt.settings)

    def to_applicant(
        self, applicant: domain.Reachable, channel: Channel, code: str
    ) -> list[domain.Recipient]:
        """Every configured channel the applicant has (the desk or the post if none)."""
        return domain.applicant_recipients(applicant, channel, self.channels, code)

    async def remember(
        self,
        conn: asyncpg.Connection,
        code: str,
        receiving: str,
        lead: str | None,
        sealed: str | None,
        receipt: domain.Receipt | None = None,
    ) -> str | None:
        """Keep who may read this dossier's notices and, at its receipt, what later notices
        need of it (``receipt``); returns the applicant's lookup code when the event carries
        it (sealed for us), to print on the form."""
        lookup = auth.unseal(self.unseal_key, sealed, code) if sealed else None
        await conn.execute(
            "INSERT INTO dossier_access(dossier_code, receiving_agency, lead_agency, lookup_hash)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (dossier_code) DO UPDATE SET"
            " lead_agency = coalesce(EXCLUDED.lead_agency, dossier_access.lead_agency),"
            " lookup_hash = coalesce(EXCLUDED.lookup_hash, dossier_access.lookup_hash)",
            code,
            receiving,
            lead,
            auth.hash_lookup_code(code, lookup) if lookup else None,
        )
        if receipt is not None:
            await store.save_receipt(conn, receipt)
        return lookup

    async def notify(
        self,
        conn: asyncpg.Connection,
        env: Envelope,
        kind: str,
        recipients: domain.Recipient | Sequence[domain.Recipient],
        context: dict[str, Any],
    ) -> None:
        """Render ``kind`` for each recipient and queue its delivery, once per event.

        Email and the notices people hand over carry the whole form (with the lookup code
        where the form prints it); an SMS carries the form's short text, the portal the
        subject as title and the text form as body, neither ever the lookup code: they
        leave the applicant's own mailbox and desk for other systems.

        A recipient that cannot be reached on its channel (an email address mail cannot be
        sent to, a phone number the gateway does not take) makes its notification
        ``failed`` with the reason at once: it never reaches a connection others share.
        """
        now = self.rt.clock.now()
        day = self.rt.calendar.local(env.occurred_at).date()
        if isinstance(recipients, domain.Recipient):
            recipients = [recipients]
        rendered: dict[bool, Rendered] = {}

        def render(whole: bool) -> Rendered:
            if whole not in rendered:
                ctx = context if whole else {**context, "lookup_code": None}
                rendered[whole] = self.forms.render(kind, day, ctx)
            return rendered[whole]

        for recipient in recipients:
            r = render(recipient.channel not in (domain.SMS, domain.PORTAL))
            text, body_html = r.text, r.html
            problem = domain.address_problem(recipient)
            if recipient.channel == domain.SMS:
                if r.sms is None:
                    problem = problem or f"form {kind} version {r.version} has no SMS text"
                text = r.sms or ""
                body_html = f"<p>{html.escape(text)}</p>"
            nid = domain.notification_id(env.event_id, kind, recipient.address, recipient.channel)
            await store.insert(
                conn,
                id=nid,
                dossier_code=env.subject,
                kind=kind,
                form_version=r.version,
                channel=recipient.channel,
                recipient=domain.printable(recipient.address),
                subject=r.subject,
                body_text=text,
                body_html=body_html,
                caused_by=env.event_id,
                created_at=now,
                status="failed" if problem else "pending",
                due_at=None if problem else now,
                last_error=f"invalid address: {problem}" if problem else None,
                failed_at=now if problem else None,
            )
            if problem:
                log.warning("notification_invalid_address", id=str(nid), reason=problem)


async def _scheduled_before_0002(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
    """Delivery timers written before the sender loop: the loop delivers those
    notifications now (migration 0002 made them due), so the timer has nothing to do."""


def _agency_name(agency_id: str) -> str:
    """The agency as the registry names it; its id when the registry does not know it."""
    try:
        return default_book().get(agency_id).name
    except AgencyError:
        return agency_id


def _local(t: datetime) -> str:
    return format_local(t) or ""


async def _receipt(conn: asyncpg.Connection, code: str) -> domain.Receipt:
    """The dossier's receipt as notification kept it; until it has arrived (it travels on
    the dossier topic, the routing events that need it on theirs) the event waits, parked."""
    r = await store.get_receipt(conn, code)
    if r is None:
        raise RetryLater(f"the receipt of {code} (dossier.received) has not arrived yet")
    return r


def build(n: Notifier) -> dict[str, Handler]:
    async def on_received(conn: asyncpg.Connection, env: Envelope, d: DossierReceived) -> None:
        receipt = domain.Receipt(
            code=d.code,
            contact=domain.Contact.of(d.applicant),
            channel=d.channel,
            procedure_name=d.procedure_name,
            received_at=d.received_at,
            office=d.office,
        )
        lookup = await n.remember(
            conn, d.code, d.receiving_agency, d.lead_agency, d.lookup_code_sealed, receipt
        )
        await n.notify(
            conn,
            env,
            "form01",
            n.to_applicant(d.applicant, d.channel, d.code),
            domain.form01_context(d, lookup),
        )

    async def on_supplement(
        conn: asyncpg.Connection, env: Envelope, s: SupplementRequested
    ) -> None:
        lookup = await n.remember(conn, s.code, s.receiving_agency, None, s.lookup_code_sealed)
        await n.notify(
            conn,
            env,
            "form02",
            n.to_applicant(s.applicant, s.channel, s.code),
            domain.form02_context(s, lookup),
        )

    async def on_refused(conn: asyncpg.Connection, env: Envelope, r: DossierRefused) -> None:
        lookup = await n.remember(conn, r.code, r.receiving_agency, None, r.lookup_code_sealed)
        await n.notify(
            conn,
            env,
            "form03",
            n.to_applicant(r.applicant, r.channel, r.code),
            domain.form03_context(r, lookup),
        )

    async def on_requested(
        conn: asyncpg.Connection, env: Envelope, c: ConsultationRequested
    ) -> None:
        """The asked agency is told what it is asked and by when (handed over in the
        system, as every agency notice)."""
        await store.save_request(
            conn,
            request_id=c.request_id,
            dossier_code=c.code,
            agency_id=c.agency_id,
            agency_name=c.agency_name,
            due_at=c.due_at,
        )
        await n.notify(
            conn,
            env,
            "consultation_request",
            domain.Recipient(domain.AGENCY, c.agency_id),
            domain.consultation_request_context(c, _agency_name(c.lead_agency)),
        )

    async def on_extended(conn: asyncpg.Connection, env: Envelope, c: ConsultationExtended) -> None:
        await conn.execute(
            "UPDATE consult_requests SET due_at = $2 WHERE request_id = $1", c.request_id, c.due_at
        )

    async def on_reminded(conn: asyncpg.Connection, env: Envelope, c: ConsultationReminded) -> None:
        req = await store.get_request(conn, c.request_id)
        name = req["agency_name"] if req else c.agency_id
        await n.notify(
            conn,
            env,
            "consultation_reminder",
            domain.Recipient("agency", c.agency_id),
            {
                "code": c.code,
                "agency_name": name,
                "due_local": _local(c.due_at),
                "deemed_basis": c.deemed_basis,
            },
        )

    async def on_escalated(
        conn: asyncpg.Connection, env: Envelope, c: ConsultationEscalated
    ) -> None:
        req = await store.get_request(conn, c.request_id)
        name = req["agency_name"] if req else c.agency_id
        await n.notify(
            conn,
            env,
            "consultation_escalation",
            domain.Recipient("agency", f"{c.notify_role}:{c.notify_name}"),
            {
                "code": c.code,
                "agency_name": name,
                "notify_name": c.notify_name,
                "ask": c.ask,
                "step": c.step,
                "due_local": _local(c.due_at) if c.due_at else None,
                "escalated_local": _local(c.escalated_at),
                "overdue": domain.working_time_text(c.overdue_working_seconds),
            },
        )

    async def on_deemed(
        conn: asyncpg.Connection, env: Envelope, c: ConsultationDeemedConsent
    ) -> None:
        """An opinion deemed given: the asked agency and the lead agency are each told,
        with the legal text that makes silence consent."""
        req = await store.get_request(conn, c.request_id)
        name = req["agency_name"] if req else _agency_name(c.agency_id)
        lead = c.lead_agency
        if lead is None:
            row = await conn.fetchrow(
                "SELECT lead_agency FROM dossier_access WHERE dossier_code = $1", c.code
            )
            lead = row["lead_agency"] if row else None
        told = [(c.agency_id, name, False)]
        if lead is not None and lead != c.agency_id:
            told.append((lead, _agency_name(lead), True))
        for agency_id, recipient_name, to_lead in told:
            await n.notify(
                conn,
                env,
                "consultation_deemed",
                domain.Recipient("agency", agency_id),
                {
                    "code": c.code,
                    "agency_name": name,
                    "recipient_name": recipient_name,
                    "lead_name": _agency_name(lead) if lead else "",
                    "to_lead": to_lead,
                    "deemed_local": _local(c.deemed_at),
                    "legal_basis_event": c.legal_basis,
                },
            )

    async def on_apology_drafted(
        conn: asyncpg.Connection, env: Envelope, d: ApologyDrafted
    ) -> None:
        """The agency at fault is asked to confirm the drafted Form 04."""
        await n.notify(
            conn,
            env,
            "apology_draft",
            domain.Recipient("agency", d.agency_id),
            domain.apology_draft_context(d),
        )

    async def on_fee(conn: asyncpg.Connection, env: Envelope, f: FeeRequested) -> None:
        """The applicant is told what to pay; the clock waits for it."""
        r = await _receipt(conn, f.code)
        await n.notify(
            conn,
            env,
            "fee_requested",
            n.to_applicant(r.contact, r.channel, r.code),
            domain.fee_context(f, r),
        )

    async def on_apology_escalated(
        conn: asyncpg.Connection, env: Envelope, e: ApologyEscalated
    ) -> None:
        """An unsigned Form 04 at its latest moment: the head of the agency at fault and the
        head's superior are each told (the operators see it on the console's SLA board)."""
        await n.notify(
            conn,
            env,
            "apology_escalation",
            domain.Recipient("agency", e.agency_id),
            domain.apology_escalation_context(e, to_superior=False),
        )
        await n.notify(
            conn,
            env,
            "apology_escalation",
            domain.Recipient("agency", f"superior:{e.superior_agency_id or e.superior}"),
            domain.apology_escalation_context(e, to_superior=True),
        )

    async def on_apology_withdrawn(
        conn: asyncpg.Connection, env: Envelope, w: ApologyWithdrawn
    ) -> None:
        """The draft is no longer needed: the agency at fault is told."""
        await n.notify(
            conn,
            env,
            "apology_withdrawn",
            domain.Recipient("agency", w.agency_id),
            domain.apology_withdrawn_context(w),
        )

    async def on_apology_issued(conn: asyncpg.Connection, env: Envelope, a: ApologyIssued) -> None:
        """Form 04 to the applicant, by the channel the dossier came in."""
        r = await _receipt(conn, a.code)
        await n.notify(
            conn,
            env,
            "form04",
            n.to_applicant(r.contact, r.channel, r.code),
            forms.form04_context(a, r.contact),
        )

    async def on_result_ready(conn: asyncpg.Connection, env: Envelope, res: ResultReady) -> None:
        """The result is ready: the notice with the control slip (Form 05) appended."""
        r = await _receipt(conn, res.code)
        await n.notify(
            conn,
            env,
            "result_ready",
            n.to_applicant(r.contact, r.channel, r.code),
            forms.result_context(res, r.contact, r.office),
        )

    async def on_route_closed(conn: asyncpg.Connection, env: Envelope, c: RouteClosed) -> None:
        """A dossier ended without a result: stopped by the agency, the applicant gets the
        stop notice with the reason (Mẫu số 05 of Annex I, Circular 03/2025/TT-VPCP); withdrawn
        by the applicant, an acknowledgement. On every channel the applicant has."""
        if c.state not in (DossierStatus.STOPPED, DossierStatus.WITHDRAWN):
            return
        r = await _receipt(conn, c.code)
        stopped = c.state is DossierStatus.STOPPED
        await n.notify(
            conn,
            env,
            "stop_notice" if stopped else "withdrawal_notice",
            n.to_applicant(r.contact, r.channel, r.code),
            domain.stop_notice_context(c, r) if stopped else domain.withdrawal_context(c, r),
        )

    return {
        "dossier.received": on_received,
        "dossier.supplement_requested": on_supplement,
        "dossier.refused": on_refused,
        "consultation.requested": on_requested,
        "consultation.extended": on_extended,
        "consultation.reminded": on_reminded,
        "consultation.escalated": on_escalated,
        "consultation.deemed_consent": on_deemed,
        "routing.apology_drafted": on_apology_drafted,
        "routing.apology_issued": on_apology_issued,
        "routing.apology_withdrawn": on_apology_withdrawn,
        "routing.apology_escalated": on_apology_escalated,
        "routing.fee_requested": on_fee,
        "routing.result_ready": on_result_ready,
        "routing.route_closed": on_route_closed,
    }


def timer_handlers(n: Notifier) -> dict[str, TimerHandler]:
    return {DELIVER: _scheduled_before_0002}
