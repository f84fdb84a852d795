"""Value types shared by events and API payloads."""

from __future__ import annotations

import re
from datetime import date, time
from enum import IntEnum, StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
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
    """How the law states a period; each is counted its own way (see ``WorkingCalendar``)."""

    WORKING_DAYS = "working_days"
    """"ngày làm việc": Monday to Friday minus holidays, plus swapped-in Saturdays."""
    WORKING_HOURS = "working_hours"
    """"giờ làm việc": office hours only, 8 to a working day."""
    CALENDAR_DAYS = "calendar_days"
    """"ngày" where the law says days: counted as the Civil Code 2015 counts a period
    (Art. 147: it starts the next day; Art. 148(5): one whose last day is a day off ends at
    the end of the next working day)."""
    WITHIN_THE_DAY = "within_the_day"
    """"trong ngày": returned by the close of the day of receipt; a dossier received after
    the cut-off is returned by the close of the next working day. ``value`` is 0."""


class Duration(BaseModel):
    """A period as the law states it, and where the figure comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: int = Field(ge=0, le=3650)
    unit: TimeUnit = TimeUnit.WORKING_DAYS
    legal_basis: NFCStr | None = Field(
        default=None, max_length=500, description="The text and article the figure comes from"
    )

    @model_validator(mode="after")
    def _within_the_day_has_no_count(self) -> Duration:
        if self.unit is TimeUnit.WITHIN_THE_DAY and self.value != 0:
            raise ValueError("a period 'within_the_day' has value 0")
        return self

    @property
    def hours(self) -> int:
        """Nominal working hours (8 to a day); exact only for working days and hours."""
        if self.unit is TimeUnit.WORKING_HOURS:
            return self.value
        if self.unit is TimeUnit.WITHIN_THE_DAY:
            return 8
        return self.value * 8

    def describe(self) -> str:
        """The period as an official writes it: "05 ngày làm việc", "trong ngày"."""
        if self.unit is TimeUnit.WITHIN_THE_DAY:
            return "trong ngày"
        word = {
            TimeUnit.WORKING_DAYS: "ngày làm việc",
            TimeUnit.WORKING_HOURS: "giờ làm việc",
            TimeUnit.CALENDAR_DAYS: "ngày",
        }[self.unit]
        return f"{self.value:02d} {word}"


class OfficeHours(BaseModel):
    """When a desk works, and the cut-off after which a receipt counts from the next
    working day. Set per province (``agencies.yaml``) and, where a procedure differs, per
    procedure."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    periods: tuple[tuple[time, time], ...] = Field(
        default=((time(8, 0), time(12, 0)), (time(13, 0), time(17, 0))), min_length=1
    )
    cutoff: time = time(15, 0)
    legal_basis: NFCStr | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _ordered(self) -> OfficeHours:
        last: time | None = None
        for start, end in self.periods:
            if not start < end or (last is not None and start < last):
                raise ValueError("office periods must be ordered and not overlap")
            last = end
        if not self.periods[0][0] <= self.cutoff <= self.periods[-1][1]:
            raise ValueError("the cut-off must fall within the office day")
        return self

    @property
    def working_seconds_per_day(self) -> int:
        return sum(
            (e.hour * 3600 + e.minute * 60) - (s.hour * 3600 + s.minute * 60)
            for s, e in self.periods
        )


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
    portal_account: (
        Annotated[str, Token(r"[\x21-\x7e]+", 60, "a portal account id of printable ASCII")] | None
    ) = Field(
        default=None,
        description="The applicant's National Public Service Portal account (MaDoiTuong)",
    )

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


class ReturnMethod(StrEnum):
    """How the applicant asked to receive the result (Form 01, item "Đăng ký nhận kết quả tại")."""

    AT_DESK = "at_desk"
    POST = "post"
    ONLINE = "online"

    @property
    def label(self) -> str:
        return {
            ReturnMethod.AT_DESK: "Bộ phận tiếp nhận và trả kết quả",
            ReturnMethod.POST: "Qua dịch vụ bưu chính công ích",
            ReturnMethod.ONLINE: "Trực tuyến (Cổng Dịch vụ công quốc gia)",
        }[self]


class Office(BaseModel):
    """Who speaks on a form: the body it belongs to (cơ quan chủ quản), the agency, its
    one-stop desk, the place name of its documents and a phone for questions."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    parent_name: NFCStr
    name: NFCStr
    desk: NFCStr | None = None
    place: NFCStr
    phone: str | None = Field(default=None, max_length=20)


class SupplementStage(StrEnum):
    """Where a Form 02 comes from: the desk before receipt (the clock has not started), or
    the agency during processing (the one request the law allows; the clock pauses)."""

    DESK = "desk"
    PROCESSING = "processing"


class RequiredDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(min_length=1, max_length=40)
    name: NFCStr
    mandatory: bool = True


class MissingItem(BaseModel):
    """One line of Form 02: what must be supplemented or completed, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(min_length=1, max_length=40)
    name: NFCStr
    reason: NFCStr = Field(min_length=1, max_length=2000)


class Fee(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: NFCStr
    amount_vnd: int | None = Field(
        default=None, ge=0, description="None where the amount is set elsewhere (legal_basis)"
    )
    legal_basis: NFCStr = Field(min_length=3, description="The text setting the amount")


class Consulted(BaseModel):
    """An agency whose opinion an interconnected procedure needs, and the request template.

    Only opinions: work that produces a result (a tax code, a card, a residence entry) is a
    ``Step``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agency_id: AgencyId
    agency_name: NFCStr
    template_id: str = Field(min_length=1)


class StepKind(StrEnum):
    """What a step of a dossier's route is, and so how it ends."""

    RECEIVE = "receive"
    """At the one-stop desk: done at receipt (Form 01), then handed to the next step."""
    ASSIGN = "assign"
    """The lead agency's head assigns the dossier to a department or an officer."""
    APPRAISE = "appraise"
    """An officer examines the dossier (thẩm định) and completes the step."""
    CONSULT = "consult"
    """A parallel opinion round (lấy ý kiến): opens by itself, ends when every opinion is in."""
    WORK = "work"
    """An agency does its own part with its own result (liên thông) and hands the dossier on."""
    APPROVE = "approve"
    """The competent person decides: approves with the result documents, or refuses."""
    RETURN = "return"
    """The desk receives the result, tells the applicant it is ready, and returns it."""


class ActingRole(StrEnum):
    """Who acts on a step; a higher role may act for a lower one."""

    OFFICER = "officer"
    DEPARTMENT_HEAD = "department_head"
    AGENCY_HEAD = "agency_head"

    @property
    def rank(self) -> int:
        return {"officer": 1, "department_head": 2, "agency_head": 3}[self.value]


class Step(BaseModel):
    """One step of a procedure's route: who does it (agency, department, role), what it is,
    its time budget and, for a part of the work, the result it hands on.

    The budgets of a version's steps add up to its legal processing time (the catalogue
    loader refuses a version where they do not); each budget's ``legal_basis`` says whether
    it is a figure of law or the internal allocation of the procedure's process."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    order: int = Field(ge=1)
    kind: StepKind = StepKind.WORK
    agency_id: AgencyId
    department: str | None = Field(
        default=None,
        max_length=40,
        description="Code of the department (phòng, ban) of the agency that acts, from the"
        " agency registry; none when the agency acts as a whole",
    )
    role: ActingRole = Field(default=ActingRole.OFFICER, description="Who acts on the step")
    action: NFCStr
    duration: Duration
    produces: NFCStr | None = Field(default=None, description="The result the step hands on")


class DossierStatus(StrEnum):
    """Where a dossier is, in every service; ``portal`` is the national portal's code."""

    RECEIVED = "received"
    NOT_RECEIVED = "not_received"
    PROCESSING = "processing"
    WAITING_SUPPLEMENT = "waiting_supplement"
    WAITING_FEE = "waiting_fee"
    WITHDRAWN = "withdrawn"
    STOPPED = "stopped"
    RESULT_READY = "result_ready"
    REFUSED = "refused"
    RETURNED = "returned"

    @property
    def portal(self) -> PortalStatus:
        """TrangThaiHoSo. A refusal after appraisal is a result (the written refusal with
        reasons): the dossier is "processed" (9) and then "returned" (10) like any other;
        only a refusal at the desk is "not received" (3)."""
        return _PORTAL[self]

    @property
    def final(self) -> bool:
        return self in _FINAL

    @property
    def paused(self) -> bool:
        """The clock stops while waiting for the applicant."""
        return self in (DossierStatus.WAITING_SUPPLEMENT, DossierStatus.WAITING_FEE)


_PORTAL = {
    DossierStatus.RECEIVED: PortalStatus.RECEIVED,
    DossierStatus.NOT_RECEIVED: PortalStatus.NOT_RECEIVED,
    DossierStatus.PROCESSING: PortalStatus.PROCESSING,
    DossierStatus.WAITING_SUPPLEMENT: PortalStatus.SUPPLEMENT_REQUESTED,
    DossierStatus.WAITING_FEE: PortalStatus.FEE_REQUESTED,
    DossierStatus.WITHDRAWN: PortalStatus.WITHDRAWN,
    DossierStatus.STOPPED: PortalStatus.STOPPED,
    DossierStatus.RESULT_READY: PortalStatus.PROCESSED,
    DossierStatus.REFUSED: PortalStatus.PROCESSED,
    DossierStatus.RETURNED: PortalStatus.RESULT_RETURNED,
}
_FINAL = frozenset(
    {
        DossierStatus.NOT_RECEIVED,
        DossierStatus.WITHDRAWN,
        DossierStatus.STOPPED,
        DossierStatus.RETURNED,
    }
)


class Timeliness(StrEnum):
    """How a dossier or a step finished against its deadline (Form 05: trước hạn / đúng
    hạn / quá hạn). Early: on a day before the deadline's day; on time: on that day, at or
    before the deadline; late: after it."""

    EARLY = "early"
    ON_TIME = "on_time"
    LATE = "late"

    @property
    def label(self) -> str:
        return {"early": "Trước hạn", "on_time": "Đúng hạn", "late": "Quá hạn"}[self.value]


class CompetenceLevel(StrEnum):
    """Who decides, after 1 July 2025: two levels of local government, or a central body."""

    CENTRAL = "central"
    PROVINCE = "province"
    COMMUNE = "commune"


FIELD_CODE_MAX = 20


def _field_code(value: str | None) -> str | None:
    if value is not None and re.fullmatch(r"G[0-9]{2}", value):
        raise ValueError(f"{value!r} is a ministry group, not a field code of the national list")
    return value


class Procedure(BaseModel):
    """One version of a catalogue entry (thủ tục hành chính), each figure with its source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(min_length=3, max_length=40, description="Mã TTHC (national database)")
    version: int = Field(ge=1)
    effective_from: date
    name: NFCStr = Field(min_length=3)
    field: NFCStr = Field(description="Lĩnh vực")
    field_code: Annotated[str | None, AfterValidator(_field_code)] = Field(
        default=None,
        max_length=FIELD_CODE_MAX,
        description="Field code of the national list; left empty until verified",
    )
    legal_basis: NFCStr = Field(
        default="", description="The texts that set the procedure (and publish it)"
    )
    level: CompetenceLevel = CompetenceLevel.PROVINCE
    group: NFCStr | None = Field(
        default=None, description="A liên thông group fixed by decree (e.g. Decree 63/2024)"
    )
    required_documents: tuple[RequiredDocument, ...] = ()
    fees: tuple[Fee, ...] = ()
    processing_time: Duration
    processing_time_with_verification: Duration | None = Field(
        default=None, description="The longer time the law allows where verification is needed"
    )
    office_hours: OfficeHours | None = Field(
        default=None, description="Where the procedure differs from the province's office hours"
    )
    receiving_agency: AgencyId
    receiving_agency_name: NFCStr
    lead_agency: AgencyId
    lead_agency_name: NFCStr
    eligible_object_types: tuple[ObjectType, ...] = (ObjectType.CITIZEN, ObjectType.ORGANISATION)
    consultations: tuple[Consulted, ...] = ()
    steps: tuple[Step, ...] = ()

    @property
    def interconnected(self) -> bool:
        """Opinions of other agencies, or parts of the work done by more than one agency
        (the desk's receipt and return do not make a procedure liên thông)."""
        desk = (StepKind.RECEIVE, StepKind.RETURN)
        workers = {s.agency_id for s in self.steps if s.kind not in desk}
        return bool(self.consultations) or len(workers) > 1

    @property
    def province(self) -> str:
        """The level-1 code (last group of the id) of the receiving agency, e.g. H29."""
        return self.receiving_agency.rsplit(".", 1)[-1]
