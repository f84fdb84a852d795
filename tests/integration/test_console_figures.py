"""The console's figures as CSV and the SLA board's finished late dossiers, on the real
PostgreSQL (the console alone, its read model written directly): the CSV's content type,
BOM, Vietnamese header and rows with names beside ids, scoped as the page is; filters
whose fields were left empty are no filters; a dossier finished late within the period is
on the board, one finished late before it, one finished on time or another agency's is
not."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from deploy.local import SmtpSink
from services.console.app import SPEC as CONSOLE
from services.console.pages import FIGURES_CSV_HEADER
from services.runtime.service import create_app
from tests.helpers import staff
from tests.integration.test_authorization import settings_for

DESK, LEAD, OTHER, OPS = "000.00.01.H29", "000.00.06.H29", "000.20.01.H29", "000.00.00.H29"
OPERATOR = staff(OPS, "operator")
PERMIT_CODE, PERMIT_NAME = "1.009994", "Cấp giấy phép xây dựng"
OTHER_CODE, OTHER_NAME = "2.000001", "Đăng ký hộ kinh doanh"
HTML = {"accept": "text/html"}


@pytest.fixture
async def console(
    kafka_bootstrap: str, database_url: str, topic_prefix: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    sink = SmtpSink()
    sink.start()
    app = create_app(
        CONSOLE, settings_for("console", kafka_bootstrap, database_url, topic_prefix, sink.port)
    )
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://console", timeout=30
            ) as client,
        ):
            yield client, app.state.runtime
    finally:
        sink.stop()


async def dossier(rt: Any, code: str, agency: str, procedure: str, name: str, **kw: Any) -> None:
    cols = {
        "code": code,
        "agency": agency,
        "receiving_agency": DESK,
        "lead_agency": agency,
        "procedure_code": procedure,
        "procedure_name": name,
        "online": False,
        "state": "processing",
        **kw,
    }
    names = ", ".join(cols)
    marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    await rt.pool.execute(f"INSERT INTO dossiers({names}) VALUES ({marks})", *cols.values())


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


async def test_figures_csv_filtered_and_scoped(
    console: tuple[httpx.AsyncClient, Any],
) -> None:
    client, rt = console
    march = datetime(2026, 3, 10, 3, tzinfo=UTC)
    april = datetime(2026, 4, 10, 3, tzinfo=UTC)
    for i, (at, online) in enumerate([(march, True), (march, False), (april, False)]):
        await dossier(
            rt,
            f"{LEAD}-260310-{i:04d}",
            LEAD,
            PERMIT_CODE,
            PERMIT_NAME,
            received_at=at,
            online=online,
            finished_at=at + timedelta(days=3),
            timeliness="late" if i == 0 else "on_time",
            state="returned",
        )
    await dossier(rt, f"{OTHER}-260310-0001", OTHER, OTHER_CODE, OTHER_NAME, received_at=march)

    r = await client.get("/figures.csv", headers=OPERATOR)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith("attachment;")
    assert r.content.startswith(b"\xef\xbb\xbf")  # the BOM, so Excel reads UTF-8
    text = r.content.decode("utf-8")
    rows = rows_of(text.removeprefix("\ufeff"))
    assert rows[0] == list(FIGURES_CSV_HEADER) and rows[0][0] == "Tháng"
    march_lead = next(x for x in rows if x[0] == "2026-03" and x[1] == LEAD)
    assert march_lead[2] and march_lead[2] != LEAD  # the agency's name beside its id
    assert march_lead[3:5] == [PERMIT_CODE, PERMIT_NAME]
    # received, online, online share, finished, on time, late, on-time rate, apologies
    assert march_lead[5:] == ["2", "1", "0.5", "2", "1", "1", "0.5", "0"]
    assert {x[1] for x in rows[1:]} == {LEAD, OTHER}

    # the page's filters, empty fields ignored, and ?format=csv on the page itself
    params = {"agency": "", "procedure": PERMIT_CODE, "from_month": "2026-04", "to_month": ""}
    r = await client.get("/figures", params={**params, "format": "csv"}, headers=OPERATOR)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = rows_of(r.content.decode("utf-8-sig"))
    assert [x[0] for x in rows[1:]] == ["2026-04"] and rows[1][3] == PERMIT_CODE
    page = await client.get("/figures", params=params, headers={**OPERATOR, **HTML})
    assert page.status_code == 200, page.text[:300]
    assert "/figures.csv?procedure=1.009994&amp;from_month=2026-04" in page.text
    assert "2026-03" not in page.text.split('id="figures"')[1]
    empty = {"agency": "", "procedure": "", "from_month": "", "to_month": ""}
    r = await client.get("/figures.csv", params=empty, headers=OPERATOR)
    assert r.status_code == 200 and len(rows_of(r.content.decode("utf-8-sig"))) == len(
        rows_of(text)
    )
    assert (
        await client.get("/v1/console/figures", params=empty, headers=OPERATOR)
    ).status_code == 200

    # scoped like the page: an agency sees its own rows, never another's
    lead = staff(LEAD, "department_head")
    rows = rows_of((await client.get("/figures.csv", headers=lead)).content.decode("utf-8-sig"))
    assert len(rows) > 1 and {x[1] for x in rows[1:]} == {LEAD}
    r = await client.get("/figures.csv", params={"agency": OTHER}, headers=lead)
    assert r.status_code == 403
    r = await client.get("/figures", params={"agency": OTHER}, headers={**lead, **HTML})
    assert r.status_code == 403 and "text/html" in r.headers["content-type"]
    assert (await client.get("/figures.csv")).status_code == 401


async def test_sla_board_shows_dossiers_finished_late_in_the_period(
    console: tuple[httpx.AsyncClient, Any],
) -> None:
    client, rt = console
    now = rt.clock.now()

    async def finished(code: str, agency: str, procedure: str, ago: timedelta, **kw: Any) -> None:
        name = PERMIT_NAME if procedure == PERMIT_CODE else OTHER_NAME
        at = now - ago
        await dossier(
            rt,
            code,
            agency,
            procedure,
            name,
            received_at=at - timedelta(days=10),
            appointment_at=at - timedelta(hours=30),
            legal_appointment_at=at - timedelta(hours=30),
            finished_at=at,
            state="result_ready",
            **kw,
        )

    late = f"{LEAD}-260310-0001"
    await finished(late, LEAD, PERMIT_CODE, timedelta(hours=2), timeliness="late")
    await finished(
        f"{LEAD}-260310-0002", LEAD, PERMIT_CODE, timedelta(hours=3), timeliness="on_time"
    )
    await finished(f"{LEAD}-260310-0003", LEAD, PERMIT_CODE, timedelta(days=40), timeliness="late")
    await finished(f"{LEAD}-260310-0004", LEAD, OTHER_CODE, timedelta(hours=5), timeliness="late")
    await finished(
        f"{OTHER}-260310-0005", OTHER, PERMIT_CODE, timedelta(hours=4), timeliness="late"
    )

    board = (await client.get("/v1/console/sla", params={"hours": 24}, headers=OPERATOR)).json()
    codes = [x["dossier_code"] for x in board["finished_late"]]
    assert codes == [late, f"{OTHER}-260310-0005", f"{LEAD}-260310-0004"]  # latest first
    first = board["finished_late"][0]
    assert first["hours_late"] == 30.0 and first["what"] == PERMIT_NAME
    assert first["agency"] == LEAD and first["procedure_code"] == PERMIT_CODE

    # by agency and procedure; an agency user sees its own only
    params = {"hours": 24, "agency": LEAD, "procedure": PERMIT_CODE}
    board = (await client.get("/v1/console/sla", params=params, headers=OPERATOR)).json()
    assert [x["dossier_code"] for x in board["finished_late"]] == [late]
    lead = staff(LEAD, "department_head")
    board = (await client.get("/v1/console/sla", params={"hours": 24}, headers=lead)).json()
    assert {x["agency"] for x in board["finished_late"]} == {LEAD}
    stranger = staff(OTHER, "department_head")
    r = await client.get("/v1/console/sla", params={"agency": LEAD}, headers=stranger)
    assert r.status_code == 403

    # the page: its own table, filters with empty fields ignored
    empty = {"hours": 24, "agency": "", "procedure": ""}
    page = await client.get("/sla", params=empty, headers={**OPERATOR, **HTML})
    assert page.status_code == 200, page.text[:300]
    assert "Hồ sơ đã giải quyết quá hạn" in page.text
    table = page.text.split('id="sla-finished-late"')[1].split("</table>")[0]
    assert late in table and f"{LEAD}-260310-0002" not in table
    assert f"{LEAD}-260310-0003" not in table
    page = await client.get("/sla", params={"procedure": OTHER_CODE}, headers={**lead, **HTML})
    table = page.text.split('id="sla-finished-late"')[1].split("</table>")[0]
    assert f"{LEAD}-260310-0004" in table and late not in table
