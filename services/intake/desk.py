"""The one-stop desk's use cases, shared by the desk API and the portal adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from contracts.agencies import AgencyBook, AgencyError, CompetenceError, default_book
from contracts.api import DossierAccepted, SubmitDossier, SupplementDossier
from contracts.common import (
    Applicant,
    Channel,
    Competence,
    CompetenceLevel,
    DocumentRef,
    DossierStatus,
    MissingItem,
    PortalStatus,
    Procedure,
    RequiredDocument,
    ReturnMethod,
    SupplementStage,
    TimeUnit,
)
from contracts.envelope import Envelope, EventPayload
from contracts.events import (
    DossierReceived,
    DossierRefused,
    DossierStopped,
    DossierSupplemented,
    DossierWithdrawn,
    ProcessingSupplementRequested,
    SupplementRequested,
)
from services.intake import domain, store
from services.runtime import auth
from services.runtime.calendar import WorkingCalendar, format_local
from services.runtime.service import Runtime

PORTAL_KEY_PREFIX = "portal:"
Changed = Callable[[asyncpg.Connection, str, Envelope], Awaitable[None]]
"""Told of every change the desk publishes, in its transaction (the portal sync)."""
"""Idempotency keys of the portal adapter; a desk client may not take one."""

FINAL = (
    PortalStatus.NOT_RECEIVED,
    PortalStatus.WITHDRAWN,
    PortalStatus.STOPPED,
    PortalStatus.PROCESSED,
    PortalStatus.RESULT_RETURNED,
)


class DeskError(Exception):
    """A request the desk cannot accept: HTTP status, field and reason."""

    def __init__(
        self, status: int, field: str, reason: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.field = field
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class Submitted:
    accepted: DossierAccepted
    replayed: bool = False


Actor = auth.Staff | auth.PortalClient | auth.Applicant
SKEW = timedelta(minutes=5)  # clocks of desks and portal differ a little: not back-dating


@dataclass(frozen=True)
class Backdating:
    """A time set earlier than the moment it was recorded: who, how far, why."""

    field: str
    claimed_at: datetime
    recorded_at: datetime
    actor: str
    reason: str


DESK_STAGE_REASON = "Thành phần hồ sơ bắt buộc chưa có trong hồ sơ nộp"
"""Form 02's reason for a document missing at the desk, when the officer gives none."""

RETURN_BY_CHANNEL = {
    Channel.IN_PERSON: ReturnMethod.AT_DESK,
    Channel.ONLINE: ReturnMethod.ONLINE,
    Channel.POST: ReturnMethod.POST,
}


def _officer(actor: Actor) -> str | None:
    """The name that goes in a form's signature block."""
    return actor.display_name if isinstance(actor, auth.Staff) else None


class Desk:
    def __init__(
        self,
        rt: Runtime,
        catalogue: domain.Catalogue,
        agencies: AgencyBook | None = None,
        on_change: Changed | None = None,
    ) -> None:
        self.rt = rt
        self.catalogue = catalogue
        self.agencies = agencies or default_book()
        self.seal_key = auth.seal_key_for_intake(rt.settings)
        self.on_change = on_change

    async def _publish(
        self,
        conn: asyncpg.Connection,
        payload: EventPayload,
        *,
        subject: str,
        cause: Envelope | None = None,
    ) -> Envelope:
        """Publish a change the desk made and, in the same transaction, tell ``on_change``
        (the portal sync queues the record as it stands now, before any later event of the
        dossier can be consumed: the portal hears of its life in order)."""
        env = await self.rt.outbox.add(conn, payload, subject=subject, cause=cause)
        if self.on_change is not None:
            await self.on_change(conn, subject, env)
        return env

    def calendar(self, procedure: Procedure, receiving: str) -> WorkingCalendar:
        """The calendar of the receiving office: its province's office hours and cut-off,
        or the procedure's own where it has them."""
        hours = procedure.office_hours or self.agencies.office_hours(receiving)
        return self.rt.calendar.with_office(hours)

    def _backdating(
        self, actor: Actor, field: str, at: datetime, now: datetime, reason: str | None
    ) -> Backdating | None:
        """The only path to a past ``received_at``/``supplemented_at``: a head of the
        agency (with a reason) or the portal (its own receipt time), at most
        ``backdate_limit_hours`` back, recorded in ``backdated``."""
        if at.tzinfo is None:
            raise DeskError(422, field, "must carry a timezone, e.g. +07:00")
        if at > now + SKEW:
            raise DeskError(422, field, "is in the future")
        if at >= now - SKEW:
            return None
        if isinstance(actor, auth.Applicant) or (
            isinstance(actor, auth.Staff) and not actor.is_head
        ):
            raise DeskError(403, field, "only a head of the agency may record an earlier time")
        limit = timedelta(hours=self.rt.settings.backdate_limit_hours)
        if now - at > limit:
            hours = self.rt.settings.backdate_limit_hours
            raise DeskError(422, field, f"more than {hours:g} hours in the past")
        if isinstance(actor, auth.PortalClient):
            reason = reason or "the portal's own receipt time (NgayTiepNhan)"
        if not reason:
            raise DeskError(422, "backdate_reason", "an earlier time needs a reason")
        return Backdating(field, at, now, actor.actor, reason)

    @staticmethod
    async def _record_backdating(conn: asyncpg.Connection, code: str, b: Backdating) -> None:
        await conn.execute(
            "INSERT INTO backdated(dossier_code, field, claimed_at, recorded_at, actor, reason)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            code,
            b.field,
            b.claimed_at,
            b.recorded_at,
            b.actor,
            b.reason,
        )

    # --- submission ------------------------------------------------------------------------

    def receives(self, agency_id: str) -> bool:
        """Whether an agency may receive dossiers at all: one the catalogue names, or one
        that keeps a one-stop desk (it receives any procedure's dossier and forwards it)."""
        return agency_id in self.catalogue.agencies or self.agencies.has_desk(agency_id)

    async def submit(
        self, cmd: SubmitDossier, idempotency_key: str | None, actor: Actor
    ) -> Submitted:
        """Receive a dossier; a desk officer records it for their own agency only."""
        portal = isinstance(actor, auth.PortalClient)
        if idempotency_key and idempotency_key.startswith(PORTAL_KEY_PREFIX) and not portal:
            raise DeskError(
                422, "Idempotency-Key", f"keys starting {PORTAL_KEY_PREFIX!r} are the portal's"
            )
        now = self.rt.clock.now()
        received_at = cmd.received_at or now
        if received_at.tzinfo is None:
            raise DeskError(422, "received_at", "must carry a timezone, e.g. +07:00")
        if received_at > now + SKEW:
            raise DeskError(422, "received_at", "thời điểm tiếp nhận ở tương lai")
        local_day = self.rt.calendar.local(received_at).date()
        try:
            procedure = self.catalogue.in_force(cmd.procedure_code, local_day)
        except domain.UnknownProcedure as exc:
            raise DeskError(
                422, "procedure_code", f"thủ tục không có hoặc chưa, hết hiệu lực: {exc}"
            ) from None
        receiving = cmd.receiving_agency or procedure.receiving_agency
        if not self.receives(receiving):
            raise DeskError(
                422,
                "receiving_agency",
                f"{receiving} không phải cơ quan trong danh mục hay bộ phận một cửa",
            )
        if isinstance(actor, auth.Staff) and actor.agency_id != receiving:
            raise DeskError(
                403, "receiving_agency", "bộ phận một cửa chỉ tiếp nhận hồ sơ cho cơ quan mình"
            )
        # refuses a commune it does not know, and at the desk a locality left out
        self._competent_lead(procedure, receiving, cmd, strict=isinstance(actor, auth.Staff))
        backdating = self._backdating(actor, "received_at", received_at, now, cmd.backdate_reason)
        assessment = domain.assess(procedure, cmd.applicant.object_type, cmd.documents)
        fingerprint = domain.request_fingerprint(cmd.model_dump(mode="json"))
        try:
            async with self.rt.pool.acquire() as conn, conn.transaction():
                if idempotency_key:
                    prior = await store.find_by_idempotency_key(conn, idempotency_key)
                    if prior is not None:
                        return self._replay(prior, fingerprint)
                accepted = await self._receive(
                    conn,
                    cmd,
                    procedure,
                    receiving,
                    assessment,
                    received_at,
                    idempotency_key,
                    fingerprint,
                    actor,
                )
                if backdating is not None:
                    await self._record_backdating(conn, accepted.code, backdating)
        except asyncpg.UniqueViolationError:
            if not idempotency_key:
                raise
            async with self.rt.pool.acquire() as conn:
                prior = await store.find_by_idempotency_key(conn, idempotency_key)
            if prior is None:
                raise
            return self._replay(prior, fingerprint)
        return Submitted(accepted)

    def _competent_lead(
        self, procedure: Procedure, receiving: str, cmd: SubmitDossier, *, strict: bool = False
    ) -> str:
        """The lead agency of the competent commune (the applicant's, the land's or the
        receiving one, as the catalogue's ``competence`` says; routing plans the route the
        same way, from the same book). A commune the book does not know: 422 naming the
        field, in Vietnamese. At the desk (``strict``) a residence- or property-bound
        procedure must name its commune: guessing the receiving one would have the wrong
        ward decide. (A portal payload carries no commune field: it falls back on the
        receiving commune.)"""
        if strict and procedure.level is CompetenceLevel.COMMUNE:
            if procedure.competence is Competence.RESIDENCE and cmd.applicant.commune is None:
                raise DeskError(
                    422,
                    "applicant.commune",
                    "ghi xã, phường nơi cư trú của người nộp: thủ tục này do Ủy ban nhân dân"
                    f" cấp xã nơi cư trú giải quyết ({procedure.competence_basis or ''})",
                )
            if procedure.competence is Competence.PROPERTY and cmd.property_commune is None:
                raise DeskError(
                    422,
                    "property_commune",
                    "ghi xã, phường nơi có đất, tài sản: thủ tục này do cơ quan cấp xã nơi có"
                    f" đất, tài sản giải quyết ({procedure.competence_basis or ''})",
                )
        try:
            commune = self.agencies.competent_commune(
                procedure, receiving, cmd.applicant.commune, cmd.property_commune
            )
        except CompetenceError as exc:
            raise DeskError(422, exc.field, exc.reason) from None
        if commune is None:
            return procedure.lead_agency
        return self.agencies.localize(procedure.lead_agency, commune)

    def _replay(self, prior: asyncpg.Record, fingerprint: str) -> Submitted:
        if prior["request_hash"] != fingerprint:
            raise DeskError(
                409,
                "Idempotency-Key",
                f"this key was used for a different request (dossier {prior['code']})",
            )
        return Submitted(DossierAccepted.model_validate(prior["response"]), replayed=True)

    async def _receive(
        self,
        conn: asyncpg.Connection,
        cmd: SubmitDossier,
        procedure: Procedure,
        receiving: str,
        assessment: domain.Assessment,
        received_at: datetime,
        idempotency_key: str | None,
        fingerprint: str,
        actor: Actor,
    ) -> DossierAccepted:
        local_day = self.rt.calendar.local(received_at).date()
        serial = await store.next_serial(conn, receiving, local_day)
        if serial > domain.MAX_SERIAL:  # the rule is in domain.py, next to MAX_SERIAL
            midnight = datetime.combine(
                local_day + timedelta(days=1), datetime.min.time(), self.rt.calendar.tz
            )
            raise DeskError(
                503,
                "receiving_agency",
                f"{receiving} has used all {domain.MAX_SERIAL:,} serial numbers of"
                f" {local_day:%d/%m/%Y}; the desk receives again from midnight",
                retry_after=max(1, int((midnight - self.rt.clock.now()).total_seconds())),
            )
        code = domain.dossier_code(receiving, local_day, serial)
        lead = self._competent_lead(procedure, receiving, cmd)
        lookup = auth.new_lookup_code()
        sealed = auth.seal(self.seal_key, lookup, code)
        outcome = assessment.outcome
        # The legal time counts from receipt of a complete, valid dossier: an incomplete
        # one at the desk gets Form 02 and no clock, and it does not use up the one request
        # allowed during processing.
        sched = (
            domain.schedule(self.calendar(procedure, receiving), procedure, received_at)
            if outcome is domain.Outcome.RECEIVED
            else None
        )
        # An incomplete dossier at reception was never received: status 1 (mới đăng ký),
        # not 5 (yêu cầu bổ sung giấy tờ), the one request allowed during processing
        # (domain.md, "National portal status codes": 1 newly registered, 2 received).
        # Form 02 at the desk guides the applicant to complete it (Decree 61/2018/NĐ-CP,
        # Art. 15(2), as continued by Decree 118/2025/NĐ-CP; the clause is from memory and
        # was not confirmed from a public source here): the clock has not started.
        state = {
            domain.Outcome.RECEIVED: DossierStatus.RECEIVED,
            domain.Outcome.SUPPLEMENT_REQUESTED: DossierStatus.REGISTERED,
            domain.Outcome.REFUSED: DossierStatus.NOT_RECEIVED,
        }[outcome]
        status = state.portal
        accepted = DossierAccepted(
            code=code,
            status=status,
            outcome=outcome.value,
            received_at=received_at,
            appointment_at=sched.appointment_at if sched else None,
            appointment_local=format_local(sched.appointment_at) if sched else None,
            missing_documents=[d.code for d in assessment.missing],
            reasons=list(assessment.reasons),
        )
        documents = domain.named_documents(procedure, cmd.documents)
        return_method = cmd.return_method or RETURN_BY_CHANNEL[cmd.channel]
        register = await self._register(conn, receiving, received_at) if sched is not None else None
        officer = _officer(actor)
        await store.insert_dossier(
            conn,
            {
                "code": code,
                "procedure_code": procedure.code,
                "procedure_version": procedure.version,
                "procedure_name": procedure.name,
                "channel": int(cmd.channel),
                "applicant": cmd.applicant.model_dump(mode="json"),
                "summary": cmd.summary,
                "documents": [d.model_dump(mode="json") for d in documents],
                "receiving_agency": receiving,
                "lead_agency": lead,
                "property_commune": cmd.property_commune,
                "status": int(status),
                "state": state.value,
                "outcome": outcome.value,
                "received_at": received_at,
                "submitted_at": cmd.submitted_at,
                "handling_unit": cmd.handling_unit,
                "received_by": officer,
                "return_method": return_method.value,
                "sets": cmd.sets,
                "register_book": register[0] if register else None,
                "register_number": register[1] if register else None,
                "clock_starts_at": sched.clock_starts_at if sched else None,
                "appointment_at": sched.appointment_at if sched else None,
                "legal_appointment_at": sched.appointment_at if sched else None,
                "missing": [d.model_dump(mode="json") for d in assessment.missing],
                "reasons": list(assessment.reasons),
                "desk_supplement_requests": 1 if assessment.missing else 0,
                "idempotency_key": idempotency_key,
                "request_hash": fingerprint,
                "response": accepted.model_dump(mode="json"),  # without the lookup code
                "lookup_hash": auth.hash_lookup_code(code, lookup),
            },
        )
        office = domain.office(self.agencies, receiving)
        if outcome is domain.Outcome.RECEIVED:
            assert sched is not None and register is not None
            await self._publish(
                conn,
                _received(
                    code,
                    procedure,
                    cmd.channel,
                    cmd.applicant,
                    cmd.summary,
                    documents,
                    receiving,
                    received_at,
                    sched,
                    lookup_code_sealed=sealed,
                    lead_agency=lead,
                    extra={
                        "property_commune": cmd.property_commune,
                        "submitted_at": cmd.submitted_at,
                        "handling_unit": cmd.handling_unit,
                        "received_by": officer,
                        "sets": cmd.sets,
                        "register_book": register[0],
                        "register_number": register[1],
                        "return_method": return_method,
                        "office": office,
                    },
                ),
                subject=code,
            )
        elif outcome is domain.Outcome.SUPPLEMENT_REQUESTED:
            await self._publish(
                conn,
                SupplementRequested(
                    code=code,
                    procedure_code=procedure.code,
                    procedure_name=procedure.name,
                    channel=cmd.channel,
                    applicant=cmd.applicant,
                    receiving_agency=receiving,
                    receiving_agency_name=_desk_name(procedure, receiving),
                    missing=assessment.missing,
                    requested_at=received_at,
                    lookup_code_sealed=sealed,
                    stage=SupplementStage.DESK,
                    items=tuple(
                        MissingItem(code=d.code, name=d.name, reason=DESK_STAGE_REASON)
                        for d in assessment.missing
                    ),
                    requested_by=officer,
                    summary=cmd.summary,
                    office=office,
                ),
                subject=code,
            )
        else:
            await self._publish(
                conn,
                DossierRefused(
                    code=code,
                    procedure_code=procedure.code,
                    procedure_name=procedure.name,
                    channel=cmd.channel,
                    applicant=cmd.applicant,
                    receiving_agency=receiving,
                    receiving_agency_name=_desk_name(procedure, receiving),
                    reasons=assessment.reasons,
                    refused_at=received_at,
                    lookup_code_sealed=sealed,
                    refused_by=officer,
                    summary=cmd.summary,
                    office=office,
                ),
                subject=code,
            )
        return accepted.model_copy(update={"lookup_code": lookup})

    async def _register(
        self, conn: asyncpg.Connection, receiving: str, received_at: datetime
    ) -> tuple[str, int]:
        """The entry in the receiving agency's register of the year (Sổ theo dõi hồ sơ)."""
        book = f"{self.rt.calendar.local(received_at).year}"
        return book, await store.next_register_number(conn, receiving, book)

    # --- the applicant supplements; the clock resumes ----------------------------------------

    async def supplement(self, code: str, cmd: SupplementDossier, actor: Actor) -> dict[str, Any]:
        now = self.rt.clock.now()
        at = cmd.supplemented_at or now
        backdating = self._backdating(
            actor,
            "supplemented_at",
            at,
            now,
            None
            if isinstance(actor, auth.Applicant)
            else "supplement handed in earlier at the desk",
        )
        async with self.rt.pool.acquire() as conn, conn.transaction():
            row = await self._locked(conn, code)
            waiting = (
                PortalStatus.NEW
                if row["clock_starts_at"] is None
                else PortalStatus.SUPPLEMENT_REQUESTED
            )
            if row["status"] not in (waiting, PortalStatus.SUPPLEMENT_REQUESTED):
                raise DeskError(409, "code", "hồ sơ không ở trạng thái chờ bổ sung")
            missing = [RequiredDocument.model_validate(m) for m in row["missing"]]
            left = domain.still_missing(missing, cmd.documents)
            if left:
                names = "; ".join(f"{d.code} ({d.name})" for d in left)
                raise DeskError(422, "documents", f"vẫn còn thiếu: {names}")
            procedure = self.catalogue.in_force(
                row["procedure_code"], self.rt.calendar.local(row["received_at"]).date()
            )
            calendar = self.calendar(procedure, row["receiving_agency"])
            documents = [DocumentRef.model_validate(d) for d in row["documents"]]
            have = {x.code for x in documents}
            documents += [
                d for d in domain.named_documents(procedure, cmd.documents) if d.code not in have
            ]
            if backdating is not None:
                await self._record_backdating(conn, code, backdating)
            if row["clock_starts_at"] is None:
                # Completed at the desk: this is the receipt of a complete, valid dossier,
                # and the clock starts now (Form 01); nothing was paused.
                result = await self._completed_at_desk(
                    conn, row, procedure, calendar, at, documents
                )
                return result
            paused_at = row["paused_at"]
            at = max(at, paused_at)
            paused, appointment = domain.resume(
                calendar,
                row["appointment_at"],
                paused_at,
                at,
                calendar_days=procedure.processing_time.unit is TimeUnit.CALENDAR_DAYS,
            )
            # Rows written before the desk-stage rule had a clock that started at receipt.
            legacy_desk_stage = row["outcome"] == domain.Outcome.SUPPLEMENT_REQUESTED
            status = PortalStatus.RECEIVED if legacy_desk_stage else PortalStatus.PROCESSING
            await store.update_dossier(
                conn,
                code,
                status=int(status),
                state=(
                    DossierStatus.RECEIVED if legacy_desk_stage else DossierStatus.PROCESSING
                ).value,
                outcome=domain.Outcome.RECEIVED.value,
                documents=[d.model_dump(mode="json") for d in documents],
                missing=[],
                paused_at=None,
                paused_seconds=row["paused_seconds"] + paused,
                appointment_at=appointment,
                # after an apology the legal date is routing's to move (dossier_resumed)
                legal_appointment_at=appointment
                if not row["apologies"] or row["legal_appointment_at"] is None
                else row["legal_appointment_at"],
            )
            await self._publish(
                conn,
                DossierSupplemented(
                    code=code,
                    documents=tuple(domain.named_documents(procedure, cmd.documents)),
                    supplemented_at=at,
                    paused_working_seconds=paused,
                    appointment_at=appointment,
                ),
                subject=code,
            )
            if legacy_desk_stage:
                await self._publish(
                    conn,
                    _received(
                        code,
                        procedure,
                        row["channel"],
                        Applicant.model_validate(row["applicant"]),
                        row["summary"],
                        documents,
                        row["receiving_agency"],
                        row["received_at"],
                        domain.Schedule(row["clock_starts_at"], appointment),
                        lead_agency=row["lead_agency"],
                        extra={"property_commune": row["property_commune"]},
                    ),
                    subject=code,
                )
        return {
            "code": code,
            "status": int(status),
            "paused_working_seconds": paused,
            "appointment_at": appointment,
            "appointment_local": format_local(appointment),
        }

    async def _completed_at_desk(
        self,
        conn: asyncpg.Connection,
        row: asyncpg.Record,
        procedure: Procedure,
        calendar: WorkingCalendar,
        at: datetime,
        documents: list[DocumentRef],
    ) -> dict[str, Any]:
        code = row["code"]
        at = max(at, row["received_at"])
        sched = domain.schedule(calendar, procedure, at)
        receiving = row["receiving_agency"]
        book, number = await self._register(conn, receiving, at)
        submitted_at = row["submitted_at"] or row["received_at"]
        await store.update_dossier(
            conn,
            code,
            status=int(PortalStatus.RECEIVED),
            state=DossierStatus.RECEIVED.value,
            outcome=domain.Outcome.RECEIVED.value,
            documents=[d.model_dump(mode="json") for d in documents],
            missing=[],
            received_at=at,
            submitted_at=submitted_at,
            clock_starts_at=sched.clock_starts_at,
            appointment_at=sched.appointment_at,
            legal_appointment_at=sched.appointment_at,
            register_book=book,
            register_number=number,
        )
        await self._publish(
            conn,
            DossierSupplemented(
                code=code,
                documents=tuple(
                    d for d in documents if d.code in {m["code"] for m in row["missing"]}
                ),
                supplemented_at=at,
                paused_working_seconds=0,
                appointment_at=sched.appointment_at,
            ),
            subject=code,
        )
        await self._publish(
            conn,
            _received(
                code,
                procedure,
                row["channel"],
                Applicant.model_validate(row["applicant"]),
                row["summary"],
                documents,
                receiving,
                at,
                sched,
                lead_agency=row["lead_agency"],
                extra={
                    "property_commune": row["property_commune"],
                    "submitted_at": submitted_at,
                    "handling_unit": row["handling_unit"],
                    "received_by": row["received_by"],
                    "sets": row["sets"],
                    "register_book": book,
                    "register_number": number,
                    "return_method": ReturnMethod(row["return_method"]),
                    "office": domain.office(self.agencies, receiving),
                },
            ),
            subject=code,
        )
        return {
            "code": code,
            "status": int(PortalStatus.RECEIVED),
            "paused_working_seconds": 0,
            "appointment_at": sched.appointment_at,
            "appointment_local": format_local(sched.appointment_at),
        }

    async def processing_supplement(
        self, conn: asyncpg.Connection, env: Envelope, p: ProcessingSupplementRequested
    ) -> bool:
        """Routing paused the dossier for the one supplement allowed during processing (a
        second is flagged there): record it, then Form 02 to the applicant, with the
        applicant's details only intake holds. Nothing (False) if the dossier ended
        meanwhile."""
        row = await store.get_dossier(conn, p.code, for_update=True)
        if row is None or row["status"] not in (PortalStatus.RECEIVED, PortalStatus.PROCESSING):
            return False
        procedure = self.catalogue.in_force(
            row["procedure_code"], self.rt.calendar.local(row["received_at"]).date()
        )
        names = {d.code: d for d in procedure.required_documents}
        missing = tuple(
            names.get(i.code) or RequiredDocument(code=i.code, name=i.name) for i in p.items
        )
        await store.update_dossier(
            conn,
            p.code,
            status=int(PortalStatus.SUPPLEMENT_REQUESTED),
            state=DossierStatus.WAITING_SUPPLEMENT.value,
            missing=[d.model_dump(mode="json") for d in missing],
            supplement_requests=p.request_number,
            supplement_violations=row["supplement_violations"] + int(p.violation),
            paused_at=p.requested_at,
            supplement_history=[
                *row["supplement_history"],
                {
                    "number": p.request_number,
                    "requested_at": p.requested_at.isoformat(),
                    "requested_by": p.requested_by.person or p.requested_by.agency_name,
                    "items": [i.model_dump(mode="json") for i in p.items],
                    "appointment_before": row["appointment_at"].isoformat(),
                },
            ],
        )
        await store.record_status(conn, p.code, DossierStatus.WAITING_SUPPLEMENT, env)
        await self._publish(
            conn,
            SupplementRequested(
                code=p.code,
                procedure_code=procedure.code,
                procedure_name=procedure.name,
                channel=row["channel"],
                applicant=Applicant.model_validate(row["applicant"]),
                receiving_agency=row["receiving_agency"],
                receiving_agency_name=_desk_name(procedure, row["receiving_agency"]),
                missing=missing,
                note=p.note,
                requested_at=p.requested_at,
                stage=SupplementStage.PROCESSING,
                items=p.items,
                requested_by=p.requested_by.person,
                request_number=p.request_number,
                violation=p.violation,
                summary=row["summary"],
                office=domain.office(self.agencies, row["receiving_agency"]),
            ),
            subject=p.code,
            cause=env,
        )
        return True

    async def end(self, code: str, *, withdrawn: bool, reason: str | None) -> dict[str, Any]:
        """Withdrawal by the applicant, or a stop by the agency: no result."""
        now = self.rt.clock.now()
        async with self.rt.pool.acquire() as conn, conn.transaction():
            row = await self._locked(conn, code)
            if row["status"] in FINAL:
                raise DeskError(409, "code", f"hồ sơ đã kết thúc (trạng thái {row['status']})")
            if row["status"] == int(PortalStatus.PROCESSED):
                raise DeskError(
                    409,
                    "code",
                    "hồ sơ đã có kết quả tại bộ phận trả kết quả: không thể rút hoặc dừng xử lý",
                )
            event: DossierWithdrawn | DossierStopped
            if withdrawn:
                state = DossierStatus.WITHDRAWN
                status = PortalStatus.WITHDRAWN
                event = DossierWithdrawn(code=code, reason=reason, withdrawn_at=now)
            else:
                if not reason:
                    raise DeskError(422, "reason", "dừng xử lý hồ sơ phải nêu lý do")
                state = DossierStatus.STOPPED
                status = PortalStatus.STOPPED
                event = DossierStopped(code=code, reason=reason, stopped_at=now)
            await store.update_dossier(conn, code, status=int(status), state=state.value)
            await self._publish(conn, event, subject=code)
        return {"code": code, "status": int(status)}

    async def _locked(self, conn: asyncpg.Connection, code: str) -> asyncpg.Record:
        row = await store.get_dossier(conn, code, for_update=True)
        if row is None:
            raise DeskError(404, "code", f"no dossier {code}")
        return row


def _desk_name(procedure: Procedure, receiving: str) -> str:
    """How forms name the desk that received the dossier: the registry's name of that desk
    (another ward's centre than the catalogue's, often), else the catalogue's."""
    if receiving == procedure.receiving_agency:
        return procedure.receiving_agency_name
    try:
        return default_book().get(receiving).name
    except AgencyError:
        return procedure.receiving_agency_name


def _received(
    code: str,
    procedure: Procedure,
    channel: Any,
    applicant: Applicant,
    summary: str | None,
    documents: Any,
    receiving: str,
    received_at: datetime,
    sched: domain.Schedule,
    lookup_code_sealed: str | None = None,
    extra: dict[str, Any] | None = None,
    lead_agency: str | None = None,
) -> DossierReceived:
    return DossierReceived(
        code=code,
        procedure_code=procedure.code,
        procedure_version=procedure.version,
        procedure_name=procedure.name,
        channel=channel,
        applicant=applicant,
        summary=summary,
        documents=tuple(documents),
        receiving_agency=receiving,
        receiving_agency_name=_desk_name(procedure, receiving),
        lead_agency=lead_agency or procedure.lead_agency,  # the competent commune's
        processing_time=procedure.processing_time,
        received_at=received_at,
        clock_starts_at=sched.clock_starts_at,
        appointment_at=sched.appointment_at,
        lookup_code_sealed=lookup_code_sealed,
        **(extra or {}),
    )
