"""Intake's rules, free of I/O: the catalogue, the dossier code, what happens at receipt."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from contracts.agencies import AgencyBook, default_book
from contracts.common import (
    DocumentRef,
    ObjectType,
    Office,
    Procedure,
    RequiredDocument,
)
from services.runtime.calendar import WorkingCalendar

CATALOGUE_DIR = Path(__file__).parent / "catalogue"

# Serial numbers (the NNNN of a dossier code). domain.md gives 4 digits, 0001..9999, per
# receiving agency per day. The 10,000th dossier of a day does not stop the desk: the
# serial widens to 5 digits (…-10000 to …-99999), so codes stay unique, keep their shape
# up to the serial and sort correctly within a width. No agency receives 100,000 dossiers
# in a day; only then does the desk refuse (503, Retry-After until local midnight), since a
# sixth digit would mean something is wrong (the per-client rate limit sits in front).
SERIAL_DIGITS = 4
WIDE_SERIAL_DIGITS = 5
MAX_SERIAL = 10**WIDE_SERIAL_DIGITS - 1


class CatalogueError(ValueError):
    """A catalogue file is wrong; the message names the file and the field."""


class UnknownProcedure(LookupError):
    pass


@dataclass(frozen=True)
class Catalogue:
    """Every version of every procedure; a dossier takes the version in force at receipt."""

    versions: dict[str, tuple[Procedure, ...]] = field(default_factory=dict)

    @classmethod
    def from_procedures(cls, procedures: Iterable[Procedure]) -> Catalogue:
        by_code: dict[str, list[Procedure]] = {}
        for p in procedures:
            by_code.setdefault(p.code, []).append(p)
        versions: dict[str, tuple[Procedure, ...]] = {}
        for code, ps in by_code.items():
            ps.sort(key=lambda p: p.version)
            if len({p.version for p in ps}) != len(ps):
                raise CatalogueError(f"procedure {code}: duplicate version")
            versions[code] = tuple(ps)
        return cls(versions)

    @classmethod
    def load(
        cls, directory: Path | str = CATALOGUE_DIR, agencies: AgencyBook | None = None
    ) -> Catalogue:
        adapter = TypeAdapter(list[Procedure])
        procedures: list[Procedure] = []
        files = sorted(Path(directory).glob("*.yaml"))
        if not files:
            raise CatalogueError(f"{directory}: no *.yaml catalogue files")
        for path in files:
            try:
                raw = yaml.safe_load(path.read_text("utf-8")) or []
            except yaml.YAMLError as exc:
                raise CatalogueError(f"{path.name}: not valid YAML: {exc}") from exc
            try:
                procedures.extend(adapter.validate_python(raw))
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = _describe_loc(raw, first["loc"])
                raise CatalogueError(
                    f"{path.name}: {where}: {first['msg']} ({exc.error_count()} error(s))"
                ) from exc
        check_agencies(procedures, agencies or default_book())
        return cls.from_procedures(procedures)

    def all(self) -> list[Procedure]:
        return [p for ps in self.versions.values() for p in ps]

    def in_force(self, code: str, on: date) -> Procedure:
        """The latest version whose effective date is on or before ``on``."""
        versions = self.versions.get(code)
        if not versions:
            raise UnknownProcedure(code)
        live = [p for p in versions if p.effective_from <= on]
        if not live:
            raise UnknownProcedure(f"{code} is not in force on {on.isoformat()}")
        return live[-1]

    @cached_property
    def agencies(self) -> frozenset[str]:
        """Every agency the catalogue names: receiving, lead, consulted, or doing a step."""
        ids: set[str] = set()
        for p in self.all():
            ids.update((p.receiving_agency, p.lead_agency))
            ids.update(c.agency_id for c in p.consultations)
            ids.update(s.agency_id for s in p.steps)
        return frozenset(ids)

    def current(self) -> list[Procedure]:
        today = date.today()
        out = []
        for code in sorted(self.versions):
            try:
                out.append(self.in_force(code, today))
            except UnknownProcedure:
                out.append(self.versions[code][0])
        return out


def check_agencies(procedures: Iterable[Procedure], book: AgencyBook) -> None:
    """Every agency a procedure names is in the agency list, under its listed name; a
    procedure's competence level matches its lead agency's."""
    problems: list[str] = []
    for p in procedures:
        pairs = [
            (p.receiving_agency, p.receiving_agency_name),
            (p.lead_agency, p.lead_agency_name),
            *((c.agency_id, c.agency_name) for c in p.consultations),
        ]
        problems += [f"procedure {p.code}: {m}" for m in book.check(pairs)]
        problems += [
            f"procedure {p.code}: step {s.order}: agency {s.agency_id} is not in the agency list"
            for s in p.steps
            if s.agency_id not in book.ids()
        ]
        if p.lead_agency in book.ids() and book.get(p.lead_agency).level != p.level:
            problems.append(
                f"procedure {p.code}: level {p.level.value} but lead agency"
                f" {p.lead_agency} is {book.get(p.lead_agency).level.value}"
            )
        if not p.legal_basis:
            problems.append(f"procedure {p.code}: legal_basis is empty")
        if not p.processing_time.legal_basis:
            problems.append(f"procedure {p.code}: processing_time has no legal_basis")
    if problems:
        raise CatalogueError("; ".join(problems))


def office(book: AgencyBook, agency_id: str) -> Office:
    """How forms name the receiving office: the body it belongs to, itself, its desk."""
    return book.office(agency_id)


def _describe_loc(raw: Any, loc: Sequence[Any]) -> str:
    parts = []
    if loc and isinstance(loc[0], int) and isinstance(raw, list) and loc[0] < len(raw):
        entry = raw[loc[0]]
        code = entry.get("code") if isinstance(entry, dict) else None
        parts.append(f"entry {loc[0] + 1}" + (f" (code {code})" if code else ""))
        loc = loc[1:]
    if loc:
        parts.append("field " + ".".join(str(p) for p in loc))
    return ", ".join(parts) or "top level"


# --- dossier codes ---------------------------------------------------------------------------


def dossier_code(agency_id: str, day: date, serial: int) -> str:
    """``<agency id>-<YYMMDD>-<NNNN>``: unique nationwide, the key of everything.

    Serials 1..9,999 take 4 digits; 10,000..99,999 take 5 (see ``MAX_SERIAL``).
    """
    if not 1 <= serial <= MAX_SERIAL:
        raise ValueError(f"serial {serial} out of range 1..{MAX_SERIAL}")
    return f"{agency_id}-{day:%y%m%d}-{serial:0{SERIAL_DIGITS}d}"


# --- receipt ---------------------------------------------------------------------------------


class Outcome(StrEnum):
    RECEIVED = "received"
    SUPPLEMENT_REQUESTED = "supplement_requested"
    REFUSED = "refused"


@dataclass(frozen=True)
class Assessment:
    """What the desk decides on a dossier at receipt."""

    outcome: Outcome
    missing: tuple[RequiredDocument, ...] = ()
    reasons: tuple[str, ...] = ()


def assess(
    procedure: Procedure, object_type: ObjectType, documents: Sequence[DocumentRef]
) -> Assessment:
    """Refuse if the applicant is not eligible; ask once for what is missing; else receive."""
    if object_type not in procedure.eligible_object_types:
        who = "công dân" if object_type is ObjectType.CITIZEN else "tổ chức, doanh nghiệp"
        return Assessment(
            Outcome.REFUSED,
            reasons=(f"Thủ tục «{procedure.name}» không áp dụng cho đối tượng {who}.",),
        )
    handed_in = {d.code for d in documents}
    missing = tuple(
        d for d in procedure.required_documents if d.mandatory and d.code not in handed_in
    )
    if missing:
        return Assessment(Outcome.SUPPLEMENT_REQUESTED, missing=missing)
    return Assessment(Outcome.RECEIVED)


def still_missing(
    missing: Sequence[RequiredDocument], supplied: Iterable[DocumentRef]
) -> list[RequiredDocument]:
    codes = {d.code for d in supplied}
    return [d for d in missing if d.code not in codes]


@dataclass(frozen=True)
class Schedule:
    """The processing clock of a dossier."""

    clock_starts_at: datetime
    appointment_at: datetime


def schedule(calendar: WorkingCalendar, procedure: Procedure, received_at: datetime) -> Schedule:
    return Schedule(
        clock_starts_at=calendar.clock_start(received_at),
        appointment_at=calendar.deadline(received_at, procedure.processing_time),
    )


def resume(
    calendar: WorkingCalendar, appointment_at: datetime, paused_at: datetime, resumed_at: datetime
) -> tuple[int, datetime]:
    """Working seconds spent waiting for the applicant, and the appointment moved by them."""
    paused = calendar.working_seconds_between(paused_at, resumed_at)
    return paused, calendar.extend(appointment_at, paused)


def request_fingerprint(body: dict[str, Any]) -> str:
    """A stable hash of a request body, to tell a retried request from a different one."""
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def named_documents(procedure: Procedure, documents: Iterable[DocumentRef]) -> list[DocumentRef]:
    """The documents as handed in, each with its name from the catalogue where the caller
    gave only a code, so forms print names, not codes."""
    names = {d.code: d.name for d in procedure.required_documents}
    return [
        d if d.name or d.code not in names else d.model_copy(update={"name": names[d.code]})
        for d in documents
    ]
