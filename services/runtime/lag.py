"""Consumer lag as Kafka defines it: per group, topic and partition, the log end offset
minus the group's committed offset.

The probe asks the group coordinator for committed offsets and the partition leaders for
end offsets, so it reports what ``kafka-consumer-groups --describe`` reports, for every
partition of the group's topics and whichever replica consumes it. A partition the group
has never committed counts from its log start (the services read from the earliest
offset), where the Kafka tool shows "-".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.runtime.kafka_auth import KafkaSecurity
from services.runtime.metrics import CONSUMER_LAG


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int

    def as_dict(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
        }


class LagProbe:
    """An admin client and a group-less consumer, kept open between reads."""

    def __init__(
        self,
        bootstrap: str,
        client_id: str = "lienthong-lag",
        security: KafkaSecurity | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.security = security or KafkaSecurity.from_env()
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            request_timeout_ms=5000,
            **self.security.kwargs(),
        )
        await self._admin.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self.client_id,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=5000,
            **self.security.kwargs(),
        )
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
        self._admin = self._consumer = None

    async def groups(self, prefix: str = "") -> list[str]:
        """Consumer groups whose name starts with ``prefix``."""
        admin = await self._ready()
        listed = await admin.list_consumer_groups()
        return sorted(g[0] for g in listed if g[0].startswith(prefix))

    async def group_lag(
        self, group: str, topics: Iterable[str] | None = None
    ) -> list[PartitionLag]:
        """Lag of every partition of ``topics`` (default: the topics the group committed on)."""
        async with self._lock:
            admin = await self._ready()
            assert self._consumer is not None
            committed = await admin.list_consumer_group_offsets(group)
            names = set(topics) if topics is not None else {tp.topic for tp in committed}
            if not names:
                return []
            partitions = [
                TopicPartition(t["topic"], p["partition"])
                for t in await admin.describe_topics(sorted(names))
                if not t.get("error_code")
                for p in t["partitions"]
            ]
            ends = await self._consumer.end_offsets(partitions)
            starts = await self._consumer.beginning_offsets(partitions)
        rows = []
        for tp in sorted(partitions):
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else None
            base = done if done is not None else starts[tp]
            rows.append(
                PartitionLag(group, tp.topic, tp.partition, done, ends[tp], max(0, ends[tp] - base))
            )
        return rows

    async def _ready(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            await self.start()
        assert self._admin is not None
        return self._admin


def export(rows: Iterable[PartitionLag]) -> int:
    """Set the ``lienthong_consumer_lag`` gauge from ``rows``; returns the total lag."""
    total = 0
    for r in rows:
        CONSUMER_LAG.labels(r.group, r.topic, str(r.partition)).set(r.lag)
        total += r.lag
    return total
