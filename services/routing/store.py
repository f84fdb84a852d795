"""Routing's SQL: its catalogue copy and the route aggregate (one row, locked first)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from contracts.common import DossierStatus, Procedure
from services.routing.domain import Route, StepStatus, TimerPlan
from services.runtime import timers


async def save_procedure(conn: asyncpg.Connection, p: Procedure) -> None:
    await conn.execute(
        "INSERT INTO procedures(code, version, definition) VALUES ($1, $2, $3)"
        " ON CONFLICT (code, version) DO UPDATE SET definition = EXCLUDED.definition",
        p.code,
        p.version,
        p.model_dump(mode="json"),
    )


async def get_procedure(
    conn: asyncpg.Connection | asyncpg.Pool, code: str, version: int
) -> Procedure | None:
    data = await conn.fetchval(
        "SELECT definition FROM procedures WHERE code = $1 AND version = $2", code, version
    )
    return None if data is None else Procedure.model_validate(data)


def _columns(route: Route) -> dict[str, Any]:
    step = route.open_step
    ready = route.state in (DossierStatus.RESULT_READY, DossierStatus.REFUSED)
    open_step = (
        step is not None and (step.status is StepStatus.ACTIVE or ready) and not route.state.final
    )
    holder = step.holder if step is not None else None
    return {
        "state": route.state.value,
        "appointment_at": route.appointment_at,
        "procedure_name": route.procedure_name,
        "current_step": step.order if open_step and step else None,
        "current_agency": holder.agency_id if open_step and holder else None,
        "current_department": holder.department if open_step and holder else None,
        "current_deadline": step.deadline_at if open_step and step else None,
    }


async def insert_route(conn: asyncpg.Connection, route: Route) -> bool:
    """Store a new route; False if the dossier has one already (a redelivered receipt)."""
    cols = _columns(route)
    inserted = await conn.fetchval(
        "INSERT INTO routes(dossier_code, procedure_code, procedure_version, lead_agency,"
        " consult, state, appointment_at, routed_at, doc, version, procedure_name,"
        " current_step, current_agency, current_department, current_deadline, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $11, $12, $13, $14, $8)"
        " ON CONFLICT (dossier_code) DO NOTHING RETURNING true",
        route.code,
        route.procedure_code,
        route.procedure_version,
        route.lead_agency,
        [c.model_dump(mode="json") for c in route.consult],
        cols["state"],
        cols["appointment_at"],
        route.routed_at,
        route.model_dump(mode="json"),
        cols["procedure_name"],
        cols["current_step"],
        cols["current_agency"],
        cols["current_department"],
        cols["current_deadline"],
    )
    if inserted:
        route.version = 1
    return bool(inserted)


async def lock_route(conn: asyncpg.Connection, code: str) -> Route | None:
    """The dossier's route, its row locked until the transaction ends: the first lock of
    every path that changes it. None if routing has no route for it (or only one written
    before routes had steps, which no move can change)."""
    row = await conn.fetchrow(
        "SELECT doc, version FROM routes WHERE dossier_code = $1 FOR UPDATE", code
    )
    if row is None or row["doc"] is None:
        return None
    route = Route.model_validate(row["doc"])
    route.version = row["version"]
    return route


_HOLDS_ROUTE = "routing.holds_route"


async def lock_route_in_batch(conn: asyncpg.Connection, code: str) -> Route | None:
    """``lock_route`` for a timer handler of a scheduler batch (``timers.one_of_many``)."""
    async with timers.one_of_many(conn, _HOLDS_ROUTE):
        return await lock_route(conn, code)


async def read_route(conn: asyncpg.Connection | asyncpg.Pool, code: str) -> Route | None:
    """The route as last committed, for views (changes go through ``lock_route``)."""
    row = await conn.fetchrow("SELECT doc, version FROM routes WHERE dossier_code = $1", code)
    if row is None or row["doc"] is None:
        return None
    route = Route.model_validate(row["doc"])
    route.version = row["version"]
    return route


async def get_route_row(
    conn: asyncpg.Connection | asyncpg.Pool, code: str
) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM routes WHERE dossier_code = $1", code)


async def save_route(conn: asyncpg.Connection, route: Route, now: datetime) -> None:
    """Write the route under its lock with its version bumped."""
    route.version += 1
    cols = _columns(route)
    await conn.execute(
        "UPDATE routes SET doc = $2, version = $3, state = $4, appointment_at = $5,"
        " current_step = $6, current_agency = $7, current_department = $8,"
        " current_deadline = $9, updated_at = $10 WHERE dossier_code = $1",
        route.code,
        route.model_dump(mode="json"),
        route.version,
        cols["state"],
        cols["appointment_at"],
        cols["current_step"],
        cols["current_agency"],
        cols["current_department"],
        cols["current_deadline"],
        now,
    )


async def replan_timers(conn: asyncpg.Connection, code: str, plans: list[TimerPlan]) -> None:
    """The route's timers, as its plan says now: the old ones cancelled (never waiting for
    one a scheduler has claimed: that one fires, sees a newer version and does nothing)."""
    await timers.cancel(conn, [code])
    for t in plans:
        await timers.schedule(conn, t.kind, t.ref, t.due_at, t.payload, owner=code)


async def advance_legacy(conn: asyncpg.Connection, code: str, at: datetime) -> bool:
    """A route written before routes had steps: consulting to deciding, as it was."""
    done = await conn.fetchval(
        "UPDATE routes SET state = 'deciding', advanced_at = $2"
        " WHERE dossier_code = $1 AND doc IS NULL AND state = 'consulting' RETURNING true",
        code,
        at,
    )
    return bool(done)


async def close_legacy(conn: asyncpg.Connection, code: str) -> None:
    await conn.execute(
        "UPDATE routes SET state = 'closed' WHERE dossier_code = $1 AND doc IS NULL", code
    )


async def worklist(
    pool: asyncpg.Pool, agency_id: str, department: str | None, limit: int
) -> list[asyncpg.Record]:
    """The dossiers at one of the agency's steps, soonest deadline first."""
    return list(
        await pool.fetch(
            "SELECT dossier_code, doc FROM routes WHERE current_agency = $1"
            " AND ($2::text IS NULL OR current_department = $2)"
            " ORDER BY current_deadline, dossier_code LIMIT $3",
            agency_id,
            department,
            limit,
        )
    )
