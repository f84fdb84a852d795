"""Rebuild the console's read models from the log, and compare them with the live ones.

Reads every partition of every topic the console consumes from offset 0 up to the end
offsets seen when it starts, into a fresh schema (``console_rebuild`` by default), through
the same ``apply_record`` as the live consumer, in batches of one transaction each. Then
compares table by table, leaving out what is the consumer's own bookkeeping (``seq``,
``recorded_at``, ``updated_at``; the inbox is not compared at all).

``python -m services.console rebuild [--compare] [--schema NAME]``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.console.handlers import apply_record
from services.runtime.acl import CONSUMES
from services.runtime.consumer import Raw
from services.runtime.db import create_pool, migrate
from services.runtime.kafka_auth import KafkaSecurity
from services.runtime.settings import ServiceSettings

COMPARED: dict[str, tuple[str, ...]] = {
    # table: key columns (the rest is compared, less EXCLUDED)
    "events": ("event_id",),
    "dossiers": ("code",),
    "opinion_requests": ("request_id",),
    "dead_letter_entries": ("id",),
}
EXCLUDED = frozenset({"seq", "recorded_at", "updated_at"})
BATCH = 500


@dataclass
class Report:
    schema: str
    records: int = 0
    applied: int = 0
    seconds: float = 0.0
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)
    """table: (live rows, rebuilt rows)"""
    differences: dict[str, list[str]] = field(default_factory=dict)
    """table: keys that differ (present on one side only, or with other values)"""
    compare_seconds: float = 0.0

    @property
    def equal(self) -> bool:
        return all(not d for d in self.differences.values()) and all(
            a == b for a, b in self.counts.values()
        )

    def lines(self) -> list[str]:
        out = [
            f"rebuilt {self.schema}: {self.records} records read, {self.applied} applied"
            f" in {self.seconds:.1f} s"
            f" ({self.records / self.seconds if self.seconds else 0:.0f} records/s)"
        ]
        for table, (live, rebuilt) in self.counts.items():
            diff = self.differences.get(table, [])
            out.append(
                f"  {table:<20} live {live:>8}  rebuilt {rebuilt:>8}  differences {len(diff)}"
                + (f"  e.g. {', '.join(diff[:5])}" if diff else "")
            )
        if self.counts:
            out.append(
                f"  compared in {self.compare_seconds:.1f} s: "
                + ("EQUAL" if self.equal else "DIFFERENT")
            )
        return out


async def _columns(conn: asyncpg.Connection, schema: str, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
        schema,
        table,
    )
    return [r["column_name"] for r in rows if r["column_name"] not in EXCLUDED]


async def compare(conn: asyncpg.Connection, live: str, rebuilt: str, report: Report) -> None:
    """Row counts and the keys whose rows differ, table by table."""
    started = time.perf_counter()
    for table, key in COMPARED.items():
        cols = ", ".join(f'"{c}"' for c in await _columns(conn, live, table))
        keys = ", ".join(f'"{k}"::text' for k in key)
        n_live = await conn.fetchval(f'SELECT count(*) FROM "{live}".{table}')
        n_rebuilt = await conn.fetchval(f'SELECT count(*) FROM "{rebuilt}".{table}')
        report.counts[table] = (n_live, n_rebuilt)
        rows = await conn.fetch(
            f"SELECT DISTINCT {keys} AS k FROM ("
            f'(SELECT {cols} FROM "{live}".{table} EXCEPT SELECT {cols} FROM "{rebuilt}".{table})'
            " UNION ALL "
            f'(SELECT {cols} FROM "{rebuilt}".{table} EXCEPT SELECT {cols} FROM "{live}".{table})'
            ") d LIMIT 50"
        )
        report.differences[table] = [str(r["k"]) for r in rows]
    report.compare_seconds = time.perf_counter() - started


async def fresh_schema(settings: ServiceSettings, schema: str) -> asyncpg.Pool:
    from pathlib import Path

    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
    pool = await create_pool(settings.database_url, schema, min_size=1, max_size=2)
    await migrate(pool, schema, Path(__file__).parent / "migrations")
    return pool


async def replay_log(
    settings: ServiceSettings, pool: asyncpg.Pool, security: KafkaSecurity | None = None
) -> tuple[int, int]:
    """Apply every record of the console's topics, offset 0 to today's end; returns
    (records read, applied)."""
    prefix = settings.topic_prefix
    group = settings.group_id("console")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="lienthong-console-rebuild",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        **(security or KafkaSecurity.from_env("console")).kwargs(),
    )
    await consumer.start()
    read = applied = 0
    try:
        parts = [
            TopicPartition(t.full_name(prefix), p)
            for t in CONSUMES["console"]
            for p in range(t.partitions)
        ]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        starts = await consumer.beginning_offsets(parts)
        todo = {tp for tp in parts if ends[tp] > starts[tp]}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=BATCH)
            records = [Raw.of(r) for tp, recs in batch.items() for r in recs if r.offset < ends[tp]]
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
            if not records:
                continue
            async with pool.acquire() as conn, conn.transaction():
                for rec in records:
                    if await apply_record(conn, rec, group, prefix) == "applied":
                        applied += 1
            read += len(records)
    finally:
        await consumer.stop()
    return read, applied


async def rebuild(
    settings: ServiceSettings,
    *,
    schema: str | None = None,
    with_compare: bool = True,
    security: KafkaSecurity | None = None,
) -> Report:
    """Replay the log into ``schema`` and (optionally) compare it with the live schema."""
    target = schema or settings.console_rebuild_schema
    live = settings.db_schema or "console"
    if target == live:
        raise ValueError("the rebuild schema must not be the live one")
    report = Report(target)
    started = time.perf_counter()
    pool = await fresh_schema(settings, target)
    try:
        report.records, report.applied = await replay_log(settings, pool, security)
        report.seconds = time.perf_counter() - started
        if with_compare:
            async with pool.acquire() as conn:
                await compare(conn, live, target, report)
    finally:
        await pool.close()
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.console rebuild")
    parser.add_argument("--compare", action="store_true", help="compare with the live schema")
    parser.add_argument("--schema", default=None, help="target schema (console_rebuild)")
    args = parser.parse_args(argv)
    settings = ServiceSettings.for_service("console")
    report: Any = asyncio.run(rebuild(settings, schema=args.schema, with_compare=args.compare))
    for line in report.lines():
        print(line)
    return 0 if (not args.compare or report.equal) else 1
