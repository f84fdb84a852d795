"""The portal and SMS gateway simulators as real processes (deploy/simulators): what they
accept, what they refuse and how, and their faults, driven through our own portal client
(services/runtime/portal_client.py) so the two are proven to agree.

Each simulator runs once per module and is reset before each test; the shared clock only
moves forward, so a test that moves it does not disturb the next.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import re
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from deploy.ports import free_port
from deploy.simulators import Simulator
from services.runtime.clock import FileOffsetClock
from services.runtime.portal_client import (
    AUTH_PATH,
    SERVICE_PATH,
    PortalClient,
    PortalConfig,
    PortalUnavailable,
)

USER, PASSWORD = "lienthong-test", "mật-khẩu:có-dấu-hai-chấm"
UNIT = "000.00.00.H29"
CODE = "000.00.01.H29-251124-0007"
SMS_KEY, SMS_SECRET = "sms-test-key", "sms-test-webhook-secret"
DELETE = object()


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("simulators")


@pytest.fixture(scope="module")
def clock(sim_dir: Path) -> FileOffsetClock:
    return FileOffsetClock(sim_dir / "clock-offset")


@pytest.fixture(scope="module")
def portal_sim(sim_dir: Path, clock: FileOffsetClock) -> Iterator[Simulator]:
    sim = Simulator(
        "portal",
        env={"PORTAL_SIM_USERS": f"{USER}:{PASSWORD},other:other-pw"},
        clock_file=clock.path,
        log=sim_dir / "portal.log",
    ).start()
    yield sim
    sim.stop()


@pytest.fixture
def portal(portal_sim: Simulator) -> Simulator:
    portal_sim.reset()
    return portal_sim


def config(sim: Simulator, **kw: Any) -> PortalConfig:
    return PortalConfig(sim.service_url, USER, PASSWORD, UNIT, **kw)


@pytest.fixture
async def client(portal: Simulator) -> AsyncIterator[PortalClient]:
    c = PortalClient(config(portal, timeout_s=5))
    yield c
    await c.close()


def record(code: str = CODE, **changes: Any) -> dict[str, Any]:
    """A full, valid DongBoHoSoMC record (every list filled)."""
    r: dict[str, Any] = {
        "MaHoSo": code,
        "MaTTHC": "1.009972.000.00.00.H29",
        "TenTTHC": "Cấp giấy phép xây dựng",
        "MaLinhVuc": "XD",
        "TenLinhVuc": "Hoạt động xây dựng",
        "KenhThucHien": "1",
        "ChuHoSo": "Công ty TNHH Xây dựng Minh Long",
        "SoGiayToChuHoSo": "0101234567",
        "LoaiDoiTuong": "2",
        "MaDoiTuong": "",
        "Email": "minhlong@example.vn",
        "SoDienThoai": "0912345678",
        "TrichYeuHoSo": "Xin cấp phép xây dựng\ntòa nhà văn phòng 9 tầng",
        "NgayTiepNhan": "20251124093000",
        "NgayHenTra": "20251215170000",
        "TrangThaiHoSo": "2",
        "NgayTra": "",
        "HinhThuc": "0",
        "NgayKetThucXuLy": "",
        "DonViXuLy": "Sở Xây dựng Thành phố Hồ Chí Minh",
        "NgayNopHoSo": "",
        "NgayTuChoi": "",
        "DinhDanhCHS": [{"LoaiDinhDanh": "1", "SoDinhDanh": "079123456789"}],
        "TaiLieuNop": [
            {
                "TepDinhKemId": "f-1",
                "TenTepDinhKem": "Đơn đề nghị cấp phép.pdf",
                "IsDeleted": "False",
                "MaThanhPhanHoSo": "DDN",
                "DuongDanTaiTepTin": "https://files.example.vn/f-1",
            }
        ],
        "DanhSachGiayToKetQua": [
            {
                "TenGiayTo": "Giấy phép xây dựng",
                "MaThanhPhanHoSo": "GPXD",
                "GiayToId": "kq-1",
                "DuongDanTepTinKetQua": "https://files.example.vn/kq-1",
            }
        ],
        "DanhSachLePhi": [
            {
                "TenPhiLePhi": "Lệ phí cấp giấy phép xây dựng",
                "MaPhiLePhi": "LP-XD",
                "HinhThucThu": "1",
                "Gia": "150000",
                "LoaiPhiLePhi": "1",
            }
        ],
        "DanhSachHoSoBoSung": [
            {
                "HoSoBoSungId": "1",
                "NguoiYeuCauBoSung": "Lê Thị Hoa",
                "NoiDungBoSung": "Bổ sung bản vẽ thiết kế",
                "NgayBoSung": "20251201090000",
                "NgayHenTraTruoc": "20251215170000",
                "NgayHenTraMoi": "20251222170000",
                "TrangThaiBoSung": "0",
                "DanhSachGiayToBoSung": [
                    {"TepDinhKemId": "f-2", "TenTepDinhKem": "Bản vẽ.pdf", "IsDeleted": "False"}
                ],
            }
        ],
    }
    r.update(changes)
    return r


def step(code: str = CODE, **changes: Any) -> dict[str, Any]:
    s = {
        "MaHoSo": code,
        "NguoiXuLy": "Trần Văn Bình",
        "ChucDanh": "Chuyên viên",
        "ThoiDiemXuLy": "20251124100000",
        "PhongBanXuLy": "Phòng Quản lý hoạt động xây dựng",
        "NoiDungXuLy": "Thẩm định hồ sơ",
        "TrangThai": "4",
        "NgayBatDau": "20251124100000",
        "NgayKetThucTheoQuyDinh": "20251201170000",
    }
    s.update(changes)
    return s


def message(ref: str = "tb-1", code: str = CODE) -> dict[str, str]:
    return {
        "MaThongBao": ref,
        "MaHoSo": code,
        "MaDoiTuong": "techid-123456",
        "TieuDe": "Hồ sơ đã được tiếp nhận",
        "NoiDung": "Hồ sơ của bạn đã được tiếp nhận.\nHẹn trả: 15/12/2025.",
    }


def mutate(item: dict[str, Any], path: str, value: Any) -> None:
    """Set (or delete) ``TaiLieuNop[0].IsDeleted``-style paths."""
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", path)
    keys: list[Any] = [int(p[1:-1]) if p.startswith("[") else p for p in parts]
    target: Any = item
    for key in keys[:-1]:
        target = target[key]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value


async def sync(client: PortalClient, *records: dict[str, Any], updating: bool = False) -> Any:
    return await client.call(
        "DongBoHoSoMC", isUpdating="True" if updating else "False", data=list(records)
    )


async def raw_service(sim: Simulator, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sim.service_url, timeout=5) as http:
        return await http.post(SERVICE_PATH, json=body)


async def login(sim: Simulator) -> str:
    async with httpx.AsyncClient(base_url=sim.service_url, timeout=5) as http:
        r = await http.post(AUTH_PATH, json={"username": USER, "password": PASSWORD})
    session: str = r.json()["session"]
    return session


def port_refuses(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def wait_until(probe: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: last {value!r}")
        time.sleep(interval)


# -- the portal: login and sessions -----------------------------------------------------


async def test_login_answers_a_session_and_refuses_a_wrong_password(portal: Simulator) -> None:
    async with httpx.AsyncClient(base_url=portal.service_url, timeout=5) as http:
        good = (await http.post(AUTH_PATH, json={"username": USER, "password": PASSWORD})).json()
        bad = (await http.post(AUTH_PATH, json={"username": USER, "password": "sai"})).json()
        nobody = (await http.post(AUTH_PATH, json={"username": "x", "password": "y"})).json()
        junk = (await http.post(AUTH_PATH, content=b"not json")).json()
    assert good["error_code"] == 0 and len(good["session"]) > 20 and good["message"]
    for answer in (bad, nobody, junk):
        assert answer["error_code"] == -1 and answer["message"] and "session" not in answer
    wrong = PortalClient(PortalConfig(portal.service_url, USER, "sai", UNIT))
    with pytest.raises(PortalUnavailable, match="login refused: -1"):
        await wrong.call("TraCuuHoSo", mahoso=CODE)
    await wrong.close()
    stats = portal.stats()
    assert stats["logins"] == 1 and stats["logins_refused"] == 4


async def test_session_expires_with_the_shared_clock_and_the_client_renews_it(
    portal: Simulator, client: PortalClient, clock: FileOffsetClock
) -> None:
    assert (await sync(client, record())).ok
    session = await client.session()
    clock.advance(timedelta(seconds=599))
    ok = await raw_service(
        portal, {"session": session, "madonvi": UNIT, "service": "TraCuuHoSo", "mahoso": CODE}
    )
    assert ok.json()["error_code"] == 0
    clock.advance(timedelta(seconds=2))  # 601 s of the shared clock since the login
    expired = await raw_service(
        portal, {"session": session, "madonvi": UNIT, "service": "TraCuuHoSo", "mahoso": CODE}
    )
    assert expired.status_code == 200
    assert expired.json() == {
        "error_code": -2,
        "message": "Phiên làm việc không hợp lệ hoặc đã hết hạn",
    }
    answer = await client.call("TraCuuHoSo", mahoso=CODE)  # -2, then a new login
    assert answer.ok and answer.body["result"][0]["MaHoSo"] == CODE
    assert client.logins == 2 and portal.stats()["logins"] == 2
    unknown = await raw_service(
        portal, {"session": "forged", "madonvi": UNIT, "service": "TraCuuHoSo", "mahoso": CODE}
    )
    assert unknown.json()["error_code"] == -2


# -- the portal: records ----------------------------------------------------------------


async def test_a_full_record_round_trips_through_lookup(
    portal: Simulator, client: PortalClient
) -> None:
    rec = record()
    answer = await sync(client, rec)
    assert answer.ok and answer.body == {"error_code": 0, "message": "Đồng bộ thành công"}
    found = await client.call("TraCuuHoSo", mahoso=CODE)
    assert found.body["result"] == [rec]
    missing = await client.call("TraCuuHoSo", mahoso="000.00.01.H29-251124-0008")
    assert missing.ok and missing.body["result"] == []
    assert portal.admin("GET", f"/records/{CODE}") == rec
    assert portal.admin("GET", "/records") == {CODE: rec}
    # optional fields may be left out altogether
    minimal = {
        k: rec[k]
        for k in (
            "MaHoSo", "MaTTHC", "TenTTHC", "KenhThucHien", "ChuHoSo", "LoaiDoiTuong",
            "NgayTiepNhan", "TrangThaiHoSo", "DonViXuLy",
        )
    }  # fmt: skip
    minimal["MaHoSo"] = "000.00.01.H29-251124-10000"  # a fifth serial digit past 9,999
    assert (await sync(client, minimal)).ok


BAD_RECORDS: list[tuple[str, str, Any]] = [
    # (the field the answer names, the path changed, the value; DELETE removes it)
    ("MaHoSo", "MaHoSo", DELETE),
    ("MaHoSo", "MaHoSo", "000.00.01.H29-251124-7"),
    ("MaHoSo", "MaHoSo", "HS-0001"),
    ("MaTTHC", "MaTTHC", ""),
    ("MaTTHC", "MaTTHC", "1.009972 H29"),
    ("TenTTHC", "TenTTHC", DELETE),
    ("TenTTHC", "TenTTHC", "x" * 1001),
    ("KenhThucHien", "KenhThucHien", "4"),
    ("KenhThucHien", "KenhThucHien", 1),
    ("ChuHoSo", "ChuHoSo", "   "),
    ("ChuHoSo", "ChuHoSo", "Nguyễn\x00An"),
    ("ChuHoSo", "ChuHoSo", "Nguyễn\nAn"),
    ("ChuHoSo", "ChuHoSo", unicodedata.normalize("NFD", "Nguyễn Văn An")),
    ("LoaiDoiTuong", "LoaiDoiTuong", "5"),
    ("LoaiDoiTuong", "LoaiDoiTuong", DELETE),
    ("NgayTiepNhan", "NgayTiepNhan", ""),
    ("NgayTiepNhan", "NgayTiepNhan", "2025-11-24 09:30:00"),
    ("NgayTiepNhan", "NgayTiepNhan", "20250230093000"),
    ("NgayTiepNhan", "NgayTiepNhan", "19991124093000"),
    ("NgayTiepNhan", "NgayTiepNhan", 20251124093000),
    ("NgayHenTra", "NgayHenTra", "20251324000000"),
    ("NgayTra", "NgayTra", "20251124246000"),
    ("NgayKetThucXuLy", "NgayKetThucXuLy", "x"),
    ("NgayNopHoSo", "NgayNopHoSo", "2025112409300"),
    ("NgayTuChoi", "NgayTuChoi", "20251124093060"),
    ("TrangThaiHoSo", "TrangThaiHoSo", "0"),
    ("TrangThaiHoSo", "TrangThaiHoSo", "11"),
    ("TrangThaiHoSo", "TrangThaiHoSo", 2),
    ("DonViXuLy", "DonViXuLy", DELETE),
    ("HinhThuc", "HinhThuc", "2"),
    ("HinhThuc", "HinhThuc", ""),
    ("Email", "Email", "không-phải-email"),
    ("SoDienThoai", "SoDienThoai", "09-12"),
    ("TrichYeuHoSo", "TrichYeuHoSo", "x" * 1001),
    ("TrichYeuHoSo", "TrichYeuHoSo", "tab\tin text"),
    ("ViTriHoSo", "ViTriHoSo", "unknown field"),
    ("DinhDanhCHS[0].SoDinhDanh", "DinhDanhCHS[0].SoDinhDanh", "079123456"),
    ("DinhDanhCHS[0].LoaiDinhDanh", "DinhDanhCHS[0].LoaiDinhDanh", "3"),
    ("TaiLieuNop", "TaiLieuNop", {"TepDinhKemId": "f-1"}),
    ("TaiLieuNop[0]", "TaiLieuNop[0]", "f-1"),
    ("TaiLieuNop[0].IsDeleted", "TaiLieuNop[0].IsDeleted", "false"),
    ("TaiLieuNop[0].IsDeleted", "TaiLieuNop[0].IsDeleted", False),
    ("TaiLieuNop[0].TepDinhKemId", "TaiLieuNop[0].TepDinhKemId", DELETE),
    ("TaiLieuNop[0].TenTepDinhKem", "TaiLieuNop[0].TenTepDinhKem", ""),
    ("TaiLieuNop[0].DuongDanTaiTepTin", "TaiLieuNop[0].DuongDanTaiTepTin", "ftp://x/y"),
    ("TaiLieuNop[0].DuongDanTaiTepTin", "TaiLieuNop[0].DuongDanTaiTepTin", "https://a b"),
    ("TaiLieuNop[0].MaThanhPhanHoSo", "TaiLieuNop[0].MaThanhPhanHoSo", "Đ N"),
    ("TaiLieuNop[0].KichThuoc", "TaiLieuNop[0].KichThuoc", "1024"),
    ("DanhSachGiayToKetQua[0].GiayToId", "DanhSachGiayToKetQua[0].GiayToId", DELETE),
    ("DanhSachGiayToKetQua[0].TenGiayTo", "DanhSachGiayToKetQua[0].TenGiayTo", ""),
    (
        "DanhSachGiayToKetQua[0].DuongDanTepTinKetQua",
        "DanhSachGiayToKetQua[0].DuongDanTepTinKetQua",
        "C:\\kq.pdf",
    ),
    ("DanhSachLePhi[0].Gia", "DanhSachLePhi[0].Gia", "150.000"),
    ("DanhSachLePhi[0].Gia", "DanhSachLePhi[0].Gia", 150000),
    ("DanhSachLePhi[0].Gia", "DanhSachLePhi[0].Gia", ""),
    ("DanhSachLePhi[0].TenPhiLePhi", "DanhSachLePhi[0].TenPhiLePhi", DELETE),
    ("DanhSachHoSoBoSung[0].HoSoBoSungId", "DanhSachHoSoBoSung[0].HoSoBoSungId", 1),
    ("DanhSachHoSoBoSung[0].NgayBoSung", "DanhSachHoSoBoSung[0].NgayBoSung", ""),
    ("DanhSachHoSoBoSung[0].NgayHenTraTruoc", "DanhSachHoSoBoSung[0].NgayHenTraTruoc", "2025"),
    (
        "DanhSachHoSoBoSung[0].NgayHenTraMoi",
        "DanhSachHoSoBoSung[0].NgayHenTraMoi",
        "20251232170000",
    ),
    ("DanhSachHoSoBoSung[0].TrangThaiBoSung", "DanhSachHoSoBoSung[0].TrangThaiBoSung", "2"),
    ("DanhSachHoSoBoSung[0].NoiDungBoSung", "DanhSachHoSoBoSung[0].NoiDungBoSung", DELETE),
    (
        "DanhSachHoSoBoSung[0].DanhSachGiayToBoSung[0].IsDeleted",
        "DanhSachHoSoBoSung[0].DanhSachGiayToBoSung[0].IsDeleted",
        "Yes",
    ),
    ("DanhSachHoSoBoSung", "DanhSachHoSoBoSung", [{}] * 21),
]


@pytest.mark.parametrize(("field", "path", "value"), BAD_RECORDS)
async def test_every_rule_refuses_the_record_naming_the_field(
    portal: Simulator, client: PortalClient, field: str, path: str, value: Any
) -> None:
    rec = record()
    mutate(rec, path, value)
    code = rec.get("MaHoSo") if isinstance(rec.get("MaHoSo"), str) else ""
    answer = await sync(client, rec)
    assert answer.error_code == -1, answer
    assert answer.body["field"] == field, answer.body
    assert answer.body["MaHoSo"] == code
    assert answer.message.startswith(f"MaHoSo {code or '?'}: {field}: "), answer.message
    assert portal.admin("GET", "/records") == {}
    (entry,) = portal.admin("GET", "/log?service=DongBoHoSoMC")
    assert entry["outcome"] == "refused" and entry["field"] == field


BAD_ENVELOPES: list[tuple[str, dict[str, Any]]] = [
    ("isUpdating", {"service": "DongBoHoSoMC", "isUpdating": False, "data": [record()]}),
    ("isUpdating", {"service": "DongBoHoSoMC", "data": [record()]}),
    ("data", {"service": "DongBoHoSoMC", "isUpdating": "False", "data": []}),
    ("data", {"service": "DongBoHoSoMC", "isUpdating": "False", "data": record()}),
    ("data", {"service": "DongBoHoSoMC", "isUpdating": "False", "data": [record()] * 501}),
    ("MaHoSo", {"service": "DongBoHoSoMC", "isUpdating": "False", "data": [record()] * 2}),
    ("extra", {"service": "DongBoHoSoMC", "isUpdating": "False", "data": [record()], "extra": 1}),
    (
        "madonvi",
        {"service": "DongBoHoSoMC", "isUpdating": "False", "data": [record()], "madonvi": ""},
    ),
    ("service", {"service": "XoaHoSo", "data": [record()]}),
    ("mahoso", {"service": "TraCuuHoSo", "mahoso": 7}),
    ("mahoso", {"service": "TraCuuHoSo"}),
    ("isUpdating", {"service": "CapNhatTienDoHoSoMC", "isUpdating": "False", "data": [step()]}),
]


@pytest.mark.parametrize(("field", "body"), BAD_ENVELOPES)
async def test_a_bad_envelope_is_refused_naming_the_field(
    portal: Simulator, field: str, body: dict[str, Any]
) -> None:
    session = await login(portal)
    answer = await raw_service(portal, {"session": session, "madonvi": UNIT, **body})
    assert answer.status_code == 200
    assert answer.json()["error_code"] == -1 and answer.json()["field"] == field, answer.json()
    assert portal.admin("GET", "/records") == {}


async def test_a_lone_surrogate_is_refused(portal: Simulator) -> None:
    """Sent as a JSON escape (our client cannot even encode one)."""
    session = await login(portal)
    body = {"session": session, "madonvi": UNIT, "service": "DongBoHoSoMC",
            "isUpdating": "False", "data": [record(ChuHoSo="Nguy\ud800n")]}  # fmt: skip
    async with httpx.AsyncClient(base_url=portal.service_url, timeout=5) as http:
        r = await http.post(SERVICE_PATH, content=json.dumps(body, ensure_ascii=True).encode())
    assert r.json()["error_code"] == -1 and r.json()["field"] == "ChuHoSo"


async def test_a_body_that_is_not_json_is_refused(portal: Simulator) -> None:
    async with httpx.AsyncClient(base_url=portal.service_url, timeout=5) as http:
        for content in (b"{", b"[1, 2]", b'{"a": NaN}', b"\xff\xfe"):
            body = (await http.post(SERVICE_PATH, content=content)).json()
            assert body["error_code"] == -1 and body["field"] == "body", (content, body)


async def test_a_batch_is_all_or_nothing(portal: Simulator, client: PortalClient) -> None:
    one, two, three = (f"000.00.01.H29-251124-000{n}" for n in (1, 2, 3))
    answer = await sync(client, record(one), record(two, TrangThaiHoSo="12"), record(three))
    assert answer.error_code == -1
    assert answer.body["MaHoSo"] == two and answer.body["field"] == "TrangThaiHoSo"
    assert portal.admin("GET", "/records") == {}
    assert (await sync(client, record(one))).ok
    # a create batch where one is held already: refused whole (3), the new one not kept
    answer = await sync(client, record(three), record(one, TrangThaiHoSo="4"))
    assert answer.error_code == 3 and answer.body["MaHoSo"] == one
    assert set(portal.admin("GET", "/records")) == {one}
    assert portal.admin("GET", f"/records/{one}")["TrangThaiHoSo"] == "2"
    # an update batch where one is unknown: refused whole (-4)
    answer = await sync(client, record(one, TrangThaiHoSo="4"), record(two), updating=True)
    assert answer.error_code == -4 and answer.body["MaHoSo"] == two
    assert portal.admin("GET", f"/records/{one}")["TrangThaiHoSo"] == "2"
    assert portal.stats()["refused"] == {"-1": 1, "3": 1, "-4": 1}


async def test_create_twice_answers_3_and_update_of_unknown_answers_minus_4(
    portal: Simulator, client: PortalClient
) -> None:
    assert (await sync(client, record())).ok
    again = await sync(client, record(TrangThaiHoSo="4"))
    assert again.error_code == 3
    assert again.message == f"MaHoSo {CODE}: hồ sơ đã tồn tại"
    # open-source clients re-send it as an update
    assert (await sync(client, record(TrangThaiHoSo="4"), updating=True)).ok
    assert portal.admin("GET", f"/records/{CODE}")["TrangThaiHoSo"] == "4"
    other = "000.00.01.H29-251124-0099"
    unknown = await sync(client, record(other), updating=True)
    assert unknown.error_code == -4
    assert unknown.message == f"MaHoSo {other}: hồ sơ chưa tồn tại"
    assert other not in portal.admin("GET", "/records")


async def test_progress_steps_are_kept_in_arrival_order(
    portal: Simulator, client: PortalClient
) -> None:
    first, second = step(), step(ThoiDiemXuLy="20251125100000", NoiDungXuLy="Trình ký")
    unknown = await client.call("CapNhatTienDoHoSoMC", data=[first])
    assert unknown.error_code == -4 and unknown.body["MaHoSo"] == CODE
    assert (await sync(client, record())).ok
    assert (await client.call("CapNhatTienDoHoSoMC", data=[first, second])).ok
    assert (await client.call("CapNhatTienDoHoSoMC", data=[second])).ok  # a retry
    assert portal.admin("GET", f"/progress/{CODE}") == [first, second, second]
    stats = portal.stats()
    assert stats["progress_steps"] == 3 and stats["progress_duplicates"] == 1
    for path, value in [
        ("TrangThai", "11"),
        ("ThoiDiemXuLy", "20251124250000"),
        ("NguoiXuLy", "x" * 51),
        ("NgayKetThucTheoQuyDinh", "tomorrow"),
        ("NoiDungXuLy", DELETE),
        ("GhiChu", "unknown field"),
    ]:
        bad = step()
        mutate(bad, path, value)
        answer = await client.call("CapNhatTienDoHoSoMC", data=[step(), bad])
        assert answer.error_code == -1 and answer.body["field"] == path, answer.body
    assert len(portal.admin("GET", f"/progress/{CODE}")) == 3


async def test_messages_to_applicants_and_their_duplicates(
    portal: Simulator, client: PortalClient
) -> None:
    answer = await client.call("GuiThongBaoNguoiDan", data=[message("tb-1"), message("tb-2")])
    assert answer.ok
    assert (await client.call("GuiThongBaoNguoiDan", data=[message("tb-1")])).ok
    held = portal.admin("GET", "/messages")
    assert [(m["message"]["MaThongBao"], m["copies"]) for m in held] == [("tb-1", 2), ("tb-2", 1)]
    stats = portal.stats()
    assert stats["messages"] == 2 and stats["message_duplicates"] == 1
    bad = message("tb-3")
    del bad["MaDoiTuong"]
    refused = await client.call("GuiThongBaoNguoiDan", data=[bad])
    assert refused.error_code == -1 and refused.body["field"] == "MaDoiTuong"
    bad = {**message("tb-3"), "NoiDung": "a\x07b"}
    refused = await client.call("GuiThongBaoNguoiDan", data=[bad])
    assert refused.error_code == -1 and refused.body["field"] == "NoiDung"


async def test_the_log_shows_each_call_with_the_shared_clock(
    portal: Simulator, client: PortalClient, clock: FileOffsetClock
) -> None:
    clock.advance(timedelta(hours=3))
    assert (await sync(client, record())).ok
    assert (await sync(client, record(TrangThaiHoSo="4"))).error_code == 3
    assert (await sync(client, record(TrangThaiHoSo="4"), updating=True)).ok
    assert (await sync(client, record(TrangThaiHoSo="4"), updating=True)).ok  # same again
    entries = portal.admin("GET", f"/log?code={CODE}&service=DongBoHoSoMC")
    got = [
        (e["outcome"], e["error_code"], e["isUpdating"], e["items"][0]["TrangThaiHoSo"],
         e["items"][0].get("duplicate"))
        for e in entries
    ]  # fmt: skip
    assert got == [
        ("accepted", 0, "False", "2", False),
        ("refused", 3, "False", "4", None),
        ("accepted", 0, "True", "4", False),
        ("accepted", 0, "True", "4", True),
    ]
    at = datetime.fromisoformat(entries[0]["at"])
    assert abs((at - clock.now()).total_seconds()) < 30  # the shared clock, 3 h ahead
    assert entries[0]["madonvi"] == UNIT
    stats = portal.stats()
    assert stats["duplicates"] == 1 and stats["records"] == 1
    assert stats["calls"] == 4 and stats["accepted"] == 3 and stats["refused"] == {"3": 1}


# -- the portal: faults -----------------------------------------------------------------


async def test_timeout_stores_the_call_then_answers_too_late(portal: Simulator) -> None:
    impatient = PortalClient(config(portal, timeout_s=1.0))
    try:
        await impatient.session()  # logged in before the fault
        portal.fault("timeout", delay_s=3)
        started = time.monotonic()
        with pytest.raises(PortalUnavailable, match="Timeout"):
            await sync(impatient, record())
        assert time.monotonic() - started < 2.5
        assert CODE in portal.admin("GET", "/records")  # the portal has it all the same
        portal.fault("timeout", delay_s=1)  # a patient caller gets the answer, late
        started = time.monotonic()
        late = await raw_service(portal, {"session": await impatient.session(),
                                          "madonvi": UNIT, "service": "TraCuuHoSo",
                                          "mahoso": CODE})  # fmt: skip
        assert time.monotonic() - started >= 1.0 and late.json()["result"]
        portal.fault("ok")
        retry = await sync(impatient, record())  # the client's retry: a create again
        assert retry.error_code == 3
        assert (await sync(impatient, record(), updating=True)).ok  # re-sent as an update
    finally:
        await impatient.close()
    stats = portal.stats()
    assert stats["duplicates"] == 1 and stats["faults_injected"] == {"timeout": 2}
    dups = [i["duplicate"] for e in portal.admin("GET", f"/log?code={CODE}") for i in e["items"]
            if "duplicate" in i]  # fmt: skip
    assert dups == [False, True]


async def test_down_refuses_connections_and_comes_back_when_the_clock_passes(
    portal: Simulator, client: PortalClient, clock: FileOffsetClock
) -> None:
    assert (await sync(client, record())).ok
    answer = portal.fault("down", minutes=5)
    assert answer["mode"] == "down" and answer["until"]
    assert port_refuses(portal.port)
    with pytest.raises(PortalUnavailable, match="ConnectError"):
        await client.call("TraCuuHoSo", mahoso=CODE)
    health = portal.admin("GET", "/health")
    assert health["service_port_up"] is False  # the admin port answers all along
    clock.advance(timedelta(minutes=4))
    await asyncio.sleep(0.5)
    assert port_refuses(portal.port)
    clock.advance(timedelta(minutes=2))
    wait_until(lambda: not port_refuses(portal.port))
    found = await client.call("TraCuuHoSo", mahoso=CODE)
    assert found.ok and found.body["result"]  # it kept what it held
    wait_until(lambda: portal.admin("GET", "/health")["service_port_up"])
    # without minutes: down until told otherwise
    portal.fault("down")
    clock.advance(timedelta(days=1))
    await asyncio.sleep(0.3)
    assert port_refuses(portal.port)
    portal.fault("ok")
    assert not port_refuses(portal.port)


async def test_error_answers_the_status_in_the_portals_shape(
    portal: Simulator, client: PortalClient, clock: FileOffsetClock
) -> None:
    session = await client.session()  # logged in before the fault
    portal.fault("error", status=503, minutes=10)
    r = await raw_service(
        portal, {"session": session, "madonvi": UNIT, "service": "TraCuuHoSo", "mahoso": CODE}
    )
    assert r.status_code == 503
    assert r.json()["error_code"] == 503 and r.json()["message"]
    with pytest.raises(PortalUnavailable, match="HTTP 503"):
        await sync(client, record())
    assert portal.admin("GET", "/records") == {}  # nothing kept
    assert portal.stats()["refused"] == {"503": 2}
    clock.advance(timedelta(minutes=11))  # the fault's end
    assert (await sync(client, record())).ok
    portal.fault("error", status=500, rate=0.0)  # a share of none
    assert (await client.call("TraCuuHoSo", mahoso=CODE)).ok


async def test_reject_refuses_records_holding_the_field(
    portal: Simulator, client: PortalClient
) -> None:
    portal.fault("reject", field="NgayHenTra")
    refused = await sync(client, record())
    assert refused.error_code == -1 and refused.body["field"] == "NgayHenTra"
    assert portal.admin("GET", "/records") == {}
    assert (await sync(client, record(NgayHenTra=""))).ok
    with pytest.raises(httpx.HTTPStatusError):
        portal.fault("reject")  # which field?
    with pytest.raises(httpx.HTTPStatusError):
        portal.fault("flood")


async def test_a_restarted_portal_still_holds_what_it_accepted(
    sim_dir: Path, clock: FileOffsetClock, tmp_path: Path
) -> None:
    data = tmp_path / "portal.jsonl"

    def start() -> Simulator:
        return Simulator(
            "portal",
            env={"PORTAL_SIM_USERS": f"{USER}:{PASSWORD}"},
            clock_file=clock.path,
            data=data,
            log=tmp_path / "portal.log",
        ).start()

    sim = start()
    c = PortalClient(config(sim))
    try:
        assert (await sync(c, record())).ok
        assert (await c.call("CapNhatTienDoHoSoMC", data=[step()])).ok
        assert (await c.call("GuiThongBaoNguoiDan", data=[message()])).ok
        assert (await sync(c, record(TrangThaiHoSo="12"))).error_code == -1  # not kept
    finally:
        await c.close()
        sim.stop()
    with data.open("a") as f:
        f.write('{"cut off by a crash')  # a torn last line is skipped
    sim = start()
    c = PortalClient(config(sim))
    try:
        found = await c.call("TraCuuHoSo", mahoso=CODE)
        assert found.body["result"] == [record()]
        assert (await sync(c, record())).error_code == 3
        assert sim.admin("GET", f"/progress/{CODE}") == [step()]
        assert (await c.call("GuiThongBaoNguoiDan", data=[message()])).ok
        stats = sim.stats()
        assert stats["message_duplicates"] == 1 and stats["journal_lines_skipped"] == 1
    finally:
        await c.close()
        sim.stop()


# -- the SMS gateway --------------------------------------------------------------------


class Receiver:
    """A small HTTP server standing in for our notification service's receipts webhook."""

    def __init__(self, port: int | None = None, status: int = 204) -> None:
        self.port = port or free_port()
        self.status = status
        self.received: list[tuple[dict[str, str], bytes]] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/sms/receipts"

    def start(self) -> Receiver:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait(self, n: int, timeout: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        wait_until(lambda: len(self.received) >= n, timeout)
        return self.received


@pytest.fixture(scope="module")
def sms_sim(sim_dir: Path, clock: FileOffsetClock) -> Iterator[Simulator]:
    sim = Simulator(
        "sms",
        env={"SMS_SIM_API_KEY": SMS_KEY, "SMS_SIM_WEBHOOK_SECRET": SMS_SECRET},
        args=["--receipt-delay", "0.1", "--receipt-retry-base", "0.2",
              "--receipt-retry-max", "0.5", "--receipt-retry-for", "15"],
        clock_file=clock.path,
        log=sim_dir / "sms.log",
    ).start()  # fmt: skip
    yield sim
    sim.stop()


@pytest.fixture
def sms(sms_sim: Simulator) -> Simulator:
    sms_sim.reset()
    return sms_sim


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def send(
    sim: Simulator, *, key: str | None = SMS_KEY, timeout: float = 5.0, **body: Any
) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(timeout=timeout) as http:
        return http.post(f"{sim.service_url}/v1/messages", json=body, headers=headers)


def sms_body(receiver: Receiver | None = None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "to": "0912345678",
        "text": "Hồ sơ 000.00.01.H29-251124-0007 đã được tiếp nhận, hẹn trả 15/12/2025.",
        "client_ref": "ntf-0001",
        "callback_url": receiver.url if receiver else "http://127.0.0.1:9/v1/sms/receipts",
    }
    body.update(changes)
    return body


def signed(headers: dict[str, str], raw: bytes, secret: str = SMS_SECRET) -> bool:
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("x-signature", ""), expected)


def test_sms_needs_the_api_key(sms: Simulator, receiver: Receiver) -> None:
    for key in (None, "wrong-key"):
        r = send(sms, key=key, **sms_body(receiver))
        assert r.status_code == 401 and r.json()["field"] == "authorization"
    with httpx.Client() as http:
        r = http.post(f"{sms.service_url}/v1/messages", json=sms_body(receiver),
                      headers={"authorization": f"Basic {SMS_KEY}"})  # fmt: skip
    assert r.status_code == 401
    assert send(sms, **sms_body(receiver)).status_code == 202
    assert sms.stats()["refused"] == {"401": 3}


BAD_SMS: list[tuple[str, dict[str, Any]]] = [
    ("to", {"to": "0123456789"}),
    ("to", {"to": "091234567"}),
    ("to", {"to": "09123456789"}),
    ("to", {"to": "+84912345678"}),
    ("to", {"to": 912345678}),
    ("to", {"to": None}),
    ("text", {"text": ""}),
    ("text", {"text": "x" * 1001}),
    ("text", {"text": "a\x00b"}),
    ("text", {"text": 5}),
    ("client_ref", {"client_ref": ""}),
    ("client_ref", {"client_ref": "x" * 101}),
    ("client_ref", {"client_ref": "mã-1"}),
    ("client_ref", {"client_ref": "a\tb"}),
    ("callback_url", {"callback_url": "ftp://x/y"}),
    ("callback_url", {"callback_url": "http://a b/"}),
    ("from", {"from": "LIENTHONG"}),
]


@pytest.mark.parametrize(("field", "changes"), BAD_SMS)
def test_sms_validation_names_the_field(
    sms: Simulator, field: str, changes: dict[str, Any]
) -> None:
    r = send(sms, **sms_body(None, **changes))
    assert r.status_code == 400
    assert r.json()["field"] == field and r.json()["error"].startswith(f"{field}: ")
    assert sms.admin("GET", "/messages") == []


def test_sms_body_must_be_a_json_object(sms: Simulator) -> None:
    with httpx.Client() as http:
        for content in (b"{", b"[]", b'"text"'):
            r = http.post(f"{sms.service_url}/v1/messages", content=content,
                          headers={"authorization": f"Bearer {SMS_KEY}"})  # fmt: skip
            assert r.status_code == 400 and r.json()["field"] == "body"


def test_sms_receipt_arrives_signed_with_the_shared_clock(
    sms: Simulator, receiver: Receiver, clock: FileOffsetClock
) -> None:
    clock.advance(timedelta(days=2))
    r = send(sms, **sms_body(receiver, text="Một tin có dấu: ắ ễ ộ"))
    assert r.status_code == 202 and r.json()["status"] == "accepted"
    gateway_id = r.json()["id"]
    ((headers, raw),) = receiver.wait(1)
    assert signed(headers, raw)
    assert headers["content-type"] == "application/json"
    receipt = json.loads(raw)
    assert receipt == {
        "id": gateway_id,
        "client_ref": "ntf-0001",
        "to": "0912345678",
        "status": "delivered",
        "reason": None,
        "at": receipt["at"],
    }
    assert abs((datetime.fromisoformat(receipt["at"]) - clock.now()).total_seconds()) < 30
    held = sms.admin("GET", f"/messages/{gateway_id}")
    wait_until(lambda: sms.admin("GET", f"/messages/{gateway_id}")["receipts"])
    held = sms.admin("GET", f"/messages/{gateway_id}")
    assert held["receipts"][0]["outcome"] == "sent"
    assert sms.stats()["receipts_sent"] == 1


def test_sms_same_client_ref_answers_the_first_id(sms: Simulator, receiver: Receiver) -> None:
    first = send(sms, **sms_body(receiver))
    again = send(sms, **sms_body(receiver, text="another text, same ref"))
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    receiver.wait(1)
    time.sleep(0.5)
    assert len(receiver.received) == 1  # one message, one receipt
    stats = sms.stats()
    assert stats["accepted"] == 1 and stats["duplicates"] == 1


def test_sms_fail_numbers_get_failed_receipts(sms: Simulator, receiver: Receiver) -> None:
    sms.fault("ok", fail_numbers=["0987654321"])
    send(sms, **sms_body(receiver, to="0987654321", client_ref="a"))
    send(sms, **sms_body(receiver, to="0912345678", client_ref="b"))
    receipts = {json.loads(raw)["client_ref"]: json.loads(raw) for _, raw in receiver.wait(2)}
    assert receipts["a"]["status"] == "failed" and receipts["a"]["reason"]
    assert receipts["b"]["status"] == "delivered" and receipts["b"]["reason"] is None


def test_sms_malformed_receipts(sms: Simulator, receiver: Receiver) -> None:
    sms.fault("malformed_receipts")
    for n in range(3):
        assert send(sms, **sms_body(receiver, client_ref=f"m-{n}")).status_code == 202
        receiver.wait(n + 1)
    kinds = set()
    for headers, raw in receiver.received:
        try:
            body = json.loads(raw)
        except ValueError:
            assert signed(headers, raw)  # signed, but not JSON
            kinds.add("not_json")
            continue
        if not signed(headers, raw):
            assert body["status"] == "delivered"
            kinds.add("bad_signature")
        else:
            assert "status" not in body
            kinds.add("missing_fields")
    assert kinds == {"not_json", "missing_fields", "bad_signature"}
    assert sms.stats()["receipts_malformed"] == 3


def test_sms_drop_receipts(sms: Simulator, receiver: Receiver) -> None:
    sms.fault("drop_receipts")
    assert send(sms, **sms_body(receiver)).status_code == 202
    wait_until(lambda: sms.stats()["receipts_dropped"] == 1)
    time.sleep(0.3)
    assert receiver.received == []


def test_sms_receipt_retried_until_the_callback_answers(sms: Simulator) -> None:
    later = Receiver()  # its port chosen, nothing listening yet
    assert send(sms, **sms_body(later)).status_code == 202
    wait_until(lambda: sms.stats()["receipt_attempts_failed"] >= 2)
    later.start()
    try:
        ((headers, raw),) = later.wait(1)
        assert signed(headers, raw) and json.loads(raw)["status"] == "delivered"
    finally:
        later.stop()
    wait_until(lambda: sms.stats()["receipts_sent"] == 1)
    refusing = Receiver(status=400).start()
    try:
        send(sms, **sms_body(refusing, client_ref="refused"))
        wait_until(lambda: sms.stats()["receipts_refused"] == 1)
        time.sleep(0.5)
        assert len(refusing.received) == 1  # a 4xx is final: not tried again
    finally:
        refusing.stop()


def test_sms_down_comes_back_when_the_clock_passes(
    sms: Simulator, receiver: Receiver, clock: FileOffsetClock
) -> None:
    sms.fault("down", minutes=3)
    assert port_refuses(sms.port)
    with pytest.raises(httpx.ConnectError):
        send(sms, **sms_body(receiver))
    assert sms.admin("GET", "/health")["service_port_up"] is False
    clock.advance(timedelta(minutes=4))
    wait_until(lambda: not port_refuses(sms.port))
    assert send(sms, **sms_body(receiver)).status_code == 202


def test_sms_error_and_timeout(sms: Simulator, receiver: Receiver) -> None:
    sms.fault("error", status=503)
    r = send(sms, **sms_body(receiver))
    assert r.status_code == 503 and r.json()["error"]
    assert sms.admin("GET", "/messages") == []
    sms.fault("timeout", delay_s=3)
    with pytest.raises(httpx.ReadTimeout):
        send(sms, timeout=0.5, **sms_body(receiver))
    (held,) = sms.admin("GET", "/messages")  # accepted all the same
    receiver.wait(1)
    sms.fault("ok")
    retry = send(sms, **sms_body(receiver))  # the client's retry
    assert retry.status_code == 200 and retry.json()["id"] == held["id"]
    assert sms.stats()["duplicates"] == 1


def test_a_restarted_gateway_knows_its_messages(
    clock: FileOffsetClock, tmp_path: Path, receiver: Receiver
) -> None:
    def start() -> Simulator:
        return Simulator(
            "sms",
            env={"SMS_SIM_API_KEY": SMS_KEY, "SMS_SIM_WEBHOOK_SECRET": SMS_SECRET},
            clock_file=clock.path,
            data=tmp_path / "sms.jsonl",
            log=tmp_path / "sms.log",
        ).start()

    sim = start()
    try:
        first = send(sim, **sms_body(receiver))
        receiver.wait(1)
        wait_until(lambda: sim.stats()["receipts_sent"] == 1)
    finally:
        sim.stop()
    sim = start()
    try:
        again = send(sim, **sms_body(receiver))
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        time.sleep(0.5)
        assert len(receiver.received) == 1  # its receipt was delivered before: not again
    finally:
        sim.stop()
