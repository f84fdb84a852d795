"""Value types shared by events and API payloads."""

from __future__ import annotations

import re
from datetime import date
from enum import IntEnum, StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from contracts.envelope import NFCStr

AGENCY_ID_PATTERN = r"^\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}$"
AgencyId = Annotated[
    str,
    Field(pattern=AGENCY_ID_PATTERN, description="National code list id, e.g. 000.00.01.H22"),
]
DossierCode = Annotated[
    str,
    Field(
        pattern=r"^\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}-\d{6}-\d{4}$",
        description="<agency id>-<YYMMDD>-<NNNN>",
    ),
]


class Channel(IntEnum):
    """Submission channel (KenhThucHien)."""

    IN_PERSON = 1
    ONLINE = 2
    POST = 3


class ObjectType(IntEnum):
    """Applicant type (LoaiDoiTuong): 1 citizen, 2 organisation or business."""

    CITIZEN = 1
    ORGANISATION = 2


class PortalStatus(IntEnum):
    """National portal status codes (TrangThaiHoSo)."""

    NEW = 1
    RECEIVED = 2
    NOT_RECEIVED = 3
    PROCESSING = 4
    SUPPLEMENT_REQUESTED = 5
    FEE_REQUESTED = 6
    WITHDRAWN = 7
    STOPPED = 8
    PROCESSED = 9
    RESULT_RETURNED = 10


class TimeUnit(StrEnum):
    WORKING_DAYS = "working_days"
    WORKING_HOURS = "working_hours"


class Duration(BaseModel):
    """A period in working days or working hours (8 working hours to a day)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: int = Field(ge=0, le=3650)
    unit: TimeUnit = TimeUnit.WORKING_DAYS

    @property
    def hours(self) -> int:
        return self.value * 8 if self.unit is TimeUnit.WORKING_DAYS else self.value


_PHONE = re.compile(r"^(?:0|\+84)(?:3|5|7|8|9|2\d)\d{8}$")


def _phone(value: str) -> str:
    compact = re.sub(r"[\s.\-()]", "", value)
    if not _PHONE.match(compact):
        raise ValueError("not a Vietnamese phone number (0xxxxxxxxx or +84xxxxxxxxx)")
    return "0" + compact[3:] if compact.startswith("+84") else compact


Phone = Annotated[str, AfterValidator(_phone)]


class Applicant(BaseModel):
    """The person or organisation the dossier belongs to (chủ hồ sơ)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: NFCStr = Field(min_length=2, max_length=200)
    object_type: ObjectType = ObjectType.CITIZEN
    id_number: str = Field(
        description="Citizen: 9 or 12-digit ID number. Organisation: 10 or 13-digit tax code."
    )
    phone: Phone | None = None
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    address: NFCStr | None = Field(default=None, max_length=500)
    birth_date: date | None = None

    @model_validator(mode="after")
    def _id_matches_type(self) -> Applicant:
        digits = self.id_number.replace("-", "")
        if not digits.isdigit():
            raise ValueError("id_number: digits only")
        allowed = (9, 12) if self.object_type is ObjectType.CITIZEN else (10, 13)
        if len(digits) not in allowed:
            kind = "ID number" if self.object_type is ObjectType.CITIZEN else "tax code"
            raise ValueError(f"id_number: a {kind} has {' or '.join(map(str, allowed))} digits")
        if not self.name.strip():
            raise ValueError("name: must not be blank")
        return self


class DocumentRef(BaseModel):
    """A document handed in with a dossier (thành phần hồ sơ)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(min_length=1, max_length=40)
    name: NFCStr | None = Field(default=None, max_length=300)
    copies: int = Field(default=1, ge=1, le=100)
    url: str | None = Field(default=None, max_length=2000)


class RequiredDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(min_length=1, max_length=40)
    name: NFCStr
    mandatory: bool = True


class Fee(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: NFCStr
    amount_vnd: int = Field(ge=0)


class Consulted(BaseModel):
    """An agency whose opinion an interconnected procedure needs, and the request template."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agency_id: AgencyId
    agency_name: NFCStr
    template_id: str = Field(min_length=1)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    order: int = Field(ge=1)
    agency_id: AgencyId
    action: NFCStr
    duration: Duration


class Procedure(BaseModel):
    """One version of a catalogue entry (thủ tục hành chính)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(min_length=3, max_length=40, description="Mã TTHC")
    version: int = Field(ge=1)
    effective_from: date
    name: NFCStr = Field(min_length=3)
    field: NFCStr = Field(description="Lĩnh vực")
    field_code: str | None = None
    required_documents: tuple[RequiredDocument, ...] = ()
    fees: tuple[Fee, ...] = ()
    processing_time: Duration
    receiving_agency: AgencyId
    receiving_agency_name: NFCStr
    lead_agency: AgencyId
    lead_agency_name: NFCStr
    eligible_object_types: tuple[ObjectType, ...] = (ObjectType.CITIZEN, ObjectType.ORGANISATION)
    consultations: tuple[Consulted, ...] = ()
    steps: tuple[Step, ...] = ()

    @property
    def interconnected(self) -> bool:
        return bool(self.consultations) or len({s.agency_id for s in self.steps}) > 1
