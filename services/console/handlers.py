"""The console's subscriber: every topic, the dead-letter topic raw.

``apply_record`` is the one apply path, used by the live consumer and by the rebuild
(services/console/rebuild.py): inbox, the event row, the folds, in the caller's
transaction. Records the console cannot read are skipped, never dead-lettered by it: the
services that own them dead-letter them, and a dead letter is never dead-lettered again.
What it cannot read is decided as every consumer decides it (``read_envelope``: invalid,
key not the subject, unknown type or version). Each consumer's dead letters come on a
topic of its own, which tells who wrote them.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError

from contracts.envelope import Envelope
from contracts.events import parse_payload
from contracts.topics import DEAD_LETTERS
from services.console import store
from services.console.domain import (
    DOSSIER_RE,
    DOSSIER_TYPES,
    agencies_in,
    dead_letter_row,
    mask_data,
)
from services.runtime.consumer import EventConsumer, Raw, Refusal, failure_reason, read_envelope
from services.runtime.db import is_transient
from services.runtime.logging import get_logger
from services.runtime.metrics import EVENTS_CONSUMED

log = get_logger(__name__)
DLQ_NAMESPACE = uuid.UUID("6f1c2a52-9c55-4a53-8f0e-2d0c4d6b6c01")


def decode(rec: Raw) -> Envelope | None:
    """The envelope if every consumer would take the record and its data is valid."""
    env = read_envelope(rec)
    if isinstance(env, Refusal):
        return None
    try:
        parse_payload(env.type, env.data)
    except (ValidationError, ValueError):
        return None
    return env


@functools.cache
def writers(prefix: str) -> dict[str, str]:
    """Each dead-letter topic's full name to the one service that may write it."""
    return {t.full_name(prefix): name for name, t in DEAD_LETTERS.items()}


async def apply_record(conn: asyncpg.Connection, rec: Raw, consumer: str, prefix: str) -> str:
    """Apply one record in the caller's transaction: ``applied``, ``duplicate`` or
    ``skipped`` (not an event the console can read)."""
    writer = writers(prefix).get(rec.topic)
    if writer is not None:
        ref = uuid.uuid5(DLQ_NAMESPACE, f"{rec.topic}:{rec.partition}:{rec.offset}")
        if not await store.record_inbox(conn, consumer, ref, "dead-letter"):
            return "duplicate"
        row = dead_letter_row(
            writer,
            rec.partition,
            rec.offset,
            rec.key,
            rec.value,
            rec.headers,
            rec.timestamp,
            prefix,
        )
        await store.insert_dead_letter(conn, row)
        return "applied"
    env = decode(rec)
    if env is None:
        return "skipped"
    if not await store.record_inbox(conn, consumer, env.event_id, env.type):
        return "duplicate"
    code = env.subject if DOSSIER_RE.match(env.subject) else None
    await store.insert_event(
        conn,
        {
            "event_id": env.event_id,
            "type": env.type,
            "schema_version": env.schema_version,
            "topic": rec.topic,
            "partition": rec.partition,
            '"offset"': rec.offset,
            "subject": env.subject,
            "dossier_code": code,
            "agencies": agencies_in(env.data, code),
            "correlation_id": env.correlation_id,
            "causation_id": env.causation_id,
            "occurred_at": env.occurred_at,
            "producer": env.producer,
            "data": mask_data(env.data),
        },
    )
    if code and env.type in DOSSIER_TYPES:
        await store.refold_dossier(conn, code)
    request_id = env.data.get("request_id")
    if request_id and env.type.startswith("consultation."):
        await store.refold_request(conn, str(request_id))
    return "applied"


class ConsoleConsumer(EventConsumer):
    """The runtime's consumer with the console's own apply path: every record, raw. A
    fetched batch is applied in one transaction, in its order; if any record of it fails
    for a reason other than a transient one, the batch is applied again record by record,
    each with its attempts and, at the end of them, a dead letter."""

    async def handle(self, message: Any, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        await self._one(Raw.of(message.raw_message), pool, producer)

    async def consume_batch(
        self, raws: Sequence[Raw], pool: asyncpg.Pool, producer: AIOKafkaProducer
    ) -> None:
        recs = list(raws)
        if len(recs) == 1:
            await self._one(recs[0], pool, producer)
            return
        prefix = self.topic_prefix
        transient = 0
        while True:
            try:
                async with pool.acquire() as conn, conn.transaction():
                    outcomes = [
                        await apply_record(conn, rec, self.group_id, prefix) for rec in recs
                    ]
                break
            except Exception as exc:
                if is_transient(exc):
                    transient += 1
                    log.warning("console_transient_failure", attempt=transient, error=repr(exc))
                    await asyncio.sleep(min(0.2 * 2**transient, 10.0))
                    continue
                log.warning("console_batch_one_by_one", size=len(recs), error=repr(exc))
                for rec in recs:
                    await self._one(rec, pool, producer)
                return
        for rec, outcome in zip(recs, outcomes, strict=True):
            self._count(rec, outcome)

    def _count(self, rec: Raw, outcome: str) -> None:
        if outcome == "applied":
            self.processed += 1
        kind = "dead-letter" if rec.topic in writers(self.topic_prefix) else "event"
        EVENTS_CONSUMED.labels(self.group_id, kind, outcome).inc()

    async def _one(self, rec: Raw, pool: asyncpg.Pool, producer: AIOKafkaProducer) -> None:
        attempts = transient = 0
        while True:
            try:
                async with pool.acquire() as conn, conn.transaction():
                    outcome = await apply_record(conn, rec, self.group_id, self.topic_prefix)
            except Exception as exc:
                if is_transient(exc):
                    transient += 1
                    log.warning("console_transient_failure", attempt=transient, error=repr(exc))
                    await asyncio.sleep(min(0.2 * 2**transient, 10.0))
                    continue
                attempts += 1
                log.exception("console_apply_failed", attempt=attempts, topic=rec.topic)
                if attempts < self.max_attempts:
                    await asyncio.sleep(min(0.1 * 2**attempts, 2.0))
                    continue
                if rec.topic in writers(self.topic_prefix):  # never dead-letter a dead letter
                    log.error("dead_letter_unreadable", offset=rec.offset, error=repr(exc))
                    return
                await self.dead_letter(pool, producer, rec, "handler_failed", failure_reason(exc))
                return
            self._count(rec, outcome)
            return
