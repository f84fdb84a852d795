"""What every service shows its operators, and the guards every service keeps at its edge.

Operators see (and can put back in line) what was set aside so the pipeline could go on:
outbox rows the broker refused, dead letters, parked events and timers that failed every
attempt. The edge guards refuse, with a 4xx naming the part and the reason, what must
never reach a handler or the database: bodies over the size limit, control characters in
the path or query, events too large to publish, and values PostgreSQL cannot store.
"""

from __future__ import annotations

import codecs
import email.message
import json
import unicodedata
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from services.runtime import auth
from services.runtime.db import is_transient
from services.runtime.logging import get_logger
from services.runtime.metrics import DEAD_LETTERS_STORED, TIMERS_FAILED_NOW
from services.runtime.outbox import EventTooLarge, failed_rows, retry_row
from services.runtime.timers import failed_timers, retry_timer

if TYPE_CHECKING:
    from services.runtime.service import Runtime

log = get_logger(__name__)


def problem(status: int, detail: str, field: str, reason: str) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"detail": detail, "errors": [{"field": field, "reason": reason}]},
    )


def _has_control(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


NOT_JSON = "Nội dung không phải JSON hợp lệ"


def json_media_type(content_type: str | None) -> tuple[bool, str]:
    """Whether a body of this Content-Type is read as JSON (``application/json`` or
    ``application/*+json``, as FastAPI decides), and the charset it declares ("": none)."""
    if not content_type:
        return False, ""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (
        subtype == "json" or subtype.endswith("+json")
    ):
        return False, ""
    return True, message.get_content_charset() or ""


def utf8_problem(body: bytes) -> str | None:
    """Why ``body`` is not text in UTF-8 without a byte order mark, or None. JSON between
    systems is UTF-8 and is sent without a BOM (RFC 8259, 8.1); ``json.loads`` on bytes
    (what Starlette's ``Request.json`` does) would instead guess UTF-16 or UTF-32 from the
    zero bytes, or skip a BOM. A raw zero byte is never JSON in UTF-8."""
    if body.startswith(codecs.BOM_UTF8):
        return "JSON phải mã hoá UTF-8 không kèm BOM (dấu thứ tự byte EF BB BF)"
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in body:
        return "JSON phải mã hoá UTF-8; nội dung này là UTF-16 hoặc UTF-32"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"JSON phải mã hoá UTF-8; byte thứ {exc.start} không hợp lệ ({exc.reason})"
    return None


def json_reason(message: str, position: int) -> str:
    """The reason given for a body that is UTF-8 but not JSON."""
    return f"{NOT_JSON}: {message} (ở ký tự thứ {position})"


def loads(body: bytes) -> Any:
    """A body read by hand, held to the edge's rule (UTF-8, no BOM) and parsed; raises
    ``ValueError`` with the reason, in Vietnamese."""
    why = utf8_problem(body)
    if why is not None:
        raise ValueError(why)
    try:
        return json.loads(body.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(json_reason(exc.msg, exc.pos)) from None


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request's body if it is at most ``limit`` bytes, read no further than that, and
    kept where Starlette gives it to the handler; None if it is longer."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # what Request.body() and the wrapped receive hand on
    return body


def install_edge_guards(app: FastAPI, max_body_bytes: int) -> None:
    """Body size limit, JSON bodies only in UTF-8, control characters in the URL, and the
    two backstops. The JSON rule holds here, once for every route of every service,
    before any handler parses a body: a Content-Type naming another charset is 415, a
    body in UTF-16 or UTF-32, with a BOM or with invalid UTF-8 is 400 (a body that is
    UTF-8 but not JSON is 400 too, from the request validation handler)."""

    @app.middleware("http")
    async def edge(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if _has_control(request.url.path):
            return problem(422, "invalid request", "path", "control characters are not allowed")
        for name, value in request.query_params.multi_items():
            if not name:  # "?=x": a parameter with no name is no parameter of ours
                return problem(422, "invalid request", "query", "tham số truy vấn không có tên")
            if _has_control(name) or _has_control(value):
                return problem(
                    422, "invalid request", f"query.{name}", "control characters are not allowed"
                )
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return problem(400, "invalid request", "content-length", "not a number")
            if int(declared) > max_body_bytes:
                return problem(
                    413,
                    "request too large",
                    "body",
                    f"{declared} bytes; the limit is {max_body_bytes}",
                )
        is_json, charset = json_media_type(request.headers.get("content-type"))
        if declared is None and (is_json or request.method in ("POST", "PUT", "PATCH")):
            # chunked, of unknown length: read no more than the limit (and keep it for the
            # handler), whatever the method, before anything looks at it
            if await _bounded_body(request, max_body_bytes) is None:
                return problem(
                    413,
                    "request too large",
                    "body",
                    f"over the limit of {max_body_bytes} bytes",
                )
        if is_json:
            if charset and charset.replace("-", "").replace("_", "") != "utf8":
                return problem(
                    415,
                    "unsupported media type",
                    "header.content-type",
                    f"JSON chỉ nhận mã hoá UTF-8, không nhận charset={charset}",
                )
            why = utf8_problem(await request.body())  # kept for the handler
            if why is not None:
                return problem(400, "invalid request", "body", why)
        return await call_next(request)

    async def too_large(_: Request, exc: Exception) -> Response:
        return problem(422, "request too large to record", "body", str(exc))

    async def database_error(_: Request, exc: Exception) -> Response:
        """A value PostgreSQL cannot store is the caller's (422); a database that is away
        or busy is nobody's fault and passes (503, retry); anything else is ours (500)."""
        if isinstance(exc, asyncpg.DataError):
            message = getattr(exc, "message", str(exc))
            return problem(422, "invalid request", "body", f"value not accepted: {message}")
        if is_transient(exc):
            response = problem(503, "database unavailable, retry shortly", "", repr(exc)[:200])
            response.headers["Retry-After"] = "1"
            return response
        log.exception("unhandled_database_error", exc_info=exc)
        return problem(500, "internal error", "", type(exc).__name__)

    app.add_exception_handler(EventTooLarge, too_large)
    for kind in (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        app.add_exception_handler(kind, database_error)


def ops_router(rt: Runtime) -> APIRouter:
    """``/v1/ops/*``: operators only."""
    router = APIRouter(
        prefix="/v1/ops",
        tags=["ops"],
        dependencies=[Depends(rt.guards.staff({auth.OPERATOR}))],
        responses=auth.responses(401, 403, 422),
    )

    @router.get("/outbox/failed")
    async def outbox_failed(
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """Outbox rows set aside because the broker refused them, with the reason."""
        return await failed_rows(rt.pool, limit)

    @router.post("/outbox/{row_id}/retry", responses=auth.responses(404))
    async def outbox_retry(row_id: int) -> dict[str, Any]:
        """Put a set-aside row back in line once its cause is fixed."""
        if not await retry_row(rt.pool, row_id):
            raise HTTPException(404, detail=f"no set-aside outbox row {row_id}")
        return {"id": row_id, "status": "pending"}

    @router.get("/timers/failed")
    async def timers_failed(
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """Timers that failed every attempt: a reminder, escalation or lapse is stuck."""
        return await failed_timers(rt.pool, limit)

    @router.post("/timers/{timer_id}/retry", responses=auth.responses(404))
    async def timers_retry(timer_id: int) -> dict[str, Any]:
        if not await retry_timer(rt.pool, timer_id, rt.clock.now()):
            raise HTTPException(404, detail=f"no failed timer {timer_id}")
        return {"id": timer_id, "status": "pending"}

    @router.get("/dead-letters")
    async def dead_letters(
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """Events this service could not accept, newest first, with the reason."""
        rows = await rt.pool.fetch(
            'SELECT id, consumer, topic, partition, "offset", length(value) AS size, reason,'
            " detail, published, created_at, replayed_at FROM dead_letters"
            " ORDER BY id DESC LIMIT $1",
            limit,
        )
        return [dict(r) for r in rows]

    @router.get("/parked")
    async def parked(
        limit: int = Query(100, ge=1, le=1000),
    ) -> list[dict[str, Any]]:
        """Events waiting for something, per dossier, oldest first."""
        rows = await rt.pool.fetch(
            "SELECT id, consumer, subject, event_id, event_type, reason, attempts, parked_at,"
            " next_attempt_at FROM parked ORDER BY id LIMIT $1",
            limit,
        )
        return [dict(r) for r in rows]

    return router


async def refresh_gauges(pool: asyncpg.Pool) -> None:
    """Set the gauges of what waits for an operator, for a ``/metrics`` scrape."""
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM timers WHERE status = 'failed') AS timers,"
        " (SELECT count(*) FROM dead_letters WHERE replayed_at IS NULL) AS dead"
    )
    TIMERS_FAILED_NOW.set(row["timers"])
    DEAD_LETTERS_STORED.set(row["dead"])
