"""How long the console takes to rebuild its read models from the log: submit N dossiers
(10,000 by default) through the running stack, wait until every consumer group has caught
up, then replay every topic from offset 0 into a fresh schema and compare it with the live
one. Prints the flow time, the rebuild time and the comparison.

``.venv/bin/python -m bench.console_rebuild [--dossiers 10000]`` (not part of the tests)
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import broker, database, fresh_database
from deploy.local import ServiceStack, SmtpSink
from services.console.rebuild import rebuild
from services.runtime.kafka_auth import KafkaSecurity
from services.runtime.settings import ServiceSettings
from tests.e2e.checks import Submitter
from tests.e2e.test_walking_skeleton import RECEIVING


async def caught_up(http: httpx.AsyncClient, stack: ServiceStack) -> int:
    ops = stack.headers("000.00.00.H29", "operator")
    url = stack.url("console")
    last = -1
    while True:
        lag = (await http.get(f"{url}/v1/console/lag", headers=ops)).json()
        status = (await http.get(f"{url}/v1/console/status", headers=ops)).json()
        if sum(lag["totals"].values()) == 0 and status["events_total"] == last:
            return int(last)
        last = status["events_total"]
        await asyncio.sleep(3)


async def main(n: int) -> None:
    with database() as admin, broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        url = await fresh_database(admin)
        smtp = SmtpSink()
        smtp.start()
        stack = ServiceStack(
            bootstrap=bootstrap,
            database_url=url,
            topic_prefix="bench.",
            logs=Path(tmp),
            smtp_port=smtp.port,
        )
        stack.start()
        stack.wait_ready()
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                t = time.perf_counter()
                submitter = Submitter(
                    http,
                    stack.url("intake"),
                    concurrency=32,
                    headers=lambda b: stack.headers(RECEIVING[b["procedure_code"]]),
                    retry=True,
                )
                await submitter.run(n)
                events = await caught_up(http, stack)
                flowed = time.perf_counter() - t
            settings = ServiceSettings.for_service("console")
            settings.database_url = url
            settings.kafka_bootstrap_servers = bootstrap
            settings.topic_prefix = "bench."
            report = await rebuild(settings, security=KafkaSecurity.from_env())
        finally:
            stack.stop()
            smtp.stop()
    print(f"{n} dossiers, {events} events: flowed and settled in {flowed:.0f} s")
    for line in report.lines():
        print(line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dossiers", type=int, default=10_000)
    asyncio.run(main(parser.parse_args().dossiers))
