"""The operator console's HTTP payloads (``/v1/console/...``, services/console/api.py).

Times are UTC (ISO 8601); pages show them in Asia/Ho_Chi_Minh. Event data is kept with
personal data masked; a dead letter's whole payload only for operators who ask for it
(``reveal=true``, audited).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from contracts.api import FieldError
from contracts.envelope import NFCStr


class ConsoleEvent(BaseModel):
    """One event as every service saw it pass, with its place in the log."""

    seq: int = Field(description="The console's cursor: pass it back as ``after``")
    event_id: UUID
    type: str
    schema_version: int
    topic: str
    partition: int
    offset: int
    subject: str
    dossier_code: str | None
    agencies: list[str] = Field(description="Every agency id the event names")
    correlation_id: UUID
    causation_id: UUID | None
    occurred_at: datetime
    producer: str
    data: dict[str, Any] = Field(description="The event's data, personal data masked")


class EventPage(BaseModel):
    items: list[ConsoleEvent]
    next_after: int | None = Field(
        description="The largest ``seq`` here: ``after`` for the next page (None: empty)"
    )


class DossierSummary(BaseModel):
    """A dossier as the events tell it (the console's read model)."""

    code: str
    agency: str | None = Field(description="The lead agency, else the receiving agency")
    receiving_agency: str | None
    lead_agency: str | None
    procedure_code: str | None
    procedure_name: str | None
    channel: int | None
    online: bool | None
    state: str | None
    portal_status: int | None
    received_at: datetime | None
    appointment_at: datetime | None
    legal_appointment_at: datetime | None
    step_deadline_at: datetime | None
    finished_at: datetime | None
    returned_at: datetime | None
    timeliness: str | None
    apologies: int
    supplement_requests: int
    overdue_steps: int
    events: int
    last_event_at: datetime | None = Field(default=None, description="Its latest event's time")


class DossierPage(BaseModel):
    """Dossiers a search found, most recently active first (then by code)."""

    items: list[DossierSummary]
    next_after: str | None = Field(
        description="Pass it back as ``after`` for the next page (None: this is the last)"
    )


class CausalLink(BaseModel):
    cause: UUID
    effect: UUID


class DossierTimeline(BaseModel):
    code: str
    dossier: DossierSummary | None
    events: list[ConsoleEvent] = Field(description="In the order they occurred")
    links: list[CausalLink] = Field(description="causation_id -> event_id, both in this list")
    correlations: list[UUID]
    opinion_requests: list[OpinionRequestView]


class OpinionRequestView(BaseModel):
    request_id: UUID
    dossier_code: str
    lead_agency: str | None
    agency_id: str | None
    agency_name: str | None
    template_id: str | None
    subject: str | None
    requested_at: datetime | None
    due_at: datetime | None
    status: str
    reminders: int
    escalations: int
    last_escalation: dict[str, Any] | None
    decision: str | None
    closed_at: datetime | None


class ServiceStatus(BaseModel):
    name: str
    url: str | None
    ready: bool | None = Field(description="None: the console was not told where it runs")
    checks: dict[str, Any] = Field(default_factory=dict)
    lag_total: int | None = None


class ConsoleStatus(BaseModel):
    services: list[ServiceStatus]
    lag_totals: dict[str, int] = Field(description="Consumer group: total lag")
    events_total: int
    events_last_5_minutes: int
    event_types: dict[str, int]
    dossiers: int
    open_dead_letters: int
    generated_at: datetime


class PartitionLagView(BaseModel):
    service: str
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


class ThroughputPoint(BaseModel):
    minute: datetime
    topic: str
    events: int


class LagSample(BaseModel):
    at: datetime
    group: str
    total: int


class LagReport(BaseModel):
    partitions: list[PartitionLagView]
    totals: dict[str, int]
    throughput: list[ThroughputPoint] = Field(description="Events recorded per minute")
    samples: list[LagSample] = Field(description="Total lag per group, sampled every 5 s")
    errors: dict[str, str] = Field(default_factory=dict, description="Group: why unread")


DeadLetterStatus = Literal["open", "replay_pending", "replayed", "replay_failed", "discarded"]


class DeadLetterAction(BaseModel):
    id: int
    action: Literal["replay", "discard"]
    person: str
    role: str
    agency_id: str
    reason: str
    edited: bool
    created_at: datetime
    result: Literal["pending", "published", "failed", "done"]
    failure: str | None = None


class DeadLetterSummary(BaseModel):
    id: str = Field(description="<writer>-<partition>-<offset> on the writer's dead-letter topic")
    writer: str | None = Field(
        description="The consumer that wrote it, as the broker saw it: the one principal"
        " allowed to write the dead-letter topic it is on"
    )
    forged: str | None = Field(
        description="Why its headers claim an origin its writer could not have had (another"
        " consumer, a topic the writer does not read); such a dead letter cannot be replayed"
    )
    reason: str
    consumer: str | None
    origin_topic: str | None
    origin_partition: int | None
    origin_offset: int | None
    event_id: UUID | None
    event_type: str | None
    dossier_code: str | None
    agencies: list[str]
    dead_lettered_at: datetime | None
    size: int
    stored_elsewhere: bool = Field(
        description="Too large for the topic: the value is a reference to the copy the"
        " consumer stored (its /v1/ops/dead-letters); replay needs a fixed payload"
    )
    status: DeadLetterStatus
    errors: list[FieldError] = Field(description="Field-level reasons where known")


class DeadLetterDetail(DeadLetterSummary):
    key: str | None
    headers: dict[str, str]
    detail: str
    payload: Any = Field(description="The value: JSON if it parses, else text")
    payload_revealed: bool = Field(description="False: personal data masked")
    actions: list[DeadLetterAction]


class ReplayDeadLetter(BaseModel):
    """Give a dead letter back to the consumer that wrote it (its replay topic), keyed by
    the event's subject; that consumer applies it once, as the replay of its own dead
    letter, with the same event id."""

    model_config = ConfigDict(extra="forbid")
    reason: NFCStr = Field(min_length=3, max_length=500, description="Why, for the audit")
    payload: dict[str, Any] | None = Field(
        default=None,
        description="A fixed value (the whole event envelope) to publish instead of the"
        " original; it must be a valid event of a known type",
    )


class DiscardDeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: NFCStr = Field(min_length=3, max_length=500)


class ActionAccepted(BaseModel):
    id: int
    entry_id: str
    action: Literal["replay", "discard"]
    result: Literal["pending", "published", "failed", "done"]
    outbox_event_id: UUID | None = None


class SlaItem(BaseModel):
    kind: Literal["dossier", "opinion_request"]
    dossier_code: str
    request_id: UUID | None = None
    agency: str | None
    what: str | None = Field(description="The procedure, or what the opinion is about")
    due_at: datetime
    hours_left: float = Field(description="Negative: past the deadline")
    past: bool
    state: str | None
    escalations: int = 0
    last_escalation: dict[str, Any] | None = None


class SlaAgency(BaseModel):
    agency: str
    near: int
    past: int
    escalations: int


class UnsignedApology(BaseModel):
    """A drafted Form 04 its head has not signed: past its latest moment it was escalated
    to the head's superior (routing.apology_escalated)."""

    dossier_code: str
    apology_id: UUID
    number: int
    agency: str
    agency_name: str | None = None
    reason: str | None = None
    drafted_at: datetime
    latest_issue_at: datetime
    hours_left: float = Field(description="Until the latest moment; negative: past it")
    past: bool
    escalated_at: datetime | None = None
    superior: str | None = None


class FinishedLate(BaseModel):
    """A dossier finished late within the board's period (its last ``horizon_hours``)."""

    dossier_code: str
    agency: str | None
    procedure_code: str | None
    what: str | None = Field(description="The procedure's name")
    due_at: datetime | None = Field(description="The appointment its timeliness was read on")
    finished_at: datetime
    hours_late: float | None = Field(description="Finished this long after ``due_at``")
    state: str | None


class SlaBoard(BaseModel):
    generated_at: datetime
    horizon_hours: int
    dossiers: list[SlaItem]
    opinion_requests: list[SlaItem]
    agencies: list[SlaAgency]
    unsigned_apologies: list[UnsignedApology] = Field(default_factory=list)
    finished_late: list[FinishedLate] = Field(
        default_factory=list,
        description="Dossiers finished late in the last ``horizon_hours``, latest first",
    )


class FigureRow(BaseModel):
    """Decision 766/QĐ-TTg figures of one agency, procedure and month (Asia/Ho_Chi_Minh)."""

    agency: str
    procedure_code: str
    procedure_name: str | None
    month: str = Field(pattern=r"^\d{4}-\d{2}$")
    received: int
    online: int
    online_share: float | None
    finished: int
    on_time: int = Field(description="Finished early or on time")
    late: int
    on_time_rate: float | None
    apologies: int


class FigureTrend(BaseModel):
    month: str
    received: int
    finished: int
    on_time: int
    late: int
    on_time_rate: float | None
    online_share: float | None
    apologies: int


class Figures(BaseModel):
    rows: list[FigureRow]
    trend: list[FigureTrend]


class ConsoleLogin(BaseModel):
    """A staff token to keep in the console's session cookie."""

    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=10, max_length=8000)


DossierTimeline.model_rebuild()
