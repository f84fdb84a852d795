"""Checks shared by the fault and chaos tests: a submitter that counts what the desk
accepted, and the end state every dossier must reach, each effect exactly once."""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from contracts.topics import CONSULTATION, DOSSIER, NOTIFICATION, ROUTING
from services.runtime.kafka_auth import KafkaSecurity
from services.runtime.settings import ServiceSettings
from tests.e2e.stack import Stack
from tests.e2e.test_walking_skeleton import CONSULTED, EIA, PERMIT
from tests.helpers import eventually, read_all


class Submitter:
    """Submits dossiers with bounded concurrency, as a desk client would: each with its own
    Idempotency-Key, retried while the desk is away or busy; counts what was accepted."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        concurrency: int,
        *,
        headers: Callable[[dict[str, Any]], dict[str, str]] | None = None,
        retry: bool = False,
    ) -> None:
        self.http = http
        self.url = url
        self.headers = headers or (lambda _: {})
        self.sem = asyncio.Semaphore(concurrency)
        self.retry = retry
        self.run_id = uuid.uuid4().hex[:8]
        self.accepted: dict[str, str] = {}
        self.retries = 0

    async def one(self, i: int) -> None:
        base = PERMIT if i % 2 else EIA
        # every applicant has a phone of their own (an SMS limit counts per number)
        body = {**base, "applicant": {**base["applicant"], "phone": f"09{i % 10**8:08d}"}}
        key = {**self.headers(body), "Idempotency-Key": f"{self.run_id}-{i}"}
        deadline = time.monotonic() + 300
        async with self.sem:
            while True:
                try:
                    r = await self.http.post(f"{self.url}/v1/dossiers", json=body, headers=key)
                    if r.status_code in (201, 200) or not self.retry or r.status_code < 500:
                        break
                except httpx.TransportError:
                    if not self.retry or time.monotonic() > deadline:
                        raise
                if time.monotonic() > deadline:
                    raise AssertionError(f"dossier {i} not accepted within 300 s")
                self.retries += 1
                await asyncio.sleep(0.5)
        assert r.status_code in (200, 201), r.text
        self.accepted[r.json()["code"]] = body["procedure_code"]

    async def run(self, n: int, first: int = 0) -> None:
        """Submit dossiers ``first`` .. ``first + n - 1`` (each its own Idempotency-Key)."""
        await asyncio.gather(*(self.one(i) for i in range(first, first + n)))

    async def reached(self, n: int) -> None:
        await eventually(lambda: _count(self.accepted), lambda got: got >= n, timeout=300)


async def _count(accepted: dict[str, str]) -> int:
    return len(accepted)


async def settle_and_count(
    db: asyncpg.Connection,
    bootstrap: str,
    prefix: str,
    dossiers: dict[str, str],
    security: KafkaSecurity | None = None,
) -> dict[str, int]:
    """Wait until every effect is there, assert each exactly once, return the counts."""
    expected_requests = sum(CONSULTED[p] for p in dossiers.values())
    await eventually(
        lambda: db.fetchval("SELECT count(*) FROM consultation.requests"),
        lambda n: n >= expected_requests,
        timeout=300,
        interval=1,
    )
    await eventually(
        lambda: db.fetchval(
            "SELECT count(*) FROM notification.notifications"
            " WHERE kind='form01' AND channel='email'"
        ),
        lambda n: n >= len(dossiers),
        timeout=300,
        interval=1,
    )
    receipts = await db.fetch(
        "SELECT dossier_code, count(*) AS n FROM notification.notifications"
        " WHERE kind = 'form01' AND channel = 'email' GROUP BY dossier_code"
    )
    assert {r["dossier_code"] for r in receipts} == set(dossiers)
    assert all(r["n"] == 1 for r in receipts), "a receipt recorded twice"
    per_dossier = await db.fetch(
        "SELECT dossier_code, count(*) AS n, count(DISTINCT agency_id) AS agencies"
        " FROM consultation.requests GROUP BY dossier_code"
    )
    # an EIA dossier asks its opinions only after its appraisal council (issue 23, item 11)
    consulting = {c for c, p in dossiers.items() if CONSULTED[p]}
    assert {r["dossier_code"] for r in per_dossier} == consulting
    for r in per_dossier:
        assert r["n"] == r["agencies"] == CONSULTED[dossiers[r["dossier_code"]]]
    assert await db.fetchval("SELECT count(*) FROM routing.routes") == len(dossiers)

    async def unpublished() -> int:
        n = 0
        for schema in ("intake", "routing", "consultation", "notification"):
            n += await db.fetchval(
                f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
            )
        return n

    left = await eventually(unpublished, lambda n: n == 0, timeout=120, interval=0.5)

    # On the wire: an event id seen twice is a relay re-send (at-least-once); the inbox
    # must have absorbed it. The inboxes hold each event id at most once by their key.
    topics = {
        t.full_name(prefix): t.partitions for t in (DOSSIER, ROUTING, CONSULTATION, NOTIFICATION)
    }
    records = await read_all(bootstrap, topics, security)
    seen = collections.Counter(json.loads(r.value)["event_id"] for r in records)
    return {
        "dossiers": len(dossiers),
        "receipts": len(receipts),
        "requests": sum(r["n"] for r in per_dossier),
        "events_on_topics": len(records),
        "duplicate_events_on_topics": sum(n - 1 for n in seen.values() if n > 1),
        "effects_applied_twice": 0,  # asserted above: one receipt, one request per agency
        "outbox_unpublished": left,
    }


OPS = "000.00.00.H29"


def console_settings(stack: Stack) -> ServiceSettings:
    s = ServiceSettings.for_service("console")
    s.database_url = stack.database_url
    s.kafka_bootstrap_servers = stack.bootstrap
    s.topic_prefix = stack.topic_prefix
    return s


async def settled(http: httpx.AsyncClient, stack: Stack, timeout: float = 600) -> int:
    """Wait until every group's lag is 0 and the console's event count holds still."""
    ops = stack.headers(OPS, "operator")
    url = stack.url("console")

    async def probe() -> tuple[int, int]:
        lag = (await http.get(f"{url}/v1/console/lag", headers=ops)).json()
        status = (await http.get(f"{url}/v1/console/status", headers=ops)).json()
        return sum(lag["totals"].values()), status["events_total"]

    last = -1
    while True:
        _, events = await eventually(probe, lambda v: v[0] == 0, timeout=timeout, interval=2)
        if events == last:
            return events
        last = events
        await asyncio.sleep(3)
