"""Routing's subscribers and timers: thin adapters to the use cases."""

from __future__ import annotations

import asyncpg

from contracts.common import DossierStatus
from contracts.envelope import Envelope
from contracts.events import DossierStopped, DossierWithdrawn
from services.routing.domain import APOLOGY_DUE, RISK, STEP_DUE, WATCH
from services.routing.usecases import Routing
from services.runtime.consumer import Handler
from services.runtime.timers import TimerHandler


def build(routing: Routing) -> dict[str, Handler]:
    async def on_withdrawn(conn: asyncpg.Connection, env: Envelope, w: DossierWithdrawn) -> None:
        await routing.on_ended(conn, env, w.code, DossierStatus.WITHDRAWN, w.reason)

    async def on_stopped(conn: asyncpg.Connection, env: Envelope, s: DossierStopped) -> None:
        await routing.on_ended(conn, env, s.code, DossierStatus.STOPPED, s.reason)

    return {
        "procedure.published": routing.on_procedure,
        "dossier.received": routing.on_received,
        "dossier.supplemented": routing.on_supplemented,
        "consultation.round_completed": routing.on_round_completed,
        "dossier.withdrawn": on_withdrawn,
        "dossier.stopped": on_stopped,
    }


def timers(routing: Routing) -> dict[str, TimerHandler]:
    return {kind: routing.on_timer for kind in (STEP_DUE, WATCH, RISK, APOLOGY_DUE)}
