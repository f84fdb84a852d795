"""The console's SQL: writing the read models, and the queries its API answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.console.domain import DOSSIER_TYPES, Fact, fold_dossier, fold_request
from services.runtime.db import insert_row

# Columns written from a fold, in table order (``updated_at`` is set by the database).
DOSSIER_COLUMNS = (
    "code",
    "agency",
    "receiving_agency",
    "lead_agency",
    "procedure_code",
    "procedure_name",
    "channel",
    "online",
    "state",
    "portal_status",
    "received_at",
    "appointment_at",
    "legal_appointment_at",
    "step_deadline_at",
    "finished_at",
    "returned_at",
    "timeliness",
    "apologies",
    "supplement_requests",
    "overdue_steps",
    "events",
    "last_event_at",
)
REQUEST_COLUMNS = (
    "request_id",
    "dossier_code",
    "lead_agency",
    "agency_id",
    "agency_name",
    "template_id",
    "subject",
    "requested_at",
    "due_at",
    "status",
    "reminders",
    "escalations",
    "last_escalation",
    "decision",
    "closed_at",
    "events",
)


async def record_inbox(
    conn: asyncpg.Connection, consumer: str, event_id: uuid.UUID, kind: str
) -> bool:
    """The runtime's inbox, in the caller's transaction: False if seen before."""
    fresh = await conn.fetchval(
        "INSERT INTO inbox(consumer, event_id, event_type) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING true",
        consumer,
        event_id,
        kind,
    )
    return bool(fresh)


async def insert_event(conn: asyncpg.Connection, row: dict[str, Any]) -> bool:
    return await insert_row(conn, "events", row, on_conflict="(event_id)")


async def _upsert(
    conn: asyncpg.Connection, table: str, key: str, cols: tuple[str, ...], row: dict[str, Any]
) -> None:
    values = [row[c] for c in cols]
    params = ", ".join(f"${i + 1}" for i in range(len(cols)))
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != key)
    await conn.execute(
        f"INSERT INTO {table}({', '.join(cols)}) VALUES ({params})"
        f" ON CONFLICT ({key}) DO UPDATE SET {sets}, updated_at = now()",
        *values,
    )


async def refold_dossier(conn: asyncpg.Connection, code: str) -> None:
    rows = await conn.fetch(
        "SELECT occurred_at, event_id::text AS event_id, type, data FROM events"
        " WHERE dossier_code = $1 AND type = ANY($2::text[])",
        code,
        sorted(DOSSIER_TYPES),
    )
    folded = fold_dossier(
        code, [Fact(r["occurred_at"], r["event_id"], r["type"], r["data"]) for r in rows]
    )
    if folded is not None:
        await _upsert(conn, "dossiers", "code", DOSSIER_COLUMNS, folded)


async def refold_request(conn: asyncpg.Connection, request_id: str) -> None:
    rows = await conn.fetch(
        "SELECT occurred_at, event_id::text AS event_id, type, data FROM events"
        " WHERE data ? 'request_id' AND data ->> 'request_id' = $1"
        " AND type LIKE 'consultation.%'",
        request_id,
    )
    folded = fold_request(
        request_id, [Fact(r["occurred_at"], r["event_id"], r["type"], r["data"]) for r in rows]
    )
    if folded is not None:
        folded["request_id"] = uuid.UUID(request_id)
        await _upsert(conn, "opinion_requests", "request_id", REQUEST_COLUMNS, folded)


async def insert_dead_letter(conn: asyncpg.Connection, row: dict[str, Any]) -> bool:
    return await insert_row(conn, "dead_letter_entries", row, on_conflict="(id)")


# --- reads ------------------------------------------------------------------------------


def event_filters(
    *,
    type_: str | None,
    agency: str | None,
    dossier: str | None,
    after: int | None,
    start: int = 1,
) -> tuple[str, list[Any]]:
    """A WHERE clause over ``events`` for the API's filters (a type ending in ``.*`` is a
    family)."""
    where: list[str] = []
    args: list[Any] = []
    if type_:
        if type_.endswith(".*"):
            args.append(type_[:-1] + "%")
            where.append(f"type LIKE ${start + len(args) - 1}")
        else:
            args.append(type_)
            where.append(f"type = ${start + len(args) - 1}")
    if agency:
        args.append(agency)
        where.append(f"${start + len(args) - 1} = ANY(agencies)")
    if dossier:
        args.append(dossier)
        where.append(f"dossier_code = ${start + len(args) - 1}")
    if after is not None:
        args.append(after)
        where.append(f"seq > ${start + len(args) - 1}")
    return (" WHERE " + " AND ".join(where)) if where else "", args


EVENT_COLUMNS = (
    'seq, event_id, type, schema_version, topic, partition, "offset", subject, dossier_code,'
    " agencies, correlation_id, causation_id, occurred_at, producer, data, recorded_at"
)


async def events(
    pool: asyncpg.Pool,
    *,
    type_: str | None,
    agency: str | None,
    dossier: str | None,
    after: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    where, args = event_filters(type_=type_, agency=agency, dossier=dossier, after=after)
    order = "ASC" if after is not None else "DESC"
    rows = await pool.fetch(
        f"SELECT {EVENT_COLUMNS} FROM events{where} ORDER BY seq {order} LIMIT {int(limit)}",
        *args,
    )
    return list(rows)


async def timeline(pool: asyncpg.Pool, code: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE dossier_code = $1"
            " ORDER BY occurred_at, event_id",
            code,
        )
    )


async def throughput(pool: asyncpg.Pool, since: datetime) -> list[asyncpg.Record]:
    """Events recorded per minute and topic since ``since``."""
    return list(
        await pool.fetch(
            "SELECT date_trunc('minute', recorded_at) AS minute, topic, count(*) AS n"
            " FROM events WHERE recorded_at >= $1 GROUP BY 1, 2 ORDER BY 1, 2",
            since,
        )
    )


# The last action decides; a replay the consumer dead-lettered again (its dead letter
# carries the replay's ``replayed_from`` header) failed, though the broker took it.
DEAD_LETTER_STATUS = """
    COALESCE((SELECT CASE WHEN a.action = 'discard' THEN 'discarded'
                          WHEN EXISTS (SELECT 1 FROM dead_letter_entries r
                                       WHERE r.headers->>'replayed_from' = d.id
                                         AND r.dead_lettered_at >= a.created_at)
                               THEN 'replay_failed'
                          WHEN o.published_at IS NOT NULL THEN 'replayed'
                          WHEN o.failed_at IS NOT NULL THEN 'replay_failed'
                          ELSE 'replay_pending' END
              FROM dead_letter_actions a LEFT JOIN outbox o ON o.event_id = a.outbox_event_id
              WHERE a.entry_id = d.id ORDER BY a.id DESC LIMIT 1), 'open')
"""


async def dead_letters(
    pool: asyncpg.Pool, *, agency: str | None, status: str | None, limit: int
) -> list[asyncpg.Record]:
    where, args = [], []
    if agency:
        args.append(agency)
        where.append(f"${len(args)} = ANY(agencies)")
    sql = (
        "SELECT * FROM (SELECT d.id, d.writer, d.forged, d.dlq_partition, d.dlq_offset, d.key,"
        " d.reason, d.detail,"
        " d.errors, d.consumer, d.origin_topic, d.origin_partition, d.origin_offset,"
        " d.stored_elsewhere, d.event_id, d.event_type, d.dossier_code, d.agencies,"
        f" d.dead_lettered_at, length(d.value) AS size, {DEAD_LETTER_STATUS} AS status"
        " FROM dead_letter_entries d" + (" WHERE " + " AND ".join(where) if where else "") + ") x"
    )
    if status:
        args.append(status)
        sql += f" WHERE status = ${len(args)}"
    sql += f" ORDER BY dead_lettered_at DESC NULLS LAST, id DESC LIMIT {int(limit)}"
    return list(await pool.fetch(sql, *args))


async def dead_letter(
    pool: asyncpg.Pool | asyncpg.Connection, entry_id: str
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await pool.fetchrow(
        f"SELECT d.*, length(d.value) AS size, {DEAD_LETTER_STATUS} AS status"
        " FROM dead_letter_entries d WHERE d.id = $1",
        entry_id,
    )
    return row


async def dead_letter_actions(pool: asyncpg.Pool, entry_id: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT a.*, o.published_at, o.failed_at, o.failure FROM dead_letter_actions a"
            " LEFT JOIN outbox o ON o.event_id = a.outbox_event_id"
            " WHERE a.entry_id = $1 ORDER BY a.id",
            entry_id,
        )
    )
