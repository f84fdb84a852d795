"""Notices people receive, without a database: who gets what by which channel, the short
texts of every applicant form version, the arithmetic of backoff and rate limits, the
gateway's signature, and what the gateway's and the portal's answers mean."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Callable
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
    StepKind,
    SupplementStage,
    Timeliness,
)
from contracts.events import (
    ApologyIssued,
    DossierReceived,
    DossierRefused,
    FeeRequested,
    Holder,
    ResultDecision,
    ResultReady,
    StepRef,
    SupplementRequested,
)
from services.notification import domain
from services.notification.channels import portal_data, portal_outcome, sms_outcome
from services.notification.delivery import (
    DeliveryPolicy,
    Result,
    TokenBucket,
    recipient_wait,
)
from services.notification.domain import (
    Contact,
    Receipt,
    Recipient,
    applicant_recipients,
    fee_context,
    form01_context,
    form02_context,
    form03_context,
)
from services.runtime import forms
from services.runtime.forms import FormBook
from services.runtime.portal_client import UNREADABLE, PortalAnswer

BOOK = FormBook.load()
CODE = "000.00.01.H29-250702-0001"
LOOKUP = "K7Q2-M9XD-4TPW"
ALL = ("email", "sms", "portal")
OFFICE = Office(
    parent_name="Ủy ban nhân dân Thành phố Hồ Chí Minh",
    name="Ủy ban nhân dân phường Bến Thành",
    desk="Trung tâm Phục vụ hành chính công phường Bến Thành",
    place="Bến Thành",
    phone="02838221234",
)
PERSON = Applicant(
    name="Nguyễn Thị Lan",
    id_number="079190000001",
    phone="0912345678",
    email="lan@example.vn",
    address="12 Lê Lợi, phường Bến Thành",
    portal_account="079190000001",
)


# --- who gets what --------------------------------------------------------------------------


def _channels(a: Applicant, via: Channel, available: tuple[str, ...] = ALL) -> list[str]:
    return [r.channel for r in applicant_recipients(a, via, available, CODE)]


def test_an_applicant_gets_every_channel_they_have() -> None:
    assert _channels(PERSON, Channel.IN_PERSON) == ["email", "sms", "portal"]
    r = applicant_recipients(PERSON, Channel.IN_PERSON, ALL, CODE)
    assert [x.address for x in r] == ["lan@example.vn", "0912345678", "079190000001"]


def test_the_portal_only_for_an_applicant_with_a_portal_account() -> None:
    no_account = PERSON.model_copy(update={"portal_account": None})
    assert _channels(no_account, Channel.IN_PERSON) == ["email", "sms"]
    assert _channels(no_account, Channel.ONLINE) == ["email", "sms"]  # nobody to read it
    only_portal = Applicant(name="Lê Văn C", id_number="079190000002", portal_account="acc-1")
    assert _channels(only_portal, Channel.POST) == ["portal"]


def test_desk_or_post_only_when_no_channel_reaches_the_applicant() -> None:
    bare = Applicant(name="Lê Văn C", id_number="079190000002", address="3 Trần Phú")
    assert _channels(bare, Channel.POST) == ["post"]
    assert _channels(bare, Channel.IN_PERSON) == ["desk"]
    assert _channels(bare.model_copy(update={"address": None}), Channel.POST) == ["desk"]
    phone_only = bare.model_copy(update={"phone": "0987654321"})
    assert _channels(phone_only, Channel.POST) == ["sms"]


def test_a_channel_not_configured_is_not_used() -> None:
    assert _channels(PERSON, Channel.ONLINE, ("email",)) == ["email"]
    phone_only = Applicant(name="Lê Văn C", id_number="079190000002", phone="0987654321")
    assert _channels(phone_only, Channel.IN_PERSON, ("email", "portal")) == ["desk"]
    assert _channels(phone_only, Channel.ONLINE, ("email", "portal")) == ["desk"]
    assert _channels(PERSON, Channel.IN_PERSON, ()) == ["desk"]


def test_what_the_receipt_keeps_reaches_the_same_channels() -> None:
    kept = Contact.from_json(Contact.of(PERSON).as_json())
    assert kept == Contact.of(PERSON)
    assert "id_number" not in Contact.of(PERSON).as_json()
    assert _channels(kept, Channel.IN_PERSON) == ["email", "sms", "portal"]  # type: ignore[arg-type]


def test_notification_ids_stay_apart_per_channel_and_keep_their_old_form() -> None:
    event = uuid.uuid4()
    same = "0912345678"  # a portal account may be a phone number
    ids = {domain.notification_id(event, "form01", same, c) for c in ("sms", "portal", "desk")}
    assert len(ids) == 3
    assert domain.notification_id(event, "form01", "a@b.vn") == uuid.uuid5(
        domain.NOTIFICATION_NS, f"{event}/form01/a@b.vn"
    )  # email as before the new channels: a redelivered old event finds its notification


def test_a_phone_the_gateway_cannot_take_is_refused_at_creation() -> None:
    assert domain.address_problem(Recipient("sms", "0912345678")) is None
    assert domain.address_problem(Recipient("sms", "+84912345678")) is not None
    assert domain.address_problem(Recipient("portal", CODE)) is None


# --- short texts of every applicant form version ---------------------------------------------

APPLICANT_KINDS = ("form01", "form02", "form03", "form04", "result_ready", "fee_requested")


def _received(at: datetime) -> dict[str, Any]:
    d = DossierReceived(
        code=CODE,
        procedure_code="1.000894",
        procedure_version=1,
        procedure_name="Đăng ký kết hôn",
        channel=Channel.IN_PERSON,
        applicant=PERSON,
        documents=(DocumentRef(code="TK", name="Tờ khai đăng ký kết hôn"),),
        receiving_agency="000.00.01.H29",
        receiving_agency_name="Ủy ban nhân dân phường Bến Thành",
        lead_agency="000.00.01.H29",
        processing_time=Duration(value=5),
        received_at=at,
        clock_starts_at=at,
        appointment_at=at + timedelta(days=7),
        office=OFFICE,
    )
    return form01_context(d, LOOKUP)


def _common(at: datetime) -> dict[str, Any]:
    return dict(
        code=CODE,
        procedure_code="1.000894",
        procedure_name="Đăng ký kết hôn",
        channel=Channel.IN_PERSON,
        applicant=PERSON,
        receiving_agency="000.00.01.H29",
        receiving_agency_name="Ủy ban nhân dân phường Bến Thành",
        office=OFFICE,
    )


def _supplement(at: datetime) -> dict[str, Any]:
    s = SupplementRequested(
        **_common(at),
        missing=(RequiredDocument(code="TK", name="Tờ khai đăng ký kết hôn"),),
        requested_at=at,
        stage=SupplementStage.PROCESSING,
        items=(
            MissingItem(code="TK", name="Tờ khai đăng ký kết hôn", reason="Thiếu chữ ký"),
            MissingItem(code="CCCD", name="Căn cước công dân", reason="Hết hạn"),
        ),
    )
    return form02_context(s, LOOKUP)


def _refused(at: datetime) -> dict[str, Any]:
    r = DossierRefused(
        **_common(at), reasons=("Không thuộc thẩm quyền", "Thiếu giấy tờ"), refused_at=at
    )
    return form03_context(r, LOOKUP)


def _apology(at: datetime) -> dict[str, Any]:
    a = ApologyIssued(
        apology_id=uuid.UUID(int=7),
        code=CODE,
        number=1,
        agency_id="000.00.06.H29",
        agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
        reason="Cần lấy thêm ý kiến",
        previous_appointment_at=at + timedelta(days=5),
        appointment_at=at + timedelta(days=9),
        issued_at=at,
        procedure_name="Cấp giấy phép xây dựng",
        received_at=at - timedelta(days=20),
        office=OFFICE,
    )
    return forms.form04_context(a, Contact.of(PERSON))


def _result(at: datetime) -> dict[str, Any]:
    r = ResultReady(
        code=CODE,
        procedure_code="1.009972",
        procedure_name="Cấp giấy phép xây dựng",
        decision=ResultDecision.APPROVED,
        documents=(DocumentRef(code="GPXD", name="Giấy phép xây dựng"),),
        ready_at=at,
        received_at=at - timedelta(days=20),
        appointment_at=at + timedelta(days=1),
        legal_appointment_at=at + timedelta(days=1),
        timeliness=Timeliness.ON_TIME,
        return_method=ReturnMethod.AT_DESK,
        receiving_agency="000.00.01.H29",
        receiving_agency_name="Trung tâm Phục vụ hành chính công phường Bến Thành",
        lead_agency="000.00.06.H29",
        lead_agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
    )
    return forms.result_context(r, Contact.of(PERSON), OFFICE)


def _fee(at: datetime) -> dict[str, Any]:
    holder = Holder(agency_id="000.00.06.H29", agency_name="Sở Xây dựng Thành phố Hồ Chí Minh")
    f = FeeRequested(
        code=CODE,
        step=StepRef(
            order=2,
            kind=StepKind.APPRAISE,
            action="Thẩm định",
            agency_id="000.00.06.H29",
            agency_name="Sở Xây dựng Thành phố Hồ Chí Minh",
            duration=Duration(value=5),
        ),
        amount_vnd=1500000,
        requested_by=holder,
        requested_at=at,
    )
    receipt = Receipt(CODE, Contact.of(PERSON), Channel.IN_PERSON, "Cấp phép", at, OFFICE)
    return fee_context(f, receipt)


CONTEXTS: dict[str, Callable[[datetime], dict[str, Any]]] = {
    "form01": _received,
    "form02": _supplement,
    "form03": _refused,
    "form04": _apology,
    "result_ready": _result,
    "fee_requested": _fee,
}


@pytest.mark.parametrize(
    ("kind", "version"),
    [(k, v.version) for k in APPLICANT_KINDS for v in BOOK.forms[k].versions],
)
def test_every_applicant_form_version_has_a_short_text(kind: str, version: int) -> None:
    v = next(x for x in BOOK.forms[kind].versions if x.version == version)
    later = [
        x.effective_from for x in BOOK.forms[kind].versions if x.effective_from > v.effective_from
    ]
    day = min(later) - timedelta(days=1) if later else v.effective_from + timedelta(days=400)
    at = datetime(day.year, day.month, day.day, 3, 0, tzinfo=UTC)
    r = BOOK.render(kind, day, CONTEXTS[kind](at))
    assert r.version == version
    assert r.sms is not None, f"{kind} v{version} has no sms template"
    assert CODE in r.sms
    assert LOOKUP not in r.sms and "tra cứu" not in r.sms  # never the lookup code
    assert "\n" not in r.sms and "  " not in r.sms
    assert r.sms == unicodedata.normalize("NFC", r.sms)
    assert len(r.sms) <= 250, (len(r.sms), r.sms)  # four UCS-2 segments at most


def test_the_short_text_names_the_fact_that_matters() -> None:
    day = date(2026, 11, 23)
    at = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    assert BOOK.render("form01", day, _received(at)).sms.endswith(  # type: ignore[union-attr]
        "Hẹn trả kết quả: 09:00 ngày 30/11/2026."
    )
    assert "Hẹn trả kết quả mới: 09:00 ngày 02/12/2026" in (
        BOOK.render("form04", day, _apology(at)).sms or ""
    )
    assert "2 thành phần (Tờ khai đăng ký kết hôn, …)" in (
        BOOK.render("form02", day, _supplement(at)).sms or ""
    )
    assert "Lý do: Không thuộc thẩm quyền (và 1 lý do khác)" in (
        BOOK.render("form03", day, _refused(at)).sms or ""
    )
    assert "1.500.000 đồng" in (BOOK.render("fee_requested", day, _fee(at)).sms or "")


def test_agency_notices_are_forms_too() -> None:
    for kind in (
        "consultation_request",
        "consultation_reminder",
        "consultation_escalation",
        "apology_draft",
        "apology_withdrawn",
    ):
        assert kind in BOOK.forms


# --- backoff and rate limits -------------------------------------------------------------------

POLICY = DeliveryPolicy(retry_base=timedelta(seconds=2), retry_max=timedelta(minutes=10))


def test_an_outage_backs_off_on_how_long_it_has_lasted() -> None:
    assert POLICY.outage_backoff(timedelta(0)) == timedelta(seconds=2)
    assert POLICY.outage_backoff(timedelta(seconds=1)) == timedelta(seconds=2)
    assert POLICY.outage_backoff(timedelta(seconds=45)) == timedelta(seconds=45)
    assert POLICY.outage_backoff(timedelta(hours=3)) == timedelta(minutes=1)  # probed each minute
    # retried at each wait's end, the waits double: 2, 4, 8, 16 ... seconds
    lasted, waits = timedelta(0), []
    for _ in range(5):
        wait = POLICY.outage_backoff(lasted)
        waits.append(wait.total_seconds())
        lasted += wait
    assert waits == [2, 2, 4, 8, 16]


def test_a_message_backs_off_on_its_own_attempts() -> None:
    assert [POLICY.backoff(a).total_seconds() for a in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert POLICY.backoff(30) == timedelta(minutes=10)


def test_the_gateway_token_bucket() -> None:
    b = TokenBucket(rate=2, now=0.0)  # 2 a second, bursts of 2
    assert [b.take(0.0) for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    assert b.take(10.0) == 0.0  # refilled, but never above the burst
    assert b.take(10.0) == 0.0 and b.take(10.0) == 0.5
    unlimited = TokenBucket(rate=0)
    assert {unlimited.take(0.0) for _ in range(100)} == {0.0}


def test_the_recipient_limit_makes_a_message_wait_not_fail() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    sent = [now - timedelta(minutes=m) for m in (50, 30, 10)]
    assert recipient_wait(sent, now, 4, hour) is None
    assert recipient_wait(sent, now, 3, hour) == now + timedelta(minutes=10)
    assert recipient_wait(sent, now, 2, hour) == now + timedelta(minutes=30)
    old = [now - timedelta(minutes=61)] * 10
    assert recipient_wait(old, now, 1, hour) is None  # out of the window
    assert recipient_wait(sent, now, 0, hour) is None  # no limit


# --- the gateway's signature -----------------------------------------------------------------


def test_receipts_are_signed_with_hmac_sha256_of_the_exact_bytes() -> None:
    body = b'{"id":"g-1","client_ref":"x","to":"0912345678","status":"delivered"}'
    good = domain.sign("s3cret", body)
    assert len(good) == 64 and domain.signature_problem("s3cret", body, good) is None
    assert domain.signature_problem("s3cret", body, good.upper()) is None
    assert domain.signature_problem("s3cret", body, f"sha256={good}") is None
    assert domain.signature_problem("s3cret", body + b" ", good) == "does not match the body"
    assert domain.signature_problem("other", body, good) == "does not match the body"
    assert domain.signature_problem("s3cret", body, None) == "missing"
    assert domain.signature_problem("s3cret", body, "zz") == "not a hex HMAC-SHA256"
    assert "no webhook secret" in (domain.signature_problem("", body, good) or "")


def test_what_operators_see_of_a_stored_body() -> None:
    shown = domain.masked_text(b'{"to": "0912345678", "e": "lan@example.vn"}\xff')
    assert "0912345678" not in shown and "*******678" in shown
    assert "lan@example.vn" not in shown and "l***@example.vn" in shown
    assert shown.endswith("\ufffd")  # bytes that are not UTF-8 stay visible as such


# --- what the gateway's and the portal's answers mean -----------------------------------------


def test_the_gateway_answers() -> None:
    ok = sms_outcome(202, b'{"id": "g-1", "status": "accepted"}', {})
    assert (ok.result, ok.message_id) == (Result.SENT, "g-1")
    again = sms_outcome(200, b'{"id": "g-1", "status": "accepted"}', {})
    assert (again.result, again.message_id) == (Result.SENT, "g-1")
    bad = sms_outcome(400, b'{"error": "unknown number", "field": "to"}', {})
    assert bad.result is Result.FAILED and "unknown number (field to)" in (bad.reason or "")
    assert bad.answer == {"error": "unknown number", "field": "to"}
    for status in (500, 502, 503, 429, 408):
        assert sms_outcome(status, b"busy", {}).result is Result.UNREACHABLE
    assert sms_outcome(401, b"", {}).result is Result.UNREACHABLE  # our key, not the message
    garbage = sms_outcome(200, b"<html>ok</html>", {"content-type": "text/html"})
    assert garbage.result is Result.UNREACHABLE and garbage.reject is not None
    assert garbage.reject.body == b"<html>ok</html>" and garbage.reject.source == "sms-gateway"
    odd_refusal = sms_outcome(400, b"nope", {})
    assert odd_refusal.result is Result.FAILED and odd_refusal.reject is not None


def test_the_portal_answers() -> None:
    nid = str(uuid.uuid4())
    ok = portal_outcome(nid, PortalAnswer(0, "", {"error_code": 0}))
    assert (ok.result, ok.message_id, ok.answer) == (Result.DELIVERED, nid, {"error_code": 0})
    no = portal_outcome(nid, PortalAnswer(7, "Không tìm thấy hồ sơ", {"error_code": 7, "x": 1}))
    assert (
        no.result is Result.FAILED and no.reason == "the portal refused it: 7 Không tìm thấy hồ sơ"
    )
    assert no.answer == {"error_code": 7, "x": 1}  # kept whole
    odd = portal_outcome(nid, PortalAnswer(UNREADABLE, "", {"error_code": "OK!"}))
    assert odd.result is Result.UNREACHABLE and odd.reject is not None
    assert b"OK!" in odd.reject.body


def test_the_portal_message() -> None:
    row = {
        "id": uuid.UUID(int=5),
        "dossier_code": CODE,
        "recipient": "079190000001",
        "subject": "Giấy tiếp nhận",
        "body_text": "...",
    }
    (data,) = portal_data(row)  # type: ignore[arg-type]
    assert data == {
        "MaThongBao": str(uuid.UUID(int=5)),
        "MaHoSo": CODE,
        "MaDoiTuong": "079190000001",
        "TieuDe": "Giấy tiếp nhận",
        "NoiDung": "...",
    }
    (data,) = portal_data({**row, "recipient": CODE})  # type: ignore[arg-type]
    assert data["MaDoiTuong"] == ""  # an online dossier without an account: its owner
