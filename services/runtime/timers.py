"""Durable timers in PostgreSQL, usable by any service.

One row per pending reminder, escalation step, deadline or delivery, with its due time.
A scheduler claims due rows with ``FOR UPDATE SKIP LOCKED`` in batches and runs their
handler in the claiming transaction, so the handler's effects (state, outbox rows) and the
row's ``fired`` mark commit together: two replicas fire each timer once, and a crash
between claim and commit leaves the row pending to fire again. A partial index on the due
time of pending rows keeps a claim's cost independent of how many are pending.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from services.runtime.clock import Clock
from services.runtime.db import is_transient
from services.runtime.logging import get_logger
from services.runtime.metrics import TIMER_LATENESS, TIMERS_FAILED, TIMERS_FIRED
from services.runtime.outbox import Waker

log = get_logger(__name__)

TimerHandler = Callable[[asyncpg.Connection, asyncpg.Record], Awaitable[None]]


async def schedule(
    conn: asyncpg.Connection,
    kind: str,
    ref: str,
    due_at: datetime,
    payload: dict[str, Any] | None = None,
    owner: str = "",
) -> None:
    """Create the timer ``(kind, ref)``, or move it if it is still pending.

    ``owner`` groups the timers of one thing (e.g. an opinion request) for ``cancel``.
    """
    await conn.execute(
        "INSERT INTO timers(kind, ref, owner, due_at, payload) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (kind, ref) DO UPDATE SET due_at = EXCLUDED.due_at,"
        " payload = EXCLUDED.payload WHERE timers.status = 'pending'",
        kind,
        ref,
        owner,
        due_at,
        payload or {},
    )


async def cancel(conn: asyncpg.Connection, owners: Iterable[str]) -> int:
    """Cancel the owners' pending timers without waiting for any a scheduler has claimed;
    returns how many.

    A claimed timer is about to fire: its handler must find the change (a settled request,
    a newer version of the plan) and do nothing. Waiting for it here instead would hold
    the aggregate this transaction locked first while the scheduler's batch, holding the
    timer, waits for that aggregate: a deadlock.
    """
    result: str = await conn.execute(
        "UPDATE timers SET status = 'cancelled' WHERE id IN (SELECT id FROM timers"
        " WHERE status = 'pending' AND owner = ANY($1) FOR UPDATE SKIP LOCKED)",
        list(owners),
    )
    return int(result.split()[-1])


BATCH_LOCK_TIMEOUT = "250ms"
"""How long a timer batch that already holds one aggregate waits for another: less than
PostgreSQL's ``deadlock_timeout`` (1 s), so two replicas' batches locking aggregates in
different orders end in a lock timeout (55P03, transient: that timer fires again shortly),
never in a deadlock."""


@contextlib.asynccontextmanager
async def one_of_many(conn: asyncpg.Connection, flag: str) -> AsyncIterator[None]:
    """Around locking one aggregate (a route, a round) from a timer handler. A scheduler
    batch fires many timers in one transaction and holds every aggregate it locked until
    it commits: the first lock is waited for as anywhere, every later one at most
    ``BATCH_LOCK_TIMEOUT``. ``flag`` names the setting that remembers the first."""
    if await conn.fetchval("SELECT current_setting($1, true)", flag) == "1":
        await conn.execute(f"SET LOCAL lock_timeout = '{BATCH_LOCK_TIMEOUT}'")
    yield
    await conn.execute("SELECT set_config($1, '1', true)", flag)


class TimerScheduler:
    """Fires due timers through their kind's handler."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: Clock,
        handlers: dict[str, TimerHandler],
        waker: Waker | None = None,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        replica: str = "0",
        max_attempts: int = 10,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.handlers = handlers
        self.waker = waker
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.replica = replica
        self.max_attempts = max_attempts
        self.fired = 0

    async def fire_due(self) -> int:
        """Claim and fire one batch of due timers; returns how many were claimed."""
        now = self.clock.now()
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, kind, ref, due_at, payload, attempts FROM timers"
                " WHERE status = 'pending' AND due_at <= $1"
                " ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                now,
                self.batch_size,
            )
            fired: list[int] = []
            for row in rows:
                handler = self.handlers.get(row["kind"])
                try:
                    if handler is None:
                        raise LookupError(f"no handler for timer kind {row['kind']!r}")
                    async with conn.transaction():
                        await handler(conn, row)
                    fired.append(row["id"])
                except Exception as exc:
                    if is_transient(exc):  # a deadlock or a busy database: soon, uncounted
                        log.warning("timer_deferred", kind=row["kind"], error=repr(exc))
                        await conn.execute(
                            "UPDATE timers SET due_at = $2 WHERE id = $1",
                            row["id"],
                            now + timedelta(seconds=1),
                        )
                        continue
                    attempts = row["attempts"] + 1
                    if attempts >= self.max_attempts:
                        TIMERS_FAILED.labels(row["kind"]).inc()
                        log.error(
                            "timer_failed_for_good",
                            kind=row["kind"],
                            ref=row["ref"],
                            attempts=attempts,
                            error=repr(exc),
                        )
                    else:
                        log.warning(
                            "timer_failed", kind=row["kind"], ref=row["ref"], error=repr(exc)
                        )
                    await conn.execute(
                        "UPDATE timers SET attempts = $2::int, last_error = $3, due_at = $4,"
                        " status = CASE WHEN $2::int >= $5::int THEN 'failed' ELSE 'pending' END"
                        " WHERE id = $1",
                        row["id"],
                        attempts,
                        repr(exc)[:2000],
                        now + timedelta(seconds=min(2**attempts, 300)),
                        self.max_attempts,
                    )
            fired_at = self.clock.now()
            if fired:
                await conn.execute(
                    "UPDATE timers SET status = 'fired', fired_at = $2, fired_by = $3"
                    " WHERE id = ANY($1::bigint[])",
                    fired,
                    fired_at,
                    self.replica,
                )
        by_id = {r["id"]: r for r in rows}
        for timer_id in fired:
            row = by_id[timer_id]
            TIMERS_FIRED.labels(row["kind"]).inc()
            TIMER_LATENESS.labels(row["kind"]).observe(
                max(0.0, (fired_at - row["due_at"]).total_seconds())
            )
        self.fired += len(fired)
        return len(rows)

    async def run(self) -> None:
        while True:
            try:
                n = await self.fire_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("timer_scheduler_failed", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            if n >= self.batch_size:
                continue
            if self.waker is not None:
                await self.waker.wait(self.poll_interval)
            else:
                await asyncio.sleep(self.poll_interval)


async def failed_timers(pool: asyncpg.Pool, limit: int = 100) -> list[dict[str, Any]]:
    """Timers that failed every attempt, newest first: an operator must look at them, or a
    reminder, an escalation or a lapse never happens."""
    rows = await pool.fetch(
        "SELECT id, kind, ref, owner, due_at, attempts, last_error, payload FROM timers"
        " WHERE status = 'failed' ORDER BY id DESC LIMIT $1",
        limit,
    )
    return [dict(r) for r in rows]


async def retry_timer(pool: asyncpg.Pool, timer_id: int, now: datetime) -> bool:
    """Put a failed timer back to fire now, with its attempts reset."""
    result: str = await pool.execute(
        "UPDATE timers SET status = 'pending', attempts = 0, due_at = $2"
        " WHERE id = $1 AND status = 'failed'",
        timer_id,
        now,
    )
    return result.endswith(" 1")
