"""Kafka clients: FastStream broker for subscribers, a plain producer, topic creation."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker

from contracts.topics import TOPICS


def make_broker(bootstrap: str, client_id: str) -> KafkaBroker:
    """A FastStream broker; idempotence stays off (the embedded broker does not have it)."""
    return KafkaBroker(
        bootstrap,
        client_id=client_id,
        enable_idempotence=False,
        logger=logging.getLogger(f"faststream.{client_id}"),
        graceful_timeout=10.0,
        log_level=logging.DEBUG,  # one line per message is too much at INFO
    )


def make_producer(bootstrap: str, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        request_timeout_ms=15000,
    )


async def ensure_topics(bootstrap: str, prefix: str = "", attempts: int = 30) -> list[str]:
    """Create every contract topic that does not exist yet; returns the ones created."""
    last: Exception | None = None
    for _ in range(attempts):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="lienthong-admin")
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(t.full_name(prefix), num_partitions=t.partitions, replication_factor=1)
                for t in TOPICS
                if t.full_name(prefix) not in existing
            ]
            created = []
            for topic in wanted:
                try:
                    await admin.create_topics([topic])
                    created.append(topic.name)
                except TopicAlreadyExistsError:
                    pass
            return created
        except TopicAlreadyExistsError:
            return []
        except Exception as exc:  # broker still starting
            last = exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    raise RuntimeError(f"could not create topics on {bootstrap}: {last!r}")
