"""Routing's subscribers."""

from __future__ import annotations

import asyncpg

from contracts.envelope import Envelope
from contracts.events import (
    ConsultationRoundCompleted,
    DossierAdvanced,
    DossierReceived,
    DossierRouted,
    ProcedurePublished,
)
from services.routing import domain, store
from services.runtime.consumer import Handler, RetryLater
from services.runtime.service import Runtime


def build(rt: Runtime) -> dict[str, Handler]:
    async def on_procedure(conn: asyncpg.Connection, env: Envelope, p: ProcedurePublished) -> None:
        await store.save_procedure(conn, p.procedure)

    async def on_received(conn: asyncpg.Connection, env: Envelope, d: DossierReceived) -> None:
        procedure = await store.get_procedure(conn, d.procedure_code, d.procedure_version)
        if procedure is None:
            raise RetryLater(f"procedure {d.procedure_code} v{d.procedure_version} not known yet")
        targets = domain.consult_targets(procedure)
        now = rt.clock.now()
        fresh = await store.insert_route(
            conn,
            dossier_code=d.code,
            procedure_code=procedure.code,
            procedure_version=procedure.version,
            lead_agency=procedure.lead_agency,
            consult=[t.model_dump(mode="json") for t in targets],
            state=domain.initial_state(targets),
            appointment_at=d.appointment_at,
            routed_at=now,
        )
        if not fresh:
            return
        await rt.outbox.add(
            conn,
            DossierRouted(
                code=d.code,
                procedure_code=procedure.code,
                procedure_version=procedure.version,
                procedure_name=procedure.name,
                lead_agency=procedure.lead_agency,
                lead_agency_name=procedure.lead_agency_name,
                consult=targets,
                appointment_at=d.appointment_at,
                routed_at=now,
            ),
            subject=d.code,
            cause=env,
        )

    async def on_round(
        conn: asyncpg.Connection, env: Envelope, r: ConsultationRoundCompleted
    ) -> None:
        route = await store.get_route(conn, r.code)
        if route is None:
            raise RetryLater(f"no route for {r.code} yet")
        now = rt.clock.now()
        if await store.advance(conn, r.code, now):
            await rt.outbox.add(
                conn,
                DossierAdvanced(
                    code=r.code,
                    lead_agency=route["lead_agency"],
                    step="decision",
                    advanced_at=now,
                ),
                subject=r.code,
                cause=env,
            )

    async def on_closed(conn: asyncpg.Connection, env: Envelope, _: object) -> None:
        await store.close(conn, env.subject)

    return {
        "procedure.published": on_procedure,
        "dossier.received": on_received,
        "consultation.round_completed": on_round,
        "dossier.withdrawn": on_closed,
        "dossier.stopped": on_closed,
    }
