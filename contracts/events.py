"""Every event's data model, registered by type.

Event types are ``<family>.<name>``; the family names the topic (see ``topics``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contracts.common import (
    ActingRole,
    AgencyId,
    Applicant,
    Channel,
    CommuneCode,
    DocumentRef,
    DossierCode,
    DossierStatus,
    Duration,
    MissingItem,
    Office,
    PortalStatus,
    Procedure,
    RequiredDocument,
    ReturnMethod,
    StepKind,
    SupplementStage,
    Timeliness,
)
from contracts.envelope import EventPayload, NFCStr, UtcDateTime

# --- catalogue -----------------------------------------------------------------------------


class ProcedurePublished(EventPayload):
    """A procedure version entered the catalogue; consumers keep their own copy."""

    event_type = "procedure.published"
    procedure: Procedure


# --- intake: a dossier at the one-stop desk ------------------------------------------------


class DossierReceived(EventPayload):
    """A complete, valid dossier was received (Form 01 issued)."""

    event_type = "dossier.received"
    code: DossierCode
    procedure_code: str
    procedure_version: int
    procedure_name: NFCStr
    channel: Channel
    applicant: Applicant
    summary: NFCStr | None = None
    documents: tuple[DocumentRef, ...]
    receiving_agency: AgencyId
    receiving_agency_name: NFCStr
    lead_agency: AgencyId
    processing_time: Duration
    received_at: UtcDateTime
    clock_starts_at: UtcDateTime
    appointment_at: UtcDateTime
    status: PortalStatus = PortalStatus.RECEIVED
    lookup_code_sealed: str | None = Field(
        default=None, description="The applicant's lookup code, sealed for notification"
    )
    submitted_at: UtcDateTime | None = Field(
        default=None, description="When the applicant submitted (NgayNopHoSo), if not at receipt"
    )
    handling_unit: NFCStr | None = Field(
        default=None, description="The unit the portal names as handling it (DonViXuLy)"
    )
    received_by: NFCStr | None = Field(default=None, description="The officer who received it")
    sets: int = Field(default=1, ge=1, le=100, description="Số lượng hồ sơ (bộ)")
    register_book: str | None = Field(default=None, description="Sổ theo dõi hồ sơ: quyển số")
    register_number: int | None = Field(default=None, ge=1, description="Số thứ tự in the book")
    return_method: ReturnMethod = ReturnMethod.AT_DESK
    office: Office | None = Field(default=None, description="The receiving office, for forms")
    property_commune: CommuneCode | None = Field(
        default=None,
        description="The commune where the land, the building or the business seat lies"
        " (routing plans a property-bound procedure there)",
    )


class SupplementRequested(EventPayload):
    """Form 02: one written request to supplement, listing exactly what is missing."""

    event_type = "dossier.supplement_requested"
    code: DossierCode
    procedure_code: str
    procedure_name: NFCStr
    channel: Channel
    applicant: Applicant
    receiving_agency: AgencyId
    receiving_agency_name: NFCStr
    missing: tuple[RequiredDocument, ...]
    note: NFCStr | None = None
    requested_at: UtcDateTime
    status: PortalStatus = PortalStatus.SUPPLEMENT_REQUESTED
    lookup_code_sealed: str | None = Field(
        default=None, description="At receipt only: the lookup code, sealed for notification"
    )
    stage: SupplementStage = SupplementStage.DESK
    items: tuple[MissingItem, ...] = Field(
        default=(), description="Each thing to supplement or complete, with its reason"
    )
    requested_by: NFCStr | None = Field(default=None, description="The officer who asks")
    request_number: int = Field(
        default=0, ge=0, description="During processing: 1 for the one request allowed, 2+ after"
    )
    violation: bool = Field(
        default=False,
        description="A second request during processing: recorded, and the dossier counts late",
    )
    summary: NFCStr | None = None
    office: Office | None = None


class DossierSupplemented(EventPayload):
    """The applicant handed in what was missing; the clock resumes."""

    event_type = "dossier.supplemented"
    code: DossierCode
    documents: tuple[DocumentRef, ...]
    supplemented_at: UtcDateTime
    paused_working_seconds: int = Field(ge=0)
    appointment_at: UtcDateTime


class DossierRefused(EventPayload):
    """Form 03: refusal with reasons."""

    event_type = "dossier.refused"
    code: DossierCode
    procedure_code: str
    procedure_name: NFCStr
    channel: Channel
    applicant: Applicant
    receiving_agency: AgencyId
    receiving_agency_name: NFCStr
    reasons: tuple[NFCStr, ...] = Field(min_length=1)
    refused_at: UtcDateTime
    status: PortalStatus = PortalStatus.NOT_RECEIVED
    lookup_code_sealed: str | None = Field(
        default=None, description="The applicant's lookup code, sealed for notification"
    )
    refused_by: NFCStr | None = Field(default=None, description="The officer who refuses")
    summary: NFCStr | None = None
    office: Office | None = None


class DossierWithdrawn(EventPayload):
    event_type = "dossier.withdrawn"
    code: DossierCode
    reason: NFCStr | None = None
    withdrawn_at: UtcDateTime
    status: PortalStatus = PortalStatus.WITHDRAWN


class DossierStopped(EventPayload):
    event_type = "dossier.stopped"
    code: DossierCode
    reason: NFCStr
    stopped_at: UtcDateTime
    status: PortalStatus = PortalStatus.STOPPED


# --- routing -------------------------------------------------------------------------------


class ConsultTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    agency_id: AgencyId
    agency_name: NFCStr
    template_id: str


class Holder(BaseModel):
    """Who holds a dossier at a moment: an agency, its department, the person (Form 05's
    giver and receiver)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agency_id: AgencyId
    agency_name: NFCStr
    department: str | None = None
    department_name: NFCStr | None = None
    person: NFCStr | None = Field(
        default=None, description="The person's name as forms print it, when one has acted"
    )
    person_id: str | None = Field(
        default=None, max_length=200, description="Who the person is (the token's subject)"
    )

    def label(self) -> str:
        """The holder as Form 05 names it: the department of the agency, or the agency."""
        where = where_in(self.agency_name, self.department_name)
        return f"{where} ({self.person})" if self.person else where


def where_in(agency_name: str, department_name: str | None) -> str:
    """A department of an agency as forms name it, the agency only once (the registry's
    department names often already say whose they are)."""
    if not department_name:
        return agency_name
    if agency_name in department_name:
        return department_name
    return f"{department_name} - {agency_name}"


class StepRef(BaseModel):
    """A step of a dossier's route as events name it: its place, kind, who acts, budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    order: int = Field(ge=1)
    kind: StepKind
    action: NFCStr
    agency_id: AgencyId
    agency_name: NFCStr
    department: str | None = None
    department_name: NFCStr | None = None
    role: ActingRole = ActingRole.OFFICER
    duration: Duration


class HandOver(BaseModel):
    """One line of Form 05 (Phiếu kiểm soát quá trình giải quyết hồ sơ): who handed the
    dossier to whom, when, for which step with which deadline, and how the giver's own
    step ended against its deadline."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    seq: int = Field(ge=1)
    giver: Holder
    receiver: Holder
    at: UtcDateTime
    step: int = Field(ge=1, description="The step the receiver now holds")
    step_action: NFCStr
    step_deadline_at: UtcDateTime | None = Field(
        default=None, description="When the receiver's step is due (none for the return)"
    )
    giver_step: int | None = Field(default=None, description="The step the giver finished")
    giver_deadline_at: UtcDateTime | None = None
    giver_timeliness: Timeliness | None = Field(
        default=None, description="How the giver's step ended: early, on time or late"
    )
    note: NFCStr | None = None


class StepFault(BaseModel):
    """A step that ended (or still runs) past its budget, and whose it was."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    step: int = Field(ge=1)
    action: NFCStr
    agency_id: AgencyId
    agency_name: NFCStr
    department: str | None = None
    department_name: NFCStr | None = None
    deadline_at: UtcDateTime
    late_working_seconds: int = Field(ge=0)
    reason: NFCStr = Field(description="Why it counts: past its budget, a second supplement")

    def label(self) -> str:
        return where_in(self.agency_name, self.department_name)


class DossierRouted(EventPayload):
    """The dossier reached its lead agency: its route of steps is planned, the desk's
    receipt step is done and the dossier is handed to the first step after it. ``consult``
    names the agencies whose opinions the route will ask (a round opens when the route
    reaches its consult step; at once when that is the first step after receipt)."""

    event_type = "routing.dossier_routed"
    code: DossierCode
    procedure_code: str
    procedure_version: int
    procedure_name: NFCStr
    lead_agency: AgencyId
    lead_agency_name: NFCStr
    consult: tuple[ConsultTarget, ...]
    appointment_at: UtcDateTime
    routed_at: UtcDateTime
    status: PortalStatus = PortalStatus.PROCESSING
    state: DossierStatus = DossierStatus.PROCESSING
    steps: tuple[StepRef, ...] = Field(default=(), description="The route, in order")
    handover: HandOver | None = Field(default=None, description="The desk's hand-over")
    step: StepRef | None = Field(default=None, description="The step the dossier is now at")
    step_deadline_at: UtcDateTime | None = None
    opens_round: bool = Field(
        default=True,
        description="Whether the round opens now (the first step after receipt consults);"
        " events before steps existed always opened it",
    )


class StepTaken(EventPayload):
    """A person of the step's agency took the dossier in hand."""

    event_type = "routing.step_taken"
    code: DossierCode
    step: StepRef
    by: Holder
    taken_at: UtcDateTime
    note: NFCStr | None = None


class StepCompleted(EventPayload):
    """A step ended; its timeliness is against its own budget."""

    event_type = "routing.step_completed"
    code: DossierCode
    step: StepRef
    started_at: UtcDateTime
    deadline_at: UtcDateTime
    completed_at: UtcDateTime
    timeliness: Timeliness
    late_working_seconds: int = Field(default=0, ge=0)
    by: Holder | None = Field(default=None, description="None when the step ended by itself")
    result: NFCStr | None = Field(default=None, description="What the step produced, in words")
    documents: tuple[DocumentRef, ...] = ()


class RoundToOpen(BaseModel):
    """What consultation needs to open a dossier's opinion round."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    procedure_name: NFCStr
    lead_agency: AgencyId
    lead_agency_name: NFCStr
    consult: tuple[ConsultTarget, ...] = Field(min_length=1)


class HandedOver(EventPayload):
    """The dossier changed hands: to the next step (of this or another agency), or to
    another department of the same agency within its step. ``round`` is set when the
    receiver's step is the opinion round, which opens now."""

    event_type = "routing.handed_over"
    code: DossierCode
    line: HandOver
    step: StepRef
    deadline_at: UtcDateTime
    round: RoundToOpen | None = None
    state: DossierStatus = DossierStatus.PROCESSING
    status: PortalStatus = PortalStatus.PROCESSING


class StepOverdue(EventPayload):
    """A step's deadline passed while it was still open: its agency is at fault."""

    event_type = "routing.step_overdue"
    code: DossierCode
    fault: StepFault
    detected_at: UtcDateTime


class ProcessingSupplementRequested(EventPayload):
    """The agency holding the dossier asked the applicant to supplement (Form 02 during
    processing): the clock pauses. The law allows one; a second is recorded and flagged,
    and the dossier counts late. Intake tells the applicant (``dossier.supplement_requested``)."""

    event_type = "routing.supplement_requested"
    code: DossierCode
    step: StepRef
    items: tuple[MissingItem, ...] = Field(min_length=1)
    note: NFCStr | None = None
    requested_by: Holder
    request_number: int = Field(ge=1)
    violation: bool = False
    requested_at: UtcDateTime
    state: DossierStatus = DossierStatus.WAITING_SUPPLEMENT
    status: PortalStatus = PortalStatus.SUPPLEMENT_REQUESTED


class FeeRequested(EventPayload):
    """The applicant must pay a fee or meet a financial obligation (e.g. land use levy)
    before the work goes on: the clock pauses until it is paid."""

    event_type = "routing.fee_requested"
    code: DossierCode
    step: StepRef
    amount_vnd: int | None = Field(default=None, ge=0, description="When the notice states it")
    note: NFCStr | None = None
    requested_by: Holder
    requested_at: UtcDateTime
    state: DossierStatus = DossierStatus.WAITING_FEE
    status: PortalStatus = PortalStatus.FEE_REQUESTED


class DossierResumed(EventPayload):
    """The applicant complied (supplemented, or paid): the clock runs again, the appointment
    and the open step's deadline moved by exactly the working time spent waiting."""

    event_type = "routing.dossier_resumed"
    code: DossierCode
    paused_at: UtcDateTime
    resumed_at: UtcDateTime
    paused_working_seconds: int = Field(ge=0)
    previous_appointment_at: UtcDateTime
    appointment_at: UtcDateTime
    legal_appointment_at: UtcDateTime | None = Field(
        default=None,
        description="The appointment in law, moved by the pause too (after an apology it"
        " differs from appointment_at); routing owns it",
    )
    step: StepRef
    step_deadline_at: UtcDateTime
    state: DossierStatus = DossierStatus.PROCESSING
    status: PortalStatus = PortalStatus.PROCESSING


class ResultDecision(StrEnum):
    APPROVED = "approved"
    REFUSED = "refused"


class DossierDecided(EventPayload):
    """The competent person decided: approved with the result documents, or refused with
    the reasons (the written refusal is then the result)."""

    event_type = "routing.dossier_decided"
    code: DossierCode
    decision: ResultDecision
    documents: tuple[DocumentRef, ...] = ()
    reasons: tuple[NFCStr, ...] = ()
    decided_by: Holder
    decided_at: UtcDateTime
    step: StepRef


class ResultReady(EventPayload):
    """The result is at the desk for the applicant: processing has ended, early, on time or
    late against the appointment (after the time spent waiting for the applicant), with the
    steps that were late and whose they were, and the hand-overs of Form 05."""

    event_type = "routing.result_ready"
    code: DossierCode
    procedure_code: str
    procedure_name: NFCStr
    decision: ResultDecision
    documents: tuple[DocumentRef, ...] = ()
    reasons: tuple[NFCStr, ...] = ()
    ready_at: UtcDateTime
    received_at: UtcDateTime
    appointment_at: UtcDateTime = Field(description="The appointment the applicant holds")
    legal_appointment_at: UtcDateTime = Field(
        description="The appointment by law: at receipt, moved only by time spent waiting"
    )
    timeliness: Timeliness
    faults: tuple[StepFault, ...] = ()
    apologies: int = Field(default=0, ge=0)
    return_method: ReturnMethod = ReturnMethod.AT_DESK
    receiving_agency: AgencyId
    receiving_agency_name: NFCStr
    lead_agency: AgencyId
    lead_agency_name: NFCStr
    coordinating: tuple[NFCStr, ...] = Field(
        default=(), description="The other agencies that worked on it or gave opinions"
    )
    handovers: tuple[HandOver, ...] = ()
    note: NFCStr | None = None
    state: DossierStatus = DossierStatus.RESULT_READY
    status: PortalStatus = PortalStatus.PROCESSED


class ResultReturned(EventPayload):
    """The result was handed to the applicant: the dossier ends."""

    event_type = "routing.result_returned"
    code: DossierCode
    method: ReturnMethod
    returned_at: UtcDateTime
    returned_by: Holder
    timeliness: Timeliness
    note: NFCStr | None = None
    state: DossierStatus = DossierStatus.RETURNED
    status: PortalStatus = PortalStatus.RESULT_RETURNED


class RouteClosed(EventPayload):
    """A withdrawal or a stop ended the route without a result: no step goes on."""

    event_type = "routing.route_closed"
    code: DossierCode
    state: DossierStatus
    reason: NFCStr | None = None
    at_step: int | None = Field(default=None, description="The step it was at")
    closed_at: UtcDateTime
    withdrawn_apologies: int = Field(default=0, ge=0)
    status: PortalStatus
    # What the applicant's notice of a stop (Mẫu số 05 of Annex I, Circular 03/2025/TT-VPCP,
    # "Thông báo dừng giải quyết hồ sơ") or of a withdrawal prints; optional: older events
    # lack them, and notification then falls back on the dossier's receipt.
    agency_id: AgencyId | None = Field(
        default=None, description="The agency that decides the dossier (the lead agency)"
    )
    agency_name: NFCStr | None = None
    office: Office | None = Field(
        default=None, description="How forms name the deciding agency (header of the notice)"
    )
    procedure_name: NFCStr | None = None
    received_at: UtcDateTime | None = None


class ApologyDrafted(EventPayload):
    """The dossier cannot finish by its appointment (or a step went overdue too close to it
    to wait): a Form 04 is drafted for the agency at fault, whose head signs it. Never sent
    unsigned: unconfirmed at ``latest_issue_at``, it is escalated (``apology_escalated``)."""

    event_type = "routing.apology_drafted"
    apology_id: UUID
    code: DossierCode
    number: int = Field(ge=1, description="1 for the first apology of the dossier")
    agency_id: AgencyId
    agency_name: NFCStr
    department: str | None = None
    department_name: NFCStr | None = None
    reason: NFCStr
    previous_appointment_at: UtcDateTime
    proposed_appointment_at: UtcDateTime
    latest_issue_at: UtcDateTime = Field(
        description="The latest legal moment to send it: the close of the working day before"
        " the appointment it replaces"
    )
    drafted_at: UtcDateTime
    after_latest_moment: bool = Field(
        default=False, description="Drafted only after its latest legal moment had passed"
    )


class ApologyEscalated(EventPayload):
    """A drafted Form 04 is not signed by its latest legal moment (or was drafted after it):
    the head of the agency at fault, the head's superior and the operators are told, and the
    dossier is flagged. The letter itself is never sent unsigned."""

    event_type = "routing.apology_escalated"
    apology_id: UUID
    code: DossierCode
    number: int = Field(ge=1)
    agency_id: AgencyId
    agency_name: NFCStr
    head: NFCStr = Field(description="The head of the agency at fault, as addressed")
    superior: NFCStr = Field(description="Whom the head answers to, as addressed")
    superior_agency_id: AgencyId | None = None
    reason: NFCStr = Field(description="Why the dossier is late (the draft's reason)")
    why: NFCStr = Field(description="Why it is escalated, in words")
    appointment_at: UtcDateTime = Field(description="The appointment that will be missed")
    latest_issue_at: UtcDateTime
    drafted_at: UtcDateTime
    escalated_at: UtcDateTime
    after_latest_moment: bool = False


class ApologyIssued(EventPayload):
    """Form 04 (Phiếu xin lỗi và hẹn lại ngày trả kết quả) goes to the applicant; the new
    appointment replaces the old one everywhere. A second apology of a dossier is flagged."""

    event_type = "routing.apology_issued"
    apology_id: UUID
    code: DossierCode
    number: int = Field(ge=1)
    repeat: bool = Field(default=False, description="Not the dossier's first apology")
    agency_id: AgencyId
    agency_name: NFCStr
    reason: NFCStr
    previous_appointment_at: UtcDateTime
    appointment_at: UtcDateTime
    issued_at: UtcDateTime
    issued_by: Holder | None = Field(
        default=None, description="The head who signed it (events before 2026-12 may lack it)"
    )
    automatic: bool = Field(
        default=False,
        description="Issued unconfirmed at the latest legal moment (earlier versions only:"
        " a Form 04 is now always signed by the head)",
    )
    document_number: NFCStr | None = Field(
        default=None, max_length=60, description="Số: the agency's number of the letter"
    )
    signer_name: NFCStr | None = Field(default=None, max_length=200)
    signer_title: NFCStr | None = Field(
        default=None, max_length=300, description="The signer's office, e.g. Chủ tịch UBND..."
    )
    after_latest_moment: bool = Field(
        default=False,
        description="Issued later than one working day before the appointment it replaces",
    )
    procedure_name: NFCStr
    received_at: UtcDateTime
    office: Office | None = Field(default=None, description="The agency at fault, for the form")


class ApologyWithdrawn(EventPayload):
    """A draft apology no longer needed: the dossier caught up before it was issued."""

    event_type = "routing.apology_withdrawn"
    apology_id: UUID
    code: DossierCode
    agency_id: AgencyId = Field(description="The agency the draft was for")
    reason: NFCStr
    withdrawn_at: UtcDateTime


class DossierAdvanced(EventPayload):
    """Every opinion is in (or deemed given): the route moves on from its consult step."""

    event_type = "routing.dossier_advanced"
    code: DossierCode
    lead_agency: AgencyId
    step: str
    advanced_at: UtcDateTime


# --- consultation --------------------------------------------------------------------------


class Decision(StrEnum):
    AGREE = "agree"
    DISAGREE = "disagree"
    AGREE_WITH_CONDITIONS = "agree_with_conditions"


class Outcome(StrEnum):
    REPLIED = "replied"
    DEEMED_CONSENT = "deemed_consent"
    CANCELLED = "cancelled"


class ConsultationRequested(EventPayload):
    """An opinion request was opened and sent to an agency."""

    event_type = "consultation.requested"
    request_id: UUID
    code: DossierCode
    lead_agency: AgencyId
    agency_id: AgencyId
    agency_name: NFCStr
    template_id: str
    template_version: int
    subject: NFCStr
    requested_at: UtcDateTime
    due_at: UtcDateTime
    number: str | None = Field(
        default=None,
        max_length=80,
        description="The letter's number and symbol (Decree 30/2020/NĐ-CP, Art. 15(1),(3))",
    )
    legal_basis: NFCStr | None = Field(
        default=None, description="The text and article of the reply period, when one sets it"
    )
    deemed_basis: NFCStr | None = Field(
        default=None,
        description="Where silence counts as consent at the deadline: the text and article",
    )


class ConsultationReminded(EventPayload):
    event_type = "consultation.reminded"
    request_id: UUID
    code: DossierCode
    agency_id: AgencyId
    due_at: UtcDateTime
    reminded_at: UtcDateTime
    deemed_basis: NFCStr | None = Field(
        default=None,
        description="Where silence counts as consent at the deadline: the text and article",
    )


class ConsultationEscalated(EventPayload):
    event_type = "consultation.escalated"
    request_id: UUID
    code: DossierCode
    agency_id: AgencyId
    step: int = Field(ge=1)
    notify_role: str
    notify_name: NFCStr
    ask: NFCStr
    escalated_at: UtcDateTime
    due_at: UtcDateTime | None = Field(default=None, description="The deadline missed")
    overdue_working_seconds: int | None = Field(
        default=None, ge=0, description="Working time past the deadline when the rung fired"
    )


class ConsultationReplied(EventPayload):
    event_type = "consultation.replied"
    request_id: UUID
    code: DossierCode
    agency_id: AgencyId
    decision: Decision
    conditions: NFCStr | None = None
    reasons: NFCStr | None = None
    signer: str
    replied_at: UtcDateTime


class ConsultationDeemedConsent(EventPayload):
    event_type = "consultation.deemed_consent"
    request_id: UUID
    code: DossierCode
    agency_id: AgencyId
    lead_agency: AgencyId | None = Field(
        default=None, description="The lead agency, told as the asked agency is"
    )
    legal_basis: NFCStr
    deemed_at: UtcDateTime


class ConsultationLapsed(EventPayload):
    """The final deadline passed with no legal basis for deemed consent: keep waiting."""

    event_type = "consultation.lapsed"
    request_id: UUID
    code: DossierCode
    agency_id: AgencyId
    lapsed_at: UtcDateTime


class ConsultationExtended(EventPayload):
    event_type = "consultation.extended"
    request_id: UUID
    code: DossierCode
    agency_id: AgencyId
    previous_due_at: UtcDateTime
    due_at: UtcDateTime
    reason: NFCStr
    extended_at: UtcDateTime


class ConsultationCancelled(EventPayload):
    event_type = "consultation.cancelled"
    request_id: UUID
    code: DossierCode
    agency_id: AgencyId
    reason: NFCStr
    cancelled_at: UtcDateTime


class RoundOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    request_id: UUID
    agency_id: AgencyId
    outcome: Outcome
    decision: Decision | None = None
    at: UtcDateTime | None = Field(
        default=None,
        description="When the outcome came: the reply, the deadline for deemed consent, the"
        " cancellation",
    )


class ConsultationRoundCompleted(EventPayload):
    """Every request of the dossier has an outcome."""

    event_type = "consultation.round_completed"
    code: DossierCode
    outcomes: tuple[RoundOutcome, ...]
    completed_at: UtcDateTime


# --- notification --------------------------------------------------------------------------


class NotificationSent(EventPayload):
    event_type = "notification.sent"
    notification_id: UUID
    code: DossierCode
    kind: str
    channel: str
    recipient: str
    subject: NFCStr
    sent_at: UtcDateTime


EVENT_TYPES: dict[str, type[EventPayload]] = {
    cls.event_type: cls
    for cls in (
        ProcedurePublished,
        DossierReceived,
        SupplementRequested,
        DossierSupplemented,
        DossierRefused,
        DossierWithdrawn,
        DossierStopped,
        DossierRouted,
        DossierAdvanced,
        StepTaken,
        StepCompleted,
        HandedOver,
        StepOverdue,
        ProcessingSupplementRequested,
        FeeRequested,
        DossierResumed,
        DossierDecided,
        ResultReady,
        ResultReturned,
        RouteClosed,
        ApologyDrafted,
        ApologyIssued,
        ApologyWithdrawn,
        ApologyEscalated,
        ConsultationRequested,
        ConsultationReminded,
        ConsultationEscalated,
        ConsultationReplied,
        ConsultationDeemedConsent,
        ConsultationLapsed,
        ConsultationExtended,
        ConsultationCancelled,
        ConsultationRoundCompleted,
        NotificationSent,
    )
}


class UnknownEventType(ValueError):
    pass


def parse_payload(event_type: str, data: dict[str, Any]) -> EventPayload:
    """Validate ``data`` against the model registered for ``event_type``."""
    try:
        model = EVENT_TYPES[event_type]
    except KeyError:
        raise UnknownEventType(f"unknown event type {event_type!r}") from None
    return model.model_validate(data)
