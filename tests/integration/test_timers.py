"""Durable timers: claimed with SKIP LOCKED, fired once across replicas, retried safely."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from services.runtime import timers
from services.runtime.clock import ManualClock
from services.runtime.timers import TimerScheduler

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


async def _effect(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
    await conn.execute("INSERT INTO effects(ref) VALUES ($1)", timer["ref"])


async def test_two_replicas_fire_10000_due_timers_exactly_once(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO timers(kind, ref, owner, due_at)"
        " SELECT 'k', 'r' || g, 'o' || g, $1 FROM generate_series(1, 10000) g",
        T0,
    )
    clock = ManualClock(T0 + timedelta(seconds=1))
    replicas = [
        TimerScheduler(pool, clock, {"k": _effect}, batch_size=250, replica=str(i))
        for i in range(2)
    ]

    async def drain(s: TimerScheduler) -> None:
        while await s.fire_due():
            pass

    await asyncio.gather(*(drain(s) for s in replicas))
    assert sum(s.fired for s in replicas) == 10000
    assert all(s.fired > 0 for s in replicas)
    assert await pool.fetchval("SELECT count(*) FROM effects") == 10000
    assert await pool.fetchval("SELECT count(DISTINCT ref) FROM effects") == 10000
    by = await pool.fetch("SELECT fired_by, count(*) FROM timers GROUP BY fired_by")
    assert {r["fired_by"] for r in by} == {"0", "1"}


async def test_not_due_and_cancelled_timers_do_not_fire(pool: asyncpg.Pool) -> None:
    clock = ManualClock(T0)
    async with pool.acquire() as conn:
        await timers.schedule(conn, "k", "later", T0 + timedelta(hours=1), owner="a")
        await timers.schedule(conn, "k", "cancel-me", T0, owner="b")
        assert await timers.cancel(conn, ["b"]) == 1
    s = TimerScheduler(pool, clock, {"k": _effect})
    assert await s.fire_due() == 0
    clock.advance(timedelta(hours=1))
    assert await s.fire_due() == 1
    assert [r["ref"] for r in await pool.fetch("SELECT ref FROM effects")] == ["later"]


async def test_a_failed_fire_rolls_back_and_fires_again(pool: asyncpg.Pool) -> None:
    clock = ManualClock(T0)
    calls = {"n": 0}

    async def flaky(conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        await conn.execute("INSERT INTO effects(ref) VALUES ($1)", timer["ref"])
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("crash between claim and emit")

    async with pool.acquire() as conn:
        await timers.schedule(conn, "k", "once", T0)
        await timers.schedule(conn, "k", "other", T0)
    s = TimerScheduler(pool, clock, {"k": flaky})
    assert await s.fire_due() == 2
    assert s.fired == 1  # the other one
    row = await pool.fetchrow("SELECT status, attempts, last_error FROM timers WHERE ref = 'once'")
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert "crash" in row["last_error"]
    clock.advance(timedelta(minutes=1))
    assert await s.fire_due() == 1
    refs = sorted(r["ref"] for r in await pool.fetch("SELECT ref FROM effects"))
    assert refs == ["once", "other"]  # the failed attempt's effect was rolled back


async def test_claim_uses_the_partial_index(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO timers(kind, ref, due_at, status)"
        " SELECT 'k', 'r' || g, $1::timestamptz + g * interval '1 second',"
        " CASE WHEN g % 10 = 0 THEN 'pending' ELSE 'fired' END"
        " FROM generate_series(1, 20000) g",
        T0,
    )
    await pool.execute("ANALYZE timers")
    rows = await pool.fetch(
        "EXPLAIN SELECT id FROM timers WHERE status = 'pending' AND due_at <= $1"
        " ORDER BY due_at LIMIT 500 FOR UPDATE SKIP LOCKED",
        T0 + timedelta(hours=1),
    )
    plan = "\n".join(r[0] for r in rows)
    assert "timers_pending_due" in plan, plan
