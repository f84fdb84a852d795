"""The operator console on the real broker and PostgreSQL, every service in process: read
models fed by every topic, agency scoping and masking, a poisoned event in the dead
letters and replayed fixed until its consumer accepts it, the audit, and a rebuild from
the log that equals the live read models."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from contracts.topics import NOTIFICATION
from deploy.local import SmtpSink
from services.console.app import SPEC as CONSOLE
from services.console.rebuild import rebuild
from services.consultation.app import SPEC as CONSULTATION
from services.intake.app import SPEC as INTAKE
from services.notification.app import SPEC as NOTIFICATION_SPEC
from services.routing.app import SPEC as ROUTING
from services.runtime.service import create_app
from tests.helpers import eventually, kafka_kwargs, poisoned_receipt, staff
from tests.integration.test_authorization import PERMIT, settings_for

DESK, LEAD, OTHER, OPS = "000.00.01.H29", "000.00.06.H29", "000.20.01.H29", "000.00.00.H29"
OPERATOR = staff(OPS, "operator")


@pytest.fixture
async def world(
    kafka_bootstrap: str, database_url: str, topic_prefix: str
) -> AsyncIterator[dict[str, Any]]:
    sink = SmtpSink()
    sink.start()
    specs = (INTAKE, ROUTING, CONSULTATION, NOTIFICATION_SPEC, CONSOLE)
    apps = {
        s.name: create_app(
            s, settings_for(s.name, kafka_bootstrap, database_url, topic_prefix, sink.port)
        )
        for s in specs
    }
    try:
        async with contextlib.AsyncExitStack() as stack:
            clients = {}
            for n, app in apps.items():
                await stack.enter_async_context(app.router.lifespan_context(app))
                clients[n] = await stack.enter_async_context(
                    httpx.AsyncClient(
                        transport=httpx.ASGITransport(app=app), base_url=f"http://{n}", timeout=30
                    )
                )
            yield {
                "clients": clients,
                "rt": {n: a.state.runtime for n, a in apps.items()},
                "prefix": topic_prefix,
                "bootstrap": kafka_bootstrap,
            }
    finally:
        sink.stop()


async def test_console_follows_a_dossier_dead_letters_replay_and_rebuild(
    world: dict[str, Any],
) -> None:
    clients, rt = world["clients"], world["rt"]
    console = clients["console"]
    r = await clients["intake"].post("/v1/dossiers", json=PERMIT, headers=staff(DESK))
    assert r.status_code == 201, r.text
    code = r.json()["code"]

    async def requests() -> int:
        n: int = await rt["console"].pool.fetchval(
            "SELECT count(*) FROM opinion_requests WHERE dossier_code = $1", code
        )
        return n

    await eventually(requests, lambda n: n == 3, timeout=60)
    row = await eventually(
        lambda: rt["console"].pool.fetchrow("SELECT * FROM dossiers WHERE code = $1", code),
        lambda d: d is not None and d["state"] == "processing" and d["channel"] is not None,
        timeout=60,
    )
    assert row["lead_agency"] == LEAD and row["receiving_agency"] == DESK
    assert row["online"] is False and row["appointment_at"] is not None

    # the timeline: every service's events, in order, causes linked
    t = (await console.get(f"/v1/console/dossiers/{code}", headers=OPERATOR)).json()
    types = [e["type"] for e in t["events"]]
    assert types[0] == "dossier.received" and "routing.dossier_routed" in types
    assert "consultation.requested" in types and t["links"]
    assert "Minh Long" not in json.dumps(t) and "0912345678" not in json.dumps(t)
    received = t["events"][0]["data"]["applicant"]
    assert received["phone"] == "*******678"

    # agency scoping: the lead agency sees the dossier, a stranger does not
    lead = staff(LEAD, "department_head")
    assert (await console.get(f"/v1/console/dossiers/{code}", headers=lead)).status_code == 200
    stranger = staff(OTHER, "department_head")
    assert (await console.get(f"/v1/console/dossiers/{code}", headers=stranger)).status_code == 403
    mine = (await console.get("/v1/console/events", headers=stranger)).json()
    assert mine["items"] == []
    r = await console.get("/v1/console/events", params={"agency": LEAD}, headers=stranger)
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "agency"
    page = (
        await console.get("/v1/console/events", params={"dossier": code}, headers=OPERATOR)
    ).json()
    after = (
        await console.get("/v1/console/events", params={"after": 0, "limit": 2}, headers=OPERATOR)
    ).json()
    assert len(after["items"]) == 2 and after["next_after"] == after["items"][-1]["seq"]
    assert {e["dossier_code"] for e in page["items"]} == {code}
    r = await console.get("/v1/console/events", params={"type": "bad type"}, headers=OPERATOR)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.type"

    # the live stream (bounded here by ``seconds``): the dossier's events with their cursor
    r = await console.get(
        "/v1/console/stream",
        params={"dossier": code, "after": 0, "seconds": 1},
        headers=OPERATOR,
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in r.text.split("\n\n") if f.startswith("id:")]
    assert frames and all(code in f for f in frames)
    assert any("dossier.received" in f for f in frames)  # topics interleave in the log
    r = await console.get("/v1/console/stream", params={"seconds": 0}, headers=OPERATOR)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.seconds"
    r = await console.get("/v1/console/stream", params={"agency": LEAD}, headers=stranger)
    assert r.status_code == 403

    # a poisoned event on the notification topic: intake refuses it with field errors
    event_id = uuid.uuid4()
    envelope = poisoned_receipt(code, event_id)
    producer = AIOKafkaProducer(bootstrap_servers=world["bootstrap"], **kafka_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(
            NOTIFICATION.full_name(world["prefix"]),
            json.dumps(envelope).encode(),
            key=code.encode(),
        )
    finally:
        await producer.stop()
    dls = await eventually(
        lambda: console.get("/v1/console/dead-letters", headers=OPERATOR),
        lambda r: any(d["event_id"] == str(event_id) for d in r.json()),
        timeout=60,
    )
    entry = next(d for d in dls.json() if d["event_id"] == str(event_id))
    assert entry["consumer"].endswith("lienthong-intake") and entry["reason"] == "invalid"
    assert entry["errors"][0]["field"].endswith("recipient"), entry["errors"]
    assert entry["status"] == "open" and entry["dossier_code"] == code
    detail = (await console.get(f"/v1/console/dead-letters/{entry['id']}", headers=OPERATOR)).json()
    assert detail["payload_revealed"] is False and detail["payload"]["data"]["code"] == code
    # only operators act
    r = await console.post(
        f"/v1/console/dead-letters/{entry['id']}/replay", json={"reason": "x" * 5}, headers=lead
    )
    assert r.status_code == 403
    # a fixed payload that is still wrong: 422 naming the field
    bad = {**envelope, "data": {**envelope["data"], "recipient": 5}}
    r = await console.post(
        f"/v1/console/dead-letters/{entry['id']}/replay",
        json={"reason": "Sửa người nhận", "payload": bad},
        headers=OPERATOR,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "payload.data.recipient"
    # a fix that is another event (its id changed): refused before it goes anywhere
    other = {**envelope, "event_id": str(uuid.uuid4()), "data": {**envelope["data"]}}
    other["data"]["recipient"] = "a@example.vn"
    r = await console.post(
        f"/v1/console/dead-letters/{entry['id']}/replay",
        json={"reason": "Sửa người nhận", "payload": other},
        headers=OPERATOR,
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "payload.event_id"
    # replayed unchanged, intake refuses it again: the broker took it, yet it failed
    r = await console.post(
        f"/v1/console/dead-letters/{entry['id']}/replay",
        json={"reason": "Thử lại nguyên trạng"},
        headers=OPERATOR,
    )
    assert r.status_code == 202, r.text
    await eventually(
        lambda: console.get(f"/v1/console/dead-letters/{entry['id']}", headers=OPERATOR),
        lambda r: r.json()["status"] == "replay_failed",
        timeout=60,
    )
    fixed = {**envelope, "data": {**envelope["data"], "recipient": "a@example.vn"}}
    r = await console.post(
        f"/v1/console/dead-letters/{entry['id']}/replay",
        json={"reason": "Sửa người nhận", "payload": fixed},
        headers=OPERATOR,
    )
    assert r.status_code == 202, r.text
    assert r.json()["result"] == "pending"
    await eventually(
        lambda: rt["intake"].pool.fetchval(
            "SELECT count(*) FROM inbox WHERE event_id = $1", event_id
        ),
        lambda n: n == 1,
        timeout=60,
    )  # the consumer that refused it accepts it now
    detail = (await console.get(f"/v1/console/dead-letters/{entry['id']}", headers=OPERATOR)).json()
    assert detail["status"] == "replayed" and detail["actions"][1]["person"] == f"operator@{OPS}"
    assert not detail["actions"][0]["edited"] and detail["actions"][1]["edited"]
    assert detail["actions"][1]["result"] == "published"
    r = await console.post(
        f"/v1/console/dead-letters/{entry['id']}/discard",
        json={"reason": "Đã xử lý"},
        headers=OPERATOR,
    )
    assert r.status_code == 409
    # reading the whole payload is audited
    whole = await console.get(
        f"/v1/console/dead-letters/{entry['id']}", params={"reveal": "true"}, headers=OPERATOR
    )
    assert whole.json()["payload_revealed"]
    assert await rt["console"].pool.fetchval("SELECT count(*) FROM pii_reads") == 1

    # the other boards answer
    for path in ("/v1/console/status", "/v1/console/lag", "/v1/console/sla", "/v1/console/figures"):
        r = await console.get(
            path, headers=OPERATOR, params={"hours": 720} if "sla" in path else {}
        )
        assert r.status_code == 200, (path, r.text)
    sla = (await console.get("/v1/console/sla", params={"hours": 720}, headers=OPERATOR)).json()
    assert any(i["dossier_code"] == code for i in sla["dossiers"])
    lag = (await console.get("/v1/console/lag", headers=OPERATOR)).json()
    assert {p["service"] for p in lag["partitions"]} >= {"intake", "routing", "console"}

    # pages render for a signed-in operator
    for path in (
        "/",
        f"/dossiers/{code}",
        "/lag",
        "/dead-letters",
        f"/dead-letters/{entry['id']}",
        "/sla",
        "/figures",
    ):
        r = await console.get(path, headers={**OPERATOR, "accept": "text/html"})
        assert r.status_code == 200, (path, r.text[:300])
    r = await console.get("/", headers={"accept": "text/html"})
    assert r.status_code == 401 and "Đăng nhập" in r.text
    # a filter form with fields left empty is no filter (it answered 422 as raw JSON)
    html = {**OPERATOR, "accept": "text/html"}
    r = await console.get("/?type=&agency=&dossier=", headers=html)
    assert r.status_code == 200, r.text[:300]
    r = await console.get("/v1/console/events?type=&agency=&dossier=", headers=OPERATOR)
    assert r.status_code == 200 and r.json()["items"]
    # a wrong field is a page for a browser, in Vietnamese, naming the field; JSON for the API
    r = await console.get("/?type=bad type", headers=html)
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "Dữ liệu không hợp lệ" in r.text and "Loại sự kiện" in r.text
    r = await console.get("/v1/console/events?type=bad type", headers=html)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.type"
    # agencies by name beside their ids
    r = await console.get(f"/dossiers/{code}", headers=html)
    assert "Sở Xây dựng Thành phố Hồ Chí Minh (000.00.06.H29)" in r.text

    # the rebuild from the log equals the live read models
    async def settled() -> int:
        rows = (await console.get("/v1/console/lag", headers=OPERATOR)).json()["partitions"]
        return sum(p["lag"] for p in rows if p["service"] == "console")

    await eventually(settled, lambda n: n == 0, timeout=60, interval=0.5)
    report = await rebuild(rt["console"].settings, schema=f"console_rebuild_{uuid.uuid4().hex[:6]}")
    print("\n" + "\n".join(report.lines()))
    assert report.equal, report.lines()
    assert report.counts["events"][0] > 10 and report.counts["dead_letter_entries"][0] >= 1
