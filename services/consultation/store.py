"""Consultation's SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.consultation import domain
from services.consultation.templates import Role
from services.runtime.db import insert_row, update_row


async def insert_request(conn: asyncpg.Connection, **row: Any) -> bool:
    return await insert_row(conn, "requests", row, on_conflict="(dossier_code, agency_id)")


async def open_round(conn: asyncpg.Connection, code: str, expected: int, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO rounds(dossier_code, expected, opened_at) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING",
        code,
        expected,
        at,
    )


async def get_request(
    conn: asyncpg.Connection | asyncpg.Pool, rid: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    sql = "SELECT * FROM requests WHERE id = $1" + (" FOR UPDATE" if for_update else "")
    return await conn.fetchrow(sql, rid)


async def update_request(conn: asyncpg.Connection, rid: UUID, **fields: Any) -> None:
    await update_row(conn, "requests", "id", rid, fields)


async def list_requests(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    dossier: str | None = None,
    agency: str | None = None,
    lead: str | None = None,
    open_only: bool = False,
    limit: int = 200,
) -> list[asyncpg.Record]:
    where: list[str] = []
    args: list[object] = []
    for col, val in (("dossier_code", dossier), ("agency_id", agency), ("lead_agency", lead)):
        if val is not None:
            args.append(val)
            where.append(f"{col} = ${len(args)}")
    if open_only:
        where.append("status IN ('open', 'lapsed')")
    args.append(limit)
    sql = (
        "SELECT * FROM requests"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY requested_at, agency_id LIMIT ${len(args)}"
    )
    return list(await conn.fetch(sql, *args))


async def requests_of(conn: asyncpg.Connection, code: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM requests WHERE dossier_code = $1 ORDER BY agency_id FOR UPDATE", code
        )
    )


async def complete_round(conn: asyncpg.Connection, code: str, at: datetime) -> bool:
    done = await conn.fetchval(
        "UPDATE rounds SET completed_at = $2 WHERE dossier_code = $1 AND completed_at IS NULL"
        " RETURNING true",
        code,
        at,
    )
    return bool(done)


# --- signers and nonces ----------------------------------------------------------------------


async def save_signer(conn: asyncpg.Connection | asyncpg.Pool, s: domain.Signer) -> None:
    await conn.execute(
        "INSERT INTO signers(key_id, agency_id, person, role, public_key, active)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_id) DO UPDATE SET"
        " agency_id = EXCLUDED.agency_id, person = EXCLUDED.person, role = EXCLUDED.role,"
        " public_key = EXCLUDED.public_key, active = EXCLUDED.active",
        s.key_id,
        s.agency_id,
        s.person,
        s.role.value,
        s.public_key,
        s.active,
    )


async def get_signer(conn: asyncpg.Connection, key_id: str) -> domain.Signer | None:
    r = await conn.fetchrow("SELECT * FROM signers WHERE key_id = $1", key_id)
    if r is None:
        return None
    return domain.Signer(
        key_id=r["key_id"],
        agency_id=r["agency_id"],
        person=r["person"],
        role=Role(r["role"]),
        public_key=bytes(r["public_key"]),
        active=r["active"],
    )


async def use_nonce(conn: asyncpg.Connection, key_id: str, nonce: str) -> bool:
    """False if this signer already used this nonce (a replay)."""
    fresh = await conn.fetchval(
        "INSERT INTO nonces(key_id, nonce) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
        key_id,
        nonce,
    )
    return bool(fresh)


# --- audit -----------------------------------------------------------------------------------


async def audit(
    conn: asyncpg.Connection,
    request: asyncpg.Record | dict[str, Any],
    action: str,
    actor: str,
    at: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one row to the request's chain. The caller holds the request's row lock."""
    details = details or {}
    rid = request["id"]
    head = await conn.fetchrow("SELECT audit_seq, audit_head FROM requests WHERE id = $1", rid)
    seq = head["audit_seq"] + 1
    prev = head["audit_head"]
    h = domain.audit_hash(prev, rid, seq, action, actor, at, details)
    await conn.execute(
        "INSERT INTO audit(request_id, seq, action, actor, at, details, prev_hash, hash)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        rid,
        seq,
        action,
        actor,
        at,
        details,
        prev,
        h,
    )
    await conn.execute(
        "UPDATE requests SET audit_seq = $2, audit_head = $3 WHERE id = $1", rid, seq, h
    )


async def audit_rows(
    conn: asyncpg.Connection | asyncpg.Pool, rid: UUID | None = None
) -> list[asyncpg.Record]:
    if rid is None:
        return list(await conn.fetch("SELECT * FROM audit ORDER BY request_id, seq"))
    return list(await conn.fetch("SELECT * FROM audit WHERE request_id = $1 ORDER BY seq", rid))


async def verify_audit(conn: asyncpg.Connection | asyncpg.Pool) -> domain.BrokenLink | None:
    """Walk every request's chain; the first broken link, in request order, or None."""
    heads = {
        r["id"]: r["audit_head"]
        for r in await conn.fetch("SELECT id, audit_head FROM requests WHERE audit_seq > 0")
    }
    current: UUID | None = None
    chain: list[dict[str, Any]] = []
    broken: list[domain.BrokenLink] = []

    async def flush() -> None:
        if current is not None:
            b = domain.verify_chain(chain, heads.pop(current, None))
            if b:
                broken.append(b)

    for row in await audit_rows(conn):
        if row["request_id"] != current:
            await flush()
            current, chain = row["request_id"], []
        chain.append(dict(row))
    await flush()
    for rid, head in heads.items():  # requests whose rows vanished entirely
        broken.append(domain.BrokenLink(rid, 0, 0, f"no audit rows but head {head[:12]}"))
    return min(broken, key=lambda b: b.audit_id) if broken else None
