"""Form 06, the register of dossiers of a receiving agency's desk for a day, from intake on
the real PostgreSQL: its lines in register order with the moments routing reports back,
whole for the agency's own staff (the read audited), masked for operators, refused to
other agencies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest

from contracts.envelope import EventPayload, new_envelope
from contracts.events import DossierRouted
from services.intake.app import SPEC
from services.runtime.calendar import VN_TZ
from services.runtime.clock import ManualClock
from services.runtime.service import create_app
from services.runtime.settings import ServiceSettings
from tests.helpers import configure_auth, staff

DESK, LEAD = "000.01.50.H29", "000.00.50.H29"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=VN_TZ)  # a Monday
PERMIT = {
    "procedure_code": "1.009973",
    "channel": 1,
    "applicant": {
        "name": "Phạm Thị Hoa",
        "id_number": "001190067890",
        "phone": "0987654321",
        "address": "12 Lê Lợi, phường Sài Gòn",
    },
    "property_commune": "SAI_GON",
    "documents": [{"code": "DDN"}, {"code": "QSDD"}, {"code": "BVTK"}],
}


@pytest.fixture
async def intake(
    kafka_bootstrap: str, database_url: str, topic_prefix: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = ServiceSettings.for_service("intake")
    settings.kafka_bootstrap_servers = kafka_bootstrap
    settings.database_url = database_url
    settings.topic_prefix = topic_prefix
    configure_auth(settings)
    app = create_app(SPEC, settings, ManualClock(NOW))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def feed(client: httpx.AsyncClient, event: EventPayload, subject: str) -> None:
    rt = client.app.state.runtime  # type: ignore[attr-defined]
    env = new_envelope(event, subject=subject, producer="routing", occurred_at=rt.clock.now())
    async with rt.pool.acquire() as conn, conn.transaction():
        await rt.consumer.handlers[event.event_type](conn, env, event)


async def test_the_register_of_a_desk_for_a_day(intake: httpx.AsyncClient) -> None:
    desk = staff(DESK, now=NOW)
    codes = []
    for _ in range(2):
        r = await intake.post("/v1/dossiers", json=PERMIT, headers=desk)
        assert r.status_code == 201, r.text
        codes.append(r.json()["code"])
    await feed(
        intake,
        DossierRouted(
            code=codes[0],
            procedure_code="1.009973",
            procedure_version=1,
            procedure_name="Cấp giấy phép xây dựng mới đối với nhà ở riêng lẻ",
            lead_agency=LEAD,
            lead_agency_name="Ủy ban nhân dân phường Sài Gòn",
            consult=(),
            appointment_at=NOW + timedelta(days=15),
            routed_at=NOW + timedelta(minutes=1),
        ),
        codes[0],
    )
    day = NOW.date().isoformat()
    r = await intake.get(f"/v1/registers/{DESK}/{day}", headers=desk)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "SỔ THEO DÕI HỒ SƠ" in text.upper()
    assert text.index(codes[0]) < text.index(codes[1])
    assert "Phạm Thị Hoa" in text and "0987654321" in text
    assert "Ủy ban nhân dân phường Sài Gòn" in text  # the lead agency, once transferred
    html = await intake.get(f"/v1/registers/{DESK}/{day}", params={"format": "html"}, headers=desk)
    assert "<table" in html.text and codes[1] in html.text

    op = await intake.get(
        f"/v1/registers/{DESK}/{day}", headers=staff("000.00.00.H29", "operator", now=NOW)
    )
    assert op.status_code == 200 and codes[0] in op.text
    assert "Phạm Thị Hoa" not in op.text and "0987654321" not in op.text
    other = await intake.get(f"/v1/registers/{DESK}/{day}", headers=staff("000.00.06.H29", now=NOW))
    assert other.status_code == 403
    bad = await intake.get(f"/v1/registers/nope/{day}", headers=desk)
    assert bad.status_code == 422
    empty = await intake.get(f"/v1/registers/{DESK}/2026-11-22", headers=desk)
    assert empty.status_code == 200 and codes[0] not in empty.text

    rt = intake.app.state.runtime  # type: ignore[attr-defined]
    reads = await rt.pool.fetch("SELECT dossier_code, endpoint FROM pii_reads")
    audited = [r["dossier_code"] for r in reads]
    assert audited.count(f"register {DESK} {day}") == 2  # the desk's reads, not the operator's
