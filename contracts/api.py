"""HTTP request and response payloads of every service."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contracts.common import Applicant, Channel, DocumentRef, PortalStatus, Procedure
from contracts.envelope import NFCStr
from contracts.events import Decision


class SubmitDossier(BaseModel):
    """A dossier handed in at the one-stop desk (or by the portal on a citizen's behalf)."""

    model_config = ConfigDict(extra="forbid")
    procedure_code: str = Field(min_length=1, max_length=40)
    channel: Channel = Channel.IN_PERSON
    applicant: Applicant
    summary: NFCStr | None = Field(default=None, max_length=2000)
    documents: list[DocumentRef] = Field(default_factory=list, max_length=200)
    received_at: datetime | None = Field(
        default=None, description="When the desk received it; defaults to now"
    )
    receiving_agency: str | None = Field(
        default=None, description="Override the procedure's receiving agency"
    )
    backdate_reason: NFCStr | None = Field(
        default=None,
        max_length=500,
        description="Why received_at is in the past (heads only, bounded, audited)",
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
    documents: list[DocumentRef] = Field(min_length=1, max_length=200)
    supplemented_at: datetime | None = None


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
    supplement_requests: int
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
    conditions: NFCStr | None = Field(default=None, max_length=5000)
    reasons: NFCStr | None = Field(default=None, max_length=5000)
    signer: str = Field(default="", max_length=200, description="Key id of the signer")
    nonce: str = Field(default="", max_length=100)
    signature: str = Field(default="", max_length=400, description="base64 Ed25519 signature")


class NotificationView(BaseModel):
    id: UUID
    dossier_code: str
    kind: str
    channel: str
    recipient: str
    subject: str
    status: str
    created_at: datetime
    sent_at: datetime | None
    body_text: str


class FieldError(BaseModel):
    field: str
    reason: str
    type: str | None = None


class Problem(BaseModel):
    """An error answer: what went wrong and, for bad input, which fields."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)
