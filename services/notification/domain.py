"""What to tell whom, rendered from versioned form templates. No I/O.

The templates and what every service shares of them (``FormBook``, the helpers, the
contexts of Forms 04-06 and of the result notice) are in ``services.runtime.forms``; the
templates themselves in ``contracts/forms``. This module keeps what only notification
says: Forms 01-03 at the desk, the notice to the agency that must confirm an apology, and
to whom and by which channel each notice goes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.common import Channel, Office, SupplementStage
from contracts.events import (
    ApologyDrafted,
    ApologyWithdrawn,
    DossierReceived,
    DossierRefused,
    FeeRequested,
    SupplementRequested,
)
from contracts.text import email_problem, forbidden_character
from services.runtime.forms import (
    BLANK,
    Addressee,
    applicant_view,
    moment,
    office_view,
    place_and_date,
    return_place,
)

NOTIFICATION_NS = uuid.UUID("a4d6c1f0-5b0e-4e8e-bf43-1f6b7d2c9e30")


@dataclass(frozen=True)
class Recipient:
    channel: str  # email | desk | post | agency
    address: str


def applicant_recipient(applicant: Addressee, channel: Channel) -> Recipient:
    """Notices go back by the channel the dossier came in; email when we have one."""
    if applicant.email:
        return Recipient("email", applicant.email)
    if channel is Channel.POST and applicant.address:
        return Recipient("post", applicant.address)
    return Recipient("desk", applicant.name)


def address_problem(recipient: Recipient) -> str | None:
    """Why an email recipient cannot be mailed (strict syntax, no DNS), or None."""
    if recipient.channel != "email":
        return None
    return email_problem(recipient.address)


def printable(value: str) -> str:
    """``value`` with the characters a text column must not hold written as escapes."""
    if forbidden_character(value) is None:
        return value
    return "".join(f"\\u{ord(c):04x}" if forbidden_character(c) is not None else c for c in value)[
        :1000
    ]


def notification_id(event_id: uuid.UUID, kind: str, recipient: str) -> uuid.UUID:
    """Deterministic, so a redelivered event finds the notification it already made."""
    return uuid.uuid5(NOTIFICATION_NS, f"{event_id}/{kind}/{recipient}")


# --- what notification keeps of a dossier ---------------------------------------------------


@dataclass(frozen=True)
class Contact:
    """What a notice needs of its applicant, and no more: the name it is addressed to and
    where it is sent (email, or the postal address for a dossier that came by post). No ID
    number, birth date or phone: no later notice prints them."""

    name: str
    email: str | None = None
    address: str | None = None

    @classmethod
    def of(cls, a: Addressee) -> Contact:
        return cls(name=a.name, email=a.email, address=a.address)

    def as_json(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (("name", self.name), ("email", self.email), ("address", self.address))
            if v is not None
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Contact:
        return cls(name=data["name"], email=data.get("email"), address=data.get("address"))


@dataclass(frozen=True)
class Receipt:
    """A dossier as its receipt (``dossier.received``) left it for later notices: who to
    tell, by which channel, the procedure, when, and the receiving office for headers."""

    code: str
    contact: Contact
    channel: Channel
    procedure_name: str
    received_at: datetime
    office: Office | None


# --- what Forms 01-03 print ---------------------------------------------------------------
# The templates (contracts/forms/*.yaml) hold the legal wording; these build the values that fill
# its blanks, with the paper form's dotted blank where an older event lacks the datum.

DEFAULT_MISSING_REASON = "Hồ sơ chưa có thành phần này theo quy định của thủ tục hành chính"
"""Form 02 line for an older event that lists missing documents without reasons."""


def _request(procedure_name: str, summary: str | None) -> str:
    return f"{procedure_name} ({summary})" if summary else procedure_name


def _common(
    code: str,
    office: Office | None,
    agency_name: str,
    applicant: Addressee,
    procedure_name: str,
    summary: str | None,
    at: datetime,
    lookup_code: str | None,
) -> dict[str, Any]:
    o = office_view(office, agency_name)
    return {
        "code": code,
        "office": o,
        "number": BLANK,  # events carry no document number (Số: …/…) yet
        "place_date": place_and_date(o["place"], at),
        "applicant": applicant_view(applicant),
        "request": _request(procedure_name, summary),
        "lookup_code": lookup_code,
    }


def form01_context(d: DossierReceived, lookup_code: str | None = None) -> dict[str, Any]:
    ctx = _common(
        d.code,
        d.office,
        d.receiving_agency_name,
        d.applicant,
        d.procedure_name,
        d.summary,
        d.received_at,
        lookup_code,
    )
    ctx.update(
        documents=[{"name": doc.name or doc.code, "copies": doc.copies} for doc in d.documents],
        sets=f"{d.sets:02d}",
        processing_time=d.processing_time.describe(),
        received_local=moment(d.received_at),
        received_iso=d.received_at.isoformat(),
        appointment_local=moment(d.appointment_at),
        appointment_iso=d.appointment_at.isoformat(),
        return_place=return_place(d.return_method, ctx["office"]["desk_name"], d.applicant.address),
        register_book=d.register_book or BLANK,
        register_number=str(d.register_number) if d.register_number else BLANK,
        received_by=d.received_by,
    )
    return ctx


def form02_context(s: SupplementRequested, lookup_code: str | None = None) -> dict[str, Any]:
    ctx = _common(
        s.code,
        s.office,
        s.receiving_agency_name,
        s.applicant,
        s.procedure_name,
        s.summary,
        s.requested_at,
        lookup_code,
    )
    items = [{"name": i.name, "reason": i.reason} for i in s.items] or [
        {"name": m.name, "reason": DEFAULT_MISSING_REASON} for m in s.missing
    ]
    ctx.update(
        items=items,
        note=s.note,
        paused=s.stage is SupplementStage.PROCESSING,
        request_number=s.request_number,
        requested_local=moment(s.requested_at),
        requested_iso=s.requested_at.isoformat(),
        contact=s.requested_by or ctx["office"]["desk_name"],
        officer=s.requested_by,
    )
    return ctx


def form03_context(r: DossierRefused, lookup_code: str | None = None) -> dict[str, Any]:
    ctx = _common(
        r.code,
        r.office,
        r.receiving_agency_name,
        r.applicant,
        r.procedure_name,
        r.summary,
        r.refused_at,
        lookup_code,
    )
    ctx.update(
        reasons=list(r.reasons),
        contact=r.refused_by or ctx["office"]["desk_name"],
        officer=r.refused_by,
    )
    return ctx


# --- the notice to the agency that must confirm an apology ------------------------------------

CONFIRM_PATH = "/v1/routes/{code}/apologies/{apology_id}/confirm"
"""Routing's endpoint that confirms a drafted apology (POST, a head of the agency)."""


def fee_context(f: FeeRequested, r: Receipt) -> dict[str, Any]:
    """A fee or financial obligation to pay before the work goes on."""
    return {
        "code": f.code,
        "applicant": applicant_view(r.contact),
        "procedure_name": r.procedure_name,
        "amount": f"{f.amount_vnd:,}".replace(",", ".") if f.amount_vnd is not None else None,
        "note": f.note,
        "agency_name": f.requested_by.agency_name,
        "requested_local": moment(f.requested_at),
        "requested_iso": f.requested_at.isoformat(),
    }


def apology_withdrawn_context(w: ApologyWithdrawn) -> dict[str, Any]:
    return {
        "code": w.code,
        "reason": w.reason,
        "withdrawn_local": moment(w.withdrawn_at),
        "withdrawn_iso": w.withdrawn_at.isoformat(),
    }


def apology_draft_context(d: ApologyDrafted) -> dict[str, Any]:
    """A Form 04 was drafted for the agency at fault: the proposed new appointment, the
    latest moment it goes out unconfirmed, and how to confirm it."""
    return {
        "code": d.code,
        "agency_name": d.agency_name,
        "department_name": d.department_name,
        "apology_number": d.number,
        "repeat": d.number > 1,
        "reason": d.reason,
        "previous_local": moment(d.previous_appointment_at),
        "proposed_local": moment(d.proposed_appointment_at),
        "proposed_iso": d.proposed_appointment_at.isoformat(),
        "latest_local": moment(d.latest_issue_at),
        "latest_iso": d.latest_issue_at.isoformat(),
        "drafted_local": moment(d.drafted_at),
        "confirm_path": CONFIRM_PATH.format(code=d.code, apology_id=d.apology_id),
    }
