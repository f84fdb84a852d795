"""Forms are versioned data rendered in Vietnamese."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from contracts.common import (
    Applicant,
    Channel,
    DocumentRef,
    Duration,
    MissingItem,
    Office,
    RequiredDocument,
    TimeUnit,
)
from contracts.envelope import new_envelope
from contracts.events import DossierReceived, DossierRefused, SupplementRequested
from services.notification.domain import (
    Recipient,
    applicant_recipient,
    applicant_recipients,
    form01_context,
    form03_context,
)
from services.notification.handlers import build
from services.runtime.calendar import format_local
from services.runtime.forms import FormBook


def test_form01_version_in_force_and_content() -> None:
    book = FormBook.load()
    assert book.in_force("form01", date(2024, 1, 1)).version == 1
    assert book.in_force("form01", date(2025, 9, 15)).version == 2
    received = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    event = DossierReceived(
        code="000.01.50.H29-261122-0001",
        procedure_code="1.000894",
        procedure_version=1,
        procedure_name="Đăng ký kết hôn",
        channel=Channel.IN_PERSON,
        applicant=Applicant(name="Nguyễn Thị Lan", id_number="079190000001", phone="0912345678"),
        documents=(DocumentRef(code="TK", name="Tờ khai"),),
        receiving_agency="000.01.50.H29",
        receiving_agency_name="Trung tâm Phục vụ hành chính công phường Sài Gòn",
        lead_agency="000.01.50.H29",
        processing_time=Duration(value=4, unit=TimeUnit.WORKING_HOURS),
        received_at=received,
        clock_starts_at=received,
        appointment_at=received + timedelta(hours=4),
    )
    r = book.render("form01", date(2026, 11, 23), form01_context(event))
    assert "GIẤY TIẾP NHẬN HỒ SƠ VÀ HẸN TRẢ KẾT QUẢ" in r.text
    assert "13 giờ 00 phút, ngày 23 tháng 11 năm 2026" in r.text
    assert "Nghị định số 118/2025" in r.text
    assert "<strong>13 giờ 00 phút, ngày 23 tháng 11 năm 2026</strong>" in r.html


def test_html_is_escaped() -> None:
    book = FormBook.load()
    at = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    event = DossierRefused(
        code="000.01.50.H29-260101-0001",
        procedure_code="1.000894",
        procedure_name="P",
        channel=Channel.ONLINE,
        applicant=Applicant(name="<script>x</script>", id_number="079190000001"),
        receiving_agency="000.01.50.H29",
        receiving_agency_name="A",
        reasons=("r",),
        refused_at=at,
    )
    r = book.render("form03", date(2026, 1, 1), form03_context(event))
    assert "<script>" not in r.html and "&lt;script&gt;" in r.html


def test_notices_go_back_by_the_channel_they_came_in() -> None:
    a = Applicant(name="Lê Văn C", id_number="079190000001", address="12 Trần Phú")
    assert applicant_recipient(a, Channel.POST).channel == "post"
    assert applicant_recipient(a, Channel.IN_PERSON).channel == "desk"
    e = a.model_copy(update={"email": "c@example.vn"})
    assert applicant_recipient(e, Channel.ONLINE).channel == "email"


class _Notifier:
    """Stands in for ``Notifier``: remembers the lookup code and renders what it is given."""

    def __init__(self) -> None:
        self.forms = FormBook.load()
        self.sent: list[tuple[str, str]] = []

    async def remember(self, conn: Any, code: str, *args: Any) -> str:
        return "K7Q2-M9XD"

    def to_applicant(self, applicant: Any, channel: Channel, code: str) -> list[Recipient]:
        return applicant_recipients(applicant, channel, ("email",), code)

    async def notify(
        self, conn: Any, env: Any, kind: str, recipient: Any, context: dict[str, Any]
    ) -> None:
        on = format_local(env.occurred_at, "%Y-%m-%d") or ""
        self.sent.append((kind, self.forms.render(kind, date.fromisoformat(on), context).text))


async def test_handlers_pass_what_forms_01_to_03_print() -> None:
    n = _Notifier()
    handlers = build(n)
    at = datetime(2025, 9, 16, 3, 0, tzinfo=UTC)
    office = Office(
        parent_name="Ủy ban nhân dân Thành phố Hồ Chí Minh",
        name="Ủy ban nhân dân phường Bến Thành",
        place="Bến Thành",
        phone="02838221234",
    )
    common: dict[str, Any] = dict(
        code="000.00.01.H29-250702-0001",
        procedure_code="1.000894",
        procedure_name="Đăng ký kết hôn",
        channel=Channel.IN_PERSON,
        applicant=Applicant(name="Lê Văn C", id_number="079190000001"),
        receiving_agency="000.00.01.H29",
        receiving_agency_name="Ủy ban nhân dân phường Bến Thành",
        office=office,
    )
    events = [
        (
            "dossier.received",
            DossierReceived(
                **common,
                procedure_version=1,
                documents=(DocumentRef(code="TK", name="Tờ khai đăng ký kết hôn"),),
                lead_agency="000.00.01.H29",
                processing_time=Duration(value=5),
                received_at=at,
                clock_starts_at=at,
                appointment_at=at + timedelta(days=7),
                received_by="Trần Văn Bình",
            ),
        ),
        (
            "dossier.supplement_requested",
            SupplementRequested(
                **common,
                missing=(RequiredDocument(code="TK", name="Tờ khai đăng ký kết hôn"),),
                requested_at=at,
                items=(MissingItem(code="TK", name="Tờ khai đăng ký kết hôn", reason="Thiếu"),),
            ),
        ),
        (
            "dossier.refused",
            DossierRefused(**common, reasons=("Không thuộc thẩm quyền",), refused_at=at),
        ),
    ]
    for event_type, payload in events:
        await handlers[event_type](
            None,
            new_envelope(payload, subject=payload.code, producer="intake", occurred_at=at),
            payload,
        )
    kinds = [k for k, _ in n.sent]
    assert kinds == ["form01", "form02", "form03"]
    for _, text in n.sent:
        assert "Bến Thành, ngày 16 tháng 09 năm 2025" in text
        assert "Thông tư số 03/2025/TT-VPCP" in text
        assert text.rstrip().endswith("Mã tra cứu (giữ bí mật): K7Q2-M9XD")
    assert "   (1) Tờ khai đăng ký kết hôn (số lượng: 1)" in n.sent[0][1]
    assert "      Lý do: Thiếu" in n.sent[1][1] and "tạm dừng" not in n.sent[1][1]
    assert "   - Không thuộc thẩm quyền" in n.sent[2][1]
