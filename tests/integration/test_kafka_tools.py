"""Kafka's own tools, from the same jars as the broker, work on our topics, and our lag
figures are the ones ``kafka-consumer-groups`` reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from contracts.topics import DOSSIER, TOPICS
from deploy.kafka import KafkaUnavailable, ensure_jars, run_tool
from services.runtime.broker import ensure_topics
from services.runtime.lag import LagProbe
from tests.helpers import kafka_kwargs


@pytest.fixture(scope="module")
def jars() -> Path:
    try:
        return ensure_jars()
    except KafkaUnavailable as exc:
        pytest.skip(f"Kafka's tools cannot run here: {exc}")


async def tool(name: str, *args: str, bootstrap: str) -> str:
    result = await asyncio.to_thread(run_tool, name, list(args), bootstrap)
    assert result.returncode == 0, result.stderr
    return result.stdout


def described(output: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """``kafka-consumer-groups --describe`` rows: (topic, partition) -> (current, end, lag)."""
    rows = {}
    for line in output.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[3].isdigit() and cols[4].isdigit():
            rows[(cols[1], int(cols[2]))] = (int(cols[3]), int(cols[4]), int(cols[5]))
    return rows


async def test_lag_matches_kafka_consumer_groups_and_tools_work(
    jars: Path, kafka_bootstrap: str, topic_prefix: str
) -> None:
    await ensure_topics(kafka_bootstrap, topic_prefix)
    topic = DOSSIER.full_name(topic_prefix)
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, enable_idempotence=True, **kafka_kwargs()
    )
    await producer.start()
    try:
        for i in range(60):
            await producer.send(topic, f"event {i}".encode(), partition=i % DOSSIER.partitions)
        await producer.flush()
    finally:
        await producer.stop()

    # A group that committed part of the way on some partitions, none on others.
    group = f"{topic_prefix}lienthong-lagcheck"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        **kafka_kwargs(),
    )
    await consumer.start()
    try:
        committed = {TopicPartition(topic, p): OffsetAndMetadata(p + 1, "") for p in range(4)}
        consumer.assign(list(committed))
        await consumer.commit(committed)
    finally:
        await consumer.stop()

    probe = LagProbe(kafka_bootstrap)
    try:
        ours = {(r.topic, r.partition): r for r in await probe.group_lag(group, [topic])}
        assert group in await probe.groups(topic_prefix)
    finally:
        await probe.stop()
    assert len(ours) == DOSSIER.partitions
    theirs = described(
        await tool("consumer-groups", "--describe", "--group", group, bootstrap=kafka_bootstrap)
    )
    assert set(theirs) == {(topic, p) for p in range(4)}
    for key, (current, end, lag) in theirs.items():
        assert (ours[key].committed, ours[key].end, ours[key].lag) == (current, end, lag)
    assert ours[(topic, 5)].committed is None and ours[(topic, 5)].lag == 10

    # The operator's recipes from the README.
    listed = await tool("topics", "--list", bootstrap=kafka_bootstrap)
    assert {t.full_name(topic_prefix) for t in TOPICS} <= set(listed.split())
    groups = await tool("consumer-groups", "--list", bootstrap=kafka_bootstrap)
    assert group in groups.split()
    read = await tool(
        "console-consumer",
        "--topic",
        topic,
        "--partition",
        "0",
        "--offset",
        "earliest",
        "--max-messages",
        "3",
        "--timeout-ms",
        "15000",
        bootstrap=kafka_bootstrap,
    )
    assert read.split("\n")[:3] == ["event 0", "event 6", "event 12"]
    await tool(
        "consumer-groups",
        "--reset-offsets",
        "--group",
        group,
        "--topic",
        topic,
        "--to-earliest",
        "--execute",
        bootstrap=kafka_bootstrap,
    )
    probe = LagProbe(kafka_bootstrap)
    try:
        after = await probe.group_lag(group, [topic])
    finally:
        await probe.stop()
    assert [r.committed for r in after] == [0] * DOSSIER.partitions
    assert sum(r.lag for r in after) == 60
