"""Issue 4 end to end: three agencies consulted on one dossier through the running
services; one replies signed, one is reminded, escalated and deemed to consent, one lapses
and keeps waiting; the round completes only when the rules allow, and routing moves on."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from contracts.common import Duration
from contracts.events import Decision
from services.consultation.domain import canonical_reply
from services.runtime.calendar import WorkingCalendar
from services.runtime.clock import FileOffsetClock
from tests.e2e.stack import Stack
from tests.e2e.test_walking_skeleton import PERMIT
from tests.helpers import eventually

pytestmark = pytest.mark.e2e
PLANNING, ENVIRONMENT, FIRE = "000.70.04.H29", "000.80.06.H29", "000.90.08.H29"
cal = WorkingCalendar()


async def token(http: httpx.AsyncClient, stack: Stack, agency: str, role: str) -> dict[str, str]:
    """A token on the services' clock (which the test moves), not the wall clock."""
    return stack.headers(
        agency, role, now=FileOffsetClock(stack.env_extra["LIENTHONG_CLOCK_FILE"]).now()
    )


async def test_three_agencies_reply_deemed_consent_and_lapse(
    stack: Stack, http: httpx.AsyncClient, clock: FileOffsetClock
) -> None:
    c = stack.url("consultation")
    op = await token(http, stack, "000.00.00.H29", "operator")
    r = await http.post(
        f"{stack.url('intake')}/v1/dossiers",
        json=PERMIT,
        headers=await token(http, stack, "000.00.16.H29", "officer"),
    )
    code, lookup = r.json()["code"], {"X-Lookup-Code": r.json()["lookup_code"]}

    async def requests() -> dict[str, dict[str, Any]]:
        # a fresh token each time: tokens expire on the services' clock, which we move
        fresh = await token(http, stack, "000.00.00.H29", "operator")
        r = await http.get(f"{c}/v1/consultations", params={"dossier": code}, headers=fresh)
        assert r.status_code == 200, r.text
        return {x["agency_id"]: x for x in r.json()}

    req = await eventually(requests, lambda x: len(x) == 3)

    # the fire police replies in time, signed by its department head
    key = Ed25519PrivateKey.generate()
    pub = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    r = await http.post(
        f"{c}/v1/signers",
        headers=op,
        json={
            "key_id": "pc07-truong-phong",
            "agency_id": FIRE,
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
        headers=await token(http, stack, FIRE, "department_head"),
        json={
            "decision": "agree_with_conditions",
            "conditions": conditions,
            "signer": "pc07-truong-phong",
            "nonce": nonce,
            "signature": base64.b64encode(sig).decode(),
        },
    )
    assert r.status_code == 200, r.text

    # the environment department stays silent past its whole ladder: deemed consent
    env_due = datetime.fromisoformat(req[ENVIRONMENT]["due_at"])
    clock.advance(cal.after(env_due, Duration(value=2)) + timedelta(minutes=1) - clock.now())
    req = await eventually(requests, lambda x: x[ENVIRONMENT]["status"] == "deemed_consent")
    assert "02/2022/TT-BTNMT" in req[ENVIRONMENT]["legal_basis"]
    assert req[ENVIRONMENT]["escalation_step"] == 3
    assert req[PLANNING]["status"] == "open"

    # planning stays silent too, but its template names no legal basis: it keeps waiting
    plan_due = datetime.fromisoformat(req[PLANNING]["due_at"])
    clock.advance(cal.after(plan_due, Duration(value=2)) + timedelta(minutes=1) - clock.now())
    req = await eventually(requests, lambda x: x[PLANNING]["status"] == "lapsed")
    assert req[PLANNING]["escalation_step"] == 3 and req[PLANNING]["legal_basis"] is None

    async def timeline() -> list[str]:
        r = await http.get(f"{stack.url('intake')}/v1/dossiers/{code}", headers=lookup)
        return [e["type"] for e in r.json()["timeline"]]

    types = await eventually(timeline, lambda t: "consultation.lapsed" in t)
    assert "consultation.round_completed" not in types
    assert types.count("consultation.escalated") == 6
    assert types.count("consultation.reminded") == 4
    assert types.count("consultation.deemed_consent") == 1

    async def notices() -> list[str]:
        r = await http.get(
            f"{stack.url('notification')}/v1/notifications",
            params={"dossier": code},
            headers=await token(http, stack, "000.50.03.H29", "department_head"),
        )
        return [n["kind"] for n in r.json() if n["status"] == "sent"]

    kinds = await eventually(notices, lambda k: k.count("consultation_escalation") == 6)
    assert kinds.count("consultation_reminder") == 4 and kinds.count("form01") == 1

    # a late, signed answer from planning completes the round; routing moves on
    op = await token(http, stack, "000.00.00.H29", "operator")
    assert (await http.get(f"{c}/v1/inbox", headers=op)).status_code == 200
    pkey = Ed25519PrivateKey.generate()
    ppub = base64.b64encode(pkey.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    await http.post(
        f"{c}/v1/signers",
        headers=op,
        json={
            "key_id": "qhkt-giam-doc",
            "agency_id": PLANNING,
            "person": "Giám đốc Sở QH-KT",
            "role": "agency_head",
            "public_key": ppub,
        },
    )
    planning, nonce = req[PLANNING]["id"], uuid.uuid4().hex
    sig = pkey.sign(
        canonical_reply(uuid.UUID(planning), Decision.AGREE, None, None, "qhkt-giam-doc", nonce)
    )
    r = await http.post(
        f"{c}/v1/consultations/{planning}/reply",
        headers=await token(http, stack, PLANNING, "agency_head"),
        json={
            "decision": "agree",
            "signer": "qhkt-giam-doc",
            "nonce": nonce,
            "signature": base64.b64encode(sig).decode(),
        },
    )
    assert r.status_code == 200, r.text
    types = await eventually(
        timeline,
        lambda t: "routing.dossier_advanced" in t and "consultation.round_completed" in t,
    )
    assert types.count("consultation.round_completed") == 1
    route = (
        await http.get(
            f"{stack.url('routing')}/v1/routes/{code}",
            headers=await token(http, stack, "000.50.03.H29", "department_head"),
        )
    ).json()
    assert route["state"] == "deciding"
    verify = (await http.get(f"{c}/v1/audit/verify", headers=op)).json()
    assert verify == {"ok": True}
