"""HTTP request and response payloads of every service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contracts.common import (
    MAX_DOCUMENTS,
    AgencyId,
    Applicant,
    Channel,
    DocumentCode,
    DocumentRef,
    LongParagraph,
    Paragraph,
    PortalStatus,
    Procedure,
    ProcedureCode,
    ReturnMethod,
)
from contracts.events import Decision
from contracts.text import Token

IDEMPOTENCY_KEY_PATTERN = r"[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?"
IDEMPOTENCY_KEY_MAX = 200
"""``Idempotency-Key``: 1 to 200 printable ASCII characters, no leading or trailing space."""


class SubmitDossier(BaseModel):
    """A dossier handed in at the one-stop desk (or by the portal on a citizen's behalf)."""

    model_config = ConfigDict(extra="forbid")
    procedure_code: ProcedureCode
    channel: Channel = Channel.IN_PERSON
    applicant: Applicant
    summary: Paragraph | None = None
    documents: list[DocumentRef] = Field(default_factory=list, max_length=MAX_DOCUMENTS)
    received_at: datetime | None = Field(
        default=None, description="When the desk received it; defaults to now"
    )
    receiving_agency: AgencyId | None = Field(
        default=None,
        description="Override the procedure's receiving agency: an agency of the catalogue",
    )
    backdate_reason: Paragraph | None = Field(
        default=None,
        description="Why received_at is in the past (heads only, bounded, audited)",
    )
    return_method: ReturnMethod | None = Field(
        default=None,
        description="How the applicant wants the result: at_desk, post or online; defaults"
        " to the channel the dossier came in by",
    )
    sets: int = Field(default=1, ge=1, le=100, description="Số lượng hồ sơ (bộ)")
    submitted_at: datetime | None = Field(
        default=None,
        description="When the applicant submitted online (NgayNopHoSo), before the desk"
        " accepted it; kept apart from received_at",
    )
    handling_unit: Paragraph | None = Field(
        default=None, description="The unit the portal names as handling it (DonViXuLy)"
    )


class DossierAccepted(BaseModel):
    """Answer to a submission: the national code and what happened at receipt."""

    code: str
    status: PortalStatus
    outcome: str = Field(description="received | supplement_requested | refused")
    received_at: datetime
    appointment_at: datetime | None
    appointment_local: str | None = Field(description="Appointment in Asia/Ho_Chi_Minh")
    missing_documents: list[str] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    lookup_code: str | None = Field(
        default=None,
        description="The applicant's secret for this dossier (also on Form 01/02/03); given"
        " once, not on an idempotent replay",
    )


class SupplementDossier(BaseModel):
    model_config = ConfigDict(extra="forbid")
    documents: list[DocumentRef] = Field(min_length=1, max_length=MAX_DOCUMENTS)
    supplemented_at: datetime | None = None


class RequestSupplement(BaseModel):
    """An officer's one request to supplement during processing."""

    model_config = ConfigDict(extra="forbid")
    missing: list[DocumentCode] = Field(
        min_length=1, max_length=MAX_DOCUMENTS, description="Document codes still needed"
    )
    reasons: dict[DocumentCode, Paragraph] = Field(
        default_factory=dict,
        max_length=MAX_DOCUMENTS,
        description="Why each document is needed or must be completed (Form 02), by code",
    )
    note: Paragraph | None = None


class EndDossier(BaseModel):
    """A withdrawal by the applicant or a stop by the agency (a stop needs the reason)."""

    model_config = ConfigDict(extra="forbid")
    reason: Paragraph | None = None


class TimelineEntry(BaseModel):
    event_id: UUID
    type: str
    occurred_at: datetime
    producer: str
    data: dict[str, Any]


class RedactedApplicant(BaseModel):
    """The applicant as shown to callers who do not need personal data: masked."""

    name: str
    object_type: int
    id_number: str
    phone: str | None = None
    email: str | None = None
    address: str | None = None
    birth_date: str | None = None


class DossierView(BaseModel):
    code: str
    procedure_code: str
    procedure_version: int
    procedure_name: str
    channel: Channel
    applicant: Applicant | RedactedApplicant
    redacted: bool = Field(default=False, description="Personal data masked for this caller")
    status: PortalStatus
    outcome: str
    received_at: datetime
    appointment_at: datetime | None
    documents: list[DocumentRef]
    supplement_requests: int = Field(description="Requests during processing (the law allows 1)")
    supplement_violations: int = Field(
        default=0, description="Requests past the one allowed: each counts the dossier late"
    )
    submitted_at: datetime | None = Field(
        default=None, description="When first handed in, if before the complete receipt"
    )
    return_method: ReturnMethod = ReturnMethod.AT_DESK
    paused_since: datetime | None
    timeline: list[TimelineEntry]


class ProcedureList(BaseModel):
    items: list[Procedure]


class ConsultationView(BaseModel):
    id: UUID
    dossier_code: str
    lead_agency: str
    agency_id: str
    agency_name: str
    template_id: str
    template_version: int
    subject: str
    status: str
    requested_at: datetime
    due_at: datetime
    seconds_left: int | None = None
    decision: Decision | None = None
    outcome: str | None = None
    legal_basis: str | None = None
    escalation_step: int = 0
    body_text: str | None = None


class ReplyRequest(BaseModel):
    """An agency's reply to an opinion request, signed over its canonical content."""

    model_config = ConfigDict(extra="forbid")
    decision: Decision
    conditions: LongParagraph | None = None
    reasons: LongParagraph | None = None
    signer: Annotated[str, Token(r"[\x21-\x7e]*", 200, "a key id of printable ASCII")] = Field(
        default="", description="Key id of the signer"
    )
    nonce: Annotated[str, Token(r"[\x21-\x7e]*", 100, "a nonce of printable ASCII")] = ""
    signature: Annotated[str, Token(r"[A-Za-z0-9+/_=-]*", 400, "base64")] = Field(
        default="", description="base64 Ed25519 signature"
    )


class NotificationView(BaseModel):
    id: UUID
    dossier_code: str
    kind: str
    channel: str
    recipient: str
    subject: str
    status: str = Field(description="pending | sending | sent | failed")
    created_at: datetime
    sent_at: datetime | None
    body_text: str
    attempts: int = Field(default=0, description="Delivery attempts so far")
    last_error: str | None = Field(
        default=None, description="Why the last attempt failed, or why it was given up"
    )


class FieldError(BaseModel):
    field: str
    reason: str
    type: str | None = None


class Problem(BaseModel):
    """An error answer: what went wrong and, for bad input, which fields."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)
