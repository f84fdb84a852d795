"""Small helpers shared by integration and end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from services.runtime.kafka_auth import KafkaSecurity

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
