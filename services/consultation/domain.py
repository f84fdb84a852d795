"""Consultation rules, free of I/O: the round aggregate (a dossier's requests and what may
happen to them), the timer plan of a request, reply validation, signatures over RFC 8785
canonical content, and the audit hash chain."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contracts.agencies import Agency, AgencyBook, AgencyError, default_book
from contracts.common import Duration
from contracts.envelope import EventPayload
from contracts.events import (
    ConsultationCancelled,
    ConsultationDeemedConsent,
    ConsultationEscalated,
    ConsultationExtended,
    ConsultationLapsed,
    ConsultationReminded,
    ConsultationReplied,
    ConsultationRequested,
    ConsultationRoundCompleted,
    Decision,
    Outcome,
    RoundOutcome,
)
from services.consultation.templates import EscalationStep, Role, Template


class Status(StrEnum):
    OPEN = "open"
    LAPSED = "lapsed"  # final deadline passed, no deemed consent: still waiting
    REPLIED = "replied"
    DEEMED_CONSENT = "deemed_consent"
    CANCELLED = "cancelled"


FINAL_STATUSES = (Status.REPLIED, Status.DEEMED_CONSENT, Status.CANCELLED)
ANSWERABLE = (Status.OPEN, Status.LAPSED)


class Calendar(Protocol):
    def deadline(self, received_at: datetime, period: Duration) -> datetime: ...
    def before(self, deadline: datetime, period: Duration) -> datetime: ...
    def after(self, t: datetime, period: Duration) -> datetime: ...
    def working_seconds_between(self, start: datetime, end: datetime) -> int: ...


# --- what a person reads: labels of the round's words, in Vietnamese --------------------------

DECISION_LABELS = {
    "agree": "Đồng ý",
    "disagree": "Không đồng ý",
    "agree_with_conditions": "Đồng ý có điều kiện",
}
FIELD_LABELS = {"conditions": "điều kiện", "reasons": "lý do"}
ROLE_LABELS = {
    Role.OFFICER: "chuyên viên",
    Role.DEPARTMENT_HEAD: "trưởng phòng",
    Role.AGENCY_HEAD: "thủ trưởng cơ quan",
    Role.COORDINATOR: "cơ quan điều phối",
}
STATUS_LABELS = {
    "open": "đang chờ trả lời",
    "lapsed": "quá hạn, đang chờ trả lời",
    "replied": "đã có văn bản trả lời",
    "deemed_consent": "được coi là đã đồng ý",
    "cancelled": "đã hủy",
}


@dataclass(frozen=True)
class PlannedTimer:
    kind: str
    ref: str
    due_at: datetime
    payload: dict[str, Any]


REMIND = "consultation.remind"
ESCALATE = "consultation.escalate"
FINAL = "consultation.final"


def timer_plan(
    calendar: Calendar,
    template: Template,
    request_id: UUID,
    due_at: datetime,
    *,
    deemed: bool = False,
) -> list[PlannedTimer]:
    """Every reminder, escalation step and the final timer of one request.

    Reminders fall before the deadline. Where silence is consent (``deemed``: the
    template's rule binds the asked agency) the final timer is the deadline itself and no
    rung follows it. Otherwise escalation steps fall at the deadline plus their offset and
    the final lapse after the last of them.
    """
    rid = str(request_id)
    plan = [
        PlannedTimer(REMIND, f"{rid}/remind/{i}", calendar.before(due_at, r), {"index": i})
        for i, r in enumerate(template.reminders)
    ]
    if deemed:
        plan.append(PlannedTimer(FINAL, f"{rid}/final", due_at, {}))
        return plan
    last = due_at
    for n, step in enumerate(template.escalation, start=1):
        at = calendar.after(due_at, step.after)
        last = max(last, at)
        plan.append(PlannedTimer(ESCALATE, f"{rid}/escalate/{n}", at, {"step": n}))
    final_at = max(last, calendar.after(due_at, template.final.after))
    plan.append(PlannedTimer(FINAL, f"{rid}/final", final_at, {}))
    return plan


def _agency(agencies: AgencyBook, agency_id: str) -> Agency | None:
    try:
        return agencies.get(agency_id)
    except AgencyError:
        return None


agency_of = _agency
"""The agency as the registry knows it, or None."""


def deems(template: Template, agency_id: str, agencies: AgencyBook) -> bool:
    """Whether the asked agency's silence counts as consent at the deadline."""
    return template.final.binds(_agency(agencies, agency_id))


@dataclass(frozen=True)
class Rung:
    """Whom an escalation step tells: a role, a person as addressed, their body."""

    role: str
    name: str
    agency_id: str | None


def rung(step: EscalationStep, agency_id: str, agencies: AgencyBook) -> Rung:
    """The step's addressee, from the registry: the asked agency's department head, then
    its head, then for a local agency the province chairman and for a vertical agency
    (police, tax, social insurance) its own superior, whom a chairman cannot command. A
    name in the template overrides; an agency the registry does not know gets a generic
    address."""
    if step.notify_name:
        return Rung(step.notify_role.value, step.notify_name, step.notify_agency)
    a = _agency(agencies, agency_id)
    if step.notify_role is Role.DEPARTMENT_HEAD:
        name = "Trưởng bộ phận chuyên môn được giao trả lời ý kiến"
        return Rung(step.notify_role.value, f"{name} - {a.name}" if a else name, agency_id)
    if step.notify_role is Role.AGENCY_HEAD:
        return Rung(
            step.notify_role.value, a.head if a else "Thủ trưởng cơ quan được lấy ý kiến", agency_id
        )
    if a is None:
        return Rung("superior", "Cấp trên trực tiếp của cơ quan được lấy ý kiến", None)
    if a.vertical:
        assert a.superior is not None  # the registry requires it of a vertical agency
        parent = _agency(agencies, a.parent) if a.parent else None
        above = parent.id if parent is not None and parent.head == a.superior else None
        return Rung("superior", a.superior, above)
    province = agencies.province(a.province)
    return Rung(Role.COORDINATOR.value, province.chairman, province.chairman_agency)


def _silence(template: Template, deemed: bool) -> str:
    """What silence will mean for this request, for its audit trail."""
    if deemed:
        return f"deemed consent at the deadline ({template.final.legal_basis})"
    if template.final.deemed_consent:
        return "escalation, then waiting: the local rule does not bind this agency"
    return "escalation, then waiting: no legal text makes silence consent"


# --- the round: one dossier's consultation, the aggregate -----------------------------------


class Refusal(StrEnum):
    """Why the round refuses a command (the HTTP adapter maps each to a status)."""

    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    CLOSED = "closed"
    INVALID = "invalid"
    UNSIGNED = "unsigned"


class Refused(Exception):
    def __init__(self, kind: Refusal, field: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.field = field
        self.reason = reason


@dataclass
class Request:
    """One opinion request as the round holds it; ``changed`` collects what to write."""

    id: UUID
    dossier_code: str
    lead_agency: str
    agency_id: str
    template_id: str
    template_version: int
    status: Status
    due_at: datetime
    reminders_sent: int = 0
    escalation_step: int = 0
    extensions: int = 0
    decision: str | None = None
    outcome_at: datetime | None = None
    changed: dict[str, Any] = field(default_factory=dict)

    def set(self, **values: Any) -> None:
        """Change columns of the request (those the round tracks, and any other)."""
        for name, value in values.items():
            plain = value.value if isinstance(value, StrEnum) else value
            self.changed[name] = plain
            if name == "status":
                self.status = Status(plain)
            elif name in _TRACKED:
                setattr(self, name, plain)

    @property
    def answerable(self) -> bool:
        return self.status in ANSWERABLE


_TRACKED = frozenset(
    {"due_at", "reminders_sent", "escalation_step", "extensions", "decision", "outcome_at"}
)


@dataclass(frozen=True)
class AuditEntry:
    request_id: UUID
    action: str
    actor: str
    at: datetime
    details: dict[str, Any]


@dataclass
class Round:
    """A dossier's consultation round: the consistency boundary of its requests.

    Loaded under its row lock (every path that changes a request of the dossier takes it
    first, so replies, extensions, timers and cancellation never lock in different orders),
    changed only through its methods, which check the rules and record what happened:
    ``events`` for the outbox, ``audits`` for each request's chain, timers to cancel and
    to plan. The store saves all of it with ``version`` bumped, in the same transaction.
    """

    code: str
    opened_at: datetime | None = None
    completed_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    ended_reason: str | None = None
    version: int = 0
    requests: list[Request] = field(default_factory=list)
    events: list[EventPayload] = field(default_factory=list)
    audits: list[AuditEntry] = field(default_factory=list)
    cancel_timers: list[UUID] = field(default_factory=list)
    plan_timers: list[PlannedTimer] = field(default_factory=list)

    # --- queries ---

    @property
    def ended(self) -> bool:
        """Withdrawn or stopped: no request opens and no timer is planned any more."""
        return self.ended_at is not None

    def may_open(self) -> bool:
        """A routing may open requests only while the dossier is neither ended nor done."""
        return not self.ended and self.completed_at is None

    def request(self, rid: UUID) -> Request:
        for r in self.requests:
            if r.id == rid:
                return r
        raise Refused(Refusal.NOT_FOUND, "request_id", "không có văn bản lấy ý kiến này")

    def visible(self, rid: UUID, agency_id: str) -> Request:
        """The request, if ``agency_id`` was asked or is the lead agency."""
        r = self.request(rid)
        if agency_id not in (r.agency_id, r.lead_agency):
            raise Refused(Refusal.FORBIDDEN, "agency", "văn bản lấy ý kiến này thuộc cơ quan khác")
        return r

    # --- commands ---

    def audit(self, r: Request, action: str, actor: str, at: datetime, **details: Any) -> None:
        self.audits.append(AuditEntry(r.id, action, actor, at, details))

    def add_request(
        self,
        r: Request,
        *,
        template: Template,
        calendar: Calendar,
        agency_name: str,
        subject: str,
        actor: str,
        at: datetime,
        agencies: AgencyBook | None = None,
        number: str | None = None,
    ) -> None:
        """A request just written for this round: its audit row, timers and event."""
        agencies = agencies or default_book()
        if self.opened_at is None:
            self.opened_at = at
        self.requests.append(r)
        deemed = deems(template, r.agency_id, agencies)
        self.audit(
            r,
            "opened",
            actor,
            at,
            due_at=r.due_at.isoformat(),
            template=f"{template.id}@{template.version}",
            silence=_silence(template, deemed),
        )
        self._plan(calendar, template, r, generation=0, now=at, deemed=deemed)
        self.events.append(
            ConsultationRequested(
                request_id=r.id,
                code=self.code,
                lead_agency=r.lead_agency,
                agency_id=r.agency_id,
                agency_name=agency_name,
                template_id=template.id,
                template_version=template.version,
                subject=subject,
                requested_at=at,
                due_at=r.due_at,
                number=number,
                legal_basis=template.deadline.legal_basis,
                deemed_basis=template.final.legal_basis if deemed else None,
            )
        )

    def record_reply(
        self,
        rid: UUID,
        *,
        agency_id: str,
        actor: str,
        template: Template,
        decision: Decision,
        conditions: str | None,
        reasons: str | None,
        signer_key: str,
        nonce: str,
        signature: str,
        signer: Signer | None,
        at: datetime,
    ) -> None:
        """An agency's signed reply: asked agency, open request, allowed content, a valid
        signature of an allowed signer; then the request's outcome, final."""
        r = self.visible(rid, agency_id)
        if agency_id != r.agency_id:
            raise Refused(
                Refusal.FORBIDDEN, "agency", "chỉ cơ quan được lấy ý kiến mới được trả lời"
            )
        if not r.answerable:
            raise Refused(
                Refusal.CLOSED,
                "status",
                f"việc lấy ý kiến đã kết thúc ({STATUS_LABELS[r.status.value]});"
                " kết quả không thay đổi được",
            )
        try:
            check_reply_content(template, decision, conditions, reasons)
        except ReplyError as exc:
            raise Refused(Refusal.INVALID, exc.field, exc.reason) from None
        try:
            if not signer_key or not nonce or not signature:
                raise ReplyError(
                    "signature",
                    "văn bản trả lời phải được ký số: cần mã khóa ký (signer), số dùng một lần"
                    " (nonce) và chữ ký số (signature)",
                )
            verify_signature(
                signer,
                agency_id=r.agency_id,
                allowed_roles=template.reply.signer_roles,
                message=canonical_reply(rid, decision, conditions, reasons, signer_key, nonce),
                signature_b64=signature,
            )
        except SignerNotAllowed as exc:
            # authenticated, but not allowed to answer for this agency: 403, not 401
            raise Refused(Refusal.FORBIDDEN, exc.field, exc.reason) from None
        except ReplyError as exc:
            raise Refused(Refusal.UNSIGNED, exc.field, exc.reason) from None
        r.set(
            status=Status.REPLIED,
            decision=decision.value,
            conditions=conditions,
            reasons=reasons,
            signer=signer_key,
            signature=signature,
            outcome_at=at,
        )
        self.audit(r, "replied", actor, at, decision=decision.value, signer=signer_key, nonce=nonce)
        self.cancel_timers.append(r.id)
        self.events.append(
            ConsultationReplied(
                request_id=r.id,
                code=self.code,
                agency_id=r.agency_id,
                decision=decision,
                conditions=conditions,
                reasons=reasons,
                signer=signer_key,
                replied_at=at,
            )
        )
        self._complete(at)

    def extend(
        self,
        rid: UUID,
        *,
        agency_id: str,
        actor: str,
        by: Duration,
        reason: str,
        template: Template,
        calendar: Calendar,
        at: datetime,
        agencies: AgencyBook | None = None,
    ) -> None:
        """The lead agency moves the deadline: a new generation of timers replaces the
        pending ones (so a deemed consent moves with the deadline); rungs already climbed
        stay climbed, reminders already past are not planned again."""
        r = self.visible(rid, agency_id)
        if agency_id != r.lead_agency:
            raise Refused(
                Refusal.FORBIDDEN, "agency", "chỉ cơ quan chủ trì mới được gia hạn lấy ý kiến"
            )
        if not r.answerable:
            raise Refused(
                Refusal.CLOSED,
                "status",
                f"việc lấy ý kiến đã kết thúc ({STATUS_LABELS[r.status.value]}),"
                " không gia hạn được",
            )
        previous = r.due_at
        # An extension runs from the deadline it moves while that is still ahead; once the
        # deadline has passed (a lapsed or escalated request) it runs from the moment it is
        # granted, so the asked agency really gets the time it is given. No legal text
        # governs extending an opinion request (the periods of Law on Construction Art.
        # 102(1) and Circular 02/2022/TT-BTNMT Art. 16 are the asked agency's, and an
        # extension is the lead agency's own grant); counting a period from the moment of
        # the act that starts it follows Civil Code 2015, Art. 147(1).
        start = max(previous, at)
        try:
            due = calendar.after(start, by)
        except (OverflowError, ValueError):
            raise Refused(
                Refusal.INVALID, "by", "thời hạn mới vượt quá giới hạn cho phép"
            ) from None
        r.set(due_at=due, extensions=r.extensions + 1, status=Status.OPEN)
        self.cancel_timers.append(r.id)
        deemed = deems(template, r.agency_id, agencies or default_book())
        self._plan(calendar, template, r, generation=r.extensions, now=at, deemed=deemed)
        self.audit(
            r,
            "extended",
            actor,
            at,
            previous_due_at=previous.isoformat(),
            counted_from=start.isoformat(),
            due_at=due.isoformat(),
            reason=reason,
        )
        self.events.append(
            ConsultationExtended(
                request_id=r.id,
                code=self.code,
                agency_id=r.agency_id,
                previous_due_at=previous,
                due_at=due,
                reason=reason,
                extended_at=at,
            )
        )

    def _due_timer(self, rid: UUID, generation: int | None) -> Request | None:
        """The request a timer acts on, or None: settled meanwhile, or planned before an
        extension (an older generation)."""
        r = next((q for q in self.requests if q.id == rid), None)
        if r is None or not r.answerable:
            return None
        if generation is not None and generation != r.extensions:
            return None
        return r

    def remind(
        self,
        rid: UUID,
        generation: int | None,
        index: int,
        at: datetime,
        template: Template | None = None,
        calendar: Calendar | None = None,
        agencies: AgencyBook | None = None,
    ) -> None:
        """Reminder ``index`` of the request's reminders, sent only while it still helps:
        never at or after the deadline (nor once deemed, replied or lapsed), and not when a
        later reminder is also due (timers that fire together after the clock jumped: only
        the latest is sent). A reminder not sent is recorded as skipped, with why. Where
        silence will count as consent, the reminder carries the text and article."""
        r = self._due_timer(rid, generation)
        if r is None:
            return
        if at >= r.due_at:
            self.audit(r, "reminder_skipped", "system", at, reminder=index, why="past_deadline")
            return
        if template is not None and calendar is not None and index < len(template.reminders):
            moments = [calendar.before(r.due_at, p) for p in template.reminders]
            mine = moments[index]
            if any(mine < m <= at for j, m in enumerate(moments) if j != index):
                self.audit(r, "reminder_skipped", "system", at, reminder=index, why="superseded")
                return
        deemed = template is not None and deems(template, r.agency_id, agencies or default_book())
        r.set(reminders_sent=r.reminders_sent + 1)
        self.audit(r, "reminded", "system", at, reminder=index)
        self.events.append(
            ConsultationReminded(
                request_id=r.id,
                code=self.code,
                agency_id=r.agency_id,
                due_at=r.due_at,
                reminded_at=at,
                deemed_basis=template.final.legal_basis if deemed and template else None,
            )
        )

    def escalate(
        self,
        rid: UUID,
        generation: int | None,
        n: int,
        template: Template,
        at: datetime,
        agencies: AgencyBook | None = None,
        calendar: Calendar | None = None,
    ) -> None:
        """Rung ``n`` of the ladder: whom it tells is resolved from the registry now, and
        recorded (who, which body, when, what they are asked, the deadline missed and by
        how much working time)."""
        r = self._due_timer(rid, generation)
        if r is None or not 1 <= n <= len(template.escalation):
            return  # settled, superseded, or a rung this template does not have
        step = template.escalation[n - 1]
        to = rung(step, r.agency_id, agencies or default_book())
        r.set(escalation_step=max(n, r.escalation_step))
        late = calendar.working_seconds_between(r.due_at, at) if calendar is not None else None
        self.audit(
            r,
            "escalated",
            "system",
            at,
            step=n,
            notify_role=to.role,
            notify_name=to.name,
            notify_agency=to.agency_id,
            ask=step.ask,
            due_at=r.due_at.isoformat(),
            overdue_working_seconds=late,
        )
        self.events.append(
            ConsultationEscalated(
                request_id=r.id,
                code=self.code,
                agency_id=r.agency_id,
                step=n,
                notify_role=to.role,
                notify_name=to.name,
                ask=step.ask,
                escalated_at=at,
                due_at=r.due_at,
                overdue_working_seconds=late,
            )
        )

    def lapse(
        self,
        rid: UUID,
        generation: int | None,
        template: Template,
        at: datetime,
        agencies: AgencyBook | None = None,
    ) -> None:
        """The final timer: deemed consent where a legal text binding the asked agency
        says silence is consent (the timer then falls at the deadline), else the request
        stays waiting, marked lapsed."""
        r = self._due_timer(rid, generation)
        if r is None:
            return
        basis = template.final.legal_basis
        if basis and deems(template, r.agency_id, agencies or default_book()):
            if at < r.due_at:
                return  # a timer older than the deadline now in force: not yet
            # consent is deemed at the deadline, however late the timer ran
            r.set(
                status=Status.DEEMED_CONSENT,
                legal_basis=basis,
                decision="agree",
                outcome_at=r.due_at,
            )
            self.audit(
                r, "deemed_consent", "system", at, legal_basis=basis, deemed_at=r.due_at.isoformat()
            )
            self.events.append(
                ConsultationDeemedConsent(
                    request_id=r.id,
                    code=self.code,
                    agency_id=r.agency_id,
                    lead_agency=r.lead_agency,
                    legal_basis=basis,
                    deemed_at=r.due_at,
                )
            )
            self._complete(at)
        elif r.status is Status.OPEN:
            r.set(status=Status.LAPSED)
            self.audit(r, "lapsed", "system", at, escalation_step=r.escalation_step)
            self.events.append(
                ConsultationLapsed(
                    request_id=r.id, code=self.code, agency_id=r.agency_id, lapsed_at=at
                )
            )

    def end(self, by: str, reason: str, at: datetime) -> list[Request]:
        """Withdrawal or stop: remembered (even before routing: the round then never
        opens), and every request still open is cancelled. The first end is the one kept.
        Returns the requests this cancels."""
        if self.ended_at is None:
            self.ended_at, self.ended_by, self.ended_reason = at, by, reason
        cancelled = [r for r in self.requests if r.answerable]
        for r in cancelled:
            r.set(status=Status.CANCELLED, outcome_at=at)
            self.cancel_timers.append(r.id)
            self.audit(r, "cancelled", f"system ({by})", at, reason=reason)
            self.events.append(
                ConsultationCancelled(
                    request_id=r.id,
                    code=self.code,
                    agency_id=r.agency_id,
                    reason=reason,
                    cancelled_at=at,
                )
            )
        self._complete(at)
        return cancelled

    def _plan(
        self,
        calendar: Calendar,
        template: Template,
        r: Request,
        *,
        generation: int,
        now: datetime | None = None,
        deemed: bool = False,
    ) -> None:
        """Each plan is a generation with timer refs of its own, so re-planning never
        touches a timer row a scheduler may hold; a timer of an older generation that still
        fires finds itself superseded and does nothing."""
        for t in timer_plan(calendar, template, r.id, r.due_at, deemed=deemed):
            if now is not None and t.kind == REMIND and t.due_at <= now:
                continue  # a reminder already past (a short deadline, an extension)
            if t.kind == REMIND and t.due_at >= r.due_at:
                continue  # a reminder at or after the deadline reminds of nothing
            if t.kind == ESCALATE and t.payload["step"] <= r.escalation_step:
                continue  # rungs already climbed stay climbed
            ref = t.ref if generation == 0 else t.ref.replace("/", f"/g{generation}/", 1)
            self.plan_timers.append(
                PlannedTimer(t.kind, ref, t.due_at, {**t.payload, "gen": generation})
            )

    def _complete(self, at: datetime) -> None:
        """Once every request of an opened round has an outcome, say so, once."""
        if self.opened_at is None or self.completed_at is not None or not self.requests:
            return
        if any(r.status not in FINAL_STATUSES for r in self.requests):
            return
        self.completed_at = at
        self.events.append(
            ConsultationRoundCompleted(
                code=self.code,
                outcomes=tuple(
                    RoundOutcome(
                        request_id=r.id,
                        agency_id=r.agency_id,
                        outcome=Outcome(r.status.value),  # final statuses are named so
                        decision=Decision(r.decision) if r.decision else None,
                        at=r.outcome_at,
                    )
                    for r in sorted(self.requests, key=lambda r: r.agency_id)
                ),
                completed_at=at,
            )
        )


class ReplyError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class SignerNotAllowed(ReplyError):
    """A valid signing key of someone who may not answer this request (another agency's,
    or a role the template does not allow): a 403, not a failed signature."""


def check_reply_content(
    template: Template, decision: Decision, conditions: str | None, reasons: str | None
) -> None:
    """The decision must be one the template allows, with the fields it requires."""
    rule = template.reply.decisions.get(decision)
    if rule is None:
        allowed = ", ".join(DECISION_LABELS[d.value] for d in template.reply.decisions)
        raise ReplyError(
            "decision",
            f"ý kiến «{DECISION_LABELS[decision.value]}» không thuộc các ý kiến mẫu văn bản"
            f" cho phép ({allowed})",
        )
    given = {"conditions": conditions, "reasons": reasons}
    for name in rule.requires:
        if not (given.get(name) or "").strip():
            raise ReplyError(
                name,
                f"phải ghi {FIELD_LABELS[name]} khi ý kiến là «{DECISION_LABELS[decision.value]}»",
            )


def canonical_reply(
    request_id: UUID,
    decision: Decision,
    conditions: str | None,
    reasons: str | None,
    signer: str,
    nonce: str,
) -> bytes:
    """The exact bytes a signer signs: the reply's fields in RFC 8785 canonical JSON (JCS).

    Any agency's client can produce them with an RFC 8785 library (absent texts are "").
    """
    doc = {
        "request_id": str(request_id),
        "decision": decision.value,
        "conditions": conditions or "",
        "reasons": reasons or "",
        "signer": signer,
        "nonce": nonce,
    }
    return rfc8785.dumps(doc)


@dataclass(frozen=True)
class Signer:
    key_id: str
    agency_id: str
    person: str
    role: Role
    public_key: bytes
    active: bool = True


def verify_signature(
    signer: Signer | None,
    *,
    agency_id: str,
    allowed_roles: tuple[Role, ...],
    message: bytes,
    signature_b64: str,
) -> None:
    """Raise ``ReplyError`` unless a registered, active signer of this agency with an
    allowed role signed exactly ``message``."""
    if signer is None or not signer.active:
        raise ReplyError("signer", "không có khóa ký số đang hiệu lực được đăng ký với mã này")
    if signer.agency_id != agency_id:
        raise SignerNotAllowed(
            "signer", "khóa ký số này thuộc cơ quan khác, không phải cơ quan được lấy ý kiến"
        )
    if signer.role not in allowed_roles:
        allowed = ", ".join(ROLE_LABELS[r] for r in allowed_roles)
        raise SignerNotAllowed(
            "signer",
            f"người ký giữ chức danh {ROLE_LABELS[signer.role]}, không được ký văn bản trả"
            f" lời; người được ký: {allowed}",
        )
    try:
        sig = base64.b64decode(signature_b64, validate=True)
        Ed25519PublicKey.from_public_bytes(signer.public_key).verify(sig, message)
    except (InvalidSignature, ValueError):
        raise ReplyError("signature", "chữ ký số không khớp với nội dung văn bản trả lời") from None


# --- audit chain ---------------------------------------------------------------------------

GENESIS = "0" * 64


def audit_hash(
    prev_hash: str,
    request_id: UUID,
    seq: int,
    action: str,
    actor: str,
    at: datetime,
    details: dict[str, Any],
) -> str:
    """sha256 over the previous hash and this row's canonical content."""
    body = rfc8785.dumps(
        {
            "prev": prev_hash,
            "request_id": str(request_id),
            "seq": seq,
            "action": action,
            "actor": actor,
            "at": at.isoformat(),
            "details": details,
        }
    )
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class BrokenLink:
    request_id: UUID
    seq: int
    audit_id: int
    reason: str


def verify_chain(rows: list[dict[str, Any]], head: str | None) -> BrokenLink | None:
    """Check one request's audit rows (ordered by seq) against each other and the head."""
    prev = GENESIS
    for expected_seq, row in enumerate(rows, start=1):
        if row["seq"] != expected_seq:
            return BrokenLink(row["request_id"], row["seq"], row["id"], "sequence gap")
        if row["prev_hash"] != prev:
            return BrokenLink(row["request_id"], row["seq"], row["id"], "prev_hash mismatch")
        h = audit_hash(
            prev,
            row["request_id"],
            row["seq"],
            row["action"],
            row["actor"],
            row["at"],
            row["details"],
        )
        if h != row["hash"]:
            return BrokenLink(row["request_id"], row["seq"], row["id"], "content altered")
        prev = h
    if head is not None and prev != head:
        last = rows[-1] if rows else None
        return BrokenLink(
            last["request_id"] if last else UUID(int=0),
            last["seq"] if last else 0,
            last["id"] if last else 0,
            "chain does not end at the request's recorded head (rows removed?)",
        )
    return None
