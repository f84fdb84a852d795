"""Notification's SQL."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from contracts.common import Channel, Office
from contracts.envelope import DOSSIER_CODE_PATTERN
from services.notification.domain import Contact, Receipt, printable
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
    conn: asyncpg.Connection,
    now: datetime,
    lease: timedelta,
    limit: int,
    claim: UUID,
    channels: Collection[str],
) -> list[asyncpg.Record]:
    """Take up to ``limit`` due notifications of ``channels`` for one sender: pending ones
    whose time has come and sending ones whose lease ran out (their sender died). Commit
    at once."""
    rows = await conn.fetch(
        "UPDATE notifications SET status = 'sending', claim = $4, due_at = $1 + $2::interval,"
        " attempts = attempts + 1"
        " WHERE id IN (SELECT id FROM notifications"
        "   WHERE status IN ('pending', 'sending') AND due_at <= $1 AND channel = ANY($5)"
        "   ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED)"
        " RETURNING *",
        now,
        lease,
        limit,
        claim,
        list(channels),
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
    conn: asyncpg.Connection,
    nid: UUID,
    claim: UUID,
    at: datetime,
    message_id: str | None,
    *,
    delivered: bool = False,
    answer: Mapping[str, Any] | None = None,
) -> bool:
    """Record the hand-over (``sent``), or the receiver's confirmation with it
    (``delivered``: the portal holds the message); False if the claim was lost (another
    sender took over)."""
    done = await conn.fetchval(
        "UPDATE notifications SET status = $5::text, sent_at = $3::timestamptz, due_at = NULL,"
        " message_id = $4, last_error = NULL, answer = $6,"
        " delivered_at = CASE WHEN $5::text = 'delivered' THEN $3::timestamptz END"
        " WHERE id = $1 AND claim = $2 AND status = 'sending' RETURNING true",
        nid,
        claim,
        at,
        message_id,
        "delivered" if delivered else "sent",
        dict(answer) if answer is not None else None,
    )
    return bool(done)


async def due_now(conn: asyncpg.Connection, channel: str, now: datetime) -> None:
    """Every waiting notification of ``channel`` due now: its server is back."""
    await conn.execute(
        "UPDATE notifications SET due_at = $2 WHERE channel = $1 AND status = 'pending'"
        " AND due_at > $2",
        channel,
        now,
    )


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
    conn: asyncpg.Connection,
    nid: UUID,
    claim: UUID | None,
    at: datetime,
    reason: str,
    answer: Mapping[str, Any] | None = None,
) -> None:
    """Give up on a notification, keeping the reason (and the receiver's whole answer, if
    any) for operators."""
    await conn.execute(
        "UPDATE notifications SET status = 'failed', due_at = NULL, failed_at = $3,"
        " last_error = $4, answer = coalesce($5, answer)"
        " WHERE id = $1 AND (claim = $2 OR $2 IS NULL)"
        " AND status IN ('pending', 'sending')",
        nid,
        claim,
        at,
        reason[:2000],
        dict(answer) if answer is not None else None,
    )


# --- the SMS gateway's delivery receipts ----------------------------------------------------


async def _settle(
    conn: asyncpg.Connection, nid: UUID, status: str, reason: str | None, at: datetime
) -> bool:
    """A sent SMS as its receipt says: delivered at ``at``, or failed with the reason."""
    done = await conn.fetchval(
        "UPDATE notifications SET status = $2::text,"
        " delivered_at = CASE WHEN $2::text = 'delivered' THEN $3::timestamptz END,"
        " failed_at = CASE WHEN $2::text = 'failed' THEN $3::timestamptz END,"
        " last_error = CASE WHEN $2::text = 'failed' THEN $4::text ELSE last_error END"
        " WHERE id = $1 AND status = 'sent' RETURNING true",
        nid,
        status,
        at,
        f"the gateway reports: {reason or 'failed'}"[:2000],
    )
    return bool(done)


async def record_receipt(
    conn: asyncpg.Connection,
    nid: UUID,
    gateway_id: str,
    status: str,
    reason: str | None,
    at: datetime,
    received_at: datetime,
) -> str:
    """Keep a receipt once and apply it if it can be: ``applied`` (the notification was
    sent: now delivered or failed), ``waiting`` (the send is not marked yet: applied when it
    is), ``ignored`` (the notification is settled already) or ``duplicate``."""
    current = await conn.fetchval(
        "SELECT status FROM notifications WHERE id = $1 FOR UPDATE", nid
    )  # the notification first: the sender's mark and the receipt go one after the other
    rid = await conn.fetchval(
        "INSERT INTO sms_receipts(notification_id, gateway_id, status, reason, at,"
        " received_at, outcome) VALUES ($1, $2, $3, $4, $5, $6, 'waiting')"
        " ON CONFLICT (notification_id, gateway_id, status, at) DO NOTHING RETURNING id",
        nid,
        gateway_id,
        status,
        reason,
        at,
        received_at,
    )
    if rid is None:
        return "duplicate"
    if current == "sent":
        outcome = "applied" if await _settle(conn, nid, status, reason, at) else "ignored"
    elif current in ("pending", "sending"):
        outcome = "waiting"
    else:
        outcome = "ignored"
    if outcome != "waiting":
        await conn.execute("UPDATE sms_receipts SET outcome = $2 WHERE id = $1", rid, outcome)
    return outcome


async def apply_waiting_receipt(conn: asyncpg.Connection, nid: UUID, gateway_id: str) -> None:
    """Just marked sent: a receipt of this message that arrived before the mark settles it
    now (the latest one, if several)."""
    rows = await conn.fetch(
        "SELECT id, gateway_id, status, reason, at FROM sms_receipts"
        " WHERE notification_id = $1 AND outcome = 'waiting' ORDER BY at DESC, id DESC",
        nid,
    )
    applied = False
    for r in rows:
        if r["gateway_id"] != gateway_id:
            outcome = "ignored"  # another message's id: not a receipt of what we sent
        elif applied:
            outcome = "superseded"
        else:
            applied = await _settle(conn, nid, r["status"], r["reason"], r["at"])
            outcome = "applied" if applied else "ignored"
        await conn.execute("UPDATE sms_receipts SET outcome = $2 WHERE id = $1", r["id"], outcome)


# --- per-recipient limits ---------------------------------------------------------------------


async def recent_sends(
    conn: asyncpg.Connection, channel: str, recipient: str, since: datetime
) -> list[datetime]:
    """When ``recipient`` was last sent messages on ``channel`` (after ``since``), the
    recipient locked until the transaction ends so replicas count one after the other."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{channel}:{recipient}"
    )
    await conn.execute(
        "DELETE FROM recipient_sends WHERE channel = $1 AND recipient = $2 AND at <= $3",
        channel,
        recipient,
        since,
    )
    return [
        r["at"]
        for r in await conn.fetch(
            "SELECT at FROM recipient_sends WHERE channel = $1 AND recipient = $2",
            channel,
            recipient,
        )
    ]


async def take_send(
    conn: asyncpg.Connection, channel: str, recipient: str, nid: UUID, claim: UUID, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO recipient_sends(channel, recipient, notification_id, claim, at)"
        " VALUES ($1, $2, $3, $4, $5)",
        channel,
        recipient,
        nid,
        claim,
        at,
    )


async def give_back_send(conn: asyncpg.Connection, nid: UUID, claim: UUID) -> None:
    """Nothing was sent on this claim: its place in the recipient's hour is free again."""
    await conn.execute(
        "DELETE FROM recipient_sends WHERE notification_id = $1 AND claim = $2", nid, claim
    )


# --- operators put a notification back in line ------------------------------------------------

RESENDABLE = ("failed", "sent", "delivered")
"""A failed notification, or one the receiver says never came (sent or delivered)."""


async def resend(
    conn: asyncpg.Connection,
    nid: UUID,
    *,
    at: datetime,
    person: str,
    role: str,
    agency_id: str,
    reason: str,
) -> asyncpg.Record | None:
    """Back in line with the same id (so the same message id), counted, and who, when and
    why kept; None if it is not resendable now (queued or being sent). Lock it first."""
    row = await conn.fetchrow("SELECT * FROM notifications WHERE id = $1 FOR UPDATE", nid)
    if row is None or row["status"] not in RESENDABLE:
        return None
    await conn.execute(
        "INSERT INTO notification_resends(notification_id, at, person, role, agency_id, reason,"
        " previous_status, previous_error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        nid,
        at,
        person,
        role,
        agency_id,
        reason,
        row["status"],
        row["last_error"],
    )
    await conn.execute(
        "UPDATE sms_receipts SET outcome = 'superseded' WHERE notification_id = $1"
        " AND outcome = 'waiting'",
        nid,
    )
    updated = await conn.fetchrow(
        "UPDATE notifications SET status = 'pending', due_at = $2, attempts = 0,"
        " resends = resends + 1, claim = NULL, failed_at = NULL, delivered_at = NULL,"
        " last_error = NULL WHERE id = $1 RETURNING *",
        nid,
        at,
    )
    await conn.execute("SELECT pg_notify(current_schema() || '_deliveries', '')")
    return updated


async def resends_of(conn: asyncpg.Connection | asyncpg.Pool, nid: UUID) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM notification_resends WHERE notification_id = $1 ORDER BY id", nid
        )
    )


# --- what came from outside and was not accepted --------------------------------------------

MAX_STORED_BODY = 256 * 1024
"""A body longer than this is stored as its first bytes, its size and its SHA-256."""
SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})


async def save_reject(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    source: str,
    reason: str,
    body: bytes,
    headers: Mapping[str, str],
    at: datetime,
    field: str | None = None,
    status: int | None = None,
    keep: int = MAX_STORED_BODY,
) -> int:
    """Store a rejected input whole, or its first ``keep`` bytes with the size and SHA-256
    of the whole (a reference) when it is larger; its id."""
    kept = {
        printable(k.lower()): ("[hidden]" if k.lower() in SECRET_HEADERS else printable(v[:2000]))
        for k, v in list(headers.items())[:100]
    }
    rid: int = await conn.fetchval(
        "INSERT INTO inbound_rejects(source, reason, field, status, headers, body, size,"
        " sha256, truncated, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        source,
        printable(reason[:2000]),
        field,
        status,
        kept,
        body[:keep],
        len(body),
        hashlib.sha256(body).hexdigest(),
        len(body) > keep,
        at,
    )
    return rid


async def rejects(
    conn: asyncpg.Connection | asyncpg.Pool, limit: int, source: str | None = None
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM inbound_rejects WHERE ($2::text IS NULL OR source = $2)"
            " ORDER BY id DESC LIMIT $1",
            limit,
            source,
        )
    )
