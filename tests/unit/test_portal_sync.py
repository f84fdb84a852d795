"""The portal's side of a dossier, without the network: every status to its TrangThaiHoSo,
the record and progress as sent (field names, codes, yyyyMMddHHmmss in Asia/Ho_Chi_Minh),
and the retry schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.common import (
    ActingRole,
    DossierStatus,
    Duration,
    PortalStatus,
    StepKind,
    Timeliness,
    TimeUnit,
)
from contracts.events import Holder, StepCompleted, StepRef
from services.intake import portal
from services.intake.domain import Catalogue
from services.intake.portal_sync import SyncPolicy

PORTAL_CODES = {
    DossierStatus.RECEIVED: 2,
    DossierStatus.NOT_RECEIVED: 3,
    DossierStatus.PROCESSING: 4,
    DossierStatus.WAITING_SUPPLEMENT: 5,
    DossierStatus.WAITING_FEE: 6,
    DossierStatus.WITHDRAWN: 7,
    DossierStatus.STOPPED: 8,
    DossierStatus.RESULT_READY: 9,
    DossierStatus.REFUSED: 9,
    DossierStatus.RETURNED: 10,
}


@pytest.mark.parametrize("state", list(DossierStatus))
def test_every_status_has_the_portals_code(state: DossierStatus) -> None:
    assert state.portal == PortalStatus(PORTAL_CODES[state])


def test_every_status_is_mapped() -> None:
    assert set(PORTAL_CODES) == set(DossierStatus)
    assert {c for c in PORTAL_CODES.values()} == set(range(2, 11))  # 1 is the portal's own


def test_backoff_doubles_to_ten_minutes_spread_by_a_fifth() -> None:
    p = SyncPolicy()
    middle = [p.backoff(n, lambda: 0.5).total_seconds() for n in range(1, 12)]
    assert middle == [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
    assert p.backoff(3, lambda: 0.0) == timedelta(seconds=8 * 0.8)
    assert p.backoff(3, lambda: 1.0) == timedelta(seconds=8 * 1.2)
    assert p.backoff(30, lambda: 1.0) == timedelta(seconds=720)


VN = 7  # hours ahead of UTC


def t(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour - VN, minute, tzinfo=UTC)


def row(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "code": "000.00.01.H29-261123-0007",
        "procedure_code": "1.005370",
        "procedure_name": "Đăng ký thành lập công ty TNHH một thành viên",
        "channel": 2,
        "applicant": {
            "name": "Công ty TNHH Minh Long",
            "object_type": 2,
            "id_number": "0101234567",
            "phone": "0912345678",
            "email": "minhlong@example.vn",
            "portal_account": "tk-dvcqg-42",
        },
        "summary": None,
        "documents": [{"code": "GDN", "name": "Giấy đề nghị", "copies": 1, "url": None}],
        "received_at": t(23, 9, 30),
        "submitted_at": t(22, 20, 15),
        "appointment_at": t(26, 17),
        "status": 4,
        "ready_at": None,
        "returned_at": None,
        "return_method": "post",
        "handling_unit": None,
        "lead_agency": "000.01.05.H29",
        "lead_agency_name": "Phòng Đăng ký kinh doanh - Sở Tài chính Thành phố Hồ Chí Minh",
        "supplement_history": [
            {
                "number": 1,
                "requested_at": t(24, 10).isoformat(),
                "requested_by": "Lê Văn Hải",
                "items": [{"code": "DL", "name": "Điều lệ", "reason": "Thiếu chữ ký"}],
                "appointment_before": t(26, 17).isoformat(),
                "resumed_at": t(25, 9).isoformat(),
                "appointment_after": t(27, 15).isoformat(),
            }
        ],
        "result_documents": [],
    }
    return {**base, **over}


def test_the_record_as_the_portal_takes_it() -> None:
    procedure = Catalogue.load().in_force("1.005370", t(23, 9).date())
    rec = portal.outbound_record(row(), procedure)
    assert rec["MaHoSo"] == "000.00.01.H29-261123-0007"
    assert (rec["MaTTHC"], rec["KenhThucHien"], rec["LoaiDoiTuong"]) == ("1.005370", "2", "2")
    assert rec["MaDoiTuong"] == "tk-dvcqg-42" and rec["SoGiayToChuHoSo"] == "0101234567"
    assert rec["NgayTiepNhan"] == "20261123093000" and rec["NgayNopHoSo"] == "20261122201500"
    assert rec["NgayHenTra"] == "20261126170000" and rec["NgayTra"] == ""
    assert rec["TrangThaiHoSo"] == "4" and rec["HinhThuc"] == "1"  # returned by post
    assert rec["TrichYeuHoSo"] == "Đăng ký thành lập công ty TNHH một thành viên"
    assert rec["DonViXuLy"].startswith("Phòng Đăng ký kinh doanh")
    assert [f["Gia"] for f in rec["DanhSachLePhi"]] == ["50000", "100000"]
    (sup,) = rec["DanhSachHoSoBoSung"]
    assert (sup["NgayHenTraTruoc"], sup["NgayHenTraMoi"]) == ("20261126170000", "20261127150000")
    assert sup["TrangThaiBoSung"] == "1" and "Điều lệ: Thiếu chữ ký" in sup["NoiDungBoSung"]
    assert rec["TaiLieuNop"][0]["MaThanhPhanHoSo"] == "GDN"
    assert all(isinstance(v, str | list) for v in rec.values())  # every value a string


def test_a_finished_record_carries_its_result_and_dates() -> None:
    done = row(
        status=10,
        ready_at=t(25, 14),
        returned_at=t(26, 8),
        result_documents=[{"code": "GCN", "name": "Giấy chứng nhận đăng ký doanh nghiệp"}],
        supplement_history=[],
        return_method="online",
    )
    rec = portal.outbound_record(done, None)
    assert (rec["TrangThaiHoSo"], rec["NgayKetThucXuLy"], rec["NgayTra"]) == (
        "10",
        "20261125140000",
        "20261126080000",
    )
    assert rec["DanhSachGiayToKetQua"][0]["TenGiayTo"].startswith("Giấy chứng nhận")
    assert rec["HinhThuc"] == "0" and rec["MaLinhVuc"] == "" and rec["DanhSachLePhi"] == []


def test_a_step_as_the_portal_follows_its_progress() -> None:
    step = StepRef(
        order=3,
        kind=StepKind.WORK,
        action="Tạo mã số doanh nghiệp",
        agency_id="000.00.31.H29",
        agency_name="Thuế Thành phố Hồ Chí Minh",
        department="KKKT",
        department_name="Phòng Kê khai và Kế toán thuế",
        role=ActingRole.OFFICER,
        duration=Duration(value=4, unit=TimeUnit.WORKING_HOURS),
    )
    done = StepCompleted(
        code="000.00.01.H29-261123-0007",
        step=step,
        started_at=t(23, 10),
        deadline_at=t(23, 14, 30),
        completed_at=t(23, 11),
        timeliness=Timeliness.ON_TIME,
        by=Holder(
            agency_id="000.00.31.H29",
            agency_name="Thuế Thành phố Hồ Chí Minh",
            department="KKKT",
            department_name="Phòng Kê khai và Kế toán thuế",
            person="Trần Thị Mai",
        ),
        result="0318888888",
    )
    p = portal.progress_of_step(done)
    assert p["NguoiXuLy"] == "Trần Thị Mai" and p["ChucDanh"] == "Chuyên viên"
    assert p["PhongBanXuLy"] == "Phòng Kê khai và Kế toán thuế - Thuế Thành phố Hồ Chí Minh"
    assert p["NoiDungXuLy"] == "Tạo mã số doanh nghiệp: 0318888888"
    assert (p["ThoiDiemXuLy"], p["NgayBatDau"], p["NgayKetThucTheoQuyDinh"]) == (
        "20261123110000",
        "20261123100000",
        "20261123143000",
    )
    assert p["TrangThai"] == "4"
