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
# A commune (xã, phường, đặc khu) by its key in the agency book
# (contracts/reference/agencies.yaml, ``communes``), e.g. SAI_GON for phường Sài Gòn.
CommuneCode = Annotated[
    str, Token(r"[A-Z][A-Z0-9_]{1,39}", 40, "a commune key of the agency book, e.g. SAI_GON")
]
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


class AfterCutoff(StrEnum):
    """Whether a period in days also starts a day later for a receipt after the cut-off.

    The 15:00 cut-off of the one-stop rules governs the transfer of the dossier: one
    received after 15:00 is handed to the deciding agency at the start of the next working
    day (Decree 61/2018/NĐ-CP, Art. 18(2)-(3), in force 21/6/2018, as read in the official
    codification; Decree 118/2025/NĐ-CP, which replaced it from 1/7/2025, keeps a transfer
    rule whose article could not be read from a public source). Neither text moves the
    start of a period: a period in days is counted by the Civil Code 2015, Art. 147(2) (the
    day of receipt is not counted, the period starts the next day) and Art. 148(5) (a last
    day off moves to the next working day). So the default is ``SAME_DAY``: N working days
    are counted from the calendar date of receipt whatever the hour. A province whose own
    rule says a late receipt counts from the next working day sets ``NEXT_DAY`` in its
    office hours (``contracts/reference/agencies.yaml``), citing that rule."""

    SAME_DAY = "same_day"
    """Counted from the calendar date of receipt (Civil Code 2015, Art. 147(2))."""
    NEXT_DAY = "next_day"
    """Receipt deemed made on the next working day, and the period counted from that day."""


class OfficeHours(BaseModel):
    """When a desk works, and the cut-off after which a receipt counts from the next
    working day. Set per province (``agencies.yaml``) and, where a procedure differs, per
    procedure."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    periods: tuple[tuple[time, time], ...] = Field(
        default=((time(8, 0), time(12, 0)), (time(13, 0), time(17, 0))), min_length=1
    )
    cutoff: time = time(15, 0)
    after_cutoff: AfterCutoff = Field(
        default=AfterCutoff.SAME_DAY,
        description="Whether a period in days received after the cut-off (or on a day off)"
        " also starts a day later: same_day (the default the governing texts give) or"
        " next_day (a province's own rule)",
    )
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
    commune: CommuneCode | None = Field(
        default=None,
        description="The commune (ward) of residence, or an organisation's seat, by its key"
        " in the agency book: where a residence-bound procedure is decided",
    )
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


class FeeKind(StrEnum):
    """Phí or lệ phí: the Law on Fees and Charges 2015 (Luật Phí và lệ phí số 97/2015/QH13),
    Art. 3(1)-(2): phí recovers the cost of a public service (Annex 1, Danh mục phí); lệ
    phí is collected for a State management service (Annex 2, Danh mục lệ phí: civil
    status, building permits, land certificates, business registration are lệ phí there;
    the item numbers within the annex were not confirmed from a public source here). Each
    catalogue fee takes the kind of its name in those annexes. ``portal`` is the portal's
    LoaiPhiLePhi: "1" phí, "2" lệ phí, as issue 23 reads OpenCPS; OpenCPS itself only ever
    sends 2 (KeypayDVCQGUtils, PayGateIntegrationActionImpl, marked "????") and publishes no
    code list, so the mapping could not be confirmed from a public source."""

    FEE = "phi"
    CHARGE = "le_phi"

    @property
    def portal(self) -> str:
        return "1" if self is FeeKind.FEE else "2"


class Fee(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: NFCStr
    kind: FeeKind = Field(
        default=FeeKind.FEE,
        description="Phí or lệ phí (Law on Fees and Charges 2015, Art. 3 and its annexes)",
    )
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

    @property
    def label(self) -> str:
        return _STEP_KIND_LABEL[self.value]


_STEP_KIND_LABEL = {
    "receive": "tiếp nhận",
    "assign": "phân công",
    "appraise": "thẩm định",
    "consult": "lấy ý kiến",
    "work": "thực hiện phần việc",
    "approve": "phê duyệt",
    "return": "trả kết quả",
}


class ActingRole(StrEnum):
    """Who acts on a step; a higher role may act for a lower one."""

    OFFICER = "officer"
    DEPARTMENT_HEAD = "department_head"
    AGENCY_HEAD = "agency_head"

    @property
    def rank(self) -> int:
        return {"officer": 1, "department_head": 2, "agency_head": 3}[self.value]

    @property
    def label(self) -> str:
        """How an official names the role (in refusals and on screens)."""
        return {
            "officer": "công chức, viên chức xử lý",
            "department_head": "người đứng đầu phòng, ban",
            "agency_head": "người đứng đầu cơ quan",
        }[self.value]


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

    REGISTERED = "registered"
    """Registered, not yet received (portal 1, mới đăng ký): an incomplete dossier at the desk
    waiting for what is missing (Form 02 at reception: the clock has not started), or one
    from the portal awaiting receipt."""
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

    @property
    def label(self) -> str:
        """The state as an official names it."""
        return _STATUS_LABEL[self.value]


_STATUS_LABEL = {
    "registered": "mới đăng ký, chưa tiếp nhận",
    "received": "đã tiếp nhận",
    "not_received": "không được tiếp nhận",
    "processing": "đang xử lý",
    "waiting_supplement": "chờ bổ sung hồ sơ",
    "waiting_fee": "chờ thực hiện nghĩa vụ tài chính",
    "withdrawn": "đã rút hồ sơ",
    "stopped": "đã dừng xử lý",
    "result_ready": "đã có kết quả",
    "refused": "đã có văn bản từ chối giải quyết",
    "returned": "đã trả kết quả",
}


_PORTAL = {
    DossierStatus.REGISTERED: PortalStatus.NEW,
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


class Competence(StrEnum):
    """Which commune decides a commune-level dossier (thẩm quyền theo địa bàn)."""

    RESIDENCE = "residence"
    """The commune of the applicant's residence (e.g. birth registration: Law on Civil
    Status 2014, Art. 13)."""
    PROPERTY = "property"
    """The commune where the land, the building or the business seat lies."""
    RECEIVING = "receiving"
    """The commune that received it: a procedure done regardless of administrative
    boundaries (không phụ thuộc vào địa giới hành chính, Decree 118/2025/NĐ-CP)."""


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
    competence: Competence | None = Field(
        default=None,
        description="Commune level: which commune decides (residence, property or"
        " receiving); none keeps the catalogue's agencies",
    )
    competence_basis: NFCStr = Field(
        default="", description="The article that sets the territorial competence"
    )
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

    @model_validator(mode="after")
    def _competence_has_basis(self) -> Procedure:
        if self.competence is not None and not self.competence_basis.strip():
            raise ValueError("a territorial competence names its legal basis")
        return self

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
