"""Intake's SQL."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import asyncpg

from contracts.common import DossierStatus, Procedure
from contracts.envelope import DOSSIER_CODE_PATTERN, Envelope
from services.runtime.db import insert_row, update_row

DOSSIER_CODE = re.compile(DOSSIER_CODE_PATTERN)


async def save_procedure(conn: asyncpg.Connection, p: Procedure) -> bool:
    """Store a catalogue version; False if that version is already there."""
    inserted = await conn.fetchval(
        "INSERT INTO procedures(code, version, effective_from, definition)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
        p.code,
        p.version,
        p.effective_from,
        p.model_dump(mode="json"),
    )
    return bool(inserted)


async def next_serial(conn: asyncpg.Connection, agency_id: str, day: date) -> int:
    """The next serial of ``agency_id`` on ``day``; holds the row lock until commit."""
    serial: int = await conn.fetchval(
        "INSERT INTO serials(agency_id, day, last) VALUES ($1, $2, 1)"
        " ON CONFLICT (agency_id, day) DO UPDATE SET last = serials.last + 1 RETURNING last",
        agency_id,
        day,
    )
    return serial


async def next_register_number(conn: asyncpg.Connection, agency_id: str, book: str) -> int:
    """The next line of ``agency_id``'s register book (Sổ theo dõi hồ sơ); row lock to commit."""
    number: int = await conn.fetchval(
        "INSERT INTO registers(agency_id, book, last) VALUES ($1, $2, 1)"
        " ON CONFLICT (agency_id, book) DO UPDATE SET last = registers.last + 1 RETURNING last",
        agency_id,
        book,
    )
    return number


async def find_by_idempotency_key(conn: asyncpg.Connection, key: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT code, request_hash, response FROM dossiers WHERE idempotency_key = $1", key
    )


async def insert_dossier(conn: asyncpg.Connection, row: dict[str, Any]) -> None:
    await insert_row(conn, "dossiers", row)


async def get_dossier(
    conn: asyncpg.Connection | asyncpg.Pool, code: str, *, for_update: bool = False
) -> asyncpg.Record | None:
    if not DOSSIER_CODE.fullmatch(code):  # a code that cannot exist is never sent to PostgreSQL
        return None
    sql = "SELECT * FROM dossiers WHERE code = $1" + (" FOR UPDATE" if for_update else "")
    return await conn.fetchrow(sql, code)


async def update_dossier(conn: asyncpg.Connection, code: str, **fields: Any) -> None:
    await update_row(conn, "dossiers", "code", code, fields, touch="updated_at")


async def record_event(conn: asyncpg.Connection, env: Envelope) -> None:
    await conn.execute(
        "INSERT INTO timeline(event_id, dossier_code, type, occurred_at, producer, data)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        env.event_id,
        env.subject,
        env.type,
        env.occurred_at,
        env.producer,
        env.data,
    )


async def timeline(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT event_id, type, occurred_at, producer, data FROM timeline"
            " WHERE dossier_code = $1 ORDER BY occurred_at, type",
            code,
        )
    )


async def count_by_status(pool: asyncpg.Pool) -> dict[int, int]:
    rows = await pool.fetch("SELECT status, count(*) AS n FROM dossiers GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def record_status(
    conn: asyncpg.Connection, code: str, state: DossierStatus, env: Envelope
) -> None:
    """One line of the dossier's status history (once per event)."""
    await conn.execute(
        "INSERT INTO status_history(dossier_code, at, state, status, event_type, event_id)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id) DO NOTHING",
        code,
        env.occurred_at,
        state.value,
        int(state.portal),
        env.type,
        env.event_id,
    )


async def move(
    conn: asyncpg.Connection,
    code: str,
    state: DossierStatus,
    allowed: tuple[DossierStatus, ...],
    env: Envelope,
    **fields: Any,
) -> bool:
    """Put the dossier in ``state`` (and set ``fields``) if it is in one of ``allowed``;
    recorded in its history. False if it was not (a late or repeated event)."""
    sets = ", ".join(f"{k} = ${i + 4}" for i, k in enumerate(fields))
    moved = await conn.fetchval(
        "UPDATE dossiers SET status = $2, state = $3, updated_at = now()"
        + (f", {sets}" if sets else "")
        + " WHERE code = $1 AND status = ANY($"
        + str(len(fields) + 4)
        + "::smallint[]) RETURNING true",
        code,
        int(state.portal),
        state.value,
        *fields.values(),
        sorted({int(s.portal) for s in allowed}),
    )
    if moved:
        await record_status(conn, code, state, env)
    return bool(moved)


async def new_appointment(conn: asyncpg.Connection, code: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE dossiers SET appointment_at = $2, apologies = apologies + 1, updated_at = now()"
        " WHERE code = $1",
        code,
        at,
    )


async def status_history(
    conn: asyncpg.Connection | asyncpg.Pool, code: str
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT at, state, status, event_type, event_id FROM status_history"
            " WHERE dossier_code = $1 ORDER BY at, id",
            code,
        )
    )


async def register(
    conn: asyncpg.Connection | asyncpg.Pool, agency_id: str, start: datetime, end: datetime
) -> list[asyncpg.Record]:
    """The receiving agency's register lines of a day (Form 06), in register order."""
    return list(
        await conn.fetch(
            "SELECT * FROM dossiers WHERE receiving_agency = $1 AND outcome = 'received'"
            " AND received_at >= $2 AND received_at < $3"
            " ORDER BY register_book, register_number, code",
            agency_id,
            start,
            end,
        )
    )
