"""The portal simulator's rules for what a record may hold, field by field.

No official specification of the portal's service API was found (see
services/runtime/portal_client.py). The field names, the code lists and "every value is a
JSON string" come from open-source clients (OpenCPS, the TD and Hà Giang clients); which
fields are required and how long each may be are the simulator's own, sensible choices.
Each rule refuses with the field's path (``TaiLieuNop[0].IsDeleted``) and a reason in
Vietnamese, as the portal would answer an official.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email

from contracts.text import forbidden_character

# Our dossier code: <agency id>-<yyMMdd>-<serial of 4, past 9,999 of 5 digits>.
MAHOSO = r"[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}-[0-9]{6}-[0-9]{4,5}"
MAHOSO_RE = re.compile(MAHOSO)
PORTAL_TIME = "%Y%m%d%H%M%S"
STATUSES = tuple(str(n) for n in range(1, 11))
_CODE = r"[0-9A-Za-z][0-9A-Za-z._-]*"
_URL = r"https?://[\x21-\x7e]+"
_PHONE = r"\+?[0-9]{8,15}"


class Invalid(Exception):
    """A value the portal refuses: the field's path and the reason."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


@dataclass(frozen=True)
class Str:
    """A JSON string: NFC, no control characters (a line break only where ``multiline``), at
    most ``max_len`` characters; optional ones may be ""."""

    max_len: int
    required: bool = False
    multiline: bool = False
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    hint: str = ""
    time: bool = False
    email: bool = False

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise Invalid(path, f"phải là chuỗi JSON (string), không phải {_json_type(value)}")
        if len(value) > 4 * self.max_len + 16:  # a cheap bound before scanning a megabyte
            raise Invalid(path, f"dài quá {self.max_len} ký tự")
        text = value.replace("\r\n", "\n") if self.multiline else value
        bad = forbidden_character(text, multiline=self.multiline)
        if bad is not None:
            pos, ch = bad
            raise Invalid(path, f"chứa ký tự điều khiển U+{ord(ch):04X} ở vị trí {pos}")
        if not unicodedata.is_normalized("NFC", value):
            raise Invalid(path, "chuỗi chưa chuẩn hóa Unicode NFC")
        if len(value) > self.max_len:
            raise Invalid(path, f"dài quá {self.max_len} ký tự ({len(value)})")
        if not value.strip():
            if self.required:
                raise Invalid(path, "bắt buộc, không được để trống")
            if value == "" and not self.choices:
                return
        if self.choices and value not in self.choices:
            allowed = ", ".join(self.choices)
            raise Invalid(path, f"giá trị {value!r} không hợp lệ, phải là một trong: {allowed}")
        if self.time:
            check_time(value, path)
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise Invalid(path, f"không đúng định dạng ({self.hint or self.pattern})")
        if self.email:
            try:
                validate_email(value, check_deliverability=False)
            except EmailNotValidError as exc:
                raise Invalid(path, f"địa chỉ email không hợp lệ ({exc})") from None


@dataclass(frozen=True)
class Int:
    """A JSON integer (not a string), within bounds."""

    lo: int
    hi: int
    required: bool = False

    def check(self, value: Any, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(path, f"phải là số nguyên JSON, không phải {_json_type(value)}")
        if not self.lo <= value <= self.hi:
            raise Invalid(path, f"phải trong khoảng {self.lo}..{self.hi}")


@dataclass(frozen=True)
class Obj:
    """A JSON object of known fields only; ``extra`` checks one field against another."""

    fields: dict[str, Str | Int | List]
    extra: Callable[[dict[str, Any], str], None] | None = None

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise Invalid(
                path or "data[]", f"phải là đối tượng JSON, không phải {_json_type(value)}"
            )
        for key in value:
            if key not in self.fields:
                raise Invalid(_join(path, str(key)), "trường không được hỗ trợ")
        for name, rule in self.fields.items():
            if name not in value:
                if rule.required:
                    raise Invalid(_join(path, name), "thiếu trường bắt buộc")
                continue
            rule.check(value[name], _join(path, name))
        if self.extra is not None:
            self.extra(value, path)


@dataclass(frozen=True)
class List:
    """A JSON array of objects."""

    item: Obj
    max_items: int
    required: bool = False
    min_items: int = 0

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise Invalid(path, f"phải là danh sách JSON (array), không phải {_json_type(value)}")
        if len(value) < self.min_items:
            raise Invalid(path, f"phải có ít nhất {self.min_items} phần tử")
        if len(value) > self.max_items:
            raise Invalid(path, f"nhiều quá {self.max_items} phần tử ({len(value)})")
        for i, item in enumerate(value):
            self.item.check(item, f"{path}[{i}]")


def check_time(value: str, path: str) -> datetime:
    """``yyyyMMddHHmmss`` that names a real moment (Asia/Ho_Chi_Minh; no zone on the wire)."""
    if not re.fullmatch(r"[0-9]{14}", value):
        raise Invalid(path, f"thời gian {value!r} phải theo định dạng yyyyMMddHHmmss")
    try:
        when = datetime.strptime(value, PORTAL_TIME)
    except ValueError:
        raise Invalid(path, f"thời gian {value!r} không phải ngày giờ có thật") from None
    if not 2000 <= when.year <= 2100:
        raise Invalid(path, f"thời gian {value!r}: năm phải trong khoảng 2000..2100")
    return when


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _text(max_len: int, required: bool = False, multiline: bool = False) -> Str:
    return Str(max_len, required=required, multiline=multiline)


def _code(max_len: int, required: bool = False) -> Str:
    return Str(max_len, required=required, pattern=_CODE, hint="chữ, số và . _ -")


def _choice(*values: str, required: bool = False) -> Str:
    return Str(max(len(v) for v in values), required=required, choices=values)


def _time(required: bool = False) -> Str:
    return Str(14, required=required, time=True)


def _url() -> Str:
    return Str(2000, pattern=_URL, hint="URL http(s) không có khoảng trắng")


def _identity(value: dict[str, Any], path: str) -> None:
    """A 12-digit citizen identity number (type 1) or a 9-digit old one (type 2)."""
    digits = {"1": 12, "2": 9}[value["LoaiDinhDanh"]]
    if len(value["SoDinhDanh"]) != digits:
        kind = value["LoaiDinhDanh"]
        raise Invalid(_join(path, "SoDinhDanh"), f"loại định danh {kind} phải có {digits} chữ số")


DOCUMENT = Obj(
    {
        "TepDinhKemId": _text(100, required=True),
        "TenTepDinhKem": _text(500, required=True),
        "IsDeleted": _choice("True", "False"),
        "MaThanhPhanHoSo": _code(100),
        "DuongDanTaiTepTin": _url(),
        # TD's client only
        "DuocSoHoa": _choice("0", "1"),
        "DuocTaiSuDung": _choice("0", "1"),
        "DuocLayTuKhoDMQG": _choice("0", "1"),
        "MaKetQuaThayThe": _text(100),
    }
)
RESULT_DOCUMENT = Obj(
    {
        "TenGiayTo": _text(500, required=True),
        "MaThanhPhanHoSo": _code(100),
        "GiayToId": _text(100, required=True),
        "DuongDanTepTinKetQua": _url(),
        "MaGiayToKetQua": _text(100),
    }
)
FEE = Obj(
    {
        "TenPhiLePhi": _text(500, required=True),
        "MaPhiLePhi": _code(100),
        # code meanings UNKNOWN (TD sends "1")
        "HinhThucThu": _code(20),
        "Gia": Str(15, required=True, pattern=r"[0-9]+", hint="số tiền bằng chữ số, đồng"),
        "LoaiPhiLePhi": _code(20),
    }
)
OTHER_ATTACHMENT = Obj(
    {
        "TenGiayTo": _text(500, required=True),
        "SoLuong": Int(0, 1000),
        "LoaiGiayTo": Int(0, 99),
    }
)
SUPPLEMENT = Obj(
    {
        # wire format UNKNOWN: no open-source client fills DanhSachHoSoBoSung
        "HoSoBoSungId": _text(100, required=True),
        "NguoiYeuCauBoSung": _text(255, required=True),
        "NoiDungBoSung": _text(2000, required=True, multiline=True),
        "NgayBoSung": _time(required=True),
        "NguoiTiepNhanBoSung": _text(255),
        "ThongTinTiepNhan": _text(2000, multiline=True),
        "NgayTiepNhanBoSung": _time(),
        "TrangThaiBoSung": _choice("0", "1"),
        "DanhSachGiayToBoSung": List(DOCUMENT, 100),
        "DanhSachLePhiBoSung": List(FEE, 50),
        "NgayHenTraTruoc": _time(),
        "NgayHenTraMoi": _time(),
    }
)
IDENTITY = Obj(
    {
        "LoaiDinhDanh": _choice("1", "2", required=True),
        "SoDinhDanh": Str(12, required=True, pattern=r"[0-9]+", hint="chữ số"),
    },
    extra=_identity,
)

RECORD = Obj(
    {
        "MaHoSo": Str(26, required=True, pattern=MAHOSO, hint="<mã đơn vị>-<yyMMdd>-<số thứ tự>"),
        "MaTTHC": _code(100, required=True),
        "TenTTHC": _text(1000, required=True),
        "MaLinhVuc": _code(100),
        "TenLinhVuc": _text(500),
        "SoBienNhan": _text(100),
        "KenhThucHien": _choice("1", "2", "3", required=True),
        "ChuHoSo": _text(255, required=True),
        "SoGiayToChuHoSo": _text(50),
        "LoaiDoiTuong": _choice("1", "2", "3", "4", required=True),
        "MaDoiTuong": _text(100),
        "ThongTinKhac": _text(2000, multiline=True),
        "Email": Str(255, email=True),
        "Fax": _text(50),
        "SoDienThoai": Str(16, pattern=_PHONE, hint="8 đến 15 chữ số, có thể có + ở đầu"),
        "TrichYeuHoSo": _text(1000, multiline=True),
        "NgayTiepNhan": _time(required=True),
        "NgayHenTra": _time(),
        "TrangThaiHoSo": _choice(*STATUSES, required=True),
        "NgayTra": _time(),
        "ThongTinTra": _text(2000, multiline=True),
        "HinhThuc": _choice("0", "1"),
        "NgayKetThucXuLy": _time(),
        "DonViXuLy": _text(255, required=True),
        "GhiChu": _text(2000, multiline=True),
        "NgayNopHoSo": _time(),
        "NgayTuChoi": _time(),
        "DuocThanhToanTrucTuyen": _choice("0", "1", "3"),
        "HoSoCoThanhPhanSoHoa": _choice("0", "1"),
        "NoiNopHoSo": _text(255),
        "TaiKhoanDuocXacThucVoiVNeID": _choice("0", "1"),
        "DinhDanhCHS": List(IDENTITY, 10),
        "DSKetNoiCSDL": List(Obj({"MaCSDL": _code(50, required=True)}), 20),
        "TaiLieuNop": List(DOCUMENT, 100),
        "DanhSachGiayToKetQua": List(RESULT_DOCUMENT, 100),
        "DanhSachLePhi": List(FEE, 50),
        "DanhSachTepDinhKemKhac": List(OTHER_ATTACHMENT, 50),
        "DanhSachHoSoBoSung": List(SUPPLEMENT, 20),
    }
)

STEP = Obj(
    {
        "MaHoSo": RECORD.fields["MaHoSo"],
        "NguoiXuLy": _text(50, required=True),  # TD's limit
        "ChucDanh": _text(255),
        "ThoiDiemXuLy": _time(required=True),
        "PhongBanXuLy": _text(255),
        "NoiDungXuLy": _text(2000, required=True, multiline=True),
        "TrangThai": _choice(*STATUSES, required=True),
        "NgayBatDau": _time(),
        "NgayKetThucTheoQuyDinh": _time(),
    }
)

MESSAGE = Obj(
    {
        "MaThongBao": Str(100, required=True, pattern=r"[\x21-\x7e]+", hint="ASCII in được"),
        "MaHoSo": RECORD.fields["MaHoSo"],
        "MaDoiTuong": _text(100, required=True),
        "TieuDe": _text(255, required=True),
        "NoiDung": _text(4000, required=True, multiline=True),
    }
)
