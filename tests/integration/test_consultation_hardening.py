"""Consultation under attack and under load, on the real broker and PostgreSQL: concurrent
replies and timers on one dossier, a withdrawal or stop overtaking the routing, the inbox
cursor, bad input answered 4xx, and a reply signed by a non-Python (Node) client."""

# The harness fixture ``h`` comes from test_consultation; tests take it by that name.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from contracts.agencies import default_book
from contracts.envelope import new_envelope
from contracts.events import (
    ConsultTarget,
    Decision,
    DossierRouted,
    DossierStopped,
    DossierWithdrawn,
)
from contracts.topics import topic_for
from services.runtime import auth
from services.runtime.timers import TimerScheduler
from tests.helpers import eventually, kafka_kwargs
from tests.integration.test_consultation import (  # noqa: F401 (h is a fixture)
    ENVIRONMENT,
    FIRE,
    LEAD,
    NAMES,
    PLANNING,
    TEMPLATES,
    Harness,
    h,
)

NODE_SIGNER = Path(__file__).resolve().parents[1] / "node" / "signer"
OUTCOME_EVENTS = ("consultation.replied", "consultation.deemed_consent", "consultation.cancelled")


def routed(h: Harness, code: str) -> DossierRouted:
    return DossierRouted(
        code=code,
        procedure_code="1.009972",
        procedure_version=1,
        procedure_name="Cấp giấy phép xây dựng",
        lead_agency=LEAD,
        lead_agency_name=default_book().get(LEAD).name,
        consult=tuple(
            ConsultTarget(agency_id=a, agency_name=NAMES[a], template_id=TEMPLATES[a])
            for a in NAMES
        ),
        appointment_at=h.clock.now() + timedelta(days=30),
        routed_at=h.clock.now(),
    )


async def deadlocks(h: Harness) -> int:
    n: int = await h.rt.pool.fetchval(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    )
    return n


# --- 1. one lock order per dossier -----------------------------------------------------------


async def test_concurrent_replies_and_timers_on_one_dossier(h: Harness) -> None:
    """24 signed replies (8 per request) at once, while two schedulers fire every
    reminder, escalation and final lapse of the same requests: no 500, no deadlock, one
    outcome per request, the round completed once."""
    assert h.rt.scheduler is not None
    second = TimerScheduler(h.rt.pool, h.clock, h.rt.scheduler.handlers, batch_size=2, replica="b")
    totals: Counter[int] = Counter()
    before = await deadlocks(h)
    for n in range(3):  # three dossiers, one after another, for more interleavings
        code = f"000.00.01.H29-261201-09{n:02d}"
        requests = {r["agency_id"]: r["id"] for r in await h.route(code)}
        h.clock.advance(timedelta(days=60))  # every timer of the three requests is due

        async def answer(requests: dict[str, str], agency: str, i: int) -> int:
            rid = requests[agency]
            decision = Decision.AGREE if i % 2 else Decision.DISAGREE
            body = h.signed(rid, agency, decision, reasons="Không phù hợp quy hoạch")
            r = await h.http.post(
                f"/v1/consultations/{rid}/reply", headers=h.token(agency), json=body
            )
            return r.status_code

        async def drain(s: TimerScheduler) -> None:
            while await s.fire_due():
                pass

        results = await asyncio.gather(
            *(answer(requests, a, i) for i in range(8) for a in requests),
            drain(h.rt.scheduler),
            drain(second),
        )
        statuses = [s for s in results if s is not None]
        assert len(statuses) == 24
        totals.update(statuses)
        assert all(s in (200, 409) for s in statuses), statuses

        rows = await h.rt.pool.fetch(
            "SELECT id, status FROM requests WHERE dossier_code = $1", code
        )
        assert {r["status"] for r in rows} <= {"replied", "deemed_consent"}
        events = await h.rt.pool.fetch(
            "SELECT event_type, payload::jsonb -> 'data' ->> 'request_id' AS rid FROM outbox"
            " WHERE key = $1 ORDER BY id",
            code,
        )
        per_request = Counter(e["rid"] for e in events if e["event_type"] in OUTCOME_EVENTS)
        assert sorted(per_request.values()) == [1, 1, 1], per_request
        assert [e["event_type"] for e in events].count("consultation.round_completed") == 1
        replied = sum(1 for r in rows if r["status"] == "replied")
        assert statuses.count(200) == replied  # one accepted reply per replied request
        failed = await h.rt.pool.fetchval(
            "SELECT count(*) FROM timers WHERE status = 'failed' OR last_error LIKE '%eadlock%'"
        )
        assert failed == 0
        chain = await h.http.get("/v1/audit/verify", headers=h.token("000.00.00.H29", "operator"))
        assert chain.json() == {"ok": True}
    assert await deadlocks(h) == before
    print(f"\n72 concurrent replies over 3 dossiers with timers firing: {dict(totals)}")


# --- 2. a withdrawal or stop that overtakes the routing -----------------------------------------


async def _applied(h: Harness, event_type: str, n: int) -> None:
    async def count() -> int:
        c: int = await h.rt.pool.fetchval(
            "SELECT count(*) FROM inbox WHERE event_type = $1", event_type
        )
        return c

    await eventually(count, lambda c: c >= n)


@pytest.mark.parametrize("end", ["withdrawn", "stopped"])
async def test_end_before_routing_opens_nothing(h: Harness, end: str) -> None:
    code = f"000.00.01.H29-261201-08{0 if end == 'withdrawn' else 1:02d}"
    if end == "withdrawn":
        await h.publish(DossierWithdrawn(code=code, withdrawn_at=h.clock.now()), code)
    else:
        await h.publish(
            DossierStopped(code=code, reason="Hồ sơ giả mạo", stopped_at=h.clock.now()), code
        )
    await _applied(h, f"dossier.{end}", 1)
    rnd = await h.rt.pool.fetchrow("SELECT * FROM rounds WHERE dossier_code = $1", code)
    assert rnd["ended_at"] is not None and rnd["ended_by"] == f"dossier.{end}"

    await h.publish(routed(h, code), code)  # routing catches up late
    await _applied(h, "routing.dossier_routed", 1)
    assert (
        await h.rt.pool.fetchval("SELECT count(*) FROM requests WHERE dossier_code = $1", code) == 0
    )
    assert (
        await h.rt.pool.fetchval(
            "SELECT count(*) FROM timers WHERE owner LIKE '%'"
            " AND owner IN (SELECT id::text FROM requests WHERE dossier_code = $1)",
            code,
        )
        == 0
    )
    assert await h.rt.pool.fetchval("SELECT count(*) FROM timers WHERE status = 'pending'") == 0
    assert await h.events(code) == []
    assert (await h.http.get("/v1/inbox", headers=h.token(FIRE))).json() == []


async def test_end_after_routing_cancels_and_completes(h: Harness) -> None:
    code = "000.00.01.H29-261201-0802"
    await h.route(code)
    await h.publish(
        DossierStopped(code=code, reason="Hồ sơ giả mạo", stopped_at=h.clock.now()), code
    )

    async def events() -> list[str]:
        return await h.events(code)

    ev = await eventually(events, lambda e: "consultation.round_completed" in e)
    assert ev.count("consultation.cancelled") == 3
    assert await h.rt.pool.fetchval("SELECT count(*) FROM timers WHERE status = 'pending'") == 0
    await h.publish(routed(h, code), code)  # a re-delivered or repeated routing
    await _applied(h, "routing.dossier_routed", 2)
    assert (await h.events(code)).count("consultation.requested") == 3


# --- 3. the inbox cursor -----------------------------------------------------------------------


async def _seed(h: Harness, n: int, first: int, due_base: Any) -> None:
    await h.rt.pool.execute(
        """
        INSERT INTO requests(id, dossier_code, lead_agency, lead_agency_name, agency_id,
            agency_name, template_id, template_version, subject, body_text, body_html,
            requested_at, due_at)
        SELECT gen_random_uuid(), '000.00.01.H29-261202-' || lpad(g::text, 4, '0'),
               $4, 'Sở Xây dựng', $3, 'Cảnh sát PCCC', 'fire-safety-opinion', 1,
               's', 't', 'h', $1::timestamptz, $1::timestamptz + ((g % 7) * interval '1 hour')
        FROM generate_series($2::int, $2::int + $5::int - 1) g
        """,
        due_base,
        first,
        FIRE,
        LEAD,
        n,
    )


async def test_inbox_pages_with_a_cursor_stable_under_inserts(h: Harness) -> None:
    base = h.clock.now() + timedelta(days=3)
    await _seed(h, 45, 1, base)  # ties on due_at: the id breaks them
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        r = await h.http.get("/v1/inbox", params=params, headers=h.token(FIRE))
        assert r.status_code == 200, r.text
        seen += r.json()
        pages += 1
        cursor = r.headers.get("x-next-cursor")
        if pages == 2:
            # Inserted between pages: some due later than the cursor (must appear), some
            # sooner (already behind it: a fresh read shows them; this one must not shift).
            await _seed(h, 14, 1000, base + timedelta(minutes=30))
        if cursor is None:
            break
        assert 'rel="next"' in r.headers["link"]
    keys = [(v["due_at"], v["id"]) for v in seen]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert pages >= 5
    everything = await h.rt.pool.fetch("SELECT id, due_at FROM requests WHERE agency_id = $1", FIRE)
    assert len(everything) == 59
    # Everything due after the cursor when the rows were inserted was reached.
    due, rid = keys[19]
    pos = (datetime.fromisoformat(due), uuid.UUID(rid))
    after = {str(r["id"]) for r in everything if (r["due_at"], r["id"]) > pos}
    assert after <= {v["id"] for v in seen}
    assert len(seen) > 45  # some of the rows inserted meanwhile came after the cursor
    # A fresh walk reaches every request.
    fresh: list[str] = []
    cursor = None
    while True:
        params = {"limit": 25} | ({"cursor": cursor} if cursor else {})
        r = await h.http.get("/v1/inbox", params=params, headers=h.token(FIRE))
        fresh += [v["id"] for v in r.json()]
        cursor = r.headers.get("x-next-cursor")
        if cursor is None:
            break
    assert sorted(fresh) == sorted(str(r["id"]) for r in everything)
    bad = await h.http.get("/v1/inbox", params={"cursor": "nonsense!"}, headers=h.token(FIRE))
    assert bad.status_code == 422 and _field(bad) == "cursor"


# --- 4. bad input answers 4xx naming the field ----------------------------------------------------


def _field(r: httpx.Response) -> str:
    """The field the error body names (``{detail, errors: [{field, reason}]}``)."""
    errors = r.json()["errors"]
    assert errors and errors[0]["reason"], r.text
    return str(errors[0]["field"]).split(".")[-1]


async def test_bad_input_is_a_422_naming_the_field(h: Harness) -> None:
    op = h.token("000.00.00.H29", role=auth.OPERATOR)
    good = base64.b64encode(
        Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ).decode()
    signer = {
        "key_id": "key-x",
        "agency_id": FIRE,
        "person": "Trần Thị Bình",
        "role": "department_head",
        "public_key": good,
    }
    cases = [
        ({"public_key": "khóa-công-khai-tiếng-Việt"}, "public_key"),
        ({"public_key": "é" * 44}, "public_key"),
        ({"public_key": "not base64 at all"}, "public_key"),
        ({"public_key": base64.b64encode(b"x" * 31).decode()}, "public_key"),
        ({"public_key": "A" * 10_000}, "public_key"),
        ({"person": "Trần\x00Bình"}, "person"),
        ({"key_id": "key\x00x"}, "key_id"),
        ({"key_id": "k" * 201}, "key_id"),
        ({"person": "Trần \ud800 Bình"}, "person"),
    ]
    for change, field in cases:
        r = await h.http.post(
            "/v1/signers",
            headers=op | {"content-type": "application/json"},
            content=json.dumps(signer | change),  # ASCII JSON: a lone surrogate as \ud800
        )
        assert r.status_code == 422, (change, r.status_code, r.text)
        assert _field(r) == field, r.text

    code = "000.00.01.H29-261201-0810"
    rid = {r["agency_id"]: r["id"] for r in await h.route(code)}[FIRE]
    for field in ("reasons", "conditions", "signer", "nonce", "signature"):
        for bad in ("x\x00y", "x\ud800y"):
            body = h.signed(rid, FIRE, Decision.DISAGREE, reasons="Thiếu hồ sơ")
            body[field] = bad
            r = await h.http.post(
                f"/v1/consultations/{rid}/reply",
                headers=h.token(FIRE) | {"content-type": "application/json"},
                content=json.dumps(body),  # ensure_ascii: the lone surrogate travels as \ud800
            )
            assert r.status_code == 422, (field, bad, r.text)
            assert _field(r) == field
    body = h.signed(rid, FIRE, Decision.DISAGREE, reasons="x" * 5001)
    r = await h.http.post(f"/v1/consultations/{rid}/reply", headers=h.token(FIRE), json=body)
    assert r.status_code == 422 and _field(r) == "reasons"

    r = await h.http.post(
        f"/v1/consultations/{rid}/extension",
        headers=h.token(LEAD),
        json={"by": {"value": 2}, "reason": "chờ\x00"},
    )
    assert r.status_code == 422 and _field(r) == "reason"
    r = await h.http.get("/v1/consultations", params={"dossier": "000\x00"}, headers=h.token(LEAD))
    assert r.status_code == 422 and _field(r) == "dossier"
    # Nothing above changed the request.
    r = await h.http.get(f"/v1/consultations/{rid}", headers=h.token(FIRE))
    assert r.status_code == 200 and r.json()["status"] == "open"


# --- 5. a reply signed by a non-Python client ---------------------------------------------------


def node_sign(fields: dict[str, Any]) -> dict[str, Any]:
    assert (NODE_SIGNER / "node_modules" / "canonicalize").is_dir(), (
        "tests/node/signer is not installed: run `make install` (npm ci)"
    )
    out = subprocess.run(
        ["node", str(NODE_SIGNER / "sign.mjs")],
        input=json.dumps(fields),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


async def test_a_reply_signed_in_node_is_accepted(h: Harness) -> None:
    op = h.token("000.00.00.H29", role=auth.OPERATOR)
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    r = await h.http.post(
        "/v1/signers",
        headers=op,
        json={
            "key_id": "node-signer-pccc",
            "agency_id": FIRE,
            "person": "Lê Văn Cường",
            "role": "department_head",
            "public_key": base64.b64encode(pub).decode(),
        },
    )
    assert r.status_code == 201, r.text
    code = "000.00.01.H29-261201-0820"
    requests = {r["agency_id"]: r["id"] for r in await h.route(code)}
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    # Text where hand-made canonical JSON goes wrong: non-ASCII, quotes, escapes, an
    # astral character and U+2028.
    conditions = 'Bổ sung "phương án PCCC" \\ bản vẽ\ntầng hầm 😀 \u2028 đạt QCVN 06:2022/BXD'
    fields = {
        "private_key_pem": pem,
        "request_id": requests[FIRE],
        "decision": "agree_with_conditions",
        "conditions": conditions,
        "reasons": None,
        "signer": "node-signer-pccc",
        "nonce": uuid.uuid4().hex,
    }
    body = await asyncio.to_thread(node_sign, fields)
    url = f"/v1/consultations/{requests[FIRE]}/reply"
    # Content changed after signing does not verify.
    tampered = body | {"conditions": conditions.replace("06:2022", "06:2020")}
    r = await h.http.post(url, headers=h.token(FIRE), json=tampered)
    assert r.status_code == 401 and _field(r) == "signature"

    r = await h.http.post(url, headers=h.token(FIRE), json=body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "replied" and r.json()["decision"] == "agree_with_conditions"
    r = await h.http.post(url, headers=h.token(FIRE), json=body)
    assert r.status_code == 409  # the same body again: closed, and its nonce is spent


async def test_two_schedulers_and_replies_across_many_dossiers(h: Harness) -> None:
    """Two replicas' timer batches that each hold several rounds, while replies arrive:
    batches lock dossiers in different orders, yet nothing deadlocks; a timer that waited
    too long for a round is retried and every request ends with one outcome."""
    assert h.rt.scheduler is not None
    codes = [f"000.00.01.H29-261201-07{n:02d}" for n in range(20)]
    producer = AIOKafkaProducer(bootstrap_servers=h.bootstrap, **kafka_kwargs())
    await producer.start()
    try:
        for code in codes:
            env = new_envelope(
                routed(h, code), subject=code, producer="test", occurred_at=h.clock.now()
            )
            await producer.send_and_wait(
                topic_for(env.type).full_name(h.prefix),
                env.model_dump_json().encode(),
                key=code.encode(),
            )
    finally:
        await producer.stop()

    async def opened() -> int:
        n: int = await h.rt.pool.fetchval("SELECT count(*) FROM requests")
        return n

    await eventually(opened, lambda n: n == 60, timeout=60)
    rows = await h.rt.pool.fetch("SELECT id, agency_id FROM requests ORDER BY id")
    before = await deadlocks(h)
    h.clock.advance(timedelta(days=60))
    schedulers = [
        TimerScheduler(h.rt.pool, h.clock, h.rt.scheduler.handlers, batch_size=5, replica=str(i))
        for i in range(2)
    ]

    async def drain(s: TimerScheduler) -> None:
        while await s.fire_due():
            pass

    async def answer(rid: str, agency: str) -> int:
        body = h.signed(rid, agency, Decision.DISAGREE, reasons="Không đạt")
        r = await h.http.post(f"/v1/consultations/{rid}/reply", headers=h.token(agency), json=body)
        return r.status_code

    results = await asyncio.gather(
        *(drain(s) for s in schedulers),
        *(answer(str(r["id"]), r["agency_id"]) for r in rows[::2]),
    )
    statuses = [s for s in results if s is not None]
    assert all(s in (200, 409) for s in statuses), statuses
    for _ in range(20):  # timers that waited too long for a round come back later
        pending = await h.rt.pool.fetchval("SELECT count(*) FROM timers WHERE status = 'pending'")
        if not pending:
            break
        h.clock.advance(timedelta(minutes=10))
        await asyncio.gather(*(drain(s) for s in schedulers))
    assert await h.rt.pool.fetchval("SELECT count(*) FROM timers WHERE status = 'pending'") == 0
    assert await h.rt.pool.fetchval("SELECT count(*) FROM timers WHERE status = 'failed'") == 0
    assert (
        await h.rt.pool.fetchval("SELECT count(*) FROM timers WHERE last_error LIKE '%eadlock%'")
        == 0
    )
    outcomes = await h.rt.pool.fetch(
        "SELECT payload::jsonb -> 'data' ->> 'request_id' AS rid, count(*) AS n FROM outbox"
        " WHERE event_type = ANY($1) GROUP BY 1",
        list(OUTCOME_EVENTS),
    )
    settled = {r["rid"]: r["n"] for r in outcomes}
    open_ = await h.rt.pool.fetchval(
        "SELECT count(*) FROM requests WHERE status IN ('open', 'lapsed')"
    )
    assert set(settled.values()) == {1} and len(settled) + open_ == 60
    completed = await h.rt.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_type = 'consultation.round_completed'"
    )
    done = await h.rt.pool.fetchval("SELECT count(*) FROM rounds WHERE completed_at IS NOT NULL")
    assert completed == done
    assert await deadlocks(h) == before
    retried = await h.rt.pool.fetchval("SELECT count(*) FROM timers WHERE attempts > 0")
    print(
        f"\n2 schedulers x 20 dossiers with {len(statuses)} replies: {Counter(statuses)},"
        f" {retried} timers retried after a lock timeout, 0 deadlocks"
    )
