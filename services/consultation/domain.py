"""Consultation rules, free of I/O: the timer plan of a request, reply validation,
signatures over canonical content, and the audit hash chain."""

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

from contracts.common import Duration
from contracts.events import Decision, Outcome, RoundOutcome
from services.consultation.templates import Role, Template


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
    calendar: Calendar, template: Template, request_id: UUID, due_at: datetime
) -> list[PlannedTimer]:
    """Every reminder, escalation step and the final lapse of one request.

    Reminders fall before the deadline; escalation steps at the deadline plus their
    offset; the final lapse after the last step (never before it), so every rung of the
    ladder is climbed before consent is deemed.
    """
    rid = str(request_id)
    plan = [
        PlannedTimer(REMIND, f"{rid}/remind/{i}", calendar.before(due_at, r), {"index": i})
        for i, r in enumerate(template.reminders)
    ]
    last = due_at
    for n, step in enumerate(template.escalation, start=1):
        at = calendar.after(due_at, step.after)
        last = max(last, at)
        plan.append(PlannedTimer(ESCALATE, f"{rid}/escalate/{n}", at, {"step": n}))
    final_at = max(last, calendar.after(due_at, template.final.after))
    plan.append(PlannedTimer(FINAL, f"{rid}/final", final_at, {}))
    return plan


# --- the round: one dossier's consultation, the aggregate -----------------------------------


@dataclass
class RequestState:
    """What the round needs to know of one of its requests."""

    id: UUID
    agency_id: str
    status: Status
    decision: str | None


@dataclass
class Round:
    """A dossier's consultation round: the consistency boundary of its requests.

    Loaded under its row lock (every path that changes a request of the dossier takes it
    first, so replies, extensions, timers and cancellation never lock in different orders),
    changed through its methods, saved with ``version`` bumped.
    """

    code: str
    opened_at: datetime | None = None
    completed_at: datetime | None = None
    ended_at: datetime | None = None
    ended_by: str | None = None
    ended_reason: str | None = None
    version: int = 0
    requests: list[RequestState] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        """Withdrawn or stopped: no request opens and no timer is planned any more."""
        return self.ended_at is not None

    def may_open(self) -> bool:
        """A routing may open requests only while the dossier is neither ended nor done."""
        return not self.ended and self.completed_at is None

    def open(self, expected: int, at: datetime) -> None:
        if self.opened_at is None:
            self.opened_at = at

    def end(self, by: str, reason: str, at: datetime) -> list[RequestState]:
        """Withdrawal or stop: remember it (even before routing) and cancel what is open.

        Returns the requests this cancels; the first end wins, a second one is remembered
        only by its events' absence.
        """
        if self.ended_at is None:
            self.ended_at, self.ended_by, self.ended_reason = at, by, reason
        cancelled = [r for r in self.requests if r.status in ANSWERABLE]
        for r in cancelled:
            r.status = Status.CANCELLED
        return cancelled

    def settle(self, rid: UUID, status: Status, decision: str | None = None) -> None:
        """Record a request's new status inside the round."""
        for r in self.requests:
            if r.id == rid:
                r.status = status
                if decision is not None:
                    r.decision = decision

    def complete(self, at: datetime) -> tuple[RoundOutcome, ...] | None:
        """The outcomes, once, when every request of an opened round has one."""
        if self.opened_at is None or self.completed_at is not None or not self.requests:
            return None
        if any(r.status not in FINAL_STATUSES for r in self.requests):
            return None
        self.completed_at = at
        return tuple(
            RoundOutcome(
                request_id=r.id,
                agency_id=r.agency_id,
                outcome=Outcome(r.status.value),  # final statuses are named as outcomes
                decision=Decision(r.decision) if r.decision else None,
            )
            for r in sorted(self.requests, key=lambda r: r.agency_id)
        )


class ReplyError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def check_reply_content(
    template: Template, decision: Decision, conditions: str | None, reasons: str | None
) -> None:
    """The decision must be one the template allows, with the fields it requires."""
    rule = template.reply.decisions.get(decision)
    if rule is None:
        allowed = ", ".join(d.value for d in template.reply.decisions)
        raise ReplyError("decision", f"not allowed by template {template.id}; allowed: {allowed}")
    given = {"conditions": conditions, "reasons": reasons}
    for name in rule.requires:
        if not (given.get(name) or "").strip():
            raise ReplyError(name, f"required when the decision is {decision.value}")


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
        raise ReplyError("signer", "no active signing key registered under this key id")
    if signer.agency_id != agency_id:
        raise ReplyError("signer", "the signing key belongs to another agency")
    if signer.role not in allowed_roles:
        allowed = ", ".join(r.value for r in allowed_roles)
        raise ReplyError("signer", f"role {signer.role.value} may not sign; allowed: {allowed}")
    try:
        sig = base64.b64decode(signature_b64, validate=True)
        Ed25519PublicKey.from_public_bytes(signer.public_key).verify(sig, message)
    except (InvalidSignature, ValueError):
        raise ReplyError("signature", "does not verify over the reply's content") from None


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
