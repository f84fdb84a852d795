"""Idempotent event consumption: inbox, dispatch by event type, parking, dead letters.

Each service has one consumer group subscribed to all its topics. For every message:

- parse and validate the envelope and its data; an undecodable event, an event type the
  contracts do not know, or a schema version newer than this code understands goes to the
  dead letters with the reason, and the consumer carries on;
- skip known types nobody here handles;
- otherwise, in one database transaction, record the event id in the inbox and apply the
  handler's effects (a redelivered event finds its id and has no second effect). The
  offset is committed only after that transaction commits.

Failures are told apart. A database or network that is away or busy (``is_transient``)
is retried in place with backoff, for as long as it takes, and never dead-lettered. An
event that must wait for something (``RetryLater``, e.g. a procedure not yet in the
catalogue) is parked under its subject (the dossier), and the subject's later events
queue behind it, except the types a consumer names as ``unblocking`` (what parked events
may be waiting for, from another topic); other dossiers go on, and a background loop
retries the parked ones in order. A handler that keeps failing dead-letters the event
after ``max_attempts``.

Every dead letter is stored whole in the service's own ``dead_letters`` table (once per
topic, partition and offset) and published to the service's own dead-letter topic (which
no other principal may write) with the reason in headers; one too large for the topic is
published as a reference to the stored copy, so no dead letter can wedge a partition.

A record whose key is not its event's subject is refused (``key_mismatch``): per-dossier
order rests on the key, so one producer's mistake must not be applied. An operator's
replay arrives on the service's replay topic (written by the console only) and is applied
only as the replay of a dead letter this consumer holds and has not had replayed, with
the same event id; anything else there is refused (``replay_refused``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from contracts.envelope import Envelope, EventPayload
from contracts.events import EVENT_TYPES, UnknownEventType, parse_payload
from contracts.topics import DEAD_LETTERS as DEAD_LETTER_TOPICS
from contracts.topics import REPLAYS, Topic
from services.runtime.db import is_transient
from services.runtime.logging import bound_contextvars, get_logger
from services.runtime.metrics import DEAD_LETTERS, EVENTS_CONSUMED, HANDLER_SECONDS, PARKED
from services.runtime.outbox import MAX_EVENT_BYTES

log = get_logger(__name__)

Handler = Callable[[asyncpg.Connection, Envelope, Any], Awaitable[None]]


class RetryLater(Exception):
    """The event cannot be applied yet (e.g. a catalogue entry has not arrived): park it."""


class ReplayRefused(Exception):
    """A record on the replay topic that is no replay of a dead letter this consumer holds."""


class _RefusedNow(Exception):
    """A parked record that the rules now refuse (parked before they were in force)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.detail)
        self.refusal = refusal


class _NeedsSavepoints(Exception):
    """A batch applied without savepoints met an event that must wait: undo, run again."""


@dataclass(frozen=True)
class Raw:
    """What a consumer keeps of a Kafka record: enough to park or dead-letter it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int | None = None
    """The record's broker timestamp (ms), where the consumer wants it."""

    @classmethod
    def of(cls, record: Any) -> Raw:
        return cls(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value or b"",
            headers=tuple((k, bytes(v)) for k, v in (record.headers or ())),
            timestamp=getattr(record, "timestamp", None),
        )

    def header_dict(self) -> dict[str, str]:
        return {k: v.decode("utf-8", "replace") for k, v in self.headers}


@dataclass(frozen=True)
class Refusal:
    """Why a record cannot be consumed: it goes to the dead letters."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Decoded:
    envelope: Envelope
    handler: Handler | None
    payload: EventPayload | None
    replay_of: int | None = None
    """The id of this consumer's dead letter the record replays (from the replay topic)."""


def read_envelope(raw: Raw) -> Envelope | Refusal:
    """The record's envelope, if it is one every consumer would take: valid (the contracts
    refuse text PostgreSQL cannot store), keyed by its subject, of a type the contracts
    know and a schema version this code understands. Every consumer, the console's
    included, decides the same on the same record."""
    try:
        env = Envelope.model_validate_json(raw.value)
    except (ValidationError, ValueError) as exc:
        return Refusal("invalid", failure_reason(exc))
    if raw.key != env.subject.encode():
        key = raw.key.decode("utf-8", "replace") if raw.key is not None else None
        return Refusal(
            "key_mismatch",
            f"the record's key {key!r} is not the event's subject {env.subject!r}",
        )
    model = EVENT_TYPES.get(env.type)
    if model is None:
        return Refusal("unknown_type", f"event type {env.type!r} is not in the contracts")
    if env.schema_version > model.schema_version:
        return Refusal(
            "unsupported_version",
            f"{env.type} schema_version {env.schema_version}; this consumer understands"
            f" up to {model.schema_version}",
        )
    return env


async def claim_replay(
    conn: asyncpg.Connection, consumer: str, replay_topic: str, entry: int, env: Envelope
) -> None:
    """Mark this consumer's dead letter ``entry`` replayed by ``env``, in the transaction
    that applies it. ``ReplayRefused`` unless the dead letter is this consumer's, came from
    a topic it consumes other than its replay topic (what the console writes there cannot
    make a dead letter to replay later), was not replayed yet, and held an event with the
    same id, type and subject as ``env``: a replay fixes an event, it brings no new one."""
    value = await conn.fetchval(
        "UPDATE dead_letters SET replayed_at = now() WHERE id = $1 AND consumer = $2"
        " AND topic <> $3 AND replayed_at IS NULL RETURNING value",
        entry,
        consumer,
        replay_topic,
    )
    if value is None:
        raise ReplayRefused(
            f"{consumer} holds no dead letter {entry} of a topic it consumes waiting for a replay"
        )
    try:
        held = json.loads(bytes(value))
    except ValueError:
        held = None
    if not isinstance(held, dict):
        raise ReplayRefused(f"dead letter {entry} held no event: nothing to replay")
    for name, carried in (
        ("event_id", str(env.event_id)),
        ("type", env.type),
        ("subject", env.subject),
    ):
        if held.get(name) != carried:
            raise ReplayRefused(
                f"dead letter {entry} held {name} {held.get(name)!r}; the replay carries"
                f" {carried!r}"
            )


def _undecoded(message: Any) -> None:
    """FastStream's decoder for our subscribers: none. ``on_batch`` reads the raw records
    and ``_decode`` validates each one against the contracts, so the framework's own JSON
    decoding of every body would only cost CPU and hold a second copy of the batch."""
    return None


@dataclass
class EventConsumer:
    """One consumer group, its topics and a handler per event type."""

    group_id: str
    topics: Sequence[Topic]
    handlers: dict[str, Handler]
    service: str
    """The service this consumer belongs to: it writes that service's dead-letter topic and
    reads its replay topic."""
    topic_prefix: str = ""
    max_attempts: int = 5
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    fetch_max_wait_ms: int = 500
    parked_give_up: timedelta = timedelta(hours=24)
    parked_poll_s: float = 1.0
    unblocking: frozenset[str] = frozenset()
    """Event types applied even while their subject has parked events, because those may be
    waiting for exactly them: notification's routing notices wait for the dossier's receipt,
    which travels on another topic and would otherwise queue behind them until they gave up.
    Applying one makes its subject's parked events due at once."""
    batch_size: int = 200
    """Records taken per fetch and applied in one transaction (``consume_batch``)."""
    partition_fetch_bytes: int = 256 * 1024
    """Bytes one fetch may take from one partition; with ``fetch_max_bytes`` it caps what a
    backlog can put in memory at once (the client's defaults are 1 MiB and 50 MiB)."""
    fetch_max_bytes: int = 2 * 1024 * 1024
    processed: int = 0
    subscriber: Any = None
    _attempts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.service not in DEAD_LETTER_TOPICS:
            raise ValueError(f"a consumer needs its service's name, not {self.service!r}")
        replays = REPLAYS.get(self.service)
        self._replay_topic = replays.full_name(self.topic_prefix) if replays else None

    def register(
        self,
        broker: KafkaBroker,
        pool: Callable[[], asyncpg.Pool],
        producer: Callable[[], AIOKafkaProducer],
    ) -> None:
        """Attach the subscriber to ``broker``; pool and producer are looked up per call."""
        names = [t.full_name(self.topic_prefix) for t in self.topics]

        async def on_batch(message: KafkaMessage) -> None:
            records = message.raw_message
            if not isinstance(records, tuple):
                records = (records,)
            await self.consume_batch([Raw.of(r) for r in records], pool(), producer())

        # A batch is what one fetch returned (up to ``batch_size`` records, any partitions);
        # its offsets are committed once, after every record of it is settled.
        self.subscriber = broker.subscriber(
            *names,
            batch=True,
            max_records=self.batch_size,
            batch_timeout_ms=self.fetch_max_wait_ms,
            group_id=self.group_id,
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            max_poll_records=self.batch_size,
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            max_partition_fetch_bytes=self.partition_fetch_bytes,
            fetch_max_bytes=self.fetch_max_bytes,
            decoder=_undecoded,
        )
        self.subscriber(on_batch)

    def assigned(self) -> bool:
        consumer = getattr(self.subscriber, "consumer", None)
        return bool(consumer is not None and consumer.assignment())

    async def handle(self, message: Any, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        await self.consume(Raw.of(message.raw_message), pool, producer)

    async def consume(self, raw: Raw, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        """Apply, skip, park or dead-letter one record; returns once it is settled."""
        decoded = self._decode(raw)
        if isinstance(decoded, Refusal):
            await self.dead_letter(pool, producer, raw, decoded.reason, decoded.detail)
            return
        env, handler, payload = decoded.envelope, decoded.handler, decoded.payload
        if handler is None:
            EVENTS_CONSUMED.labels(self.group_id, env.type, "ignored").inc()
            return
        with bound_contextvars(
            dossier_code=env.subject, correlation_id=str(env.correlation_id), event=env.type
        ):
            await self._apply(pool, producer, raw, env, payload, handler)

    async def consume_batch(
        self, raws: Sequence[Raw], pool: asyncpg.Pool, producer: AIOKafkaProducer
    ) -> None:
        """Settle a batch of records in their order: what cannot be consumed is
        dead-lettered, what nobody here handles is skipped, and the rest is applied in
        **one** transaction (inbox rows inserted together, one savepoint per event so an
        event that must wait is parked without undoing the others). Same outcomes as
        ``consume`` one record at a time: a transient failure retries the whole batch in
        place; any other failure falls back to ``consume`` record by record, which counts
        attempts and dead-letters as before. Records of one dossier stay in their order
        (a batch is applied in sequence), and a dossier with a parked event parks the
        rest of its events in the batch behind it."""
        work: list[tuple[Raw, Envelope, EventPayload | None, Handler]] = []
        replays: list[tuple[Raw, Decoded]] = []
        for raw in raws:
            decoded = self._decode(raw)
            if isinstance(decoded, Refusal):
                await self.dead_letter(pool, producer, raw, decoded.reason, decoded.detail)
            elif decoded.handler is None:
                EVENTS_CONSUMED.labels(self.group_id, decoded.envelope.type, "ignored").inc()
            elif decoded.replay_of is not None:
                replays.append((raw, decoded))  # rare: each on its own, after the batch
            else:
                work.append((raw, decoded.envelope, decoded.payload, decoded.handler))
        await self._consume_work(work, pool, producer)
        for raw, d in replays:
            assert d.handler is not None
            with bound_contextvars(
                dossier_code=d.envelope.subject,
                correlation_id=str(d.envelope.correlation_id),
                event=d.envelope.type,
            ):
                await self._apply(pool, producer, raw, d.envelope, d.payload, d.handler)

    async def _consume_work(
        self,
        work: list[tuple[Raw, Envelope, EventPayload | None, Handler]],
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
    ) -> None:
        if not work:
            return
        if len(work) == 1:
            raw, env, payload, handler = work[0]
            with bound_contextvars(
                dossier_code=env.subject, correlation_id=str(env.correlation_id), event=env.type
            ):
                await self._apply(pool, producer, raw, env, payload, handler)
            return
        started = time.perf_counter()
        transient = 0
        savepoints = False
        while True:
            try:
                outcomes = await self._batch_transaction(pool, work, savepoints)
                break
            except _NeedsSavepoints:
                savepoints = True  # an event must wait: again, each event in a savepoint
                continue
            except Exception as exc:
                if is_transient(exc):
                    transient += 1
                    log.warning("batch_transient_failure", attempt=transient, error=repr(exc))
                    await asyncio.sleep(min(0.2 * 2**transient, 10.0))
                    continue
                log.warning("batch_failed_one_by_one", size=len(work), error=repr(exc))
                for raw, env, payload, handler in work:
                    with bound_contextvars(
                        dossier_code=env.subject,
                        correlation_id=str(env.correlation_id),
                        event=env.type,
                    ):
                        await self._apply(pool, producer, raw, env, payload, handler)
                return
        elapsed = (time.perf_counter() - started) / len(work)
        for (_raw, env, _payload, _handler), outcome in zip(work, outcomes, strict=True):
            self._attempts.pop(str(env.event_id), None)
            if outcome == "applied":
                self.processed += 1
                HANDLER_SECONDS.labels(self.group_id, env.type).observe(elapsed)
            elif outcome == "waiting":
                log.warning("event_parked", reason="waiting", dossier_code=env.subject)
                outcome = "parked"
            EVENTS_CONSUMED.labels(self.group_id, env.type, outcome).inc()

    async def _batch_transaction(
        self,
        pool: asyncpg.Pool,
        work: Sequence[tuple[Raw, Envelope, EventPayload | None, Handler]],
        savepoints: bool,
    ) -> list[str]:
        """Apply ``work`` in one transaction; the outcome of each event in order.

        Without ``savepoints`` (the usual case) handlers run straight in the transaction,
        two round trips fewer per event; an event that must wait (``RetryLater``) then
        undoes the whole batch with ``_NeedsSavepoints``, and the caller runs it again
        with a savepoint per event, so the waiting one is parked and the others kept."""
        outcomes: list[str] = []
        async with pool.acquire() as conn, conn.transaction():
            subjects = list({env.subject for _, env, _, _ in work})
            waiting = {
                r["subject"]
                for r in await conn.fetch(
                    "SELECT DISTINCT subject FROM parked WHERE consumer = $1"
                    " AND subject = ANY($2::text[])",
                    self.group_id,
                    subjects,
                )
            }
            ids = [env.event_id for _, env, _, _ in work]
            fresh = {
                r["event_id"]
                for r in await conn.fetch(
                    "INSERT INTO inbox(consumer, event_id, event_type)"
                    " SELECT $1, e.id, e.type FROM unnest($2::uuid[], $3::text[]) AS e(id, type)"
                    " ON CONFLICT DO NOTHING RETURNING event_id",
                    self.group_id,
                    ids,
                    [env.type for _, env, _, _ in work],
                )
            }
            unrecorded: list[Any] = []  # inbox rows of events parked instead of applied
            for raw, env, payload, handler in work:
                if env.event_id not in fresh:
                    outcomes.append("duplicate")
                    continue
                fresh.discard(env.event_id)  # a second copy in the batch is a duplicate
                blocked = env.subject in waiting
                if blocked and env.type not in self.unblocking:
                    await _insert_parked(conn, self.group_id, raw, env, "behind a parked event")
                    unrecorded.append(env.event_id)
                    outcomes.append("parked")
                    continue
                try:
                    with bound_contextvars(
                        dossier_code=env.subject,
                        correlation_id=str(env.correlation_id),
                        event=env.type,
                    ):
                        if savepoints:
                            async with conn.transaction():
                                await handler(conn, env, payload)
                        else:
                            await handler(conn, env, payload)
                except RetryLater as exc:
                    if not savepoints:
                        raise _NeedsSavepoints from exc
                    await _insert_parked(conn, self.group_id, raw, env, f"waiting: {exc}")
                    unrecorded.append(env.event_id)
                    waiting.add(env.subject)
                    outcomes.append("waiting")
                    continue
                if blocked:  # what the parked events waited for may be here now
                    await conn.execute(
                        "UPDATE parked SET next_attempt_at = now()"
                        " WHERE consumer = $1 AND subject = $2",
                        self.group_id,
                        env.subject,
                    )
                outcomes.append("applied")
            if unrecorded:
                await conn.execute(
                    "DELETE FROM inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
                    self.group_id,
                    unrecorded,
                )
        return outcomes

    def _decode(self, raw: Raw) -> Decoded | Refusal:
        env = read_envelope(raw)
        if isinstance(env, Refusal):
            return env
        replay_of: int | None = None
        if raw.topic == self._replay_topic:
            try:
                replay_of = int(raw.header_dict()["replay_of"])
            except (KeyError, ValueError):
                return Refusal("replay_refused", "a replay names no dead letter (replay_of)")
        handler = self.handlers.get(env.type)
        if handler is None:
            if replay_of is not None:
                return Refusal("replay_refused", f"{self.group_id} does not handle {env.type}")
            return Decoded(env, None, None)
        try:
            payload = parse_payload(env.type, env.data)
        except (ValidationError, UnknownEventType, ValueError) as exc:
            return Refusal("invalid", failure_reason(exc))
        if replay_of is None:
            return Decoded(env, handler, payload)

        async def replayed(
            conn: asyncpg.Connection, env: Envelope, payload: Any, _entry: int = replay_of
        ) -> None:
            assert self._replay_topic is not None
            await claim_replay(conn, self.group_id, self._replay_topic, _entry, env)
            await handler(conn, env, payload)

        return Decoded(env, replayed, payload, replay_of)

    async def _apply(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        raw: Raw,
        env: Envelope,
        payload: EventPayload | None,
        handler: Handler,
    ) -> None:
        key = str(env.event_id)
        started = time.perf_counter()
        transient = 0
        while True:
            try:
                outcome = await self._transaction(pool, raw, env, payload, handler)
            except RetryLater as exc:
                await self._park(pool, raw, env, f"waiting: {exc}")
                return
            except ReplayRefused as exc:
                self._attempts.pop(key, None)
                await self.dead_letter(pool, producer, raw, "replay_refused", str(exc))
                return
            except Exception as exc:
                if is_transient(exc):
                    transient += 1
                    log.warning("handler_transient_failure", attempt=transient, error=repr(exc))
                    await asyncio.sleep(min(0.2 * 2**transient, 10.0))
                    continue
                n = self._attempts[key] = self._attempts.get(key, 0) + 1
                log.exception("handler_failed", attempt=n)
                if n >= self.max_attempts:
                    self._attempts.pop(key, None)
                    await self.dead_letter(
                        pool, producer, raw, "handler_failed", failure_reason(exc)
                    )
                    return
                await asyncio.sleep(min(0.1 * 2**n, 2.0))
                continue
            self._attempts.pop(key, None)
            if outcome == "applied":
                self.processed += 1
                HANDLER_SECONDS.labels(self.group_id, env.type).observe(
                    time.perf_counter() - started
                )
            EVENTS_CONSUMED.labels(self.group_id, env.type, outcome).inc()
            return

    async def _transaction(
        self,
        pool: asyncpg.Pool,
        raw: Raw,
        env: Envelope,
        payload: EventPayload | None,
        handler: Handler,
    ) -> str:
        """Inbox and effects in one transaction; ``parked`` if the subject has events
        waiting (this one queues behind them), ``duplicate`` if seen before."""
        async with pool.acquire() as conn, conn.transaction():
            waiting = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM parked WHERE consumer = $1 AND subject = $2)",
                self.group_id,
                env.subject,
            )
            if waiting and env.type not in self.unblocking:
                await _insert_parked(conn, self.group_id, raw, env, "behind a parked event")
                return "parked"
            if not await self._record(conn, env):
                await self._settle_duplicate_replay(conn, raw, env)
                return "duplicate"
            await handler(conn, env, payload)
            if waiting:  # what the parked events waited for may be here now: try them
                await conn.execute(
                    "UPDATE parked SET next_attempt_at = now()"
                    " WHERE consumer = $1 AND subject = $2",
                    self.group_id,
                    env.subject,
                )
        return "applied"

    async def _settle_duplicate_replay(
        self, conn: asyncpg.Connection, raw: Raw, env: Envelope
    ) -> None:
        """A replay of an event this consumer has applied since (another copy came): no
        second effect, but its dead letter is settled, as the console shows it replayed."""
        if raw.topic != self._replay_topic or self._replay_topic is None:
            return
        try:
            entry = int(raw.header_dict()["replay_of"])
            async with conn.transaction():
                await claim_replay(conn, self.group_id, self._replay_topic, entry, env)
        except (KeyError, ValueError, ReplayRefused):
            pass  # nothing to settle: the duplicate has no effect either way

    async def _record(self, conn: asyncpg.Connection, env: Envelope) -> bool:
        """Record the event in the inbox; False if this consumer has applied it before."""
        fresh = await conn.fetchval(
            "INSERT INTO inbox(consumer, event_id, event_type) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING true",
            self.group_id,
            env.event_id,
            env.type,
        )
        return bool(fresh)

    async def _park(self, pool: asyncpg.Pool, raw: Raw, env: Envelope, reason: str) -> None:
        while True:
            try:
                async with pool.acquire() as conn:
                    await _insert_parked(conn, self.group_id, raw, env, reason)
                break
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await asyncio.sleep(1.0)
        EVENTS_CONSUMED.labels(self.group_id, env.type, "parked").inc()
        log.warning("event_parked", reason=reason)

    async def retry_parked(self, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> int:
        """Try the oldest parked event of each subject that is due; returns how many were
        settled (applied, or given up and dead-lettered)."""
        settled = 0
        while True:
            async with pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    row = await conn.fetchrow(
                        "SELECT * FROM parked p WHERE consumer = $1 AND next_attempt_at <= now()"
                        " AND NOT EXISTS (SELECT 1 FROM parked q WHERE q.consumer = p.consumer"
                        "   AND q.subject = p.subject AND q.id < p.id)"
                        " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                        self.group_id,
                    )
                    if row is None:
                        await tx.rollback()
                        return settled
                    outcome = await self._retry_one(conn, row)
                except Exception as exc:
                    await tx.rollback()
                    if is_transient(exc):
                        raise
                    log.exception("parked_handler_failed", event_id=str(row["event_id"]))
                    if isinstance(exc, ReplayRefused):
                        await self._give_up(pool, producer, row, "replay_refused", str(exc))
                        settled += 1
                    elif isinstance(exc, _RefusedNow):
                        refusal = exc.refusal
                        await self._give_up(pool, producer, row, refusal.reason, refusal.detail)
                        settled += 1
                    elif row["attempts"] + 1 >= self.max_attempts:
                        await self._give_up(
                            pool, producer, row, "handler_failed", failure_reason(exc)
                        )
                        settled += 1
                    else:
                        await self._postpone(pool, row)
                    continue
                except BaseException:
                    await tx.rollback()
                    raise
                if outcome == "wait":
                    await tx.rollback()
                    if await self._expired(pool, row):
                        await self._give_up(pool, producer, row, "gave_up_waiting", "")
                        settled += 1
                    else:
                        await self._postpone(pool, row)
                    continue
                await tx.commit()
                settled += 1

    async def _retry_one(self, conn: asyncpg.Connection, row: asyncpg.Record) -> str:
        raw = _raw_of(row)
        decoded = self._decode(raw)
        if isinstance(decoded, Refusal):  # parked before a rule it breaks: a dead letter
            raise _RefusedNow(decoded)
        if decoded.handler is None:
            await conn.execute("DELETE FROM parked WHERE id = $1", row["id"])
            return "dropped"
        env, handler, payload = decoded.envelope, decoded.handler, decoded.payload
        try:
            async with conn.transaction():
                if await self._record(conn, env):
                    await handler(conn, env, payload)
                else:
                    await self._settle_duplicate_replay(conn, raw, env)
        except RetryLater:
            return "wait"
        await conn.execute("DELETE FROM parked WHERE id = $1", row["id"])
        EVENTS_CONSUMED.labels(self.group_id, env.type, "unparked").inc()
        return "applied"

    async def _postpone(self, pool: asyncpg.Pool, row: asyncpg.Record) -> None:
        attempts = row["attempts"] + 1
        await pool.execute(
            "UPDATE parked SET attempts = $2,"
            " next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
            row["id"],
            attempts,
            min(0.5 * 2**attempts, 10.0),
        )

    async def _expired(self, pool: asyncpg.Pool, row: asyncpg.Record) -> bool:
        return bool(
            await pool.fetchval(
                "SELECT parked_at < now() - $2::interval FROM parked WHERE id = $1",
                row["id"],
                self.parked_give_up,
            )
        )

    async def _give_up(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        row: asyncpg.Record,
        reason: str,
        detail: str,
    ) -> None:
        """Dead-letter a parked event; the subject's next parked event moves up."""
        await self.dead_letter(
            pool,
            producer,
            _raw_of(row),
            reason,
            f"{detail or row['reason']}; parked since {row['parked_at'].isoformat()}",
        )
        await pool.execute("DELETE FROM parked WHERE id = $1", row["id"])

    async def run_parked(self, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        """Background loop: retry parked events, and keep the gauge current."""
        while True:
            try:
                await self.retry_parked(pool, producer)
                PARKED.set(
                    await pool.fetchval(
                        "SELECT count(*) FROM parked WHERE consumer = $1", self.group_id
                    )
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("parked_retry_failed", error=repr(exc))
            await asyncio.sleep(self.parked_poll_s)

    async def dead_letter(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        raw: Raw,
        reason: str,
        detail: str,
    ) -> None:
        """Keep the original record with why, publish it to the dead-letter topic (or a
        reference to the stored copy when it is too large), and carry on."""
        stored_id = await self._store_dead_letter(pool, raw, reason, detail)
        if stored_id is None:  # this record was dead-lettered before (a redelivery)
            return
        DEAD_LETTERS.labels(self.group_id, reason).inc()
        log.error(
            "dead_lettered",
            reason=reason,
            detail=detail[:500],
            topic=raw.topic,
            offset=raw.offset,
            stored=stored_id,
        )
        headers = [
            *((k, v) for k, v in raw.headers if not k.startswith("dlq_")),  # ours alone
            ("dlq_reason", reason.encode()),
            ("dlq_detail", detail[:4000].encode()),
            ("dlq_consumer", self.group_id.encode()),
            ("dlq_topic", raw.topic.encode()),
            ("dlq_partition", str(raw.partition).encode()),
            ("dlq_offset", str(raw.offset).encode()),
            ("dlq_stored_id", str(stored_id).encode()),
        ]
        value = raw.value
        if len(value) > MAX_EVENT_BYTES:
            headers.append(("dlq_value", b"stored"))
            value = json.dumps(
                {"stored_id": stored_id, "consumer": self.group_id, "size": len(raw.value)}
            ).encode()
        try:
            await producer.send_and_wait(
                DEAD_LETTER_TOPICS[self.service].full_name(self.topic_prefix),
                value=value,
                key=raw.key,
                headers=headers,
            )
        except Exception as exc:  # stored anyway: an operator sees it and can replay it
            log.error("dead_letter_not_published", stored=stored_id, error=repr(exc))
            return
        await pool.execute("UPDATE dead_letters SET published = true WHERE id = $1", stored_id)

    async def _store_dead_letter(
        self, pool: asyncpg.Pool, raw: Raw, reason: str, detail: str
    ) -> int | None:
        while True:
            try:
                stored: int | None = await pool.fetchval(
                    'INSERT INTO dead_letters(consumer, topic, partition, "offset", key, value,'
                    " headers, reason, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                    ' ON CONFLICT (consumer, topic, partition, "offset") DO NOTHING'
                    " RETURNING id",
                    self.group_id,
                    raw.topic,
                    raw.partition,
                    raw.offset,
                    raw.key,
                    raw.value,
                    raw.header_dict(),
                    reason,
                    detail,
                )
                return stored
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("dead_letter_store_waiting", error=repr(exc))
                await asyncio.sleep(1.0)


async def _insert_parked(
    conn: asyncpg.Connection, consumer: str, raw: Raw, env: Envelope, reason: str
) -> None:
    await conn.execute(
        "INSERT INTO parked(consumer, subject, event_id, event_type, topic, partition,"
        ' "offset", key, value, headers, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,'
        ' $10, $11) ON CONFLICT (consumer, topic, partition, "offset") DO NOTHING',
        consumer,
        env.subject,
        env.event_id,
        env.type,
        raw.topic,
        raw.partition,
        raw.offset,
        raw.key,
        raw.value,
        raw.header_dict(),
        reason[:2000],
    )


def _raw_of(row: asyncpg.Record) -> Raw:
    return Raw(
        topic=row["topic"],
        partition=row["partition"],
        offset=row["offset"],
        key=row["key"],
        value=bytes(row["value"]),
        headers=tuple((k, v.encode()) for k, v in (row["headers"] or {}).items()),
    )


def failure_reason(exc: Exception) -> str:
    """Why a record failed, as a dead letter says it: the fields and reasons of a
    validation error, else the exception."""
    if isinstance(exc, ValidationError):
        return json.dumps(
            [
                {"field": ".".join(map(str, e["loc"])), "reason": e["msg"]}
                for e in exc.errors(include_url=False)
            ],
            ensure_ascii=False,
        )
    return f"{type(exc).__name__}: {exc}"
