"""Routing's SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from contracts.common import Procedure
from services.runtime.db import insert_row


async def save_procedure(conn: asyncpg.Connection, p: Procedure) -> None:
    await conn.execute(
        "INSERT INTO procedures(code, version, definition) VALUES ($1, $2, $3)"
        " ON CONFLICT (code, version) DO UPDATE SET definition = EXCLUDED.definition",
        p.code,
        p.version,
        p.model_dump(mode="json"),
    )


async def get_procedure(conn: asyncpg.Connection, code: str, version: int) -> Procedure | None:
    data = await conn.fetchval(
        "SELECT definition FROM procedures WHERE code = $1 AND version = $2", code, version
    )
    return None if data is None else Procedure.model_validate(data)


async def insert_route(conn: asyncpg.Connection, **row: Any) -> bool:
    return await insert_row(conn, "routes", row, on_conflict="(dossier_code)")


async def get_route(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM routes WHERE dossier_code = $1", code)


async def advance(conn: asyncpg.Connection, code: str, at: datetime) -> bool:
    done = await conn.fetchval(
        "UPDATE routes SET state = 'deciding', advanced_at = $2"
        " WHERE dossier_code = $1 AND state = 'consulting' RETURNING true",
        code,
        at,
    )
    return bool(done)


async def close(conn: asyncpg.Connection, code: str) -> None:
    await conn.execute("UPDATE routes SET state = 'closed' WHERE dossier_code = $1", code)
