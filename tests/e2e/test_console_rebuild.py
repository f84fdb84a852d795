"""The console's read models rebuilt from the log equal the live ones, after 2,000
dossiers flowed through the running stack; the rebuild time prints."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from services.console.rebuild import rebuild
from services.runtime.kafka_auth import KafkaSecurity
from services.runtime.settings import ServiceSettings
from tests.e2e.checks import Submitter
from tests.e2e.stack import Stack
from tests.e2e.test_walking_skeleton import desk
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

DOSSIERS = 2000
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


async def test_rebuild_after_2000_dossiers_equals_the_live_read_models(
    stack: Stack, http: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    submitter = Submitter(
        http, stack.url("intake"), concurrency=32, headers=lambda b: desk(stack, b)
    )
    await submitter.run(DOSSIERS)
    assert len(submitter.accepted) == DOSSIERS
    events = await settled(http, stack)
    flowed = time.monotonic() - started
    report = await rebuild(console_settings(stack), security=KafkaSecurity.from_env())
    print(f"\n{DOSSIERS} dossiers flowed and settled in {flowed:.0f} s ({events} events)")
    print("\n".join(report.lines()))
    assert report.equal, report.lines()
    live_dossiers, rebuilt_dossiers = report.counts["dossiers"]
    assert live_dossiers == rebuilt_dossiers == DOSSIERS
