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
    PortalStatus,
    Procedure,
    ProcedureCode,
    ReturnMethod,
    StepKind,
)
from contracts.events import (
    ApologyIssued,
    DossierResumed,
    DossierRouted,
    FeeRequested,
    Holder,
    ProcessingSupplementRequested,
    ResultReturned,
    StepCompleted,
    where_in,
)
from contracts.text import Text, Token
from services.intake.desk import PORTAL_KEY_PREFIX
from services.runtime.calendar import VN_TZ, format_local

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

    model_config = ConfigDict(extra="forbid")
    MaThanhPhanHoSo: DocumentCode
    TenTepDinhKem: Line | None = None
    DuongDanTaiTepTin: DocumentUrl | None = None


class PortalDossier(BaseModel):
    """DongBoHoSoMC-style payload as the portal sends it, with the desk's limits; a field
    the desk does not know is refused (422 naming it), as the desk's own API refuses one."""

    model_config = ConfigDict(extra="forbid")
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


# --- outbound: our dossier as the portal's record (DongBoHoSoMC) and step progress --------
# Field names and codes as the open-source clients send them (OpenCPS's
# DVCQGIntegrationActionImpl.createSyncDossierBodyRequest and others); every value is a
# string, times yyyyMMddHHmmss in Asia/Ho_Chi_Minh, "" where a time is not known yet.

RETURN_BY = {"at_desk": "0", "online": "0", "post": "1"}
"""HinhThuc: "1" by public post, "0" otherwise (clients use only these two; whether the
portal has a code for online return is UNKNOWN)."""

TRICH_YEU_MAX = 1000
"""TrichYeuHoSo: one client cuts it at 1,000 characters; the portal's own limit is UNKNOWN."""


def _t(value: datetime | None) -> str:
    return format_portal_time(value) or ""


def outbound_record(row: Any, procedure: Procedure | None) -> dict[str, Any]:
    """The whole portal record of a dossier as intake holds it now (a row of ``dossiers``)."""
    applicant = row["applicant"]
    summary = (row["summary"] or row["procedure_name"])[:TRICH_YEU_MAX]
    status = int(row["status"])
    fees = [
        {
            "TenPhiLePhi": f.name,
            "MaPhiLePhi": f"{row['procedure_code']}-{i}",
            "HinhThucThu": "1",  # the code list is UNKNOWN; clients send "1"
            "Gia": str(f.amount_vnd),
            # "1" phí, "2" lệ phí (Law on Fees and Charges 2015, Art. 3; see FeeKind)
            "LoaiPhiLePhi": f.kind.portal,
        }
        for i, f in enumerate(procedure.fees if procedure else (), start=1)
        if f.amount_vnd is not None  # an amount set elsewhere is not known here
    ]
    supplements: list[dict[str, Any]] = [
        {
            "HoSoBoSungId": str(s["number"]),
            "NguoiYeuCauBoSung": s.get("requested_by") or "",
            "NoiDungBoSung": "; ".join(f"{i['name']}: {i['reason']}" for i in s["items"]),
            "NgayBoSung": _t(_dt(s["requested_at"])),
            "NgayHenTraTruoc": _t(_dt(s["appointment_before"])),
            "NgayHenTraMoi": _t(_dt(s.get("appointment_after"))),
            "TrangThaiBoSung": "1" if s.get("resumed_at") else "0",
            "DanhSachGiayToBoSung": [],
        }
        for s in row["supplement_history"]
    ] + [apology_line(a) for a in _apologies(row)]
    return {
        "MaHoSo": row["code"],
        "MaTTHC": row["procedure_code"],
        "TenTTHC": row["procedure_name"],
        "MaLinhVuc": (procedure.field_code or "") if procedure else "",
        "TenLinhVuc": procedure.field if procedure else "",
        "KenhThucHien": str(int(row["channel"])),
        "ChuHoSo": applicant["name"],
        "SoGiayToChuHoSo": applicant["id_number"],
        "LoaiDoiTuong": str(int(applicant.get("object_type", 1))),
        "MaDoiTuong": applicant.get("portal_account") or "",
        "SoDienThoai": applicant.get("phone") or "",
        "Email": applicant.get("email") or "",
        "TrichYeuHoSo": summary,
        "NgayNopHoSo": _t(row["submitted_at"] or row["received_at"]),
        "NgayTiepNhan": _t(row["received_at"]),
        "NgayHenTra": _t(legal_appointment(row)),
        "TrangThaiHoSo": str(status),
        "NgayTuChoi": _t(row["received_at"]) if status == int(PortalStatus.NOT_RECEIVED) else "",
        "NgayKetThucXuLy": _t(row["ready_at"]),
        "NgayTra": _t(row["returned_at"]),
        "HinhThuc": RETURN_BY.get(row["return_method"], "0"),
        "DonViXuLy": row["handling_unit"] or row["lead_agency_name"] or row["lead_agency"],
        "TaiLieuNop": [
            {
                "TepDinhKemId": ref,
                "TenTepDinhKem": d.get("name") or d["code"],
                "IsDeleted": "False",
                "MaThanhPhanHoSo": d["code"],
                "DuongDanTaiTepTin": d.get("url") or "",
            }
            for ref, d in stable_ids(row["code"], row["documents"])
        ],
        "DanhSachLePhi": fees,
        "DanhSachHoSoBoSung": supplements,
        "DanhSachGiayToKetQua": [
            {
                "TenGiayTo": d.get("name") or d["code"],
                "MaThanhPhanHoSo": d["code"],
                "GiayToId": ref,
                "DuongDanTepTinKetQua": d.get("url") or "",
            }
            for ref, d in stable_ids(f"{row['code']}-kq", row["result_documents"])
        ],
    }


def stable_ids(prefix: str, documents: Sequence[Any]) -> list[tuple[str, Any]]:
    """Each document's id at the portal: by its code (OpenCPS sends its own file id,
    ``dossierFile.getDossierFileId()``, never a position), so adding or removing one
    document leaves the others' ids; a code handed in twice gets ``~2``, ``~3``."""
    seen: dict[str, int] = {}
    out: list[tuple[str, Any]] = []
    for d in documents:
        n = seen[d["code"]] = seen.get(d["code"], 0) + 1
        out.append((f"{prefix}-{d['code']}" + (f"~{n}" if n > 1 else ""), d))
    return out


def legal_appointment(row: Any) -> datetime | None:
    """NgayHenTra: the appointment by law (moved only by time waiting for the applicant),
    not an apology's new date. Decision 766/QĐ-TTg (2022) counts a dossier on time when it
    ended no later than the appointment: with the apology's date there the portal would
    count a late dossier on time. Rows from before the column: the first apology's
    previous date, else the appointment."""
    keys = row.keys() if hasattr(row, "keys") else ()
    legal = row["legal_appointment_at"] if "legal_appointment_at" in keys else None
    if legal is not None:
        return _dt(legal)
    history = _apologies(row)
    if history:
        return _dt(history[0]["previous_appointment_at"])
    return _dt(row["appointment_at"])


def _apologies(row: Any) -> list[dict[str, Any]]:
    keys = row.keys() if hasattr(row, "keys") else ()
    return list(row["apology_history"] or []) if "apology_history" in keys else []


def apology_line(a: dict[str, Any]) -> dict[str, Any]:
    """A Form 04 as a re-scheduled appointment (DanhSachHoSoBoSung with NgayHenTraTruoc /
    NgayHenTraMoi, domain.md; OpenCPS leaves the list empty, so the wire form is the
    simulator's): the legal appointment stays NgayHenTra, the new date travels here."""
    return {
        "HoSoBoSungId": f"xin-loi-{a['number']}",
        "NguoiYeuCauBoSung": a.get("agency_name") or "",
        "NoiDungBoSung": f"Xin lỗi và hẹn lại ngày trả kết quả (Mẫu 04): {a.get('reason') or ''}"[
            :2000
        ],
        "NgayBoSung": _t(_dt(a["issued_at"])),
        "NgayHenTraTruoc": _t(_dt(a["previous_appointment_at"])),
        "NgayHenTraMoi": _t(_dt(a["appointment_at"])),
        "TrangThaiBoSung": "1",
        "DanhSachGiayToBoSung": [],
    }


def progress_step(
    code: str,
    *,
    who: str,
    title: str,
    department: str,
    what: str,
    at: datetime,
    status: int,
    started_at: datetime | None,
    deadline_at: datetime | None,
) -> dict[str, str]:
    """One step's progress for ``CapNhatTienDoHoSoMC``, with the step's end date by law."""
    return {
        "MaHoSo": code,
        "NguoiXuLy": who[:50],  # one client cuts at 50; the portal's limit is UNKNOWN
        "ChucDanh": title,
        "ThoiDiemXuLy": _t(at),
        "PhongBanXuLy": department,
        "NoiDungXuLy": what[:2000],
        "TrangThai": str(status),
        "NgayBatDau": _t(started_at),
        "NgayKetThucTheoQuyDinh": _t(deadline_at),
    }


def _dt(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


ROLE_TITLES = {
    "officer": "Chuyên viên",
    "department_head": "Trưởng phòng",
    "agency_head": "Thủ trưởng cơ quan",
}


def progress_of_routing(r: DossierRouted) -> dict[str, str] | None:
    """The desk's receipt, the first line of the dossier's progress."""
    line = r.handover
    if line is None:
        return None
    return progress_step(
        r.code,
        who=line.giver.person or line.giver.agency_name,
        title="Cán bộ một cửa",
        department=where_in(line.giver.agency_name, line.giver.department_name),
        what=f"Tiếp nhận hồ sơ; chuyển {line.receiver.label()}",
        at=line.at,
        status=int(PortalStatus.RECEIVED),
        started_at=None,
        deadline_at=None,
    )


def progress_of_step(c: StepCompleted) -> dict[str, str]:
    """A step of the route, done: who, in which department, what, and its end by law."""
    by = c.by
    department = (
        where_in(by.agency_name, by.department_name)
        if by is not None
        else where_in(c.step.agency_name, c.step.department_name)
    )
    what = f"{c.step.action}: {c.result}" if c.result else c.step.action
    done = c.step.kind is StepKind.RETURN
    return progress_step(
        c.code,
        who=(by.person or by.agency_name) if by is not None else c.step.agency_name,
        title=ROLE_TITLES.get(c.step.role.value, ""),
        department=department,
        what=what,
        at=c.completed_at,
        status=int(PortalStatus.PROCESSED if done else PortalStatus.PROCESSING),
        started_at=c.started_at,
        deadline_at=c.deadline_at,
    )


def progress_of_return(r: ResultReturned) -> dict[str, str]:
    return progress_step(
        r.code,
        who=r.returned_by.person or r.returned_by.agency_name,
        title="Cán bộ một cửa",
        department=where_in(r.returned_by.agency_name, r.returned_by.department_name),
        what=f"Trả kết quả ({ReturnMethod(r.method).label})",
        at=r.returned_at,
        status=int(PortalStatus.RESULT_RETURNED),
        started_at=None,
        deadline_at=None,
    )


# --- the pauses, the resumption and the apology as progress lines (issue 23, H) ----------


def _by(h: Holder) -> tuple[str, str]:
    return h.person or h.agency_name, where_in(h.agency_name, h.department_name)


def progress_of_supplement(p: ProcessingSupplementRequested) -> dict[str, str]:
    """The request to supplement during processing (Form 02): status 5, the clock stops."""
    who, department = _by(p.requested_by)
    items = "; ".join(f"{i.name}: {i.reason}" for i in p.items)
    return progress_step(
        p.code,
        who=who,
        title=ROLE_TITLES.get(p.step.role.value, ""),
        department=department,
        what=f"Yêu cầu bổ sung, hoàn thiện hồ sơ (lần {p.request_number}): {items}",
        at=p.requested_at,
        status=int(PortalStatus.SUPPLEMENT_REQUESTED),
        started_at=None,
        deadline_at=None,
    )


def progress_of_fee(f: FeeRequested) -> dict[str, str]:
    """The request to pay a fee or meet a financial obligation: status 6, the clock stops."""
    who, department = _by(f.requested_by)
    amount = f": {f.amount_vnd:,} đồng".replace(",", ".") if f.amount_vnd is not None else ""
    note = f" ({f.note})" if f.note else ""
    return progress_step(
        f.code,
        who=who,
        title=ROLE_TITLES.get(f.step.role.value, ""),
        department=department,
        what=f"Yêu cầu thực hiện nghĩa vụ tài chính{amount}{note}",
        at=f.requested_at,
        status=int(PortalStatus.FEE_REQUESTED),
        started_at=None,
        deadline_at=None,
    )


def progress_of_resumption(r: DossierResumed) -> dict[str, str]:
    """The applicant complied: processing goes on (4), the step's deadline moved."""
    return progress_step(
        r.code,
        who=r.step.agency_name,
        title=ROLE_TITLES.get(r.step.role.value, ""),
        department=where_in(r.step.agency_name, r.step.department_name),
        what=(
            f"Tiếp tục giải quyết sau khi người nộp đã thực hiện yêu cầu; ngày hẹn trả"
            f" kết quả: {format_local(r.appointment_at)}"
        ),
        at=r.resumed_at,
        status=int(PortalStatus.PROCESSING),
        started_at=r.resumed_at,
        deadline_at=r.step_deadline_at,
    )


def progress_of_apology(a: ApologyIssued, status: int) -> dict[str, str]:
    """Form 04: the apology and the new date; the record keeps the legal NgayHenTra."""
    if a.issued_by is not None:
        who, department = _by(a.issued_by)
    else:
        who, department = a.agency_name, a.agency_name
    return progress_step(
        a.code,
        who=who,
        title=ROLE_TITLES["agency_head"] if a.issued_by is not None else "",
        department=department,
        what=(
            f"Xin lỗi và hẹn lại ngày trả kết quả (lần {a.number}): {a.reason}; ngày hẹn"
            f" trước: {format_local(a.previous_appointment_at)}, ngày hẹn mới:"
            f" {format_local(a.appointment_at)}"
        ),
        at=a.issued_at,
        status=status,
        started_at=None,
        deadline_at=None,
    )
