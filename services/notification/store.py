"""Notification's SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.runtime.db import insert_row


async def insert(conn: asyncpg.Connection, **row: Any) -> bool:
    return await insert_row(conn, "notifications", row, on_conflict="")


async def get(conn: asyncpg.Connection | asyncpg.Pool, nid: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM notifications WHERE id = $1", nid)


async def mark_sent(conn: asyncpg.Connection, nid: UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE notifications SET status = 'sent', sent_at = $2 WHERE id = $1", nid, at
    )


async def of_dossier(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM notifications WHERE dossier_code = $1 ORDER BY created_at, kind", code
        )
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
