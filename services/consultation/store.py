"""Consultation's SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.consultation import domain
from services.consultation.templates import Role
from services.runtime import timers
from services.runtime.db import insert_row, update_row


async def insert_request(conn: asyncpg.Connection, **row: Any) -> bool:
    return await insert_row(conn, "requests", row, on_conflict="(dossier_code, agency_id)")


# --- the round aggregate ---------------------------------------------------------------------

_HOLDS_ROUND = "consultation.holds_round"


async def lock_round(conn: asyncpg.Connection, code: str) -> domain.Round:
    """Lock the dossier's round row (creating it if this is the first word of the dossier),
    then its requests, and load them as the aggregate. Always the first lock of any path
    that changes a request of the dossier."""
    sql = "SELECT * FROM rounds WHERE dossier_code = $1 FOR UPDATE"
    row = await conn.fetchrow(sql, code)
    if row is None:
        await conn.execute(
            "INSERT INTO rounds(dossier_code) VALUES ($1) ON CONFLICT DO NOTHING", code
        )
        row = await conn.fetchrow(sql, code)
    assert row is not None
    requests = await conn.fetch(
        "SELECT id, dossier_code, lead_agency, agency_id, template_id, template_version,"
        " status, due_at, reminders_sent, escalation_step, extensions, decision, outcome_at"
        " FROM requests WHERE dossier_code = $1 ORDER BY agency_id FOR UPDATE",
        code,
    )
    return domain.Round(
        code=code,
        opened_at=row["opened_at"],
        completed_at=row["completed_at"],
        ended_at=row["ended_at"],
        ended_by=row["ended_by"],
        ended_reason=row["ended_reason"],
        version=row["version"],
        requests=[
            domain.Request(**{**dict(r), "status": domain.Status(r["status"])}) for r in requests
        ],
    )


async def save_round(conn: asyncpg.Connection, rnd: domain.Round) -> None:
    """Write what the round's methods changed, under its row lock: requests, their audit
    rows, timers cancelled (never waiting for one a scheduler holds) and planned, and the
    round itself with its version bumped. Its events go to the outbox with the caller's
    envelope as cause (see ``Opinions._save``)."""
    for r in rnd.requests:
        if r.changed:
            await update_request(conn, r.id, **r.changed)
            r.changed = {}
    for a in rnd.audits:
        await audit(conn, {"id": a.request_id}, a.action, a.actor, a.at, a.details)
    rnd.audits = []
    if rnd.cancel_timers:
        await timers.cancel(conn, [str(rid) for rid in rnd.cancel_timers])
        rnd.cancel_timers = []
    for t in rnd.plan_timers:
        owner = t.ref.split("/", 1)[0]
        await timers.schedule(conn, t.kind, t.ref, t.due_at, t.payload, owner=owner)
    rnd.plan_timers = []
    rnd.version = await conn.fetchval(
        "UPDATE rounds SET expected = $2, opened_at = $3, completed_at = $4, ended_at = $5,"
        " ended_by = $6, ended_reason = $7, version = version + 1"
        " WHERE dossier_code = $1 RETURNING version",
        rnd.code,
        len(rnd.requests),
        rnd.opened_at,
        rnd.completed_at,
        rnd.ended_at,
        rnd.ended_by,
        rnd.ended_reason,
    )


async def dossier_of(conn: asyncpg.Connection | asyncpg.Pool, rid: UUID) -> str | None:
    """The dossier a request belongs to (immutable, so read without a lock)."""
    code: str | None = await conn.fetchval("SELECT dossier_code FROM requests WHERE id = $1", rid)
    return code


async def lock_round_in_batch(conn: asyncpg.Connection, rid: UUID) -> domain.Round | None:
    """The round of a timer's request, for a scheduler batch that fires many timers in one
    transaction and so holds every round it has locked until it commits
    (``timers.one_of_many``: the first round is waited for, every later one briefly)."""
    code = await dossier_of(conn, rid)
    if code is None:
        return None
    async with timers.one_of_many(conn, _HOLDS_ROUND):
        return await lock_round(conn, code)


async def get_request(conn: asyncpg.Connection | asyncpg.Pool, rid: UUID) -> asyncpg.Record | None:
    """One request as a row, for views (changes go through the round)."""
    return await conn.fetchrow("SELECT * FROM requests WHERE id = $1", rid)


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


async def inbox_page(
    conn: asyncpg.Connection | asyncpg.Pool,
    agency: str,
    *,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """One page of an agency's open requests by (due_at, id), after a keyset position:
    rows inserted meanwhile cannot shift the pages, and every request is reachable."""
    if after is None:
        return list(
            await conn.fetch(
                "SELECT * FROM requests WHERE agency_id = $1 AND status IN ('open', 'lapsed')"
                " ORDER BY due_at, id LIMIT $2",
                agency,
                limit,
            )
        )
    return list(
        await conn.fetch(
            "SELECT * FROM requests WHERE agency_id = $1 AND status IN ('open', 'lapsed')"
            " AND (due_at, id) > ($2, $3) ORDER BY due_at, id LIMIT $4",
            agency,
            after[0],
            after[1],
            limit,
        )
    )


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


# --- what a letter prints ------------------------------------------------------------------


async def next_letter_number(conn: asyncpg.Connection, agency_id: str, year: int) -> int:
    """The next number of the agency's letters in ``year``, from 1 on 1 January (Decree
    30/2020/NĐ-CP, Art. 15(1); for an electronic document the system gives it, Art.
    15(3)). Taken in the caller's transaction: a rolled-back request gives its number back."""
    n: int = await conn.fetchval(
        "INSERT INTO letter_numbers(agency_id, year, last) VALUES ($1, $2, 1)"
        " ON CONFLICT (agency_id, year) DO UPDATE SET last = letter_numbers.last + 1"
        " RETURNING last",
        agency_id,
        year,
    )
    return n


async def save_documents(
    conn: asyncpg.Connection, code: str, documents: list[dict[str, Any]], *, merge: bool
) -> None:
    """The documents the dossier was handed in with; a supplement adds to them (a code
    handed in again replaces its entry)."""
    row = await conn.fetchrow(
        "SELECT documents FROM rounds WHERE dossier_code = $1 FOR UPDATE", code
    )
    if row is None:
        await conn.execute(
            "INSERT INTO rounds(dossier_code) VALUES ($1) ON CONFLICT DO NOTHING", code
        )
        row = await conn.fetchrow(
            "SELECT documents FROM rounds WHERE dossier_code = $1 FOR UPDATE", code
        )
    known = list(row["documents"] or []) if merge and row is not None else []
    codes = {d["code"] for d in documents}
    merged = [d for d in known if d.get("code") not in codes] + documents
    await conn.execute("UPDATE rounds SET documents = $2 WHERE dossier_code = $1", code, merged)


async def documents_of(conn: asyncpg.Connection, code: str) -> list[dict[str, Any]] | None:
    """The dossier's documents as handed in, or None when no receipt has reached us."""
    docs = await conn.fetchval("SELECT documents FROM rounds WHERE dossier_code = $1", code)
    return None if docs is None else list(docs)
