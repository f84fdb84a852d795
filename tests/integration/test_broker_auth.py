"""The broker refuses forged events: SASL/SCRAM per service with ACLs (issue 8).

A forged ``consultation.round_completed`` would move a dossier on; the broker refuses it
from a client with no or wrong credentials, and from a service that does not own the topic.
A service cannot read a topic it does not consume, nor join another service's group.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from contracts.envelope import new_envelope
from contracts.events import ConsultationRoundCompleted
from contracts.topics import CONSULTATION, DOSSIER, NOTIFICATION, ROUTING, Topic
from services.runtime.acl import group_id
from services.runtime.kafka_auth import KafkaSecurity
from tests.helpers import send_as

CODE = "000.00.01.H29-261123-0001"


def forged() -> bytes:
    payload = ConsultationRoundCompleted(code=CODE, outcomes=(), completed_at=datetime.now(UTC))
    env = new_envelope(
        payload, subject=CODE, producer="consultation", occurred_at=datetime.now(UTC)
    )
    return env.model_dump_json().encode()


async def produce(bootstrap: str, security: KafkaSecurity, topic: str) -> None:
    await send_as(bootstrap, security, topic, forged(), CODE)


async def end_offsets(bootstrap: str, topic: Topic, prefix: str) -> int:
    """How many records the topic holds, read by the admin."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, **KafkaSecurity.from_env().kwargs()
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic.full_name(prefix), p) for p in range(topic.partitions)]
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


@pytest.mark.parametrize("credentials", ["none", "wrong password", "unknown user"])
async def test_a_client_without_valid_credentials_cannot_connect(
    kafka_bootstrap: str, secured: dict[str, str], topic_prefix: str, credentials: str
) -> None:
    own = KafkaSecurity.from_env("consultation", secured)
    security = {
        "none": KafkaSecurity(),
        "wrong password": KafkaSecurity(own.protocol, own.mechanism, own.username, "guess"),
        "unknown user": KafkaSecurity(own.protocol, own.mechanism, "mallory", "x"),
    }[credentials]
    with pytest.raises(KafkaConnectionError):
        await produce(kafka_bootstrap, security, CONSULTATION.full_name(topic_prefix))
    assert await end_offsets(kafka_bootstrap, CONSULTATION, topic_prefix) == 0


async def test_a_service_cannot_publish_on_another_services_topic(
    kafka_bootstrap: str, secured: dict[str, str], topic_prefix: str
) -> None:
    notification = KafkaSecurity.from_env("notification", secured)
    with pytest.raises(TopicAuthorizationFailedError):
        await produce(kafka_bootstrap, notification, CONSULTATION.full_name(topic_prefix))
    assert await end_offsets(kafka_bootstrap, CONSULTATION, topic_prefix) == 0
    # the owner may; and notification may on its own topic
    await produce(
        kafka_bootstrap,
        KafkaSecurity.from_env("consultation", secured),
        CONSULTATION.full_name(topic_prefix),
    )
    await produce(kafka_bootstrap, notification, NOTIFICATION.full_name(topic_prefix))
    assert await end_offsets(kafka_bootstrap, CONSULTATION, topic_prefix) == 1


async def read_one(bootstrap: str, security: KafkaSecurity, topic: str, group: str | None) -> None:
    """Join ``group`` (or none) on ``topic`` and poll once."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=5000,
        **security.kwargs(),
    )
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=3000)
    finally:
        await consumer.stop()


async def test_a_service_reads_only_what_it_consumes_in_its_own_group(
    kafka_bootstrap: str, secured: dict[str, str], topic_prefix: str
) -> None:
    consultation = KafkaSecurity.from_env("consultation", secured)
    own_group = group_id("consultation", topic_prefix)
    # consultation consumes routing and dossier, never notification
    with pytest.raises(TopicAuthorizationFailedError):
        await read_one(
            kafka_bootstrap, consultation, NOTIFICATION.full_name(topic_prefix), own_group
        )
    with pytest.raises(TopicAuthorizationFailedError):
        await read_one(kafka_bootstrap, consultation, NOTIFICATION.full_name(topic_prefix), None)
    # a topic it consumes, but in routing's group
    with pytest.raises(GroupAuthorizationFailedError):
        await read_one(
            kafka_bootstrap,
            consultation,
            DOSSIER.full_name(topic_prefix),
            group_id("routing", topic_prefix),
        )
    # in its own group, what it consumes
    await read_one(kafka_bootstrap, consultation, ROUTING.full_name(topic_prefix), own_group)
