"""Escalation lateness and claim cost of the durable timers.

10,000 opinion requests lapse at the same moment; their first escalation step is fired by
two consultation replicas, each an OS process of its own (the service's own handlers,
default batch size and poll interval). Measured twice in one run: with only those 10,000
timers pending (the baseline) and among 1,000,000 pending. Prints p50/p99 lateness
(fired-and-committed time minus due time) and the cost of one claim query, with ratios to
the baseline.

The comparison must be able to fail: the 990,000 other pending timers are written
*interleaved* with the due ones (every 100th row of the table is an escalation, so each
due row shares its heap page with 99 that are not due) and are due a little later (from
10 minutes after the escalations on), so they sit right after the due ones in the same
index range. A plan that scans pending timers instead of walking the due-time index, or
that reads many heap pages per claimed row, would show in the ratio.

The replicas read a clock shifted so that the escalations fall due two seconds after they
start (``FileOffsetClock``), so nothing is rewritten between seeding and firing and the
interleaving stays as written.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from bench.common import database, fresh_database, pct, seed_requests
from services.consultation import domain, handlers
from services.consultation.app import SPEC
from services.consultation.opinions import Opinions
from services.consultation.templates import TemplateBook
from services.runtime.calendar import WorkingCalendar
from services.runtime.clock import FileOffsetClock
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


async def claim_plan(pool: asyncpg.Pool, at: datetime) -> str:
    rows = await pool.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + CLAIM, at)
    return "\n".join(r[0] for r in rows)


async def seed(pool: asyncpg.Pool, due: datetime, total: int) -> None:
    """``LAPSING`` escalations due at ``due`` among ``total`` pending timers, interleaved:
    every ``total // LAPSING``-th row is an escalation, the others are reminders due from
    10 minutes after ``due`` on, one millisecond apart."""
    await pool.execute("TRUNCATE requests, audit, timers, outbox")
    await seed_requests(
        pool,
        LAPSING,
        due=due,
        template_id="environment-impact-opinion",  # no deemed consent: it has a ladder
        agency_id="000.00.06.H29",
    )
    stride = total // LAPSING
    await pool.execute(
        """
        INSERT INTO timers(kind, ref, owner, due_at, payload)
        SELECT CASE WHEN g % $1 = 0 THEN $2 ELSE $3 END,
               CASE WHEN g % $1 = 0 THEN md5('r' || (g / $1))::uuid::text || '/escalate/1'
                    ELSE 'future/' || g END,
               CASE WHEN g % $1 = 0 THEN md5('r' || (g / $1))::uuid::text
                    ELSE 'future/' || g END,
               CASE WHEN g % $1 = 0 THEN $4::timestamptz
                    ELSE $4::timestamptz + interval '10 minutes' + g * interval '1 ms' END,
               CASE WHEN g % $1 = 0 THEN '{"step": 1}'::jsonb ELSE '{}'::jsonb END
        FROM generate_series(1, $5::int) g
        """,
        stride,
        domain.ESCALATE,
        domain.REMIND,
        due,
        stride * LAPSING,
    )
    await pool.execute("VACUUM ANALYZE timers")


async def replica(url: str, clock_file: str, index: int) -> None:
    """One consultation replica's timer scheduler, until SIGTERM."""
    defaults = ServiceSettings.for_service("consultation")
    s = ServiceSettings.for_service("consultation")
    s.database_url = url
    s.dev_mode = True  # no HTTP here: the built-in secret is harmless
    clock = FileOffsetClock(clock_file)
    rt = Runtime("consultation", s, clock)
    pool = await create_pool(url, "consultation", max_size=4)
    rt._pool = pool
    opinions = Opinions(rt, TemplateBook.load(), WorkingCalendar())
    scheduler = TimerScheduler(
        pool,
        clock,
        handlers.timer_handlers(opinions),
        batch_size=defaults.timer_batch_size,
        poll_interval=defaults.timer_poll_interval_s,
        replica=str(index),
    )
    task = asyncio.create_task(scheduler.run())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await pool.close()


def start_replicas(url: str, clock_file: Path) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "bench.timers", "replica", url, str(clock_file), str(i)]
        )
        for i in range(2)
    ]


async def scenario(url: str, total: int, folder: Path) -> dict[str, Any]:
    pool = await create_pool(url, "consultation", max_size=4)
    due = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    t = time.perf_counter()
    await seed(pool, due, total)
    seeded = time.perf_counter() - t
    pending = await pool.fetchval("SELECT count(*) FROM timers WHERE status = 'pending'")
    cost_idle = await claim_cost(pool, due - timedelta(seconds=1))  # nothing due yet
    cost_due = await claim_cost(pool, due + timedelta(seconds=1))  # 10,000 due
    plan = await claim_plan(pool, due + timedelta(seconds=1))
    # the replicas' clock: the escalations fall due two seconds after they start
    clock_file = folder / f"clock-{total}"
    shift = (due - timedelta(seconds=2)) - datetime.now(UTC)
    clock_file.write_text(str(shift.total_seconds()))
    procs = start_replicas(url, clock_file)
    t = time.perf_counter()
    try:
        while (
            await pool.fetchval(
                "SELECT count(*) FROM timers WHERE kind = $1 AND status = 'fired'",
                domain.ESCALATE,
            )
            < LAPSING
        ):
            await asyncio.sleep(0.2)
            if time.perf_counter() - t > 600:
                raise TimeoutError("escalations did not all fire in 10 minutes")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a replica exited")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    rows = await pool.fetch(
        "SELECT extract(epoch FROM fired_at - due_at)::float8 AS late, fired_by FROM timers"
        " WHERE kind = $1 AND status = 'fired'",
        domain.ESCALATE,
    )
    late = sorted(r["late"] for r in rows)
    by = {r["fired_by"] for r in rows}
    events = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_type = 'consultation.escalated'"
    )
    assert events == LAPSING, events
    others_fired = await pool.fetchval(
        "SELECT count(*) FROM timers WHERE kind <> $1 AND status <> 'pending'", domain.ESCALATE
    )
    assert others_fired == 0, others_fired
    await pool.close()
    return {
        "pending": pending,
        "seed_s": seeded,
        "claim_idle_ms": cost_idle * 1e3,
        "claim_due_ms": cost_due * 1e3,
        "p50": pct(late, 50),
        "p99": pct(late, 99),
        "max": late[-1],
        "fired_by": len(by),
        "plan": plan,
    }


async def main() -> None:
    with database() as admin:
        url = await fresh_database(admin)
        pool = await create_pool(url, "consultation")
        await migrate(pool, "consultation", SPEC.migrations)
        await pool.close()
        with tempfile.TemporaryDirectory() as tmp:
            console.print("[bold]timers[/]: baseline (10,000 pending) ...")
            base = await scenario(url, LAPSING, Path(tmp))
            console.print(f"[bold]timers[/]: {TOTAL:,} pending, interleaved ...")
            big = await scenario(url, TOTAL, Path(tmp))
    table = Table(title="Escalation of 10,000 requests lapsing at once (2 replica processes)")
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
    console.print(
        f"seeding 1M timers took {big['seed_s']:.1f}s; escalations fired by"
        f" {int(big['fired_by'])} replicas; claim plan among 1M pending:"
    )
    console.print(str(big["plan"]), markup=False, highlight=False)


if __name__ == "__main__":
    if sys.argv[1:2] == ["replica"]:
        asyncio.run(replica(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        asyncio.run(main())
