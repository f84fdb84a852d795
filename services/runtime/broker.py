"""Kafka clients: FastStream broker for subscribers, a plain producer, topic creation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)
from faststream.kafka import KafkaBroker

from contracts.topics import TOPICS, Topic
from services.runtime.kafka_auth import KafkaSecurity


class TopicSetupError(RuntimeError):
    """The broker refused a topic as asked (not a broker still starting)."""


def make_broker(
    bootstrap: str, client_id: str, security: KafkaSecurity | None = None
) -> KafkaBroker:
    """A FastStream broker for subscribers; its own producer is idempotent as well.
    ``security`` defaults to the environment's (``KafkaSecurity.from_env``)."""
    security = security or KafkaSecurity.from_env()
    return KafkaBroker(
        [h.strip() for h in bootstrap.split(",") if h.strip()],
        client_id=client_id,
        security=security.faststream(),
        # Topics are created beforehand (ensure_topics; with ACLs, the admin's provision):
        # a service's principal may not create them, so FastStream must not try.
        allow_auto_create_topics=False,
        enable_idempotence=True,
        acks="all",
        logger=logging.getLogger(f"faststream.{client_id}"),
        graceful_timeout=10.0,
        log_level=logging.DEBUG,  # one line per message is too much at INFO
    )


def make_producer(
    bootstrap: str, client_id: str, security: KafkaSecurity | None = None
) -> AIOKafkaProducer:
    """The outbox relay's producer: idempotent, so a retried batch is neither doubled nor
    reordered within a partition (per-key order holds), and acknowledged by every in-sync
    replica."""
    security = security or KafkaSecurity.from_env()
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        max_batch_size=256 * 1024,  # 16 KiB by default: 16 of our events a request
        request_timeout_ms=30000,
        **security.kwargs(),
    )


async def ensure_topics(
    bootstrap: str,
    prefix: str = "",
    attempts: int = 60,
    replication: int | None = None,
    *,
    security: KafkaSecurity | None = None,
    topics: Sequence[Topic] = TOPICS,
) -> list[str]:
    """Create every topic of ``topics`` (default: all contract topics) that does not exist
    yet; returns the ones created.

    Replication follows the cluster: 3 with ``min.insync.replicas=2`` when there are three
    brokers or more (an acknowledged event survives the loss of one), else 1. With ACLs only
    the admin may create; a service's principal sees (and checks) just its own topics."""
    security = security or KafkaSecurity.from_env()
    last: Exception | None = None
    for _ in range(attempts):
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="lienthong-admin", **security.kwargs()
        )
        try:
            await admin.start()
            brokers = len((await admin.describe_cluster())["brokers"])
            rf = replication or min(3, brokers)
            configs = {"min.insync.replicas": "2" if rf >= 3 else "1"}
            existing = set(await admin.list_topics())
            wanted = [
                NewTopic(
                    t.full_name(prefix),
                    num_partitions=t.partitions,
                    replication_factor=rf,
                    topic_configs=configs,
                )
                for t in topics
                if t.full_name(prefix) not in existing
            ]
            if not wanted:
                return []
            response = await admin.create_topics(wanted)
            created = []
            for name, code, *rest in response.topic_errors:
                if code == 0:
                    created.append(name)
                elif code == TopicAuthorizationFailedError.errno:
                    raise TopicSetupError(
                        f"topic {name} is missing and {security.username or 'this client'}"
                        " may not create it: create topics and ACLs with the admin principal"
                        " (services.runtime.acl.provision) before starting the service"
                    )
                elif code != TopicAlreadyExistsError.errno:
                    raise TopicSetupError(f"creating topic {name} failed: error {code} {rest}")
            return created
        except TopicSetupError:
            raise
        except Exception as exc:  # broker still starting
            last = exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    raise KafkaConnectionError(f"could not create topics on {bootstrap}: {last!r}")
