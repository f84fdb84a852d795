"""The console's pure rules: what an event says about agencies, a dossier and an opinion
request, how a dead letter reads, and what a caller may see of it. No I/O here.

A dossier's row is a *fold* of all its events sorted by (occurred_at, event_id), not a
chain of updates in arrival order: events of one dossier travel on several topics, so the
order they arrive in differs between the live consumer and a rebuild from the log; the
fold makes both the same.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from contracts.envelope import DOSSIER_CODE_PATTERN
from services.runtime.acl import origin_refusal
from services.runtime.auth import mask, redact

VN = ZoneInfo("Asia/Ho_Chi_Minh")
AGENCY_RE = re.compile(r"^[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}$")
DOSSIER_RE = re.compile(DOSSIER_CODE_PATTERN)
EXTRA_PERSONAL = frozenset({"lookup_code_sealed", "id_number", "phone", "email"})
FINAL_STATES = frozenset({"result_ready", "returned", "withdrawn", "stopped", "refused"})


def agency_of_code(code: str | None) -> str | None:
    """The receiving agency a dossier code starts with."""
    if code and DOSSIER_RE.match(code):
        return code.rsplit("-", 2)[0]
    return None


def agencies_in(data: Any, subject: str | None = None) -> list[str]:
    """Every agency id named anywhere in ``data`` (and the dossier code's own), sorted."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, str):
            if AGENCY_RE.match(v):
                found.add(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list | tuple):
            for x in v:
                walk(x)

    walk(data)
    own = agency_of_code(subject)
    if own:
        found.add(own)
    return sorted(found)


def mask_data(data: Any) -> Any:
    """Event data as the console keeps it: applicants and recipients masked (as
    ``services.runtime.auth.redact`` does for every service), the sealed lookup code and
    loose identity numbers, phones and emails masked wherever they appear."""

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {
                k: (
                    "***"
                    if k == "lookup_code_sealed" and x
                    else mask(x)
                    if k in EXTRA_PERSONAL and isinstance(x, str) and "*" not in x
                    else walk(x)
                )
                for k, x in v.items()
            }
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(redact(data))


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo else t.replace(tzinfo=UTC)


def local(t: datetime | None) -> str:
    """A UTC time as shown to people: Asia/Ho_Chi_Minh, ``dd/mm/yyyy HH:MM:SS``."""
    return t.astimezone(VN).strftime("%d/%m/%Y %H:%M:%S") if t else ""


def month_of(t: datetime | None) -> str | None:
    """``YYYY-MM`` of ``t`` in Asia/Ho_Chi_Minh (the month an agency is scored in)."""
    return t.astimezone(VN).strftime("%Y-%m") if t else None


@dataclass(frozen=True, order=True)
class Fact:
    """One event as the folds read it."""

    occurred_at: datetime
    event_id: str
    type: str
    data: Mapping[str, Any] = field(compare=False)


# --- dossiers ---------------------------------------------------------------------------

DOSSIER_TYPES = frozenset(
    {
        "dossier.received",
        "dossier.refused",
        "dossier.supplement_requested",
        "dossier.supplemented",
        "dossier.withdrawn",
        "dossier.stopped",
        "routing.dossier_routed",
        "routing.handed_over",
        "routing.step_taken",
        "routing.step_completed",
        "routing.step_overdue",
        "routing.supplement_requested",
        "routing.fee_requested",
        "routing.dossier_resumed",
        "routing.dossier_decided",
        "routing.apology_issued",
        "routing.result_ready",
        "routing.result_returned",
        "routing.route_closed",
    }
)
_STATE_OF = {
    "dossier.received": "received",
    "dossier.refused": "refused",
    "dossier.supplement_requested": "registered",  # at the desk: not received yet (status 1)
    "dossier.withdrawn": "withdrawn",
    "dossier.stopped": "stopped",
}


def fold_dossier(code: str, facts: Iterable[Fact]) -> dict[str, Any] | None:
    """The dossier's row from its events in time order; None before any dossier event."""
    row: dict[str, Any] = {
        "code": code,
        "receiving_agency": agency_of_code(code),
        "lead_agency": None,
        "procedure_code": None,
        "procedure_name": None,
        "channel": None,
        "state": None,
        "portal_status": None,
        "received_at": None,
        "appointment_at": None,
        "legal_appointment_at": None,
        "step_deadline_at": None,
        "finished_at": None,
        "returned_at": None,
        "timeliness": None,
        "apologies": 0,
        "supplement_requests": 0,
        "overdue_steps": 0,
        "events": 0,
        "last_event_at": None,
    }
    seen = False
    for f in sorted(facts):
        if f.type not in DOSSIER_TYPES:
            continue
        seen = True
        d, t = f.data, f.type
        row["events"] += 1
        row["last_event_at"] = f.occurred_at
        for k in ("procedure_code", "procedure_name", "channel", "receiving_agency"):
            if d.get(k) is not None and t.startswith("dossier."):
                row[k] = d[k]
        if d.get("lead_agency"):
            row["lead_agency"] = d["lead_agency"]
        if isinstance(d.get("status"), int):
            row["portal_status"] = d["status"]
        state = d.get("state") or _STATE_OF.get(t)
        if state:
            row["state"] = state
        if t == "dossier.received":
            row["received_at"] = parse_time(d.get("received_at"))
            row["appointment_at"] = parse_time(d.get("appointment_at"))
            row["legal_appointment_at"] = row["appointment_at"]
        elif t == "dossier.refused":
            row["finished_at"] = parse_time(d.get("refused_at"))
        elif t in ("dossier.supplement_requested", "routing.supplement_requested"):
            row["supplement_requests"] += 1
        elif t == "dossier.supplemented":
            row["appointment_at"] = parse_time(d.get("appointment_at")) or row["appointment_at"]
            if row["legal_appointment_at"] is None:
                row["legal_appointment_at"] = row["appointment_at"]
        elif t in ("dossier.withdrawn", "dossier.stopped"):
            if row["finished_at"] is None:
                row["finished_at"] = parse_time(d.get("withdrawn_at") or d.get("stopped_at"))
        elif t == "routing.dossier_routed":
            row["appointment_at"] = parse_time(d.get("appointment_at")) or row["appointment_at"]
            row["step_deadline_at"] = parse_time(d.get("step_deadline_at"))
        elif t == "routing.handed_over":
            row["step_deadline_at"] = parse_time(d.get("deadline_at"))
        elif t == "routing.dossier_resumed":
            row["appointment_at"] = parse_time(d.get("appointment_at")) or row["appointment_at"]
            row["step_deadline_at"] = parse_time(d.get("step_deadline_at"))
        elif t == "routing.step_overdue":
            row["overdue_steps"] += 1
        elif t == "routing.apology_issued":
            row["apologies"] += 1
            row["appointment_at"] = parse_time(d.get("appointment_at")) or row["appointment_at"]
        elif t == "routing.result_ready":
            row["finished_at"] = parse_time(d.get("ready_at"))
            row["timeliness"] = d.get("timeliness")
            row["apologies"] = max(row["apologies"], int(d.get("apologies") or 0))
            legal = parse_time(d.get("legal_appointment_at"))
            if legal:
                row["legal_appointment_at"] = legal
            row["received_at"] = row["received_at"] or parse_time(d.get("received_at"))
        elif t == "routing.result_returned":
            row["returned_at"] = parse_time(d.get("returned_at"))
            row["timeliness"] = row["timeliness"] or d.get("timeliness")
        elif t == "routing.route_closed" and row["finished_at"] is None:
            if d.get("state") in ("withdrawn", "stopped"):
                row["finished_at"] = parse_time(d.get("closed_at"))
    if not seen:
        return None
    row["online"] = None if row["channel"] is None else row["channel"] == 2
    row["agency"] = row["lead_agency"] or row["receiving_agency"]
    return row


# --- opinion requests -------------------------------------------------------------------

_REQUEST_STATUS = {
    "consultation.requested": "requested",
    "consultation.reminded": "reminded",
    "consultation.escalated": "escalated",
    "consultation.lapsed": "lapsed",
    "consultation.extended": "extended",
    "consultation.replied": "replied",
    "consultation.deemed_consent": "deemed_consent",
    "consultation.cancelled": "cancelled",
}
CLOSED_REQUEST = frozenset({"replied", "deemed_consent", "cancelled"})


def fold_request(request_id: str, facts: Iterable[Fact]) -> dict[str, Any] | None:
    """An opinion request's row from its events in time order (a closed request stays
    closed whatever a late reminder says)."""
    row: dict[str, Any] = {
        "request_id": request_id,
        "dossier_code": None,
        "lead_agency": None,
        "agency_id": None,
        "agency_name": None,
        "template_id": None,
        "subject": None,
        "requested_at": None,
        "due_at": None,
        "status": "requested",
        "reminders": 0,
        "escalations": 0,
        "last_escalation": None,
        "decision": None,
        "closed_at": None,
        "events": 0,
    }
    seen = False
    for f in sorted(facts):
        status = _REQUEST_STATUS.get(f.type)
        if status is None:
            continue
        seen = True
        d = f.data
        row["events"] += 1
        row["dossier_code"] = row["dossier_code"] or d.get("code")
        row["agency_id"] = row["agency_id"] or d.get("agency_id")
        if f.type == "consultation.requested":
            for k in ("lead_agency", "agency_name", "template_id", "subject"):
                row[k] = d.get(k)
            row["requested_at"] = parse_time(d.get("requested_at"))
            row["due_at"] = parse_time(d.get("due_at"))
        elif f.type == "consultation.reminded":
            row["reminders"] += 1
        elif f.type == "consultation.escalated":
            row["escalations"] += 1
            row["last_escalation"] = {
                "step": d.get("step"),
                "notify_role": d.get("notify_role"),
                "notify_name": d.get("notify_name"),
                "at": d.get("escalated_at"),
            }
        elif f.type == "consultation.extended":
            row["due_at"] = parse_time(d.get("due_at")) or row["due_at"]
        elif f.type == "consultation.replied":
            row["decision"] = d.get("decision")
        if row["status"] in CLOSED_REQUEST:
            continue
        if status in CLOSED_REQUEST:
            row["closed_at"] = f.occurred_at
            row["status"] = status
        elif status == "extended":
            row["status"] = "requested"
        else:
            row["status"] = status
    return row if seen and row["dossier_code"] else None


# --- dead letters -----------------------------------------------------------------------


def dead_letter_errors(detail: str) -> list[dict[str, str]]:
    """Field-level reasons when the detail carries pydantic errors (a JSON list of
    ``{field, reason}``), else one entry with the whole detail."""
    try:
        parsed = json.loads(detail)
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and all(isinstance(e, dict) for e in parsed):
        return [
            {"field": str(e.get("field", "")), "reason": str(e.get("reason", ""))} for e in parsed
        ]
    if not detail:
        return []
    return [{"field": "", "reason": detail[:2000]}]


def dead_letter_row(
    writer: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    headers: Sequence[tuple[str, bytes]],
    timestamp_ms: int | None,
    prefix: str = "",
) -> dict[str, Any]:
    """A record of ``writer``'s dead-letter topic as the console keeps it; ``value`` may be
    anything. ``writer`` is who wrote it as the broker saw it (only that principal may
    write that topic); ``forged`` says why its headers claim an origin ``writer`` could not
    have had, and such a dead letter cannot be replayed."""
    h = {k: v.decode("utf-8", "replace") for k, v in headers}
    detail = h.get("dlq_detail", "")
    event_id = event_type = subject = None
    data: Any = None
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        event_type = doc.get("type") if isinstance(doc.get("type"), str) else None
        subject = doc.get("subject") if isinstance(doc.get("subject"), str) else None
        data = doc.get("data")
        try:
            import uuid

            event_id = str(uuid.UUID(str(doc.get("event_id"))))
        except ValueError:
            event_id = None
    key_text = key.decode("utf-8", "replace") if key is not None else None
    code = subject if subject and DOSSIER_RE.match(subject) else None
    if code is None and key_text and DOSSIER_RE.match(key_text):
        code = key_text
    stored_id = _int(h.get("dlq_stored_id"))
    forged = origin_refusal(writer, h.get("dlq_consumer"), h.get("dlq_topic"), prefix)
    if forged is None and stored_id is None:
        forged = f"không có số lưu trữ (dlq_stored_id) mà {writer} luôn ghi"
    return {
        "id": f"{writer}-{partition}-{offset}",
        "writer": writer,
        "forged": forged,
        "dlq_partition": partition,
        "dlq_offset": offset,
        "key": key_text,
        "value": value,
        "headers": {k: v for k, v in h.items() if k != "dlq_detail"},
        "reason": h.get("dlq_reason", "unknown"),
        "detail": detail,
        "errors": dead_letter_errors(detail),
        "consumer": h.get("dlq_consumer"),
        "origin_topic": h.get("dlq_topic"),
        "origin_partition": _int(h.get("dlq_partition")),
        "origin_offset": _int(h.get("dlq_offset")),
        "stored_id": stored_id,
        "stored_elsewhere": h.get("dlq_value") == "stored",
        "event_id": event_id,
        "event_type": event_type,
        "dossier_code": code,
        "agencies": agencies_in(data, code),
        "dead_lettered_at": (
            datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms else None
        ),
    }


def _int(v: str | None) -> int | None:
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


def replay_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The original record's headers, less what the dead-letter path added."""
    return {k: v for k, v in headers.items() if not k.startswith("dlq_")}


def held_event(value: bytes) -> dict[str, Any] | None:
    """The event a dead letter held (a JSON object), or None."""
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def replay_key(value: str, key: str | None) -> str:
    """The key a replayed event goes out with: its subject (every consumer refuses an event
    keyed otherwise), else the dead letter's key."""
    try:
        doc = json.loads(value)
    except ValueError:
        doc = None
    subject = doc.get("subject") if isinstance(doc, dict) else None
    return subject if isinstance(subject, str) and subject else key or ""


def masked_payload(value: bytes) -> Any:
    """A dead letter's value for a caller who may not see personal data: JSON masked,
    anything else as text with digits runs masked."""
    try:
        return mask_data(json.loads(value))
    except ValueError:
        text = value.decode("utf-8", "replace")
        return re.sub(r"\d{6,}", lambda m: mask(m.group(0)), text)[:20000]


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


# --- Decision 766 -----------------------------------------------------------------------


def on_time_rate(on_time: int, late: int) -> float | None:
    """Share finished on time (early included), 0..1; None with nothing finished."""
    done = on_time + late
    return round(on_time / done, 4) if done else None
