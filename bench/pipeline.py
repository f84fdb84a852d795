"""End-to-end latency of a dossier, against the raw broker measured in the same run.

Baselines: raw produce and consume rates of 1 KiB messages on a topic laid out as ours
(6 partitions, idempotent producer, acks=all, a consumer group); and one message produced
and consumed through the same broker, 50 times in a row (the raw hop). Pipeline: the four services as processes; 50 dossiers
submitted one at a time, then a burst of 200 at once. Latency is read from the services'
own records: receipt sent (notification) and last opinion request opened (consultation)
minus receipt at the desk (intake).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from bench.common import broker, database, fresh_database, kafka_kwargs, pct
from deploy.local import ServiceStack, SmtpSink
from services.runtime.broker import ensure_topics

console = Console()
PERMIT = {
    "procedure_code": "1.009972",
    "channel": 1,
    "applicant": {
        "name": "Công ty TNHH Minh Long",
        "object_type": 2,
        "id_number": "0101234567",
        "email": "ml@example.vn",
    },
    "documents": [{"code": "DDN"}, {"code": "QSDD"}, {"code": "BVTK"}],
}


async def raw_hop(bootstrap: str, n: int = 50) -> list[float]:
    topic = f"bench-hop-{time.time_ns()}"
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_kwargs())
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id="bench-hop",
        auto_offset_reset="earliest",
        **kafka_kwargs(),
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, **kafka_kwargs())
    await consumer.start()
    await producer.start()
    await producer.send_and_wait(topic, b"warm-up")
    await consumer.getone()
    out = []
    for i in range(n):
        t = time.perf_counter()
        await producer.send_and_wait(topic, str(i).encode())
        await consumer.getone()
        out.append(time.perf_counter() - t)
    await producer.stop()
    await consumer.stop()
    return out


async def raw_throughput(bootstrap: str, n: int = 50_000, size: int = 1024) -> tuple[float, float]:
    """Produce ``n`` keyed messages of ``size`` bytes, then consume them in a group: msg/s."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    topic = f"bench-raw-{time.time_ns()}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **kafka_kwargs())
    await admin.start()
    await admin.create_topics([NewTopic(topic, 6, 1)])
    await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_batch_size=256 * 1024,
        **kafka_kwargs(),
    )
    await producer.start()
    value = b"x" * size
    t = time.perf_counter()
    futures = [
        await producer.send(topic, value, key=f"000.00.01.H29-{i % 5000:06d}".encode())
        for i in range(n)
    ]
    await asyncio.gather(*futures)
    produce = n / (time.perf_counter() - t)
    await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-group",
        auto_offset_reset="earliest",
        max_poll_records=500,
        **kafka_kwargs(),
    )
    await consumer.start()
    got = 0
    t = time.perf_counter()
    while got < n:
        batch = await consumer.getmany(timeout_ms=1000)
        got += sum(len(records) for records in batch.values())
    consume = n / (time.perf_counter() - t)
    await consumer.stop()
    return produce, consume


async def latencies(db: asyncpg.Connection, codes: list[str]) -> tuple[list[float], list[float]]:
    receipt = await db.fetch(
        "SELECT extract(epoch FROM n.sent_at - d.received_at)::float8 AS s FROM intake.dossiers d"
        " JOIN notification.notifications n ON n.dossier_code = d.code AND n.kind = 'form01'"
        " AND n.channel = 'email'"
        " WHERE d.code = ANY($1)",
        codes,
    )
    opened = await db.fetch(
        "SELECT extract(epoch FROM max(r.requested_at) - min(d.received_at))::float8 AS s"
        " FROM intake.dossiers d JOIN consultation.requests r ON r.dossier_code = d.code"
        " WHERE d.code = ANY($1) GROUP BY d.code",
        codes,
    )
    return [r["s"] for r in receipt], [r["s"] for r in opened]


async def wait_all(db: asyncpg.Connection, codes: list[str], timeout: float = 120) -> float:
    t = time.perf_counter()
    while await db.fetchval(
        "SELECT count(*) FROM notification.notifications WHERE status = 'sent'"
        " AND kind = 'form01' AND channel = 'email' AND dossier_code = ANY($1)",
        codes,
    ) < len(codes):
        if time.perf_counter() - t > timeout:
            raise TimeoutError("receipts did not all arrive")
        await asyncio.sleep(0.05)
    return time.perf_counter() - t


async def main() -> None:
    with database() as admin, broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        produce_rate, consume_rate = await raw_throughput(bootstrap)
        hop = await raw_hop(bootstrap)
        url = await fresh_database(admin)
        await ensure_topics(bootstrap)
        smtp = SmtpSink()
        smtp.start()
        stack = ServiceStack(
            bootstrap=bootstrap,
            database_url=url,
            topic_prefix="bench.",
            logs=Path(tmp),
            smtp_port=smtp.port,
        )
        t = time.perf_counter()
        stack.start()
        stack.wait_ready()
        startup = time.perf_counter() - t
        db = await asyncpg.connect(url)
        try:
            async with httpx.AsyncClient(timeout=30) as http:
                intake = stack.url("intake")
                desk = stack.headers("000.00.01.H29")  # PERMIT's receiving agency
                seq = []
                for _ in range(50):
                    r = await http.post(f"{intake}/v1/dossiers", json=PERMIT, headers=desk)
                    seq.append(r.json()["code"])
                    await wait_all(db, seq[-1:])
                receipt, opened = await latencies(db, seq)
                t = time.perf_counter()
                sem = asyncio.Semaphore(32)

                async def submit() -> str:
                    async with sem:
                        r = await http.post(f"{intake}/v1/dossiers", json=PERMIT, headers=desk)
                        return str(r.json()["code"])

                burst = await asyncio.gather(*(submit() for _ in range(200)))
                accepted = time.perf_counter() - t
                await wait_all(db, burst)
                burst_total = time.perf_counter() - t
                b_receipt, _ = await latencies(db, burst)
        finally:
            await db.close()
            stack.stop()
            smtp.stop()
    base = pct(hop, 50)
    table = Table(title="Dossier pipeline vs raw broker hop (same run)")
    for col in ("", "p50", "p99", "p50 / raw hop p50"):
        table.add_column(col, justify="right")
    table.add_row(
        "raw broker hop (produce→consume)",
        f"{base * 1e3:.1f} ms",
        f"{pct(hop, 99) * 1e3:.1f} ms",
        "1x",
    )
    table.add_row(
        "dossier → receipt sent (2 hops + SMTP)",
        f"{pct(receipt, 50) * 1e3:.0f} ms",
        f"{pct(receipt, 99) * 1e3:.0f} ms",
        f"{pct(receipt, 50) / base:.0f}x",
    )
    table.add_row(
        "dossier → 3 requests opened (3 hops)",
        f"{pct(opened, 50) * 1e3:.0f} ms",
        f"{pct(opened, 99) * 1e3:.0f} ms",
        f"{pct(opened, 50) / base:.0f}x",
    )
    table.add_row(
        "burst of 200: receipt latency",
        f"{pct(b_receipt, 50) * 1e3:.0f} ms",
        f"{pct(b_receipt, 99) * 1e3:.0f} ms",
        f"{pct(b_receipt, 50) / base:.0f}x",
    )
    console.print(table)
    console.print(
        f"raw broker, 1 KiB messages, 6 partitions: produce {produce_rate:,.0f} msg/s"
        f" ({produce_rate / 1024:.1f} MiB/s), consume {consume_rate:,.0f} msg/s"
        f" ({consume_rate / 1024:.1f} MiB/s); burst pipeline {200 / burst_total:.0f} dossiers/s"
        f" = {200 / burst_total / produce_rate:.4f}x raw produce"
    )
    console.print(
        f"services ready in {startup:.1f}s; burst of 200 accepted in {accepted:.1f}s "
        f"({200 / accepted:.0f}/s), all receipts sent after {burst_total:.1f}s"
    )


if __name__ == "__main__":
    asyncio.run(main())
