"""Broker faults while dossiers flow, on Apache Kafka run locally.

- A three-node KRaft cluster (replication 3, ``min.insync.replicas=2``): one broker is
  SIGKILLed in the middle of 2,000 dossiers and started again.
- The single broker of ``make run``: stopped and started again mid-stream; the services
  reconnect by themselves.

Either way every dossier ends with exactly one receipt and one request per consulted
agency, and no event is applied twice. Counts are printed for the closing note.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import asyncpg
import httpx
import pytest

from deploy.kafka import KafkaUnavailable, LocalKafka, ensure_jars
from deploy.local import SmtpSink
from tests.e2e.checks import Submitter, settle_and_count
from tests.e2e.stack import Stack
from tests.e2e.test_walking_skeleton import desk

# A hang guard, not a timing assertion: 2,000 dossiers through three JVMs and the four
# services take several minutes on a loaded 2-core machine (the suite's default is 300 s).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def jars() -> Path:
    try:
        return ensure_jars()
    except KafkaUnavailable as exc:
        pytest.skip(f"Apache Kafka cannot run here: {exc}")


@pytest.fixture
def cluster(jars: Path, tmp_path: Path) -> Iterator[LocalKafka]:
    kafka = LocalKafka(tmp_path / "cluster", nodes=3)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def single(jars: Path, tmp_path: Path) -> Iterator[LocalKafka]:
    kafka = LocalKafka(tmp_path / "single")
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


def _stack(kafka: LocalKafka, database_url: str, prefix: str, logs: Path, smtp: SmtpSink) -> Stack:
    stack = Stack(
        bootstrap=kafka.bootstrap,
        database_url=database_url,
        topic_prefix=prefix,
        logs=logs,
        smtp_port=smtp.port,
        extra=kafka.client_env(),  # these brokers' own credentials, one principal a service
    )
    stack.start()
    stack.wait_ready(timeout=120)
    return stack


async def test_sigkill_one_of_three_brokers_mid_stream(
    cluster: LocalKafka,
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
    smtp: SmtpSink,
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
) -> None:
    stack = _stack(cluster, database_url, topic_prefix, tmp_path, smtp)
    try:
        submit = Submitter(http, stack.url("intake"), concurrency=32, headers=partial(desk, stack))
        started = time.monotonic()
        flow = asyncio.create_task(submit.run(2000))
        await submit.reached(600)
        victim = random.choice(cluster.nodes)
        victim.kill()
        killed_at = len(submit.accepted)
        await submit.reached(1400)
        victim.start()
        restarted_at = len(submit.accepted)
        await flow
        await asyncio.to_thread(cluster.wait_ready, 120)
        counts = await settle_and_count(
            db, cluster.bootstrap, topic_prefix, submit.accepted, cluster.admin
        )
        assert all(p.poll() is None for p in stack.procs.values()), "a service died"
    finally:
        stack.stop()
    print(
        f"\nbroker {victim.node_id} of 3 SIGKILLed after {killed_at} dossiers, restarted after"
        f" {restarted_at}; {time.monotonic() - started:.0f}s in all: {counts}"
    )
    assert counts["outbox_unpublished"] == 0


async def test_single_broker_stopped_and_started_mid_stream(
    single: LocalKafka,
    database_url: str,
    topic_prefix: str,
    tmp_path: Path,
    smtp: SmtpSink,
    http: httpx.AsyncClient,
    db: asyncpg.Connection,
) -> None:
    stack = _stack(single, database_url, topic_prefix, tmp_path, smtp)
    pids = {n: p.pid for n, p in stack.procs.items()}
    try:
        submit = Submitter(http, stack.url("intake"), concurrency=8, headers=partial(desk, stack))
        flow = asyncio.create_task(submit.run(600))
        await submit.reached(150)
        node = single.nodes[0]
        await asyncio.to_thread(node.stop)  # SIGTERM: a controlled shutdown
        stopped_at = len(submit.accepted)
        await asyncio.sleep(5)  # the desk keeps accepting: events wait in the outboxes
        down_accepted = len(submit.accepted) - stopped_at
        node.start()
        await asyncio.to_thread(single.wait_ready, 120)
        await flow
        counts = await settle_and_count(
            db, single.bootstrap, topic_prefix, submit.accepted, single.admin
        )
        alive = {n: p.pid for n, p in stack.procs.items() if p.poll() is None}
        assert alive == pids, "a service had to be restarted"
    finally:
        stack.stop()
    print(
        f"\nbroker stopped after {stopped_at} dossiers for 5 s ({down_accepted} accepted"
        f" meanwhile), started again; services never restarted: {counts}"
    )
    assert counts["outbox_unpublished"] == 0
