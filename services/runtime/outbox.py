"""Transactional outbox: events are rows written with the state change, relayed later.

The relay wakes on NOTIFY from the outbox trigger and polls as a fallback; it claims rows
with ``FOR UPDATE SKIP LOCKED`` so several replicas can relay side by side, and marks them
published only after the broker acknowledged them (at-least-once; consumers dedupe by
event id).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import uuid

import asyncpg
from aiokafka import AIOKafkaProducer

from contracts.envelope import Envelope, EventPayload, new_envelope
from contracts.topics import topic_for
from services.runtime.clock import Clock
from services.runtime.logging import get_logger
from services.runtime.metrics import EVENTS_PUBLISHED, OUTBOX_PENDING, RELAY_LATENCY

log = get_logger(__name__)

_correlation: contextvars.ContextVar[uuid.UUID | None] = contextvars.ContextVar(
    "correlation_id", default=None
)


def current_correlation() -> uuid.UUID | None:
    """The correlation id of the HTTP request being served, if any."""
    return _correlation.get()


def set_correlation(value: uuid.UUID | None) -> contextvars.Token[uuid.UUID | None]:
    return _correlation.set(value)


def reset_correlation(token: contextvars.Token[uuid.UUID | None]) -> None:
    _correlation.reset(token)


def kafka_headers(env: Envelope) -> dict[str, str]:
    return {
        "event_type": env.type,
        "schema_version": str(env.schema_version),
        "event_id": str(env.event_id),
        "correlation_id": str(env.correlation_id),
        "producer": env.producer,
    }


class Outbox:
    """Writes events into the caller's transaction."""

    def __init__(self, producer: str, clock: Clock, topic_prefix: str = "") -> None:
        self.producer = producer
        self.clock = clock
        self.topic_prefix = topic_prefix

    async def add(
        self,
        conn: asyncpg.Connection,
        payload: EventPayload,
        *,
        subject: str,
        cause: Envelope | None = None,
        correlation_id: uuid.UUID | None = None,
        event_id: uuid.UUID | None = None,
    ) -> Envelope:
        """Record ``payload`` for publication; a caused event inherits the correlation id."""
        env = new_envelope(
            payload,
            subject=subject,
            producer=self.producer,
            occurred_at=self.clock.now(),
            correlation_id=(
                cause.correlation_id if cause else correlation_id or current_correlation()
            ),
            causation_id=cause.event_id if cause else None,
            event_id=event_id,
        )
        await conn.execute(
            "INSERT INTO outbox(event_id, topic, key, event_type, payload, headers)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
            env.event_id,
            topic_for(env.type).full_name(self.topic_prefix),
            subject,
            env.type,
            env.model_dump_json(),
            kafka_headers(env),
        )
        return env


class Waker:
    """Wakes a loop on a LISTEN channel, or after a timeout when nothing is heard."""

    def __init__(self, dsn: str, channel: str) -> None:
        self.dsn = dsn
        self.channel = channel
        self._event = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        try:
            self._conn = await asyncpg.connect(self.dsn)
            await self._conn.add_listener(self.channel, self._on_notify)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("listen_unavailable", channel=self.channel, error=repr(exc))
            self._conn = None

    def _on_notify(self, *_: object) -> None:
        self._event.set()

    async def wait(self, seconds: float) -> None:
        if self._conn is not None and self._conn.is_closed():
            await self.start()  # the listening connection dropped: listen again
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
        self._event.clear()

    async def stop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


class OutboxRelay:
    """Moves outbox rows to Kafka."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        waker: Waker,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.waker = waker
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.published = 0

    async def relay_once(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, topic, key, payload, headers, created_at FROM outbox"
                " WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch_size,
            )
            if not rows:
                return 0
            futures = [
                await self.producer.send(
                    r["topic"],
                    value=r["payload"].encode(),
                    key=r["key"].encode(),
                    headers=[(k, str(v).encode()) for k, v in r["headers"].items()],
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
            acked = await conn.fetchval("SELECT clock_timestamp()")
            await conn.execute(
                "UPDATE outbox SET published_at = $2 WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
                acked,
            )
        for r in rows:
            EVENTS_PUBLISHED.labels(r["topic"]).inc()
            RELAY_LATENCY.observe(max(0.0, (acked - r["created_at"]).total_seconds()))
        self.published += len(rows)
        return len(rows)

    async def run(self) -> None:
        while True:
            try:
                n = await self.relay_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox_relay_failed", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            if n < self.batch_size:
                await self.waker.wait(self.poll_interval)

    async def pending(self) -> int:
        n: int = await self.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        OUTBOX_PENDING.set(n)
        return n
