"""A dossier flows intake -> routing -> consultation -> notification over Kafka."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local import SmtpSink
from tests.e2e.stack import Stack
from tests.helpers import eventually

pytestmark = pytest.mark.e2e

PERMIT = {
    "procedure_code": "1.009972",
    "channel": 1,
    "applicant": {
        "name": "Công ty TNHH Xây dựng Minh Long",
        "object_type": 2,
        "id_number": "0101234567",
        "phone": "0912345678",
        "email": "minhlong@example.vn",
    },
    "summary": "Xin cấp phép xây dựng tòa nhà văn phòng 9 tầng",
    "documents": [{"code": "DDN"}, {"code": "QSDD"}, {"code": "BVTK"}],
}
EIA = {
    "procedure_code": "1.004249",
    "channel": 2,
    "applicant": {
        "name": "Công ty Cổ phần Môi trường Xanh",
        "object_type": 2,
        "id_number": "0312345678",
        "email": "xanh@example.vn",
    },
    "documents": [{"code": "VB-DN"}, {"code": "DTM"}, {"code": "BCNCKT"}],
}
# Requests opened at routing: the EIA's round follows its appraisal council (step 2), so
# none opens until the council's step is done (construction_land.yaml, LEP 2020 Art. 34).
CONSULTED = {"1.009972": 3, "1.004249": 0}
RECEIVING = {"1.009972": "000.00.01.H29", "1.004249": "000.00.01.H29"}
LEAD = {"1.009972": "000.00.06.H29", "1.004249": "000.00.08.H29"}


def desk(stack: Stack, body: dict[str, Any]) -> dict[str, str]:
    """A desk officer of the agency that receives ``body``'s procedure."""
    return stack.headers(RECEIVING[body["procedure_code"]])


async def test_one_dossier_end_to_end(
    stack: Stack, http: httpx.AsyncClient, smtp: SmtpSink, db: asyncpg.Connection
) -> None:
    auth = stack.headers("000.00.00.H29", "operator")
    started = time.monotonic()
    r = await http.post(
        f"{stack.url('intake')}/v1/dossiers", json=PERMIT, headers=desk(stack, PERMIT)
    )
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    assert r.json()["appointment_local"].startswith("17:00 ngày")
    applicant = {"X-Lookup-Code": r.json()["lookup_code"]}

    async def notifications(who: dict[str, str]) -> list[dict[str, Any]]:
        res = await http.get(
            f"{stack.url('notification')}/v1/notifications",
            params={"dossier": code},
            headers=who,
        )
        if res.status_code == 404:  # the receipt event has not reached notification yet
            return []
        assert res.status_code == 200, res.text
        # the applicant's email (opinion requests go to agencies; SMS and the portal, when
        # configured, carry the same notice on their own channels)
        return [n for n in res.json() if n["status"] == "sent" and n["channel"] == "email"]

    async def requests() -> list[dict[str, Any]]:
        res = await http.get(
            f"{stack.url('consultation')}/v1/consultations", params={"dossier": code}, headers=auth
        )
        return list(res.json())

    # the desk waits for the receipt: an applicant's code before notification knows the
    # dossier answers 401 and counts as a wrong guess (one answer for "no such dossier")
    await eventually(lambda: notifications(desk(stack, PERMIT)), lambda n: len(n) == 1, timeout=10)
    sent = await notifications(applicant)
    assert len(sent) == 1
    opened = await eventually(requests, lambda x: len(x) == 3, timeout=10)
    elapsed = time.monotonic() - started
    print(f"\nend-to-end: receipt and 3 requests {elapsed:.2f}s after submission")
    assert sent[0]["kind"] == "form01" and sent[0]["recipient"] == "minhlong@example.vn"
    assert code in sent[0]["body_text"] and "GIẤY TIẾP NHẬN HỒ SƠ" in sent[0]["body_text"]
    assert f"Mã tra cứu (giữ bí mật): {applicant['X-Lookup-Code']}" in sent[0]["body_text"]
    assert {x["agency_id"] for x in opened} == {"000.00.07.H29", "000.00.08.H29", "000.02.30.H29"}
    mail = await eventually(lambda: _async(smtp.for_dossier(code)), lambda m: len(m) == 1)
    assert mail[0]["To"] == "minhlong@example.vn"
    assert "Giấy tiếp nhận" in mail[0]["Subject"]

    async def timeline() -> list[str]:
        res = await http.get(f"{stack.url('intake')}/v1/dossiers/{code}", headers=applicant)
        return [e["type"] for e in res.json()["timeline"]]

    types = await eventually(timeline, lambda t: len(t) >= 6)
    assert types.count("consultation.requested") == 3
    for t in ("dossier.received", "routing.dossier_routed", "notification.sent"):
        assert t in types
    dossier = (await http.get(f"{stack.url('intake')}/v1/dossiers/{code}", headers=auth)).json()
    assert dossier["status"] == 4  # processing, once routed
    assert dossier["redacted"] and dossier["applicant"]["id_number"] == "*******567"
    route = (
        await http.get(
            f"{stack.url('routing')}/v1/routes/{code}",
            headers=stack.headers("000.00.06.H29", "department_head"),
        )
    ).json()
    assert route["lead_agency"] == "000.00.06.H29" and route["state"] == "processing"
    assert route["steps"][route["current_step"] - 1]["kind"] == "consult"  # the round is open

    # Every consumer has caught up: lag (end offset minus committed offset) falls to 0.
    for name in ("intake", "routing", "consultation", "notification"):

        async def ready(name: str = name) -> dict[str, Any]:
            return dict((await http.get(f"{stack.url(name)}/ready")).json())

        body = await eventually(ready, lambda b: b.get("lag", {}).get("total") == 0)
        assert body["lag"]["group"].endswith(f"lienthong-{name}")
        assert any(p["committed"] for p in body["lag"]["partitions"])
        metrics = (await http.get(f"{stack.url(name)}/metrics")).text
        assert f'lienthong_consumer_lag{{group="{body["lag"]["group"]}"' in metrics
        assert "lienthong_dead_letters_stored 0.0" in metrics  # nothing set aside
        assert "lienthong_timers_in_failed_state 0.0" in metrics

    # Each service connected and migrated as its own role, owner of its schema only.
    names = ("intake", "routing", "consultation", "notification", "console")
    users = await db.fetch(
        "SELECT DISTINCT usename FROM pg_stat_activity"
        " WHERE datname = current_database() AND usename LIKE 'lienthong\\_%'"
    )
    assert {r["usename"] for r in users} == {f"lienthong_{n}" for n in names}
    owners = await db.fetch(
        "SELECT schemaname, tableowner FROM pg_tables WHERE schemaname = ANY($1::text[])",
        list(names),
    )
    assert {r["schemaname"] for r in owners} == set(names)
    assert all(r["tableowner"] == f"lienthong_{r['schemaname']}" for r in owners)


async def _async(value: Any) -> Any:
    return value


async def test_bad_input_is_refused_clearly(stack: Stack, http: httpx.AsyncClient) -> None:
    officer = desk(stack, PERMIT)
    bad = {**PERMIT, "applicant": {**PERMIT["applicant"], "id_number": "12"}}
    r = await http.post(f"{stack.url('intake')}/v1/dossiers", json=bad, headers=officer)
    assert r.status_code == 422
    assert any(
        e["field"].startswith("applicant") and "digits" in e["reason"] for e in r.json()["errors"]
    )
    r = await http.post(
        f"{stack.url('intake')}/v1/dossiers",
        json={**PERMIT, "procedure_code": "x"},
        headers=officer,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "procedure_code"
    r = await http.post(f"{stack.url('intake')}/v1/dossiers", json=PERMIT)
    assert r.status_code == 401
    r = await http.get(f"{stack.url('notification')}/v1/notifications", headers=officer)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.dossier"
    r = await http.get(f"{stack.url('consultation')}/v1/consultations")
    assert r.status_code == 401


@pytest.mark.slow
async def test_sigkill_mid_batch_loses_and_doubles_nothing(
    stack: Stack, http: httpx.AsyncClient, db: asyncpg.Connection, smtp: SmtpSink
) -> None:
    """200 dossiers; routing, consultation and notification are SIGKILLed mid-batch and
    restarted. Every dossier ends with exactly one receipt and one request per agency."""
    sem = asyncio.Semaphore(16)

    async def submit(i: int) -> tuple[str, str]:
        body = PERMIT if i % 2 else EIA
        async with sem:
            r = await http.post(
                f"{stack.url('intake')}/v1/dossiers", json=body, headers=desk(stack, body)
            )
        assert r.status_code == 201, r.text
        return r.json()["code"], body["procedure_code"]

    first = await asyncio.gather(*(submit(i) for i in range(100)))
    for name in ("consultation", "notification", "routing"):
        stack.kill(name, signal.SIGKILL)
    second = await asyncio.gather(*(submit(i) for i in range(100, 200)))
    stack.start("consultation", "notification", "routing")
    stack.wait_ready("consultation", "notification", "routing")
    dossiers = dict(first + second)
    assert len(dossiers) == 200

    expected_requests = sum(CONSULTED[p] for p in dossiers.values())
    await eventually(
        lambda: db.fetchval("SELECT count(*) FROM consultation.requests"),
        lambda n: n >= expected_requests,
        timeout=90,
        interval=0.5,
    )
    await eventually(
        lambda: db.fetchval(
            "SELECT count(*) FROM notification.notifications WHERE status = 'sent'"
            " AND kind = 'form01' AND channel = 'email'"
        ),
        lambda n: n >= 200,
        timeout=90,
        interval=0.5,
    )
    receipts = await db.fetch(
        "SELECT dossier_code, count(*) AS n FROM notification.notifications"
        " WHERE kind = 'form01' AND channel = 'email' GROUP BY dossier_code"
    )
    assert {r["dossier_code"] for r in receipts} == set(dossiers)
    assert all(r["n"] == 1 for r in receipts)
    per_dossier = await db.fetch(
        "SELECT dossier_code, count(*) AS n, count(DISTINCT agency_id) AS agencies"
        " FROM consultation.requests GROUP BY dossier_code"
    )
    consulting = {c for c, p in dossiers.items() if CONSULTED[p]}  # EIA: after its council
    assert {r["dossier_code"] for r in per_dossier} == consulting
    for r in per_dossier:
        assert r["n"] == r["agencies"] == CONSULTED[dossiers[r["dossier_code"]]]
    routes = await db.fetchval("SELECT count(*) FROM routing.routes")
    assert routes == 200
    # Email is at-least-once: a crash between SMTP and commit may resend, with the same
    # Message-ID so mailboxes can drop it. Every dossier got its receipt.
    mailed = {m["X-Lienthong-Dossier"] for m in smtp.messages}
    assert mailed == set(dossiers)
    print(
        f"\nemails: {len(smtp.messages)} for 200 receipts "
        f"({len(smtp.messages) - 200} redelivered after SIGKILL)"
    )
