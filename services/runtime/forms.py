"""Forms as shared data: versioned templates and the contexts that fill them.

The legal wording lives in ``contracts/forms/*.yaml`` (one form or message per file, each
versioned by the date it takes effect); every service renders it the same way: routing
renders Form 05 from its hand-over log, intake Form 06 (the register), notification
Forms 01-04, the result notice and Form 05 with it. Text is rendered with autoescape off,
HTML with autoescape on, so whatever an applicant or an officer typed stays text.

The context builders here are pure (no I/O): they turn contract events into the values a
template prints, times in Asia/Ho_Chi_Minh as the forms write them, the paper form's dotted
blank where a datum is unknown.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

import yaml
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from jinja2 import Environment, StrictUndefined, Template
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field, ValidationError

import contracts
from contracts.common import ObjectType, Office, ReturnMethod, Timeliness
from contracts.events import ApologyIssued, HandOver, ResultDecision, ResultReady
from services.runtime.calendar import format_local

FORMS_DIR = Path(contracts.__file__).parent / "forms"
"""Where the templates live: contract data, the same for every service."""


class FormVersion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = Field(ge=1)
    effective_from: date
    legal_basis: str
    title: str | None = Field(
        default=None,
        description="The form's title in this version, given to its templates as ``title``"
        " (a title that changed while the wording did not: one template, two titles)",
    )
    subject: str
    text: str
    html: str
    sms: str | None = Field(
        default=None,
        description="A short text for SMS and other channels that carry no form: the dossier"
        " code and the one date or fact that matters, never the lookup code. Rendered like"
        " ``text``, then folded onto one line",
    )


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
    sms: str | None = None
    """The form's short text (``FormVersion.sms``), one line; None where it has none."""


@dataclass(frozen=True)
class Embedded:
    """Another form printed inside this one (Form 05 appended to the result notice): the
    book renders it in the version in force on the same day, as text into the text and as
    its own escaped HTML into the HTML."""

    kind: str
    context: Mapping[str, Any]


def _short_time(value: str | datetime | None) -> str:
    """A time given as ISO text (what contexts carry as ``*_iso``) or a datetime, in
    Asia/Ho_Chi_Minh as a short message writes it: "17:00 ngày 30/11/2026"."""
    if value is None:
        return BLANK
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    return format_local(t) or BLANK


def _short_day(value: str | datetime | None) -> str:
    """The local day of a time, as a short message writes it: "30/11/2026"."""
    if value is None:
        return BLANK
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    return format_local(t, "%d/%m/%Y") or BLANK


_text_env = Environment(undefined=StrictUndefined, autoescape=False, trim_blocks=True)
_html_env = Environment(undefined=StrictUndefined, autoescape=True, trim_blocks=True)
for _env in (_text_env, _html_env):
    _env.filters["short_time"] = _short_time
    _env.filters["short_day"] = _short_day


def one_line(value: str) -> str:
    """Every run of white space (line breaks included) as one space, trimmed."""
    return " ".join(value.split())


class FormBook:
    """Every form and message template, by kind, each kind versioned by effective date."""

    def __init__(self, forms: Iterable[Form]) -> None:
        self.forms: dict[str, Form] = {}
        for f in forms:
            if f.kind in self.forms:
                raise ValueError(f"form {f.kind} is defined twice")
            self.forms[f.kind] = f
        self._compiled: dict[
            tuple[str, int], tuple[Template, Template, Template, Template | None]
        ] = {}

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

    def render(self, kind: str, on: date, context: Mapping[str, Any]) -> Rendered:
        v = self.in_force(kind, on)
        compiled = self._compiled.get((kind, v.version))
        if compiled is None:  # compiling costs far more than rendering: once per version
            compiled = (
                _text_env.from_string(v.subject),
                _text_env.from_string(v.text),
                _html_env.from_string(v.html),
                _text_env.from_string(v.sms) if v.sms is not None else None,
            )
            self._compiled[(kind, v.version)] = compiled
        subject, text, html, sms = compiled
        own = {"legal_basis": v.legal_basis, "title": v.title}
        text_ctx: dict[str, Any] = dict(own)
        html_ctx: dict[str, Any] = dict(own)
        for key, value in context.items():
            if isinstance(value, Embedded):
                inner = self.render(value.kind, on, value.context)
                text_ctx[key], html_ctx[key] = inner.text, Markup(inner.html)
            else:
                text_ctx[key] = html_ctx[key] = value
        return Rendered(
            kind=kind,
            version=v.version,
            legal_basis=v.legal_basis,
            subject=nfc(subject.render(**text_ctx).strip()),
            text=nfc(text.render(**text_ctx)),
            html=nfc(html.render(**html_ctx)),
            sms=nfc(one_line(sms.render(**text_ctx))) if sms is not None else None,
        )


# --- what every form prints ----------------------------------------------------------------

BLANK = "……"
"""What the paper form shows where nothing is filled in."""
DESK = "Bộ phận tiếp nhận và trả kết quả"


def nfc(value: str) -> str:
    """Vietnamese text in one spelling (NFC), whatever composed it."""
    return unicodedata.normalize("NFC", value)


def moment(t: datetime | None) -> str:
    """A time as the forms write it, in Asia/Ho_Chi_Minh: "09 giờ 30 phút, ngày 10 tháng 06
    năm 2025"; the dotted blank when unknown."""
    return format_local(t, "%H giờ %M phút, ngày %d tháng %m năm %Y") or BLANK


def day_of(t: datetime | None) -> str:
    """The local day as the forms write it: "ngày 10 tháng 06 năm 2025"."""
    return format_local(t, "ngày %d tháng %m năm %Y") or BLANK


def short_moment(t: datetime | None) -> str | None:
    """A time in a register's column, in Asia/Ho_Chi_Minh: "09:30 ngày 10/06/2025"."""
    return format_local(t)


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def place_and_date(place: str | None, t: datetime) -> str:
    """The line under the national motto: "<place>, ngày dd tháng mm năm yyyy"."""
    return f"{place or BLANK}, {day_of(t)}"


def office_view(office: Office | None, agency_name: str) -> dict[str, Any]:
    """Header and desk of a form: the parent body (cơ quan chủ quản), the agency, its desk
    (omitted from the header when the agency is the desk itself, e.g. a service centre)."""
    if office is None:
        return {
            "parent": BLANK,
            "agency": nfc(agency_name),
            "desk_line": DESK,
            "desk_name": nfc(agency_name),
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


class Addressee(Protocol):
    """What a notice needs of its applicant: whom to address and where to send it.
    ``contracts.common.Applicant`` is one; so is what notification keeps of it."""

    @property
    def name(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...


ORGANISATION_YOU = "Quý tổ chức"
"""How a notice speaks to an organisation or business (object type 2) in its sentences,
where it speaks to a citizen as "Ông/Bà"."""


def applicant_view(a: Addressee) -> dict[str, str]:
    """The applicant as a form prints them; ``phone`` only where the object has one.

    ``addressee`` is the "Kính gửi" line and how a sentence names them: a citizen "Ông/Bà
    <name>", an organisation (object type 2, ``object_type`` where the object has one) by
    its own name ("Công ty TNHH ..."); ``you`` is how a sentence speaks to them: "Ông/Bà",
    or "Quý tổ chức"."""
    org = int(getattr(a, "object_type", None) or ObjectType.CITIZEN) == ObjectType.ORGANISATION
    return {
        "name": a.name,
        "addressee": a.name if org else f"Ông/Bà {a.name}",
        "you": ORGANISATION_YOU if org else "Ông/Bà",
        "address": a.address or BLANK,
        "phone": getattr(a, "phone", None) or BLANK,
        "email": a.email or BLANK,
    }


def return_place(method: ReturnMethod, desk_name: str, address: str | None) -> str:
    """Where the result goes back: Form 01 item 6, "Đăng ký nhận kết quả tại"."""
    if method is ReturnMethod.AT_DESK:
        return f"{method.label}, {desk_name}"
    if method is ReturnMethod.POST and address:
        return f"{method.label}: {address}"
    return method.label


# --- Form 04: the apology with a new appointment --------------------------------------------


def form04_context(a: ApologyIssued, applicant: Addressee) -> dict[str, Any]:
    """Form 04 from the agency at fault to the applicant: its header, the receipt and the
    request, the old appointment, the reason, the apology and the new appointment."""
    office = office_view(a.office, a.agency_name)
    return {
        "code": a.code,
        "office": office,
        "number": a.document_number or BLANK,  # Số: as the head signed it
        "place_date": place_and_date(office["place"], a.issued_at),
        "applicant": applicant_view(applicant),
        "procedure_name": a.procedure_name,
        "received_date": format_local(a.received_at, "%d tháng %m năm %Y"),
        "received_iso": a.received_at.isoformat(),
        "previous_local": moment(a.previous_appointment_at),
        "previous_iso": a.previous_appointment_at.isoformat(),
        "appointment_local": moment(a.appointment_at),
        "appointment_iso": a.appointment_at.isoformat(),
        "reason": a.reason,
        "apology_number": a.number,
        "repeat": a.repeat or a.number > 1,
        "signer": a.signer_name
        or (a.issued_by.person if a.issued_by and a.issued_by.person else None),
        "signer_title": a.signer_title,
        "automatic": a.automatic,
        "late_issue": a.after_latest_moment,
        "issued_local": moment(a.issued_at),
    }


# --- Form 05: the control slip --------------------------------------------------------------


@dataclass(frozen=True)
class ControlSlip:
    """What Form 05 prints: the dossier, who decides and who helps, every hand-over."""

    code: str
    procedure_name: str
    office: Office | None
    receiving_agency_name: str
    lead_agency_name: str
    coordinating: tuple[str, ...]
    handovers: Sequence[HandOver]
    printed_at: datetime


def _handover_note(h: HandOver) -> str:
    """The note column: the step the receiver now holds, its deadline, the officer's note."""
    parts = [f"Bước {h.step}: {h.step_action}"]
    if h.step_deadline_at is not None:
        parts.append(f"hạn {moment(h.step_deadline_at)}")
    note = "; ".join(parts)
    return f"{note}. {h.note}" if h.note else note


def handover_line(h: HandOver) -> dict[str, Any]:
    """One line of Form 05, as both the text and the HTML print it."""
    return {
        "seq": h.seq,
        "giver": h.giver.label(),
        "receiver": h.receiver.label(),
        "at_local": moment(h.at),
        "at_iso": h.at.isoformat(),
        "result": h.giver_timeliness.label if h.giver_timeliness is not None else None,
        "giver_deadline_local": (
            moment(h.giver_deadline_at) if h.giver_deadline_at is not None else None
        ),
        "note": nfc(_handover_note(h)),
    }


def form05_context(slip: ControlSlip) -> dict[str, Any]:
    """Form 05 at ``slip.printed_at``: one line per hand-over, in the order they happened."""
    office = office_view(slip.office, slip.receiving_agency_name)
    lines = [handover_line(h) for h in sorted(slip.handovers, key=lambda h: h.seq)]
    return {
        "code": slip.code,
        "office": office,
        "procedure_name": slip.procedure_name,
        "lead_agency": slip.lead_agency_name,
        "coordinating": "; ".join(slip.coordinating) if slip.coordinating else BLANK,
        "handovers": lines,
        "blank": BLANK,
        "printed_local": moment(slip.printed_at),
        "printed_iso": slip.printed_at.isoformat(),
    }


# --- Form 06: the register ------------------------------------------------------------------


@dataclass(frozen=True)
class RegisterRow:
    """One line of the register (Sổ theo dõi hồ sơ); None where the datum is not known
    (yet: a dossier not transferred, no result back, not returned)."""

    code: str
    procedure_name: str
    register_number: int | None = None
    sets: int | None = None
    applicant_name: str | None = None
    applicant_contact: str | None = None
    lead_agency_name: str | None = None
    received_at: datetime | None = None
    appointment_at: datetime | None = None
    transferred_at: datetime | None = None
    result_received_at: datetime | None = None
    returned_at: datetime | None = None
    note: str | None = None


def register_line(r: RegisterRow) -> dict[str, Any]:
    return {
        "number": str(r.register_number) if r.register_number is not None else None,
        "code": r.code,
        "procedure_name": nfc(r.procedure_name),
        "sets": f"{r.sets:02d}" if r.sets is not None else None,
        "applicant": nfc(r.applicant_name) if r.applicant_name else None,
        "contact": nfc(r.applicant_contact) if r.applicant_contact else None,
        "lead_agency": nfc(r.lead_agency_name) if r.lead_agency_name else None,
        "received": short_moment(r.received_at),
        "appointment": short_moment(r.appointment_at),
        "transferred": short_moment(r.transferred_at),
        "result_received": short_moment(r.result_received_at),
        "returned": short_moment(r.returned_at),
        "note": nfc(r.note) if r.note else None,
    }


def form06_context(
    office: Office | None, agency_name: str, day: date, rows: Sequence[RegisterRow]
) -> dict[str, Any]:
    """The register of one receiving agency for one day, rows in the order given (the
    book's order: by register number at receipt)."""
    return {
        "office": office_view(office, agency_name),
        "day": f"{day:%d} tháng {day:%m} năm {day:%Y}",
        "day_iso": day.isoformat(),
        "rows": [register_line(r) for r in rows],
        "count": len(rows),
        "blank": BLANK,
    }


# --- the result notice ----------------------------------------------------------------------


def result_context(
    r: ResultReady, applicant: Addressee, office: Office | None = None
) -> dict[str, Any]:
    """The notice that the result is ready: what it is (the documents, or the reasons of a
    refusal), where and how it comes back, whether it was early, on time or late, and the
    control slip (Form 05) of its hand-overs appended. ``office`` is the receiving desk's,
    as the dossier's receipt named it (the event does not carry it)."""
    desk = office_view(office, r.receiving_agency_name)
    slip = ControlSlip(
        code=r.code,
        procedure_name=r.procedure_name,
        office=office,
        receiving_agency_name=r.receiving_agency_name,
        lead_agency_name=r.lead_agency_name,
        coordinating=tuple(r.coordinating),
        handovers=r.handovers,
        printed_at=r.ready_at,
    )
    return {
        "code": r.code,
        "office": desk,
        "applicant": applicant_view(applicant),
        "procedure_name": r.procedure_name,
        "approved": r.decision is ResultDecision.APPROVED,
        "documents": [{"name": d.name or d.code, "copies": d.copies} for d in r.documents],
        "reasons": list(r.reasons),
        "lead_agency": r.lead_agency_name,
        "return_place": return_place(r.return_method, desk["desk_name"], applicant.address),
        "at_desk": r.return_method is ReturnMethod.AT_DESK,
        "received_local": moment(r.received_at),
        "ready_local": moment(r.ready_at),
        "ready_iso": r.ready_at.isoformat(),
        "appointment_local": moment(r.appointment_at),
        "appointment_iso": r.appointment_at.isoformat(),
        "legal_appointment_local": moment(r.legal_appointment_at),
        "rescheduled": r.appointment_at != r.legal_appointment_at,
        "timeliness": r.timeliness.label,
        "late": r.timeliness is Timeliness.LATE,
        "faults": [
            {
                "agency": f.label(),
                "step": f.step,
                "action": f.action,
                "deadline_local": moment(f.deadline_at),
                "reason": f.reason,
            }
            for f in r.faults
        ],
        "apologies": r.apologies,
        "slip": Embedded("form05", form05_context(slip)),
    }


# --- serving a rendered form ------------------------------------------------------------------


def html_page(title: str, body_html: str) -> str:
    """A whole HTML page around a form's HTML (already escaped by its template)."""
    return (
        '<!doctype html><html lang="vi"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head><body>{body_html}</body></html>"
    )


def response(rendered: Rendered, fmt: str) -> Response:
    """A rendered form as text/plain, or as an HTML page when ``fmt`` is "html"."""
    if fmt == "html":
        return HTMLResponse(html_page(rendered.subject, rendered.html))
    return PlainTextResponse(rendered.text)
