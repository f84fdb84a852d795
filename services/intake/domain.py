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
    ActingRole,
    DocumentRef,
    Duration,
    ObjectType,
    Office,
    Procedure,
    RequiredDocument,
    StepKind,
    TimeUnit,
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
        """Every ``*.yaml`` of ``directory``, each procedure checked against the agency
        registry and its route against the budget rule; a problem names its file."""
        adapter = TypeAdapter(list[Procedure])
        book = agencies or default_book()
        procedures: list[Procedure] = []
        problems: list[str] = []
        files = sorted(Path(directory).glob("*.yaml"))
        if not files:
            raise CatalogueError(f"{directory}: no *.yaml catalogue files")
        for path in files:
            try:
                raw = yaml.safe_load(path.read_text("utf-8")) or []
            except yaml.YAMLError as exc:
                raise CatalogueError(f"{path.name}: not valid YAML: {exc}") from exc
            try:
                found = adapter.validate_python(raw)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = _describe_loc(raw, first["loc"])
                raise CatalogueError(
                    f"{path.name}: {where}: {first['msg']} ({exc.error_count()} error(s))"
                ) from exc
            problems += [f"{path.name}: {m}" for p in found for m in procedure_problems(p, book)]
            procedures.extend(found)
        if problems:
            raise CatalogueError("; ".join(problems))
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
    procedure's competence level matches its lead agency's; every figure has a source.
    (``Catalogue.load`` runs these with the route checks, file by file.)"""
    problems = [
        f"procedure {p.code} v{p.version}: {m}"
        for p in procedures
        for m in agency_problems(p, book)
    ]
    if problems:
        raise CatalogueError("; ".join(problems))


def procedure_problems(procedure: Procedure, book: AgencyBook) -> list[str]:
    """What is wrong with one version: its agencies, its sources, its route."""
    where = f"procedure {procedure.code} v{procedure.version}"
    return [
        f"{where}: {m}"
        for m in (*agency_problems(procedure, book), *step_problems(procedure, book))
    ]


def agency_problems(p: Procedure, book: AgencyBook) -> list[str]:
    """The agencies a version names, against the registry, and the sources of its figures."""
    pairs = [
        ("receiving_agency", p.receiving_agency, p.receiving_agency_name),
        ("lead_agency", p.lead_agency, p.lead_agency_name),
        *(
            (f"consultations.{i}", c.agency_id, c.agency_name)
            for i, c in enumerate(p.consultations)
        ),
    ]
    problems = [
        f"field {field}: {m}" for field, agency, name in pairs for m in book.check([(agency, name)])
    ]
    problems += [
        f"field steps.agency_id of step {s.order}: {s.agency_id} is not in the agency list"
        for s in p.steps
        if s.agency_id not in book.ids()
    ]
    if p.lead_agency in book.ids() and book.get(p.lead_agency).level != p.level:
        problems.append(
            f"field level: {p.level.value} but lead agency"
            f" {p.lead_agency} is {book.get(p.lead_agency).level.value}"
        )
    if not p.legal_basis:
        problems.append("field legal_basis: empty")
    if not p.processing_time.legal_basis:
        problems.append("field processing_time: no legal_basis")
    return problems


# --- the route of a version (steps) and its budget rule ---------------------------------------

HOURS_PER_DAY = 8
"""Nominal working hours to a working day, as budgets in days and hours are added up."""

_MIDDLE_KINDS = frozenset(
    {StepKind.ASSIGN, StepKind.APPRAISE, StepKind.CONSULT, StepKind.WORK, StepKind.APPROVE}
)


@dataclass(frozen=True)
class _Family:
    """The units a version's step budgets may use, given its processing time, and how they
    add up: working days and hours together (8 to a day), calendar days alone, or, for a
    total "within the day", working hours making one office day."""

    units: frozenset[TimeUnit]
    total: int
    word: str
    describe_total: str

    def amount(self, d: Duration) -> int:
        """A step's budget in the family's measure: days, or nominal working hours."""
        return d.value if d.unit is TimeUnit.CALENDAR_DAYS else d.hours


def _family(total: Duration) -> _Family:
    if total.unit is TimeUnit.CALENDAR_DAYS:
        return _Family(
            frozenset({TimeUnit.CALENDAR_DAYS}),
            total.value,
            "calendar days",
            f"{total.value} calendar days",
        )
    if total.unit is TimeUnit.WITHIN_THE_DAY:
        return _Family(
            frozenset({TimeUnit.WORKING_HOURS}),
            HOURS_PER_DAY,
            "working hours",
            f"within the day ({HOURS_PER_DAY} working hours, one office day)",
        )
    hours = total.value * (HOURS_PER_DAY if total.unit is TimeUnit.WORKING_DAYS else 1)
    shown = (
        f"{total.value} working days ({hours} working hours)"
        if total.unit is TimeUnit.WORKING_DAYS
        else f"{total.value} working hours"
    )
    return _Family(
        frozenset({TimeUnit.WORKING_DAYS, TimeUnit.WORKING_HOURS}), hours, "working hours", shown
    )


def _units(family: _Family) -> str:
    return " or ".join(sorted(u.value for u in family.units))


def step_problems(procedure: Procedure, book: AgencyBook) -> list[str]:
    """The route rule for one version, each problem naming the field it is about.

    A version without steps is accepted only without consultations (routing then uses its
    default route). Otherwise: orders run 1..n; step 1 is ``receive`` and step n ``return``,
    both at the receiving agency; exactly one ``approve``, by a head of the lead agency; a
    ``consult`` step, at the lead agency, exactly when the version has consultations (at
    most one); the others are assign/appraise/work. The receive step's budget is 0, every
    other budget is above 0, each with its source, in the unit family of the processing
    time (working days and hours mixed, 8 to a day; calendar days alone; working hours
    making 8 for a total "within the day"), and the budgets add up exactly to it. A
    department named must be one of the step's agency in the registry."""
    p, steps = procedure, procedure.steps
    if not steps:
        if p.consultations:
            return [
                "field steps: the version has consultations, so its route needs a consult"
                " step, and none is listed"
            ]
        return []
    problems: list[str] = []
    n = len(steps)
    orders = [s.order for s in steps]
    if orders != list(range(1, n + 1)):
        problems.append(
            f"field steps: orders are {', '.join(map(str, orders))}, but they must run 1..{n}"
            " in sequence, one step to an order"
        )
    ends = {0: (StepKind.RECEIVE, "first"), n - 1: (StepKind.RETURN, "last")}
    for i, s in enumerate(steps):
        if i in ends:
            kind, which = ends[i]
            if s.kind is not kind:
                problems.append(
                    f"field steps.kind of step {s.order}: {s.kind.value}, but the {which} step is"
                    f" the {kind.value} step"
                )
            if s.agency_id != p.receiving_agency:
                problems.append(
                    f"field steps.agency_id of step {s.order}: {s.agency_id}, but the {kind.value}"
                    f" step is at the receiving agency {p.receiving_agency}"
                )
        elif s.kind not in _MIDDLE_KINDS:
            problems.append(
                f"field steps.kind of step {s.order}: {s.kind.value}, but only the first step"
                " receives and only the last returns"
            )
    approvals = [s for s in steps if s.kind is StepKind.APPROVE]
    if len(approvals) != 1:
        problems.append(
            f"field steps: {len(approvals)} approve steps"
            f"{' (' + ', '.join(f'step {s.order}' for s in approvals) + ')' if approvals else ''},"
            " but a route has exactly one"
        )
    for s in approvals:
        if s.agency_id != p.lead_agency:
            problems.append(
                f"field steps.agency_id of step {s.order}: {s.agency_id}, but the approve step is"
                f" the lead agency's ({p.lead_agency})"
            )
        if s.role.rank < ActingRole.DEPARTMENT_HEAD.rank:
            problems.append(
                f"field steps.role of step {s.order}: {s.role.value}, but an approval is signed by"
                " a department_head (where the law delegates) or the agency_head"
            )
    consults = [s for s in steps if s.kind is StepKind.CONSULT]
    if len(consults) > 1:
        problems.append(
            f"field steps: {len(consults)} consult steps"
            f" ({', '.join(f'step {s.order}' for s in consults)}), but one opinion round at most"
        )
    if p.consultations and not consults:
        problems.append(
            "field steps: the version has consultations but no consult step to wait for them"
        )
    if consults and not p.consultations:
        problems.append(
            f"field steps.kind of step {consults[0].order}: consult, but the version has no"
            " consultations"
        )
    for s in consults:
        if s.agency_id != p.lead_agency:
            problems.append(
                f"field steps.agency_id of step {s.order}: {s.agency_id}, but the opinion round is"
                f" the lead agency's ({p.lead_agency})"
            )
    for s in steps:
        if s.department is None or s.agency_id not in book.ids():
            continue
        agency = book.get(s.agency_id)
        if s.department not in {d.code for d in agency.departments}:
            known = ", ".join(d.code for d in agency.departments) or "none listed"
            problems.append(
                f"field steps.department of step {s.order}: {s.agency_id} has no department"
                f" {s.department!r} in the agency registry (its departments: {known})"
            )
    problems += _budget_problems(p)
    return problems


def _budget_problems(p: Procedure) -> list[str]:
    family = _family(p.processing_time)
    problems: list[str] = []
    for s in p.steps:
        d = s.duration
        field = f"field steps.duration of step {s.order}"
        if d.unit not in family.units:
            problems.append(
                f"{field}: unit {d.unit.value}, but processing_time is in"
                f" {p.processing_time.unit.value}: every step is in {_units(family)}"
            )
            continue
        if s.kind is StepKind.RECEIVE and d.value != 0:
            problems.append(
                f"{field}: {d.value} {d.unit.value}, but the receive step is done at receipt, its"
                " budget is 0"
            )
        elif s.kind is not StepKind.RECEIVE and d.value <= 0:
            problems.append(
                f"{field}: a budget of 0, but every step after receipt has a budget > 0"
            )
        if not d.legal_basis:
            problems.append(
                f"{field}: no legal_basis (the law's figure, or 'Phân bổ theo quy trình nội bộ"
                " trong thời hạn ...')"
            )
    if problems:
        return problems
    spent = sum(family.amount(s.duration) for s in p.steps)
    if spent != family.total:
        problems.append(
            f"field steps: budgets add up to {spent} {family.word}, processing_time is"
            f" {family.describe_total}"
        )
    return problems


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
    calendar: WorkingCalendar,
    appointment_at: datetime,
    paused_at: datetime,
    resumed_at: datetime,
    *,
    calendar_days: bool = False,
) -> tuple[int, datetime]:
    """Working seconds spent waiting for the applicant, and the appointment moved by the
    time waited (by the days waited where the period is in calendar days), as routing
    moves it (``WorkingCalendar.extend_pause``)."""
    paused = calendar.working_seconds_between(paused_at, resumed_at)
    moved = calendar.extend_pause(
        appointment_at, paused_at, resumed_at, calendar_days=calendar_days
    )
    return paused, moved


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
