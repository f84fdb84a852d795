"""The event envelope every Kafka message carries."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from contracts.text import unstorable_in

# The serial is 4 digits, widening to 5 past 9,999 dossiers of one agency in a day
# (services/intake/domain.py, ``dossier_code``).
DOSSIER_CODE_PATTERN = (
    r"^[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}-[0-9]{6}-(?:[0-9]{4}|[1-9][0-9]{4})$"
)


def _nfc(value: str) -> str:
    return unicodedata.normalize("NFC", value)


NFCStr = Annotated[str, AfterValidator(_nfc)]
"""A string normalised to Unicode NFC, as all Vietnamese text is."""


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a timezone")
    return value.astimezone(UTC)


UtcDateTime = Annotated[datetime, AfterValidator(_utc)]
"""An aware timestamp, converted to UTC."""


class EventPayload(BaseModel):
    """Base of every event's data. Subclasses set ``event_type`` and ``schema_version``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class Envelope(BaseModel):
    """Metadata around an event's data; ``subject`` (the dossier code) is the Kafka key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: uuid.UUID
    type: str = Field(min_length=3, description="Event type, e.g. dossier.received")
    schema_version: int = Field(ge=1)
    occurred_at: UtcDateTime
    subject: str = Field(min_length=1, description="Dossier code, or another aggregate key")
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    producer: str = Field(min_length=1)
    data: dict[str, Any]

    @model_validator(mode="after")
    def _storable(self) -> Envelope:
        """No text PostgreSQL cannot store, anywhere in the event: otherwise one consumer
        would fail on it in its database while another applied it."""
        found = unstorable_in(
            {
                "type": self.type,
                "subject": self.subject,
                "producer": self.producer,
                **{f"data.{k}": v for k, v in self.data.items()},
            }
        )
        if found:
            raise ValueError(f"{found[0]}: {found[1]}")
        return self


def new_envelope(
    payload: EventPayload,
    *,
    subject: str,
    producer: str,
    occurred_at: datetime,
    correlation_id: uuid.UUID | None = None,
    causation_id: uuid.UUID | None = None,
    event_id: uuid.UUID | None = None,
) -> Envelope:
    """Wrap ``payload``; a fresh event id and correlation id unless given."""
    eid = event_id or uuid.uuid4()
    return Envelope(
        event_id=eid,
        type=payload.event_type,
        schema_version=payload.schema_version,
        occurred_at=occurred_at,
        subject=subject,
        correlation_id=correlation_id or eid,
        causation_id=causation_id,
        producer=producer,
        data=payload.model_dump(mode="json"),
    )
