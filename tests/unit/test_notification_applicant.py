"""What the applicant is told, and only that (issue 23, items E, 5, 8 and F).

- An organisation (object type 2) is addressed by its name ("Kính gửi: Công ty TNHH ..."),
  a citizen "Ông/Bà <name>"; a sentence speaks to an organisation as "Quý tổ chức".
- The applicant's list of notices holds only those addressed to the applicant, never the
  agencies' own (opinion requests, reminders, escalations, drafted apologies).
- A stopped dossier gets the stop notice, Mẫu số 05 of Annex I of Circular
  03/2025/TT-VPCP ("Thông báo dừng giải quyết hồ sơ"), on every channel the applicant has,
  with the reason; a withdrawal gets a short acknowledgement.
- Refusals a person reads are in Vietnamese, naming the field and the reason.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi import HTTPException

from contracts.common import (
    Applicant,
    Channel,
    DossierStatus,
    Duration,
    MissingItem,
    ObjectType,
    Office,
    PortalStatus,
    RequiredDocument,
    ReturnMethod,
    StepKind,
    Timeliness,
)
from contracts.envelope import new_envelope
from contracts.events import (
    ApologyIssued,
    DossierRefused,
    FeeRequested,
    Holder,
    ResultDecision,
    ResultReady,
    RouteClosed,
    StepRef,
    SupplementRequested,
)
from services.notification import api, domain, handlers
from services.notification.domain import Contact, Receipt, Recipient
from services.runtime import forms
from services.runtime.calendar import format_local
from services.runtime.forms import FormBook

BOOK = FormBook.load()
CODE = "000.01.50.H29-260302-0001"
AT = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)  # 10:00 on Tuesday 10 March 2026
RECEIVED = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
DESK = Office(
    parent_name="Ủy ban nhân dân Thành phố Hồ Chí Minh",
    name="Ủy ban nhân dân phường Sài Gòn",
    desk="Trung tâm Phục vụ hành chính công phường Sài Gòn",
    place="Sài Gòn",
    phone="02838291234",
)
BUILDING = Office(
    parent_name="Ủy ban nhân dân Thành phố Hồ Chí Minh",
    name="Sở Xây dựng Thành phố Hồ Chí Minh",
    place="Thành phố Hồ Chí Minh",
)
COMPANY = Applicant(
    name="Công ty TNHH Xây dựng An Phú",
    object_type=ObjectType.ORGANISATION,
    id_number="0301234567",
    phone="0912345678",
    email="anphu@example.vn",
    portal_account="dn-0301234567",
)
CITIZEN = Applicant(name="Nguyễn Thị Lan", id_number="079190000001", email="lan@example.vn")
REASON = "Cơ quan có thẩm quyền phát hiện giấy tờ trong hồ sơ bị giả mạo"


def receipt(applicant: Applicant = COMPANY, channel: Channel = Channel.ONLINE) -> Receipt:
    return Receipt(
        code=CODE,
        contact=Contact.of(applicant),
        channel=channel,
        procedure_name="Cấp giấy phép xây dựng",
        received_at=RECEIVED,
        office=DESK,
    )


def closed(state: DossierStatus = DossierStatus.STOPPED, **changes: Any) -> RouteClosed:
    fields: dict[str, Any] = dict(
        code=CODE,
        state=state,
        status=state.portal,
        reason=REASON if state is DossierStatus.STOPPED else None,
        at_step=2,
        closed_at=AT,
        agency_id="000.00.06.H29",
        agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
        office=BUILDING,
        procedure_name="Cấp giấy phép xây dựng",
        received_at=RECEIVED,
    )
    fields.update(changes)
    return RouteClosed(**fields)


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines()]


# --- E: how the applicant is addressed -----------------------------------------------------


def _every_applicant_notice(applicant: Applicant) -> dict[str, str]:
    """Each applicant-facing form rendered for ``applicant``: Forms 02-04, the fee notice,
    the result notice and the stop notice."""
    common: dict[str, Any] = dict(
        code=CODE,
        procedure_code="1.009972",
        procedure_name="Cấp giấy phép xây dựng",
        channel=Channel.ONLINE,
        applicant=applicant,
        receiving_agency="000.01.50.H29",
        receiving_agency_name="Ủy ban nhân dân phường Sài Gòn",
        office=DESK,
    )
    r = receipt(applicant)
    holder = Holder(agency_id="000.00.06.H29", agency_name="Sở Xây dựng Thành phố Hồ Chí Minh")
    step = StepRef(
        order=2,
        kind=StepKind.APPRAISE,
        action="Thẩm định",
        agency_id="000.00.06.H29",
        agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
        duration=Duration(value=10),
    )
    apology = ApologyIssued(
        apology_id="00000000-0000-0000-0000-000000000004",
        code=CODE,
        number=1,
        agency_id="000.00.06.H29",
        agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
        reason="Hồ sơ phức tạp",
        previous_appointment_at=AT,
        appointment_at=AT + timedelta(days=3),
        issued_at=AT - timedelta(days=1),
        procedure_name="Cấp giấy phép xây dựng",
        received_at=RECEIVED,
        office=BUILDING,
    )
    ready = ResultReady(
        code=CODE,
        procedure_code="1.009972",
        procedure_name="Cấp giấy phép xây dựng",
        receiving_agency="000.01.50.H29",
        receiving_agency_name="Ủy ban nhân dân phường Sài Gòn",
        lead_agency="000.00.06.H29",
        lead_agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
        decision=ResultDecision.APPROVED,
        return_method=ReturnMethod.AT_DESK,
        received_at=RECEIVED,
        ready_at=AT,
        appointment_at=AT,
        legal_appointment_at=AT,
        timeliness=Timeliness.ON_TIME,
    )
    contexts = {
        "form02": domain.form02_context(
            SupplementRequested(
                **common,
                missing=(RequiredDocument(code="BV", name="Bản vẽ thiết kế"),),
                items=(MissingItem(code="BV", name="Bản vẽ thiết kế", reason="Thiếu"),),
                requested_at=AT,
            )
        ),
        "form03": domain.form03_context(
            DossierRefused(**common, reasons=("Không thuộc thẩm quyền",), refused_at=AT)
        ),
        "form04": forms.form04_context(apology, r.contact),
        "fee_requested": domain.fee_context(
            FeeRequested(
                code=CODE, step=step, amount_vnd=50000, requested_by=holder, requested_at=AT
            ),
            r,
        ),
        "result_ready": forms.result_context(ready, r.contact, DESK),
        "stop_notice": domain.stop_notice_context(closed(), r),
    }
    return {k: BOOK.render(k, date(2026, 3, 10), ctx).text for k, ctx in contexts.items()}


def test_an_organisation_is_addressed_by_its_name_never_ong_ba__issue_23_e() -> None:
    texts = _every_applicant_notice(COMPANY)
    for kind, text in texts.items():
        assert "Ông/Bà" not in text, kind
        if kind not in ("form02", "form03"):  # Forms 02-03 name the applicant, no "Kính gửi"
            assert "Kính gửi: Công ty TNHH Xây dựng An Phú" in lines(text), kind
    assert "Yêu cầu Quý tổ chức hoàn thiện hồ sơ" in texts["form02"]
    assert "Xin thông báo cho Quý tổ chức được biết và thực hiện./." in texts["form03"]
    assert "của Công ty TNHH Xây dựng An Phú." in texts["form04"]
    assert "Sự chậm trễ này đã gây phiền hà cho Quý tổ chức." in texts["form04"]
    assert "đề nghị Quý tổ chức thực hiện nghĩa vụ tài chính" in texts["fee_requested"]


def test_a_citizen_is_addressed_ong_ba_and_the_name__issue_23_e() -> None:
    texts = _every_applicant_notice(CITIZEN)
    for kind in ("form04", "fee_requested", "result_ready", "stop_notice"):
        assert "Kính gửi: Ông/Bà Nguyễn Thị Lan" in lines(texts[kind]), kind
    assert "Quý tổ chức" not in "".join(texts.values())
    assert "của Ông/Bà Nguyễn Thị Lan." in texts["form04"]


def test_what_notification_keeps_of_the_receipt_says_whether_it_is_an_organisation() -> None:
    """The receipt is kept as JSON; later notices (Form 04, the result, the stop) read the
    applicant's type from it. A citizen's receipt keeps the form it had."""
    kept = Contact.from_json(Contact.of(COMPANY).as_json())
    assert kept.object_type == ObjectType.ORGANISATION
    assert forms.applicant_view(kept)["addressee"] == "Công ty TNHH Xây dựng An Phú"
    assert "object_type" not in Contact.of(CITIZEN).as_json()
    assert Contact.from_json({"name": "Lê Văn C"}).object_type == ObjectType.CITIZEN


# --- E: the applicant's list holds only what is addressed to the applicant ------------------


def test_the_agencies_notices_are_not_the_applicants__issue_23_e() -> None:
    for channel in ("email", "sms", "portal", "desk", "post"):
        assert domain.addressed_to_applicant(channel)
    assert not domain.addressed_to_applicant(domain.AGENCY)
    assert domain.TO_APPLICANT | {domain.AGENCY} == domain.CHANNELS


# --- 5: the stop notice, and the acknowledgement of a withdrawal ---------------------------


class _Notifier:
    """Stands in for ``Notifier``: every electronic channel configured, renders what it is
    given for each recipient."""

    def __init__(self) -> None:
        self.forms = BOOK
        self.sent: list[tuple[str, str, str, str | None]] = []

    def to_applicant(self, applicant: Any, channel: Channel, code: str) -> list[Recipient]:
        return domain.applicant_recipients(applicant, channel, domain.ELECTRONIC, code)

    async def notify(
        self, conn: Any, env: Any, kind: str, recipients: Any, context: dict[str, Any]
    ) -> None:
        on = date.fromisoformat(format_local(env.occurred_at, "%Y-%m-%d") or "")
        r = self.forms.render(kind, on, context)
        for recipient in recipients:
            self.sent.append((kind, recipient.channel, r.text, r.sms))


async def _close(monkeypatch: pytest.MonkeyPatch, event: RouteClosed) -> _Notifier:
    async def kept(conn: Any, code: str) -> Receipt:
        return receipt()

    monkeypatch.setattr(handlers, "_receipt", kept)
    n = _Notifier()
    on_closed = handlers.build(n)["routing.route_closed"]  # type: ignore[arg-type]
    env = new_envelope(event, subject=CODE, producer="routing", occurred_at=event.closed_at)
    await on_closed(None, env, event)
    return n


async def test_a_stop_tells_the_applicant_on_every_channel_with_the_reason__circular_03_2025_form_05(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = await _close(monkeypatch, closed())
    assert [(k, c) for k, c, _, _ in n.sent] == [
        ("stop_notice", "email"),
        ("stop_notice", "sms"),
        ("stop_notice", "portal"),
    ]
    text, sms = n.sent[0][2], n.sent[0][3]
    assert lines(text)[:9] == [
        "ỦY BAN NHÂN DÂN THÀNH PHỐ HỒ CHÍ MINH",
        "SỞ XÂY DỰNG THÀNH PHỐ HỒ CHÍ MINH",
        "Số: ……",
        "",
        "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "Độc lập - Tự do - Hạnh phúc",
        "Thành phố Hồ Chí Minh, ngày 10 tháng 03 năm 2026",
        "",
        "THÔNG BÁO DỪNG GIẢI QUYẾT HỒ SƠ",
    ]
    assert (
        "Ngày 02 tháng 03 năm 2026, Ủy ban nhân dân phường Sài Gòn tiếp nhận hồ sơ đề nghị"
        " Cấp giấy phép xây dựng của Công ty TNHH Xây dựng An Phú."
    ) in lines(text)
    assert (
        "Sở Xây dựng Thành phố Hồ Chí Minh thông báo dừng giải quyết hồ sơ nêu trên kể từ"
        " 10 giờ 00 phút, ngày 10 tháng 03 năm 2026."
    ) in lines(text)
    assert f"Lý do: {REASON}" in lines(text)
    assert "Mẫu số 05 Phụ lục I ban hành kèm theo Thông tư số 03/2025/TT-VPCP" in text
    assert sms == f"Hồ sơ {CODE} đã dừng giải quyết từ 10:00 ngày 10/03/2026. Lý do: {REASON}."


def test_the_stop_notice_is_versioned_form_05_of_circular_03_2025_from_its_date() -> None:
    assert BOOK.in_force("stop_notice", date(2025, 9, 14)).version == 1
    v2 = BOOK.in_force("stop_notice", date(2025, 9, 15))
    assert v2.version == 2 and v2.title == "THÔNG BÁO DỪNG GIẢI QUYẾT HỒ SƠ"
    assert "Mẫu số 05 Phụ lục I" in v2.legal_basis and "118/2025/NĐ-CP" in v2.legal_basis
    v1 = BOOK.in_force("stop_notice", date(2025, 6, 30))
    assert "không phải mẫu ban hành" in v1.legal_basis and "Mẫu số" not in v1.legal_basis


async def test_an_older_event_without_the_agency_falls_back_on_the_receipt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bare = closed(agency_id=None, agency_name=None, office=None, procedure_name=None)
    bare = bare.model_copy(update={"received_at": None})
    n = await _close(monkeypatch, bare)
    text = n.sent[0][2]
    assert lines(text)[1] == "ỦY BAN NHÂN DÂN PHƯỜNG SÀI GÒN"
    assert "Cấp giấy phép xây dựng của Công ty TNHH Xây dựng An Phú." in text


async def test_a_withdrawal_is_acknowledged_and_nothing_else_closes_with_a_notice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = await _close(monkeypatch, closed(DossierStatus.WITHDRAWN))
    assert [(k, c) for k, c, _, _ in n.sent] == [
        ("withdrawal_notice", "email"),
        ("withdrawal_notice", "sms"),
        ("withdrawal_notice", "portal"),
    ]
    assert "đã được rút theo đề nghị của Quý tổ chức lúc 10 giờ 00 phút" in n.sent[0][2]
    assert "Lý do" not in n.sent[0][2]
    other = closed(DossierStatus.RETURNED, status=PortalStatus.RESULT_RETURNED)
    assert (await _close(monkeypatch, other)).sent == []


def test_routing_gives_the_stop_notice_what_it_prints() -> None:
    """``Route.close()`` names the deciding agency, its header, the procedure and the
    receipt on ``routing.route_closed``."""
    from tests.unit.test_routing_route import at, start

    route = start()
    route.take_events()
    assert route.close(DossierStatus.STOPPED, REASON, at(10, 9))
    (event,) = [e for e in route.take_events() if isinstance(e, RouteClosed)]
    assert (event.agency_id, event.agency_name) == (route.lead_agency, route.lead_agency_name)
    assert event.office == route.offices.get(route.lead_agency) and event.office is not None
    assert (event.procedure_name, event.received_at) == (route.procedure_name, route.received_at)


# --- F: refusals a person reads -------------------------------------------------------------


def test_refusals_are_in_vietnamese_naming_the_field_and_the_reason__issue_23_f() -> None:
    exc = api._refused(409, "recipient", "Không gửi lại được: lý do")
    assert isinstance(exc, HTTPException) and exc.status_code == 409
    assert exc.detail == {
        "detail": "Không gửi lại được: lý do",
        "errors": [{"field": "recipient", "reason": "Không gửi lại được: lý do"}],
    }
    sms = domain.unreachable_reason(Recipient(domain.SMS, "12345"))
    assert sms is not None and sms.startswith("số điện thoại của người nhận không phải số Việt")
    email = domain.unreachable_reason(Recipient(domain.EMAIL, "not an address"))
    assert email is not None and email.startswith("địa chỉ thư điện tử")
    assert domain.unreachable_reason(Recipient(domain.SMS, "0912345678")) is None
    assert set(api.STATUS_LABEL) == {"pending", "sending", "sent", "delivered", "failed"}
