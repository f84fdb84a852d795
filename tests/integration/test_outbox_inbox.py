"""Outbox relay and inbox consumer against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from contracts.envelope import Envelope, new_envelope
from contracts.events import NotificationSent
from contracts.topics import DEAD_LETTERS, NOTIFICATION
from services.runtime.broker import ensure_topics, make_broker, make_producer
from services.runtime.clock import SystemClock
from services.runtime.consumer import EventConsumer
from services.runtime.outbox import Outbox, OutboxRelay, Waker
from tests.helpers import eventually, headers, kafka_kwargs, read_topic

CODE = "000.00.01.H22-251124-0007"


def sent(n: int = 0) -> NotificationSent:
    return NotificationSent(
        notification_id=uuid.uuid4(),
        code=CODE,
        kind=f"k{n}",
        channel="email",
        recipient="a@b.vn",
        subject="Thông báo",
        sent_at=datetime.now(UTC),
    )


@pytest.fixture
async def outbox(kafka_bootstrap: str, topic_prefix: str) -> Outbox:
    await ensure_topics(kafka_bootstrap, topic_prefix)
    return Outbox("test", SystemClock(), topic_prefix)


async def test_relay_publishes_only_committed_events(
    pool: asyncpg.Pool, outbox: Outbox, kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        kept = [await outbox.add(conn, sent(i), subject=CODE) for i in range(3)]
    try:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, sent(99), subject=CODE)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    producer = make_producer(kafka_bootstrap, "t")
    await producer.start()
    waker = Waker(database_url, "rt_outbox")
    relay = OutboxRelay(pool, producer, waker)
    try:
        assert await relay.relay_once() == 3
        assert await relay.relay_once() == 0
    finally:
        await relay.resign()
        await producer.stop()
    records = await read_topic(kafka_bootstrap, NOTIFICATION.full_name(topic_prefix), at_least=3)
    got = [Envelope.model_validate_json(r.value) for r in records]
    assert [e.event_id for e in got] == [e.event_id for e in kept]
    assert {r.key for r in records} == {CODE.encode()}
    assert headers(records[0])["event_type"] == "notification.sent"
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_two_relays_keep_each_keys_order_and_publish_each_row_once(
    pool: asyncpg.Pool, outbox: Outbox, kafka_bootstrap: str, topic_prefix: str, database_url: str
) -> None:
    """Two replicas relay 1,000 events of 10 dossiers: one leads at a time, so each
    dossier's events reach the topic in the order they were written, each once; when the
    leader goes, the standby takes over."""
    codes = [f"000.00.01.H22-251124-{i:04d}" for i in range(10)]
    async with pool.acquire() as conn, conn.transaction():
        for i in range(1000):
            await outbox.add(conn, sent(i), subject=codes[i % 10])
    producers = [make_producer(kafka_bootstrap, f"t{i}") for i in range(2)]
    for p in producers:
        await p.start()
    relays = [
        OutboxRelay(pool, p, Waker(database_url, "rt_outbox"), batch_size=50) for p in producers
    ]

    async def drain(r: OutboxRelay, batches: int) -> None:
        for _ in range(batches):
            await r.relay_once()

    try:
        await asyncio.gather(*(drain(r, 10) for r in relays))
        first = [r.published for r in relays]
        assert sorted(first) == [0, 500], "one leader, one standby"
        leader = relays[first.index(500)]
        standby = relays[1 - first.index(500)]
        await leader.resign()  # the leader's process ends
        await drain(standby, 11)
    finally:
        for r in relays:
            await r.resign()
        for p in producers:
            await p.stop()
    assert standby.published == 500
    records = await read_topic(kafka_bootstrap, NOTIFICATION.full_name(topic_prefix), at_least=1000)
    ids = [json.loads(r.value)["event_id"] for r in records]
    assert len(ids) == len(set(ids)) == 1000
    per_key: dict[bytes, list[int]] = {}
    for r in records:
        per_key.setdefault(r.key, []).append(int(json.loads(r.value)["data"]["kind"][1:]))
    inversions = sum(1 for seq in per_key.values() for a, b in itertools.pairwise(seq) if a > b)
    assert inversions == 0


async def test_consumer_applies_once_and_dead_letters_bad_events(
    pool: asyncpg.Pool, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await ensure_topics(kafka_bootstrap, topic_prefix)
    topic = NOTIFICATION.full_name(topic_prefix)
    failing = uuid.uuid4()

    async def handler(conn: asyncpg.Connection, env: Envelope, payload: NotificationSent) -> None:
        if env.event_id == failing:
            raise ValueError("this one always fails")
        await conn.execute("INSERT INTO effects(ref) VALUES ($1)", payload.kind)

    good = [
        new_envelope(sent(i), subject=CODE, producer="t", occurred_at=datetime.now(UTC))
        for i in range(2)
    ]
    poison = new_envelope(
        sent(7), subject=CODE, producer="t", occurred_at=datetime.now(UTC), event_id=failing
    )
    bad_data = good[0].model_dump(mode="json") | {
        "event_id": str(uuid.uuid4()),
        "data": {"code": "not a code"},
    }
    raw = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, **kafka_kwargs())
    await raw.start()
    for value in (
        good[0].model_dump_json().encode(),
        good[0].model_dump_json().encode(),  # a redelivery
        b"{not json",
        json.dumps(bad_data).encode(),
        poison.model_dump_json().encode(),
        good[1].model_dump_json().encode(),
    ):
        await raw.send_and_wait(topic, value, key=CODE.encode())
    await raw.stop()

    consumer = EventConsumer(
        service="notification",
        group_id="lienthong-test",
        topics=(NOTIFICATION,),
        handlers={"notification.sent": handler},
        topic_prefix=topic_prefix,
        max_attempts=2,
    )
    broker = make_broker(kafka_bootstrap, "test")
    producer = make_producer(kafka_bootstrap, "test")
    await producer.start()
    consumer.register(broker, lambda: pool, lambda: producer)
    await broker.start()
    try:
        rows = await eventually(
            lambda: pool.fetch("SELECT ref FROM effects ORDER BY id"), lambda r: len(r) >= 2
        )
        assert [r["ref"] for r in rows] == ["k0", "k1"]
        dead = await read_topic(
            kafka_bootstrap, DEAD_LETTERS["notification"].full_name(topic_prefix), at_least=3
        )
    finally:
        await broker.stop()
        await producer.stop()
    reasons = sorted(headers(r)["dlq_reason"] for r in dead)
    assert reasons == ["handler_failed", "invalid", "invalid"]
    by_reason = {headers(r)["dlq_reason"]: headers(r) for r in dead}
    assert "this one always fails" in by_reason["handler_failed"]["dlq_detail"]
    details = [headers(r)["dlq_detail"] for r in dead if headers(r)["dlq_reason"] == "invalid"]
    assert any('"field": "code"' in d for d in details), details
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 2
    assert await pool.fetchval("SELECT count(*) FROM effects") == 2
