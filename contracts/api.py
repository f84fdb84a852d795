"""HTTP request and response payloads of every service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.common import (
    MAX_DOCUMENTS,
    AgencyId,
    Applicant,
    Channel,
    CommuneCode,
    DocumentCode,
    DocumentRef,
    DossierStatus,
    LongParagraph,
    Paragraph,
    PortalStatus,
    Procedure,
    ProcedureCode,
    ReturnMethod,
    StepKind,
    Timeliness,
)
from contracts.events import Decision, HandOver, Holder, ResultDecision, StepFault
from contracts.text import Text, Token

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
        description="Override the procedure's receiving agency: an agency of the catalogue"
        " or any agency with a one-stop desk",
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
    property_commune: CommuneCode | None = Field(
        default=None,
        description="The commune (ward) where the land, the building or the business seat"
        " lies, by its key in the agency book: where a property-bound procedure is decided",
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


class StatusChange(BaseModel):
    """One move of a dossier's status, with the portal's code (TrangThaiHoSo)."""

    at: datetime
    state: DossierStatus
    status: PortalStatus
    event_type: str
    event_id: UUID | None = None


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
    state: DossierStatus | None = Field(default=None, description="Where it is, in words")
    apologies: int = Field(default=0, description="Form 04 apologies issued")
    legal_appointment_at: datetime | None = Field(
        default=None,
        description="The appointment by law (moved only by time waiting for the applicant;"
        " an apology does not move it): what early / on time / late is measured against",
    )
    timeliness: Timeliness | None = Field(
        default=None,
        description="Once the result is ready: early, on time or late (routing's verdict)",
    )
    timeliness_label: str | None = Field(
        default=None, description="Trước hạn / Đúng hạn / Quá hạn, as Form 05 says it"
    )
    status_history: list[StatusChange] = Field(default_factory=list)
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
    channel: str = Field(description="email | sms | portal | desk | post | agency")
    recipient: str
    subject: str
    status: str = Field(
        description="queued | sending | sent (handed to the server or gateway) | delivered"
        " (the receiver confirmed: an SMS receipt, the portal holding it) | failed"
    )
    created_at: datetime
    sent_at: datetime | None
    body_text: str
    attempts: int = Field(default=0, description="Delivery attempts since it was queued")
    last_error: str | None = Field(
        default=None, description="Why the last attempt failed, or why it was given up"
    )
    delivered_at: datetime | None = Field(
        default=None, description="When the receiver confirmed it (the gateway's receipt time)"
    )
    failed_at: datetime | None = None
    message_id: str | None = Field(
        default=None,
        description="The channel's id of the message: the email Message-ID, the SMS"
        " gateway's id, the portal's MaThongBao (the notification id)",
    )
    resends: int = Field(default=0, description="Times an operator put it back in line")


class FieldError(BaseModel):
    field: str
    reason: str
    type: str | None = None


class Problem(BaseModel):
    """An error answer: what went wrong and, for bad input, which fields."""

    detail: str
    errors: list[FieldError] = Field(default_factory=list)


# --- routing: officers act on a dossier's route ------------------------------------------

ResultDocuments = Annotated[list[DocumentRef], Field(max_length=MAX_DOCUMENTS)]
DepartmentCode = Annotated[
    str, Token(r"[A-Z0-9][A-Z0-9_-]*", 40, "a department code of the agency registry")
]


class TakeStep(BaseModel):
    """An officer takes the dossier in hand at its current step."""

    model_config = ConfigDict(extra="forbid")
    note: Paragraph | None = None


class CompleteStep(BaseModel):
    """An officer ends a step (assign, appraise or a part of the work) with what it
    produced; the dossier goes on to the next step."""

    model_config = ConfigDict(extra="forbid")
    result: Paragraph | None = Field(default=None, description="What the step produced")
    documents: ResultDocuments = Field(default_factory=list)
    note: Paragraph | None = None


class HandOverRequest(BaseModel):
    """Hand the dossier to another department (or person) of the same agency within its
    step; the next step's agency gets it by completing the step."""

    model_config = ConfigDict(extra="forbid")
    to_department: DepartmentCode
    to_person: Annotated[str, Text(200, min_length=2)] | None = None
    note: Paragraph | None = None


class DecideDossier(BaseModel):
    """The decision at the approval step: approve with the result documents, or refuse with
    the reasons."""

    model_config = ConfigDict(extra="forbid")
    decision: ResultDecision
    documents: ResultDocuments = Field(default_factory=list)
    reasons: list[Paragraph] = Field(default_factory=list, max_length=20)


class RequestFee(BaseModel):
    """The applicant must pay before the work goes on: the clock pauses."""

    model_config = ConfigDict(extra="forbid")
    amount_vnd: int | None = Field(default=None, ge=0, le=10**13)
    note: Paragraph | None = None


class FeePaid(BaseModel):
    """The payment arrived: the clock runs again from ``paid_at`` (default now)."""

    model_config = ConfigDict(extra="forbid")
    paid_at: datetime | None = None


class MarkResultReady(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Paragraph | None = None


class ReturnResult(BaseModel):
    """The result handed to the applicant: at the desk, by post or online."""

    model_config = ConfigDict(extra="forbid")
    method: ReturnMethod
    note: Paragraph | None = None


class ConfirmApology(BaseModel):
    """The head of the agency at fault signs its Form 04: the reason in the agency's words,
    the letter's number, the new appointment and the signer's name (Circular 03/2025/TT-VPCP,
    Form 04: signed by the head; Decree 30/2020/NĐ-CP, Annex I: "Số:" and the signer's full
    name). The draft's proposed appointment is a suggestion: the head states the date."""

    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Text(2000, min_length=3, multiline=True)] = Field(
        description="Why the dossier is late, in the agency's words"
    )
    appointment_at: datetime = Field(
        description="The new appointment (later than the one it replaces, within a year)"
    )
    number: Annotated[str, Text(60, min_length=1)] = Field(
        description="Số: the agency's number of the letter, e.g. 15/PXL-UBND"
    )
    signer_name: Annotated[str, Text(200, min_length=2)] | None = Field(
        default=None, description="The head's full name as signed; defaults to the token's name"
    )


class StepView(BaseModel):
    order: int
    kind: StepKind
    action: str
    agency_id: str
    agency_name: str
    department: str | None
    department_name: str | None
    role: str
    duration: str = Field(description="The budget as the law words it, e.g. 02 ngày làm việc")
    status: str = Field(description="pending | active | done | skipped")
    started_at: datetime | None
    deadline_at: datetime | None
    holder: Holder | None
    completed_at: datetime | None
    timeliness: Timeliness | None
    late_working_seconds: int = 0
    overdue: bool = False
    result: str | None = None
    documents: list[DocumentRef] = Field(default_factory=list)


class ApologyView(BaseModel):
    id: UUID
    number: int
    status: str = Field(description="drafted | issued | withdrawn")
    agency_id: str
    agency_name: str
    reason: str
    previous_appointment_at: datetime
    proposed_appointment_at: datetime
    appointment_at: datetime | None
    latest_issue_at: datetime
    drafted_at: datetime
    issued_at: datetime | None
    automatic: bool
    after_latest_moment: bool
    repeat: bool
    escalated_at: datetime | None = Field(
        default=None, description="When the unsigned draft was escalated to the head's superior"
    )
    document_number: str | None = Field(default=None, description="Số: of the signed letter")
    signer_name: str | None = None
    signer_title: str | None = None


class RouteView(BaseModel):
    """A dossier's route: where it is, every step and hand-over, whose steps were late."""

    code: str
    procedure_code: str
    procedure_version: int
    procedure_name: str
    receiving_agency: str
    lead_agency: str
    state: DossierStatus
    status: PortalStatus
    current_step: int | None
    received_at: datetime
    appointment_at: datetime = Field(description="The appointment the applicant holds")
    legal_appointment_at: datetime = Field(description="At receipt, moved only by pauses")
    paused_since: datetime | None
    paused_working_seconds: int
    supplement_requests: int
    supplement_violations: int
    decision: ResultDecision | None
    ready_at: datetime | None
    returned_at: datetime | None
    timeliness: Timeliness | None
    steps: list[StepView]
    handovers: list[HandOver]
    apologies: list[ApologyView]
    faults: list[StepFault]
    consult: list[dict[str, Any]] = Field(default_factory=list)


class WorkItem(BaseModel):
    """A dossier waiting for the calling agency at one of its steps."""

    code: str
    procedure_name: str
    step: int
    action: str
    kind: StepKind
    department: str | None
    holder: str | None
    started_at: datetime | None
    deadline_at: datetime | None
    overdue: bool
    state: DossierStatus


# --- intake: the dossier's sync to the national portal -------------------------------------


class PortalSyncView(BaseModel):
    """Whether the portal holds the dossier as we do, and what is on its way."""

    code: str
    status: str = Field(
        description="synced (the portal holds every update) | pending (updates on their way)"
        " | failing (the portal refuses or cannot be reached: see last_error) | off (no"
        " portal configured) | not_synced (nothing sent yet)"
    )
    pending: int = 0
    failed: int = 0
    sent: int = 0
    attempts: int | None = Field(default=None, description="Of the update now on its way")
    last_error: str | None = None
    portal_known: bool = Field(default=False, description="The portal holds the dossier")
    portal_status: int | None = Field(default=None, description="TrangThaiHoSo it last took")
    synced_at: datetime | None = None
    checked_at: datetime | None = Field(
        default=None, description="When the reconciliation last compared the portal's copy"
    )
    record: dict[str, Any] | None = Field(
        default=None,
        description="The record as we would send it now (DongBoHoSoMC); not for operators",
    )


# --- notification: operators resend; the SMS gateway's receipts; what was refused -----------


class ResendNotification(BaseModel):
    """An operator puts a failed (or delivered but disputed) notification back in line."""

    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Text(500, min_length=3)] = Field(
        description="Why it is sent again, e.g. the applicant says it never came"
    )


class SmsReceipt(BaseModel):
    """A delivery receipt the SMS gateway posts to ``/v1/sms/receipts``, signed with
    ``X-Signature``: hex HMAC-SHA256 of the exact body bytes."""

    model_config = ConfigDict(extra="ignore")
    id: Annotated[str, Token(r"[\x21-\x7e]+", 200, "the gateway's message id")]
    client_ref: Annotated[str, Token(r"[\x21-\x7e]+", 100, "our notification id")]
    to: Annotated[str, Token(r"\+?[0-9]{8,15}", 20, "the phone number it went to")]
    status: Literal["delivered", "failed"]
    reason: Annotated[str, Text(500)] | None = None
    at: AwareDatetime


class SmsReceiptAccepted(BaseModel):
    status: Literal["accepted"] = "accepted"
    outcome: str = Field(
        description="applied | waiting (the send is not marked yet) | ignored (already"
        " settled) | duplicate"
    )


class InboundRejectView(BaseModel):
    """Something from outside that was not accepted, as operators see it: the body as
    text with phone numbers and email addresses masked (the bytes stay in the table)."""

    id: int
    source: str = Field(description="sms-receipt | sms-gateway | portal")
    reason: str
    field: str | None
    status: int | None = Field(description="The HTTP status we answered or were answered")
    headers: dict[str, str]
    body: str
    size: int
    sha256: str
    truncated: bool
    at: datetime
