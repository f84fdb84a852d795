"""Value types shared by events and API payloads."""

from __future__ import annotations

import re
from datetime import date
from enum import IntEnum, StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from contracts.envelope import DOSSIER_CODE_PATTERN, NFCStr
from contracts.text import Email, Text, Token

# QCVN 102:2016/BTTTT: four groups, the last (a letter and two digits) naming the level-1
# body, e.g. H29 for Hồ Chí Minh City; the whole id is 13 characters.
AGENCY_ID_PATTERN = r"^[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}$"
AgencyId = Annotated[
    str,
    Field(
        pattern=AGENCY_ID_PATTERN,
        max_length=13,
        description="National code list id (QCVN 102:2016), e.g. 000.00.01.H22",
    ),
]
DossierCode = Annotated[
    str,
    Field(
        pattern=DOSSIER_CODE_PATTERN,
        max_length=26,
        description="<agency id>-<YYMMDD>-<NNNN>; the serial widens to 5 digits past 9,999",
    ),
]

# Limits of the fields a caller sends, chosen as an official would expect them.
PersonName = Annotated[str, Text(200, min_length=2)]
Address = Annotated[str, Text(500)]
Line = Annotated[str, Text(300)]
Paragraph = Annotated[str, Text(2000, multiline=True)]
LongParagraph = Annotated[str, Text(5000, multiline=True)]
EmailAddress = Annotated[str, Email()]
ProcedureCode = Annotated[
    str, Token(r"[0-9A-Za-z][0-9A-Za-z._-]*", 40, "a procedure code (mã TTHC), e.g. 1.009972")
]
DocumentCode = Annotated[
    str, Token(r"[0-9A-Za-z][0-9A-Za-z._-]*", 40, "a document code of letters, digits, . _ -")
]
DocumentUrl = Annotated[
    str, Token(r"[\x21-\x7e]+", 2000, "a URL or path of printable ASCII without spaces")
]
MAX_DOCUMENTS = 50
"""Documents one dossier or supplement may list (procedures require up to a dozen)."""


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


ID_NUMBER_RULES: dict[bool, str] = {
    # ASCII digits only (``\d`` would take any script's digits)
    False: r"[0-9]{12}|[0-9]{9}",  # citizen: CCCD, old CMND
    True: r"[0-9]{10}(?:-[0-9]{3})?|[0-9]{13}",  # organisation: tax code, branch tax code
}

_PHONE = re.compile(r"^(?:0|\+84)(?:3|5|7|8|9|2[0-9])[0-9]{8}$")


def _phone(value: str) -> str:
    if len(value) > 20:  # separators are skipped below, so bound the raw field first
        raise ValueError("a phone number has at most 20 characters")
    compact = re.sub(r"[ .\-()]", "", value)
    if not _PHONE.match(compact):
        raise ValueError("not a Vietnamese phone number (0xxxxxxxxx or +84xxxxxxxxx)")
    return "0" + compact[3:] if compact.startswith("+84") else compact


Phone = Annotated[str, AfterValidator(_phone)]


class Applicant(BaseModel):
    """The person or organisation the dossier belongs to (chủ hồ sơ)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: PersonName
    object_type: ObjectType = ObjectType.CITIZEN
    id_number: str = Field(
        max_length=14,
        description="Citizen: CCCD of 12 digits or old CMND of 9. Organisation: tax code of"
        " 10 digits, or 10-3 for a branch (0101234567-001; 13 digits without the dash).",
    )
    phone: Phone | None = None
    email: EmailAddress | None = None
    address: Address | None = None
    birth_date: date | None = None

    @field_validator("id_number")
    @classmethod
    def _id_matches_type(cls, value: str, info: ValidationInfo) -> str:
        """The rule counts the whole field: no padding, spaces or stray dashes pass."""
        org = info.data.get("object_type") is ObjectType.ORGANISATION
        pattern = ID_NUMBER_RULES[org]
        if not re.fullmatch(pattern, value):
            raise PydanticCustomError(
                "id_number_format",
                "a tax code is 10 digits, or 10 digits, a dash and 3 (a branch)"
                if org
                else "an ID number is 12 digits (CCCD) or 9 (old CMND), digits only",
            )
        return value


class DocumentRef(BaseModel):
    """A document handed in with a dossier (thành phần hồ sơ)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: DocumentCode
    name: Line | None = None
    copies: int = Field(default=1, ge=1, le=100)
    url: DocumentUrl | None = None


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
