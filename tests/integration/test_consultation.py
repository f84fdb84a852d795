"""Opinion requests end to end inside the consultation service, on the real broker and DB:
agency isolation, signed replies, deemed consent at the deadline where a legal text says
so, the escalation ladder (names from the agency registry) where none does, extension,
cancellation and the audit chain."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.agencies import default_book
from contracts.common import Duration, StepKind, TimeUnit
from contracts.envelope import EventPayload, new_envelope
from contracts.events import (
    ConsultTarget,
    Decision,
    DossierRouted,
    DossierWithdrawn,
    HandedOver,
    HandOver,
    Holder,
    RoundToOpen,
    StepRef,
)
from contracts.topics import topic_for
from services.consultation import domain
from services.consultation.app import SPEC
from services.consultation.templates import TemplateBook
from services.runtime import auth
from services.runtime.calendar import VN_TZ, format_local
from services.runtime.clock import ManualClock
from services.runtime.service import Runtime, create_app
from services.runtime.settings import ServiceSettings
from tests.helpers import configure_auth, eventually, kafka_kwargs

# A building permit of works: Sở Xây dựng asks three bodies, whose silence is consent at
# day 12 (Law on Construction, Art. 102(1)).
LEAD = "000.00.06.H29"
PLANNING, ENVIRONMENT, FIRE = "000.00.07.H29", "000.00.08.H29", "000.02.30.H29"
TEMPLATES = {
    PLANNING: "planning-architecture-opinion",
    ENVIRONMENT: "environment-opinion",
    FIRE: "fire-safety-opinion",
}
# An environmental-impact appraisal: Sở NN&MT asks the irrigation-works agency (silence is
# consent at 5 working days, Circular 02/2022/TT-BTNMT Art. 16) and two bodies concerned,
# one local and one vertical, whose silence is not consent.
EIA_LEAD = "000.00.08.H29"
IRRIGATION, BUILDER, CITY_POLICE = "000.02.08.H29", "000.00.06.H29", "000.00.30.H29"
EIA_TEMPLATES = {
    IRRIGATION: "irrigation-works-opinion",
    BUILDER: "environment-impact-opinion",
    CITY_POLICE: "environment-impact-opinion",
}
NAMES = {a: default_book().get(a).name for a in TEMPLATES}
SIGNING = (*TEMPLATES, *EIA_TEMPLATES)  # every agency that signs a reply in these tests
START = datetime(2026, 12, 1, 9, 0, tzinfo=VN_TZ)  # a Tuesday


@dataclass
class Harness:
    http: httpx.AsyncClient
    rt: Runtime
    clock: ManualClock
    bootstrap: str
    prefix: str
    keys: dict[str, Ed25519PrivateKey]

    def token(self, agency: str, role: str = "department_head") -> dict[str, str]:
        t = auth.mint(
            self.rt.settings.jwt_secret,
            agency_id=agency,
            role=role,
            person=f"p-{agency}",
            now=self.clock.now(),
        )
        return {"authorization": f"Bearer {t}"}

    async def publish(self, payload: EventPayload, subject: str) -> None:
        env = new_envelope(payload, subject=subject, producer="test", occurred_at=self.clock.now())
        p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, **kafka_kwargs())
        await p.start()
        await p.send_and_wait(
            topic_for(env.type).full_name(self.prefix),
            env.model_dump_json().encode(),
            key=subject.encode(),
        )
        await p.stop()

    async def route(self, code: str, *, eia: bool = False) -> list[dict[str, Any]]:
        """A building-permit dossier routed to its three opinions, or (``eia``) an
        environmental-impact appraisal to its three."""
        lead, targets = (EIA_LEAD, EIA_TEMPLATES) if eia else (LEAD, TEMPLATES)
        book = default_book()
        await self.publish(
            DossierRouted(
                code=code,
                procedure_code="1.004249" if eia else "1.009972",  # as in the catalogue
                procedure_version=1,
                procedure_name="Thẩm định báo cáo đánh giá tác động môi trường"
                if eia
                else "Cấp giấy phép xây dựng",
                lead_agency=lead,
                lead_agency_name=book.get(lead).name,
                consult=tuple(
                    ConsultTarget(agency_id=a, agency_name=book.get(a).name, template_id=t)
                    for a, t in targets.items()
                ),
                appointment_at=self.clock.now() + timedelta(days=30),
                routed_at=self.clock.now(),
            ),
            code,
        )

        async def listed() -> list[dict[str, Any]]:
            r = await self.http.get(
                "/v1/consultations", params={"dossier": code}, headers=self.token(lead)
            )
            return list(r.json())

        return await eventually(listed, lambda x: len(x) == 3)

    async def trail(self, rid: str) -> list[asyncpg.Record]:
        return list(
            await self.rt.pool.fetch(
                "SELECT action, details FROM audit WHERE request_id = $1 ORDER BY seq",
                uuid.UUID(rid),
            )
        )

    def signed(
        self,
        rid: str,
        agency: str,
        decision: Decision,
        *,
        nonce: str | None = None,
        conditions: str | None = None,
        reasons: str | None = None,
        signer: str | None = None,
        sign_as: Decision | None = None,
    ) -> dict[str, Any]:
        key_id = signer or f"key-{agency}"
        nonce = nonce or uuid.uuid4().hex
        msg = domain.canonical_reply(
            uuid.UUID(rid), sign_as or decision, conditions, reasons, key_id, nonce
        )
        sig = base64.b64encode(self.keys[key_id].sign(msg)).decode()
        return {
            "decision": decision.value,
            "conditions": conditions,
            "reasons": reasons,
            "signer": key_id,
            "nonce": nonce,
            "signature": sig,
        }

    async def fire_all(self) -> None:
        assert self.rt.scheduler is not None
        while await self.rt.scheduler.fire_due():
            pass

    async def events(self, code: str) -> list[str]:
        rows = await self.rt.pool.fetch(
            "SELECT event_type FROM outbox WHERE key = $1 ORDER BY id", code
        )
        return [r["event_type"] for r in rows]


@pytest.fixture
async def h(kafka_bootstrap: str, database_url: str, topic_prefix: str) -> AsyncIterator[Harness]:
    settings = ServiceSettings.for_service("consultation")
    settings.kafka_bootstrap_servers = kafka_bootstrap
    settings.database_url = database_url
    settings.topic_prefix = topic_prefix
    settings.timer_poll_interval_s = 3600  # the test fires timers itself
    configure_auth(settings)
    clock = ManualClock(START)
    app = create_app(SPEC, settings, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as http:
            harness = Harness(http, app.state.runtime, clock, kafka_bootstrap, topic_prefix, {})
            op = harness.token("000.00.00.H29", role=auth.OPERATOR)
            for agency in SIGNING:
                for role in ("department_head", "officer"):
                    key_id = f"key-{agency}" if role == "department_head" else f"officer-{agency}"
                    key = Ed25519PrivateKey.generate()
                    harness.keys[key_id] = key
                    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                    r = await http.post(
                        "/v1/signers",
                        headers=op,
                        json={
                            "key_id": key_id,
                            "agency_id": agency,
                            "person": "Nguyễn Văn Ký",
                            "role": role,
                            "public_key": base64.b64encode(pub).decode(),
                        },
                    )
                    assert r.status_code == 201, r.text
            yield harness


async def test_agencies_see_and_answer_only_their_own(h: Harness) -> None:
    code = "000.00.01.H29-261201-0001"
    requests = {r["agency_id"]: r for r in await h.route(code)}
    fire, env = requests[FIRE]["id"], requests[ENVIRONMENT]["id"]

    inbox = (await h.http.get("/v1/inbox", headers=h.token(FIRE))).json()
    assert [r["id"] for r in inbox] == [fire] and inbox[0]["seconds_left"] > 0
    listed = (
        await h.http.get("/v1/consultations", params={"dossier": code}, headers=h.token(FIRE))
    ).json()
    assert [r["agency_id"] for r in listed] == [FIRE]
    assert (await h.http.get(f"/v1/consultations/{env}", headers=h.token(FIRE))).status_code == 403
    r = await h.http.post(
        f"/v1/consultations/{env}/reply",
        headers=h.token(FIRE),
        json=h.signed(env, FIRE, Decision.AGREE),
    )
    assert r.status_code == 403
    assert (await h.http.get("/v1/inbox")).status_code == 401
    bad = {"authorization": "Bearer not.a.token"}
    assert (await h.http.get("/v1/inbox", headers=bad)).status_code == 401
    forged = auth.mint(
        "another-secret-0123456789abcdef0123",
        agency_id=FIRE,
        role="department_head",
        person="x",
        now=h.clock.now(),
    )
    r = await h.http.get("/v1/inbox", headers={"authorization": f"Bearer {forged}"})
    assert r.status_code == 401
    body = (await h.http.get(f"/v1/consultations/{fire}", headers=h.token(FIRE))).json()
    assert f"Kính gửi: {NAMES[FIRE]}" in body["body_text"]
    assert "Thời hạn trả lời: 12 ngày, chậm nhất" in body["body_text"]
    assert "POST" not in body["body_text"] and "Nơi nhận:" in body["body_text"]
    assert "được coi là đã đồng ý" in body["body_text"] and "Điều 102" in body["body_text"]
    lead = (await h.http.get(f"/v1/consultations/{fire}", headers=h.token(LEAD))).json()
    assert lead["agency_id"] == FIRE


async def test_signed_replies_tampering_and_replay(h: Harness) -> None:
    code = "000.00.01.H29-261201-0002"
    fire = {r["agency_id"]: r for r in await h.route(code)}[FIRE]["id"]
    url, tok = f"/v1/consultations/{fire}/reply", h.token(FIRE)

    r = await h.http.post(
        url, headers=tok, json=h.signed(fire, FIRE, Decision.AGREE_WITH_CONDITIONS)
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "conditions"
    tampered = h.signed(fire, FIRE, Decision.DISAGREE, reasons="x", sign_as=Decision.AGREE)
    r = await h.http.post(url, headers=tok, json=tampered)
    assert r.status_code == 401 and r.json()["errors"][0]["field"] == "signature"
    other_agency = h.signed(fire, FIRE, Decision.AGREE, signer=f"key-{PLANNING}")
    r = await h.http.post(url, headers=tok, json=other_agency)
    # authenticated, not allowed: 403 with the reason in Vietnamese (issue 23, F)
    assert r.status_code == 403 and "thuộc cơ quan khác" in r.json()["detail"]
    officer = h.signed(fire, FIRE, Decision.AGREE, signer=f"officer-{FIRE}")
    r = await h.http.post(url, headers=tok, json=officer)
    assert r.status_code == 403 and "không được ký" in r.json()["detail"]
    assert "officer" not in r.json()["detail"]
    unsigned = {**h.signed(fire, FIRE, Decision.AGREE), "signature": ""}
    assert (await h.http.post(url, headers=tok, json=unsigned)).status_code == 401

    good = h.signed(
        fire,
        FIRE,
        Decision.AGREE_WITH_CONDITIONS,
        nonce="n-1",
        conditions="Bổ sung lối thoát nạn thứ hai tại tầng hầm",
    )
    r = await h.http.post(url, headers=tok, json=good)
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["decision"]) == ("replied", "agree_with_conditions")
    pending = await h.rt.pool.fetchval(
        "SELECT count(*) FROM timers WHERE owner = $1 AND status = 'pending'", fire
    )
    assert pending == 0, "a reply cancels the timers still pending"
    again = await h.http.post(url, headers=tok, json=good)
    assert again.status_code == 409 and "không thay đổi được" in again.json()["detail"]

    # the same signer's nonce on another request: a valid signature, but a replay
    code2 = "000.00.01.H29-261201-0003"
    fire2 = {r["agency_id"]: r for r in await h.route(code2)}[FIRE]["id"]
    replay = h.signed(fire2, FIRE, Decision.AGREE, nonce="n-1")
    r = await h.http.post(f"/v1/consultations/{fire2}/reply", headers=tok, json=replay)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "nonce"


async def test_building_permit_silence_is_consent_at_the_deadline_and_moves_with_an_extension(
    h: Harness,
) -> None:
    code = "000.00.01.H29-261201-0004"
    req = {r["agency_id"]: r for r in await h.route(code)}
    twelve = Duration(value=12, unit="calendar_days")
    for a in TEMPLATES:  # the deadline is the calendar's (day 12, counted as the law says)
        assert datetime.fromisoformat(req[a]["due_at"]) == h.rt.calendar.deadline(START, twelve)
    fire = req[FIRE]["id"]
    r = await h.http.post(
        f"/v1/consultations/{fire}/reply",
        headers=h.token(FIRE),
        json=h.signed(fire, FIRE, Decision.AGREE),
    )
    assert r.status_code == 200

    env_due = datetime.fromisoformat(req[ENVIRONMENT]["due_at"])
    planning = req[PLANNING]["id"]
    ext = await h.http.post(
        f"/v1/consultations/{planning}/extension",
        headers=h.token(LEAD),
        json={"by": {"value": 2}, "reason": "Chờ kết quả khảo sát hiện trạng"},
    )
    assert ext.status_code == 200, ext.text
    plan_due = datetime.fromisoformat(ext.json()["due_at"])
    assert plan_due > env_due
    final_due = await h.rt.pool.fetchval(
        "SELECT due_at FROM timers WHERE owner = $1 AND kind = $2 AND status = 'pending'",
        planning,
        domain.FINAL,
    )
    assert final_due == plan_due, "the deemed-consent moment moves with the deadline"

    h.clock.set(env_due - timedelta(minutes=1))  # just before the deadline: still waiting
    await h.fire_all()
    env = await h.rt.pool.fetchrow(
        "SELECT * FROM requests WHERE id = $1", uuid.UUID(req[ENVIRONMENT]["id"])
    )
    assert env["status"] == "open"

    h.clock.set(env_due + timedelta(hours=3))  # the timer runs late: consent dates from due
    await h.fire_all()
    env = await h.rt.pool.fetchrow("SELECT * FROM requests WHERE id = $1", env["id"])
    assert env["status"] == "deemed_consent" and env["outcome_at"] == env_due
    assert "Điều 102" in env["legal_basis"] and "62/2020/QH14" in env["legal_basis"]
    template = TemplateBook.load().in_force(TEMPLATES[ENVIRONMENT], START.date())
    due = sum(h.rt.calendar.before(env_due, d) > START for d in template.reminders)
    # the clock jumped past both reminders at once: only the latest went out, the earlier
    # one is recorded as skipped (issue 23, D)
    assert due == 2 and (env["reminders_sent"], env["escalation_step"]) == (1, 0)
    trail = await h.trail(req[ENVIRONMENT]["id"])
    assert [a["action"] for a in trail] == [
        "opened",
        "reminder_skipped",
        "reminded",
        "deemed_consent",
    ]
    p = await h.rt.pool.fetchrow("SELECT * FROM requests WHERE id = $1", uuid.UUID(planning))
    assert p["status"] == "open", "extended: its deadline has not come"
    assert "consultation.round_completed" not in await h.events(code)

    h.clock.set(plan_due)
    await h.fire_all()
    p = await h.rt.pool.fetchrow("SELECT * FROM requests WHERE id = $1", uuid.UUID(planning))
    assert (p["status"], p["escalation_step"], p["outcome_at"]) == ("deemed_consent", 0, plan_due)
    events = await h.events(code)
    assert "consultation.escalated" not in events and "consultation.lapsed" not in events
    assert events.count("consultation.deemed_consent") == 2
    assert events[-1] == "consultation.round_completed"


async def test_eia_irrigation_deemed_others_escalate_to_registry_rungs_and_keep_waiting(
    h: Harness,
) -> None:
    code = "000.00.01.H29-261201-0007"
    req = {r["agency_id"]: r for r in await h.route(code, eia=True)}
    irrigation_due = datetime.fromisoformat(req[IRRIGATION]["due_at"])
    assert format_local(irrigation_due) == "17:00 ngày 08/12/2026"  # 5 working days
    assert format_local(datetime.fromisoformat(req[BUILDER]["due_at"])) == "17:00 ngày 22/12/2026"

    h.clock.set(datetime(2027, 1, 6, 9, 0, tzinfo=VN_TZ))  # past every ladder
    await h.fire_all()
    rows = {
        r["agency_id"]: r
        for r in await h.rt.pool.fetch("SELECT * FROM requests WHERE dossier_code = $1", code)
    }
    irrigation = rows[IRRIGATION]
    assert (irrigation["status"], irrigation["escalation_step"]) == ("deemed_consent", 0)
    assert irrigation["outcome_at"] == irrigation_due
    assert irrigation["legal_basis"].startswith("Điều 16 Thông tư 02/2022/TT-BTNMT")

    told: dict[str, list[tuple[str, str, str | None]]] = {}
    for a in (BUILDER, CITY_POLICE):
        assert (rows[a]["status"], rows[a]["escalation_step"]) == ("lapsed", 3)
        assert rows[a]["legal_basis"] is None
        trail = await h.trail(str(rows[a]["id"]))
        assert [x["action"] for x in trail][-4:] == ["escalated"] * 3 + ["lapsed"]
        told[a] = [
            (d["notify_role"], d["notify_name"], d["notify_agency"])
            for d in (x["details"] for x in trail if x["action"] == "escalated")
        ]
    assert told[BUILDER][1:] == [
        ("agency_head", "Giám đốc Sở Xây dựng Thành phố Hồ Chí Minh", BUILDER),
        ("coordinator", "Chủ tịch Ủy ban nhân dân Thành phố Hồ Chí Minh", "000.00.00.H29"),
    ]
    assert told[CITY_POLICE][1:] == [
        ("agency_head", "Giám đốc Công an Thành phố Hồ Chí Minh", CITY_POLICE),
        ("superior", "Bộ trưởng Bộ Công an", None),  # not the city's chairman
    ]
    events = await h.events(code)
    assert events.count("consultation.escalated") == 6
    assert "consultation.round_completed" not in events

    for a in (BUILDER, CITY_POLICE):  # late, signed answers complete the round
        rid = str(rows[a]["id"])
        r = await h.http.post(
            f"/v1/consultations/{rid}/reply",
            headers=h.token(a),
            json=h.signed(rid, a, Decision.DISAGREE, reasons="Chưa đánh giá tác động tích lũy"),
        )
        assert r.status_code == 200, r.text
    assert (await h.events(code))[-1] == "consultation.round_completed"
    completed = await h.rt.pool.fetchval(
        "SELECT payload FROM outbox WHERE key = $1 AND event_type = 'consultation.round_completed'",
        code,
    )
    assert '"deemed_consent"' in completed and '"disagree"' in completed


async def test_withdrawal_cancels_requests_and_completes_round(h: Harness) -> None:
    code = "000.00.01.H29-261201-0005"
    await h.route(code)
    await h.publish(DossierWithdrawn(code=code, withdrawn_at=h.clock.now()), code)

    async def events() -> list[str]:
        return await h.events(code)

    ev = await eventually(events, lambda e: "consultation.round_completed" in e)
    assert ev.count("consultation.cancelled") == 3
    pending = await h.rt.pool.fetchval(
        "SELECT count(*) FROM timers t JOIN requests r ON t.owner = r.id::text"
        " WHERE r.dossier_code = $1 AND t.status = 'pending'",
        code,
    )
    assert pending == 0


async def test_audit_chain_verifies_and_reports_an_altered_row(h: Harness) -> None:
    code = "000.00.01.H29-261201-0006"
    req = {r["agency_id"]: r for r in await h.route(code)}
    fire = req[FIRE]["id"]
    await h.http.get(f"/v1/consultations/{fire}", headers=h.token(FIRE))  # a read is audited
    await h.http.post(
        f"/v1/consultations/{fire}/reply",
        headers=h.token(FIRE),
        json=h.signed(fire, FIRE, Decision.AGREE),
    )
    op = h.token("000.00.00.H29", role=auth.OPERATOR)
    assert (await h.http.get("/v1/audit/verify", headers=h.token(FIRE))).status_code == 403
    assert (await h.http.get("/v1/audit/verify", headers=op)).json() == {"ok": True}
    trail = (await h.http.get(f"/v1/consultations/{fire}/audit", headers=h.token(LEAD))).json()
    assert [a["action"] for a in trail] == ["opened", "read", "replied"]

    from services.consultation import cli

    url = h.rt.settings.database_url
    assert await cli._verify(url, "consultation") == 0
    async with h.rt.pool.acquire() as conn:
        with pytest.raises(Exception, match="append-only"):
            await conn.execute(
                "UPDATE audit SET actor = 'x' WHERE request_id = $1", uuid.UUID(fire)
            )
        async with conn.transaction():  # a superuser going around the trigger
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE audit SET actor = 'someone else' WHERE request_id = $1 AND seq = 2",
                uuid.UUID(fire),
            )
    result = (await h.http.get("/v1/audit/verify", headers=op)).json()
    assert result["ok"] is False
    broken = result["first_broken"]
    assert (broken["request_id"], broken["seq"], broken["reason"]) == (fire, 2, "content altered")
    assert await cli._verify(url, "consultation") == 1


async def test_a_round_opens_when_the_route_reaches_its_consult_step(h: Harness) -> None:
    """A route whose first step after receipt is not the round names its agencies at
    routing but opens nothing; the round opens with the hand-over to the consult step."""
    book = default_book()
    code = "000.00.01.H29-261201-0077"
    targets = tuple(
        ConsultTarget(agency_id=a, agency_name=book.get(a).name, template_id=t)
        for a, t in EIA_TEMPLATES.items()
    )
    lead_name = book.get(EIA_LEAD).name
    step = StepRef(
        order=3,
        kind=StepKind.CONSULT,
        action="Lấy ý kiến",
        agency_id=EIA_LEAD,
        agency_name=lead_name,
        duration=Duration(value=12, unit=TimeUnit.CALENDAR_DAYS),
    )
    await h.publish(
        DossierRouted(
            code=code,
            procedure_code="1.004249",
            procedure_version=1,
            procedure_name="Thẩm định báo cáo đánh giá tác động môi trường",
            lead_agency=EIA_LEAD,
            lead_agency_name=lead_name,
            consult=targets,
            appointment_at=h.clock.now() + timedelta(days=30),
            routed_at=h.clock.now(),
            opens_round=False,
        ),
        code,
    )
    holder = Holder(agency_id=EIA_LEAD, agency_name=lead_name)
    await h.publish(
        HandedOver(
            code=code,
            line=HandOver(
                seq=2,
                giver=holder,
                receiver=holder,
                at=h.clock.now(),
                step=3,
                step_action="Lấy ý kiến",
            ),
            step=step,
            deadline_at=h.clock.now() + timedelta(days=12),
            round=RoundToOpen(
                procedure_name="Thẩm định báo cáo đánh giá tác động môi trường",
                lead_agency=EIA_LEAD,
                lead_agency_name=lead_name,
                consult=targets,
            ),
        ),
        code,
    )

    async def listed() -> list[dict[str, Any]]:
        r = await h.http.get(
            "/v1/consultations", params={"dossier": code}, headers=h.token(EIA_LEAD)
        )
        return list(r.json())

    opened = await eventually(listed, lambda x: len(x) == 3)
    assert {r["agency_id"] for r in opened} == set(EIA_TEMPLATES)
    assert (await h.events(code)).count("consultation.requested") == 3
