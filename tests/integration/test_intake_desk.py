"""The one-stop desk through intake's HTTP API, on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from contracts.common import DocumentRef, Duration, MissingItem, StepKind, Timeliness, TimeUnit
from contracts.envelope import new_envelope
from contracts.events import (
    ApologyIssued,
    Holder,
    ProcessingSupplementRequested,
    ResultDecision,
    ResultReady,
    StepRef,
)
from services.intake.app import SPEC
from services.runtime.calendar import VN_TZ, WorkingCalendar
from services.runtime.clock import ManualClock
from services.runtime.service import create_app
from services.runtime.settings import ServiceSettings
from tests.helpers import TEST_PORTAL_CLIENT, applicant, configure_auth, eventually, staff

cal = WorkingCalendar()
MARRIAGE = {
    "procedure_code": "1.000894",
    "channel": 1,
    "applicant": {
        "name": "Trần Văn Bình",
        "id_number": "001090001234",
        "phone": "0987654321",
        "commune": "SAI_GON",
    },
    "documents": [{"code": "TK", "name": "Tờ khai đăng ký kết hôn"}],
}
PERMIT = {
    "procedure_code": "1.009973",
    "channel": 1,
    "applicant": {"name": "Phạm Thị Hoa", "id_number": "001190067890", "email": "hoa@example.vn"},
    "property_commune": "SAI_GON",
    "documents": [{"code": "DDN"}, {"code": "QSDD"}, {"code": "BVTK"}],
}


MARRIAGE_DESK = "000.01.50.H29"  # receives (and decides) 1.000894
PERMIT_DESK, PERMIT_LEAD = "000.01.50.H29", "000.00.50.H29"  # 1.009973
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=VN_TZ)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def intake(
    kafka_bootstrap: str, database_url: str, topic_prefix: str, clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServiceSettings.for_service("intake")
    settings.kafka_bootstrap_servers = kafka_bootstrap
    settings.database_url = database_url
    settings.topic_prefix = topic_prefix
    configure_auth(settings)
    app = create_app(SPEC, settings, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def officer(agency: str, clock: ManualClock, role: str = "officer") -> dict[str, str]:
    return staff(agency, role, now=clock.now())


async def test_catalogue_lists_the_sample(intake: httpx.AsyncClient, clock: ManualClock) -> None:
    h = officer(PERMIT_DESK, clock)
    r = await intake.get("/v1/procedures", headers=h)
    items = r.json()["items"]
    assert len(items) >= 12
    assert sum(1 for p in items if p["consultations"]) >= 2  # opinions, not work steps
    assert sum(1 for p in items if p["steps"]) >= 3
    assert (await intake.get("/v1/procedures/nope", headers=h)).status_code == 404
    assert (await intake.get("/v1/procedures")).status_code == 401


async def test_fifty_concurrent_submissions_get_consecutive_serials(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    h = officer(MARRIAGE_DESK, clock)
    rs = await asyncio.gather(
        *(intake.post("/v1/dossiers", json=MARRIAGE, headers=h) for _ in range(50))
    )
    assert all(r.status_code == 201 for r in rs), [r.text for r in rs if r.status_code != 201]
    codes = [r.json()["code"] for r in rs]
    prefixes = {c.rsplit("-", 1)[0] for c in codes}
    assert len(prefixes) == 1 and prefixes.pop().startswith("000.01.50.H29-")
    assert sorted(int(c.rsplit("-", 1)[1]) for c in codes) == list(range(1, 51))


async def test_idempotency_key(intake: httpx.AsyncClient, clock: ManualClock) -> None:
    key = {"Idempotency-Key": "desk-3-20261122-0001", **officer(MARRIAGE_DESK, clock)}
    a = await intake.post("/v1/dossiers", json=MARRIAGE, headers=key)
    b = await intake.post("/v1/dossiers", json=MARRIAGE, headers=key)
    assert a.status_code == b.status_code == 201
    assert a.json()["lookup_code"] and b.json()["lookup_code"] is None  # given only once
    assert {**a.json(), "lookup_code": None} == b.json()
    assert b.headers["Idempotent-Replayed"] == "true"
    other = {**MARRIAGE, "applicant": {**MARRIAGE["applicant"], "name": "Người Khác"}}
    c = await intake.post("/v1/dossiers", json=other, headers=key)
    assert c.status_code == 409
    assert c.json()["errors"][0]["field"] == "Idempotency-Key"
    racing = {"Idempotency-Key": "desk-3-20261122-0002", **officer(MARRIAGE_DESK, clock)}
    rs = await asyncio.gather(
        *(intake.post("/v1/dossiers", json=MARRIAGE, headers=racing) for _ in range(10))
    )
    assert len({r.json()["code"] for r in rs}) == 1


BIRTH = {
    "procedure_code": "1.001193",
    "channel": 1,
    "applicant": {"name": "Lê Thị Mai", "id_number": "001190012345", "commune": "SAI_GON"},
    "documents": [{"code": "TK"}, {"code": "GCS"}],
}


async def test_within_the_day_after_the_cutoff_before_tet_is_the_next_working_day__law_on_civil_status_art_16_2(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    async def at(h: int, m: int) -> dict:
        clock.set(datetime(2026, 2, 13, h, m, tzinfo=VN_TZ))
        r = await intake.post("/v1/dossiers", json=BIRTH, headers=officer(MARRIAGE_DESK, clock))
        assert r.status_code == 201, r.text
        return dict(r.json())

    early = await at(14, 59)
    late = await at(15, 30)
    # Birth registration is "within the day"; after 15:00 it is the next working day,
    # and Tết 2026 (14-22 Feb) lies between.
    assert early["appointment_local"] == "17:00 ngày 13/02/2026"
    assert late["appointment_local"] == "17:00 ngày 23/02/2026"
    assert early["code"].startswith("000.01.50.H29-260213-")


async def test_permit_in_days_ending_on_a_saturday_ends_monday__civil_code_art_148_5(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    clock.set(datetime(2026, 11, 13, 9, 0, tzinfo=VN_TZ))  # Friday; +15 days = Sat 28 Nov
    r = await intake.post("/v1/dossiers", json=PERMIT, headers=officer(PERMIT_DESK, clock))
    assert r.json()["appointment_local"] == "17:00 ngày 30/11/2026"


async def test_desk_stage_supplement_starts_no_clock_and_uses_up_nothing__form_02(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    received = datetime(2026, 11, 16, 9, 0, tzinfo=VN_TZ)  # Monday
    clock.set(received)
    body = {**PERMIT, "documents": PERMIT["documents"][:2]}
    r = await intake.post("/v1/dossiers", json=body, headers=officer(PERMIT_DESK, clock))
    assert r.status_code == 201
    first = r.json()
    # registered, never received: portal status 1, not 5 (issue 23, item 11)
    assert (first["outcome"], first["status"], first["missing_documents"]) == (
        "supplement_requested",
        1,
        ["BVTK"],
    )
    assert first["appointment_at"] is None  # no clock before a complete, valid dossier
    code = first["code"]
    me = applicant(first["lookup_code"])
    wrong = await intake.post(
        f"/v1/dossiers/{code}/supplements", json={"documents": [{"code": "XYZ"}]}, headers=me
    )
    assert wrong.status_code == 422 and "BVTK" in wrong.json()["errors"][0]["reason"]
    came_back = datetime(2026, 11, 19, 10, 30, tzinfo=VN_TZ)  # Thursday
    clock.set(came_back)
    r = await intake.post(
        f"/v1/dossiers/{code}/supplements", json={"documents": [{"code": "BVTK"}]}, headers=me
    )
    assert r.status_code == 200, r.text
    completed = r.json()
    assert completed["paused_working_seconds"] == 0
    # 15 days from Thu 19 Nov: Fri 4 Dec
    assert completed["appointment_local"] == "17:00 ngày 04/12/2026"
    dossier = (await intake.get(f"/v1/dossiers/{code}", headers=me)).json()
    assert dossier["status"] == 2 and dossier["supplement_requests"] == 0
    assert dossier["submitted_at"].startswith("2026-11-16T02:00")
    assert dossier["received_at"].startswith("2026-11-19T03:30")
    await routing_pauses(intake, code, clock, number=1)
    outbox = await intake.app.state.runtime.pool.fetch(  # type: ignore[attr-defined]
        "SELECT event_type, payload FROM outbox WHERE key = $1 ORDER BY id", code
    )
    assert [t["event_type"] for t in outbox] == [
        "dossier.supplement_requested",
        "dossier.supplemented",
        "dossier.received",
        "dossier.supplement_requested",
    ]
    assert '"stage":"desk"' in outbox[0]["payload"]
    assert '"stage":"processing"' in outbox[3]["payload"]
    assert '"register_book":"2026"' in outbox[2]["payload"]


async def routing_pauses(
    intake: httpx.AsyncClient, code: str, clock: ManualClock, *, number: int, doc: str = "QSDD"
) -> None:
    """Routing's ``routing.supplement_requested`` for the dossier, through intake's handler
    (the officer asks routing; intake tells the applicant and holds the documents)."""
    rt = intake.app.state.runtime  # type: ignore[attr-defined]
    event = ProcessingSupplementRequested(
        code=code,
        step=StepRef(
            order=3,
            kind=StepKind.APPRAISE,
            action="Thẩm định hồ sơ",
            agency_id=PERMIT_LEAD,
            agency_name="Ủy ban nhân dân phường Sài Gòn",
            duration=Duration(value=5, unit=TimeUnit.CALENDAR_DAYS),
        ),
        items=(MissingItem(code=doc, name=doc, reason="Bản sao chưa chứng thực"),),
        requested_by=Holder(
            agency_id=PERMIT_LEAD, agency_name="Ủy ban nhân dân phường Sài Gòn", person="Hà"
        ),
        request_number=number,
        violation=number > 1,
        requested_at=clock.now(),
    )
    env = new_envelope(event, subject=code, producer="routing", occurred_at=clock.now())
    async with rt.pool.acquire() as conn, conn.transaction():
        await rt.consumer.handlers[event.event_type](conn, env, event)


async def test_second_request_during_processing_is_recorded_and_flagged__one_request_rule(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    desk = officer(PERMIT_DESK, clock)
    lead = officer(PERMIT_LEAD, clock)
    code = (await intake.post("/v1/dossiers", json=PERMIT, headers=desk)).json()["code"]
    await routing_pauses(intake, code, clock, number=1)
    view = (await intake.get(f"/v1/dossiers/{code}", headers=lead)).json()
    assert (view["status"], view["state"]) == (5, "waiting_supplement")
    clock.advance(timedelta(hours=2))
    back = await intake.post(
        f"/v1/dossiers/{code}/supplements", json={"documents": [{"code": "QSDD"}]}, headers=desk
    )
    assert back.status_code == 200, back.text
    assert back.json()["paused_working_seconds"] == 2 * 3600
    await routing_pauses(intake, code, clock, number=2, doc="BVTK")
    view = (await intake.get(f"/v1/dossiers/{code}", headers=lead)).json()
    assert (view["supplement_requests"], view["supplement_violations"]) == (2, 1)
    assert [h["state"] for h in view["status_history"]][-1] == "waiting_supplement"
    outbox = await intake.app.state.runtime.pool.fetch(  # type: ignore[attr-defined]
        "SELECT payload FROM outbox WHERE key = $1 AND event_type = $2 ORDER BY id",
        code,
        "dossier.supplement_requested",
    )
    assert '"violation":true' in outbox[-1]["payload"]
    assert '"request_number":2' in outbox[-1]["payload"]


async def test_refusal_and_unknown_procedure(intake: httpx.AsyncClient, clock: ManualClock) -> None:
    h = officer(MARRIAGE_DESK, clock)
    org = {
        **MARRIAGE,
        "applicant": {
            "name": "Công ty A",
            "object_type": 2,
            "id_number": "0101234567",
            "commune": "SAI_GON",
        },
    }
    r = await intake.post("/v1/dossiers", json=org, headers=h)
    assert r.status_code == 201
    assert (r.json()["outcome"], r.json()["status"]) == ("refused", 3)
    assert "không áp dụng" in r.json()["reasons"][0]
    r = await intake.post(
        "/v1/dossiers", json={**MARRIAGE, "procedure_code": "9.999999"}, headers=h
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "procedure_code"
    r = await intake.post(
        "/v1/dossiers", json={**MARRIAGE, "received_at": "2099-01-01T00:00:00+07:00"}, headers=h
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "received_at"


async def test_portal_payload_makes_the_same_dossier_as_the_desk(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    clock.set(datetime(2026, 11, 20, 10, 0, tzinfo=VN_TZ))
    h = officer(PERMIT_DESK, clock)
    basic = httpx.BasicAuth(*TEST_PORTAL_CLIENT)
    desk = {
        **PERMIT,
        "channel": 2,
        "summary": "Xây nhà ở riêng lẻ 3 tầng",
        "applicant": {**PERMIT["applicant"], "phone": "0912345678"},
        "received_at": datetime(2026, 11, 20, 10, 0, tzinfo=VN_TZ).isoformat(),
    }
    portal = {
        "MaHoSo": "G22.99-261120-000123",
        "MaTTHC": "1.009973.000.00.00.H29",
        "KenhThucHien": 2,
        "ChuHoSo": "Phạm Thị Hoa",
        "LoaiDoiTuong": 1,
        "MaDoiTuong": "vneid-7f3a9c21",
        "SoGiayToChuHoSo": "001190067890",
        "NgayNopHoSo": "20261119213000",
        "DonViXuLy": "Ủy ban nhân dân phường Sài Gòn",
        "SoDienThoai": "0912345678",
        "Email": "hoa@example.vn",
        "TrichYeuHoSo": "Xây nhà ở riêng lẻ 3 tầng",
        "NgayTiepNhan": "20261120100000",
        "TaiLieuNop": [{"MaThanhPhanHoSo": c} for c in ("DDN", "QSDD", "BVTK")],
    }
    d = await intake.post("/v1/dossiers", json=desk, headers=h)
    p = await intake.post("/v1/portal/dossiers", json=portal, auth=basic)
    assert p.status_code == 200 and p.json()["error_code"] == 0, p.text
    token = (await intake.post("/v1/portal/token", auth=basic)).json()["access_token"]
    bearer = {"authorization": f"Bearer {token}"}
    again = await intake.post("/v1/portal/dossiers", json=portal, headers=bearer)
    assert again.json()["MaHoSo"] == p.json()["MaHoSo"]  # the portal retried: same dossier
    dv = (await intake.get(f"/v1/dossiers/{d.json()['code']}", headers=h)).json()
    pv = (await intake.get(f"/v1/dossiers/{p.json()['MaHoSo']}", headers=h)).json()
    assert pv["applicant"].pop("portal_account") == "vneid-7f3a9c21"  # MaDoiTuong: the account
    assert dv["applicant"].pop("portal_account") is None
    assert pv["submitted_at"].startswith("2026-11-19T14:30")  # NgayNopHoSo, kept apart
    for k in (
        "procedure_code",
        "procedure_version",
        "channel",
        "applicant",
        "status",
        "appointment_at",
        "documents",
    ):
        assert dv[k] == pv[k], k
    assert p.json()["NgayHenTra"] == datetime.fromisoformat(
        dv["appointment_at"].replace("Z", "+00:00")
    ).astimezone(VN_TZ).strftime("%Y%m%d%H%M%S")
    bad = await intake.post(
        "/v1/portal/dossiers", json={**portal, "NgayTiepNhan": "20-11-2026"}, auth=basic
    )
    assert bad.status_code == 422 and bad.json()["error_code"] != 0
    assert "NgayTiepNhan" in bad.json()["message"]


async def test_correlation_id_flows_from_the_desk_into_the_event(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    h = officer(MARRIAGE_DESK, clock)
    cid = "6f1c2a9e-1111-4c3b-9c1d-2b7e0a5d9f00"
    r = await intake.post("/v1/dossiers", json=MARRIAGE, headers={"X-Correlation-ID": cid, **h})
    assert r.headers["X-Correlation-ID"] == cid
    payload = await intake.app.state.runtime.pool.fetchval(  # type: ignore[attr-defined]
        "SELECT payload FROM outbox WHERE key = $1", r.json()["code"]
    )
    assert f'"correlation_id":"{cid}"' in payload
    other = await intake.post(
        "/v1/dossiers", json=MARRIAGE, headers={"X-Correlation-ID": "junk", **h}
    )
    assert other.headers["X-Correlation-ID"] != "junk"


async def test_back_dating_is_bounded_needs_a_head_and_a_reason_and_is_audited(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    earlier = (clock.now() - timedelta(hours=5)).isoformat()
    body = {**MARRIAGE, "received_at": earlier}
    r = await intake.post("/v1/dossiers", json=body, headers=officer(MARRIAGE_DESK, clock))
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "received_at"
    head = officer(MARRIAGE_DESK, clock, "department_head")
    r = await intake.post("/v1/dossiers", json=body, headers=head)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "backdate_reason"
    too_far = {**body, "received_at": (clock.now() - timedelta(hours=73)).isoformat()}
    r = await intake.post("/v1/dossiers", json={**too_far, "backdate_reason": "x"}, headers=head)
    assert r.status_code == 422 and "72 hours" in r.json()["errors"][0]["reason"]
    reason = "Hồ sơ nhận qua bưu chính sáng nay, nhập máy muộn"
    r = await intake.post("/v1/dossiers", json={**body, "backdate_reason": reason}, headers=head)
    assert r.status_code == 201, r.text
    rows = await intake.app.state.runtime.pool.fetch(  # type: ignore[attr-defined]
        "SELECT field, claimed_at, actor, reason FROM backdated WHERE dossier_code = $1",
        r.json()["code"],
    )
    assert [(x["field"], x["reason"]) for x in rows] == [("received_at", reason)]
    assert rows[0]["actor"].endswith(f"@{MARRIAGE_DESK} (department_head)")
    slight = {**MARRIAGE, "received_at": (clock.now() - timedelta(minutes=2)).isoformat()}
    r = await intake.post("/v1/dossiers", json=slight, headers=officer(MARRIAGE_DESK, clock))
    assert r.status_code == 201  # clock skew is not back-dating


async def test_a_desk_records_only_its_own_agency_and_operators_do_not_submit(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    city_centre = "000.00.01.H29"
    r = await intake.post("/v1/dossiers", json=MARRIAGE, headers=officer(city_centre, clock))
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "receiving_agency"
    r = await intake.post(
        "/v1/dossiers",
        json={**MARRIAGE, "receiving_agency": city_centre},  # a centre receiving for others
        headers=officer(city_centre, clock),
    )
    assert r.status_code == 201
    ward_desk = "000.01.52.H29"  # not named by the catalogue, but a commune one-stop desk
    r = await intake.post(
        "/v1/dossiers",
        json={**MARRIAGE, "receiving_agency": ward_desk},
        headers=officer(ward_desk, clock),
    )
    assert r.status_code == 201 and r.json()["code"].startswith(f"{ward_desk}-")
    r = await intake.post(
        "/v1/dossiers", json=MARRIAGE, headers=officer("000.00.00.H29", clock, "operator")
    )
    assert r.status_code == 403


async def test_submissions_are_rate_limited_per_caller(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    intake.app.state.runtime.settings.submit_rate_per_minute = 3  # type: ignore[attr-defined]
    clock.set(datetime(2026, 11, 23, 9, 0, 15, tzinfo=VN_TZ))
    one = officer(MARRIAGE_DESK, clock)
    codes = [
        (await intake.post("/v1/dossiers", json=MARRIAGE, headers=one)).status_code
        for _ in range(4)
    ]
    assert codes == [201, 201, 201, 429]
    r = await intake.post("/v1/dossiers", json=MARRIAGE, headers=one)
    assert r.status_code == 429 and r.headers["Retry-After"] == "45"
    assert r.json()["detail"] == "too many submissions from this caller"
    other = staff(MARRIAGE_DESK, "officer", now=clock.now(), person="another desk")
    assert (await intake.post("/v1/dossiers", json=MARRIAGE, headers=other)).status_code == 201
    clock.advance(timedelta(seconds=45))
    assert (await intake.post("/v1/dossiers", json=MARRIAGE, headers=one)).status_code == 201


async def test_the_lookup_code_opens_only_its_own_dossier(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    desk = officer(MARRIAGE_DESK, clock)
    a = (await intake.post("/v1/dossiers", json=MARRIAGE, headers=desk)).json()
    b = (await intake.post("/v1/dossiers", json=MARRIAGE, headers=desk)).json()
    assert a["lookup_code"] != b["lookup_code"]
    r = await intake.get(f"/v1/dossiers/{b['code']}", headers=applicant(a["lookup_code"]))
    assert r.status_code == 401
    spaced = a["lookup_code"].replace("-", " ").lower()  # read aloud, typed loosely
    r = await intake.get(f"/v1/dossiers/{a['code']}", headers=applicant(spaced))
    assert r.status_code == 200 and not r.json()["redacted"]
    r = await intake.post(
        f"/v1/dossiers/{a['code']}/stop", json={"reason": "x"}, headers=applicant(a["lookup_code"])
    )
    assert r.status_code == 401  # the applicant may not stop, only withdraw
    r = await intake.post(
        f"/v1/dossiers/{a['code']}/withdrawal", json={}, headers=applicant(a["lookup_code"])
    )
    assert r.status_code == 200 and r.json()["status"] == 7


async def test_a_withdrawn_dossier_stays_withdrawn_when_the_result_crosses_it(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    """The applicant withdrew at intake while routing already had the result at the desk:
    a final status (7, 8) never moves (issue 23, item 6); the result is on the timeline."""
    desk = officer(PERMIT_DESK, clock)
    accepted = (await intake.post("/v1/dossiers", json=PERMIT, headers=desk)).json()
    code = accepted["code"]
    me = applicant(accepted["lookup_code"])
    r = await intake.post(f"/v1/dossiers/{code}/withdrawal", json={}, headers=me)
    assert r.status_code == 200 and r.json()["status"] == 7
    rt = intake.app.state.runtime  # type: ignore[attr-defined]
    # later than the receipt: the history orders by time, and the desk's own
    # dossier.received may be consumed after this handler ran
    clock.advance(timedelta(minutes=5))
    now = clock.now()
    ready = ResultReady(
        code=code,
        procedure_code="1.009973",
        procedure_name="Cấp giấy phép xây dựng mới đối với nhà ở riêng lẻ",
        decision=ResultDecision.APPROVED,
        documents=(DocumentRef(code="GPXD"),),
        ready_at=now,
        received_at=now,
        appointment_at=now + timedelta(days=15),
        legal_appointment_at=now + timedelta(days=15),
        timeliness=Timeliness.EARLY,
        receiving_agency=PERMIT_DESK,
        receiving_agency_name="Trung tâm Phục vụ hành chính công phường Sài Gòn",
        lead_agency=PERMIT_LEAD,
        lead_agency_name="Ủy ban nhân dân phường Sài Gòn",
    )
    env = new_envelope(ready, subject=code, producer="routing", occurred_at=now)
    async with rt.pool.acquire() as conn, conn.transaction():
        await rt.consumer.handlers[ready.event_type](conn, env, ready)

    async def seen() -> Any:
        return (await intake.get(f"/v1/dossiers/{code}", headers=me)).json()

    # the history is built from the events intake consumes (its own included)
    view = await eventually(seen, lambda v: bool(v["status_history"]), timeout=20)
    assert (view["status"], view["state"]) == (7, "withdrawn")
    assert view["status_history"][-1]["status"] == 7
    assert view["timeline"][-1]["type"] == "routing.result_ready"


async def _consume(intake: httpx.AsyncClient, event: Any, code: str, at: datetime) -> None:
    rt = intake.app.state.runtime  # type: ignore[attr-defined]
    env = new_envelope(event, subject=code, producer="routing", occurred_at=at)
    async with rt.pool.acquire() as conn, conn.transaction():
        await rt.consumer.handlers[event.event_type](conn, env, event)


async def test_the_dossier_view_says_late_and_keeps_the_legal_appointment_after_an_apology(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Issue 23, item 4 and E: an apology gives the applicant a new date, but the legal
    appointment stays (the portal's NgayHenTra); once the result is ready, intake's view
    says early / on time / late, as routing decided it."""
    import uuid

    desk = officer(PERMIT_DESK, clock)
    accepted = (await intake.post("/v1/dossiers", json=PERMIT, headers=desk)).json()
    code, legal = accepted["code"], datetime.fromisoformat(accepted["appointment_at"])
    me = applicant(accepted["lookup_code"])
    clock.advance(timedelta(minutes=5))
    now = clock.now()
    apology = ApologyIssued(
        apology_id=uuid.uuid4(),
        code=code,
        number=1,
        agency_id=PERMIT_LEAD,
        agency_name="Ủy ban nhân dân phường Sài Gòn",
        reason="Chờ ý kiến của cơ quan phòng cháy, chữa cháy",
        previous_appointment_at=legal,
        appointment_at=legal + timedelta(days=5),
        issued_at=now,
        procedure_name="Cấp giấy phép xây dựng mới đối với nhà ở riêng lẻ",
        received_at=now,
    )
    await _consume(intake, apology, code, now)
    await _consume(intake, apology, code, now)  # again: one apology in the history
    rt = intake.app.state.runtime  # type: ignore[attr-defined]
    row = await rt.pool.fetchrow("SELECT * FROM dossiers WHERE code = $1", code)
    assert (row["appointment_at"], row["legal_appointment_at"]) == (
        legal + timedelta(days=5),
        legal,
    )
    assert [a["number"] for a in row["apology_history"]] == [1]
    view = (await intake.get(f"/v1/dossiers/{code}", headers=me)).json()
    assert view["timeliness"] is None  # not before the result is ready
    ready_at = legal + timedelta(days=2)  # after the legal date, before the new one
    ready = ResultReady(
        code=code,
        procedure_code="1.009973",
        procedure_name="Cấp giấy phép xây dựng mới đối với nhà ở riêng lẻ",
        decision=ResultDecision.APPROVED,
        documents=(DocumentRef(code="GPXD"),),
        ready_at=ready_at,
        received_at=now,
        appointment_at=legal + timedelta(days=5),
        legal_appointment_at=legal,
        timeliness=Timeliness.LATE,
        apologies=1,
        receiving_agency=PERMIT_DESK,
        receiving_agency_name="Trung tâm Phục vụ hành chính công phường Sài Gòn",
        lead_agency=PERMIT_LEAD,
        lead_agency_name="Ủy ban nhân dân phường Sài Gòn",
    )
    await _consume(intake, ready, code, ready_at)
    view = (await intake.get(f"/v1/dossiers/{code}", headers=me)).json()
    assert (view["status"], view["timeliness"], view["timeliness_label"]) == (
        9,
        "late",
        "Quá hạn",
    )
    assert datetime.fromisoformat(view["legal_appointment_at"]) == legal


async def test_a_residence_or_land_bound_dossier_names_its_commune_at_the_desk__issue_23_item_3(
    intake: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Guessing the receiving ward would have the wrong ward decide: the desk must say
    where the applicant lives (marriage, Law on Civil Status Art. 17(1)) or where the land
    lies (a building permit of a house)."""
    h = officer(MARRIAGE_DESK, clock)
    nowhere = {**MARRIAGE, "applicant": {**MARRIAGE["applicant"], "commune": None}}
    r = await intake.post("/v1/dossiers", json=nowhere, headers=h)
    assert r.status_code == 422, r.text
    (e,) = r.json()["errors"]
    assert e["field"] == "applicant.commune" and "nơi cư trú" in e["reason"]
    land = {k: v for k, v in PERMIT.items() if k != "property_commune"}
    r = await intake.post("/v1/dossiers", json=land, headers=officer(PERMIT_DESK, clock))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "property_commune"
