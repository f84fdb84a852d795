"""Two consultation replicas fire 10,000 deadlines due at the same moment exactly once."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import asyncpg

from bench.common import seed_requests
from services.consultation import domain, handlers
from services.consultation.app import SPEC
from services.consultation.opinions import Opinions
from services.consultation.templates import TemplateBook
from services.runtime.calendar import VN_TZ, WorkingCalendar
from services.runtime.clock import ManualClock
from services.runtime.db import create_pool, migrate
from services.runtime.service import Runtime
from services.runtime.settings import ServiceSettings
from services.runtime.timers import TimerScheduler

N = 10_000
DUE = datetime(2026, 12, 8, 17, 0, tzinfo=VN_TZ)


async def seed(pool: asyncpg.Pool) -> None:
    await seed_requests(
        pool, N, due=DUE, template_id="environment-opinion", agency_id="000.00.08.H29"
    )
    await pool.execute(
        "INSERT INTO timers(kind, ref, owner, due_at)"
        " SELECT $1, id::text || '/final', id::text, due_at FROM requests",
        domain.FINAL,
    )


async def replica(
    database_url: str, name: str, clock: ManualClock
) -> tuple[TimerScheduler, asyncpg.Pool]:
    settings = ServiceSettings.for_service("consultation")
    settings.database_url = database_url
    settings.dev_mode = True  # no HTTP here: the built-in secret is harmless
    settings.replica = name
    rt = Runtime("consultation", settings, clock)
    pool = await create_pool(database_url, "consultation", max_size=4)
    rt._pool = pool
    opinions = Opinions(rt, TemplateBook.load(), WorkingCalendar())
    sched = TimerScheduler(
        pool, clock, handlers.timer_handlers(opinions), batch_size=200, replica=name
    )
    return sched, pool


async def test_two_replicas_fire_10000_deadlines_once(database_url: str) -> None:
    pool = await create_pool(database_url, "consultation")
    await migrate(pool, "consultation", SPEC.migrations)
    await seed(pool)
    clock = ManualClock(DUE + timedelta(seconds=1))
    replicas = [await replica(database_url, str(i), clock) for i in range(2)]

    async def drain(s: TimerScheduler) -> None:
        while await s.fire_due():
            pass

    started = time.monotonic()
    await asyncio.gather(*(drain(s) for s, _ in replicas))
    print(
        f"\n10,000 deadlines fired by 2 replicas in {time.monotonic() - started:.1f}s "
        f"({[s.fired for s, _ in replicas]})"
    )
    try:
        assert sum(s.fired for s, _ in replicas) == N
        assert all(s.fired > 0 for s, _ in replicas)
        assert await pool.fetchval("SELECT count(*) FROM timers WHERE status = 'fired'") == N
        events = await pool.fetchval(
            "SELECT count(*) FROM outbox WHERE event_type = 'consultation.deemed_consent'"
        )
        distinct = await pool.fetchval(
            "SELECT count(DISTINCT payload::jsonb ->> 'subject') FROM outbox"
            " WHERE event_type = 'consultation.deemed_consent'"
        )
        assert events == distinct == N
        assert (
            await pool.fetchval("SELECT count(*) FROM requests WHERE status = 'deemed_consent'")
            == N
        )
        assert (
            await pool.fetchval("SELECT count(*) FROM audit WHERE action = 'deemed_consent'") == N
        )
    finally:
        for _, p in replicas:
            await p.close()
        await pool.close()
