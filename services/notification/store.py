"""Notification's SQL."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from contracts.common import Channel, Office
from contracts.envelope import DOSSIER_CODE_PATTERN
from services.notification.domain import Contact, Receipt
from services.runtime.db import insert_row

DOSSIER_CODE = re.compile(DOSSIER_CODE_PATTERN)


async def insert(conn: asyncpg.Connection, **row: Any) -> bool:
    return await insert_row(conn, "notifications", row, on_conflict="")


async def get(conn: asyncpg.Connection | asyncpg.Pool, nid: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM notifications WHERE id = $1", nid)


async def of_dossier(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> list[asyncpg.Record]:
    if not DOSSIER_CODE.fullmatch(code):  # a code that cannot exist is never sent to PostgreSQL
        return []
    return list(
        await conn.fetch(
            "SELECT * FROM notifications WHERE dossier_code = $1 ORDER BY created_at, kind", code
        )
    )


async def save_receipt(conn: asyncpg.Connection, r: Receipt) -> None:
    """Keep what later notices need of the dossier's receipt; a later receipt of the same
    dossier (it is received once, but a replay may differ) replaces it."""
    await conn.execute(
        "INSERT INTO dossier_receipts(dossier_code, applicant, channel, procedure_name,"
        " received_at, office) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (dossier_code) DO UPDATE SET applicant = EXCLUDED.applicant,"
        " channel = EXCLUDED.channel, procedure_name = EXCLUDED.procedure_name,"
        " received_at = EXCLUDED.received_at, office = EXCLUDED.office",
        r.code,
        r.contact.as_json(),
        int(r.channel),
        r.procedure_name,
        r.received_at,
        r.office.model_dump(mode="json") if r.office else None,
    )


async def get_receipt(conn: asyncpg.Connection, code: str) -> Receipt | None:
    row = await conn.fetchrow("SELECT * FROM dossier_receipts WHERE dossier_code = $1", code)
    if row is None:
        return None
    return Receipt(
        code=row["dossier_code"],
        contact=Contact.from_json(row["applicant"]),
        channel=Channel(row["channel"]),
        procedure_name=row["procedure_name"],
        received_at=row["received_at"],
        office=Office.model_validate(row["office"]) if row["office"] else None,
    )


async def save_request(conn: asyncpg.Connection, **row: Any) -> None:
    await conn.execute(
        "INSERT INTO consult_requests(request_id, dossier_code, agency_id, agency_name, due_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (request_id) DO UPDATE SET due_at = $5",
        row["request_id"],
        row["dossier_code"],
        row["agency_id"],
        row["agency_name"],
        row["due_at"],
    )


async def get_request(conn: asyncpg.Connection, rid: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM consult_requests WHERE request_id = $1", rid)


# --- delivery: claim, send outside any transaction, mark ---------------------------------


async def claim_due(
    conn: asyncpg.Connection, now: datetime, lease: timedelta, limit: int, claim: UUID
) -> list[asyncpg.Record]:
    """Take up to ``limit`` due notifications for one sender: pending ones whose time has
    come and sending ones whose lease ran out (their sender died). Commit at once."""
    rows = await conn.fetch(
        "UPDATE notifications SET status = 'sending', claim = $4, due_at = $1 + $2::interval,"
        " attempts = attempts + 1"
        " WHERE id IN (SELECT id FROM notifications"
        "   WHERE status IN ('pending', 'sending') AND due_at <= $1"
        "   ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
        " RETURNING *",
        now,
        lease,
        limit,
        claim,
    )
    # oldest first: RETURNING keeps no order
    return sorted(rows, key=lambda r: (r["created_at"], r["id"]))


async def renew(pool: asyncpg.Pool, claim: UUID, until: datetime) -> None:
    """Extend the lease of the rows a sender still holds (it is alive, just slow)."""
    await pool.execute(
        "UPDATE notifications SET due_at = $2 WHERE claim = $1 AND status = 'sending'",
        claim,
        until,
    )


async def mark_sent(
    conn: asyncpg.Connection, nid: UUID, claim: UUID, at: datetime, message_id: str | None
) -> bool:
    """Record the delivery; False if the claim was lost (another sender took over)."""
    done = await conn.fetchval(
        "UPDATE notifications SET status = 'sent', sent_at = $3, due_at = NULL,"
        " message_id = $4, last_error = NULL"
        " WHERE id = $1 AND claim = $2 AND status = 'sending' RETURNING true",
        nid,
        claim,
        at,
        message_id,
    )
    return bool(done)


async def retry_later(
    conn: asyncpg.Connection,
    nid: UUID,
    claim: UUID,
    due_at: datetime,
    error: str | None,
    *,
    count_attempt: bool = True,
) -> None:
    """Back to pending until ``due_at``; an attempt not made is not counted."""
    await conn.execute(
        "UPDATE notifications SET status = 'pending', due_at = $3,"
        " last_error = COALESCE($4, last_error),"
        " attempts = attempts - CASE WHEN $5 THEN 0 ELSE 1 END"
        " WHERE id = $1 AND claim = $2 AND status = 'sending'",
        nid,
        claim,
        due_at,
        error,
        count_attempt,
    )


async def mark_failed(
    conn: asyncpg.Connection, nid: UUID, claim: UUID | None, at: datetime, reason: str
) -> None:
    """Give up on a notification, keeping the reason for operators."""
    await conn.execute(
        "UPDATE notifications SET status = 'failed', due_at = NULL, failed_at = $3,"
        " last_error = $4 WHERE id = $1 AND (claim = $2 OR $2 IS NULL)"
        " AND status IN ('pending', 'sending')",
        nid,
        claim,
        at,
        reason[:2000],
    )
