"""Intake's subscribers: every event about a dossier goes on its timeline."""

from __future__ import annotations

from typing import Any

import asyncpg

from contracts.common import PortalStatus
from contracts.envelope import Envelope
from contracts.events import EVENT_TYPES
from services.intake import store
from services.runtime.consumer import Handler


async def on_any(conn: asyncpg.Connection, env: Envelope, _: Any) -> None:
    await store.record_event(conn, env)


async def on_routed(conn: asyncpg.Connection, env: Envelope, _: Any) -> None:
    await store.record_event(conn, env)
    await store.set_status_if(
        conn, env.subject, int(PortalStatus.PROCESSING), (int(PortalStatus.RECEIVED),)
    )


def handlers() -> dict[str, Handler]:
    table: dict[str, Handler] = {t: on_any for t in EVENT_TYPES if not t.startswith("procedure.")}
    table["routing.dossier_routed"] = on_routed
    return table
