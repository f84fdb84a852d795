"""Every event's data model, registered by type.

Event types are ``<family>.<name>``; the family names the topic (see ``topics``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contracts.common import (
    AgencyId,
    Applicant,
    Channel,
    DocumentRef,
    DossierCode,
    Duration,
    MissingItem,
    Office,
    PortalStatus,
    Procedure,
    RequiredDocument,
    ReturnMethod,
    SupplementStage,
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


class DossierRouted(EventPayload):
    """The dossier reached its lead agency; the agencies to consult are named."""

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


class DossierAdvanced(EventPayload):
    """Every opinion is in (or deemed given): the lead agency moves on to its decision."""

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


class ConsultationReminded(EventPayload):
    event_type = "consultation.reminded"
    request_id: UUID
    code: DossierCode
    agency_id: AgencyId
    due_at: UtcDateTime
    reminded_at: UtcDateTime


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
