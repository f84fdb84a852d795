"""Contracts: envelope, validation, topics and generated documents."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from contracts import EVENT_TYPES, TOPICS, Envelope, new_envelope, parse_payload, topic_for
from contracts.common import Applicant, ObjectType
from contracts.events import NotificationSent, UnknownEventType
from contracts.generate import render


def test_every_event_type_has_a_topic() -> None:
    names = {t.name for t in TOPICS}
    for event_type in EVENT_TYPES:
        assert topic_for(event_type).name in names


def test_envelope_round_trip_inherits_correlation() -> None:
    payload = NotificationSent(
        notification_id=uuid.uuid4(),
        code="000.00.01.H22-251124-0007",
        kind="form01",
        channel="email",
        recipient="a@b.vn",
        subject="Giấy tiếp nhận",
        sent_at=datetime.now(UTC),
    )
    first = new_envelope(
        payload, subject="000.00.01.H22-251124-0007", producer="t", occurred_at=datetime.now(UTC)
    )
    assert first.correlation_id == first.event_id
    again = Envelope.model_validate_json(first.model_dump_json())
    assert again == first
    assert parse_payload(again.type, again.data) == payload


def test_unknown_type_and_bad_data_are_refused() -> None:
    with pytest.raises(UnknownEventType):
        parse_payload("dossier.exploded", {})
    with pytest.raises(ValidationError):
        parse_payload("notification.sent", {"code": "nope"})


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Envelope(
            event_id=uuid.uuid4(),
            type="x.y",
            schema_version=1,
            occurred_at=datetime(2026, 1, 1),
            subject="s",
            correlation_id=uuid.uuid4(),
            producer="p",
            data={},
        )


def test_vietnamese_text_is_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "Nguyễn Thị Ánh")
    a = Applicant(name=decomposed, id_number="001190012345")
    assert a.name == unicodedata.normalize("NFC", decomposed)
    assert unicodedata.is_normalized("NFC", a.name)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"id_number": "12345"}, "id_number"),
        ({"id_number": "0012345678901"}, "id_number"),
        ({"id_number": "00119001234a"}, "id_number"),
        ({"id_number": "001190012345", "phone": "12345"}, "phone"),
        ({"id_number": "001190012345", "email": "not-an-email"}, "email"),
        ({"id_number": "0101234567", "object_type": ObjectType.CITIZEN}, "id_number"),
    ],
)
def test_applicant_validation_names_the_field(kw: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Applicant(name="Trần Văn Bình", **kw)
    assert field in str(exc.value)


def test_phone_numbers_are_normalised() -> None:
    a = Applicant(name="Lê Văn C", id_number="079190000001", phone="+84 912 345 678")
    assert a.phone == "0912345678"
    org = Applicant(
        name="Công ty A", object_type=ObjectType.ORGANISATION, id_number="0101234567-001"
    )
    assert org.id_number == "0101234567-001"


def test_generated_documents_match_models() -> None:
    drift = [
        str(p) for p, text in render().items() if not p.exists() or p.read_text("utf-8") != text
    ]
    assert not drift, f"run `make contracts`: {drift}"
