"""Forms are versioned data rendered in Vietnamese."""

from __future__ import annotations

from datetime import date

from contracts.common import Applicant, Channel
from services.notification.domain import FormBook, applicant_recipient


def test_form01_version_in_force_and_content() -> None:
    book = FormBook.load()
    assert book.in_force("form01", date(2024, 1, 1)).version == 1
    assert book.in_force("form01", date(2025, 7, 1)).version == 2
    ctx = {
        "code": "000.01.50.H29-261122-0001",
        "receiving_agency_name": "UBND phường Dịch Vọng",
        "applicant": {
            "name": "Nguyễn Thị Lan",
            "address": None,
            "phone": "0912345678",
            "email": None,
        },
        "procedure_name": "Đăng ký kết hôn",
        "summary": None,
        "documents": [{"code": "TK", "name": "Tờ khai", "copies": 1}],
        "processing_time": "04 giờ làm việc",
        "received_local": "09:00 ngày 23/11/2026",
        "received_iso": "x",
        "appointment_local": "13:00 ngày 23/11/2026",
        "appointment_iso": "y",
        "serial": "0001",
    }
    r = book.render("form01", date(2026, 11, 23), ctx)
    assert "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ" in r.text
    assert "13:00 ngày 23/11/2026" in r.text and "Nghị định số 118/2025" in r.text
    assert "<strong>13:00 ngày 23/11/2026</strong>" in r.html


def test_html_is_escaped() -> None:
    book = FormBook.load()
    r = book.render(
        "form03",
        date(2026, 1, 1),
        {
            "code": "c",
            "receiving_agency_name": "A",
            "applicant": {"name": "<script>x</script>"},
            "procedure_name": "P",
            "reasons": ["r"],
        },
    )
    assert "<script>" not in r.html and "&lt;script&gt;" in r.html


def test_notices_go_back_by_the_channel_they_came_in() -> None:
    a = Applicant(name="Lê Văn C", id_number="079190000001", address="12 Trần Phú")
    assert applicant_recipient(a, Channel.POST).channel == "post"
    assert applicant_recipient(a, Channel.IN_PERSON).channel == "desk"
    e = a.model_copy(update={"email": "c@example.vn"})
    assert applicant_recipient(e, Channel.ONLINE).channel == "email"
