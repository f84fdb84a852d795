"""Every consumer takes the same decision on the same record (issue 22, findings 5 and 6):
the runtime's consumer of each service and the console's reader refuse alike a record
whose key is not its subject and one holding text PostgreSQL cannot store, before any
handler or database sees it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from contracts.envelope import Envelope, new_envelope
from contracts.events import EVENT_TYPES, NotificationSent
from contracts.topics import NOTIFICATION
from services.console.handlers import decode
from services.runtime.acl import SERVICES, group_id
from services.runtime.consumer import EventConsumer, Raw, Refusal

CODE = "000.00.01.H29-261204-0001"
OTHER = "000.00.01.H29-261204-0002"


async def never(*_: Any) -> None:  # the decision is taken before any handler runs
    raise AssertionError("a refused record reached a handler")


def record(data_override: dict[str, Any] | None = None, key: str = CODE) -> Raw:
    payload = NotificationSent(
        notification_id=uuid.uuid4(),
        code=CODE,
        kind="form01",
        channel="email",
        recipient="a@b.vn",
        subject="Giấy tiếp nhận",
        sent_at=datetime.now(UTC),
    )
    env = new_envelope(payload, subject=CODE, producer="notification", occurred_at=payload.sent_at)
    doc = env.model_dump(mode="json")
    doc["data"].update(data_override or {})
    return Raw(NOTIFICATION.name, 0, 7, key.encode(), json.dumps(doc).encode())


def decisions(raw: Raw) -> dict[str, str]:
    out = {}
    for service in SERVICES:
        consumer = EventConsumer(
            service=service,
            group_id=group_id(service),
            topics=(NOTIFICATION,),
            handlers=dict.fromkeys(EVENT_TYPES, never),
        )
        decided = consumer._decode(raw)
        out[service] = decided.reason if isinstance(decided, Refusal) else "taken"
    out["console reader"] = "taken" if decode(raw) is not None else "skipped"
    return out


@pytest.mark.parametrize(
    "bad", ["Thông\u0000báo", "\ud800", {"k\u0000": 1}, ["ok", "x\udfff"]], ids=repr
)
def test_text_postgresql_cannot_store_is_refused_by_every_consumer(bad: object) -> None:
    raw = record({"subject": bad})
    got = decisions(raw)
    assert got == {**dict.fromkeys(SERVICES, "invalid"), "console reader": "skipped"}
    with pytest.raises(ValueError):  # NUL, or a surrogate that is not even JSON to jiter
        Envelope.model_validate_json(raw.value)


def test_a_key_that_is_not_the_subject_is_refused_by_every_consumer() -> None:
    assert decisions(record(key=OTHER)) == {
        **dict.fromkeys(SERVICES, "key_mismatch"),
        "console reader": "skipped",
    }
    assert decisions(record()) == {**dict.fromkeys(SERVICES, "taken"), "console reader": "taken"}


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1], ids=repr)
def test_an_integer_postgresql_cannot_store_is_refused_by_every_consumer(bad: int) -> None:
    raw = record({"extra_number": bad})
    assert decisions(raw) == {**dict.fromkeys(SERVICES, "invalid"), "console reader": "skipped"}
    with pytest.raises(ValueError, match="bigint"):  # the envelope, before any payload model
        Envelope.model_validate_json(raw.value)
