"""Forms 04, 05 and 06 and the result notice, either side of 1 July 2025.

Version 1 follows Mẫu số 04/05/06 of Circular 01/2018/TT-VPCP (23/11/2018) guiding Decree
61/2018/NĐ-CP; version 2, from 1 July 2025 (Decree 118/2025/NĐ-CP), cites the forms of
Annex I of Circular 03/2025/TT-VPCP as the one secondary source we found numbers them
(04 the apology with a request to extend, 06 the control slip, 07 the register), whose own
wording we could not read, so the 2018 wording stays under the new citation (and, for
Form 04, the new title). The golden texts below are what the recipient gets; the lines
after the rule are the system's, not the form's (each YAML header says what its wording
follows and what is unverified).
"""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from contracts.common import Applicant, DocumentRef, Office, ReturnMethod, Timeliness
from contracts.events import (
    ApologyDrafted,
    ApologyIssued,
    HandOver,
    Holder,
    ResultDecision,
    ResultReady,
    StepFault,
)
from services.notification.domain import Contact, apology_draft_context
from services.runtime.calendar import format_local
from services.runtime.forms import (
    FORMS_DIR,
    ControlSlip,
    FormBook,
    RegisterRow,
    Rendered,
    form04_context,
    form05_context,
    form06_context,
    result_context,
)

CODE = "000.01.50.H29-250610-0007"
BOOK = FormBook.load()
WARD = "Ủy ban nhân dân phường Sài Gòn"
CENTRE = "Trung tâm Phục vụ hành chính công phường Sài Gòn"
OFFICE = Office(
    parent_name="Ủy ban nhân dân Thành phố Hồ Chí Minh",
    name=WARD,
    desk=CENTRE,
    place="Sài Gòn",
    phone="02838291234",
)
BUILDING = Office(
    parent_name="Ủy ban nhân dân Thành phố Hồ Chí Minh",
    name="Sở Xây dựng Thành phố Hồ Chí Minh",
    place="Thành phố Hồ Chí Minh",
)
APPLICANT = Applicant(
    name="Nguyễn Thị Lan",
    id_number="079190000001",
    phone="0912345678",
    email="lan@example.vn",
    address="12 Lê Lợi, phường Sài Gòn",
)
RECEIVED = datetime(2025, 6, 10, 2, 30, tzinfo=UTC)  # 09:30 on 10 June 2025, Hồ Chí Minh City
LATER = timedelta(days=98)  # the same dossier on 16 September 2025, after the 2025 forms
CIRCULAR_2018 = "Thông tư số 01/2018/TT-VPCP ngày 23/11/2018"
CIRCULAR_2025 = "Phụ lục I ban hành kèm theo Thông tư số 03/2025/TT-VPCP"
DECREE_2025 = "Nghị định số 118/2025/NĐ-CP"

DESK = Holder(agency_id="000.01.50.H29", agency_name=CENTRE, person="Trần Văn Bình")
CIVIL = Holder(
    agency_id="000.01.50.H29",
    agency_name=WARD,
    department="TPHT",
    department_name="Công chức Tư pháp - Hộ tịch",
    person="Lê Thị Hoa",
)
CHAIR = Holder(agency_id="000.01.50.H29", agency_name=WARD, person="Phạm Minh Tuấn")


def day(t: datetime) -> date:
    """The local day a form takes its version from, as the notifier reads it."""
    return date.fromisoformat(format_local(t, "%Y-%m-%d") or "")


def lines(r: Rendered) -> list[str]:
    return r.text.splitlines()


def handovers(shift: timedelta = timedelta(0)) -> tuple[HandOver, ...]:
    t = RECEIVED + shift
    return (
        HandOver(
            seq=1,
            giver=DESK,
            receiver=CIVIL,
            at=t + timedelta(minutes=15),
            step=2,
            step_action="Thẩm định hồ sơ",
            step_deadline_at=t + timedelta(days=2, hours=6),
        ),
        HandOver(
            seq=2,
            giver=CIVIL,
            receiver=CHAIR,
            at=t + timedelta(days=2),
            step=3,
            step_action="Ký giấy chứng nhận kết hôn",
            step_deadline_at=t + timedelta(days=3),
            giver_step=2,
            giver_deadline_at=t + timedelta(days=2, hours=6),
            giver_timeliness=Timeliness.EARLY,
        ),
        HandOver(
            seq=3,
            giver=CHAIR,
            receiver=DESK,
            at=t + timedelta(days=3, hours=5),
            step=4,
            step_action="Trả kết quả",
            giver_step=3,
            giver_deadline_at=t + timedelta(days=3),
            giver_timeliness=Timeliness.LATE,
            note="Chủ tịch đi công tác",
        ),
    )


def apology(shift: timedelta = timedelta(0), **changes: Any) -> ApologyIssued:
    fields: dict[str, Any] = dict(
        apology_id=uuid.UUID(int=4),
        code=CODE,
        number=1,
        agency_id="000.00.06.H29",
        agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
        reason="Cần lấy thêm ý kiến của cơ quan phòng cháy, chữa cháy",
        previous_appointment_at=RECEIVED + shift + timedelta(days=7),
        appointment_at=RECEIVED + shift + timedelta(days=12),
        issued_at=RECEIVED + shift + timedelta(days=6),
        issued_by=Holder(
            agency_id="000.00.06.H29",
            agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
            person="Võ Thanh Hải",
        ),
        procedure_name="Cấp giấy phép xây dựng",
        received_at=RECEIVED + shift,
        office=BUILDING,
    )
    fields.update(changes)
    return ApologyIssued(**fields)


def render04(a: ApologyIssued | None = None, who: Any = APPLICANT) -> Rendered:
    a = a or apology()
    return BOOK.render("form04", day(a.issued_at), form04_context(a, who))


def slip(shift: timedelta = timedelta(0), **changes: Any) -> ControlSlip:
    fields: dict[str, Any] = dict(
        code=CODE,
        procedure_name="Đăng ký kết hôn",
        office=OFFICE,
        receiving_agency_name=CENTRE,
        lead_agency_name=WARD,
        coordinating=("Công an phường Sài Gòn",),
        handovers=handovers(shift),
        printed_at=RECEIVED + shift + timedelta(days=3, hours=5),
    )
    fields.update(changes)
    return ControlSlip(**fields)


def render05(s: ControlSlip | None = None) -> Rendered:
    s = s or slip()
    return BOOK.render("form05", day(s.printed_at), form05_context(s))


def register_rows(shift: timedelta = timedelta(0)) -> list[RegisterRow]:
    t = RECEIVED + shift
    return [
        RegisterRow(
            register_number=127,
            code=CODE,
            procedure_name="Đăng ký kết hôn",
            sets=1,
            applicant_name="Nguyễn Thị Lan",
            applicant_contact="12 Lê Lợi, phường Sài Gòn; 0912345678",
            lead_agency_name=WARD,
            received_at=t,
            appointment_at=t + timedelta(days=7),
            transferred_at=t + timedelta(minutes=15),
            result_received_at=t + timedelta(days=3, hours=5),
            returned_at=t + timedelta(days=4),
        ),
        RegisterRow(
            register_number=128,
            code="000.01.50.H29-250610-0008",
            procedure_name="Cấp bản sao trích lục hộ tịch",
            applicant_name="Công ty TNHH Minh Long",
            received_at=t + timedelta(hours=1),
            appointment_at=t + timedelta(hours=5),
        ),
    ]


def render06(shift: timedelta = timedelta(0), rows: list[RegisterRow] | None = None) -> Rendered:
    on = day(RECEIVED + shift)
    return BOOK.render(
        "form06",
        on,
        form06_context(OFFICE, CENTRE, on, register_rows(shift) if rows is None else rows),
    )


def ready(shift: timedelta = timedelta(0), **changes: Any) -> ResultReady:
    t = RECEIVED + shift
    fields: dict[str, Any] = dict(
        code=CODE,
        procedure_code="1.000894",
        procedure_name="Đăng ký kết hôn",
        decision=ResultDecision.APPROVED,
        documents=(DocumentRef(code="GCNKH", name="Giấy chứng nhận kết hôn", copies=2),),
        ready_at=t + timedelta(days=3, hours=5),
        received_at=t,
        appointment_at=t + timedelta(days=7),
        legal_appointment_at=t + timedelta(days=7),
        timeliness=Timeliness.EARLY,
        return_method=ReturnMethod.AT_DESK,
        receiving_agency="000.01.50.H29",
        receiving_agency_name=CENTRE,
        lead_agency="000.01.50.H29",
        lead_agency_name=WARD,
        coordinating=("Công an phường Sài Gòn",),
        handovers=handovers(shift),
    )
    fields.update(changes)
    return ResultReady(**fields)


def render_result(r: ResultReady | None = None, who: Any = APPLICANT) -> Rendered:
    r = r or ready()
    return BOOK.render("result_ready", day(r.ready_at), result_context(r, who, OFFICE))


# --- every template ---------------------------------------------------------------------------

NEW = ["form04", "form05", "form06", "result_ready", "apology_draft"]


@pytest.mark.parametrize("kind", NEW)
@pytest.mark.parametrize(
    ("on", "version"),
    [(date(2025, 9, 14), 1), (date(2025, 9, 15), 2), (date(2026, 11, 23), 2)],
)
def test_version_in_force_either_side_of_1_july_2025__decree_118_2025(
    kind: str, on: date, version: int
) -> None:
    assert BOOK.in_force(kind, on).version == version


def test_every_template_is_contract_data_in_one_spelling__nfc() -> None:
    assert FORMS_DIR.parts[-2:] == ("contracts", "forms")
    for path in sorted(FORMS_DIR.glob("*.yaml")):
        text = path.read_text("utf-8")
        assert unicodedata.is_normalized("NFC", text), path.name
    assert {"form01", "form02", "form03", *NEW} <= set(BOOK.forms)


@pytest.mark.parametrize("kind", ["form04", "form05", "form06"])
def test_version_2_cites_decree_118_and_circular_03_2025_and_not_2018(kind: str) -> None:
    v = BOOK.in_force(kind, date(2025, 9, 15))
    assert CIRCULAR_2025 in v.legal_basis and "Nghị định số 118/2025/NĐ-CP" in v.legal_basis
    assert "01/2018" not in v.legal_basis
    assert CIRCULAR_2018 in BOOK.in_force(kind, date(2025, 9, 14)).legal_basis


# --- Form 04 ----------------------------------------------------------------------------------

FORM04_2018 = [
    "ỦY BAN NHÂN DÂN THÀNH PHỐ HỒ CHÍ MINH",
    "SỞ XÂY DỰNG THÀNH PHỐ HỒ CHÍ MINH",
    "Số: ……",
    "",
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "Thành phố Hồ Chí Minh, ngày 16 tháng 06 năm 2025",
    "",
    "PHIẾU XIN LỖI VÀ HẸN LẠI NGÀY TRẢ KẾT QUẢ",
    "",
    "Kính gửi: Ông/Bà Nguyễn Thị Lan",
    "",
    "Ngày 10 tháng 06 năm 2025, Sở Xây dựng Thành phố Hồ Chí Minh tiếp nhận giải quyết hồ sơ"
    " đề nghị Cấp giấy phép xây dựng của Ông/Bà Nguyễn Thị Lan.",
    f"Mã hồ sơ: {CODE}",
    "Theo Giấy tiếp nhận và hẹn trả kết quả, thời hạn trả kết quả giải quyết hồ sơ vào"
    " 09 giờ 30 phút, ngày 17 tháng 06 năm 2025.",
    "Tuy nhiên đến nay, Sở Xây dựng Thành phố Hồ Chí Minh chưa trả kết quả giải quyết hồ sơ"
    " của Ông/Bà.",
    "Lý do: Cần lấy thêm ý kiến của cơ quan phòng cháy, chữa cháy",
    "Sự chậm trễ này đã gây phiền hà cho Ông/Bà. Sở Xây dựng Thành phố Hồ Chí Minh xin lỗi"
    " Ông/Bà và sẽ trả kết quả giải quyết hồ sơ cho Ông/Bà vào 09 giờ 30 phút, ngày 22 tháng"
    " 06 năm 2025.",
    "Xin trân trọng cảm ơn sự hợp tác của Ông/Bà./.",
    "",
    "THỦ TRƯỞNG CƠ QUAN, ĐƠN VỊ",
    "(Ký, ghi rõ họ tên và đóng dấu)",
    "Võ Thanh Hải",
    "",
    "────────────────────",
    "Không thuộc nội dung của mẫu:",
    "Mẫu số 04 ban hành kèm theo Thông tư số 01/2018/TT-VPCP ngày 23/11/2018 của Văn phòng"
    " Chính phủ hướng dẫn Nghị định số 61/2018/NĐ-CP",
]


def test_form04_prints_header_receipt_old_appointment_reason_apology_and_new_appointment__circular_01_2018_form_04() -> (
    None
):
    r = render04()
    assert r.version == 1
    assert lines(r) == FORM04_2018
    assert r.subject == f"Phiếu xin lỗi và hẹn lại ngày trả kết quả - Mã hồ sơ {CODE}"
    assert "079190000001" not in r.text and "0912345678" not in r.text  # no more than needed


def test_form04_after_1_july_2025_is_titled_an_apology_with_a_request_to_extend__circular_03_2025() -> (
    None
):
    r = render04(apology(LATER))
    assert r.version == 2
    text = lines(r)
    assert "VĂN BẢN XIN LỖI VÀ ĐỀ NGHỊ GIA HẠN THỜI GIAN GIẢI QUYẾT" in text
    assert "PHIẾU XIN LỖI VÀ HẸN LẠI NGÀY TRẢ KẾT QUẢ" not in text
    assert text[text.index("Không thuộc nội dung của mẫu:") + 1] == (
        "Mẫu số 04 Phụ lục I ban hành kèm theo Thông tư số 03/2025/TT-VPCP ngày 15/9/2025"
        " của Văn phòng Chính phủ hướng dẫn Nghị định số 118/2025/NĐ-CP"
    )
    assert CIRCULAR_2018 not in r.text and CIRCULAR_2018 not in r.html
    assert r.subject.startswith("Văn bản xin lỗi và đề nghị gia hạn thời gian giải quyết")
    # the body keeps the 2018 wording until Annex I of Circular 03/2025 is verified
    assert "Thành phố Hồ Chí Minh, ngày 22 tháng 09 năm 2025" in text
    assert "Kính gửi: Ông/Bà Nguyễn Thị Lan" in text and "THỦ TRƯỞNG CƠ QUAN, ĐƠN VỊ" in text


def test_form04_a_repeat_apology_says_so_and_names_the_previous_apology_as_the_old_appointment() -> (
    None
):
    r = render04(apology(number=2, repeat=True))
    text = lines(r)
    assert (
        "Theo Phiếu xin lỗi và hẹn lại ngày trả kết quả đã gửi Ông/Bà, thời hạn trả kết quả"
        " giải quyết hồ sơ vào 09 giờ 30 phút, ngày 17 tháng 06 năm 2025." in text
    )
    assert not any(line.startswith("Theo Giấy tiếp nhận") for line in text)
    assert text[-1] == (
        "Đây là lần thứ 2 Sở Xây dựng Thành phố Hồ Chí Minh xin lỗi và hẹn lại ngày trả kết"
        " quả đối với hồ sơ này."
    )
    assert r.subject.endswith("(lần thứ 2)")
    assert "lần thứ 2" in r.html and "lần thứ" not in render04().text


def test_form04_issued_unconfirmed_at_the_latest_moment_has_no_signer_and_says_why() -> None:
    r = render04(apology(issued_by=None, automatic=True, after_latest_moment=True))
    text = lines(r)
    signature = text.index("(Ký, ghi rõ họ tên và đóng dấu)")
    assert text[signature + 1] == ""
    assert (
        "Phiếu được phát hành vào 09 giờ 30 phút, ngày 16 tháng 06 năm 2025, thời điểm muộn"
        " nhất để gửi phiếu, khi thủ trưởng cơ quan chưa xác nhận." in text
    )
    assert "Phiếu được gửi muộn hơn 01 ngày làm việc trước thời hạn trả kết quả đã hẹn." in text


def test_form04_of_an_older_event_without_office_prints_dotted_blanks() -> None:
    r = render04(apology(office=None), who=Contact(name="Nguyễn Thị Lan"))
    text = lines(r)
    assert text[:3] == ["……", "SỞ XÂY DỰNG THÀNH PHỐ HỒ CHÍ MINH", "Số: ……"]
    assert text[text.index("Độc lập - Tự do - Hạnh phúc") + 1] == "……, ngày 16 tháng 06 năm 2025"


def test_form04_html_keeps_header_title_and_signature_and_escapes_what_it_prints() -> None:
    hostile = APPLICANT.model_copy(update={"name": "<script>alert(1)</script>"})
    html = render04(apology(reason="<b>không</b>"), who=hostile).html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>không</b>" not in html and "&lt;b&gt;không&lt;/b&gt;" in html
    for part in (
        '<table class="form-header">',
        "<strong>CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM</strong>",
        "<em>Thành phố Hồ Chí Minh, ngày 16 tháng 06 năm 2025</em>",
        "<h1>PHIẾU XIN LỖI VÀ HẸN LẠI NGÀY TRẢ KẾT QUẢ</h1>",
        '<time datetime="2025-06-17T02:30:00+00:00">09 giờ 30 phút, ngày 17 tháng 06 năm 2025',
        '<table class="form-signatures">',
        "<strong>THỦ TRƯỞNG CƠ QUAN, ĐƠN VỊ</strong>",
        '<aside class="addendum">',
    ):
        assert part in html
    assert "<h1>VĂN BẢN XIN LỖI VÀ ĐỀ NGHỊ GIA HẠN THỜI GIAN GIẢI QUYẾT</h1>" in (
        render04(apology(LATER)).html
    )


# --- Form 05 ----------------------------------------------------------------------------------

FORM05_2018 = [
    "ỦY BAN NHÂN DÂN THÀNH PHỐ HỒ CHÍ MINH",
    "ỦY BAN NHÂN DÂN PHƯỜNG SÀI GÒN",
    "TRUNG TÂM PHỤC VỤ HÀNH CHÍNH CÔNG PHƯỜNG SÀI GÒN",
    "",
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "",
    "PHIẾU KIỂM SOÁT QUÁ TRÌNH GIẢI QUYẾT HỒ SƠ",
    f"Mã hồ sơ: {CODE}",
    "",
    "Cơ quan (bộ phận) giải quyết hồ sơ: Ủy ban nhân dân phường Sài Gòn",
    "Cơ quan phối hợp giải quyết hồ sơ: Công an phường Sài Gòn",
    "",
    "1. Giao: Trung tâm Phục vụ hành chính công phường Sài Gòn (Trần Văn Bình)",
    "   Nhận: Công chức Tư pháp - Hộ tịch - Ủy ban nhân dân phường Sài Gòn (Lê Thị Hoa)",
    "   Thời gian giao, nhận hồ sơ: 09 giờ 45 phút, ngày 10 tháng 06 năm 2025",
    "   Kết quả giải quyết hồ sơ: ……",
    "   Ghi chú: Bước 2: Thẩm định hồ sơ; hạn 15 giờ 30 phút, ngày 12 tháng 06 năm 2025",
    "2. Giao: Công chức Tư pháp - Hộ tịch - Ủy ban nhân dân phường Sài Gòn (Lê Thị Hoa)",
    "   Nhận: Ủy ban nhân dân phường Sài Gòn (Phạm Minh Tuấn)",
    "   Thời gian giao, nhận hồ sơ: 09 giờ 30 phút, ngày 12 tháng 06 năm 2025",
    "   Kết quả giải quyết hồ sơ: Trước hạn",
    "   Ghi chú: Bước 3: Ký giấy chứng nhận kết hôn; hạn 09 giờ 30 phút, ngày 13 tháng 06 năm 2025",
    "3. Giao: Ủy ban nhân dân phường Sài Gòn (Phạm Minh Tuấn)",
    "   Nhận: Trung tâm Phục vụ hành chính công phường Sài Gòn (Trần Văn Bình)",
    "   Thời gian giao, nhận hồ sơ: 14 giờ 30 phút, ngày 13 tháng 06 năm 2025",
    "   Kết quả giải quyết hồ sơ: Quá hạn",
    "   Ghi chú: Bước 4: Trả kết quả. Chủ tịch đi công tác",
    "",
    "Ghi chú:",
    "- Trường hợp hồ sơ được chuyển qua dịch vụ bưu chính công ích theo Quyết định số"
    " 45/2016/QĐ-TTg thì thời gian giao, nhận hồ sơ và việc ký nhận thể hiện trong hóa đơn"
    " của cơ quan Bưu chính;",
    "- Kết quả giải quyết hồ sơ do bên nhận ghi khi nhận bàn giao hồ sơ.",
    "- Trường hợp Hệ thống thông tin một cửa điện tử chưa vận hành, người giao và người nhận"
    " phải ký và ghi rõ họ tên. Khi Hệ thống thông tin một cửa điện tử đã vận hành, việc lưu"
    " vết được thực hiện tự động và thể hiện trên mẫu phiếu điện tử.",
    "",
    "────────────────────",
    "Không thuộc nội dung của mẫu:",
    "Mẫu số 05 ban hành kèm theo Thông tư số 01/2018/TT-VPCP ngày 23/11/2018 của Văn phòng"
    " Chính phủ hướng dẫn Nghị định số 61/2018/NĐ-CP",
    "Thủ tục: Đăng ký kết hôn",
    "Phiếu lập lúc 14 giờ 30 phút, ngày 13 tháng 06 năm 2025.",
]


def test_form05_prints_a_line_per_hand_over_with_the_givers_result_and_the_step__circular_01_2018_form_05() -> (
    None
):
    r = render05()
    assert r.version == 1
    assert lines(r) == FORM05_2018
    assert r.subject == f"Phiếu kiểm soát quá trình giải quyết hồ sơ - Mã hồ sơ {CODE}"


def test_form05_lines_follow_the_hand_over_sequence_whatever_order_they_come_in() -> None:
    shuffled = slip(handovers=tuple(reversed(handovers())))
    assert lines(render05(shuffled)) == FORM05_2018


def test_form05_after_1_july_2025_cites_form_06_of_circular_03_2025__decree_118_2025() -> None:
    r = render05(slip(LATER))
    assert r.version == 2
    text = lines(r)
    assert text[text.index("Không thuộc nội dung của mẫu:") + 1] == (
        "Mẫu số 06 Phụ lục I ban hành kèm theo Thông tư số 03/2025/TT-VPCP ngày 15/9/2025"
        " của Văn phòng Chính phủ hướng dẫn Nghị định số 118/2025/NĐ-CP"
    )
    assert "PHIẾU KIỂM SOÁT QUÁ TRÌNH GIẢI QUYẾT HỒ SƠ" in text
    assert "   Kết quả giải quyết hồ sơ: Quá hạn" in text


def test_form05_before_any_hand_over_and_without_office_or_coordinating_agencies() -> None:
    r = render05(slip(office=None, coordinating=(), handovers=()))
    text = lines(r)
    assert text[:3] == [
        "……",
        "TRUNG TÂM PHỤC VỤ HÀNH CHÍNH CÔNG PHƯỜNG SÀI GÒN",
        "BỘ PHẬN TIẾP NHẬN VÀ TRẢ KẾT QUẢ",
    ]
    assert "Cơ quan phối hợp giải quyết hồ sơ: ……" in text
    assert "(Chưa có lượt giao, nhận hồ sơ)" in text


def test_form05_html_is_a_real_table_and_escapes_names() -> None:
    hostile = CIVIL.model_copy(update={"person": "<script>alert(1)</script>"})
    first = handovers()[0].model_copy(update={"receiver": hostile})
    html = render05(slip(handovers=(first, *handovers()[1:]))).html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert (
        "<thead><tr><th>TÊN CƠ QUAN</th><th>THỜI GIAN GIAO, NHẬN HỒ SƠ</th>"
        "<th>KẾT QUẢ GIẢI QUYẾT HỒ SƠ<br>(Trước hạn/đúng hạn/quá hạn)</th><th>GHI CHÚ</th></tr>"
        "</thead>" in html
    )
    assert html.count("<tr><td>Giao: ") == 3
    assert (
        '<td><time datetime="2025-06-12T02:30:00+00:00">09 giờ 30 phút, ngày 12 tháng 06 năm'
        " 2025</time></td><td>Trước hạn</td>" in html
    )
    assert "</time></td><td></td><td>Bước 2: Thẩm định hồ sơ" in html  # the desk's first line
    assert '<p class="form-note"><em>Ghi chú:</em>' in html and '<aside class="addendum">' in html


# --- Form 06 ----------------------------------------------------------------------------------

FORM06_2018 = [
    "ỦY BAN NHÂN DÂN THÀNH PHỐ HỒ CHÍ MINH",
    "ỦY BAN NHÂN DÂN PHƯỜNG SÀI GÒN",
    "TRUNG TÂM PHỤC VỤ HÀNH CHÍNH CÔNG PHƯỜNG SÀI GÒN",
    "",
    "SỔ THEO DÕI HỒ SƠ",
    "Ngày 10 tháng 06 năm 2025",
    "",
    "STT: 127",
    f"   Mã hồ sơ: {CODE}",
    "   Tên TTHC: Đăng ký kết hôn",
    "   Số lượng hồ sơ (bộ): 01",
    "   Tên cá nhân, tổ chức: Nguyễn Thị Lan",
    "   Địa chỉ, số điện thoại: 12 Lê Lợi, phường Sài Gòn; 0912345678",
    "   Cơ quan chủ trì giải quyết: Ủy ban nhân dân phường Sài Gòn",
    "   Ngày, tháng, năm:",
    "      Nhận hồ sơ: 09:30 ngày 10/06/2025",
    "      Hẹn trả kết quả: 09:30 ngày 17/06/2025",
    "      Chuyển hồ sơ đến cơ quan giải quyết: 09:45 ngày 10/06/2025",
    "      Nhận kết quả từ cơ quan giải quyết: 14:30 ngày 13/06/2025",
    "      Trả kết quả cho cá nhân, tổ chức: 09:30 ngày 14/06/2025",
    "   Ký nhận: ……",
    "   Ghi chú: ……",
    "STT: 128",
    "   Mã hồ sơ: 000.01.50.H29-250610-0008",
    "   Tên TTHC: Cấp bản sao trích lục hộ tịch",
    "   Số lượng hồ sơ (bộ): ……",
    "   Tên cá nhân, tổ chức: Công ty TNHH Minh Long",
    "   Địa chỉ, số điện thoại: ……",
    "   Cơ quan chủ trì giải quyết: ……",
    "   Ngày, tháng, năm:",
    "      Nhận hồ sơ: 10:30 ngày 10/06/2025",
    "      Hẹn trả kết quả: 14:30 ngày 10/06/2025",
    "      Chuyển hồ sơ đến cơ quan giải quyết: ……",
    "      Nhận kết quả từ cơ quan giải quyết: ……",
    "      Trả kết quả cho cá nhân, tổ chức: ……",
    "   Ký nhận: ……",
    "   Ghi chú: ……",
    "",
    "────────────────────",
    "Không thuộc nội dung của mẫu:",
    "Mẫu số 06 ban hành kèm theo Thông tư số 01/2018/TT-VPCP ngày 23/11/2018 của Văn phòng"
    " Chính phủ hướng dẫn Nghị định số 61/2018/NĐ-CP",
    "Số hồ sơ trong ngày: 2",
]


def test_form06_prints_every_column_of_the_register_per_dossier__circular_01_2018_form_06() -> None:
    r = render06()
    assert r.version == 1
    assert lines(r) == FORM06_2018
    assert (
        r.subject
        == "Sổ theo dõi hồ sơ - Ủy ban nhân dân phường Sài Gòn - ngày 10 tháng 06 năm 2025"
    )


def test_form06_after_1_july_2025_cites_form_07_of_circular_03_2025__decree_118_2025() -> None:
    r = render06(LATER)
    assert r.version == 2
    text = lines(r)
    assert text[text.index("Không thuộc nội dung của mẫu:") + 1] == (
        "Mẫu số 07 Phụ lục I ban hành kèm theo Thông tư số 03/2025/TT-VPCP ngày 15/9/2025"
        " của Văn phòng Chính phủ hướng dẫn Nghị định số 118/2025/NĐ-CP"
    )
    assert "Ngày 16 tháng 09 năm 2025" in text and "      Nhận hồ sơ: 09:30 ngày 16/09/2025" in text


def test_form06_of_a_day_without_dossiers() -> None:
    text = lines(render06(rows=[]))
    assert "(Không có hồ sơ)" in text and text[-1] == "Số hồ sơ trong ngày: 0"


def test_form06_html_has_the_circulars_fourteen_columns_and_escapes_names() -> None:
    rows = register_rows()
    rows[0] = RegisterRow(**{**rows[0].__dict__, "applicant_name": "<script>x</script>"})
    html = render06(rows=rows).html
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
    for heading in (
        '<th rowspan="2">STT</th>',
        '<th rowspan="2">Mã hồ sơ</th>',
        '<th rowspan="2">Tên TTHC</th>',
        '<th rowspan="2">Số lượng hồ sơ (bộ)</th>',
        '<th rowspan="2">Tên cá nhân, tổ chức</th>',
        '<th rowspan="2">Địa chỉ, số điện thoại</th>',
        '<th rowspan="2">Cơ quan chủ trì giải quyết</th>',
        '<th colspan="5">Ngày, tháng, năm</th>',
        "<th>Nhận hồ sơ</th>",
        "<th>Hẹn trả kết quả</th>",
        "<th>Chuyển hồ sơ đến cơ quan giải quyết</th>",
        "<th>Nhận kết quả từ cơ quan giải quyết</th>",
        "<th>Trả kết quả cho cá nhân, tổ chức</th>",
        '<th rowspan="2">Ký nhận</th>',
        '<th rowspan="2">Ghi chú</th>',
        "<th>(14)</th>",
    ):
        assert heading in html
    body = html[html.index("<tbody>") : html.index("</tbody>")]
    assert body.count("<tr>") == 2 and all(
        row.count("<td>") == 14 for row in body.split("<tr>")[1:]
    )


# --- the result notice ------------------------------------------------------------------------

RESULT_2018 = [
    "THÔNG BÁO CÓ KẾT QUẢ GIẢI QUYẾT HỒ SƠ",
    f"Mã hồ sơ: {CODE}",
    "",
    "Kính gửi: Ông/Bà Nguyễn Thị Lan",
    "",
    "Hồ sơ đề nghị Đăng ký kết hôn của Ông/Bà, tiếp nhận lúc 09 giờ 30 phút, ngày 10 tháng 06"
    " năm 2025, đã có kết quả giải quyết lúc 14 giờ 30 phút, ngày 13 tháng 06 năm 2025.",
    "Kết quả: hồ sơ đã được giải quyết. Kết quả trả cho Ông/Bà gồm:",
    "   (1) Giấy chứng nhận kết hôn (số lượng: 2)",
    "Nhận kết quả tại: Bộ phận tiếp nhận và trả kết quả, Trung tâm Phục vụ hành chính công"
    " phường Sài Gòn",
    "Khi đến nhận kết quả, Ông/Bà mang theo Giấy tiếp nhận hồ sơ và hẹn trả kết quả.",
    "Thời gian hẹn trả kết quả: 09 giờ 30 phút, ngày 17 tháng 06 năm 2025",
    "Hồ sơ được giải quyết: Trước hạn",
    "",
    "Phiếu kiểm soát quá trình giải quyết hồ sơ kèm theo:",
    "",
    *FORM05_2018,
    "────────────────────",
    "Thông báo của hệ thống, không phải mẫu ban hành; trả kết quả giải quyết thủ tục hành"
    " chính theo Nghị định số 61/2018/NĐ-CP và Thông tư số 01/2018/TT-VPCP",
]


def test_result_notice_says_what_where_how_and_whether_on_time_with_form_05_appended() -> None:
    r = render_result()
    assert r.version == 1
    assert lines(r) == RESULT_2018
    assert r.subject == f"Hồ sơ {CODE} đã có kết quả giải quyết - Trước hạn"


def test_result_notice_after_1_july_2025_appends_form_05_in_its_2025_version() -> None:
    r = render_result(ready(LATER))
    assert r.version == 2
    assert DECREE_2025 in lines(r)[-1] and "Thông tư số 03/2025/TT-VPCP" in lines(r)[-1]
    assert "Mẫu số 06 Phụ lục I ban hành kèm theo Thông tư số 03/2025/TT-VPCP" in r.text
    assert "01/2018" not in r.text and "61/2018" not in r.text


def test_result_notice_of_a_refusal_gives_the_reasons() -> None:
    r = render_result(
        ready(
            decision=ResultDecision.REFUSED,
            documents=(),
            reasons=("Một bên chưa đủ tuổi kết hôn",),
            return_method=ReturnMethod.POST,
        )
    )
    text = lines(r)
    i = text.index(
        "Kết quả: Ủy ban nhân dân phường Sài Gòn không giải quyết hồ sơ; văn bản trả lời nêu rõ"
        " lý do:"
    )
    assert text[i + 1] == "   - Một bên chưa đủ tuổi kết hôn"
    assert "Nhận kết quả tại: Qua dịch vụ bưu chính công ích: 12 Lê Lợi, phường Sài Gòn" in text
    assert "Kết quả trả cho Ông/Bà gồm:" not in r.text and "mang theo Giấy tiếp nhận" not in r.text


def test_result_notice_of_a_late_dossier_names_the_late_steps_and_the_apologies() -> None:
    t = RECEIVED
    fault = StepFault(
        step=3,
        action="Ký giấy chứng nhận kết hôn",
        agency_id="000.01.50.H29",
        agency_name=WARD,
        deadline_at=t + timedelta(days=3),
        late_working_seconds=5 * 3600,
        reason="Quá thời hạn của bước",
    )
    r = render_result(
        ready(
            timeliness=Timeliness.LATE,
            faults=(fault,),
            apologies=1,
            appointment_at=t + timedelta(days=9),
            ready_at=t + timedelta(days=8),
            legal_appointment_at=t + timedelta(days=7),
        )
    )
    text = lines(r)
    assert "Hồ sơ được giải quyết: Quá hạn" in text
    assert "Thời gian hẹn trả kết quả: 09 giờ 30 phút, ngày 19 tháng 06 năm 2025" in text
    assert "Thời hạn giải quyết theo quy định: 09 giờ 30 phút, ngày 17 tháng 06 năm 2025" in text
    assert (
        "   - Ủy ban nhân dân phường Sài Gòn, bước 3 (Ký giấy chứng nhận kết hôn), hạn 09 giờ 30"
        " phút, ngày 13 tháng 06 năm 2025: Quá thời hạn của bước" in text
    )
    assert (
        "Trong quá trình giải quyết, cơ quan có trách nhiệm đã 1 lần xin lỗi và hẹn lại ngày trả"
        " kết quả." in text
    )
    assert r.subject.endswith("- Quá hạn")


def test_result_notice_html_appends_form_05_as_html_and_escapes_what_it_prints() -> None:
    hostile = APPLICANT.model_copy(update={"name": "<script>alert(1)</script>"})
    person = DESK.model_copy(update={"person": "<img src=x onerror=alert(2)>"})
    first = handovers()[0].model_copy(update={"giver": person})
    html = render_result(ready(handovers=(first, *handovers()[1:])), who=hostile).html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html
    appendix = html[html.index('<section class="appendix">') :]
    assert '<article lang="vi" class="form form05">' in appendix  # HTML, not escaped markup
    assert "&lt;article" not in html and '<table class="form-table control-slip">' in appendix
    assert '<p class="timeliness">Hồ sơ được giải quyết: <strong>Trước hạn</strong></p>' in html


# --- the agency's notice: a drafted apology to confirm ----------------------------------------


def drafted(**changes: Any) -> ApologyDrafted:
    fields: dict[str, Any] = dict(
        apology_id=uuid.UUID("0b7f4c1e-2a35-4d8e-9c61-3f2a1b0c9d8e"),
        code=CODE,
        number=1,
        agency_id="000.00.06.H29",
        agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
        department="CPXD",
        department_name="Phòng Cấp phép xây dựng",
        reason="Cần lấy thêm ý kiến của cơ quan phòng cháy, chữa cháy",
        previous_appointment_at=RECEIVED + timedelta(days=7),
        proposed_appointment_at=RECEIVED + timedelta(days=12),
        latest_issue_at=RECEIVED + timedelta(days=6),
        drafted_at=RECEIVED + timedelta(days=5),
    )
    fields.update(changes)
    return ApologyDrafted(**fields)


def test_apology_draft_notice_tells_the_agency_the_new_date_the_latest_moment_and_how_to_confirm() -> (
    None
):
    d = drafted()
    r = BOOK.render("apology_draft", day(d.drafted_at), apology_draft_context(d))
    assert lines(r) == [
        "Kính gửi: Sở Xây dựng Thành phố Hồ Chí Minh (Phòng Cấp phép xây dựng)",
        "",
        f"Hồ sơ {CODE} không thể trả kết quả đúng thời hạn đã hẹn (09 giờ 30 phút, ngày 17"
        " tháng 06 năm 2025).",
        "Hệ thống đã lập dự thảo Phiếu xin lỗi và hẹn lại ngày trả kết quả (Mẫu số 04), để gửi"
        " người nộp hồ sơ.",
        "Lý do: Cần lấy thêm ý kiến của cơ quan phòng cháy, chữa cháy",
        "Ngày hẹn trả kết quả mới đề xuất: 09 giờ 30 phút, ngày 22 tháng 06 năm 2025",
        "Phiếu phải được thủ trưởng cơ quan ký và gửi người nộp hồ sơ chậm nhất vào 09 giờ 30"
        " phút, ngày 16 tháng 06 năm 2025; quá thời điểm này mà chưa ký, việc chậm xin lỗi sẽ"
        " được báo cáo cấp trên trực tiếp của thủ trưởng cơ quan.",
        "Đề nghị thủ trưởng cơ quan xem xét, ghi lý do, số văn bản, ngày hẹn trả kết quả mới và"
        f" ký phiếu trên Hệ thống thông tin giải quyết thủ tục hành chính, mục hồ sơ {CODE}.",
        "────────────────────",
        "Nghị định số 61/2018/NĐ-CP; Mẫu số 04 ban hành kèm theo Thông tư số 01/2018/TT-VPCP",
    ]
    assert r.subject == (
        f"Xác nhận Phiếu xin lỗi và hẹn lại ngày trả kết quả - hồ sơ {CODE} - trước 09 giờ 30"
        " phút, ngày 16 tháng 06 năm 2025"
    )


def test_apology_draft_notice_after_1_july_2025_names_form_04_as_the_new_rules_do() -> None:
    d = drafted(number=2, drafted_at=RECEIVED + LATER, department_name=None)
    r = BOOK.render("apology_draft", day(d.drafted_at), apology_draft_context(d))
    assert r.version == 2
    assert lines(r)[0] == "Kính gửi: Sở Xây dựng Thành phố Hồ Chí Minh"
    assert (
        "Hệ thống đã lập dự thảo Văn bản xin lỗi và đề nghị gia hạn thời gian giải quyết (Mẫu"
        " số 04), lần thứ 2 đối với hồ sơ này, để gửi người nộp hồ sơ." in lines(r)
    )
    assert DECREE_2025 in r.text and "01/2018" not in r.text
    hostile = drafted(reason="<script>x</script>")
    html = BOOK.render("apology_draft", day(d.drafted_at), apology_draft_context(hostile)).html
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
