"""What to tell whom, rendered from versioned form templates. No I/O.

The templates and what every service shares of them (``FormBook``, the helpers, the
contexts of Forms 04-06 and of the result notice) are in ``services.runtime.forms``; the
templates themselves in ``contracts/forms``. This module keeps what only notification
says: Forms 01-03 at the desk, the notices to agencies (an opinion request, a drafted
apology to confirm), to whom and by which channels each notice goes, and how a delivery
receipt proves it comes from the SMS gateway.

Channels: ``email`` (SMTP), ``sms`` (an HTTP gateway, delivery receipts by webhook),
``portal`` (a message on the National Public Service Portal), and the notices people hand
over: ``desk`` (at the one-stop desk), ``post`` (by public post) and ``agency`` (an
agency's notice, handed over in the system).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from contracts.common import Channel, ObjectType, Office, SupplementStage
from contracts.events import (
    ApologyDrafted,
    ApologyEscalated,
    ApologyWithdrawn,
    ConsultationRequested,
    DossierReceived,
    DossierRefused,
    FeeRequested,
    RouteClosed,
    SupplementRequested,
)
from contracts.text import email_problem, forbidden_character
from services.runtime.auth import mask
from services.runtime.forms import (
    BLANK,
    Addressee,
    applicant_view,
    day_of,
    moment,
    office_view,
    place_and_date,
    return_place,
)

NOTIFICATION_NS = uuid.UUID("a4d6c1f0-5b0e-4e8e-bf43-1f6b7d2c9e30")

EMAIL, SMS, PORTAL = "email", "sms", "portal"
DESK, POST, AGENCY = "desk", "post", "agency"
ELECTRONIC = (EMAIL, SMS, PORTAL)
"""The channels a machine delivers, in the order an applicant's notices are made."""
HANDED_OVER = frozenset({DESK, POST, AGENCY})
"""Notices people hand over: marked sent when queued, no server involved."""
CHANNELS = frozenset({*ELECTRONIC, *HANDED_OVER})
TO_APPLICANT = frozenset({*ELECTRONIC, DESK, POST})
"""The channels of notices addressed to the applicant. An ``agency`` notice (an opinion
request, a reminder, an escalation, a drafted or withdrawn apology) is the agencies' own
business: the applicant reading with the lookup code never sees it."""


def addressed_to_applicant(channel: str) -> bool:
    """Whether a notice on ``channel`` is one the applicant may read (``TO_APPLICANT``)."""
    return channel in TO_APPLICANT


@dataclass(frozen=True)
class Recipient:
    channel: str  # email | sms | portal | desk | post | agency
    address: str
    """The email address, the phone number, the portal account, the postal address, the
    applicant's name at the desk, or the agency."""


class Reachable(Addressee, Protocol):
    """An applicant as far as reaching them goes: an addressee with a phone and a portal
    account (``contracts.common.Applicant`` and ``Contact`` are both)."""

    @property
    def phone(self) -> str | None: ...
    @property
    def portal_account(self) -> str | None: ...


def applicant_recipients(
    applicant: Reachable, channel: Channel, available: Collection[str], code: str
) -> list[Recipient]:
    """Every channel the applicant has among those configured (``available``): email if an
    email, SMS if a phone, the portal if a portal account (the portal addresses a message to
    the account, ``MaDoiTuong``: an online dossier without one has nobody to read it there).
    The desk, or the post for a dossier that came by post with an address, only when none
    of those is there: then people hand the notice over."""
    out: list[Recipient] = []
    if EMAIL in available and applicant.email:
        out.append(Recipient(EMAIL, applicant.email))
    if SMS in available and applicant.phone:
        out.append(Recipient(SMS, applicant.phone))
    if PORTAL in available and applicant.portal_account:
        out.append(Recipient(PORTAL, applicant.portal_account))
    if out:
        return out
    if channel is Channel.POST and applicant.address:
        return [Recipient(POST, applicant.address)]
    return [Recipient(DESK, applicant.name)]


def applicant_recipient(applicant: Addressee, channel: Channel) -> Recipient:
    """The one recipient of a notice where email is the only electronic channel."""
    reach = Contact(name=applicant.name, email=applicant.email, address=applicant.address)
    return applicant_recipients(reach, channel, (EMAIL,), "")[0]


_SMS_NUMBER = re.compile(r"0[0-9]{9,10}")
"""What the gateway takes: a Vietnamese number as ``contracts.common.Phone`` writes it."""


def address_problem(recipient: Recipient) -> str | None:
    """Why a recipient cannot be reached on its channel (an email address by strict syntax,
    no DNS; a phone number not written as the gateway takes it), or None."""
    if recipient.channel == EMAIL:
        return email_problem(recipient.address)
    if recipient.channel == SMS and not _SMS_NUMBER.fullmatch(recipient.address):
        return "not a Vietnamese phone number (0 and 9 or 10 digits)"
    return None


def unreachable_reason(recipient: Recipient) -> str | None:
    """Why a recipient cannot be reached, as a refusal a person reads says it (in
    Vietnamese, naming what is wrong), or None; ``address_problem`` gives the technical
    reason kept with the notification."""
    if address_problem(recipient) is None:
        return None
    if recipient.channel == EMAIL:
        return "địa chỉ thư điện tử của người nhận không đúng định dạng, không gửi thư được"
    return "số điện thoại của người nhận không phải số Việt Nam (số 0 và 9 hoặc 10 chữ số)"


def printable(value: str) -> str:
    """``value`` with the characters a text column must not hold written as escapes."""
    if forbidden_character(value) is None:
        return value
    return "".join(f"\\u{ord(c):04x}" if forbidden_character(c) is not None else c for c in value)[
        :1000
    ]


def _unstorable(c: str) -> bool:
    return c == "\x00" or 0xD800 <= ord(c) <= 0xDFFF


def _storable_text(value: str) -> str:
    if not any(_unstorable(c) for c in value):
        return value
    return "".join(f"\\u{ord(c):04x}" if _unstorable(c) else c for c in value)


def storable(value: Any) -> Any:
    """A JSON value from outside as a ``jsonb`` column takes it, otherwise unchanged: NUL
    and lone surrogates (which PostgreSQL refuses) written as escapes."""
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, dict):
        return {_storable_text(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def notification_id(
    event_id: uuid.UUID, kind: str, recipient: str, channel: str = EMAIL
) -> uuid.UUID:
    """Deterministic, so a redelivered event finds the notification it already made. The
    SMS and portal ones name their channel (a portal account may be a phone number); the
    others keep the form they had before those channels, so an event redelivered across an
    upgrade still finds its notification."""
    if channel in (SMS, PORTAL):
        return uuid.uuid5(NOTIFICATION_NS, f"{event_id}/{kind}/{channel}:{recipient}")
    return uuid.uuid5(NOTIFICATION_NS, f"{event_id}/{kind}/{recipient}")


# --- delivery receipts from the SMS gateway -------------------------------------------------


def sign(secret: str, body: bytes) -> str:
    """``X-Signature`` of a receipt: hex HMAC-SHA256 of the exact body bytes."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_problem(secret: str, body: bytes, header: str | None) -> str | None:
    """Why ``header`` does not prove that the gateway sent ``body``, or None. Compared in
    constant time; a secret that is not configured proves nothing."""
    if not secret:
        return "receipts cannot be verified: no webhook secret is configured"
    if header is None or not header.strip():
        return "missing"
    given = header.strip().lower()
    if given.startswith("sha256="):
        given = given[7:]
    if not re.fullmatch(r"[0-9a-f]{64}", given):
        return "not a hex HMAC-SHA256"
    if not hmac.compare_digest(given, sign(secret, body)):
        return "does not match the body"
    return None


_PHONE_LIKE = re.compile(r"(?<![0-9])(?:\+?84|0)[0-9]{8,10}(?![0-9])")
_EMAIL_LIKE = re.compile(r"[^\s\"'<>@,;:]+@[^\s\"'<>@,;:]+")


def masked_text(body: bytes, limit: int = 64 * 1024) -> str:
    """A stored body as operators may read it: text (bytes that are not UTF-8 shown as
    replacement characters), phone numbers and email addresses masked, at most ``limit``
    characters. The bytes themselves stay in the table for whoever may read them."""
    text = body[: limit * 4].decode("utf-8", errors="replace")[:limit]
    text = _PHONE_LIKE.sub(lambda m: str(mask(m.group(0))), text)
    return _EMAIL_LIKE.sub(lambda m: str(mask(m.group(0))), text)


# --- what notification keeps of a dossier ---------------------------------------------------


@dataclass(frozen=True)
class Contact:
    """What a notice needs of its applicant, and no more: the name it is addressed to and
    where it is sent (email, phone for SMS, portal account, or the postal address for a
    dossier that came by post). No ID number or birth date: no later notice prints them."""

    name: str
    email: str | None = None
    address: str | None = None
    phone: str | None = None
    portal_account: str | None = None
    object_type: int = int(ObjectType.CITIZEN)
    """1 a citizen, 2 an organisation (LoaiDoiTuong): how a notice addresses them."""

    _KEYS = ("name", "email", "address", "phone", "portal_account")

    @classmethod
    def of(cls, a: Reachable) -> Contact:
        return cls(
            name=a.name,
            email=a.email,
            address=a.address,
            phone=a.phone,
            portal_account=a.portal_account,
            object_type=int(getattr(a, "object_type", None) or ObjectType.CITIZEN),
        )

    def as_json(self) -> dict[str, str | int]:
        out: dict[str, str | int] = {
            k: v for k in self._KEYS if (v := getattr(self, k)) is not None
        }
        if self.object_type != ObjectType.CITIZEN:  # a citizen's receipt keeps its old form
            out["object_type"] = self.object_type
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Contact:
        return cls(
            name=data["name"],
            email=data.get("email"),
            address=data.get("address"),
            phone=data.get("phone"),
            portal_account=data.get("portal_account"),
            object_type=int(data.get("object_type", ObjectType.CITIZEN)),
        )


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
    ctx.update(reasons=list(r.reasons), officer=r.refused_by)  # Form 03 has no contact line
    return ctx


# --- the notice to the agency that must confirm an apology ------------------------------------

CONFIRM_PATH = "/v1/routes/{code}/apologies/{apology_id}/confirm"
"""Routing's endpoint that confirms a drafted apology (POST, a head of the agency)."""


def consultation_request_context(c: ConsultationRequested, lead_agency_name: str) -> dict[str, Any]:
    """An opinion request to the asked agency: what about, by when, how to answer (in
    words: on the system, a digitally signed reply; never a path or a service's name)."""
    return {
        "code": c.code,
        "agency_name": c.agency_name,
        "lead_agency": lead_agency_name,
        "subject": c.subject,
        "number": c.number,
        "requested_local": moment(c.requested_at),
        "due_local": moment(c.due_at),
        "due_iso": c.due_at.isoformat(),
        "deadline_basis": c.legal_basis,
        "deemed_basis": c.deemed_basis,
    }


def working_time_text(seconds: int | None, day_seconds: int = 8 * 3600) -> str | None:
    """Working time as an official writes it: "01 ngày làm việc 03 giờ làm việc", a
    working day of 8 hours (Labour Code 2019, Art. 105(1): normal hours no more than 8 a
    day); "dưới 01 giờ làm việc" under an hour; None when unknown."""
    if seconds is None:
        return None
    days, rest = divmod(max(0, seconds), day_seconds)
    hours = rest // 3600
    parts = [f"{days:02d} ngày làm việc"] if days else []
    if hours:
        parts.append(f"{hours:02d} giờ làm việc")
    return " ".join(parts) or "dưới 01 giờ làm việc"


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


def apology_escalation_context(e: ApologyEscalated, *, to_superior: bool) -> dict[str, Any]:
    """An unsigned Form 04 past its latest moment: to the head of the agency at fault, and
    to the head's superior, who is asked to see it signed."""
    return {
        "code": e.code,
        "agency_name": e.agency_name,
        "head": e.head,
        "superior": e.superior,
        "to_superior": to_superior,
        "to_name": e.superior if to_superior else e.head,
        "reason": e.reason,
        "why": e.why,
        "after_latest": e.after_latest_moment,
        "appointment_local": moment(e.appointment_at),
        "appointment_iso": e.appointment_at.isoformat(),
        "latest_local": moment(e.latest_issue_at),
        "latest_iso": e.latest_issue_at.isoformat(),
        "escalated_local": moment(e.escalated_at),
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


# --- a dossier that ended without a result: stopped by the agency, withdrawn by the applicant ---


def _closed_common(c: RouteClosed, r: Receipt) -> dict[str, Any]:
    """What both notices print: the applicant, the request, when it was received. Taken
    from the event where routing gave it, else from the dossier's receipt (older events)."""
    received_at = c.received_at or r.received_at
    return {
        "code": c.code,
        "applicant": applicant_view(r.contact),
        "procedure_name": c.procedure_name or r.procedure_name,
        "received_date": day_of(received_at).removeprefix("ngày "),
        "received_iso": received_at.isoformat(),
        "reason": c.reason,
    }


def stop_notice_context(c: RouteClosed, r: Receipt) -> dict[str, Any]:
    """The notice that processing stopped (Mẫu số 05 of Annex I, Circular 03/2025/TT-VPCP,
    "Thông báo dừng giải quyết hồ sơ"): from the agency that decides the dossier (its header
    as routing named it; the receiving office when an older event does not say), with the
    reason and the moment of the stop."""
    receiving = r.office.name if r.office else BLANK
    agency = c.agency_name or receiving
    office = office_view(c.office or (None if c.agency_name else r.office), agency)
    return {
        **_closed_common(c, r),
        "office": office,
        "number": BLANK,  # the agency's document number (Số: …/…) is not in the event
        "place_date": place_and_date(office["place"], c.closed_at),
        "receiving_agency": receiving,
        "reason": c.reason or BLANK,
        "stopped_local": moment(c.closed_at),
        "stopped_iso": c.closed_at.isoformat(),
    }


def withdrawal_context(c: RouteClosed, r: Receipt) -> dict[str, Any]:
    """The acknowledgement of a withdrawal by the applicant."""
    return {
        **_closed_common(c, r),
        "agency_name": c.agency_name or (r.office.name if r.office else BLANK),
        "withdrawn_local": moment(c.closed_at),
        "withdrawn_iso": c.closed_at.isoformat(),
    }
