"""What an agency's silence means, each rule tested under the legal text it comes from.

Silence is consent only where a text says so, and then at the deadline itself; otherwise
the ladder (names from the agency registry) runs after the deadline and the request keeps
waiting. Calendar days are counted here by a small stand-in for the Civil Code count that
``services/runtime/calendar.py`` is being taught; consultation only asks the calendar.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.agencies import AgencyBook, default_book
from contracts.common import Duration, TimeUnit
from contracts.events import ConsultationDeemedConsent, ConsultationEscalated
from services.consultation import domain
from services.consultation.domain import Request, Round, Status
from services.consultation.templates import Template, TemplateBook, TemplateError
from services.runtime.calendar import VN_TZ, WorkingCalendar, format_local

book = TemplateBook.load()
agencies = default_book()
OPENED = datetime(2026, 12, 1, 9, 0, tzinfo=VN_TZ)  # a Tuesday
LEAD_PERMIT = "000.00.06.H29"  # Sở Xây dựng
LEAD_EIA = "000.00.08.H29"  # Sở Nông nghiệp và Môi trường
PLANNING, ENVIRONMENT, FIRE = "000.00.07.H29", "000.00.08.H29", "000.02.30.H29"
IRRIGATION, CITY_POLICE = "000.02.08.H29", "000.00.30.H29"
CHAIRMAN = "Chủ tịch Ủy ban nhân dân Thành phố Hồ Chí Minh"
PERMIT_TEMPLATES = {
    PLANNING: "planning-architecture-opinion",
    ENVIRONMENT: "environment-opinion",
    FIRE: "fire-safety-opinion",
}
WORK_STEPS = (
    "tax-registration-opinion",
    "social-insurance-opinion",
    "residence-registration-opinion",
    "health-insurance-opinion",
    "land-tax-opinion",
    "criminal-record-verification",
    "ward-land-origin-opinion",
)


class CivilCalendar:
    """Working days and hours as ``WorkingCalendar`` counts them; calendar days as the
    Civil Code does (Art. 147: from the next day; Art. 148(5): a last day off moves to the
    end of the next working day)."""

    def __init__(self) -> None:
        self.w = WorkingCalendar()

    def _days(self, t: datetime, n: int) -> datetime:
        last = self.w.local(t).date() + timedelta(days=n)
        while not self.w.is_working_day(last):
            last += timedelta(days=1)
        return self.w.end_of_day(last)

    def deadline(self, received_at: datetime, period: Duration) -> datetime:
        if period.unit is TimeUnit.CALENDAR_DAYS:
            return self._days(received_at, period.value)
        return self.w.deadline(received_at, period)

    def before(self, deadline: datetime, period: Duration) -> datetime:
        return self.w.before(deadline, period)

    def after(self, t: datetime, period: Duration) -> datetime:
        if period.unit is TimeUnit.CALENDAR_DAYS:
            return self._days(t, period.value)
        return self.w.after(t, period)

    def working_seconds_between(self, start: datetime, end: datetime) -> int:
        return self.w.working_seconds_between(start, end)


cal = CivilCalendar()


def open_one(
    template: Template,
    agency: str,
    *,
    lead: str = LEAD_PERMIT,
    registry: AgencyBook = agencies,
    n: int = 1,
) -> tuple[Round, Request]:
    rnd = Round(code=f"000.00.01.H29-261201-{n:04d}")
    r = Request(
        id=uuid.UUID(int=n),
        dossier_code=rnd.code,
        lead_agency=lead,
        agency_id=agency,
        template_id=template.id,
        template_version=template.version,
        status=Status.OPEN,
        due_at=cal.deadline(OPENED, template.deadline),
    )
    rnd.add_request(
        r,
        template=template,
        calendar=cal,
        agency_name="Cơ quan được hỏi",
        subject="Lấy ý kiến",
        actor="system",
        at=OPENED,
        agencies=registry,
    )
    return rnd, r


def fire(rnd: Round, template: Template, registry: AgencyBook = agencies) -> list[str]:
    """Fire every planned timer of the round in order, each at its own moment."""
    for t in sorted(rnd.plan_timers, key=lambda t: t.due_at):
        rid = uuid.UUID(t.ref.split("/", 1)[0])
        gen = t.payload["gen"]
        if t.kind == domain.REMIND:
            rnd.remind(rid, gen, t.payload["index"], t.due_at, template, cal, registry)
        elif t.kind == domain.ESCALATE:
            rnd.escalate(rid, gen, t.payload["step"], template, t.due_at, registry, cal)
        else:
            rnd.lapse(rid, gen, template, t.due_at, registry)
    rnd.plan_timers = []
    return [e.event_type for e in rnd.events]


def t_(template_id: str) -> Template:
    return book.in_force(template_id, OPENED.date())


# --- the statutory rules ----------------------------------------------------------------------


def test_building_permit_opinion_silence_is_consent_at_day_12__law_on_construction_art_102_1() -> (
    None
):
    for agency, tid in PERMIT_TEMPLATES.items():  # the fire police too: a statute binds all
        t = t_(tid)
        assert (t.deadline.value, t.deadline.unit) == (12, TimeUnit.CALENDAR_DAYS)
        assert t.deadline.describe() == "12 ngày"
        for basis in (t.deadline.legal_basis, t.final.legal_basis):
            assert basis and basis.startswith("Khoản 1 Điều 102 Luật Xây dựng số 50/2014/QH13")
            assert "khoản 36 Điều 1 Luật số 62/2020/QH14" in basis
        assert t.final.deemed_consent and t.final.jurisdiction is None and not t.escalation
        rnd, r = open_one(t, agency)
        # day 12 after Tue 1/12 is Sun 13/12: the period ends with Monday
        assert format_local(r.due_at) == "17:00 ngày 14/12/2026"
        kinds = [(p.kind, p.due_at) for p in rnd.plan_timers]
        assert (domain.FINAL, r.due_at) in kinds and domain.ESCALATE not in dict(kinds)
        assert all(at < r.due_at for k, at in kinds if k == domain.REMIND)
        events = fire(rnd, t)
        assert events == [
            "consultation.requested",
            "consultation.reminded",
            "consultation.reminded",
            "consultation.deemed_consent",
            "consultation.round_completed",
        ]
        deemed = rnd.events[3]
        assert isinstance(deemed, ConsultationDeemedConsent)
        assert deemed.deemed_at == r.due_at and "Điều 102" in deemed.legal_basis
        assert r.status is Status.DEEMED_CONSENT and r.changed["decision"] == "agree"
        assert [a.action for a in rnd.audits] == [
            "opened",
            "reminded",
            "reminded",
            "deemed_consent",
        ]
        assert "deemed consent at the deadline" in rnd.audits[0].details["silence"]


def test_irrigation_works_opinion_deemed_at_5_working_days__circular_02_2022_art_16() -> None:
    t = t_("irrigation-works-opinion")
    assert (t.deadline.value, t.deadline.unit) == (5, TimeUnit.WORKING_DAYS)
    assert t.final.legal_basis and t.final.legal_basis.startswith(
        "Điều 16 Thông tư 02/2022/TT-BTNMT"
    )
    assert "đồng thuận với nội dung báo cáo đánh giá tác động môi trường" in t.final.legal_basis
    assert t.effective_from.isoformat() == "2022-01-10"
    rnd, r = open_one(t, IRRIGATION, lead=LEAD_EIA)
    assert format_local(r.due_at) == "17:00 ngày 08/12/2026"
    assert [p.kind for p in rnd.plan_timers] == [domain.REMIND] * 2 + [domain.FINAL]
    assert rnd.plan_timers[-1].due_at == r.due_at
    fire(rnd, t)
    assert r.status is Status.DEEMED_CONSENT and r.escalation_step == 0
    deemed = next(e for e in rnd.events if isinstance(e, ConsultationDeemedConsent))
    assert deemed.deemed_at == r.due_at


def test_no_deemed_consent_without_basis_escalates_and_keeps_waiting() -> None:
    t = t_("environment-impact-opinion")
    assert not t.final.deemed_consent and len(t.escalation) == 3
    assert all(s.notify_name is None for s in t.escalation)  # names come from the registry
    builder = "000.00.06.H29"  # Sở Xây dựng, a local body asked during EIA appraisal
    rnd, r = open_one(t, builder, lead=LEAD_EIA)
    ladder = [p.due_at for p in rnd.plan_timers if p.kind == domain.ESCALATE]
    assert len(ladder) == 3 and ladder == sorted(ladder) and ladder[0] > r.due_at
    assert rnd.plan_timers[-1].kind == domain.FINAL and rnd.plan_timers[-1].due_at >= ladder[-1]
    events = fire(rnd, t)
    assert events[-3:] == ["consultation.escalated"] * 2 + ["consultation.lapsed"]
    told = [e for e in rnd.events if isinstance(e, ConsultationEscalated)]
    assert [(e.notify_role, e.notify_name) for e in told] == [
        (
            "department_head",
            "Trưởng bộ phận chuyên môn được giao trả lời ý kiến - Sở Xây dựng Thành phố Hồ Chí Minh",
        ),
        ("agency_head", "Giám đốc Sở Xây dựng Thành phố Hồ Chí Minh"),
        ("coordinator", CHAIRMAN),
    ]
    audited = [a.details for a in rnd.audits if a.action == "escalated"]
    assert [d["notify_agency"] for d in audited] == [builder, builder, "000.00.00.H29"]
    assert r.status is Status.LAPSED and r.answerable and r.escalation_step == 3
    assert "no legal text" in rnd.audits[0].details["silence"]
    assert "consultation.round_completed" not in events


def test_extension_moves_the_deemed_consent_moment() -> None:
    t = t_("irrigation-works-opinion")
    rnd, r = open_one(t, IRRIGATION, lead=LEAD_EIA)
    first_due, rnd.plan_timers = r.due_at, []
    rnd.extend(
        r.id,
        agency_id=LEAD_EIA,
        actor="lead",
        by=Duration(value=2),
        reason="Chờ bổ sung kết quả quan trắc",
        template=t,
        calendar=cal,
        at=first_due - timedelta(days=1),
        agencies=agencies,
    )
    assert format_local(r.due_at) == "17:00 ngày 10/12/2026"
    final = [p for p in rnd.plan_timers if p.kind == domain.FINAL]
    assert [(p.due_at, p.payload["gen"]) for p in final] == [(r.due_at, 1)]
    rnd.events = []
    rnd.lapse(r.id, 0, t, first_due, agencies)  # the old deadline's timer: superseded
    rnd.lapse(r.id, None, t, first_due, agencies)  # a timer without generation: too early
    assert rnd.events == [] and r.status is Status.OPEN
    fire(rnd, t)
    assert r.status is Status.DEEMED_CONSENT
    assert [e.deemed_at for e in rnd.events if isinstance(e, ConsultationDeemedConsent)] == [
        r.due_at
    ]


# --- who the ladder tells ---------------------------------------------------------------------


def test_vertical_agency_escalates_to_its_superior_not_the_chairman() -> None:
    t = t_("environment-impact-opinion")
    for asked, head, superior, above in (
        (
            FIRE,
            agencies.get(FIRE).head,
            "Giám đốc Công an Thành phố Hồ Chí Minh",
            CITY_POLICE,
        ),
        (CITY_POLICE, "Giám đốc Công an Thành phố Hồ Chí Minh", "Bộ trưởng Bộ Công an", None),
    ):
        rnd, _ = open_one(t, asked, lead=LEAD_EIA)
        fire(rnd, t)
        told = [
            (e.notify_role, e.notify_name)
            for e in rnd.events
            if isinstance(e, ConsultationEscalated)
        ]
        assert told[1:] == [("agency_head", head), ("superior", superior)]
        assert all(CHAIRMAN not in name for _, name in told)
        last = [a.details for a in rnd.audits if a.action == "escalated"][-1]
        assert last["notify_agency"] == above


def test_template_names_override_the_registry_and_unknown_agencies_get_a_generic_rung() -> None:
    t = t_("environment-impact-opinion")
    step = t.escalation[2].model_copy(update={"notify_name": "Bí thư", "notify_agency": None})
    assert domain.rung(step, ENVIRONMENT, agencies).name == "Bí thư"
    unknown = domain.rung(t.escalation[2], "000.99.99.H29", agencies)
    assert unknown.role == "superior" and CHAIRMAN not in unknown.name
    # a national text binds whoever is asked under it, known to the registry or not
    assert domain.deems(t_("irrigation-works-opinion"), "000.99.99.H29", agencies)


# --- local rules ------------------------------------------------------------------------------

LOCAL_RULE = """
id: local-rule-fixture
version: 1
effective_from: '2025-01-01'
title: Mẫu kiểm thử một quy định địa phương
subject: V/v lấy ý kiến hồ sơ {{ code }}
questions: ["Ý kiến về hồ sơ?"]
reply: {decisions: {agree: {requires: []}, disagree: {requires: [reasons]}}}
deadline:
  value: 7
  unit: working_days
  legal_basis: 'Điều 1 Quyết định số 9999/QĐ-UBND (văn bản giả định, chỉ dùng để kiểm thử)'
escalation:
- {after: {value: 1, unit: working_days}, notify_role: agency_head, ask: Chỉ đạo trả lời.}
- {after: {value: 2, unit: working_days}, notify_role: coordinator, ask: Đôn đốc.}
final:
  deemed_consent: true
  jurisdiction: H29
  legal_basis: 'Điều 1 Quyết định số 9999/QĐ-UBND (văn bản giả định, chỉ dùng để kiểm thử)'
"""

REGISTRY = {
    "provinces": [
        {
            "code": "H29",
            "name": "Thành phố Hồ Chí Minh",
            "place": "Thành phố Hồ Chí Minh",
            "chairman": CHAIRMAN,
            "chairman_agency": "000.00.00.H29",
            "source": "kiểm thử",
        },
        {
            "code": "T01",
            "name": "Tỉnh Kiểm Thử",
            "place": "Kiểm Thử",
            "chairman": "Chủ tịch Ủy ban nhân dân tỉnh Kiểm Thử",
            "chairman_agency": "000.00.00.T01",
            "source": "kiểm thử",
        },
    ],
    "agencies": [
        {"id": "000.00.00.H29", "name": "UBND TP", "level": "province", "head": CHAIRMAN},
        {"id": "000.00.06.H29", "name": "Sở Xây dựng", "level": "province", "head": "GĐ Sở"},
        {
            "id": "000.00.31.H29",
            "name": "Thuế TP",
            "level": "province",
            "line": "vertical",
            "head": "Trưởng Thuế TP",
            "superior": "Cục trưởng Cục Thuế",
        },
        {
            "id": "000.00.00.T01",
            "name": "UBND tỉnh Kiểm Thử",
            "level": "province",
            "head": "Chủ tịch Ủy ban nhân dân tỉnh Kiểm Thử",
        },
        {"id": "000.00.06.T01", "name": "Sở Xây dựng tỉnh", "level": "province", "head": "GĐ"},
    ],
}


def test_local_rule_binds_only_its_province_local_bodies(tmp_path: Path) -> None:
    (tmp_path / "local.yaml").write_text(LOCAL_RULE, "utf-8")
    t = TemplateBook.load(tmp_path).in_force("local-rule-fixture", OPENED.date())
    registry = AgencyBook.model_validate(REGISTRY)
    cases = {
        "000.00.06.H29": (True, None),  # a local body of the city: bound
        "000.00.31.H29": (False, "Cục trưởng Cục Thuế"),  # vertical: not bound
        "000.00.06.T01": (False, "Chủ tịch Ủy ban nhân dân tỉnh Kiểm Thử"),  # another province
        "000.01.06.H29": (False, None),  # not in the registry: not assumed bound
    }
    for n, (asked, (bound, top)) in enumerate(cases.items(), start=1):
        assert domain.deems(t, asked, registry) is bound
        rnd, r = open_one(t, asked, registry=registry, n=n)
        events = fire(rnd, t, registry)
        if bound:
            assert events[-2:] == ["consultation.deemed_consent", "consultation.round_completed"]
            assert r.changed["outcome_at"] == r.due_at
        else:
            assert events[-1] == "consultation.lapsed" and r.status is Status.LAPSED
            told = [e for e in rnd.events if isinstance(e, ConsultationEscalated)]
            if top is not None:
                assert told[-1].notify_name == top
            assert "does not bind" in rnd.audits[0].details["silence"]


def _load_variant(tmp_path: Path, raw: dict[str, Any]) -> str:
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
    with pytest.raises(TemplateError, match=r"^x\.yaml: field ") as e:
        TemplateBook.load(tmp_path)
    return str(e.value)


def test_a_local_rule_needs_its_document_number(tmp_path: Path) -> None:
    fixture = yaml.safe_load(LOCAL_RULE)
    unnumbered = copy.deepcopy(fixture)
    unnumbered["final"]["legal_basis"] = "Điều 1 Quy chế phối hợp của Ủy ban nhân dân Thành phố"
    assert "number" in _load_variant(tmp_path, unnumbered)
    not_a_province = copy.deepcopy(fixture)
    not_a_province["final"]["jurisdiction"] = "HCM"
    assert "final.jurisdiction" in _load_variant(tmp_path, not_a_province)
    no_rule = copy.deepcopy(fixture)
    no_rule["final"]["deemed_consent"] = False
    assert "jurisdiction scopes a deemed-consent rule" in _load_variant(tmp_path, no_rule)


# --- the shipped set --------------------------------------------------------------------------


def test_work_steps_are_not_opinions() -> None:
    ids = {t.id for t in book.all()}
    assert ids == {
        *PERMIT_TEMPLATES.values(),
        "environment-impact-opinion",
        "irrigation-works-opinion",
    }
    assert not ids & set(WORK_STEPS)
    for t in book.all():
        if t.final.deemed_consent:
            assert t.deadline.legal_basis and t.final.legal_basis
        assert all(s.notify_name is None for s in t.escalation), t.id


def test_deemed_consent_needs_the_text_and_article(tmp_path: Path) -> None:
    src = (
        Path(__file__).parents[2] / "services/consultation/templates/irrigation-works-opinion.yaml"
    )
    shipped = yaml.safe_load(src.read_text("utf-8"))
    basis = shipped["final"]["legal_basis"]
    no_article = copy.deepcopy(shipped)
    no_article["final"]["legal_basis"] = basis.replace("Điều 16 ", "")
    assert "article" in _load_variant(tmp_path, no_article)
    no_number = copy.deepcopy(shipped)
    no_number["final"]["legal_basis"] = basis.replace("02/2022/TT-BTNMT", "về môi trường")
    assert "number" in _load_variant(tmp_path, no_number)
    no_basis = copy.deepcopy(shipped)
    del no_basis["final"]["legal_basis"]
    assert "needs legal_basis" in _load_variant(tmp_path, no_basis)
    bare_deadline = copy.deepcopy(shipped)
    del bare_deadline["deadline"]["legal_basis"]
    assert "deadline needs its legal_basis" in _load_variant(tmp_path, bare_deadline)
    laddered = copy.deepcopy(shipped)
    laddered["escalation"] = [
        {"after": {"value": 1}, "notify_role": "agency_head", "ask": "Chỉ đạo trả lời."}
    ]
    assert "would never fire" in _load_variant(tmp_path, laddered)
