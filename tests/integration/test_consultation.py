"""Opinion requests end to end inside the consultation service, on the real broker and DB:
agency isolation, signed replies, the escalation ladder, deemed consent, extension,
cancellation and the audit chain."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.envelope import EventPayload, new_envelope
from contracts.events import ConsultTarget, Decision, DossierRouted, DossierWithdrawn
from contracts.topics import topic_for
from services.consultation import domain
from services.consultation.app import SPEC
from services.runtime import auth
from services.runtime.calendar import VN_TZ, format_local
from services.runtime.clock import ManualClock
from services.runtime.service import Runtime, create_app
from services.runtime.settings import ServiceSettings
from tests.helpers import configure_auth, eventually, kafka_kwargs

LEAD = "000.50.03.H29"
PLANNING, ENVIRONMENT, FIRE = "000.70.04.H29", "000.80.06.H29", "000.90.08.H29"
NAMES = {
    PLANNING: "Sở Quy hoạch - Kiến trúc",
    ENVIRONMENT: "Sở Nông nghiệp và Môi trường",
    FIRE: "Cảnh sát PCCC",
}
TEMPLATES = {
    PLANNING: "planning-architecture-opinion",
    ENVIRONMENT: "environment-opinion",
    FIRE: "fire-safety-opinion",
}
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

    async def route(self, code: str) -> list[dict[str, Any]]:
        await self.publish(
            DossierRouted(
                code=code,
                procedure_code="1.009972",
                procedure_version=1,
                procedure_name="Cấp giấy phép xây dựng",
                lead_agency=LEAD,
                lead_agency_name="Sở Xây dựng Hà Nội",
                consult=tuple(
                    ConsultTarget(agency_id=a, agency_name=NAMES[a], template_id=TEMPLATES[a])
                    for a in NAMES
                ),
                appointment_at=self.clock.now() + timedelta(days=30),
                routed_at=self.clock.now(),
            ),
            code,
        )

        async def listed() -> list[dict[str, Any]]:
            r = await self.http.get(
                "/v1/consultations", params={"dossier": code}, headers=self.token(LEAD)
            )
            return list(r.json())

        return await eventually(listed, lambda x: len(x) == 3)

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
            for agency in (*NAMES, LEAD):
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
    code = "000.00.16.H29-261201-0001"
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
    assert "Kính gửi: Cảnh sát PCCC" in body["body_text"]
    assert "Thời hạn trả lời: 10 ngày làm việc" in body["body_text"]
    lead = (await h.http.get(f"/v1/consultations/{fire}", headers=h.token(LEAD))).json()
    assert lead["agency_id"] == FIRE


async def test_signed_replies_tampering_and_replay(h: Harness) -> None:
    code = "000.00.16.H29-261201-0002"
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
    assert r.status_code == 401 and "another agency" in r.json()["detail"]
    officer = h.signed(fire, FIRE, Decision.AGREE, signer=f"officer-{FIRE}")
    r = await h.http.post(url, headers=tok, json=officer)
    assert r.status_code == 401 and "may not sign" in r.json()["detail"]
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
    assert again.status_code == 409 and "final" in again.json()["detail"]

    # the same signer's nonce on another request: a valid signature, but a replay
    code2 = "000.00.16.H29-261201-0003"
    fire2 = {r["agency_id"]: r for r in await h.route(code2)}[FIRE]["id"]
    replay = h.signed(fire2, FIRE, Decision.AGREE, nonce="n-1")
    r = await h.http.post(f"/v1/consultations/{fire2}/reply", headers=tok, json=replay)
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "nonce"


async def test_ladder_deemed_consent_lapse_extension_and_round(h: Harness) -> None:
    code = "000.00.16.H29-261201-0004"
    req = {r["agency_id"]: r for r in await h.route(code)}
    assert (
        format_local(datetime.fromisoformat(req[ENVIRONMENT]["due_at"])) == "17:00 ngày 08/12/2026"
    )
    assert format_local(datetime.fromisoformat(req[PLANNING]["due_at"])) == "17:00 ngày 22/12/2026"
    fire = req[FIRE]["id"]
    r = await h.http.post(
        f"/v1/consultations/{fire}/reply",
        headers=h.token(FIRE),
        json=h.signed(fire, FIRE, Decision.AGREE),
    )
    assert r.status_code == 200

    h.clock.set(datetime(2026, 12, 11, 9, 0, tzinfo=VN_TZ))  # past the environment ladder
    await h.fire_all()
    env = await h.rt.pool.fetchrow(
        "SELECT * FROM requests WHERE id = $1", uuid.UUID(req[ENVIRONMENT]["id"])
    )
    assert env["status"] == "deemed_consent" and "02/2022/TT-BTNMT" in env["legal_basis"]
    assert (env["reminders_sent"], env["escalation_step"]) == (2, 3)
    trail = [
        a["action"]
        for a in await h.rt.pool.fetch(
            "SELECT action FROM audit WHERE request_id = $1 ORDER BY seq", env["id"]
        )
    ]
    assert trail == [
        "opened",
        "reminded",
        "reminded",
        "escalated",
        "escalated",
        "escalated",
        "deemed_consent",
    ]
    assert "consultation.round_completed" not in await h.events(code)

    planning = req[PLANNING]["id"]
    denied = await h.http.post(
        f"/v1/consultations/{planning}/extension",
        headers=h.token(FIRE),
        json={"by": {"value": 2}, "reason": "x" * 5},
    )
    assert denied.status_code == 403
    ext = await h.http.post(
        f"/v1/consultations/{planning}/extension",
        headers=h.token(LEAD),
        json={"by": {"value": 2}, "reason": "Chờ kết quả khảo sát hiện trạng"},
    )
    assert ext.status_code == 200, ext.text
    assert format_local(datetime.fromisoformat(ext.json()["due_at"])) == "17:00 ngày 24/12/2026"
    final_due = await h.rt.pool.fetchval(
        "SELECT due_at FROM timers WHERE owner = $1 AND kind = $2 AND status = 'pending'",
        planning,
        domain.FINAL,
    )
    assert format_local(final_due) == "17:00 ngày 28/12/2026"

    h.clock.set(datetime(2027, 1, 6, 9, 0, tzinfo=VN_TZ))
    await h.fire_all()
    p = await h.rt.pool.fetchrow("SELECT * FROM requests WHERE id = $1", uuid.UUID(planning))
    assert (p["status"], p["escalation_step"]) == ("lapsed", 3)
    events = await h.events(code)
    assert events.count("consultation.escalated") == 6
    assert events.count("consultation.deemed_consent") == 1
    assert "consultation.lapsed" in events and "consultation.round_completed" not in events

    r = await h.http.post(
        f"/v1/consultations/{planning}/reply",
        headers=h.token(PLANNING),
        json=h.signed(
            planning,
            PLANNING,
            Decision.DISAGREE,
            reasons="Vượt chiều cao tối đa của quy hoạch 1/500",
        ),
    )
    assert r.status_code == 200, r.text
    assert (await h.events(code))[-1] == "consultation.round_completed"
    completed = await h.rt.pool.fetchval(
        "SELECT payload FROM outbox WHERE key = $1 AND event_type = 'consultation.round_completed'",
        code,
    )
    assert '"deemed_consent"' in completed and '"disagree"' in completed


async def test_withdrawal_cancels_requests_and_completes_round(h: Harness) -> None:
    code = "000.00.16.H29-261201-0005"
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
    code = "000.00.16.H29-261201-0006"
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
