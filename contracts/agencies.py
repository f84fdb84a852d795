"""The agencies the system knows, by their national code (QCVN 102:2016/BTTTT).

Reference data every service reads the same way: names, the body each belongs to (for
form headers), the head who answers for lateness, and whom that head answers to. Vertical
agencies (police, tax, social insurance) answer to their own line, not to the provincial
chairman, so escalation for them climbs their line. Every id names exactly one body.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from functools import cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.common import (
    AgencyId,
    Competence,
    CompetenceLevel,
    Office,
    OfficeHours,
    Procedure,
)
from contracts.envelope import NFCStr

AGENCIES_FILE = Path(__file__).parent / "reference" / "agencies.yaml"


class Line(StrEnum):
    """Whom an agency's head answers to."""

    LOCAL = "local"  # the People's Committee of its province or commune
    VERTICAL = "vertical"  # its own ministry's line (police, tax, social insurance)


class Province(BaseModel):
    """A level-1 unit: its name, the place on its documents, its office hours."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(pattern=r"^[A-Z][0-9]{2}$")
    name: NFCStr
    place: NFCStr = Field(description="Địa danh on documents of provincial bodies")
    office_hours: OfficeHours = OfficeHours()
    chairman: NFCStr = Field(description="Who coordinates local bodies, as addressed")
    chairman_agency: AgencyId
    source: NFCStr


class Department(BaseModel):
    """A department (phòng, ban, tổ) inside an agency: who acts on a step of a route."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(pattern=r"^[A-Z0-9][A-Z0-9_-]{0,39}$")
    name: NFCStr
    head: NFCStr | None = Field(default=None, description="Its head as addressed")


class Agency(BaseModel):
    """One body of the national code list."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: AgencyId
    name: NFCStr
    parent: AgencyId | None = Field(default=None, description="The body it belongs to")
    parent_name: NFCStr | None = Field(
        default=None, description="Tên cơ quan chủ quản on form headers, when not in the list"
    )
    level: CompetenceLevel
    line: Line = Line.LOCAL
    head: NFCStr = Field(description="Its head as addressed, e.g. Giám đốc Sở Xây dựng")
    superior: NFCStr | None = Field(
        default=None,
        description="Vertical agencies: the next rung above the head in their own line",
    )
    place: NFCStr | None = Field(default=None, description="Địa danh, if not the province's")
    phone: str | None = Field(default=None, max_length=20)
    desk: NFCStr | None = Field(
        default=None, description="Its one-stop desk (bộ phận tiếp nhận và trả kết quả)"
    )
    departments: tuple[Department, ...] = ()

    def department(self, code: str) -> Department:
        for d in self.departments:
            if d.code == code:
                return d
        raise AgencyError(f"agency {self.id} has no department {code}")

    @property
    def province(self) -> str:
        return self.id.rsplit(".", 1)[-1]

    @property
    def vertical(self) -> bool:
        return self.line is Line.VERTICAL

    @model_validator(mode="after")
    def _vertical_has_superior(self) -> Agency:
        if self.line is Line.VERTICAL and not self.superior:
            raise ValueError(f"{self.id}: a vertical agency names its superior")
        codes = [d.code for d in self.departments]
        if len(set(codes)) != len(codes):
            raise ValueError(f"{self.id}: a department code is listed twice")
        return self


class AgencyError(ValueError):
    pass


class BodyKind(StrEnum):
    """The kind of a commune's body: the key routing maps a catalogue step by, from the
    catalogue's default commune to the competent one (never by rewriting names)."""

    PEOPLE_COMMITTEE = "people_committee"  # Ủy ban nhân dân (its departments inside)
    SERVICE_CENTRE = "service_centre"  # Trung tâm Phục vụ hành chính công (one-stop desk)
    POLICE = "police"  # Công an xã, phường (vertical: Ministry of Public Security)
    ECONOMY = "economy"  # Phòng Kinh tế (Kinh tế, Hạ tầng và Đô thị), its own body


class Commune(BaseModel):
    """A commune-level unit (xã, phường, đặc khu) and its bodies, by kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{1,39}$", description="Its key in this book")
    name: NFCStr = Field(description="As a sentence names it, e.g. phường Sài Gòn")
    province: str = Field(pattern=r"^[A-Z][0-9]{2}$")
    bodies: dict[BodyKind, AgencyId]
    source: NFCStr

    @model_validator(mode="after")
    def _every_kind(self) -> Commune:
        missing = [k.value for k in BodyKind if k not in self.bodies]
        if missing:
            raise ValueError(f"commune {self.code} lacks bodies: {', '.join(missing)}")
        return self


class CompetenceError(AgencyError):
    """A locality the book does not know: the field it came in and a reason in Vietnamese
    (a desk officer reads it)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


# How a refusal names the field a locality came in.
_LOCALITY_LABEL = {
    "applicant.commune": "Xã, phường nơi cư trú của người nộp hồ sơ (applicant.commune)",
    "property_commune": "Xã, phường nơi có đất, tài sản (property_commune)",
}


class AgencyBook(BaseModel):
    """Every known agency and province; load once with ``AgencyBook.load()``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    provinces: tuple[Province, ...]
    agencies: tuple[Agency, ...]
    communes: tuple[Commune, ...] = ()

    @model_validator(mode="after")
    def _one_body_per_id(self) -> AgencyBook:
        seen: dict[str, str] = {}
        names: dict[str, str] = {}
        for a in self.agencies:
            if a.id in seen:
                raise ValueError(f"{a.id} names two bodies: {seen[a.id]!r} and {a.name!r}")
            if a.name in names:
                raise ValueError(f"{a.name!r} has two ids: {names[a.name]} and {a.id}")
            seen[a.id] = a.name
            names[a.name] = a.id
        codes = {p.code for p in self.provinces}
        for a in self.agencies:
            if a.province not in codes:
                raise ValueError(f"{a.id}: province {a.province} is not listed")
            if a.parent is not None and a.parent not in seen:
                raise ValueError(f"{a.id}: parent {a.parent} is not listed")
        levels = {a.id: a.level for a in self.agencies}
        keys: set[str] = set()
        owner: dict[str, str] = {}
        for c in self.communes:
            if c.code in keys:
                raise ValueError(f"commune {c.code} is listed twice")
            keys.add(c.code)
            if c.province not in codes:
                raise ValueError(f"commune {c.code}: province {c.province} is not listed")
            for kind, agency_id in c.bodies.items():
                if agency_id not in levels:
                    raise ValueError(f"commune {c.code}: {kind.value} {agency_id} is not listed")
                if levels[agency_id] is not CompetenceLevel.COMMUNE:
                    raise ValueError(f"commune {c.code}: {agency_id} is not a commune body")
                if agency_id in owner:
                    raise ValueError(f"{agency_id} belongs to {owner[agency_id]} and {c.code}")
                owner[agency_id] = c.code
        # routing maps a step to the same kind of body and department in the competent
        # commune: every commune's body of a kind has the same departments
        by_id = {a.id: a for a in self.agencies}
        for kind in BodyKind:
            shapes = {
                c.code: frozenset(d.code for d in by_id[c.bodies[kind]].departments)
                for c in self.communes
            }
            if len(set(shapes.values())) > 1:
                first = next(iter(shapes))
                odd = [k for k, v in shapes.items() if v != shapes[first]]
                raise ValueError(
                    f"communes' {kind.value} bodies differ in departments: {first} vs {odd}"
                )
        return self

    @classmethod
    def load(cls, path: Path | str = AGENCIES_FILE) -> AgencyBook:
        try:
            return cls.model_validate(yaml.safe_load(Path(path).read_text("utf-8")))
        except ValidationError as exc:
            e = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in e["loc"]) or "top level"
            raise AgencyError(f"{Path(path).name}: {where}: {e['msg']}") from exc

    def get(self, agency_id: str) -> Agency:
        for a in self.agencies:
            if a.id == agency_id:
                return a
        raise AgencyError(f"agency {agency_id} is not in the agency list")

    def province(self, code: str) -> Province:
        for p in self.provinces:
            if p.code == code:
                return p
        raise AgencyError(f"province {code} is not in the agency list")

    def ids(self) -> frozenset[str]:
        return frozenset(a.id for a in self.agencies)

    def has_desk(self, agency_id: str) -> bool:
        """Whether the agency keeps a one-stop desk, so it may receive any procedure's
        dossier and forward it (routing moves the receive and return steps to it)."""
        return any(a.id == agency_id and a.desk is not None for a in self.agencies)

    def desks(self, level: CompetenceLevel | None = None) -> list[str]:
        """The agencies with a one-stop desk, of one level if given."""
        return sorted(
            a.id for a in self.agencies if a.desk is not None and level in (None, a.level)
        )

    def parent_name(self, agency_id: str) -> str:
        """Tên cơ quan chủ quản: the body the agency belongs to, for form headers."""
        a = self.get(agency_id)
        if a.parent is not None:
            return self.get(a.parent).name
        return a.parent_name or self.province(a.province).name

    def place(self, agency_id: str) -> str:
        a = self.get(agency_id)
        return a.place or self.province(a.province).place

    def office(self, agency_id: str) -> Office:
        """How forms name an agency: the body it belongs to, itself, its desk, the place
        name of its documents and its phone."""
        a = self.get(agency_id)
        return Office(
            parent_name=self.parent_name(agency_id),
            name=a.name,
            desk=a.desk,
            place=self.place(agency_id),
            phone=a.phone,
        )

    def office_hours(self, agency_id: str) -> OfficeHours:
        return self.province(self.get(agency_id).province).office_hours

    # --- territorial competence ----------------------------------------------------------

    def commune(self, code: str, field: str = "applicant.commune") -> Commune:
        """The commune of a key; a key the book does not know is refused, naming the field."""
        for c in self.communes:
            if c.code == code:
                return c
        label = _LOCALITY_LABEL.get(field, field)
        raise CompetenceError(
            field,
            f"{label}: mã xã, phường {code!r} không có trong danh mục đơn vị hành chính cấp"
            " xã của hệ thống; đề nghị ghi đúng xã, phường theo đơn vị hành chính sau sắp xếp",
        )

    def commune_of(self, agency_id: str) -> tuple[Commune, BodyKind] | None:
        """The commune a body belongs to, and its kind; none for any other agency."""
        for c in self.communes:
            for kind, body in c.bodies.items():
                if body == agency_id:
                    return c, kind
        return None

    def competent_commune(
        self,
        p: Procedure,
        receiving: str | None,
        residence: str | None = None,
        property_: str | None = None,
    ) -> Commune | None:
        """Which commune decides a dossier of ``p``: the applicant's (``residence``), the
        land's (``property_``) or the receiving one, as the catalogue says; none when the
        procedure is not a commune one with a competence (its agencies stand). A locality
        not given falls back on the receiving commune (the desk knows no better), then on
        the catalogue's own; one the book does not know is refused (``CompetenceError``)."""
        if p.level is not CompetenceLevel.COMMUNE or p.competence is None:
            return None
        given = {
            Competence.RESIDENCE: ("applicant.commune", residence),
            Competence.PROPERTY: ("property_commune", property_),
            Competence.RECEIVING: ("", None),
        }[p.competence]
        if given[1] is not None:
            return self.commune(given[1], given[0])
        here = self.commune_of(receiving) if receiving else None
        if here is not None:
            return here[0]
        default = self.commune_of(p.lead_agency)
        return default[0] if default else None

    def localize(self, agency_id: str, commune: Commune) -> str:
        """The body of ``commune`` of the same kind as ``agency_id``, when that is a
        commune body; any other agency (the city's, a vertical one above the commune)
        stays."""
        mine = self.commune_of(agency_id)
        if mine is None:
            return agency_id
        return commune.bodies[mine[1]]

    def check(self, pairs: Iterable[tuple[str, str]]) -> list[str]:
        """Each (id, name) as another file names it: the problems, if any."""
        problems = []
        for agency_id, name in pairs:
            try:
                known = self.get(agency_id).name
            except AgencyError as exc:
                problems.append(str(exc))
                continue
            if known != name:
                problems.append(f"{agency_id} is {known!r}, not {name!r}")
        return problems


@cache
def default_book() -> AgencyBook:
    return AgencyBook.load()
