"""Escalation lateness and claim cost of the durable timers.

10,000 opinion requests lapse at the same moment; their first escalation step is fired by
two consultation replicas (the service's own handlers, default batch size and poll
interval, wall clock). Measured twice in one run: with only those 10,000 timers pending
(the baseline) and among 1,000,000 pending. Prints p50/p99 lateness (fired-and-committed
time minus due time) and the cost of one claim query, with ratios to the baseline.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
from rich.console import Console
from rich.table import Table

from bench.common import database, fresh_database, pct, seed_requests
from services.consultation import domain, handlers
from services.consultation.app import SPEC
from services.consultation.opinions import Opinions
from services.consultation.templates import TemplateBook
from services.runtime.calendar import WorkingCalendar
from services.runtime.clock import SystemClock
from services.runtime.db import create_pool, migrate
from services.runtime.service import Runtime
from services.runtime.settings import ServiceSettings
from services.runtime.timers import TimerScheduler

LAPSING = 10_000
TOTAL = 1_000_000
CLAIM = (
    "SELECT id FROM timers WHERE status = 'pending' AND due_at <= $1"
    " ORDER BY due_at LIMIT 500 FOR UPDATE SKIP LOCKED"
)
console = Console()


async def claim_cost(pool: asyncpg.Pool, at: datetime, runs: int = 30) -> float:
    """Median seconds of one claim query (rolled back, so nothing is taken)."""
    samples = []
    async with pool.acquire() as conn:
        for _ in range(runs):
            tr = conn.transaction()
            await tr.start()
            t = time.perf_counter()
            await conn.fetch(CLAIM, at)
            samples.append(time.perf_counter() - t)
            await tr.rollback()
    return pct(samples, 50)


async def seed(pool: asyncpg.Pool, due: datetime, others: int) -> None:
    await pool.execute("TRUNCATE requests, audit, timers, outbox")
    await seed_requests(
        pool,
        LAPSING,
        due=due,
        template_id="environment-impact-opinion",  # no deemed consent: it has a ladder
        agency_id="000.00.06.H29",
    )
    await pool.execute(
        "INSERT INTO timers(kind, ref, owner, due_at, payload)"
        " SELECT $1, id::text || '/escalate/1', id::text, $2, '{\"step\": 1}' FROM requests",
        domain.ESCALATE,
        due,
    )
    if others:
        await pool.execute(
            "INSERT INTO timers(kind, ref, owner, due_at)"
            " SELECT $1, 'future/' || g, 'future/' || g,"
            " $2::timestamptz + interval '1 day' + g * interval '1 second'"
            " FROM generate_series(1, $3::int) g",
            domain.REMIND,
            due,
            others,
        )
    await pool.execute("VACUUM ANALYZE timers")


async def scenario(url: str, others: int) -> dict[str, float]:
    pool = await create_pool(url, "consultation", max_size=4)
    due = datetime.now(UTC) + timedelta(days=1)  # far enough not to fire while seeding
    t = time.perf_counter()
    await seed(pool, due, others)
    seeded = time.perf_counter() - t
    pending = await pool.fetchval("SELECT count(*) FROM timers WHERE status = 'pending'")
    cost_idle = await claim_cost(pool, due - timedelta(seconds=1))  # nothing due yet
    cost_due = await claim_cost(pool, due + timedelta(seconds=1))  # 10,000 due
    # move the due time to just ahead of now, then let two replicas fire them
    go = datetime.now(UTC) + timedelta(seconds=2)
    await pool.execute("UPDATE timers SET due_at = $1 WHERE kind = $2", go, domain.ESCALATE)
    await pool.execute("ANALYZE timers")
    defaults = ServiceSettings.for_service("consultation")
    scheds, pools = [], []
    for i in range(2):
        s = ServiceSettings.for_service("consultation")
        s.database_url = url
        s.dev_mode = True  # no HTTP here: the built-in secret is harmless
        rt = Runtime("consultation", s, SystemClock())
        p = await create_pool(url, "consultation", max_size=4)
        rt._pool = p
        pools.append(p)
        o = Opinions(rt, TemplateBook.load(), WorkingCalendar())
        scheds.append(
            TimerScheduler(
                p,
                rt.clock,
                handlers.timer_handlers(o),
                batch_size=defaults.timer_batch_size,
                poll_interval=defaults.timer_poll_interval_s,
                replica=str(i),
            )
        )
    tasks = [asyncio.create_task(s.run()) for s in scheds]
    t = time.perf_counter()
    while (
        await pool.fetchval(
            "SELECT count(*) FROM timers WHERE kind = $1 AND status = 'fired'", domain.ESCALATE
        )
        < LAPSING
    ):
        await asyncio.sleep(0.2)
        if time.perf_counter() - t > 600:
            raise TimeoutError("escalations did not all fire in 10 minutes")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    rows = await pool.fetch(
        "SELECT extract(epoch FROM fired_at - due_at)::float8 AS late FROM timers"
        " WHERE kind = $1 AND status = 'fired'",
        domain.ESCALATE,
    )
    late = sorted(r["late"] for r in rows)
    events = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_type = 'consultation.escalated'"
    )
    assert events == LAPSING, events
    for p in pools:
        await p.close()
    await pool.close()
    return {
        "pending": pending,
        "seed_s": seeded,
        "claim_idle_ms": cost_idle * 1e3,
        "claim_due_ms": cost_due * 1e3,
        "p50": pct(late, 50),
        "p99": pct(late, 99),
        "max": late[-1],
        "fired_by": 2,
    }


async def main() -> None:
    with database() as admin:
        url = await fresh_database(admin)
        pool = await create_pool(url, "consultation")
        await migrate(pool, "consultation", SPEC.migrations)
        await pool.close()
        console.print("[bold]timers[/]: baseline (10,000 pending) ...")
        base = await scenario(url, 0)
        console.print(f"[bold]timers[/]: {TOTAL:,} pending ...")
        big = await scenario(url, TOTAL - LAPSING)
    table = Table(title="Escalation of 10,000 requests lapsing at once (2 replicas)")
    for col in (
        "",
        "pending",
        "claim, none due",
        "claim, 10k due",
        "lateness p50",
        "lateness p99",
        "max",
    ):
        table.add_column(col, justify="right")
    for name, r in (("baseline", base), ("1M pending", big)):
        table.add_row(
            name,
            f"{int(r['pending']):,}",
            f"{r['claim_idle_ms']:.2f} ms",
            f"{r['claim_due_ms']:.2f} ms",
            f"{r['p50']:.2f} s",
            f"{r['p99']:.2f} s",
            f"{r['max']:.2f} s",
        )
    table.add_row(
        "ratio",
        f"{big['pending'] / base['pending']:.0f}x",
        f"{big['claim_idle_ms'] / base['claim_idle_ms']:.2f}x",
        f"{big['claim_due_ms'] / base['claim_due_ms']:.2f}x",
        f"{big['p50'] / base['p50']:.2f}x",
        f"{big['p99'] / base['p99']:.2f}x",
        f"{big['max'] / base['max']:.2f}x",
    )
    console.print(table)
    console.print(f"seeding 1M timers took {big['seed_s']:.1f}s")


if __name__ == "__main__":
    asyncio.run(main())
