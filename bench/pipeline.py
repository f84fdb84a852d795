"""The dossier pipeline end to end, against the raw broker measured in the same run.

Everything runs as it does in the end-to-end tests: Apache Kafka and PostgreSQL (embedded
unless ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` name them), the four services as
processes (``deploy.local.ServiceStack``) and an SMTP sink in a process of its own.

Baseline (same run, same broker): raw produce and consume of real ``dossier.received``
envelopes on topics laid out as the pipeline's (``contracts.topics``: 6 partitions), keyed
by dossier code, with the outbox relay's producer (``make_producer``: idempotent,
``acks=all``, linger 2 ms) and a consumer group with the services' consumer settings
(``max_poll_records=200``, ``fetch_max_wait_ms=500``); and one message's hop
(produce → consume) with the same clients.

Pipeline, load spread over the sample catalogue (every procedure; a commune-level one at
every commune one-stop desk of the agency book in turn, any other at the desk its catalogue
names), each dossier complete so it is received, routed and, for the liên thông
procedures, consulted:

- *sustained*: ``--clients`` concurrent clients (closed loop) submit for ``--duration``
  seconds; a dossier is *done* when its receipt email was sent (notification) and every
  opinion request of its procedure is open (consultation). Dossiers/s = done ÷ (last done
  − first submitted), events/s = outbox rows published by the four services in the same
  window. CPU seconds of every process (services, broker, database with its backends,
  SMTP sink, the load generator) are read from the kernel over the same window, and over
  10 s of no load before it (what the idle system burns).
- *latency*: open loop at each ``--rates`` (requests sent on a schedule, whatever the
  answers), ``--samples`` each; latency = receipt sent (the service's clock) − the moment
  the request was due to be sent (so a slow answer cannot hide the queue behind it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.table import Table

from bench import procs
from bench.common import broker, database, fresh_database, kafka_kwargs, pct
from contracts.agencies import default_book
from contracts.common import CompetenceLevel
from contracts.topics import DOSSIER, TOPICS
from deploy.load import ClientPool, locality, receiving_desks
from deploy.local import SERVICES, ServiceStack
from deploy.ports import free_port, wait_for_port
from services.intake.domain import Catalogue
from services.runtime.broker import ensure_topics, make_producer

console = Console()
CITIZEN_ID, ORGANISATION_ID = "079123456789", "0101234567"


@dataclass(frozen=True)
class Kind:
    """One procedure of the mix: the body to submit, at which desk, what it opens."""

    procedure: str
    desk: str
    body: dict[str, Any]
    requests: int  # opinion requests consultation opens for it


def mix() -> list[Kind]:
    """Every procedure in force in the sample catalogue, complete; the liên thông ones
    (with consultations) twice as often, as they carry the load. A commune-level
    procedure is received at every commune one-stop desk in turn (as a province's load
    is: each desk's daily serials end at 9,999), any other at its own desk; the
    applicant's and the land's wards turn too, so the competent wards share the work."""
    book = default_book()
    communes = book.desks(CompetenceLevel.COMMUNE)
    kinds: list[Kind] = []
    for p in Catalogue.load().current():
        org = 2 in [int(o) for o in p.eligible_object_types]
        body = {
            "procedure_code": p.code,
            "channel": 1,
            "applicant": {
                "name": "Công ty TNHH Minh Long" if org else "Nguyễn Văn An",
                "object_type": 2 if org else 1,
                "id_number": ORGANISATION_ID if org else CITIZEN_ID,
                "email": "nop-ho-so@example.vn",
            },
            "documents": [{"code": d.code} for d in p.required_documents],
        }
        desks = receiving_desks(p, communes)
        weight = (2 if p.consultations else 1) * len(communes)
        for i in range(weight):
            desk = desks[i % len(desks)]
            # the applicant's and the land's wards run one ahead of the desk, so the
            # decisions of residence- and property-bound dossiers spread over every ward
            local = locality({**body, "receiving_agency": desk}, i + 1)
            kinds.append(Kind(p.code, desk, local, len(p.consultations)))
    return kinds


# --- the raw broker, same run -----------------------------------------------------------


async def sample_value(url: str) -> tuple[bytes, dict[str, str]] | None:
    """A real ``dossier.received`` envelope from the warm-up, as the relay sent it."""
    db = await asyncpg.connect(url)
    try:
        row = await db.fetchrow(
            "SELECT payload, headers FROM intake.outbox WHERE event_type = 'dossier.received'"
            " ORDER BY id LIMIT 1"
        )
    finally:
        await db.close()
    return (row["payload"].encode(), json.loads(row["headers"])) if row else None


async def raw_broker(
    bootstrap: str, value: bytes, headers: dict[str, str], n: int, hops: int
) -> dict[str, Any]:
    """Produce ``n`` envelopes with the relay's producer onto a dossier topic laid out as
    the pipeline's, consume them in a group with the services' settings, then time
    ``hops`` single produce → consume hops on the same topic and clients."""
    prefix = f"bench-raw-{time.time_ns()}."
    await ensure_topics(bootstrap, prefix, topics=TOPICS)
    topic = DOSSIER.full_name(prefix)
    producer = make_producer(bootstrap, "bench-raw")
    await producer.start()
    hdrs = [(k, v.encode()) for k, v in headers.items()]
    keys = [f"000.00.01.H29-260101-{i:05d}".encode() for i in range(n)]
    t = time.perf_counter()
    futures = [await producer.send(topic, value, key=k, headers=hdrs) for k in keys]
    await asyncio.gather(*futures)
    produce = n / (time.perf_counter() - t)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{prefix}group",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=200,
        fetch_max_wait_ms=500,
        session_timeout_ms=10000,
        heartbeat_interval_ms=3000,
        **kafka_kwargs(),
    )
    await consumer.start()
    got, t = 0, time.perf_counter()
    while got < n:
        batch = await consumer.getmany(timeout_ms=1000)
        got += sum(len(records) for records in batch.values())
        await consumer.commit()  # the services commit after every batch too
    consume = n / (time.perf_counter() - t)
    hop = []
    for i in range(hops + 1):
        t = time.perf_counter()
        await producer.send_and_wait(topic, value, key=keys[i % len(keys)], headers=hdrs)
        while not await consumer.getmany(timeout_ms=1000):
            pass
        if i:  # the first one is a warm-up
            hop.append(time.perf_counter() - t)
    await consumer.stop()
    await producer.stop()
    return {"produce": produce, "consume": consume, "hop": hop, "size": len(value)}


# --- the pipeline ---------------------------------------------------------------------------


@dataclass
class Load:
    """What the bench submitted: dossier code → (kind, when it was due to be sent)."""

    sent: dict[str, tuple[Kind, float]] = field(default_factory=dict)
    http: list[float] = field(default_factory=list)
    errors: int = 0


async def submit(http: ClientPool, stack: ServiceStack, kind: Kind, load: Load, due: float) -> None:
    """One dossier, retried with its Idempotency-Key (as desk clients do) when the answer
    is lost or refused for the moment; a retry counts in ``errors``."""
    url = f"{stack.url('intake')}/v1/dossiers"
    headers = {**HEADERS[kind.desk], "Idempotency-Key": uuid.uuid4().hex}
    why = ""
    for _ in range(20):
        try:
            r = await http.post(url, json=kind.body, headers=headers)
        except httpx.TransportError as exc:
            why = repr(exc)
        else:
            if r.status_code in (200, 201):
                load.http.append(time.time() - due)
                load.sent[r.json()["code"]] = (kind, due)
                return
            why = f"{r.status_code}: {r.text[:300]}"
        load.errors += 1
        await asyncio.sleep(0.05)
    raise RuntimeError(f"intake refused a dossier 20 times: {why}")


HEADERS: dict[str, dict[str, str]] = {}


async def done_at(db: asyncpg.Connection, codes: list[str]) -> dict[str, float]:
    """Per dossier done so far: the epoch second its last part was done (receipt sent,
    last opinion request opened)."""
    rows = await db.fetch(
        "SELECT n.dossier_code AS code, extract(epoch FROM n.sent_at)::float8 AS receipt,"
        " (SELECT count(*) FROM consultation.requests r WHERE r.dossier_code = n.dossier_code)"
        "   AS requests,"
        " (SELECT extract(epoch FROM max(r.requested_at))::float8 FROM consultation.requests r"
        "   WHERE r.dossier_code = n.dossier_code) AS opened"
        " FROM notification.notifications n WHERE n.kind = 'form01' AND n.channel = 'email'"
        " AND n.status = 'sent' AND n.dossier_code = ANY($1)",
        codes,
    )
    return {r["code"]: (r["receipt"], r["requests"], r["opened"]) for r in rows}  # type: ignore[misc]


async def wait_done(
    db: asyncpg.Connection, load: Load, timeout: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Wait until every submitted dossier is done; returns (done at, receipt at)."""
    codes = list(load.sent)
    started = time.perf_counter()
    while True:
        rows: dict[str, Any] = await done_at(db, codes)
        finished = {
            c: max(receipt, opened or 0.0)
            for c, (receipt, requests, opened) in rows.items()
            if requests >= load.sent[c][0].requests
        }
        if len(finished) == len(codes):
            return finished, {c: rows[c][0] for c in codes}
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"{len(codes) - len(finished)} of {len(codes)} not done")
        await asyncio.sleep(0.5)


async def published(db: asyncpg.Connection, since: float, until: float) -> int:
    total = 0
    for s in SERVICES:
        total += await db.fetchval(
            f"SELECT count(*) FROM {s}.outbox WHERE published_at"
            " BETWEEN to_timestamp($1) AND to_timestamp($2)",
            since,
            until,
        )
    return int(total)


async def rows_written(db: asyncpg.Connection) -> dict[str, tuple[int, int, int]]:
    """Rows inserted, updated and deleted so far in each service's schema (the
    statistics collector's counters; the bench's own reads are not in them)."""
    rows = await db.fetch(
        "SELECT schemaname, sum(n_tup_ins)::bigint AS i, sum(n_tup_upd)::bigint AS u,"
        " sum(n_tup_del)::bigint AS d FROM pg_stat_user_tables"
        " WHERE schemaname = ANY($1::text[]) GROUP BY 1",
        list(SERVICES),
    )
    return {r["schemaname"]: (r["i"], r["u"], r["d"]) for r in rows}


async def sustained(
    http: ClientPool,
    db: asyncpg.Connection,
    stack: ServiceStack,
    kinds: list[Kind],
    meter: procs.Meter,
    clients: int,
    duration: float,
    profile: Path | None,
) -> dict[str, Any]:
    load = Load()
    rng = random.Random(13)
    stop_at = time.perf_counter() + duration

    async def client() -> None:
        while time.perf_counter() < stop_at:
            await submit(http, stack, rng.choice(kinds), load, time.time())

    spies = start_profiles(stack, profile, duration) if profile else []
    written_before = await rows_written(db)
    meter.start()
    first = time.time()
    await asyncio.gather(*(client() for _ in range(clients)))
    accepted_s = time.time() - first
    finished, _ = await wait_done(db, load, timeout=max(600, duration * 20))
    last = max(finished.values())
    cpu = meter.stop()
    for spy in spies:
        spy.wait()
    await asyncio.sleep(1.5)  # backends flush their table counters at most once a second
    written_after = await rows_written(db)
    written = {
        schema: tuple(
            a - b for a, b in zip(after, written_before.get(schema, (0, 0, 0)), strict=True)
        )
        for schema, after in written_after.items()
    }
    n = len(load.sent)
    window = last - first
    events = await published(db, first, last + 1)
    return {
        "dossiers": n,
        "accepted_per_s": n / accepted_s,
        "done_per_s": n / window,
        "events": events,
        "events_per_s": events / window,
        "window_s": window,
        "cpu": cpu,
        "written": written,
        "http_p50": pct(load.http, 50),
        "http_p99": pct(load.http, 99),
        "errors": load.errors,
    }


async def open_loop(
    http: ClientPool,
    db: asyncpg.Connection,
    stack: ServiceStack,
    kinds: list[Kind],
    rate: float,
    samples: int,
) -> dict[str, Any]:
    load = Load()
    rng = random.Random(int(rate))
    t0 = time.time() + 0.2
    tasks = []
    behind = 0.0
    for i in range(samples):
        due = t0 + i / rate
        wait = due - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            behind = max(behind, -wait)
        tasks.append(asyncio.create_task(submit(http, stack, rng.choice(kinds), load, due)))
    await asyncio.gather(*tasks)
    offered = samples / (time.time() - t0)
    finished, receipts = await wait_done(db, load, timeout=max(600, samples / 5))
    receipt = [receipts[c] - due for c, (_, due) in load.sent.items()]
    whole = [finished[c] - due for c, (_, due) in load.sent.items()]
    return {
        "rate": rate,
        "offered": offered,
        "behind_s": behind,
        "samples": len(receipt),
        "receipt_p50": pct(receipt, 50),
        "receipt_p99": pct(receipt, 99),
        "done_p50": pct(whole, 50),
        "done_p99": pct(whole, 99),
        "http_p50": pct(load.http, 50),
        "http_p99": pct(load.http, 99),
    }


def start_profiles(
    stack: ServiceStack, folder: Path, duration: float
) -> list[subprocess.Popen[bytes]]:
    """py-spy on every service for the sustained phase (raw collapsed stacks)."""
    folder.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    return [
        subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(proc.pid),
                "--duration",
                str(int(duration)),
                "--rate",
                "50",
                "--format",
                "raw",
                "--output",
                str(folder / f"{name}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, proc in stack.procs.items()
    ]


# --- the run ----------------------------------------------------------------------------------


def start_sink() -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.sink", str(port)])
    wait_for_port(port)
    return port, sink


async def run(args: argparse.Namespace) -> dict[str, Any]:
    kinds = mix()
    with database() as admin, broker() as bootstrap, tempfile.TemporaryDirectory() as tmp:
        url = await fresh_database(admin)
        smtp_port, sink = start_sink()
        stack = ServiceStack(
            bootstrap=bootstrap,
            database_url=url,
            topic_prefix="bench.",
            logs=Path(tmp),
            smtp_port=smtp_port,
            simulators=False,
            extra={"LIENTHONG_LOG_LEVEL": "WARNING"},
        )
        for k in kinds:
            HEADERS.setdefault(k.desk, stack.headers(k.desk))
        t = time.perf_counter()
        stack.start()
        stack.wait_ready()
        startup = time.perf_counter() - t
        db = await asyncpg.connect(url)
        meter = procs.Meter()
        for name, proc in stack.procs.items():
            meter.add(name, proc.pid)
        port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
        meter.add("kafka", procs.listener_pid(port))
        meter.add(
            "postgres", procs.postmaster_of(await db.fetchval("SELECT pg_backend_pid()")), True
        )
        meter.add("smtp sink", sink.pid)
        meter.add("load generator", procs.self_pid())
        out: dict[str, Any] = {"startup_s": startup, "kinds": kinds}
        try:
            # many small clients: one with hundreds of connections would be the bottleneck
            async with ClientPool(args.clients * 2, timeout=120) as http:
                # warm-up, one at a time: every procedure once (catalogue copies, caches)
                warm = Load()
                for k in {k.procedure: k for k in kinds}.values():
                    await submit(http, stack, k, warm, time.time())
                    await wait_done(db, warm, timeout=120)
                value, headers = await sample_value(url) or (b"{}", {})
                console.print("[bold]bench[/]: idle, 10 s ...")
                meter.start()
                await asyncio.sleep(10)
                out["idle"] = {name: used / 10 for name, used in meter.stop().items()}
                console.print("[bold]bench[/]: raw broker ...")
                out["raw"] = await raw_broker(bootstrap, value, headers, args.raw_messages, 200)
                console.print(
                    f"[bold]bench[/]: sustained, {args.clients} clients for {args.duration:.0f} s ..."
                )
                out["sustained"] = await sustained(
                    http, db, stack, kinds, meter, args.clients, args.duration, args.profile
                )
                out["latency"] = []
                for rate in args.rates:
                    console.print(f"[bold]bench[/]: open loop at {rate:.0f}/s ...")
                    out["latency"].append(
                        await open_loop(http, db, stack, kinds, rate, args.samples)
                    )
            out["rss"] = {
                name: procs.Group(name, proc.pid).rss_mb() for name, proc in stack.procs.items()
            }
        finally:
            await db.close()
            stack.stop()
            sink.terminate()
            sink.wait(10)
    return out


def report(out: dict[str, Any]) -> None:
    raw, s = out["raw"], out["sustained"]
    hop50 = pct(raw["hop"], 50)
    t = Table(title="Raw broker, same run: the pipeline's topic layout and client settings")
    for col in ("", "figure", "what"):
        t.add_column(col, justify="right" if col != "what" else "left")
    t.add_row(
        "produce",
        f"{raw['produce']:,.0f} msg/s",
        f"{raw['size']} B envelopes, 6 partitions, relay producer",
    )
    t.add_row(
        "consume",
        f"{raw['consume']:,.0f} msg/s",
        "one group, services' fetch settings, commit per batch",
    )
    t.add_row(
        "one hop p50 / p99",
        f"{hop50 * 1e3:.1f} / {pct(raw['hop'], 99) * 1e3:.1f} ms",
        f"{len(raw['hop'])} produce→consume hops, same clients",
    )
    console.print(t)

    t = Table(
        title=f"Pipeline, sustained ({s['dossiers']:,} dossiers, {s['window_s']:.0f} s window)"
    )
    for col in ("", "figure", "ratio"):
        t.add_column(col, justify="right")
    t.add_row("HTTP accepted", f"{s['accepted_per_s']:,.1f} dossiers/s", "")
    t.add_row(
        "done end to end",
        f"{s['done_per_s']:,.1f} dossiers/s",
        f"{s['done_per_s'] / raw['produce']:.4f}x raw produce",
    )
    t.add_row(
        "events published",
        f"{s['events_per_s']:,.0f} events/s",
        f"{s['events_per_s'] / raw['produce']:.4f}x raw produce,"
        f" {s['events_per_s'] / raw['consume']:.4f}x raw consume",
    )
    t.add_row("events per dossier", f"{s['events'] / s['dossiers']:.1f}", "")
    t.add_row(
        "HTTP answer p50 / p99",
        f"{s['http_p50'] * 1e3:.0f} / {s['http_p99'] * 1e3:.0f} ms",
        f"{s['errors']} retried answers",
    )
    console.print(t)

    cpu = s["cpu"]
    total = sum(v for k, v in cpu.items() if k != "load generator")
    n = s["dossiers"]
    idle = out.get("idle", {})
    t = Table(title="CPU time per dossier (sustained phase), what bounds it on this machine")
    for col in ("process", "CPU s", "ms / dossier", "share", "cores used", "idle cores"):
        t.add_column(col, justify="right")
    for name, used in sorted(cpu.items(), key=lambda kv: -kv[1]):
        t.add_row(
            name,
            f"{used:.1f}",
            f"{used / n * 1e3:.2f}",
            f"{used / total:.0%}" if name != "load generator" else "(not counted)",
            f"{used / s['window_s']:.2f}",
            f"{idle[name]:.3f}" if name in idle else "",
        )
    cores = psutil_cores()
    bound = cores / (total / n)
    t.add_row(
        "pipeline total",
        f"{total:.1f}",
        f"{total / n * 1e3:.2f}",
        "100%",
        f"{total / s['window_s']:.2f}",
        f"{sum(v for k, v in idle.items() if k != 'load generator'):.3f}",
    )
    console.print(t)
    console.print(
        f"CPU bound with {cores} cores for the pipeline alone: {bound:,.0f} dossiers/s;"
        f" measured {s['done_per_s']:,.1f} = {s['done_per_s'] / bound:.0%} of it"
        " (the load generator shares the cores)"
    )

    t = Table(title="Database rows written per dossier (sustained phase), by service schema")
    for col in ("schema", "inserted", "updated", "deleted", "all"):
        t.add_column(col, justify="right")
    sums = [0, 0, 0]
    for schema, (ins, upd, dele) in sorted(s["written"].items()):
        sums = [sums[0] + ins, sums[1] + upd, sums[2] + dele]
        t.add_row(schema, *(f"{v / n:.1f}" for v in (ins, upd, dele, ins + upd + dele)))
    t.add_row("all", *(f"{v / n:.1f}" for v in (*sums, sum(sums))))
    console.print(t)

    t = Table(title="Open loop: latency from the moment a request was due to be sent")
    for col in (
        "rate",
        "offered",
        "samples",
        "receipt sent p50",
        "p99",
        "all done p50",
        "p99",
        "HTTP p99",
        "p50 / raw hop",
    ):
        t.add_column(col, justify="right")
    for r in out["latency"]:
        t.add_row(
            f"{r['rate']:.0f}/s",
            f"{r['offered']:.0f}/s",
            f"{r['samples']:,}",
            f"{r['receipt_p50'] * 1e3:,.0f} ms",
            f"{r['receipt_p99'] * 1e3:,.0f} ms",
            f"{r['done_p50'] * 1e3:,.0f} ms",
            f"{r['done_p99'] * 1e3:,.0f} ms",
            f"{r['http_p99'] * 1e3:,.0f} ms",
            f"{r['receipt_p50'] / hop50:,.0f}x",
        )
    console.print(t)
    console.print(
        "receipt: submit → dossier.received relayed (1 broker hop) → notification → SMTP;"
        " all done: also → routing → routing.dossier_routed (2nd hop) → consultation opens"
        " the requests"
    )

    t = Table(title="Memory per service process (MiB)")
    for col in ("service", "RSS at end", "peak RSS"):
        t.add_column(col, justify="right")
    for name, (rss, peak) in out["rss"].items():
        t.add_row(name, f"{rss:.0f}", f"{peak:.0f}")
    console.print(t)
    console.print(
        f"services ready in {out['startup_s']:.1f} s; procedures in the mix: "
        f"{len({k.procedure for k in out['kinds']})}, desks:"
        f" {len({k.desk for k in out['kinds']})}"
    )


def psutil_cores() -> int:
    import psutil

    return int(psutil.cpu_count() or 1)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    p.add_argument("--duration", type=float, default=60.0, help="sustained phase, seconds")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients, sustained")
    p.add_argument(
        "--rates", type=lambda v: [float(x) for x in v.split(",")], default=[100.0, 500.0]
    )
    p.add_argument("--samples", type=int, default=1000, help="requests per open-loop rate")
    p.add_argument("--raw-messages", type=int, default=50_000)
    p.add_argument("--profile", type=Path, default=None, help="py-spy every service into DIR")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    started = datetime.now(UTC)
    out = asyncio.run(run(args))
    report(out)
    console.print(f"run started {started:%Y-%m-%d %H:%M:%S} UTC; {vars(args)}")


if __name__ == "__main__":
    main()
