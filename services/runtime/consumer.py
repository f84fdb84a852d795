"""Idempotent event consumption: inbox, dispatch by event type, dead-letter topic.

Each service has one consumer group subscribed to all its topics. For every message:
parse and validate the envelope and its data (a malformed event goes to the dead-letter
topic with the reason in headers, and the consumer carries on); skip types nobody here
handles; otherwise, in one database transaction, record the event id in the inbox and
apply the handler's effects (a redelivered event finds its id and has no second effect).
The offset is committed only after that transaction commits.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from contracts.envelope import Envelope, EventPayload
from contracts.events import UnknownEventType, parse_payload
from contracts.topics import DEAD_LETTER, Topic
from services.runtime.logging import bound_contextvars, get_logger
from services.runtime.metrics import DEAD_LETTERS, EVENTS_CONSUMED, HANDLER_SECONDS

log = get_logger(__name__)

Handler = Callable[[asyncpg.Connection, Envelope, Any], Awaitable[None]]
TRANSIENT = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError)


class RetryLater(Exception):
    """The event cannot be applied yet (e.g. a catalogue entry has not arrived): retry."""


@dataclass
class EventConsumer:
    """One consumer group, its topics and a handler per event type."""

    group_id: str
    topics: Sequence[Topic]
    handlers: dict[str, Handler]
    topic_prefix: str = ""
    max_attempts: int = 5
    retry_later_limit: int = 120
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    fetch_max_wait_ms: int = 500
    processed: int = 0
    _attempts: dict[str, int] = field(default_factory=dict)
    subscriber: Any = None

    def register(
        self,
        broker: KafkaBroker,
        pool: Callable[[], asyncpg.Pool],
        producer: Callable[[], AIOKafkaProducer],
    ) -> None:
        """Attach the subscriber to ``broker``; pool and producer are looked up per call."""
        names = [t.full_name(self.topic_prefix) for t in self.topics]

        async def on_message(message: KafkaMessage) -> None:
            await self.handle(message, pool(), producer())

        self.subscriber = broker.subscriber(
            *names,
            group_id=self.group_id,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_poll_records=200,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
        )
        self.subscriber(on_message)

    def assigned(self) -> bool:
        consumer = getattr(self.subscriber, "consumer", None)
        return bool(consumer is not None and consumer.assignment())

    async def handle(self, message: Any, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        record = message.raw_message
        try:
            env = Envelope.model_validate_json(message.body)
            handler = self.handlers.get(env.type)
            payload = parse_payload(env.type, env.data) if handler else None
        except (ValidationError, UnknownEventType, ValueError) as exc:
            await self.dead_letter(producer, record, "invalid", _reason(exc))
            return
        if handler is None:
            EVENTS_CONSUMED.labels(self.group_id, env.type, "ignored").inc()
            return
        with bound_contextvars(
            dossier_code=env.subject, correlation_id=str(env.correlation_id), event=env.type
        ):
            await self._apply(pool, producer, record, env, payload, handler)

    async def _apply(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        record: Any,
        env: Envelope,
        payload: EventPayload | None,
        handler: Handler,
    ) -> None:
        key = str(env.event_id)
        started = time.perf_counter()
        while True:
            try:
                async with pool.acquire() as conn, conn.transaction():
                    fresh = await conn.fetchval(
                        "INSERT INTO inbox(consumer, event_id, event_type) VALUES ($1, $2, $3)"
                        " ON CONFLICT DO NOTHING RETURNING true",
                        self.group_id,
                        env.event_id,
                        env.type,
                    )
                    if not fresh:
                        EVENTS_CONSUMED.labels(self.group_id, env.type, "duplicate").inc()
                        return
                    await handler(conn, env, payload)
                self._attempts.pop(key, None)
                self.processed += 1
                EVENTS_CONSUMED.labels(self.group_id, env.type, "ok").inc()
                HANDLER_SECONDS.labels(self.group_id, env.type).observe(
                    time.perf_counter() - started
                )
                return
            except TRANSIENT as exc:
                # Database or network away: keep the offset and try again, never dead-letter.
                log.warning("handler_transient_failure", error=repr(exc))
                await asyncio.sleep(1.0)
                raise
            except RetryLater as exc:
                n = self._attempts[key] = self._attempts.get(key, 0) + 1
                if n >= self.retry_later_limit:
                    self._attempts.pop(key, None)
                    await self.dead_letter(producer, record, "gave_up_waiting", str(exc))
                    return
                await asyncio.sleep(min(0.05 * 2**n, 2.0))
            except Exception as exc:
                n = self._attempts[key] = self._attempts.get(key, 0) + 1
                log.exception("handler_failed", attempt=n)
                if n >= self.max_attempts:
                    self._attempts.pop(key, None)
                    await self.dead_letter(producer, record, "handler_failed", _reason(exc))
                    return
                await asyncio.sleep(min(0.1 * 2**n, 2.0))

    async def dead_letter(
        self, producer: AIOKafkaProducer, record: Any, reason: str, detail: str
    ) -> None:
        """Send the original bytes to the dead-letter topic with why, and carry on."""
        DEAD_LETTERS.labels(self.group_id, reason).inc()
        log.error(
            "dead_lettered", reason=reason, detail=detail, topic=record.topic, offset=record.offset
        )
        headers = [
            *list(record.headers or []),
            ("dlq_reason", reason.encode()),
            ("dlq_detail", detail[:4000].encode()),
            ("dlq_consumer", self.group_id.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
        ]
        await producer.send_and_wait(
            DEAD_LETTER.full_name(self.topic_prefix),
            value=record.value,
            key=record.key,
            headers=headers,
        )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return json.dumps(
            [
                {"field": ".".join(map(str, e["loc"])), "reason": e["msg"]}
                for e in exc.errors(include_url=False)
            ],
            ensure_ascii=False,
        )
    return f"{type(exc).__name__}: {exc}"
