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

from contracts.common import AgencyId, CompetenceLevel, Office, OfficeHours
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


class AgencyBook(BaseModel):
    """Every known agency and province; load once with ``AgencyBook.load()``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    provinces: tuple[Province, ...]
    agencies: tuple[Agency, ...]

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
