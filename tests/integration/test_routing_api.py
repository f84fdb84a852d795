"""Routing through its HTTP API and timers, on the real broker and PostgreSQL: officers
move a dossier across three agencies, wrong moves get 409 with the reason, strangers 403,
bad input 422; a pause moves the clock by exactly the time waited; a late step is caught
by its timer and attributed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from contracts.common import Applicant, DocumentRef
from contracts.envelope import EventPayload, new_envelope
from contracts.events import DossierReceived, DossierSupplemented, ProcedurePublished
from services.routing.app import SPEC
from services.runtime.clock import ManualClock
from services.runtime.service import create_app
from services.runtime.settings import ServiceSettings
from tests.helpers import configure_auth, eventually, staff
from tests.unit.test_routing_route import BIRTH, CAL, DESK, POLICE, SOCIAL, WARD, at

CODE = f"{DESK}-260309-0042"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(at(9, 9))


@pytest.fixture
async def routing(
    kafka_bootstrap: str, database_url: str, topic_prefix: str, clock: ManualClock
) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServiceSettings.for_service("routing")
    settings.kafka_bootstrap_servers = kafka_bootstrap
    settings.database_url = database_url
    settings.topic_prefix = topic_prefix
    settings.timer_poll_interval_s = 0.1
    configure_auth(settings)
    app = create_app(SPEC, settings, clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://routing") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def feed(client: httpx.AsyncClient, event: EventPayload, subject: str) -> None:
    """An event through routing's own handler, as its consumer would apply it."""
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    env = new_envelope(event, subject=subject, producer="test", occurred_at=rt.clock.now())
    async with rt.pool.acquire() as conn, conn.transaction():
        await rt.consumer.handlers[event.event_type](conn, env, event)


async def received(client: httpx.AsyncClient, clock: ManualClock) -> None:
    await feed(client, ProcedurePublished(procedure=BIRTH), BIRTH.code)
    now = clock.now()
    await feed(
        client,
        DossierReceived(
            code=CODE,
            procedure_code=BIRTH.code,
            procedure_version=1,
            procedure_name=BIRTH.name,
            channel=1,
            applicant=Applicant(name="Nguyễn Văn An", id_number="079190000002"),
            documents=(DocumentRef(code="TK"), DocumentRef(code="GCS")),
            receiving_agency=DESK,
            receiving_agency_name=BIRTH.receiving_agency_name,
            lead_agency=WARD,
            processing_time=BIRTH.processing_time,
            received_at=now,
            clock_starts_at=CAL.clock_start(now),
            appointment_at=CAL.deadline(now, BIRTH.processing_time),
            received_by="Lê Thị Hoa",
        ),
        CODE,
    )


def who(agency: str, clock: ManualClock, role: str = "officer") -> dict[str, str]:
    return staff(agency, role, now=clock.now())


async def route(client: httpx.AsyncClient, clock: ManualClock) -> dict[str, Any]:
    r = await client.get(f"/v1/routes/{CODE}", headers=who(WARD, clock))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def outbox(client: httpx.AsyncClient) -> list[str]:
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    rows = await rt.pool.fetch("SELECT event_type FROM outbox WHERE key = $1 ORDER BY id", CODE)
    return [r["event_type"] for r in rows]


async def test_three_agencies_in_sequence_wrong_moves_and_a_pause(
    routing: httpx.AsyncClient, clock: ManualClock
) -> None:
    await received(routing, clock)
    await received(routing, clock)  # a redelivered receipt plans nothing twice
    view = await route(routing, clock)
    assert (view["state"], view["status"], view["current_step"]) == ("processing", 4, 2)
    assert [s["agency_id"] for s in view["steps"]] == [DESK, WARD, POLICE, SOCIAL, DESK]
    assert view["handovers"][0]["giver"]["person"] == "Lê Thị Hoa"

    base = f"/v1/routes/{CODE}"
    r = await routing.post(f"{base}/steps/3/take", json={}, headers=who(POLICE, clock))
    assert r.status_code == 409 and "không phải bước hiện tại" in r.json()["detail"]
    r = await routing.post(f"{base}/steps/2/take", json={}, headers=who(POLICE, clock))
    assert r.status_code == 409 and r.json()["errors"][0]["field"] == "agency"
    r = await routing.post(f"{base}/steps/2/take", json={}, headers=who("000.00.06.H29", clock))
    assert r.status_code == 403
    assert (await routing.get(base, headers=who("000.00.06.H29", clock))).status_code == 403
    r = await routing.post(f"{base}/steps/2/take", json={}, headers=who(WARD, clock, "operator"))
    assert r.status_code == 403
    r = await routing.post(f"{base}/steps/2/take", json={}, headers=who(WARD, clock))
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "role"
    r = await routing.post(f"{base}/result-ready", json={}, headers=who(DESK, clock))
    assert r.status_code == 409
    r = await routing.post(
        f"{base}/supplement-request", json={"missing": ["NOPE"]}, headers=who(WARD, clock)
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "missing"
    r = await routing.post(
        f"{base}/supplement-request",
        json={"missing": ["GCS"], "note": "a\x00b"},
        headers=who(WARD, clock),
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "note"
    assert (await routing.get("/v1/routes/not-a-code", headers=who(WARD, clock))).status_code == 422

    # the ward asks once to supplement: paused; any move while paused is a conflict
    before = view["appointment_at"]
    r = await routing.post(
        f"{base}/supplement-request",
        json={"missing": ["GCS"], "reasons": {"GCS": "Bản chụp mờ"}},
        headers=who(WARD, clock),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["state"], r.json()["status"]) == ("waiting_supplement", 5)
    r = await routing.post(
        f"{base}/decision",
        json={"decision": "approved", "documents": [{"code": "GKS"}]},
        headers=who(WARD, clock, "agency_head"),
    )
    assert r.status_code == 409 and "tạm dừng" in r.json()["detail"]
    clock.advance(timedelta(hours=3))  # 12:00 -> back at 12:00: 2.5 working hours waited
    await feed(
        routing,
        DossierSupplemented(
            code=CODE,
            documents=(DocumentRef(code="GCS"),),
            supplemented_at=clock.now(),
            paused_working_seconds=0,
            appointment_at=clock.now(),
        ),
        CODE,
    )
    view = await route(routing, clock)
    assert view["state"] == "processing" and view["paused_working_seconds"] == 2.5 * 3600
    moved = CAL.working_seconds_between(
        datetime.fromisoformat(before), datetime.fromisoformat(view["appointment_at"])
    )
    assert moved == 2.5 * 3600

    # the ward's head decides; the police and social insurance do their parts; the desk
    r = await routing.post(
        f"{base}/decision",
        json={"decision": "approved", "documents": [{"code": "GKS", "name": "Giấy khai sinh"}]},
        headers=who(WARD, clock, "agency_head"),
    )
    assert r.status_code == 200, r.text
    work = await routing.get("/v1/worklist", headers=who(POLICE, clock))
    assert [w["code"] for w in work.json()] == [CODE]
    r = await routing.post(f"{base}/steps/3/take", json={}, headers=who(POLICE, clock))
    assert r.status_code == 200 and r.json()["steps"][2]["holder"]["person"]

    # the police sit on it past its 8 working hours (due Tuesday 11:30; the lunch break
    # loses no working time, so late from 13:00): the timer finds the step late
    clock.advance(timedelta(days=1, hours=1, minutes=5))
    rt = routing.app.state.runtime  # type: ignore[attr-defined]
    await eventually(lambda: outbox(routing), lambda t: "routing.step_overdue" in t, timeout=20)
    view = await route(routing, clock)
    assert view["steps"][2]["overdue"] and view["faults"][0]["agency_id"] == POLICE
    r = await routing.post(
        f"{base}/steps/3/complete",
        json={"result": "Đã đăng ký thường trú"},
        headers=who(POLICE, clock),
    )
    assert r.status_code == 200, r.text
    r = await routing.post(f"{base}/steps/4/take", json={}, headers=who(SOCIAL, clock))
    assert r.status_code == 200, r.text
    r = await routing.post(f"{base}/steps/4/complete", json={}, headers=who(SOCIAL, clock))
    assert r.status_code == 200, r.text
    r = await routing.post(f"{base}/result-ready", json={}, headers=who(DESK, clock))
    assert r.status_code == 200 and r.json()["state"] == "result_ready"
    r = await routing.post(f"{base}/return", json={"method": "at_desk"}, headers=who(DESK, clock))
    assert r.status_code == 200 and r.json()["state"] == "returned"
    r = await routing.post(f"{base}/return", json={"method": "post"}, headers=who(DESK, clock))
    assert r.status_code == 409 and "đã kết thúc" in r.json()["detail"]
    types = await outbox(routing)
    assert types[0] == "routing.dossier_routed" and types[-1] == "routing.result_returned"
    assert types.count("routing.dossier_routed") == 1
    for t in ("routing.supplement_requested", "routing.dossier_resumed", "routing.result_ready"):
        assert types.count(t) == 1, t
    assert not await rt.pool.fetchval(
        "SELECT count(*) FROM timers WHERE owner = $1 AND status = 'pending'", CODE
    )
