"""The console's SQL: writing the read models, and the queries its API answers."""

from __future__ import annotations

import unicodedata
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
    # a field a form left empty is no filter
    where, args = event_filters(
        type_=type_ or None, agency=agency or None, dossier=dossier or None, after=after
    )
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


DL_SORT = "COALESCE({p}dead_lettered_at, timestamptz '1970-01-01 00:00:00+00')"


async def dead_letters(
    pool: asyncpg.Pool,
    *,
    agency: str | None,
    status: str | None,
    limit: int,
    writer: str | None = None,
    event_type: str | None = None,
    dossier: str | None = None,
    after: str | None = None,
) -> list[asyncpg.Record]:
    """Dead letters, newest first (then by id, descending); each filter given narrows them
    (an event type ending in ``.*`` is a family); ``after``: the id of the last row of the
    page before, the page goes on after it (an unknown id: nothing after it)."""
    where: list[str] = []
    args: list[Any] = []
    if agency:
        args.append(agency)
        where.append(f"${len(args)} = ANY(agencies)")
    if writer:
        args.append(writer)
        where.append(f"d.writer = ${len(args)}")
    if event_type:
        args.append(event_type[:-1] + "%" if event_type.endswith(".*") else event_type)
        where.append(f"d.event_type {'LIKE' if event_type.endswith('.*') else '='} ${len(args)}")
    if dossier:
        args.append(dossier)
        where.append(f"d.dossier_code = ${len(args)}")
    if after:
        args.append(after)
        where.append(
            f"({DL_SORT.format(p='d.')}, d.id) < (SELECT {DL_SORT.format(p='')}, id"
            f" FROM dead_letter_entries WHERE id = ${len(args)})"
        )
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
    sql += f" ORDER BY {DL_SORT.format(p='')} DESC, id DESC LIMIT {int(limit)}"
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


# --- search -----------------------------------------------------------------------------


def fold(text: str) -> str:
    """Text as a search compares it: lower case, Vietnamese diacritics and đ dropped
    ("Sở Xây dựng" -> "so xay dung"), so a term typed with or without accents matches."""
    decomposed = unicodedata.normalize("NFD", text.replace("đ", "d").replace("Đ", "D"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()


def _fold_table() -> tuple[str, str]:
    """``translate()``'s two strings doing ``fold`` in SQL for every accented Latin letter
    (PostgreSQL's ``lower()`` may know only ASCII under the C collation)."""
    src, dst = [], []
    for cp in (*range(0xC0, 0x250), *range(0x1E00, 0x1F00)):
        ch = chr(cp)
        folded = fold(ch)
        if len(folded) == 1 and folded.isascii() and folded.isalpha() and folded != ch:
            src.append(ch)
            dst.append(folded)
    return "".join(src), "".join(dst)


FOLD_FROM, FOLD_TO = _fold_table()


def like_term(term: str) -> str:
    """A ``LIKE`` pattern matching ``term`` anywhere, its wildcards taken literally."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


SORT_AT = "COALESCE(last_event_at, timestamptz '1970-01-01 00:00:00+00')"
HAYSTACK = (
    "lower(translate(code || ' ' || COALESCE(procedure_code, '') || ' '"
    " || COALESCE(procedure_name, '') || ' ' || COALESCE(agency, '') || ' '"
    " || COALESCE(receiving_agency, '') || ' ' || COALESCE(lead_agency, ''), {src}, {dst}))"
)


async def search_dossiers(
    pool: asyncpg.Pool,
    *,
    agency: str | None,
    terms: list[tuple[str, list[str]]],
    code: str | None,
    state: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Dossiers, most recently active first (then by code, descending: a stable order to
    page on with ``after``, the last row's sort key). ``terms`` are folded words, each with
    the agency ids whose name holds it: every word must be in the dossier's code,
    procedure code or name, or an agency's id or name. Nothing of the applicant's is
    searched (the read model holds none). ``agency``: one of the dossier's agencies."""
    args: list[Any] = []
    where: list[str] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    haystack = HAYSTACK.format(src=arg(FOLD_FROM), dst=arg(FOLD_TO)) if terms else ""
    for term, ids in terms:
        cond = f"{haystack} LIKE {arg(like_term(term))}"
        if ids:
            named = arg(ids)
            cond += (
                f" OR agency = ANY({named}::text[]) OR receiving_agency = ANY({named}::text[])"
                f" OR lead_agency = ANY({named}::text[])"
            )
        where.append(f"({cond})")
    if code:
        where.append(f"code LIKE {arg(like_term(code)[1:])}")
    if state:
        where.append(f"state = {arg(state)}")
    if agency:
        where.append(f"{arg(agency)} IN (agency, receiving_agency, lead_agency)")
    if after is not None:
        where.append(f"({SORT_AT}, code) < ({arg(after[0])}::timestamptz, {arg(after[1])})")
    sql = (
        f"SELECT *, {SORT_AT} AS sort_at FROM dossiers"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY {SORT_AT} DESC, code DESC LIMIT {int(limit)}"
    )
    return list(await pool.fetch(sql, *args))
