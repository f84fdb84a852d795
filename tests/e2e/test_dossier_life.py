"""A dossier's whole life through the running services (issue 10): steps and hand-overs
across agencies, a consultation round, the decision, the result returned on time or with
an apology (Forms 04 and 05), a supplement that pauses the clock, and wrong moves.

Time is the services' shared clock, set to a week without holidays (Monday 8 March 2027,
Hồ Chí Minh City office hours 07:30-11:30, 13:00-17:00) and moved by the test."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.agencies import default_book
from contracts.events import Decision
from services.consultation.domain import canonical_reply
from services.runtime.calendar import WorkingCalendar
from services.runtime.clock import FileOffsetClock
from tests.e2e.stack import Stack
from tests.e2e.test_walking_skeleton import PERMIT
from tests.helpers import eventually

pytestmark = pytest.mark.e2e
VN = ZoneInfo("Asia/Ho_Chi_Minh")
OPERATOR = "000.00.00.H29"
CITY_DESK, CONSTRUCTION = "000.00.01.H29", "000.00.06.H29"
WARD_DESK, WARD, WARD_POLICE, SOCIAL = (
    "000.01.50.H29",
    "000.00.50.H29",
    "000.03.30.H29",
    "000.00.32.H29",
)
BIRTH = {
    "procedure_code": "3.000722",  # the birth group; replaces 2.000986 (civil.yaml)
    "channel": 2,
    "applicant": {
        "name": "Nguyễn Văn An",
        "id_number": "079190000002",
        "email": "an.nguyen@example.vn",
        "phone": "0912345679",
        "commune": "SAI_GON",
    },
    "summary": "Khai sinh cho con Nguyễn Minh Khang",
    "documents": [{"code": "TK-LT"}, {"code": "GCS"}],
}


def local(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment of the week of Monday 8 March 2027, in Hồ Chí Minh City."""
    return datetime(2027, 3, day, hour, minute, tzinfo=VN)


class Life:
    """One dossier driven through the stack: officers' moves with tokens on the services'
    clock (which the test moves), and reads of every service's view of it."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient, clock: FileOffsetClock) -> None:
        self.stack, self.http, self.clock = stack, http, clock
        self.code = ""
        self.lookup: dict[str, str] = {}

    def at(self, when: datetime) -> None:
        self.clock.advance(when - self.clock.now())

    def who(self, agency: str, role: str = "officer", department: str | None = None) -> Any:
        return self.stack.headers(
            agency, role, now=self.clock.now(), department=department, name=f"{role} {agency}"
        )

    async def submit(self, body: dict[str, Any], desk: str) -> dict[str, Any]:
        r = await self.http.post(
            f"{self.stack.url('intake')}/v1/dossiers", json=body, headers=self.who(desk)
        )
        assert r.status_code == 201, r.text
        self.code = r.json()["code"]
        self.lookup = {"X-Lookup-Code": r.json()["lookup_code"]}
        return dict(r.json())

    async def route(self) -> dict[str, Any]:
        r = await self.http.get(
            f"{self.stack.url('routing')}/v1/routes/{self.code}",
            headers=self.who(OPERATOR, "operator"),
        )
        return dict(r.json()) if r.status_code == 200 else {}

    async def route_where(self, ok: Any, timeout: float = 30) -> dict[str, Any]:
        return await eventually(self.route, lambda v: bool(v) and ok(v), timeout=timeout)

    async def move(
        self, path: str, body: dict[str, Any], agency: str, role: str = "officer"
    ) -> httpx.Response:
        """An officer's move on the route, with the department of the step it acts on."""
        route = await self.route()
        n = route.get("current_step")
        step = route["steps"][n - 1] if n else None
        department = step["department"] if step and step["agency_id"] == agency else None
        return await self.http.post(
            f"{self.stack.url('routing')}/v1/routes/{self.code}/{path}",
            json=body,
            headers=self.who(agency, role, department),
        )

    async def ok(self, path: str, body: dict[str, Any], agency: str, role: str = "officer") -> Any:
        r = await self.move(path, body, agency, role)
        assert r.status_code == 200, (path, r.text)
        return r.json()

    async def dossier(self) -> dict[str, Any]:
        r = await self.http.get(
            f"{self.stack.url('intake')}/v1/dossiers/{self.code}", headers=self.lookup
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def notices(self) -> list[dict[str, Any]]:
        r = await self.http.get(
            f"{self.stack.url('notification')}/v1/notifications",
            params={"dossier": self.code},
            headers=self.lookup,
        )
        return list(r.json()) if r.status_code == 200 else []

    async def sent(self, kind: str, n: int = 1) -> list[dict[str, Any]]:
        found = await eventually(
            self.notices,
            lambda ns: sum(1 for x in ns if self._mail(x, kind) and x["status"] == "sent") >= n,
            timeout=30,
        )
        return [x for x in found if self._mail(x, kind)]

    @staticmethod
    def _mail(x: dict[str, Any], kind: str) -> bool:
        """The notice of ``kind`` by email (the applicant has one; SMS and the portal, when
        configured, carry it on their own channels)."""
        return bool(x["kind"] == kind and x["channel"] == "email")

    async def requests_now(self) -> list[dict[str, Any]]:
        r = await self.http.get(
            f"{self.stack.url('consultation')}/v1/consultations",
            params={"dossier": self.code},
            headers=self.who(OPERATOR, "operator"),
        )
        return list(r.json()) if r.status_code == 200 else []

    async def requests(self, n: int) -> list[dict[str, Any]]:
        return await eventually(self.requests_now, lambda qs: len(qs) >= n, timeout=30)

    async def form05(self, fmt: str = "text") -> str:
        r = await self.http.get(
            f"{self.stack.url('routing')}/v1/routes/{self.code}/form05",
            params={"format": fmt},
            headers=self.who(OPERATOR, "operator"),
        )
        assert r.status_code == 200, r.text
        return r.text


@pytest.fixture
def life(stack: Stack, http: httpx.AsyncClient, clock: FileOffsetClock) -> Life:
    lf = Life(stack, http, clock)
    lf.at(local(8, 9))
    return lf


async def reply_all(life: Life) -> None:
    """Every consulted agency replies, signed by its department head."""
    c = life.stack.url("consultation")
    op = life.who(OPERATOR, "operator")

    async def requests() -> list[dict[str, Any]]:
        r = await life.http.get(f"{c}/v1/consultations", params={"dossier": life.code}, headers=op)
        return list(r.json())

    for req in await eventually(requests, lambda rs: len(rs) == 3, timeout=30):
        key = Ed25519PrivateKey.generate()
        key_id = f"k-{uuid.uuid4().hex[:8]}"
        public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        r = await life.http.post(
            f"{c}/v1/signers",
            headers=op,
            json={
                "key_id": key_id,
                "agency_id": req["agency_id"],
                "person": "Trưởng phòng",
                "role": "department_head",
                "public_key": base64.b64encode(public).decode(),
            },
        )
        assert r.status_code == 201, r.text
        nonce = uuid.uuid4().hex
        sig = key.sign(
            canonical_reply(uuid.UUID(req["id"]), Decision.AGREE, None, None, key_id, nonce)
        )
        r = await life.http.post(
            f"{c}/v1/consultations/{req['id']}/reply",
            headers=life.who(req["agency_id"], "department_head"),
            json={
                "decision": "agree",
                "signer": key_id,
                "nonce": nonce,
                "signature": base64.b64encode(sig).decode(),
            },
        )
        assert r.status_code == 200, r.text


async def test_building_permit_steps_round_decision_and_result_returned_early(
    life: Life,
) -> None:
    await life.submit(PERMIT, CITY_DESK)
    route = await life.route_where(lambda r: r["current_step"] == 2)
    assert [s["kind"] for s in route["steps"]] == [
        "receive",
        "consult",
        "appraise",
        "approve",
        "return",
    ]
    await reply_all(life)
    route = await life.route_where(lambda r: r["current_step"] == 3)
    assert route["steps"][1]["timeliness"] == "early"  # all three answered the first day
    await life.ok("steps/3/take", {}, CONSTRUCTION)
    life.at(local(9, 10))
    await life.ok("steps/3/complete", {"result": "Đủ điều kiện cấp phép"}, CONSTRUCTION)
    await life.ok(
        "decision",
        {"decision": "approved", "documents": [{"code": "GPXD", "name": "Giấy phép xây dựng"}]},
        CONSTRUCTION,
        "agency_head",
    )
    ready = await life.ok("result-ready", {}, CITY_DESK)
    assert (ready["state"], ready["status"], ready["timeliness"]) == ("result_ready", 9, "early")
    await life.sent("result_ready")
    done = await life.ok("return", {"method": "at_desk"}, CITY_DESK)
    assert (done["state"], done["status"]) == ("returned", 10)
    assert done["apologies"] == [] and done["faults"] == []
    assert [h["receiver"]["agency_id"] for h in done["handovers"]] == [
        CONSTRUCTION,
        CONSTRUCTION,
        CONSTRUCTION,
        CITY_DESK,
    ]
    dossier = await eventually(life.dossier, lambda d: d["status"] == 10)
    assert [h["status"] for h in dossier["status_history"]] == [2, 4, 9, 10]
    types = [e["type"] for e in dossier["timeline"]]
    for t in ("routing.handed_over", "routing.step_completed", "routing.dossier_decided"):
        assert t in types, t
    await portal_holds_ours(life)


async def portal_holds_ours(life: Life) -> dict[str, Any]:
    """The national portal's simulator got the dossier's whole life, in order, and holds
    what intake holds, field by field; every step's progress with its end by law."""
    sync = await eventually(
        lambda: life.http.get(
            f"{life.stack.url('intake')}/v1/dossiers/{life.code}/portal-sync",
            headers=life.who(WARD_DESK if life.code.startswith(WARD_DESK) else CITY_DESK),
        ),
        lambda r: r.status_code == 200 and r.json()["status"] == "synced",
        timeout=30,
    )
    ours = sync.json()["record"]
    sim = life.stack.simulator("portal")
    theirs = sim.admin("GET", f"/records/{life.code}")
    assert theirs == ours
    log = sim.admin("GET", f"/log?code={life.code}&service=DongBoHoSoMC")
    seen = [i["TrangThaiHoSo"] for e in log for i in e["items"] if i.get("MaHoSo") == life.code]
    statuses = [int(x) for x in seen]
    assert statuses == sorted(statuses) and statuses[0] == 2 and statuses[-1] == 10
    progress = sim.admin("GET", f"/progress/{life.code}")
    assert progress and all(p["MaHoSo"] == life.code for p in progress)
    assert progress[-1]["TrangThai"] == "10"
    assert any(p["NgayKetThucTheoQuyDinh"] for p in progress)
    print("portal record (DongBoHoSoMC) as the portal holds it:")  # shown with -s
    print(json.dumps(theirs, ensure_ascii=False, indent=1))
    print("last step progress (CapNhatTienDoHoSoMC):")
    print(json.dumps(progress[-1], ensure_ascii=False, indent=1))
    return dict(theirs)


async def test_birth_group_three_agencies_one_late_apology_signed_by_the_head(
    life: Life,
) -> None:
    accepted = await life.submit(BIRTH, WARD_DESK)
    assert accepted["appointment_at"].startswith("2027-03-11T10:00")  # Thu 17:00 local
    route = await life.route_where(lambda r: r["current_step"] == 2)
    assert [s["agency_id"] for s in route["steps"]] == [
        WARD_DESK,
        WARD,
        WARD_POLICE,
        SOCIAL,
        WARD_DESK,
    ]
    life.at(local(8, 9, 30))
    await life.ok(
        "decision",
        {"decision": "approved", "documents": [{"code": "GKS", "name": "Giấy khai sinh"}]},
        WARD,
        "agency_head",
    )
    await life.ok("steps/3/take", {}, WARD_POLICE)
    # the ward police keep it past its budget and past the point where the rest still fits
    life.at(local(10, 14))
    drafted = await life.route_where(lambda r: r["apologies"], timeout=40)
    apology = drafted["apologies"][0]
    assert apology["status"] == "drafted" and apology["agency_id"] == WARD_POLICE
    assert drafted["steps"][2]["overdue"]
    assert not [n for n in await life.notices() if n["kind"] == "form04"]  # not yet issued
    # nobody signs by the latest legal moment (Wednesday 17:00, a working day before the
    # appointment): the head's superior is told, the letter is never sent unsigned
    life.at(local(10, 17, 1))
    escalated = await life.route_where(lambda r: r["apologies"][0]["escalated_at"], 40)
    assert escalated["apologies"][0]["status"] == "drafted"
    assert escalated["appointment_at"] == accepted["appointment_at"]
    # the police head signs it the next morning, with the number, the date and their name
    life.at(local(11, 7, 45))
    signed = await life.ok(
        f"apologies/{apology['id']}/confirm",
        {
            "reason": "Chờ xác minh nơi thường trú của người mẹ",
            "appointment_at": local(15, 17).isoformat(),
            "number": "27/PXL-CAP",
        },
        WARD_POLICE,
        "agency_head",
    )
    first = signed["apologies"][0]
    assert first["status"] == "issued" and first["after_latest_moment"]  # flagged late
    assert not first["automatic"] and first["document_number"] == "27/PXL-CAP"
    assert signed["appointment_at"].startswith("2027-03-15T10:00")
    form04 = (await life.sent("form04"))[0]
    assert "XIN LỖI" in form04["body_text"].upper()
    assert "27/PXL-CAP" in form04["body_text"]
    assert f"agency_head {WARD_POLICE}" in form04["body_text"]  # the signer, from the token
    dossier = await eventually(
        life.dossier, lambda d: d["appointment_at"] == signed["appointment_at"]
    )
    assert dossier["apologies"] == 1

    life.at(local(11, 8))
    await life.ok("steps/3/complete", {"result": "Đã đăng ký thường trú"}, WARD_POLICE)
    await life.ok("steps/4/take", {}, SOCIAL)
    await life.ok("steps/4/complete", {"result": "Thẻ bảo hiểm y tế điện tử"}, SOCIAL)
    await life.ok("result-ready", {}, WARD_DESK)
    await life.ok("return", {"method": "online"}, WARD_DESK)
    done = await life.route()
    assert [f["agency_id"] for f in done["faults"]] == [WARD_POLICE]
    lines = {h["giver"]["agency_id"]: h["giver_timeliness"] for h in done["handovers"]}
    assert lines[WARD_POLICE] == "late" and lines[WARD] in ("early", "on_time")
    slip = await life.form05()
    police_lines = [ln for ln in slip.splitlines() if "Công an phường Sài Gòn" in ln]
    assert any("Quá hạn" in ln for ln in slip.splitlines()), slip
    assert police_lines, slip
    html = await life.form05("html")
    assert "<table" in html and "Quá hạn" in html
    dossier = await eventually(life.dossier, lambda d: d["status"] == 10)
    assert [h["status"] for h in dossier["status_history"]] == [2, 4, 9, 10]
    print("\nForm 04 as sent:\n" + form04["body_text"])
    print("\nForm 05:\n" + slip)
    print("\nstatus history:", [(h["state"], h["status"]) for h in dossier["status_history"]])


async def test_building_permit_whose_opinions_are_all_deemed_given_finishes_on_time(
    life: Life,
) -> None:
    """Issue 23 (A): nobody answers; at the deadline every opinion is deemed given (Law on
    Construction, Art. 102(1)). The round closes seconds after 17:00, and the consult step
    is on time by definition: no fault on Form 05 or in the result notice."""
    await life.submit(PERMIT, CITY_DESK)
    route = await life.route_where(lambda r: r["current_step"] == 2)
    deadline = datetime.fromisoformat(route["steps"][1]["deadline_at"])
    requests = await life.requests(3)
    assert {q["due_at"] for q in requests} == {route["steps"][1]["deadline_at"]}, requests
    life.at(deadline.astimezone(VN) + timedelta(seconds=20))
    deemed = await eventually(
        life.requests_now,
        lambda qs: all(q["status"] == "deemed_consent" for q in qs),
        timeout=60,
    )
    assert len(deemed) == 3
    route = await life.route_where(lambda r: r["current_step"] == 3, timeout=60)
    consult = route["steps"][1]
    assert consult["timeliness"] in ("on_time", "early"), consult
    assert consult["late_working_seconds"] == 0 and not consult["overdue"]
    assert route["faults"] == [] and route["apologies"] == []
    life.at(life.clock.now() + timedelta(minutes=10))
    await life.ok("steps/3/take", {}, CONSTRUCTION)
    life.at(life.clock.now() + timedelta(hours=1))
    await life.ok("steps/3/complete", {"result": "Đủ điều kiện cấp phép"}, CONSTRUCTION)
    await life.ok(
        "decision",
        {"decision": "approved", "documents": [{"code": "GPXD", "name": "Giấy phép xây dựng"}]},
        CONSTRUCTION,
        "agency_head",
    )
    ready = await life.ok("result-ready", {}, CITY_DESK)
    assert ready["timeliness"] in ("on_time", "early") and ready["faults"] == []
    notice = (await life.sent("result_ready"))[0]
    assert "quá hạn" not in notice["body_text"].lower(), notice["body_text"]
    slip = await life.form05()
    assert "Quá hạn" not in slip, slip


async def test_a_late_dossier_whose_last_step_is_short_is_apologised_for_in_time(
    life: Life,
) -> None:
    """Issue 23 (1): the social insurance step goes overdue Wednesday 09:00 with only the
    desk's 4 hours after it. The draft comes at once (not at Thursday's risk moment), and
    the head signs it before Wednesday 17:00, a working day before the appointment."""
    accepted = await life.submit(BIRTH, WARD_DESK)
    assert accepted["appointment_at"].startswith("2027-03-11T10:00")  # Thu 17:00 local
    await life.route_where(lambda r: r["current_step"] == 2)
    life.at(local(8, 9, 30))
    await life.ok(
        "decision",
        {"decision": "approved", "documents": [{"code": "GKS", "name": "Giấy khai sinh"}]},
        WARD,
        "agency_head",
    )
    await life.ok("steps/3/take", {}, WARD_POLICE)
    life.at(local(9, 9))
    await life.ok("steps/3/complete", {"result": "Đã đăng ký thường trú"}, WARD_POLICE)
    life.at(local(10, 9, 30))  # social insurance idle past its 8 working hours
    drafted = await life.route_where(lambda r: r["apologies"], timeout=40)
    draft = drafted["apologies"][0]
    assert draft["agency_id"] == SOCIAL and draft["status"] == "drafted"
    latest = datetime.fromisoformat(draft["latest_issue_at"])
    assert latest == local(10, 17)  # the close of the working day before Thursday
    life.at(local(10, 10))
    signed = await life.ok(
        f"apologies/{draft['id']}/confirm",
        {
            "reason": "Chờ dữ liệu từ Cơ sở dữ liệu quốc gia về bảo hiểm",
            "appointment_at": local(15, 17).isoformat(),
            "number": "05/PXL-BHXH",
        },
        SOCIAL,
        "agency_head",
    )
    issued = signed["apologies"][0]
    assert issued["status"] == "issued" and not issued["after_latest_moment"]
    assert datetime.fromisoformat(issued["issued_at"]) <= latest
    assert issued["signer_name"] == f"agency_head {SOCIAL}"  # the token's name
    form04 = (await life.sent("form04"))[0]
    assert "05/PXL-BHXH" in form04["body_text"]


async def test_supplement_mid_processing_pauses_and_moves_the_appointment_exactly(
    life: Life,
) -> None:
    await life.submit(BIRTH, WARD_DESK)
    before = await life.route_where(lambda r: r["current_step"] == 2)
    paused = await life.ok(
        "supplement-request",
        {"missing": ["GCS"], "reasons": {"GCS": "Bản chụp giấy chứng sinh bị mờ"}},
        WARD,
    )
    assert (paused["state"], paused["status"]) == ("waiting_supplement", 5)
    await life.sent("form02")
    await eventually(life.dossier, lambda d: d["status"] == 5)
    life.at(local(9, 10))  # Tuesday 10:00: 8 + 2.5 working hours later
    r = await life.http.post(
        f"{life.stack.url('intake')}/v1/dossiers/{life.code}/supplements",
        json={"documents": [{"code": "GCS", "name": "Giấy chứng sinh (bản rõ)"}]},
        headers=life.lookup,
    )
    assert r.status_code == 200, r.text
    resumed = await life.route_where(
        lambda v: v["state"] == "processing" and v["paused_working_seconds"]
    )
    cal = WorkingCalendar().with_office(default_book().office_hours(WARD_DESK))
    waited = resumed["paused_working_seconds"]
    assert waited == cal.working_seconds_between(
        datetime.fromisoformat(paused["paused_since"]), local(9, 10)
    )
    moved = cal.working_seconds_between(
        datetime.fromisoformat(before["appointment_at"]),
        datetime.fromisoformat(resumed["appointment_at"]),
    )
    assert moved == waited
    step_moved = cal.working_seconds_between(
        datetime.fromisoformat(before["steps"][1]["deadline_at"]),
        datetime.fromisoformat(resumed["steps"][1]["deadline_at"]),
    )
    assert step_moved == waited
    dossier = await eventually(
        life.dossier, lambda d: d["appointment_at"] == resumed["appointment_at"]
    )
    assert dossier["status"] == 4 and dossier["supplement_requests"] == 1


async def test_wrong_moves_conflict_and_another_agencys_dossier_is_forbidden(life: Life) -> None:
    await life.submit(BIRTH, WARD_DESK)
    await life.route_where(lambda r: r["current_step"] == 2)
    r = await life.move("steps/3/complete", {}, WARD_POLICE)
    assert r.status_code == 409 and "không phải bước hiện tại" in r.json()["detail"]
    r = await life.move("steps/2/take", {}, WARD_POLICE)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "agency"
    r = await life.move("result-ready", {}, WARD_DESK)
    assert r.status_code == 409
    r = await life.move("steps/2/take", {}, CONSTRUCTION, "agency_head")
    assert r.status_code == 403
    r = await life.http.get(
        f"{life.stack.url('routing')}/v1/routes/{life.code}", headers=life.who(CONSTRUCTION)
    )
    assert r.status_code == 403
    r = await life.http.get(
        f"{life.stack.url('intake')}/v1/dossiers/{life.code}", headers=life.who(CONSTRUCTION)
    )
    assert r.status_code == 403
    # withdrawn: every move after it is a conflict
    r = await life.http.post(
        f"{life.stack.url('intake')}/v1/dossiers/{life.code}/withdrawal",
        json={"reason": "Không còn nhu cầu"},
        headers=life.lookup,
    )
    assert r.status_code == 200, r.text
    await life.route_where(lambda v: v["state"] == "withdrawn")
    r = await life.move(
        "decision", {"decision": "approved", "documents": [{"code": "GKS"}]}, WARD, "agency_head"
    )
    assert r.status_code == 409 and "đã kết thúc" in r.json()["detail"]
