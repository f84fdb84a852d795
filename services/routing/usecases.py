"""Routing's use cases: what events, timers and officers do to a dossier's route.

Each has the same shape: lock and load the route (the aggregate, always the first lock),
call one of its methods, save it with its events in the outbox and its timers re-planned,
in one transaction. Rules are in ``domain.Route``; HTTP views stay in ``api``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg

from contracts.agencies import AgencyBook
from contracts.api import (
    CompleteStep,
    ConfirmApology,
    DecideDossier,
    FeePaid,
    HandOverRequest,
    RequestFee,
    RequestSupplement,
    ReturnResult,
)
from contracts.common import DossierStatus, MissingItem
from contracts.envelope import Envelope
from contracts.events import (
    ConsultationRoundCompleted,
    DossierReceived,
    DossierSupplemented,
    ProcedurePublished,
)
from services.routing import store
from services.routing.domain import (
    APOLOGY_DUE,
    RISK,
    STEP_DUE,
    WATCH,
    Locality,
    Officer,
    Refusal,
    Route,
    RouteError,
    localize_procedure,
)
from services.runtime.calendar import WorkingCalendar
from services.runtime.clock import Clock
from services.runtime.consumer import RetryLater
from services.runtime.logging import get_logger
from services.runtime.outbox import Outbox

log = get_logger(__name__)

PROCESSING_REASON = "Cần bổ sung, hoàn thiện theo yêu cầu của cơ quan giải quyết hồ sơ"
"""Form 02's reason during processing, when the officer gives neither a reason nor a note."""

Move = Callable[[Route, WorkingCalendar, datetime], None]


class Routing:
    """The route's use cases, with what they need passed in."""

    def __init__(
        self,
        *,
        pool: Callable[[], asyncpg.Pool],
        outbox: Outbox,
        clock: Clock,
        calendar: WorkingCalendar,
        book: AgencyBook,
        watch_seconds: int,
    ) -> None:
        self._pool = pool
        self.outbox = outbox
        self.clock = clock
        self.base_calendar = calendar
        self.book = book
        self.watch_seconds = watch_seconds

    def calendar(self, route: Route) -> WorkingCalendar:
        """The receiving office's calendar: the procedure's office hours where it has
        them, else its province's (as intake counted the appointment)."""
        hours = route.office_hours or self.book.office_hours(route.receiving_agency)
        return self.base_calendar.with_office(hours)

    async def _save(
        self, conn: asyncpg.Connection, route: Route, cause: Envelope | None, now: datetime
    ) -> None:
        events = route.take_events()
        await store.save_route(conn, route, now)
        await self._publish(conn, route, events, cause)

    async def _publish(
        self,
        conn: asyncpg.Connection,
        route: Route,
        events: Sequence[object],
        cause: Envelope | None,
    ) -> None:
        plans = route.timer_plan(self.calendar(route), self.watch_seconds, self.clock.now())
        await store.replan_timers(conn, route.code, plans)
        for e in events:
            await self.outbox.add(conn, e, subject=route.code, cause=cause)  # type: ignore[arg-type]

    # --- events --------------------------------------------------------------------------------

    async def on_procedure(
        self, conn: asyncpg.Connection, env: Envelope, p: ProcedurePublished
    ) -> None:
        await store.save_procedure(conn, p.procedure)

    async def on_received(
        self, conn: asyncpg.Connection, env: Envelope, d: DossierReceived
    ) -> None:
        """A complete dossier: plan its route from the version it was received under."""
        procedure = await store.get_procedure(conn, d.procedure_code, d.procedure_version)
        if procedure is None:
            raise RetryLater(f"procedure {d.procedure_code} v{d.procedure_version} not known yet")
        now = self.clock.now()
        hours = procedure.office_hours or self.book.office_hours(procedure.receiving_agency)
        # territorial competence: the commune of the applicant's residence or of the land,
        # or the receiving one, as the catalogue says (intake refused unknown communes)
        locality = Locality(residence=d.applicant.commune, property=d.property_commune)
        procedure = localize_procedure(procedure, self.book, d.receiving_agency, locality)
        route = Route.start(
            code=d.code,
            procedure=procedure,
            receiving_agency=d.receiving_agency,
            receiving_agency_name=d.receiving_agency_name,
            book=self.book,
            cal=self.base_calendar.with_office(hours),
            received_at=d.received_at,
            clock_starts_at=d.clock_starts_at,
            appointment_at=d.appointment_at,
            received_by=d.received_by,
            return_method=d.return_method,
            now=now,
        )
        events = route.take_events()
        if not await store.insert_route(conn, route):
            return  # routed before (a redelivered receipt)
        await self._publish(conn, route, events, env)

    async def on_round_completed(
        self, conn: asyncpg.Connection, env: Envelope, r: ConsultationRoundCompleted
    ) -> None:
        route = await store.lock_route(conn, r.code)
        if route is None:
            if await store.get_route_row(conn, r.code) is None:
                raise RetryLater(f"no route for {r.code} yet")
            await store.advance_legacy(conn, r.code, self.clock.now())
            return
        now = self.clock.now()
        if route.opinions_in(now, self.calendar(route), r.outcomes):
            await self._save(conn, route, env, now)

    async def on_supplemented(
        self, conn: asyncpg.Connection, env: Envelope, s: DossierSupplemented
    ) -> None:
        """The applicant handed in what was asked during processing: the clock resumes.
        (A dossier completed at the desk has no route yet: nothing to resume; one waiting
        for a payment goes on waiting.)"""
        route = await store.lock_route(conn, s.code)
        if route is None or route.state is not DossierStatus.WAITING_SUPPLEMENT:
            return
        if route.resume(s.supplemented_at, self.calendar(route)):
            await self._save(conn, route, env, self.clock.now())

    async def on_ended(
        self,
        conn: asyncpg.Connection,
        env: Envelope,
        code: str,
        state: DossierStatus,
        reason: str | None,
    ) -> None:
        """A withdrawal or a stop: the route ends without a result."""
        route = await store.lock_route(conn, code)
        if route is None:
            await store.close_legacy(conn, code)
            return
        now = self.clock.now()
        if route.close(state, reason, now):
            await self._save(conn, route, env, now)

    # --- timers ---------------------------------------------------------------------------------

    async def on_timer(self, conn: asyncpg.Connection, timer: asyncpg.Record) -> None:
        """A step's deadline, the lead-time watch, or a draft apology's latest moment. A
        timer planned for an older version of the route finds it changed and does nothing
        (the change re-planned its own timers)."""
        payload = timer["payload"]
        route = await store.lock_route_in_batch(conn, str(payload["code"]))
        if route is None or route.version != int(payload["version"]):
            return
        now = self.clock.now()
        cal = self.calendar(route)
        kind = timer["kind"]
        if kind == STEP_DUE:
            route.on_step_due(now, cal)
        elif kind == WATCH:
            route.on_watch(now, cal)
        elif kind == RISK:
            route.on_risk(now, cal)
        elif kind == APOLOGY_DUE:
            route.on_apology_due(uuid.UUID(str(payload["apology_id"])), now, cal)
        await self._save(conn, route, None, now)

    # --- officers ---------------------------------------------------------------------------

    async def act(self, code: str, who: Officer, move: Move) -> Route:
        """Lock the route, make one move, save it; a refused move changes nothing. An
        agency with no part in the dossier is refused before anything else is said."""
        async with self._pool().acquire() as conn, conn.transaction():
            route = await store.lock_route(conn, code)
            if route is None:
                raise RouteError(Refusal.NOT_FOUND, "code", f"chưa có tuyến xử lý của hồ sơ {code}")
            route.require_party(who)
            now = self.clock.now()
            move(route, self.calendar(route), now)
            await self._save(conn, route, None, now)
            return route

    async def take(self, code: str, who: Officer, order: int, note: str | None) -> Route:
        return await self.act(code, who, lambda r, cal, now: r.take(who, order, now, note))

    async def complete(self, code: str, who: Officer, order: int, cmd: CompleteStep) -> Route:
        return await self.act(
            code,
            who,
            lambda r, cal, now: r.complete(
                who,
                order,
                now,
                cal,
                result=cmd.result,
                documents=cmd.documents,
                note=cmd.note,
            ),
        )

    async def hand_over(self, code: str, who: Officer, cmd: HandOverRequest) -> Route:
        return await self.act(
            code,
            who,
            lambda r, cal, now: r.reassign(
                who,
                self.book,
                now,
                department=cmd.to_department,
                person=cmd.to_person,
                note=cmd.note,
            ),
        )

    async def request_supplement(self, code: str, who: Officer, cmd: RequestSupplement) -> Route:
        """Form 02 during processing: the items checked against the procedure's documents
        (the version the dossier was received under)."""
        async with self._pool().acquire() as conn:
            route = await store.read_route(conn, code)
            if route is None:
                raise RouteError(Refusal.NOT_FOUND, "code", f"chưa có tuyến xử lý của hồ sơ {code}")
            route.require_party(who)
            procedure = await store.get_procedure(
                conn, route.procedure_code, route.procedure_version
            )
        known = {d.code: d for d in (procedure.required_documents if procedure else ())}
        unknown = [c for c in cmd.missing if c not in known]
        if unknown:
            raise RouteError(
                Refusal.INVALID,
                "missing",
                "không phải thành phần hồ sơ của thủ tục: " + ", ".join(unknown),
            )
        stray = [c for c in cmd.reasons if c not in cmd.missing]
        if stray:
            raise RouteError(
                Refusal.INVALID,
                "reasons",
                "lý do cho giấy tờ không có trong danh sách cần bổ sung: " + ", ".join(stray),
            )
        items = [
            MissingItem(
                code=c,
                name=known[c].name,
                reason=cmd.reasons.get(c) or cmd.note or PROCESSING_REASON,
            )
            for c in dict.fromkeys(cmd.missing)
        ]
        return await self.act(
            code, who, lambda r, cal, now: r.request_supplement(who, now, items, cmd.note)
        )

    async def request_fee(self, code: str, who: Officer, cmd: RequestFee) -> Route:
        return await self.act(
            code, who, lambda r, cal, now: r.request_fee(who, now, cmd.amount_vnd, cmd.note)
        )

    async def fee_paid(self, code: str, who: Officer, cmd: FeePaid) -> Route:
        return await self.act(
            code, who, lambda r, cal, now: r.fee_paid(who, cmd.paid_at or now, now, cal)
        )

    async def decide(self, code: str, who: Officer, cmd: DecideDossier) -> Route:
        return await self.act(
            code,
            who,
            lambda r, cal, now: r.decide(
                who,
                now,
                cal,
                decision=cmd.decision,
                documents=cmd.documents,
                reasons=cmd.reasons,
            ),
        )

    async def result_ready(self, code: str, who: Officer, note: str | None) -> Route:
        return await self.act(code, who, lambda r, cal, now: r.mark_ready(who, now, cal, note))

    async def return_result(self, code: str, who: Officer, cmd: ReturnResult) -> Route:
        return await self.act(
            code, who, lambda r, cal, now: r.return_result(who, now, cal, cmd.method, cmd.note)
        )

    async def confirm_apology(
        self, code: str, who: Officer, apology_id: uuid.UUID, cmd: ConfirmApology
    ) -> Route:
        def move(r: Route, cal: WorkingCalendar, now: datetime) -> None:
            r.confirm_apology(
                who,
                apology_id,
                now,
                cal,
                reason=cmd.reason,
                appointment=cmd.appointment_at,
                number=cmd.number,
                signer_name=cmd.signer_name,
            )

        return await self.act(code, who, move)

    async def route(self, code: str) -> Route | None:
        return await store.read_route(self._pool(), code)

    async def worklist(self, agency_id: str, department: str | None, limit: int) -> list[Route]:
        rows = await store.worklist(self._pool(), agency_id, department, limit)
        return [Route.model_validate(r["doc"]) for r in rows]
