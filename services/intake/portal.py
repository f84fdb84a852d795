"""The National Public Service Portal (DVCQG) adapter: its payloads to ours and back.

No official public specification was found; field names follow the open-source clients
(domain.md). Times are ``yyyyMMddHHmmss`` in Asia/Ho_Chi_Minh. Keep the whole mapping here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from contracts.api import DossierAccepted, SubmitDossier
from contracts.common import Applicant, Channel, DocumentRef, ObjectType
from contracts.envelope import NFCStr
from services.runtime.calendar import VN_TZ

PORTAL_TIME = "%Y%m%d%H%M%S"


def parse_portal_time(value: str) -> datetime:
    try:
        return datetime.strptime(value, PORTAL_TIME).replace(tzinfo=VN_TZ)
    except ValueError:
        raise ValueError("expected yyyyMMddHHmmss, e.g. 20251124093000") from None


def format_portal_time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(VN_TZ).strftime(PORTAL_TIME)


class TaiLieu(BaseModel):
    """A document handed in through the portal (TaiLieuNop item)."""

    model_config = ConfigDict(extra="ignore")
    MaThanhPhanHoSo: str = Field(min_length=1)
    TenTepDinhKem: NFCStr | None = None
    DuongDanTaiTepTin: str | None = None


class PortalDossier(BaseModel):
    """DongBoHoSoMC-style payload as the portal sends it."""

    model_config = ConfigDict(extra="ignore")
    MaHoSo: str = Field(min_length=1, max_length=60, description="Portal's reference")
    MaTTHC: str = Field(min_length=1)
    TenTTHC: NFCStr | None = None
    MaLinhVuc: str | None = None
    KenhThucHien: int = 2
    ChuHoSo: NFCStr = Field(min_length=2)
    LoaiDoiTuong: int = 1
    MaDoiTuong: str = Field(min_length=1, description="ID number or tax code")
    SoDienThoai: str | None = None
    Email: str | None = None
    DiaChi: NFCStr | None = None
    TrichYeuHoSo: NFCStr | None = None
    NgayTiepNhan: str | None = None
    DonViXuLy: str | None = None
    TaiLieuNop: list[TaiLieu] = Field(default_factory=list)

    @field_validator("NgayTiepNhan")
    @classmethod
    def _time(cls, v: str | None) -> str | None:
        if v is not None:
            parse_portal_time(v)
        return v


def to_submission(p: PortalDossier) -> SubmitDossier:
    """The same submission a desk officer would make for this portal payload."""
    return SubmitDossier(
        procedure_code=p.MaTTHC,
        channel=Channel(p.KenhThucHien),
        applicant=Applicant(
            name=p.ChuHoSo,
            object_type=ObjectType(p.LoaiDoiTuong),
            id_number=p.MaDoiTuong,
            phone=p.SoDienThoai,
            email=p.Email,
            address=p.DiaChi,
        ),
        summary=p.TrichYeuHoSo,
        documents=[
            DocumentRef(code=t.MaThanhPhanHoSo, name=t.TenTepDinhKem, url=t.DuongDanTaiTepTin)
            for t in p.TaiLieuNop
        ],
        received_at=parse_portal_time(p.NgayTiepNhan) if p.NgayTiepNhan else None,
    )


class PortalAnswer(BaseModel):
    """The portal's answer shape: ``error_code`` 0 on success, else the field and why."""

    model_config = ConfigDict(extra="allow")
    error_code: int
    message: str


def idempotency_key(p: PortalDossier) -> str:
    return f"portal:{p.MaHoSo}"


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
