"""Intake's subscribers: every event about a dossier goes on its timeline, and the dossier
follows the status routing moves it through (the portal's codes, in every service)."""

from __future__ import annotations

from typing import Any

import asyncpg

from contracts.common import DossierStatus, SupplementStage, TimeUnit
from contracts.envelope import Envelope
from contracts.events import (
    EVENT_TYPES,
    ApologyIssued,
    DossierResumed,
    DossierRouted,
    FeeRequested,
    ProcessingSupplementRequested,
    ResultReady,
    ResultReturned,
    StepCompleted,
    SupplementRequested,
)
from services.intake import domain, portal, store
from services.intake.desk import Desk
from services.intake.portal_sync import PortalSync
from services.runtime.consumer import Handler

S = DossierStatus
# The status each event puts the dossier in, and the statuses it may come from: a late or
# repeated event never moves a dossier back (a withdrawal overtaken by routing stays one).
MOVES: dict[str, tuple[DossierStatus | None, tuple[DossierStatus, ...]]] = {
    "dossier.received": (S.RECEIVED, ()),
    "dossier.refused": (S.NOT_RECEIVED, ()),
    "dossier.withdrawn": (S.WITHDRAWN, ()),
    "dossier.stopped": (S.STOPPED, ()),
    "routing.dossier_routed": (S.PROCESSING, (S.RECEIVED,)),
    "routing.supplement_requested": (S.WAITING_SUPPLEMENT, (S.RECEIVED, S.PROCESSING)),
    "routing.fee_requested": (S.WAITING_FEE, (S.RECEIVED, S.PROCESSING)),
    "routing.dossier_resumed": (
        S.PROCESSING,
        (S.RECEIVED, S.PROCESSING, S.WAITING_SUPPLEMENT, S.WAITING_FEE),
    ),
    # a final status never moves (DossierStatus.final): a withdrawn (7) or stopped (8)
    # dossier stays so even if routing's result crosses the withdrawal or stop
    "routing.result_ready": (
        None,
        (S.RECEIVED, S.PROCESSING, S.WAITING_SUPPLEMENT, S.WAITING_FEE),
    ),
    "routing.result_returned": (S.RETURNED, (S.RESULT_READY, S.REFUSED)),
}


def handlers(desk: Desk, sync: PortalSync) -> dict[str, Handler]:
    """Every change of a dossier also queues its record for the portal (``sync``), in the
    same transaction, so the portal hears of it once and in order. The desk's own changes
    are queued by the desk itself, in the transaction that makes them (``Desk.on_change``):
    a later event of the dossier from another topic may be consumed before the desk's."""

    async def on_any(conn: asyncpg.Connection, env: Envelope, _: Any) -> None:
        await store.record_event(conn, env)

    async def on_desk_event(conn: asyncpg.Connection, env: Envelope, _: Any) -> None:
        """The desk's own events: the status it set is recorded in the history."""
        await store.record_event(conn, env)
        state, _from = MOVES[env.type]
        assert state is not None
        await store.record_status(conn, env.subject, state, env)

    async def on_desk_supplement(
        conn: asyncpg.Connection, env: Envelope, s: SupplementRequested
    ) -> None:
        await store.record_event(conn, env)
        if s.stage is SupplementStage.DESK:  # during processing, routing's event says it
            # Form 02 at reception: registered, never received (status 1, not 5)
            await store.record_status(conn, s.code, S.REGISTERED, env)

    async def on_supplemented(conn: asyncpg.Connection, env: Envelope, _: Any) -> None:
        await store.record_event(conn, env)

    async def move(
        conn: asyncpg.Connection, env: Envelope, state: DossierStatus, **fields: Any
    ) -> bool:
        await store.record_event(conn, env)
        _state, allowed = MOVES[env.type]
        moved = await store.move(conn, env.subject, state, allowed, env, **fields)
        if moved:
            await sync.record(conn, env.subject, env)
        return moved

    async def on_routed(conn: asyncpg.Connection, env: Envelope, r: DossierRouted) -> None:
        # the agencies that process it (not those only asked an opinion) may read it whole
        parties = sorted({r.lead_agency, *(s.agency_id for s in r.steps)})
        await move(
            conn,
            env,
            S.PROCESSING,
            routed_at=r.routed_at,
            parties=parties,
            lead_agency_name=r.lead_agency_name,
        )
        step = portal.progress_of_routing(r)
        if step is not None:
            await sync.progress(conn, r.code, step, env)

    async def on_step(conn: asyncpg.Connection, env: Envelope, c: StepCompleted) -> None:
        await store.record_event(conn, env)
        await sync.progress(conn, c.code, portal.progress_of_step(c), env)

    async def on_supplement(
        conn: asyncpg.Connection, env: Envelope, p: ProcessingSupplementRequested
    ) -> None:
        """Routing paused the dossier for a supplement: record it and tell the applicant
        (Form 02 during processing, with the applicant's details only intake holds)."""
        await store.record_event(conn, env)
        if await desk.processing_supplement(conn, env, p):
            await sync.progress(conn, p.code, portal.progress_of_supplement(p), env)

    async def legal_after_pause(conn: asyncpg.Connection, r: DossierResumed) -> Any:
        """The legal appointment moved by the time waited. Without an apology it is the
        appointment routing sent; after one, the legal date is moved the way routing moves
        it (``WorkingCalendar.extend_pause``), the apology's date staying out of it."""
        if r.legal_appointment_at is not None:
            return r.legal_appointment_at  # routing owns it
        row = await store.get_dossier(conn, r.code)
        if row is None or not row["apologies"] or row["legal_appointment_at"] is None:
            return r.appointment_at
        procedure = desk.catalogue.in_force(
            row["procedure_code"], desk.rt.calendar.local(row["received_at"]).date()
        )
        _paused, moved = domain.resume(
            desk.calendar(procedure, row["receiving_agency"]),
            row["legal_appointment_at"],
            r.paused_at,
            r.resumed_at,
            calendar_days=procedure.processing_time.unit is TimeUnit.CALENDAR_DAYS,
        )
        return moved

    async def on_resumed(conn: asyncpg.Connection, env: Envelope, r: DossierResumed) -> None:
        await store.resumed(conn, r.code, r.resumed_at, r.appointment_at)
        legal = await legal_after_pause(conn, r)
        if await move(
            conn,
            env,
            S.PROCESSING,
            appointment_at=r.appointment_at,
            legal_appointment_at=legal,
            paused_at=None,
        ):
            await sync.progress(conn, r.code, portal.progress_of_resumption(r), env)

    async def on_fee(conn: asyncpg.Connection, env: Envelope, f: FeeRequested) -> None:
        if await move(conn, env, S.WAITING_FEE, paused_at=f.requested_at):
            await sync.progress(conn, f.code, portal.progress_of_fee(f), env)

    async def on_apology(conn: asyncpg.Connection, env: Envelope, a: ApologyIssued) -> None:
        """The applicant's appointment becomes the new date; the legal one stays (the
        portal's NgayHenTra), the apology goes into the dossier's apology history."""
        await store.record_event(conn, env)
        row = await store.get_dossier(conn, a.code)
        if row is None or DossierStatus(row["state"] or S.PROCESSING).final:
            return
        await store.new_appointment(conn, a.code, a)
        await sync.record(conn, a.code, env)
        await sync.progress(conn, a.code, portal.progress_of_apology(a, row["status"]), env)

    async def on_ready(conn: asyncpg.Connection, env: Envelope, r: ResultReady) -> None:
        await move(
            conn,
            env,
            r.state,
            ready_at=r.ready_at,
            legal_appointment_at=r.legal_appointment_at,
            timeliness=r.timeliness.value,
            decision=r.decision.value,
            result_documents=[d.model_dump(mode="json") for d in r.documents],
            refusal_reasons=list(r.reasons),
        )

    async def on_returned(conn: asyncpg.Connection, env: Envelope, r: ResultReturned) -> None:
        if await move(conn, env, S.RETURNED, returned_at=r.returned_at):
            await sync.progress(conn, r.code, portal.progress_of_return(r), env)

    table: dict[str, Handler] = {t: on_any for t in EVENT_TYPES if not t.startswith("procedure.")}
    table.update(
        {
            "dossier.received": on_desk_event,
            "dossier.refused": on_desk_event,
            "dossier.withdrawn": on_desk_event,
            "dossier.stopped": on_desk_event,
            "dossier.supplement_requested": on_desk_supplement,
            "dossier.supplemented": on_supplemented,
            "routing.step_completed": on_step,
            "routing.dossier_routed": on_routed,
            "routing.supplement_requested": on_supplement,
            "routing.fee_requested": on_fee,
            "routing.dossier_resumed": on_resumed,
            "routing.apology_issued": on_apology,
            "routing.result_ready": on_ready,
            "routing.result_returned": on_returned,
        }
    )
    return table
