"""What to tell whom, rendered from versioned form templates. No I/O but reading forms."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, StrictUndefined, Template
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts.common import Applicant, Channel, Office, ReturnMethod, SupplementStage
from contracts.events import DossierReceived, DossierRefused, SupplementRequested
from contracts.text import email_problem, forbidden_character
from services.runtime.calendar import format_local

FORMS_DIR = Path(__file__).parent / "forms"
NOTIFICATION_NS = uuid.UUID("a4d6c1f0-5b0e-4e8e-bf43-1f6b7d2c9e30")


class FormVersion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = Field(ge=1)
    effective_from: date
    legal_basis: str
    subject: str
    text: str
    html: str


class Form(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    name: str
    versions: tuple[FormVersion, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Rendered:
    kind: str
    version: int
    legal_basis: str
    subject: str
    text: str
    html: str


_text_env = Environment(undefined=StrictUndefined, autoescape=False, trim_blocks=True)
_html_env = Environment(undefined=StrictUndefined, autoescape=True, trim_blocks=True)


class FormBook:
    """Every form and message template, by kind, each kind versioned by effective date."""

    def __init__(self, forms: list[Form]) -> None:
        self.forms = {f.kind: f for f in forms}
        self._compiled: dict[tuple[str, int], tuple[Template, Template, Template]] = {}

    @classmethod
    def load(cls, directory: Path = FORMS_DIR) -> FormBook:
        forms = []
        for path in sorted(directory.glob("*.yaml")):
            try:
                forms.append(Form.model_validate(yaml.safe_load(path.read_text("utf-8"))))
            except ValidationError as exc:
                e = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in e["loc"])
                raise ValueError(f"{path.name}: field {where}: {e['msg']}") from exc
        return cls(forms)

    def in_force(self, kind: str, on: date) -> FormVersion:
        versions = [v for v in self.forms[kind].versions if v.effective_from <= on]
        if not versions:
            raise LookupError(f"no version of form {kind} in force on {on}")
        return max(versions, key=lambda v: v.version)

    def render(self, kind: str, on: date, context: dict[str, Any]) -> Rendered:
        v = self.in_force(kind, on)
        compiled = self._compiled.get((kind, v.version))
        if compiled is None:  # compiling costs far more than rendering: once per version
            compiled = (
                _text_env.from_string(v.subject),
                _text_env.from_string(v.text),
                _html_env.from_string(v.html),
            )
            self._compiled[(kind, v.version)] = compiled
        subject, text, html = compiled
        ctx = {**context, "legal_basis": v.legal_basis}
        return Rendered(
            kind=kind,
            version=v.version,
            legal_basis=v.legal_basis,
            subject=subject.render(**ctx).strip(),
            text=text.render(**ctx),
            html=html.render(**ctx),
        )


@dataclass(frozen=True)
class Recipient:
    channel: str  # email | desk | post | agency
    address: str


def applicant_recipient(applicant: Applicant, channel: Channel) -> Recipient:
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


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


# --- what Forms 01-03 print ---------------------------------------------------------------
# The templates (forms/*.yaml) hold the legal wording; these build the values that fill
# its blanks, with the paper form's dotted blank where an older event lacks the datum.

BLANK = "……"
"""What the paper form shows where nothing is filled in."""
DESK = "Bộ phận tiếp nhận và trả kết quả"
DEFAULT_MISSING_REASON = "Hồ sơ chưa có thành phần này theo quy định của thủ tục hành chính"
"""Form 02 line for an older event that lists missing documents without reasons."""


def moment(t: datetime | None) -> str:
    """A time as the forms write it, in Asia/Ho_Chi_Minh: "09 giờ 30 phút, ngày 10 tháng 06
    năm 2025"; the dotted blank when unknown."""
    return format_local(t, "%H giờ %M phút, ngày %d tháng %m năm %Y") or BLANK


def place_and_date(place: str | None, t: datetime) -> str:
    """The line under the national motto: "<place>, ngày dd tháng mm năm yyyy"."""
    day = format_local(t, "ngày %d tháng %m năm %Y")
    return f"{place or BLANK}, {day}"


def office_view(office: Office | None, agency_name: str) -> dict[str, Any]:
    """Header and desk of a form: the parent body (cơ quan chủ quản), the agency, its desk
    (omitted from the header when the agency is the desk itself, e.g. a service centre)."""
    if office is None:
        return {
            "parent": BLANK,
            "agency": agency_name,
            "desk_line": DESK,
            "desk_name": agency_name,
            "place": BLANK,
            "phone": BLANK,
        }
    desk = office.desk or DESK
    return {
        "parent": office.parent_name,
        "agency": office.name,
        "desk_line": None if desk == office.name else desk,
        "desk_name": office.desk or office.name,
        "place": office.place,
        "phone": office.phone or BLANK,
    }


def _applicant_view(a: Applicant) -> dict[str, str]:
    return {
        "name": a.name,
        "address": a.address or BLANK,
        "phone": a.phone or BLANK,
        "email": a.email or BLANK,
    }


def _request(procedure_name: str, summary: str | None) -> str:
    return f"{procedure_name} ({summary})" if summary else procedure_name


def _common(
    code: str,
    office: Office | None,
    agency_name: str,
    applicant: Applicant,
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
        "applicant": _applicant_view(applicant),
        "request": _request(procedure_name, summary),
        "lookup_code": lookup_code,
    }


def return_place(method: ReturnMethod, desk_name: str, address: str | None) -> str:
    """Item 6 of Form 01, "Đăng ký nhận kết quả tại": the channel the applicant chose."""
    if method is ReturnMethod.AT_DESK:
        return f"{method.label}, {desk_name}"
    if method is ReturnMethod.POST and address:
        return f"{method.label}: {address}"
    return method.label


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
