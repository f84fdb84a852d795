"""Small helpers shared by integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from services.runtime.kafka_auth import KafkaSecurity

# A building permit at the desk of 000.00.01.H29: the dossier most tests submit.
PERMIT = {
    "procedure_code": "1.009972",
    "channel": 1,
    "applicant": {
        "name": "Công ty TNHH Xây dựng Minh Long",
        "object_type": 2,
        "id_number": "0101234567",
        "phone": "0912345678",
        "email": "minhlong@example.vn",
        "address": "12 Lê Lợi, Quận 1",
    },
    "documents": [{"code": "DDN"}, {"code": "QSDD"}, {"code": "BVTK"}],
}

T = TypeVar("T")


def kafka_kwargs(security: KafkaSecurity | None = None) -> dict[str, Any]:
    """Client keyword arguments for ``security`` (default: the environment's, the admin)."""
    return (security or KafkaSecurity.from_env()).kwargs()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    at_least: int,
    timeout: float = 20.0,
    security: KafkaSecurity | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic`` from the start, once at least ``at_least`` arrived."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka_kwargs(security),
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend(records)
            if len(out) >= at_least:
                # one more short poll, so extra (duplicate) records would show up too
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out.extend(records)
                break
    finally:
        await consumer.stop()
    return out


async def eventually(
    probe: Callable[[], Awaitable[T]],
    ok: Callable[[T], bool],
    *,
    timeout: float = 20.0,
    interval: float = 0.1,
) -> T:
    """Poll ``probe`` until ``ok`` holds; returns the last value or fails with it."""
    deadline = time.monotonic() + timeout
    value = await probe()
    while not ok(value):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(interval)
        value = await probe()
    return value


def headers(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in (record.headers or [])}


async def read_all(
    bootstrap: str, topics: dict[str, int], security: KafkaSecurity | None = None
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topics`` (name: partition count) up to their end offsets now."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **kafka_kwargs(security),
    )
    await consumer.start()
    out: list[ConsumerRecord[bytes, bytes]] = []
    try:
        tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batch.items():
                out.extend(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return out


# --- credentials for tests: the services run as in production (no development mode) ----

TEST_JWT_SECRET = "test-secret-not-the-built-in-one-0123456789"
TEST_SEAL_PRIVATE = "dGVzdC1zZWFsLWtleS0zMi1ieXRlcy1sb25nLi4uLi4="
TEST_PORTAL_CLIENT = ("dvcqg-test", "test-portal-secret-0123456789")


def configure_auth(settings: Any, *, rate_per_minute: int = 1_000_000) -> Any:
    """Production-style credentials (no development mode) on a service's settings."""
    from services.runtime import auth

    settings.dev_mode = False
    settings.jwt_secret = TEST_JWT_SECRET
    settings.lookup_seal_private_key = TEST_SEAL_PRIVATE
    settings.lookup_seal_public_key = auth.seal_public_key(TEST_SEAL_PRIVATE)
    settings.portal_clients = ":".join(TEST_PORTAL_CLIENT)
    settings.submit_rate_per_minute = rate_per_minute
    return settings


def auth_env(rate_per_minute: int = 1_000_000) -> dict[str, str]:
    """The same credentials as environment variables, for services run as processes."""
    from services.runtime import auth

    return {
        "LIENTHONG_DEV_MODE": "0",
        "LIENTHONG_JWT_SECRET": TEST_JWT_SECRET,
        "NOTIFICATION_LOOKUP_SEAL_PRIVATE_KEY": TEST_SEAL_PRIVATE,
        "INTAKE_LOOKUP_SEAL_PUBLIC_KEY": auth.seal_public_key(TEST_SEAL_PRIVATE),
        "INTAKE_PORTAL_CLIENTS": ":".join(TEST_PORTAL_CLIENT),
        "INTAKE_SUBMIT_RATE_PER_MINUTE": str(rate_per_minute),
    }


def staff(
    agency: str,
    role: str = "officer",
    *,
    now: Any = None,
    person: str | None = None,
    department: str | None = None,
    name: str | None = None,
) -> dict[str, str]:
    """Authorization header of a staff token signed with the test secret."""
    from datetime import UTC, datetime

    from services.runtime import auth

    token = auth.mint(
        TEST_JWT_SECRET,
        agency_id=agency,
        role=role,
        person=person or f"{role}@{agency}",
        now=now or datetime.now(UTC),
        department=department,
        name=name,
    )
    return {"authorization": f"Bearer {token}"}


def applicant(lookup_code: str) -> dict[str, str]:
    return {"X-Lookup-Code": lookup_code}


def poisoned_receipt(code: str, event_id: uuid.UUID) -> dict[str, Any]:
    """A ``notification.sent`` envelope without its recipient: a consumer that keeps the
    timeline (intake) refuses it with the field's reason (dead letter tests)."""
    now = datetime.now(UTC).isoformat()
    return {
        "event_id": str(event_id),
        "type": "notification.sent",
        "schema_version": 1,
        "occurred_at": now,
        "subject": code,
        "correlation_id": str(uuid.uuid4()),
        "producer": "notification",
        "data": {
            "notification_id": str(uuid.uuid4()),
            "code": code,
            "kind": "form01",
            "channel": "email",
            "subject": "Giấy tiếp nhận hồ sơ",
            "sent_at": now,
        },
    }


async def send_as(
    bootstrap: str,
    security: KafkaSecurity,
    topic: str,
    value: bytes,
    key: str,
    record_headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Publish one record as ``security``'s principal (idempotent, acks=all), as a service
    would; the broker's refusal is raised."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=True,
        acks="all",
        request_timeout_ms=5000,
        **security.kwargs(),
    )
    try:
        await producer.start()
        await producer.send_and_wait(topic, value, key=key.encode(), headers=record_headers)
    finally:
        await producer.stop()
