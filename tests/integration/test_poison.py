"""No single input can stop the pipeline: poison events and faults through the real broker
and PostgreSQL. Each case checks that the bad thing is set aside with its reason and that
what comes after it still goes through."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from contracts.envelope import Envelope, new_envelope
from contracts.events import NotificationSent
from contracts.topics import DEAD_LETTERS, NOTIFICATION
from services.runtime.broker import ensure_topics, make_broker, make_producer
from services.runtime.clock import SystemClock
from services.runtime.consumer import EventConsumer, RetryLater
from services.runtime.outbox import (
    MAX_EVENT_BYTES,
    EventTooLarge,
    Outbox,
    OutboxRelay,
    Waker,
    failed_rows,
    retry_row,
)
from tests.helpers import eventually, headers, kafka_kwargs, read_topic

A = "000.00.01.H22-251124-0001"
B = "000.00.01.H22-251124-0002"


def sent(kind: str, recipient: str = "a@b.vn") -> NotificationSent:
    return NotificationSent(
        notification_id=uuid.uuid4(),
        code=A,
        kind=kind,
        channel="email",
        recipient=recipient,
        subject="Thông báo",
        sent_at=datetime.now(UTC),
    )


def event(kind: str, subject: str = A, **over: object) -> bytes:
    env = new_envelope(sent(kind), subject=subject, producer="t", occurred_at=datetime.now(UTC))
    return json.dumps(env.model_dump(mode="json") | over).encode()


async def publish(bootstrap: str, topic: str, values: list[tuple[str, bytes]]) -> None:
    raw = AIOKafkaProducer(
        bootstrap_servers=bootstrap, max_request_size=2 * 1024 * 1024, **kafka_kwargs()
    )
    await raw.start()
    try:
        for key, value in values:
            await raw.send_and_wait(topic, value, key=key.encode(), partition=0)
    finally:
        await raw.stop()


class Running:
    """A consumer on the real broker, with the parked-event loop."""

    def __init__(self, bootstrap: str, prefix: str, pool: asyncpg.Pool, consumer: EventConsumer):
        self.broker = make_broker(bootstrap, "poison")
        self.producer = make_producer(bootstrap, "poison")
        self.pool = pool
        self.consumer = consumer
        consumer.register(self.broker, lambda: pool, lambda: self.producer)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        await self.producer.start()
        await self.broker.start()
        self.task = asyncio.create_task(self.consumer.run_parked(self.pool, self.producer))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.broker.stop()
        await self.producer.stop()


@pytest.fixture
async def topics(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[str]:
    await ensure_topics(kafka_bootstrap, topic_prefix)
    yield NOTIFICATION.full_name(topic_prefix)


async def effects(pool: asyncpg.Pool) -> list[str]:
    return [r["ref"] for r in await pool.fetch("SELECT ref FROM effects ORDER BY id")]


async def test_oversized_event_is_refused_before_its_transaction_commits(
    pool: asyncpg.Pool, topic_prefix: str
) -> None:
    outbox = Outbox("t", SystemClock(), topic_prefix)
    huge = sent("x").model_copy(update={"subject": "x" * MAX_EVENT_BYTES})
    with pytest.raises(EventTooLarge):
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO effects(ref) VALUES ('state change')")
            await outbox.add(conn, huge, subject=A)
    assert await effects(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 0


async def test_a_row_the_broker_refuses_is_set_aside_and_the_rest_goes_on(
    pool: asyncpg.Pool, topics: str, kafka_bootstrap: str, database_url: str, topic_prefix: str
) -> None:
    outbox = Outbox("t", SystemClock(), topic_prefix)
    async with pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, sent("before"), subject=A)
        # A row written by older code, over what the broker takes (1 MiB by default).
        await conn.execute(
            "INSERT INTO outbox(event_id, topic, key, event_type, payload, headers)"
            " VALUES ($1, $2, $3, 'notification.sent', $4, '{}')",
            uuid.uuid4(),
            topics,
            A,
            "x" * (2 * 1024 * 1024),
        )
        for i in range(3):
            await outbox.add(conn, sent(f"after{i}"), subject=B)
    producer = make_producer(kafka_bootstrap, "t")
    await producer.start()
    relay = OutboxRelay(pool, producer, Waker(database_url, "rt_outbox"))
    try:
        assert await relay.relay_once() == 5
        assert await relay.relay_once() == 0
    finally:
        await relay.resign()
        await producer.stop()
    assert relay.published == 4 and relay.set_aside == 1
    aside = await failed_rows(pool)
    assert len(aside) == 1 and "MessageSizeTooLarge" in str(aside[0]["failure"])
    records = await read_topic(kafka_bootstrap, topics, at_least=4)
    kinds = [json.loads(r.value)["data"]["kind"] for r in records]
    assert kinds == ["before", "after0", "after1", "after2"]
    assert await retry_row(pool, int(str(aside[0]["id"])))
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL") == 0


async def test_unknown_types_versions_and_huge_invalid_events_are_dead_lettered(
    pool: asyncpg.Pool, topics: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    async def handler(conn: asyncpg.Connection, env: Envelope, payload: NotificationSent) -> None:
        await conn.execute("INSERT INTO effects(ref) VALUES ($1)", payload.kind)

    huge_invalid = b'{"event_id": "' + b"x" * (900 * 1024) + b'"}'
    await publish(
        kafka_bootstrap,
        topics,
        [
            (A, event("one")),
            (A, event("x", type="notification.exploded")),
            (A, event("x", schema_version=99)),
            (A, huge_invalid),
            (A, event("two")),
        ],
    )
    consumer = EventConsumer(
        service="notification",
        group_id=f"{topic_prefix}poison",
        topics=(NOTIFICATION,),
        handlers={"notification.sent": handler},
        topic_prefix=topic_prefix,
    )
    async with Running(kafka_bootstrap, topic_prefix, pool, consumer):
        assert await eventually(lambda: effects(pool), lambda e: len(e) >= 2) == ["one", "two"]
        dead = await read_topic(
            kafka_bootstrap, DEAD_LETTERS["notification"].full_name(topic_prefix), at_least=3
        )
    reasons = [headers(r)["dlq_reason"] for r in dead]
    assert reasons == ["unknown_type", "unsupported_version", "invalid"]
    assert headers(dead[2]).get("dlq_value") == "stored"  # a reference, not 900 KiB again
    assert json.loads(dead[2].value)["size"] == len(huge_invalid)
    stored = await pool.fetch("SELECT reason, length(value) AS n FROM dead_letters ORDER BY id")
    assert [r["reason"] for r in stored] == reasons
    assert stored[2]["n"] == len(huge_invalid)


async def test_an_event_that_must_wait_parks_its_dossier_only(
    pool: asyncpg.Pool, topics: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    """Dossier A's first event waits for something (as a routing event waits for its
    procedure); A's later events queue behind it in order, B's go through at once. What
    the waiting handler wrote before it said so is undone (a batch is first applied
    without savepoints, then again with one per event)."""
    ready = asyncio.Event()

    async def handler(conn: asyncpg.Connection, env: Envelope, payload: NotificationSent) -> None:
        if payload.kind == "a-waits" and not ready.is_set():
            await conn.execute("INSERT INTO effects(ref) VALUES ('half-written')")
            raise RetryLater("procedure 1.009972 v1 not known yet")
        await conn.execute("INSERT INTO effects(ref) VALUES ($1)", payload.kind)

    await publish(
        kafka_bootstrap,
        topics,
        [
            (A, event("a-waits", subject=A)),
            (A, event("a-then", subject=A)),
            (B, event("b-1", subject=B)),
            (A, event("a-last", subject=A)),
            (B, event("b-2", subject=B)),
        ],
    )
    consumer = EventConsumer(
        service="notification",
        group_id=f"{topic_prefix}park",
        topics=(NOTIFICATION,),
        handlers={"notification.sent": handler},
        topic_prefix=topic_prefix,
        parked_poll_s=0.2,
    )
    async with Running(kafka_bootstrap, topic_prefix, pool, consumer):
        assert await eventually(lambda: effects(pool), lambda e: len(e) >= 2) == ["b-1", "b-2"]
        parked = await pool.fetch("SELECT subject, reason FROM parked ORDER BY id")
        assert [p["subject"] for p in parked] == [A, A, A]
        assert "not known yet" in parked[0]["reason"]
        ready.set()  # the procedure arrives
        done = await eventually(lambda: effects(pool), lambda e: len(e) >= 5, timeout=30)
    assert done == ["b-1", "b-2", "a-waits", "a-then", "a-last"]
    assert await pool.fetchval("SELECT count(*) FROM parked") == 0
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 5


async def test_a_database_that_refuses_is_retried_never_dead_lettered(
    pool: asyncpg.Pool, topics: str, kafka_bootstrap: str, topic_prefix: str
) -> None:
    faults = [
        asyncpg.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.SerializationError("could not serialize access"),
    ]

    async def handler(conn: asyncpg.Connection, env: Envelope, payload: NotificationSent) -> None:
        if faults:
            raise faults.pop(0)
        await conn.execute("INSERT INTO effects(ref) VALUES ($1)", payload.kind)

    await publish(kafka_bootstrap, topics, [(A, event("only"))])
    consumer = EventConsumer(
        service="notification",
        group_id=f"{topic_prefix}transient",
        topics=(NOTIFICATION,),
        handlers={"notification.sent": handler},
        topic_prefix=topic_prefix,
        max_attempts=2,
    )
    async with Running(kafka_bootstrap, topic_prefix, pool, consumer):
        assert await eventually(lambda: effects(pool), lambda e: len(e) >= 1, timeout=60) == [
            "only"
        ]
    assert faults == []
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
