"""Intake's SQL."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID

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


async def resumed(conn: asyncpg.Connection, code: str, at: datetime, appointment: datetime) -> None:
    """The last supplement request of the dossier answered: when, and the new appointment
    (the portal's NgayHenTraMoi)."""
    history = await conn.fetchval(
        "SELECT supplement_history FROM dossiers WHERE code = $1 FOR UPDATE", code
    )
    if not history or history[-1].get("resumed_at"):
        return
    history[-1] = {
        **history[-1],
        "resumed_at": at.isoformat(),
        "appointment_after": appointment.isoformat(),
    }
    await conn.execute("UPDATE dossiers SET supplement_history = $2 WHERE code = $1", code, history)


async def new_appointment(conn: asyncpg.Connection, code: str, a: Any) -> None:
    """An apology (Form 04, ``ApologyIssued``): the applicant's appointment becomes its new
    date; the legal appointment stays where it was (the portal's NgayHenTra) and the
    apology goes into the history, once per number."""
    line = {
        "number": a.number,
        "agency_id": a.agency_id,
        "agency_name": a.agency_name,
        "reason": a.reason,
        "previous_appointment_at": a.previous_appointment_at.isoformat(),
        "appointment_at": a.appointment_at.isoformat(),
        "issued_at": a.issued_at.isoformat(),
    }
    await conn.execute(
        "UPDATE dossiers SET legal_appointment_at = coalesce(legal_appointment_at, $3),"
        " appointment_at = $2, apologies = apologies + 1,"
        " apology_history = apology_history || jsonb_build_array($4::jsonb),"
        " updated_at = now()"
        " WHERE code = $1 AND NOT apology_history @> jsonb_build_array($5::jsonb)",
        code,
        a.appointment_at,
        a.previous_appointment_at,
        line,
        {"number": a.number},
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


# --- outbound sync to the national portal --------------------------------------------------


async def enqueue_sync(
    conn: asyncpg.Connection,
    code: str,
    kind: str,
    payload: dict[str, Any],
    cause: UUID,
    now: datetime,
) -> bool:
    """One update for the portal, once per causing event and kind."""
    inserted = await conn.fetchval(
        "INSERT INTO portal_sync(dossier_code, kind, payload, cause, due_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (cause, kind) DO NOTHING RETURNING true",
        code,
        kind,
        payload,
        cause,
        now,
    )
    return bool(inserted)


async def claim_sync(
    conn: asyncpg.Connection, now: datetime, lease: timedelta, limit: int, claim: UUID
) -> list[asyncpg.Record]:
    """The next unsent update of each dossier that is due (a 'sending' one whose lease
    ended counts as due: its sender died), claimed for ``lease``. The record goes before
    the progress lines (as OpenCPS sends DongBoHoSoMC, then CapNhatTienDoHoSoMC): records
    in order, then progress lines in order, and a progress line only of a dossier the
    portal holds (it waits for the record otherwise), so a line the portal cannot place
    never holds back the record that would create the dossier."""
    rows = await conn.fetch(
        "SELECT s.id, s.dossier_code, s.kind, s.payload, s.attempts, d.known"
        " FROM portal_sync s LEFT JOIN portal_dossiers d ON d.dossier_code = s.dossier_code"
        " WHERE s.status IN ('pending', 'sending') AND s.due_at <= $1"
        " AND (s.kind = 'record' OR coalesce(d.known, false))"
        " AND NOT EXISTS (SELECT 1 FROM portal_sync e WHERE e.dossier_code = s.dossier_code"
        "   AND e.status IN ('pending', 'sending') AND e.id <> s.id"
        "   AND ((e.kind = 'record' AND (s.kind = 'progress' OR e.id < s.id))"
        "     OR (e.kind = 'progress' AND s.kind = 'progress' AND e.id < s.id)))"
        " ORDER BY s.id LIMIT $2 FOR UPDATE OF s SKIP LOCKED",
        now,
        limit,
    )
    if rows:
        await conn.execute(
            "UPDATE portal_sync SET status = 'sending', claim = $2, due_at = $3,"
            " attempts = attempts + 1 WHERE id = ANY($1::bigint[])",
            [r["id"] for r in rows],
            claim,
            now + lease,
        )
    return list(rows)


async def sync_sent(
    conn: asyncpg.Connection, ids: list[int], claim: UUID, now: datetime, answer: Any
) -> list[asyncpg.Record]:
    """Mark updates the portal took; returns the rows marked (a lost claim marks none)."""
    rows = await conn.fetch(
        "UPDATE portal_sync SET status = 'sent', sent_at = $3, answer = $4, last_error = NULL"
        " WHERE id = ANY($1::bigint[]) AND claim = $2 AND status = 'sending'"
        " RETURNING dossier_code, kind, payload",
        ids,
        claim,
        now,
        answer,
    )
    for r in rows:
        status = r["payload"].get("TrangThaiHoSo") if r["kind"] == "record" else None
        await conn.execute(
            "INSERT INTO portal_dossiers(dossier_code, known, last_status, synced_at)"
            " VALUES ($1, true, $2, $3) ON CONFLICT (dossier_code) DO UPDATE SET known = true,"
            " last_status = coalesce(EXCLUDED.last_status, portal_dossiers.last_status),"
            " synced_at = EXCLUDED.synced_at, last_error = NULL",
            r["dossier_code"],
            None if status is None else int(status),
            now,
        )
    return list(rows)


async def sync_retry(
    conn: asyncpg.Connection,
    ids: list[int],
    claim: UUID,
    due: datetime,
    error: str | None,
    *,
    count_attempt: bool,
) -> None:
    """Back to waiting until ``due``; an attempt that was not the update's fault (the
    portal away) is not counted."""
    await conn.execute(
        "UPDATE portal_sync SET status = 'pending', due_at = $3, last_error = $4,"
        " attempts = attempts - CASE WHEN $5 THEN 0 ELSE 1 END"
        " WHERE id = ANY($1::bigint[]) AND claim = $2 AND status = 'sending'",
        ids,
        claim,
        due,
        error,
        count_attempt,
    )


async def sync_failed(
    conn: asyncpg.Connection, sid: int, claim: UUID, error: str, answer: Any
) -> None:
    """Set aside with the portal's answer: refused for what it holds; the next goes on."""
    code = await conn.fetchval(
        "UPDATE portal_sync SET status = 'failed', last_error = $3, answer = $4"
        " WHERE id = $1 AND claim = $2 AND status = 'sending' RETURNING dossier_code",
        sid,
        claim,
        error,
        answer,
    )
    if code is not None:
        await conn.execute(
            "INSERT INTO portal_dossiers(dossier_code, last_error) VALUES ($1, $2)"
            " ON CONFLICT (dossier_code) DO UPDATE SET last_error = EXCLUDED.last_error",
            code,
            error,
        )


async def keep_answer(conn: asyncpg.Connection, sid: int, answer: dict[str, Any]) -> None:
    """An answer the portal gave that we could not read, kept with the update it answered
    (NULs and lone surrogates replaced: PostgreSQL text cannot hold them)."""
    text = json.dumps(answer).replace("\\u0000", "\\ufffd")
    await conn.execute("UPDATE portal_sync SET answer = $2 WHERE id = $1", sid, json.loads(text))


async def portal_known(conn: asyncpg.Connection, code: str, known: bool) -> None:
    await conn.execute(
        "INSERT INTO portal_dossiers(dossier_code, known) VALUES ($1, $2)"
        " ON CONFLICT (dossier_code) DO UPDATE SET known = EXCLUDED.known",
        code,
        known,
    )


async def sync_state(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> dict[str, Any]:
    """What the portal holds of a dossier and what is still on its way."""
    counts = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status IN ('pending', 'sending')) AS pending,"
        " count(*) FILTER (WHERE status = 'failed') AS failed,"
        " count(*) FILTER (WHERE status = 'sent') AS sent,"
        " max(attempts) FILTER (WHERE status IN ('pending', 'sending')) AS attempts,"
        " (array_agg(last_error ORDER BY id DESC) FILTER (WHERE last_error IS NOT NULL))[1]"
        " AS last_error FROM portal_sync WHERE dossier_code = $1",
        code,
    )
    known = await conn.fetchrow("SELECT * FROM portal_dossiers WHERE dossier_code = $1", code)
    return {**dict(counts), "portal": dict(known) if known else None}


async def failed_sync(pool: asyncpg.Pool, limit: int) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT id, dossier_code, kind, attempts, last_error, answer, created_at"
            " FROM portal_sync WHERE status = 'failed' ORDER BY id DESC LIMIT $1",
            limit,
        )
    )


async def retry_failed_sync(pool: asyncpg.Pool, sid: int, now: datetime) -> bool:
    result: str = await pool.execute(
        "UPDATE portal_sync SET status = 'pending', due_at = $2, attempts = 0"
        " WHERE id = $1 AND status = 'failed'",
        sid,
        now,
    )
    return result.endswith(" 1")


async def to_reconcile(conn: asyncpg.Pool, limit: int) -> list[str]:
    """Dossiers to compare with the portal, least recently compared first: those it should
    hold completely (nothing on its way), and those whose record is missing there (not
    known, no record on its way, but progress lines waiting for it or a record set
    aside): nothing else would ever create them."""
    rows = await conn.fetch(
        "SELECT d.dossier_code FROM portal_dossiers d WHERE"
        " (d.known AND NOT EXISTS (SELECT 1 FROM portal_sync s"
        "   WHERE s.dossier_code = d.dossier_code AND s.status IN ('pending', 'sending')))"
        " OR (NOT d.known AND NOT EXISTS (SELECT 1 FROM portal_sync s"
        "   WHERE s.dossier_code = d.dossier_code AND s.kind = 'record'"
        "   AND s.status IN ('pending', 'sending'))"
        "  AND EXISTS (SELECT 1 FROM portal_sync s WHERE s.dossier_code = d.dossier_code"
        "   AND ((s.kind = 'progress' AND s.status IN ('pending', 'sending'))"
        "     OR (s.kind = 'record' AND s.status = 'failed'))))"
        " ORDER BY d.checked_at NULLS FIRST, d.dossier_code LIMIT $1",
        limit,
    )
    return [r["dossier_code"] for r in rows]
