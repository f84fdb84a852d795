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
    DossierStatus.REGISTERED: 1,
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
    # 1 (mới đăng ký) too: registered, not yet received (issue 23, item 11)
    assert {c for c in PORTAL_CODES.values()} == set(range(1, 11))


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


# --- issue 23: H, 4, 6 ----------------------------------------------------------------------


def test_each_fee_is_sent_as_phi_or_le_phi() -> None:
    """LoaiPhiLePhi "2" for a lệ phí, "1" for a phí (Law on Fees and Charges 2015, Art. 3
    and its annexes), not "1" for every fee."""
    procedure = Catalogue.load().in_force("1.005370", t(23, 9).date())
    fees = portal.outbound_record(row(), procedure)["DanhSachLePhi"]
    assert [(f["TenPhiLePhi"].split()[0], f["LoaiPhiLePhi"]) for f in fees] == [
        ("Lệ", "2"),
        ("Phí", "1"),
    ]


def test_every_catalogue_fee_has_the_kind_its_name_says() -> None:
    for p in Catalogue.load().all():
        for f in p.fees:
            expected = "le_phi" if f.name.startswith("Lệ phí") else "phi"
            assert f.kind.value == expected, (p.code, f.name)


def test_a_fee_without_a_kind_stays_valid() -> None:
    from contracts.common import Fee, FeeKind

    assert Fee.model_validate({"name": "Phí x", "legal_basis": "Thông tư 1"}).kind is FeeKind.FEE


def test_document_ids_do_not_shift_when_the_list_changes() -> None:
    docs = [
        {"code": "GDN", "name": "Giấy đề nghị", "url": None},
        {"code": "DL", "name": "Điều lệ", "url": None},
        {"code": "DSTV", "name": "Danh sách thành viên", "url": None},
    ]
    before = portal.outbound_record(row(documents=docs), None)["TaiLieuNop"]
    after = portal.outbound_record(row(documents=docs[1:]), None)["TaiLieuNop"]
    ids = {d["MaThanhPhanHoSo"]: d["TepDinhKemId"] for d in before}
    assert {d["MaThanhPhanHoSo"]: d["TepDinhKemId"] for d in after} == {
        k: v for k, v in ids.items() if k != "GDN"
    }
    assert len(set(ids.values())) == 3
    twice = portal.outbound_record(row(documents=[docs[0], docs[0]]), None)["TaiLieuNop"]
    assert len({d["TepDinhKemId"] for d in twice}) == 2


def test_after_an_apology_the_portal_keeps_the_legal_appointment() -> None:
    """NgayHenTra stays the legal date, so by Decision 766's rule (finished no later than
    the appointment) the portal counts a late dossier late; the new date travels as a
    re-scheduled appointment (NgayHenTraTruoc / NgayHenTraMoi)."""
    apology = {
        "number": 1,
        "agency_id": "000.01.05.H29",
        "agency_name": "Sở Tài chính Thành phố Hồ Chí Minh",
        "reason": "Chờ kết quả xác minh",
        "previous_appointment_at": t(27, 15).isoformat(),
        "appointment_at": t(30, 17).isoformat(),
        "issued_at": t(26, 10).isoformat(),
    }
    late = row(
        appointment_at=t(30, 17),
        legal_appointment_at=t(27, 15),
        apologies=1,
        apology_history=[apology],
    )
    rec = portal.outbound_record(late, None)
    assert rec["NgayHenTra"] == "20261127150000"
    line = rec["DanhSachHoSoBoSung"][-1]
    assert (line["NgayHenTraTruoc"], line["NgayHenTraMoi"]) == ("20261127150000", "20261130170000")
    assert "Xin lỗi" in line["NoiDungBoSung"]
    # a row from before the column: the apology's previous date
    old = {**late, "legal_appointment_at": None}
    assert portal.outbound_record(old, None)["NgayHenTra"] == "20261127150000"


def test_reconciliation_compares_only_the_fields_the_portal_answers() -> None:
    from services.intake.portal_sync import differs

    ours = portal.outbound_record(row(), None)
    fewer = {k: ours[k] for k in ("MaHoSo", "TrangThaiHoSo", "NgayHenTra")}
    assert differs(ours, fewer) == []
    assert differs(ours, {**fewer, "TrangThaiHoSo": "2"}) == ["TrangThaiHoSo"]
    assert differs(ours, {**fewer, "TheirOwnField": "x"}) == []


def test_a_final_status_never_moves() -> None:
    """routing.result_ready (or any event) cannot move a withdrawn, stopped, refused at the
    desk or returned dossier (issue 23, item 6)."""
    from services.intake.handlers import MOVES

    for event, (_state, allowed) in MOVES.items():
        assert not [s for s in allowed if s.final], event


def _step() -> StepRef:
    return StepRef(
        order=2,
        kind=StepKind.APPRAISE,
        action="Thẩm định hồ sơ",
        agency_id="000.01.05.H29",
        agency_name="Sở Tài chính Thành phố Hồ Chí Minh",
        department="DKKD",
        department_name="Phòng Đăng ký kinh doanh",
        role=ActingRole.OFFICER,
        duration=Duration(value=2, unit=TimeUnit.WORKING_DAYS),
    )


def _holder() -> Holder:
    return Holder(
        agency_id="000.01.05.H29",
        agency_name="Sở Tài chính Thành phố Hồ Chí Minh",
        department="DKKD",
        department_name="Phòng Đăng ký kinh doanh",
        person="Lê Văn Hải",
    )


async def test_pauses_resumption_and_apology_each_send_a_progress_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A supplement request (5), a fee request (6), a resumption (4) and an apology each
    queue a CapNhatTienDoHoSoMC line after the record (issue 23, H)."""
    import uuid

    from contracts.common import MissingItem
    from contracts.envelope import new_envelope
    from contracts.events import (
        ApologyIssued,
        DossierResumed,
        FeeRequested,
        ProcessingSupplementRequested,
    )
    from services.intake import handlers as h
    from services.intake import store

    code = "000.00.01.H29-261123-0007"
    queued: list[tuple[str, Any]] = []

    class Sync:
        async def record(self, conn: Any, c: str, env: Any) -> None:
            queued.append(("record", None))

        async def progress(self, conn: Any, c: str, step: dict[str, str], env: Any) -> None:
            queued.append(("progress", step))

    class Desk:
        async def processing_supplement(self, conn: Any, env: Any, p: Any) -> bool:
            await Sync().record(conn, p.code, env)  # the desk queues the record itself
            return True

    async def nothing(*_a: Any, **_k: Any) -> None:
        return None

    async def moved(*_a: Any, **_k: Any) -> bool:
        return True

    async def dossier(*_a: Any, **_k: Any) -> dict[str, Any]:
        return {"state": "processing", "status": 4, "apologies": 0}

    for name in ("record_event", "resumed", "new_appointment", "record_status"):
        monkeypatch.setattr(store, name, nothing)
    monkeypatch.setattr(store, "move", moved)
    monkeypatch.setattr(store, "get_dossier", dossier)
    table = h.handlers(Desk(), Sync())  # type: ignore[arg-type]
    events = [
        ProcessingSupplementRequested(
            code=code,
            step=_step(),
            items=(MissingItem(code="DL", name="Điều lệ", reason="Thiếu chữ ký"),),
            requested_by=_holder(),
            request_number=1,
            requested_at=t(24, 10),
        ),
        FeeRequested(
            code=code,
            step=_step(),
            amount_vnd=50000,
            requested_by=_holder(),
            requested_at=t(24, 11),
        ),
        DossierResumed(
            code=code,
            paused_at=t(24, 11),
            resumed_at=t(25, 9),
            paused_working_seconds=3600 * 6,
            previous_appointment_at=t(26, 17),
            appointment_at=t(27, 15),
            step=_step(),
            step_deadline_at=t(26, 15),
        ),
        ApologyIssued(
            apology_id=uuid.uuid4(),
            code=code,
            number=1,
            agency_id="000.01.05.H29",
            agency_name="Sở Tài chính Thành phố Hồ Chí Minh",
            reason="Chờ kết quả xác minh",
            previous_appointment_at=t(27, 15),
            appointment_at=t(30, 17),
            issued_at=t(26, 10),
            issued_by=_holder(),
            procedure_name="Đăng ký thành lập công ty TNHH một thành viên",
            received_at=t(23, 9, 30),
        ),
    ]
    for e in events:
        queued.clear()
        env = new_envelope(e, subject=code, producer="routing", occurred_at=t(26, 10))
        await table[e.event_type](None, env, e)  # type: ignore[arg-type]
        kinds = [k for k, _ in queued]
        assert kinds == ["record", "progress"], (e.event_type, kinds)
        step = queued[-1][1]
        assert step["MaHoSo"] == code and step["NoiDungXuLy"]
        expected = {
            "routing.supplement_requested": "5",
            "routing.fee_requested": "6",
            "routing.dossier_resumed": "4",
            "routing.apology_issued": "4",
        }[e.event_type]
        assert step["TrangThai"] == expected, e.event_type
    assert "30/11/2026" in step["NoiDungXuLy"]  # the apology's new date, in words
