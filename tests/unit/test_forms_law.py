"""Forms 01-03 as the law words them, either side of 1 July 2025.

Version 1 follows Mẫu số 01/02/03 of Circular 01/2018/TT-VPCP (23/11/2018) guiding
Decree 61/2018/NĐ-CP; version 2, from 1 July 2025 (Decree 118/2025/NĐ-CP), cites the forms
of Annex I of Circular 03/2025/TT-VPCP, whose titles are the same and whose own wording we
could not read, so the 2018 wording stays. The golden texts below are what an applicant
receives; the lines after the rule are the system's, not the form's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from contracts.common import (
    Applicant,
    Channel,
    DocumentRef,
    Duration,
    MissingItem,
    Office,
    RequiredDocument,
    ReturnMethod,
    SupplementStage,
    TimeUnit,
)
from contracts.events import DossierReceived, DossierRefused, SupplementRequested
from services.notification.domain import form01_context, form02_context, form03_context
from services.runtime.calendar import format_local
from services.runtime.forms import FormBook, Rendered

CODE = "000.01.50.H29-250610-0007"
BOOK = FormBook.load()
OFFICE = Office(
    parent_name="Ủy ban nhân dân Thành phố Hồ Chí Minh",
    name="Ủy ban nhân dân phường Sài Gòn",
    desk="Trung tâm Phục vụ hành chính công phường Sài Gòn",
    place="Sài Gòn",
    phone="02838291234",
)
APPLICANT = Applicant(
    name="Nguyễn Thị Lan",
    id_number="079190000001",
    phone="0912345678",
    email="lan@example.vn",
    address="12 Lê Lợi, phường Sài Gòn",
)
BEFORE = datetime(2025, 6, 10, 2, 30, tzinfo=UTC)  # 09:30 on 10 June 2025 in Hồ Chí Minh City
AFTER = datetime(2025, 9, 16, 2, 30, tzinfo=UTC)  # 09:30 on 16 September 2025
CIRCULAR_2018 = "Thông tư số 01/2018/TT-VPCP ngày 23/11/2018"
CIRCULAR_2025 = "Phụ lục I ban hành kèm theo Thông tư số 03/2025/TT-VPCP"
DECREE_2025 = "Nghị định số 118/2025/NĐ-CP"
HEADER = [
    "ỦY BAN NHÂN DÂN THÀNH PHỐ HỒ CHÍ MINH",
    "ỦY BAN NHÂN DÂN PHƯỜNG SÀI GÒN",
    "TRUNG TÂM PHỤC VỤ HÀNH CHÍNH CÔNG PHƯỜNG SÀI GÒN",
    "Số: ……",
    "",
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
]


def received(at: datetime = BEFORE, **changes: Any) -> DossierReceived:
    fields: dict[str, Any] = dict(
        code=CODE,
        procedure_code="1.000894",
        procedure_version=1,
        procedure_name="Đăng ký kết hôn",
        channel=Channel.IN_PERSON,
        applicant=APPLICANT,
        documents=(
            DocumentRef(code="TKKH", name="Tờ khai đăng ký kết hôn"),
            DocumentRef(code="XNTTHN", name="Giấy xác nhận tình trạng hôn nhân", copies=2),
        ),
        receiving_agency="000.01.50.H29",
        receiving_agency_name="Ủy ban nhân dân phường Sài Gòn",
        lead_agency="000.01.50.H29",
        processing_time=Duration(value=5),
        received_at=at,
        clock_starts_at=at,
        appointment_at=at + timedelta(days=7),
        office=OFFICE,
        received_by="Trần Văn Bình",
        sets=2,
        register_book="03",
        register_number=127,
        return_method=ReturnMethod.POST,
    )
    fields.update(changes)
    return DossierReceived(**fields)


def supplement(at: datetime = BEFORE, **changes: Any) -> SupplementRequested:
    fields: dict[str, Any] = dict(
        code=CODE,
        procedure_code="1.000894",
        procedure_name="Đăng ký kết hôn",
        channel=Channel.IN_PERSON,
        applicant=APPLICANT,
        receiving_agency="000.01.50.H29",
        receiving_agency_name="Ủy ban nhân dân phường Sài Gòn",
        missing=(RequiredDocument(code="XNTTHN", name="Giấy xác nhận tình trạng hôn nhân"),),
        requested_at=at,
        stage=SupplementStage.PROCESSING,
        request_number=1,
        items=(
            MissingItem(
                code="XNTTHN",
                name="Giấy xác nhận tình trạng hôn nhân",
                reason="Giấy đã quá 06 tháng kể từ ngày cấp",
            ),
            MissingItem(
                code="TKKH",
                name="Tờ khai đăng ký kết hôn",
                reason="Thiếu chữ ký của một bên kết hôn",
            ),
        ),
        requested_by="Lê Thị Hoa",
        office=OFFICE,
    )
    fields.update(changes)
    return SupplementRequested(**fields)


def refused(at: datetime = BEFORE, **changes: Any) -> DossierRefused:
    fields: dict[str, Any] = dict(
        code=CODE,
        procedure_code="1.000894",
        procedure_name="Đăng ký kết hôn",
        channel=Channel.IN_PERSON,
        applicant=APPLICANT,
        receiving_agency="000.01.50.H29",
        receiving_agency_name="Ủy ban nhân dân phường Sài Gòn",
        reasons=("Một bên chưa đủ tuổi kết hôn", "Thủ tục không thuộc thẩm quyền của phường"),
        refused_at=at,
        refused_by="Trần Văn Bình",
        office=OFFICE,
    )
    fields.update(changes)
    return DossierRefused(**fields)


def day(t: datetime) -> date:
    """The local day a notice takes its form version from, as the notifier reads it."""
    return date.fromisoformat(format_local(t, "%Y-%m-%d") or "")


def render(kind: str, event: Any, lookup: str | None = "K7Q2-M9XD") -> Rendered:
    build = {"form01": form01_context, "form02": form02_context, "form03": form03_context}
    at = {"form01": "received_at", "form02": "requested_at", "form03": "refused_at"}[kind]
    return BOOK.render(kind, day(getattr(event, at)), build[kind](event, lookup))


def lines(r: Rendered) -> list[str]:
    return r.text.splitlines()


# --- which version is in force ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["form01", "form02", "form03"])
@pytest.mark.parametrize(
    ("on", "version"),
    [(date(2025, 9, 14), 1), (date(2025, 9, 15), 2), (date(2026, 11, 23), 2)],
)
def test_version_in_force_either_side_of_1_july_2025__decree_118_2025(
    kind: str, on: date, version: int
) -> None:
    assert BOOK.in_force(kind, on).version == version


def test_the_version_follows_the_local_day_not_the_utc_day__asia_ho_chi_minh() -> None:
    # 00:10 on 15 September 2025 in Hồ Chí Minh City is still 14 September in UTC.
    r = render("form01", received(at=datetime(2025, 9, 14, 17, 10, tzinfo=UTC)))
    assert r.version == 2
    assert "4. Thời gian nhận hồ sơ: 00 giờ 10 phút, ngày 15 tháng 09 năm 2025" in lines(r)
    assert "Sài Gòn, ngày 15 tháng 09 năm 2025" in lines(r)


# --- Form 01 --------------------------------------------------------------------------------

FORM01_2018 = [
    *HEADER,
    "Sài Gòn, ngày 10 tháng 06 năm 2025",
    "",
    "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ",
    f"Mã hồ sơ: {CODE}",
    "(Liên: giao khách hàng)",
    "",
    "Bộ phận tiếp nhận và trả kết quả: Trung tâm Phục vụ hành chính công phường Sài Gòn",
    "Tiếp nhận hồ sơ của: Nguyễn Thị Lan",
    "Địa chỉ: 12 Lê Lợi, phường Sài Gòn",
    "Số điện thoại: 0912345678    Email: lan@example.vn",
    "Nội dung yêu cầu giải quyết: Đăng ký kết hôn",
    "1. Thành phần hồ sơ nộp gồm:",
    "   (1) Tờ khai đăng ký kết hôn (số lượng: 1)",
    "   (2) Giấy xác nhận tình trạng hôn nhân (số lượng: 2)",
    "2. Số lượng hồ sơ: 02 (bộ)",
    "3. Thời gian giải quyết hồ sơ theo quy định là: 05 ngày làm việc",
    "4. Thời gian nhận hồ sơ: 09 giờ 30 phút, ngày 10 tháng 06 năm 2025",
    "5. Thời gian trả kết quả giải quyết hồ sơ: 09 giờ 30 phút, ngày 17 tháng 06 năm 2025",
    "6. Đăng ký nhận kết quả tại: Qua dịch vụ bưu chính công ích: 12 Lê Lợi, phường Sài Gòn",
    "Vào Sổ theo dõi hồ sơ, Quyển số: 03    Số thứ tự: 127",
    "",
    "NGƯỜI NỘP HỒ SƠ",
    "(Ký và ghi rõ họ tên)",
    "",
    "NGƯỜI TIẾP NHẬN HỒ SƠ",
    "(Ký và ghi rõ họ tên)",
    "Trần Văn Bình",
    "",
    "Ghi chú:",
    "- Giấy tiếp nhận và hẹn trả kết quả được lập thành 2 liên; một liên chuyển kèm theo"
    " Phiếu kiểm soát quá trình giải quyết hồ sơ và được lưu tại Bộ phận tiếp nhận và trả"
    " kết quả; một liên giao cho cá nhân, tổ chức nộp hồ sơ;",
    "- Cá nhân, tổ chức có thể đăng ký nhận kết quả tại Bộ phận tiếp nhận và trả kết quả"
    " hoặc tại nhà (trụ sở tổ chức) qua dịch vụ bưu chính.",
    "",
    "────────────────────",
    "Không thuộc nội dung của mẫu:",
    "Mẫu số 01 ban hành kèm theo Thông tư số 01/2018/TT-VPCP ngày 23/11/2018 của Văn phòng"
    " Chính phủ hướng dẫn Nghị định số 61/2018/NĐ-CP",
    "Mã tra cứu (giữ bí mật): K7Q2-M9XD",
]


def test_form01_prints_document_names_sets_register_and_return_method__circular_01_2018_form_01() -> (
    None
):
    r = render("form01", received())
    assert r.version == 1
    assert lines(r) == FORM01_2018
    assert "TKKH" not in r.text and "XNTTHN" not in r.text  # names, not document codes


def test_form01_after_1_july_2025_cites_circular_03_2025__decree_118_2025() -> None:
    r = render("form01", received(at=AFTER))
    assert r.version == 2
    assert CIRCULAR_2025 in r.text and DECREE_2025 in r.text
    assert "01/2018/TT-VPCP" not in r.text
    assert lines(r)[lines(r).index("Không thuộc nội dung của mẫu:") + 1] == (
        "Mẫu số 01 Phụ lục I ban hành kèm theo Thông tư số 03/2025/TT-VPCP ngày 15/9/2025"
        " của Văn phòng Chính phủ hướng dẫn Nghị định số 118/2025/NĐ-CP"
    )
    # the 2018 wording stands until Circular 03/2025's own wording is verified
    assert "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ" in lines(r)
    assert "Sài Gòn, ngày 16 tháng 09 năm 2025" in lines(r)


@pytest.mark.parametrize(
    ("method", "line"),
    [
        (
            ReturnMethod.AT_DESK,
            "6. Đăng ký nhận kết quả tại: Bộ phận tiếp nhận và trả kết quả,"
            " Trung tâm Phục vụ hành chính công phường Sài Gòn",
        ),
        (
            ReturnMethod.POST,
            "6. Đăng ký nhận kết quả tại: Qua dịch vụ bưu chính công ích: 12 Lê Lợi, phường Sài Gòn",
        ),
        (
            ReturnMethod.ONLINE,
            "6. Đăng ký nhận kết quả tại: Trực tuyến (Cổng Dịch vụ công quốc gia)",
        ),
    ],
)
def test_form01_item_6_is_the_return_channel_the_applicant_chose__circular_01_2018_form_01(
    method: ReturnMethod, line: str
) -> None:
    assert line in lines(render("form01", received(return_method=method)))


@pytest.mark.parametrize(
    ("period", "line"),
    [
        (Duration(value=5), "05 ngày làm việc"),
        (Duration(value=20, unit=TimeUnit.CALENDAR_DAYS), "20 ngày"),
        (Duration(value=0, unit=TimeUnit.WITHIN_THE_DAY), "trong ngày"),
        (Duration(value=4, unit=TimeUnit.WORKING_HOURS), "04 giờ làm việc"),
    ],
)
def test_form01_item_3_states_the_period_as_the_law_does__circular_01_2018_form_01(
    period: Duration, line: str
) -> None:
    r = render("form01", received(processing_time=period))
    assert f"3. Thời gian giải quyết hồ sơ theo quy định là: {line}" in lines(r)


def test_form01_falls_back_to_the_document_code_only_when_intake_gave_no_name() -> None:
    r = render("form01", received(documents=(DocumentRef(code="CCCD"),)))
    assert "   (1) CCCD (số lượng: 1)" in lines(r)


# --- Form 02 --------------------------------------------------------------------------------

FORM02_2018 = [
    *HEADER,
    "Sài Gòn, ngày 10 tháng 06 năm 2025",
    "",
    "PHIẾU YÊU CẦU BỔ SUNG, HOÀN THIỆN HỒ SƠ",
    "",
    "Bộ phận tiếp nhận và trả kết quả: Trung tâm Phục vụ hành chính công phường Sài Gòn",
    "Tiếp nhận hồ sơ của: Nguyễn Thị Lan",
    "Nội dung yêu cầu giải quyết: Đăng ký kết hôn",
    "Địa chỉ: 12 Lê Lợi, phường Sài Gòn",
    "Số điện thoại: 0912345678    Email: lan@example.vn",
    "Yêu cầu Ông/Bà hoàn thiện hồ sơ gồm những nội dung như sau:",
    "   1. Giấy xác nhận tình trạng hôn nhân",
    "      Lý do: Giấy đã quá 06 tháng kể từ ngày cấp",
    "   2. Tờ khai đăng ký kết hôn",
    "      Lý do: Thiếu chữ ký của một bên kết hôn",
    "Trong quá trình hoàn thiện hồ sơ nếu có vướng mắc, Ông/Bà liên hệ với Lê Thị Hoa,"
    " số điện thoại 02838291234 để được hướng dẫn./.",
    "",
    "NGƯỜI HƯỚNG DẪN",
    "(Ký và ghi rõ họ tên)",
    "Lê Thị Hoa",
    "",
    "────────────────────",
    "Không thuộc nội dung của mẫu:",
    "Mẫu số 02 ban hành kèm theo Thông tư số 01/2018/TT-VPCP ngày 23/11/2018 của Văn phòng"
    " Chính phủ hướng dẫn Nghị định số 61/2018/NĐ-CP",
    f"Mã hồ sơ: {CODE}",
    "Thời gian giải quyết hồ sơ tạm dừng từ 09 giờ 30 phút, ngày 10 tháng 06 năm 2025"
    " cho đến khi Ông/Bà nộp đủ hồ sơ bổ sung, hoàn thiện.",
    "Mã tra cứu (giữ bí mật): K7Q2-M9XD",
]


def test_form02_prints_each_item_with_its_reason_contact_line_and_signature__circular_01_2018_form_02() -> (
    None
):
    r = render("form02", supplement())
    assert r.version == 1
    assert lines(r) == FORM02_2018


def test_form02_during_processing_pauses_the_time_until_the_supplement_arrives() -> None:
    r = render("form02", supplement(stage=SupplementStage.PROCESSING))
    assert "Thời gian giải quyết hồ sơ tạm dừng từ 09 giờ 30 phút, ngày 10 tháng 06" in r.text
    assert "tạm dừng từ" in r.html


def test_form02_at_the_desk_does_not_say_the_time_is_paused__the_clock_has_not_started() -> None:
    r = render("form02", supplement(stage=SupplementStage.DESK, request_number=0))
    assert "tạm dừng" not in r.text and "tạm dừng" not in r.html
    assert (
        "Hồ sơ chưa được tiếp nhận: thời gian giải quyết được tính từ khi nhận đủ hồ sơ"
        " đầy đủ, hợp lệ." in lines(r)
    )


def test_form02_a_second_request_during_processing_says_which_request_it_is() -> None:
    r = render("form02", supplement(request_number=2, violation=True))
    assert (
        "Đây là lần thứ 2 yêu cầu bổ sung, hoàn thiện hồ sơ trong quá trình giải quyết." in lines(r)
    )
    assert "lần thứ" not in render("form02", supplement()).text


def test_form02_of_an_older_event_lists_the_missing_documents_with_a_default_reason() -> None:
    r = render("form02", supplement(items=(), requested_by=None, note="Nộp bản chính"))
    assert lines(r)[
        lines(r).index("Yêu cầu Ông/Bà hoàn thiện hồ sơ gồm những nội dung như sau:") + 1 :
    ][:3] == [
        "   1. Giấy xác nhận tình trạng hôn nhân",
        "      Lý do: Hồ sơ chưa có thành phần này theo quy định của thủ tục hành chính",
        "Ghi chú: Nộp bản chính",
    ]
    # no officer named: the applicant is sent to the desk
    assert (
        "Trong quá trình hoàn thiện hồ sơ nếu có vướng mắc, Ông/Bà liên hệ với Trung tâm Phục"
        " vụ hành chính công phường Sài Gòn, số điện thoại 02838291234 để được hướng dẫn./."
        in lines(r)
    )


def test_form02_after_1_july_2025_cites_circular_03_2025__decree_118_2025() -> None:
    r = render("form02", supplement(at=AFTER))
    assert r.version == 2
    assert CIRCULAR_2025 in r.text and DECREE_2025 in r.text and CIRCULAR_2018 not in r.text
    assert CIRCULAR_2025 in r.html and CIRCULAR_2018 not in r.html
    assert "NGƯỜI HƯỚNG DẪN" in lines(r) and "(Ký và ghi rõ họ tên)" in lines(r)


# --- Form 03 --------------------------------------------------------------------------------

FORM03_2018 = [
    *HEADER,
    "Sài Gòn, ngày 10 tháng 06 năm 2025",
    "",
    "PHIẾU TỪ CHỐI TIẾP NHẬN GIẢI QUYẾT HỒ SƠ",
    "",
    "Bộ phận tiếp nhận và trả kết quả: Trung tâm Phục vụ hành chính công phường Sài Gòn",
    "Tiếp nhận hồ sơ của: Nguyễn Thị Lan",
    "Địa chỉ: 12 Lê Lợi, phường Sài Gòn",
    "Số điện thoại: 0912345678    Email: lan@example.vn",
    "Nội dung yêu cầu giải quyết: Đăng ký kết hôn",
    "Qua xem xét, Trung tâm Phục vụ hành chính công phường Sài Gòn thông báo không tiếp"
    " nhận, giải quyết hồ sơ này với lý do cụ thể như sau:",
    "   - Một bên chưa đủ tuổi kết hôn",
    "   - Thủ tục không thuộc thẩm quyền của phường",
    "Xin thông báo cho Ông/Bà được biết và thực hiện./.",
    "",
    "NGƯỜI TIẾP NHẬN HỒ SƠ",
    "(Ký và ghi rõ họ tên)",
    "Trần Văn Bình",
    "",
    "────────────────────",
    "Không thuộc nội dung của mẫu:",
    "Mẫu số 03 ban hành kèm theo Thông tư số 01/2018/TT-VPCP ngày 23/11/2018 của Văn phòng"
    " Chính phủ hướng dẫn Nghị định số 61/2018/NĐ-CP",
    f"Mã hồ sơ: {CODE}",
    "Mã tra cứu (giữ bí mật): K7Q2-M9XD",
]


def test_form03_prints_reasons_contact_line_and_signature__circular_01_2018_form_03() -> None:
    r = render("form03", refused())
    assert r.version == 1
    assert lines(r) == FORM03_2018


@pytest.mark.parametrize("at", [BEFORE, AFTER], ids=["2018_forms", "2025_forms"])
def test_form03_has_not_form02s_contact_line_in_either_version__issue_23_item_8(
    at: datetime,
) -> None:
    """Form 02's line ("Trong quá trình hoàn thiện hồ sơ nếu có vướng mắc, ...": a dossier
    to complete) is not Form 03's: a refusal ends with "... được biết và thực hiện./."."""
    r = render("form03", refused(at=at))
    assert "Trong quá trình hoàn thiện hồ sơ" not in r.text + r.html
    assert "Xin thông báo cho Ông/Bà được biết và thực hiện./." in lines(r)
    assert "Trong quá trình hoàn thiện hồ sơ" in render("form02", supplement(at=at)).text


def test_form03_after_1_july_2025_cites_circular_03_2025__decree_118_2025() -> None:
    r = render("form03", refused(at=AFTER))
    assert r.version == 2
    assert CIRCULAR_2025 in r.text and DECREE_2025 in r.text and CIRCULAR_2018 not in r.text
    assert "PHIẾU TỪ CHỐI TIẾP NHẬN GIẢI QUYẾT HỒ SƠ" in lines(r)


# --- all three ------------------------------------------------------------------------------

EVENTS = {"form01": received, "form02": supplement, "form03": refused}


@pytest.mark.parametrize("kind", ["form01", "form02", "form03"])
@pytest.mark.parametrize("at", [BEFORE, AFTER], ids=["2018_forms", "2025_forms"])
def test_the_lookup_code_follows_the_form_and_is_not_part_of_it(kind: str, at: datetime) -> None:
    text = lines(render(kind, EVENTS[kind](at=at)))
    signature = max(i for i, line in enumerate(text) if line == "(Ký và ghi rõ họ tên)")
    addendum = text.index("Không thuộc nội dung của mẫu:")
    assert signature < addendum < text.index("Mã tra cứu (giữ bí mật): K7Q2-M9XD")
    assert "Mã tra cứu" not in render(kind, EVENTS[kind](at=at), lookup=None).text


@pytest.mark.parametrize("kind", ["form01", "form02", "form03"])
@pytest.mark.parametrize("at", [BEFORE, AFTER], ids=["2018_forms", "2025_forms"])
def test_an_older_event_without_office_or_officer_renders_dotted_blanks(
    kind: str, at: datetime
) -> None:
    officer = {"form01": "received_by", "form02": "requested_by", "form03": "refused_by"}[kind]
    bare = APPLICANT.model_copy(update={"email": None, "address": None, "phone": None})
    event = EVENTS[kind](at=at, office=None, applicant=bare, **{officer: None})
    if kind == "form01":
        event = event.model_copy(update={"register_book": None, "register_number": None})
    text = lines(render(kind, event))
    assert text[:3] == ["……", "ỦY BAN NHÂN DÂN PHƯỜNG SÀI GÒN", "BỘ PHẬN TIẾP NHẬN VÀ TRẢ KẾT QUẢ"]
    assert text[text.index("Độc lập - Tự do - Hạnh phúc") + 1].startswith("……, ngày ")
    assert "Bộ phận tiếp nhận và trả kết quả: Ủy ban nhân dân phường Sài Gòn" in text
    assert "Địa chỉ: ……" in text and "Số điện thoại: ……    Email: ……" in text
    if kind == "form01":
        assert "Vào Sổ theo dõi hồ sơ, Quyển số: ……    Số thứ tự: ……" in text
    elif kind == "form02":  # Form 03 has no contact line (issue 23, item 8)
        assert any(
            "liên hệ với Ủy ban nhân dân phường Sài Gòn, số điện thoại …… để được hướng dẫn./."
            in line
            for line in text
        )


@pytest.mark.parametrize("kind", ["form01", "form02", "form03"])
def test_html_keeps_header_title_lists_and_signatures_and_escapes_what_it_prints(
    kind: str,
) -> None:
    hostile = APPLICANT.model_copy(update={"name": "<script>alert(1)</script>"})
    html = render(kind, EVENTS[kind](applicant=hostile)).html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for part in (
        '<table class="form-header">',
        "<strong>CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM</strong>",
        "<em>Sài Gòn, ngày 10 tháng 06 năm 2025</em>",
        "<h1>",
        '<table class="form-signatures">',
        "<em>(Ký và ghi rõ họ tên)</em>",
        '<aside class="addendum">',
    ):
        assert part in html
    assert "<ol>" in html or "<ul>" in html
    assert html.index("form-signatures") < html.index("Mã tra cứu (giữ bí mật)")


# --- issue 23: the dates the forms take effect ------------------------------------------------


@pytest.mark.parametrize("kind", ["form01", "form02", "form03", "form04", "form05", "form06"])
def test_2018_forms_take_effect_with_circular_01_2018_and_2025_forms_with_circular_03_2025(
    kind: str,
) -> None:
    # Circular 01/2018/TT-VPCP (23/11/2018) in force 06/01/2019, not Decree 61/2018's signing
    # day 23/4/2018; Circular 03/2025/TT-VPCP is dated 15/9/2025, so its forms cannot apply
    # from 1/7/2025 (Decree 118/2025/NĐ-CP's entry into force).
    v1, v2 = sorted(BOOK.forms[kind].versions, key=lambda v: v.version)
    assert v1.effective_from == date(2019, 1, 6) and "01/2018/TT-VPCP" in v1.legal_basis
    assert v2.effective_from == date(2025, 9, 15)
    assert "03/2025/TT-VPCP ngày 15/9/2025" in v2.legal_basis
    assert BOOK.in_force(kind, date(2025, 7, 1)).version == 1


def test_no_version_starts_before_the_text_it_cites() -> None:
    starts = {"01/2018/TT-VPCP": date(2019, 1, 6), "03/2025/TT-VPCP": date(2025, 9, 15)}
    starts |= {"61/2018/NĐ-CP": date(2018, 6, 21), "118/2025/NĐ-CP": date(2025, 7, 1)}
    for kind, form in BOOK.forms.items():
        for v in form.versions:
            for text, start in starts.items():
                if text in v.legal_basis:
                    assert v.effective_from >= start, (kind, v.version, text)
