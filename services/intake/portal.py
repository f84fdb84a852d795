"""The National Public Service Portal (DVCQG) adapter: its payloads to ours and back.

No official public specification was found; field names follow the open-source clients
(domain.md). Times are ``yyyyMMddHHmmss`` in Asia/Ho_Chi_Minh. Keep the whole mapping here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.api import DossierAccepted, SubmitDossier
from contracts.common import (
    MAX_DOCUMENTS,
    Address,
    Channel,
    DocumentCode,
    DocumentUrl,
    EmailAddress,
    Line,
    ObjectType,
    Paragraph,
    PersonName,
    ProcedureCode,
)
from contracts.text import Text, Token
from services.intake.desk import PORTAL_KEY_PREFIX
from services.runtime.calendar import VN_TZ

PORTAL_TIME = "%Y%m%d%H%M%S"


def parse_portal_time(value: str) -> datetime:
    try:
        return datetime.strptime(value, PORTAL_TIME).replace(tzinfo=VN_TZ)
    except ValueError:
        raise ValueError("expected yyyyMMddHHmmss, e.g. 20251124093000") from None


def format_portal_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(VN_TZ).strftime(PORTAL_TIME)


Ref = Annotated[str, Token(r"[\x21-\x7e]+", 60, "a reference of printable ASCII")]

# The portal sends a procedure's code as the province published it: the national code, then
# the implementing agency's id (1.001612.000.00.00.H48). The catalogue knows national codes.
_MATTHC = re.compile(
    r"(?P<code>[0-9]\.[0-9]{6})(?:\.(?P<agency>[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}))?"
)


def national_procedure_code(value: str) -> str:
    """``1.001612.000.00.00.H48`` → ``1.001612``; any other code is returned unchanged."""
    m = _MATTHC.fullmatch(value)
    return m["code"] if m else value


Code = Annotated[str, Token(r"[0-9A-Za-z][0-9A-Za-z._-]*", 40, "a code of letters and digits")]
PortalTime = Annotated[str, Token(r"[0-9]{14}", 14, "yyyyMMddHHmmss, e.g. 20251124093000")]


class TaiLieu(BaseModel):
    """A document handed in through the portal (TaiLieuNop item)."""

    model_config = ConfigDict(extra="ignore")
    MaThanhPhanHoSo: DocumentCode
    TenTepDinhKem: Line | None = None
    DuongDanTaiTepTin: DocumentUrl | None = None


class PortalDossier(BaseModel):
    """DongBoHoSoMC-style payload as the portal sends it, with the desk's limits."""

    model_config = ConfigDict(extra="ignore")
    MaHoSo: Ref = Field(description="Portal's reference")
    MaTTHC: ProcedureCode
    TenTTHC: Annotated[str, Text(500)] | None = None
    MaLinhVuc: Code | None = None
    KenhThucHien: int = Field(default=2, ge=1, le=3)
    ChuHoSo: PersonName
    LoaiDoiTuong: int = Field(default=1, ge=1, le=2)
    MaDoiTuong: Ref | None = Field(
        default=None, description="The applicant's portal account id (not an ID number)"
    )
    SoGiayToChuHoSo: str = Field(
        min_length=1,
        max_length=14,
        description="The applicant's ID number (CCCD) or, for an organisation, its tax code",
    )
    SoDienThoai: str | None = Field(default=None, max_length=20)
    Email: EmailAddress | None = None
    DiaChi: Address | None = None
    TrichYeuHoSo: Paragraph | None = None
    NgayNopHoSo: PortalTime | None = Field(
        default=None, description="When the applicant submitted on the portal"
    )
    NgayTiepNhan: PortalTime | None = Field(
        default=None, description="When the desk accepted it; defaults to now"
    )
    DonViXuLy: Line | None = None
    TaiLieuNop: list[TaiLieu] = Field(default_factory=list, max_length=MAX_DOCUMENTS)

    @field_validator("NgayTiepNhan", "NgayNopHoSo")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is not None:
            parse_portal_time(v)
        return v

    @field_validator("MaTTHC")
    @classmethod
    def _national_code(cls, v: str) -> str:
        return national_procedure_code(v)


def to_submission(p: PortalDossier) -> SubmitDossier:
    """The same submission a desk officer would make for this portal payload.

    Validated as one document, so an error's location names the field (``portal_field``).
    """
    return SubmitDossier.model_validate(
        {
            "procedure_code": p.MaTTHC,
            "return_method": "online" if p.KenhThucHien == Channel.ONLINE else None,
            "channel": Channel(p.KenhThucHien),
            "applicant": {
                "name": p.ChuHoSo,
                "object_type": ObjectType(p.LoaiDoiTuong),
                "id_number": p.SoGiayToChuHoSo,
                "portal_account": p.MaDoiTuong,
                "phone": p.SoDienThoai,
                "email": p.Email,
                "address": p.DiaChi,
            },
            "summary": p.TrichYeuHoSo,
            "documents": [
                {"code": t.MaThanhPhanHoSo, "name": t.TenTepDinhKem, "url": t.DuongDanTaiTepTin}
                for t in p.TaiLieuNop
            ],
            "received_at": parse_portal_time(p.NgayTiepNhan) if p.NgayTiepNhan else None,
            "submitted_at": parse_portal_time(p.NgayNopHoSo) if p.NgayNopHoSo else None,
            "handling_unit": p.DonViXuLy,
        }
    )


# Our field names back to the portal's, so an error names the field the portal sent.
_PORTAL_NAMES = {
    "procedure_code": "MaTTHC",
    "channel": "KenhThucHien",
    "applicant.name": "ChuHoSo",
    "applicant.object_type": "LoaiDoiTuong",
    "applicant.id_number": "SoGiayToChuHoSo",
    "applicant.portal_account": "MaDoiTuong",
    "applicant.phone": "SoDienThoai",
    "applicant.email": "Email",
    "applicant.address": "DiaChi",
    "summary": "TrichYeuHoSo",
    "documents": "TaiLieuNop",
    "received_at": "NgayTiepNhan",
    "submitted_at": "NgayNopHoSo",
    "handling_unit": "DonViXuLy",
}
_DOCUMENT_NAMES = {"code": "MaThanhPhanHoSo", "name": "TenTepDinhKem", "url": "DuongDanTaiTepTin"}


def portal_field(loc: Sequence[int | str]) -> str:
    """The portal's name of the field at ``loc`` (ours or the portal's own)."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[0] == "documents":
        tail = ".".join(_DOCUMENT_NAMES.get(p, p) for p in parts[2:])
        return ".".join(filter(None, ("TaiLieuNop", parts[1], tail)))
    dotted = ".".join(parts)
    return _PORTAL_NAMES.get(dotted, dotted) or "body"


def parse(body: dict[str, Any]) -> tuple[PortalDossier, SubmitDossier]:
    """Validate a portal payload into a submission; ``PortalInvalid`` names the bad field."""
    try:
        payload = PortalDossier.model_validate(body)
        return payload, to_submission(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise PortalInvalid(portal_field(first["loc"]), first["msg"]) from None


class PortalInvalid(ValueError):
    """A portal payload the desk cannot take: the portal's field name and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class PortalAnswer(BaseModel):
    """The portal's answer shape: ``error_code`` 0 on success, else the field and why."""

    model_config = ConfigDict(extra="allow")
    error_code: int
    message: str


def idempotency_key(p: PortalDossier) -> str:
    return f"{PORTAL_KEY_PREFIX}{p.MaHoSo}"


def success(accepted: DossierAccepted, portal_ref: str) -> dict[str, Any]:
    return {
        "error_code": 0,
        "message": "Thành công",
        "MaHoSo": accepted.code,
        "MaHoSoCong": portal_ref,
        "TrangThaiHoSo": int(accepted.status),
        "NgayTiepNhan": format_portal_time(accepted.received_at),
        "NgayHenTra": format_portal_time(accepted.appointment_at),
        "DanhSachGiayToThieu": accepted.missing_documents,
        "LyDoTuChoi": accepted.reasons,
        "MaTraCuu": accepted.lookup_code,
    }


def failure(code: int, field: str, reason: str) -> dict[str, Any]:
    return {"error_code": code, "message": f"{field}: {reason}", "field": field}
