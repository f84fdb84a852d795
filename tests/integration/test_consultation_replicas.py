"""Two consultation replicas fire 10,000 deadlines due at the same moment exactly once."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import asyncpg

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
    await pool.execute(
        """
        INSERT INTO requests(id, dossier_code, lead_agency, lead_agency_name, agency_id,
            agency_name, template_id, template_version, subject, body_text, body_html,
            requested_at, due_at)
        SELECT md5('r' || g)::uuid,
               '000.00.16.H29-2612' || lpad((g / 9000 + 1)::text, 2, '0') || '-'
                   || lpad((g % 9000 + 1)::text, 4, '0'),
               '000.50.03.H29', 'Sở Xây dựng', '000.80.06.H29', 'Sở NN và MT',
               'environment-opinion', 1, 's', 't', 'h', $1::timestamptz - interval '7 days', $1
        FROM generate_series(1, $2::int) g
        """,
        DUE,
        N,
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
