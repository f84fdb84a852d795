"""Issue 23 (B, D, E, F, 7): what the round does with time, and what agencies read.

An extension of an overdue request counts from the moment it is granted; reminders go out
only while they help (the latest one due, never at or after the deadline) and say when
silence is consent; a deemed opinion is told to both agencies; an escalation says the
deadline missed and by how much; the request is an official letter (Decree 30/2020/NĐ-CP,
Art. 8(2)) that lists the documents really attached, by name; a valid key of someone who
may not answer is refused as a 403, in Vietnamese.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.agencies import default_book
from contracts.common import Duration, TimeUnit
from contracts.envelope import new_envelope
from contracts.events import (
    ConsultationDeemedConsent,
    ConsultationEscalated,
    ConsultationReminded,
    ConsultationRequested,
    Decision,
)
from services.consultation import domain
from services.consultation.domain import Refusal, Refused, Request, Round, Status
from services.consultation.opinions import HTTP_STATUS, attached, letter, letter_number
from services.consultation.templates import ARTICLE, DOCUMENT_NUMBER, Role, TemplateBook
from services.notification import domain as ndomain
from services.notification import handlers as nhandlers
from services.runtime.calendar import VN_TZ, WorkingCalendar, format_local
from services.runtime.forms import FormBook
from tests.unit.test_consultation_silence import CivilCalendar

book = TemplateBook.load()
agencies = default_book()
forms = FormBook.load()
cal = CivilCalendar()
OPENED = datetime(2026, 12, 1, 9, 0, tzinfo=VN_TZ)  # a Tuesday
LEAD_PERMIT, FIRE = "000.00.06.H29", "000.02.30.H29"
LEAD_EIA, BUILDER, IRRIGATION = "000.00.08.H29", "000.00.06.H29", "000.02.08.H29"
SOFTWARE = re.compile(r"POST|GET |/v1/|consultation|routing|dịch vụ (lấy ý kiến|điều phối)")


def _open(template_id: str, agency: str, lead: str) -> tuple[Round, Request]:
    t = book.in_force(template_id, OPENED.date())
    rnd = Round(code="000.00.01.H29-261201-0001")
    r = Request(
        id=uuid.UUID(int=7),
        dossier_code=rnd.code,
        lead_agency=lead,
        agency_id=agency,
        template_id=t.id,
        template_version=t.version,
        status=Status.OPEN,
        due_at=cal.deadline(OPENED, t.deadline),
    )
    rnd.add_request(
        r,
        template=t,
        calendar=cal,
        agency_name=agencies.get(agency).name,
        subject="V/v lấy ý kiến",
        actor="system",
        at=OPENED,
        agencies=agencies,
    )
    return rnd, r


# --- B: an extension of an overdue request counts from the moment it is granted -------------


def test_extending_a_lapsed_request_counts_from_now_not_from_the_old_deadline() -> None:
    t = book.in_force("environment-impact-opinion", OPENED.date())
    rnd, r = _open(t.id, BUILDER, LEAD_EIA)
    old = r.due_at
    rnd.lapse(r.id, 0, t, old + timedelta(days=5), agencies)
    assert r.status is Status.LAPSED
    granted = old + timedelta(days=6)  # well past the deadline, the ladder climbed
    rnd.extend(
        r.id,
        agency_id=LEAD_EIA,
        actor="lead",
        by=Duration(value=3),
        reason="Chờ cơ quan được hỏi trả lời",
        template=t,
        calendar=cal,
        at=granted,
        agencies=agencies,
    )
    assert r.status is Status.OPEN
    assert r.due_at > granted  # seconds_left is positive
    assert r.due_at == cal.after(granted, Duration(value=3))
    assert r.due_at != cal.after(old, Duration(value=3))
    audit = rnd.audits[-1].details
    assert audit["counted_from"] == granted.isoformat()
    # still ahead: an extension moves the deadline it extends
    rnd2, r2 = _open(t.id, BUILDER, LEAD_EIA)
    previous = r2.due_at
    before = previous - timedelta(days=2)
    rnd2.extend(
        r2.id,
        agency_id=LEAD_EIA,
        actor="lead",
        by=Duration(value=3),
        reason="Cần thêm thời gian",
        template=t,
        calendar=cal,
        at=before,
        agencies=agencies,
    )
    assert r2.due_at == cal.after(previous, Duration(value=3))


# --- D: reminders --------------------------------------------------------------------------


def _reminders(rnd: Round) -> list[domain.PlannedTimer]:
    return sorted((p for p in rnd.plan_timers if p.kind == domain.REMIND), key=lambda p: p.due_at)


def test_after_a_clock_jump_only_the_latest_due_reminder_is_sent() -> None:
    t = book.in_force("fire-safety-opinion", OPENED.date())
    rnd, r = _open(t.id, FIRE, LEAD_PERMIT)
    first, second = _reminders(rnd)
    jumped = second.due_at + timedelta(minutes=5)  # both are due at once, the deadline not
    assert jumped < r.due_at
    rnd.events = []
    for p in (first, second):  # the scheduler fires them together, in order
        rnd.remind(r.id, 0, p.payload["index"], jumped, t, cal, agencies)
    sent = [e for e in rnd.events if isinstance(e, ConsultationReminded)]
    assert len(sent) == 1 and r.reminders_sent == 1
    skipped = [a.details for a in rnd.audits if a.action == "reminder_skipped"]
    assert skipped == [{"reminder": first.payload["index"], "why": "superseded"}]


def test_a_reminder_at_or_after_the_deadline_is_never_sent() -> None:
    t = book.in_force("irrigation-works-opinion", OPENED.date())
    rnd, r = _open(t.id, IRRIGATION, LEAD_EIA)
    assert all(p.due_at < r.due_at for p in _reminders(rnd))
    rnd.events = []
    for p in _reminders(rnd):  # fired late, at the deadline and after it
        rnd.remind(r.id, 0, p.payload["index"], r.due_at, t, cal, agencies)
    assert rnd.events == [] and r.reminders_sent == 0
    assert {a.details["why"] for a in rnd.audits if a.action == "reminder_skipped"} == {
        "past_deadline"
    }
    rnd.lapse(r.id, 0, t, r.due_at, agencies)
    assert r.status is Status.DEEMED_CONSENT
    rnd.events = []
    rnd.remind(r.id, 0, 0, r.due_at + timedelta(hours=1), t, cal, agencies)
    assert rnd.events == []  # deemed: nothing to remind of


def test_where_silence_is_consent_the_reminder_says_so_with_the_article() -> None:
    t = book.in_force("irrigation-works-opinion", OPENED.date())
    rnd, r = _open(t.id, IRRIGATION, LEAD_EIA)
    p = _reminders(rnd)[0]
    rnd.events = []
    rnd.remind(r.id, 0, p.payload["index"], p.due_at, t, cal, agencies)
    (ev,) = rnd.events
    assert isinstance(ev, ConsultationReminded)
    assert ev.deemed_basis == t.final.legal_basis and "Điều 16" in ev.deemed_basis
    text = forms.render(
        "consultation_reminder",
        OPENED.date(),
        {
            "code": rnd.code,
            "agency_name": "Chi cục Thủy lợi",
            "due_local": format_local(r.due_at),
            "deemed_basis": ev.deemed_basis,
        },
    ).text
    assert "được coi là đã đồng ý" in text and "Điều 16 Thông tư 02/2022/TT-BTNMT" in text
    # without a legal text, no such line
    t2 = book.in_force("environment-impact-opinion", OPENED.date())
    rnd2, r2 = _open(t2.id, BUILDER, LEAD_EIA)
    p2 = _reminders(rnd2)[0]
    rnd2.events = []
    rnd2.remind(r2.id, 0, p2.payload["index"], p2.due_at, t2, cal, agencies)
    assert rnd2.events[0].deemed_basis is None  # type: ignore[attr-defined]


class _Notifier:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    async def notify(self, conn: Any, env: Any, kind: str, to: Any, ctx: dict[str, Any]) -> None:
        self.sent.append((kind, to.address, ctx))


class _Conn:
    async def fetchrow(self, *args: Any) -> None:
        return None


def test_a_deemed_opinion_is_told_to_the_lead_and_to_the_asked_agency() -> None:
    t = book.in_force("fire-safety-opinion", OPENED.date())
    rnd, r = _open(t.id, FIRE, LEAD_PERMIT)
    rnd.lapse(r.id, 0, t, r.due_at, agencies)
    ev = next(e for e in rnd.events if isinstance(e, ConsultationDeemedConsent))
    assert ev.lead_agency == LEAD_PERMIT
    n = _Notifier()
    handler = nhandlers.build(n)["consultation.deemed_consent"]  # type: ignore[arg-type]
    env = new_envelope(ev, subject=rnd.code, producer="consultation", occurred_at=r.due_at)
    asyncio.run(handler(_Conn(), env, ev))  # type: ignore[arg-type]
    assert sorted(to for _, to, _ in n.sent) == sorted([FIRE, LEAD_PERMIT])
    for kind, to, ctx in n.sent:
        assert kind == "consultation_deemed"
        text = forms.render(kind, OPENED.date(), ctx).text
        assert "được coi là đồng ý" in text and "Điều 102" in text
        assert f"Kính gửi: {agencies.get(to).name}." in text
        assert ("tiếp tục giải quyết hồ sơ" in text) is (to == LEAD_PERMIT)
        assert not SOFTWARE.search(text)


def test_an_escalation_says_the_deadline_missed_and_how_late() -> None:
    t = book.in_force("environment-impact-opinion", OPENED.date())
    rnd, r = _open(t.id, BUILDER, LEAD_EIA)
    w = WorkingCalendar()
    at = w.add_working_seconds(r.due_at, 8 * 3600 + 3 * 3600)  # 1 working day 3 hours late
    rnd.escalate(r.id, 0, 2, t, at, agencies, w)
    ev = rnd.events[-1]
    assert isinstance(ev, ConsultationEscalated)
    assert ev.due_at == r.due_at and ev.overdue_working_seconds == 11 * 3600
    ctx = {
        "code": rnd.code,
        "agency_name": "Sở Xây dựng",
        "notify_name": ev.notify_name,
        "ask": ev.ask,
        "step": ev.step,
        "due_local": format_local(ev.due_at),
        "escalated_local": format_local(ev.escalated_at),
        "overdue": ndomain.working_time_text(ev.overdue_working_seconds),
    }
    text = forms.render("consultation_escalation", OPENED.date(), ctx).text
    assert f"hạn trả lời là {format_local(r.due_at)}" in text
    assert "đã quá hạn 01 ngày làm việc 03 giờ làm việc" in text
    assert ndomain.working_time_text(1800) == "dưới 01 giờ làm việc"


# --- 7 and E: the request is an official letter, listing what is attached ---------------------


def _letter(template_id: str, agency: str, documents: list[dict[str, Any]] | None) -> str:
    t = book.in_force(template_id, OPENED.date())
    text, html = letter(
        t,
        code="000.00.01.H29-261201-0001",
        procedure_name="Cấp giấy phép xây dựng",
        subject="V/v lấy ý kiến đối với hồ sơ 000.00.01.H29-261201-0001",
        lead_agency=LEAD_PERMIT,
        lead_agency_name=agencies.get(LEAD_PERMIT).name,
        agency_id=agency,
        agency_name=agencies.get(agency).name,
        number=letter_number(12, LEAD_PERMIT),
        issued_at=OPENED,
        due=cal.deadline(OPENED, t.deadline),
        documents=documents,
        agencies=agencies,
    )
    assert not SOFTWARE.search(html)
    return text


HANDED_IN = [
    {"code": "QSDD", "name": "Bản sao giấy tờ chứng minh quyền sử dụng đất", "copies": 1},
    {"code": "BVTK", "name": "02 bộ bản vẽ thiết kế xây dựng", "copies": 1},
]


def test_the_opinion_request_is_an_official_letter_of_decree_30_2020() -> None:
    text = _letter("fire-safety-opinion", FIRE, HANDED_IN)
    lines = text.splitlines()
    assert lines[0] == "ỦY BAN NHÂN DÂN THÀNH PHỐ HỒ CHÍ MINH"  # cơ quan chủ quản
    assert lines[1] == "SỞ XÂY DỰNG THÀNH PHỐ HỒ CHÍ MINH"
    assert "Số: 12/000.00.06.H29" in lines
    assert any(x.startswith("V/v ") for x in lines)
    assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in lines and "Độc lập - Tự do - Hạnh phúc" in lines
    assert "Thành phố Hồ Chí Minh, ngày 01 tháng 12 năm 2026" in lines
    assert any(x.startswith("Kính gửi: Phòng Cảnh sát phòng cháy") for x in lines)
    assert "Căn cứ khoản 1 Điều 102 Luật Xây dựng số 50/2014/QH13" in text
    assert "Nơi nhận:" in lines and "- Như trên;" in lines and "GIÁM ĐỐC" in lines
    assert "Hệ thống thông tin giải quyết thủ tục hành chính" in text
    assert "ký số" in text and "được coi là đã đồng ý" in text
    assert not SOFTWARE.search(text)


def test_the_letter_lists_the_documents_handed_in_by_name_one_per_line() -> None:
    text = _letter("fire-safety-opinion", FIRE, HANDED_IN)
    # the template asks for BVTK and TDPCCC; only BVTK was handed in
    assert "  - 02 bộ bản vẽ thiết kế xây dựng" in text.splitlines()
    assert (
        "TDPCCC" not in text
        and "BVTK" not in text
        and "phòng cháy và chữa cháy (trường" not in text
    )
    t = book.in_force("planning-architecture-opinion", OPENED.date())
    assert attached(t, HANDED_IN) == [
        "02 bộ bản vẽ thiết kế xây dựng",
        "Bản sao giấy tờ chứng minh quyền sử dụng đất",
    ]
    planning = _letter("planning-architecture-opinion", "000.00.07.H29", HANDED_IN)
    lines = planning.splitlines()
    i = lines.index("  - 02 bộ bản vẽ thiết kế xây dựng")
    assert lines[i + 1] == "  - Bản sao giấy tờ chứng minh quyền sử dụng đất"
    # no two parts of the letter run together on one line
    assert not any("?" in x and x.rstrip()[-1] != "?" for x in lines if x.startswith("  1."))
    assert all(not re.search(r"\S Nội dung trả lời|\S Ý kiến trả lời", x) for x in lines)
    assert attached(t, None) == []  # unknown: nothing listed rather than a missing one


def test_agency_notices_say_what_to_do_in_words_and_cite_numbered_texts() -> None:
    ev = ConsultationRequested(
        request_id=uuid.UUID(int=1),
        code="000.00.01.H29-261201-0001",
        lead_agency=LEAD_PERMIT,
        agency_id=FIRE,
        agency_name=agencies.get(FIRE).name,
        template_id="fire-safety-opinion",
        template_version=1,
        subject="V/v lấy ý kiến đối với hồ sơ 000.00.01.H29-261201-0001",
        requested_at=OPENED,
        due_at=OPENED + timedelta(days=13),
        number="12/000.00.06.H29",
        legal_basis="Khoản 1 Điều 102 Luật Xây dựng số 50/2014/QH13",
        deemed_basis="Khoản 1 Điều 102 Luật Xây dựng số 50/2014/QH13",
    )
    ctx = ndomain.consultation_request_context(ev, agencies.get(LEAD_PERMIT).name)
    r = forms.render("consultation_request", OPENED.date(), ctx)
    for body in (r.text, r.html):
        assert not SOFTWARE.search(body)
        assert "số 12/000.00.06.H29" in body and "chữ ký số" in body
        assert "Hệ thống thông tin giải quyết thủ tục hành chính" in body
    for kind in (
        "consultation_request",
        "consultation_reminder",
        "consultation_escalation",
        "consultation_deemed",
    ):
        v = forms.in_force(kind, OPENED.date())
        assert DOCUMENT_NUMBER.search(v.legal_basis) and ARTICLE.search(v.legal_basis), kind
        assert "Quy chế phối hợp" not in v.legal_basis
        assert not SOFTWARE.search(v.text + v.html), kind


# --- F: a valid key that may not answer is a 403, said in Vietnamese --------------------------


def _key(agency: str, role: Role = Role.DEPARTMENT_HEAD) -> tuple[Ed25519PrivateKey, Any]:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, domain.Signer("k-other", agency, "Nguyễn Văn B", role, pub)


def _reply(rnd: Round, r: Request, key: Ed25519PrivateKey, signer: Any) -> Refused:
    t = book.get(r.template_id, r.template_version)
    msg = domain.canonical_reply(r.id, Decision.AGREE, None, None, "k-other", "n1")
    with pytest.raises(Refused) as e:
        rnd.record_reply(
            r.id,
            agency_id=r.agency_id,
            actor="x",
            template=t,
            decision=Decision.AGREE,
            conditions=None,
            reasons=None,
            signer_key="k-other",
            nonce="n1",
            signature=base64.b64encode(key.sign(msg)).decode(),
            signer=signer,
            at=OPENED + timedelta(days=1),
        )
    return e.value


def test_a_signing_key_of_another_agency_is_forbidden_not_unauthenticated() -> None:
    rnd, r = _open("fire-safety-opinion", FIRE, LEAD_PERMIT)
    refused = _reply(rnd, r, *_key("000.00.07.H29"))
    assert refused.kind is Refusal.FORBIDDEN and HTTP_STATUS[refused.kind] == 403
    assert refused.field == "signer" and "thuộc cơ quan khác" in refused.reason
    officer = _reply(rnd, r, *_key(FIRE, Role.OFFICER))
    assert officer.kind is Refusal.FORBIDDEN
    assert "chuyên viên" in officer.reason and "officer" not in officer.reason


def test_the_rounds_refusals_are_in_vietnamese() -> None:
    rnd, r = _open("fire-safety-opinion", FIRE, LEAD_PERMIT)
    english = re.compile(r"\b(the|request|agency|may|only|closed|required|allowed)\b")
    with pytest.raises(Refused) as e:
        rnd.visible(r.id, "000.00.99.H29")
    assert not english.search(e.value.reason)
    with pytest.raises(Refused) as e:
        rnd.request(uuid.UUID(int=99))
    assert not english.search(e.value.reason)
    t = book.get(r.template_id, r.template_version)
    with pytest.raises(domain.ReplyError) as re_:
        domain.check_reply_content(t, Decision.DISAGREE, None, None)
    assert re_.value.field == "reasons" and "lý do" in re_.value.reason
    assert "Không đồng ý" in re_.value.reason
    with pytest.raises(Refused) as e:
        rnd.extend(
            r.id,
            agency_id=FIRE,
            actor="x",
            by=Duration(value=1, unit=TimeUnit.WORKING_DAYS),
            reason="xin thêm",
            template=t,
            calendar=cal,
            at=OPENED,
        )
    assert e.value.kind is Refusal.FORBIDDEN and "cơ quan chủ trì" in e.value.reason
