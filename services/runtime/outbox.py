"""Transactional outbox: events are rows written with the state change, relayed later.

An event larger than ``MAX_EVENT_BYTES`` is refused when it is written, so the state
change that caused it rolls back with it instead of reaching a broker that would refuse it.

The relay wakes on NOTIFY from the outbox trigger and polls as a fallback. One replica of
a service relays at a time (a PostgreSQL advisory lock held on the relay's own
connection; the others stand by and take over when its session ends), so every key's
events leave in the order they were written. It hands a whole batch to the producer at
once (the records of a partition leave in id order, several in one request), awaits all
the broker's acknowledgements together and then marks the batch in one statement: a crash
in between re-sends them (at-least-once; consumers dedupe by event id). The next batch is
read only after that: were it sent while the previous one's acknowledgements were still
out, a failed previous batch would be re-sent after later events of the same keys had
already been accepted, and consumers would see those keys' events out of order. A row
the broker refuses for what it is (too large, invalid) is set aside with the reason and
never blocks the rows behind it; a broker that is away leaves every row pending for the
next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    UnsupportedForMessageFormatError,
)

from contracts.envelope import Envelope, EventPayload, new_envelope
from contracts.topics import topic_for
from services.runtime.clock import Clock
from services.runtime.logging import get_logger
from services.runtime.metrics import (
    EVENTS_PUBLISHED,
    OUTBOX_FAILED,
    OUTBOX_PENDING,
    OUTBOX_SET_ASIDE,
    RELAY_LATENCY,
)

log = get_logger(__name__)

# Well under the broker's default max.message.bytes (1 MiB) and the producer's request
# limit, with room for headers and the dead-letter topic's extra headers.
MAX_EVENT_BYTES = 256 * 1024

# What the broker or the client refuses because of the record itself: retrying the same
# row can never succeed. Anything else (broker away, leader moving, not authorised yet) is
# a condition of the cluster and is retried.
ROW_ERRORS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    CorruptRecordException,
    UnsupportedForMessageFormatError,
)


class EventTooLarge(ValueError):
    """An event over ``MAX_EVENT_BYTES``; the transaction writing it must not commit."""

    def __init__(self, event_type: str, size: int) -> None:
        super().__init__(
            f"event {event_type} would be {size} bytes, over the {MAX_EVENT_BYTES}-byte limit"
        )
        self.event_type = event_type
        self.size = size


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
        body = env.model_dump_json()
        size = len(body.encode()) + len(subject.encode())
        if size > MAX_EVENT_BYTES:
            raise EventTooLarge(env.type, size)
        await conn.execute(
            "INSERT INTO outbox(event_id, topic, key, event_type, payload, headers)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
            env.event_id,
            topic_for(env.type).full_name(self.topic_prefix),
            subject,
            env.type,
            body,
            kafka_headers(env),
        )
        return env


class Wait(Protocol):
    """Something a loop waits on: a ``Waker``, or a share of one."""

    async def wait(self, seconds: float) -> None: ...


async def drain_until_closed(
    run_once: Callable[[], Awaitable[int]],
    *,
    closing: Callable[[], bool],
    batch_size: int,
    poll_interval: float,
    waker: Wait | None,
    what: str,
) -> None:
    """Call ``run_once`` until ``closing()``: again at once after a full batch, else after
    a wake-up or ``poll_interval``; a failure is logged and tried again a second later (a
    failure while closing ends the loop). The claim → send → mark loops of every service."""
    while not closing():
        try:
            n = await run_once()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if closing():
                break
            log.warning("loop_failed", loop=what, error=repr(exc))
            await asyncio.sleep(1.0)
            continue
        if n >= batch_size:
            continue
        if waker is not None:
            await waker.wait(poll_interval)
        else:
            await asyncio.sleep(poll_interval)


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
    """Moves outbox rows to Kafka, one replica at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        waker: Waker,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        lock_name: str = "outbox",
    ) -> None:
        self.pool = pool
        self.producer = producer
        self.waker = waker
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lock_name = lock_name
        self.published = 0
        self.set_aside = 0
        self._leader: asyncpg.pool.PoolConnectionProxy | None = None

    async def _lead(self) -> asyncpg.pool.PoolConnectionProxy | None:
        """The connection holding the relay lock of this schema, or None if another
        replica holds it. The lock lives as long as the connection."""
        if self._leader is not None:
            try:
                alive = not self._leader.is_closed()
            except asyncpg.InterfaceError:  # the pool took the connection back
                alive = False
            if alive:
                return self._leader
            await self.resign()
        conn = await self.pool.acquire()
        try:
            got = await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtextextended("
                " current_schema() || '.' || $1::text, 0))",
                self.lock_name,
            )
        except BaseException:
            await self.pool.release(conn)
            raise
        if not got:
            await self.pool.release(conn)
            return None
        self._leader = conn
        log.info("outbox_relay_leading")
        return conn

    async def resign(self) -> None:
        """Give the lock (and the connection) back, so a standby replica takes over."""
        conn, self._leader = self._leader, None
        if conn is None:
            return
        try:
            if not conn.is_closed():
                await conn.execute("SELECT pg_advisory_unlock_all()")
        except Exception:
            conn.terminate()  # the pool does not reset sessions: never hand the lock on
        with contextlib.suppress(Exception):
            await self.pool.release(conn)

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many rows it settled (published
        or set aside). Raises when the broker or the database is away."""
        conn = await self._lead()
        if conn is None:
            return 0
        try:
            rows = await conn.fetch(
                "SELECT id, topic, key, event_type, payload, headers, created_at FROM outbox"
                " WHERE published_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT $1",
                self.batch_size,
            )
        except BaseException:
            await self.resign()
            raise
        if not rows:
            return 0
        sent: list[tuple[asyncpg.Record, asyncio.Future[object]]] = []
        refused: list[tuple[asyncpg.Record, BaseException]] = []
        for r in rows:
            try:
                future = await self.producer.send(
                    r["topic"],
                    value=r["payload"].encode(),
                    key=r["key"].encode(),
                    headers=[(k, str(v).encode()) for k, v in r["headers"].items()],
                )
            except ROW_ERRORS as refusal:  # refused by the client before it left
                refused.append((r, refusal))
                continue
            sent.append((r, future))
        results = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        published: list[asyncpg.Record] = []
        away: BaseException | None = None
        for (r, _), result in zip(sent, results, strict=True):
            if isinstance(result, ROW_ERRORS):
                refused.append((r, result))
            elif isinstance(result, BaseException):
                away = away or result
            else:
                published.append(r)
        try:
            # One statement marks the whole batch, published and set aside, at one time.
            acked = (
                await conn.fetchval(
                    "WITH acked AS (SELECT clock_timestamp() AS at),"
                    " published AS (UPDATE outbox SET published_at = (SELECT at FROM acked)"
                    "  WHERE id = ANY($1::bigint[])),"
                    " set_aside AS (UPDATE outbox o SET failed_at = (SELECT at FROM acked),"
                    "  failure = f.failure FROM unnest($2::bigint[], $3::text[]) AS f(id, failure)"
                    "  WHERE o.id = f.id)"
                    " SELECT at FROM acked",
                    [r["id"] for r in published],
                    [r["id"] for r, _ in refused],
                    [f"{type(why).__name__}: {why}"[:2000] for _, why in refused],
                )
                if published or refused
                else None
            )
        except BaseException:
            await self.resign()
            raise
        for r, why in refused:
            OUTBOX_SET_ASIDE.labels(r["topic"]).inc()
            log.error(
                "outbox_row_set_aside",
                outbox_id=r["id"],
                event_type=r["event_type"],
                dossier_code=r["key"],
                error=repr(why),
            )
        for r in published:
            EVENTS_PUBLISHED.labels(r["topic"]).inc()
            if acked is not None:
                RELAY_LATENCY.observe(max(0.0, (acked - r["created_at"]).total_seconds()))
        self.published += len(published)
        self.set_aside += len(refused)
        if away is not None:
            raise away
        return len(published) + len(refused)

    async def run(self) -> None:
        try:
            while True:
                try:
                    n = await self.relay_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("outbox_relay_failed", error=repr(exc))
                    await self.resign()  # lead again on a fresh connection
                    await asyncio.sleep(1.0)
                    continue
                if n < self.batch_size:
                    await self.waker.wait(self.poll_interval)
        finally:
            await self.resign()

    async def pending(self) -> int:
        row = await self.pool.fetchrow(
            "SELECT count(*) FILTER (WHERE failed_at IS NULL) AS pending,"
            " count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed"
            " FROM outbox WHERE published_at IS NULL"
        )
        OUTBOX_PENDING.set(row["pending"])
        OUTBOX_FAILED.set(row["failed"])
        return int(row["pending"])


async def failed_rows(pool: asyncpg.Pool, limit: int = 100) -> list[dict[str, object]]:
    """Outbox rows set aside, newest first, for operators."""
    rows = await pool.fetch(
        "SELECT id, event_id, topic, key, event_type, length(payload) AS size, created_at,"
        " failed_at, failure FROM outbox WHERE failed_at IS NOT NULL AND published_at IS NULL"
        " ORDER BY id DESC LIMIT $1",
        limit,
    )
    return [dict(r) for r in rows]


async def retry_row(pool: asyncpg.Pool, row_id: int) -> bool:
    """Put a set-aside row back in line (after its cause was fixed)."""
    result: str = await pool.execute(
        "UPDATE outbox SET failed_at = NULL, failure = NULL"
        " WHERE id = $1 AND failed_at IS NOT NULL AND published_at IS NULL",
        row_id,
    )
    return result.endswith(" 1")
