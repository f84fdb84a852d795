"""Issue 4 end to end: a building permit's three opinions through the running services.
The fire police replies signed; the other two stay silent and, under the Law on
Construction (Art. 102(1)), are deemed to consent at their deadline with no escalation
after it, one of them at a deadline the lead agency extended; then the round completes
and routing moves on. (Escalation and waiting without a legal basis: the integration
tests.) Requests are found by template, so the catalogue's agency ids may change."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.events import Decision
from services.consultation.domain import canonical_reply
from services.runtime.clock import FileOffsetClock
from tests.e2e.stack import Stack
from tests.e2e.test_walking_skeleton import PERMIT
from tests.helpers import eventually

pytestmark = pytest.mark.e2e
PLANNING, ENVIRONMENT, FIRE = (
    "planning-architecture-opinion",
    "environment-opinion",
    "fire-safety-opinion",
)


async def token(http: httpx.AsyncClient, stack: Stack, agency: str, role: str) -> dict[str, str]:
    """A token on the services' clock (which the test moves), not the wall clock."""
    return stack.headers(
        agency, role, now=FileOffsetClock(stack.env_extra["LIENTHONG_CLOCK_FILE"]).now()
    )


async def test_building_permit_opinions_reply_and_deemed_consent_at_the_deadline(
    stack: Stack, http: httpx.AsyncClient, clock: FileOffsetClock
) -> None:
    c = stack.url("consultation")
    op = await token(http, stack, "000.00.00.H29", "operator")
    r = await http.post(
        f"{stack.url('intake')}/v1/dossiers",
        json=PERMIT,
        headers=await token(http, stack, "000.00.01.H29", "officer"),
    )
    code, lookup = r.json()["code"], {"X-Lookup-Code": r.json()["lookup_code"]}

    async def requests() -> dict[str, dict[str, Any]]:
        # a fresh token each time: tokens expire on the services' clock, which we move
        fresh = await token(http, stack, "000.00.00.H29", "operator")
        r = await http.get(f"{c}/v1/consultations", params={"dossier": code}, headers=fresh)
        assert r.status_code == 200, r.text
        return {x["template_id"]: x for x in r.json()}

    req = await eventually(requests, lambda x: len(x) == 3)
    lead = req[FIRE]["lead_agency"]
    fire_agency, planning_agency = req[FIRE]["agency_id"], req[PLANNING]["agency_id"]

    # the fire police replies in time, signed by its department head
    key = Ed25519PrivateKey.generate()
    pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    r = await http.post(
        f"{c}/v1/signers",
        headers=op,
        json={
            "key_id": "pc07-truong-phong",
            "agency_id": fire_agency,
            "person": "Đại tá Lê Văn Hùng",
            "role": "department_head",
            "public_key": pub,
        },
    )
    assert r.status_code == 201
    fire = req[FIRE]["id"]
    nonce = uuid.uuid4().hex
    conditions = "Bố trí thêm họng nước chữa cháy ngoài nhà"
    sig = key.sign(
        canonical_reply(
            uuid.UUID(fire),
            Decision.AGREE_WITH_CONDITIONS,
            conditions,
            None,
            "pc07-truong-phong",
            nonce,
        )
    )
    r = await http.post(
        f"{c}/v1/consultations/{fire}/reply",
        headers=await token(http, stack, fire_agency, "department_head"),
        json={
            "decision": "agree_with_conditions",
            "conditions": conditions,
            "signer": "pc07-truong-phong",
            "nonce": nonce,
            "signature": base64.b64encode(sig).decode(),
        },
    )
    assert r.status_code == 200, r.text

    # the lead agency gives planning two more working days
    ext = await http.post(
        f"{c}/v1/consultations/{req[PLANNING]['id']}/extension",
        headers=await token(http, stack, lead, "department_head"),
        json={"by": {"value": 2}, "reason": "Chờ kết quả khảo sát hiện trạng"},
    )
    assert ext.status_code == 200, ext.text
    plan_due = datetime.fromisoformat(ext.json()["due_at"])

    # the environment department stays silent: deemed consent at its deadline, no ladder
    env_due = datetime.fromisoformat(req[ENVIRONMENT]["due_at"])
    assert plan_due > env_due
    clock.advance(env_due + timedelta(minutes=1) - clock.now())
    req = await eventually(requests, lambda x: x[ENVIRONMENT]["status"] == "deemed_consent")
    assert "Điều 102" in req[ENVIRONMENT]["legal_basis"]
    assert req[ENVIRONMENT]["escalation_step"] == 0
    assert req[PLANNING]["status"] == "open"  # its deadline was extended

    # planning stays silent too: deemed consent at the extended deadline
    clock.advance(plan_due + timedelta(minutes=1) - clock.now())
    req = await eventually(requests, lambda x: x[PLANNING]["status"] == "deemed_consent")
    assert req[PLANNING]["escalation_step"] == 0 and req[PLANNING]["agency_id"] == planning_agency

    async def timeline() -> list[str]:
        r = await http.get(f"{stack.url('intake')}/v1/dossiers/{code}", headers=lookup)
        return [e["type"] for e in r.json()["timeline"]]

    types = await eventually(
        timeline,
        lambda t: "routing.dossier_advanced" in t and "consultation.round_completed" in t,
    )
    assert types.count("consultation.round_completed") == 1
    assert types.count("consultation.deemed_consent") == 2
    assert "consultation.escalated" not in types and "consultation.lapsed" not in types
    assert types.count("consultation.extended") == 1
    reminded = types.count("consultation.reminded")

    async def notices() -> list[str]:
        r = await http.get(
            f"{stack.url('notification')}/v1/notifications",
            params={"dossier": code},
            headers=await token(http, stack, lead, "department_head"),
        )
        # the applicant's by email (SMS and the portal, when configured, have their own)
        return [
            n["kind"]
            for n in r.json()
            if n["status"] == "sent" and n["channel"] in ("email", "agency")
        ]

    kinds = await eventually(notices, lambda k: k.count("consultation_reminder") == reminded)
    assert "consultation_escalation" not in kinds and kinds.count("form01") == 1
    assert kinds.count("consultation_request") == 3  # each asked agency told what and by when

    route = (
        await http.get(
            f"{stack.url('routing')}/v1/routes/{code}",
            headers=await token(http, stack, lead, "department_head"),
        )
    ).json()
    assert route["state"] == "processing"
    assert [s["status"] for s in route["steps"][:3]] == ["done", "done", "active"]
    assert route["steps"][2]["kind"] == "appraise"  # on to the appraisal after the round
    op = await token(http, stack, "000.00.00.H29", "operator")
    verify = (await http.get(f"{c}/v1/audit/verify", headers=op)).json()
    assert verify == {"ok": True}
