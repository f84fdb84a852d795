"""The console's dossier search and dead-letter filters on the real PostgreSQL, the console
alone: read-model rows written as its consumer would, then searched by code, words of the
procedure or agency (with or without accents), state, paged on with the cursor, agencies
scoped to their own rows, and empty form fields no filter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from deploy.local import SmtpSink
from services.console.app import SPEC as CONSOLE
from services.runtime.service import create_app
from tests.helpers import staff
from tests.integration.test_authorization import settings_for

DESK, BUILD, FINANCE, OPS = "000.00.01.H29", "000.00.06.H29", "000.00.05.H29", "000.00.00.H29"
OPERATOR = staff(OPS, "operator")
T0 = datetime(2025, 12, 1, 2, 0, tzinfo=UTC)
PERMITS = [f"{DESK}-251201-000{i}" for i in range(1, 6)]
COMPANY = f"{DESK}-251202-0001"
QUIET = f"{DESK}-251203-0001"  # no event time known


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
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://console", timeout=30
                )
            )
            yield client, app.state.runtime
    finally:
        sink.stop()


async def dossier(pool: Any, code: str, **row: Any) -> None:
    row = {"code": code, "receiving_agency": DESK, **row}
    cols = ", ".join(row)
    params = ", ".join(f"${i + 1}" for i in range(len(row)))
    await pool.execute(f"INSERT INTO dossiers({cols}) VALUES ({params})", *row.values())


async def seed_dossiers(pool: Any) -> None:
    for i, code in enumerate(PERMITS):
        await dossier(
            pool,
            code,
            agency=BUILD,
            lead_agency=BUILD,
            procedure_code="1.009994",
            procedure_name="Cấp giấy phép xây dựng",
            state="processing",
            # the last two share a time: the code orders them
            last_event_at=T0 + timedelta(hours=min(i, 3)),
        )
    await dossier(
        pool,
        COMPANY,
        agency=FINANCE,
        lead_agency=FINANCE,
        procedure_code="2.001610",
        procedure_name="Đăng ký thành lập doanh nghiệp",
        state="returned",
        last_event_at=T0 + timedelta(days=1),
    )
    await dossier(pool, QUIET, agency=BUILD, procedure_code="1.009994", state="received")


def codes(r: httpx.Response) -> list[str]:
    assert r.status_code == 200, r.text
    return [d["code"] for d in r.json()["items"]]


async def test_search_dossiers_by_code_words_state_with_paging_and_scope(
    console: tuple[httpx.AsyncClient, Any],
) -> None:
    client, rt = console
    await seed_dossiers(rt.pool)
    path = "/v1/console/dossiers"
    newest_first = [COMPANY, *sorted(PERMITS[3:], reverse=True), *PERMITS[2::-1], QUIET]
    assert codes(await client.get(path, headers=OPERATOR)) == newest_first

    # words of the procedure's name or the agency's, with or without accents, all must match
    permits = set(PERMITS) | {QUIET}
    # QUIET has no procedure name, but "Sở Xây dựng" leads it
    r = await client.get(path, params={"q": "xây dựng"}, headers=OPERATOR)
    assert set(codes(r)) == permits
    assert set(codes(await client.get(path, params={"q": "XAY dung"}, headers=OPERATOR))) == (
        permits
    )
    assert codes(await client.get(path, params={"q": "Sở Tài chính"}, headers=OPERATOR)) == [
        COMPANY
    ]
    assert codes(await client.get(path, params={"q": "doanh nghiep"}, headers=OPERATOR)) == [
        COMPANY
    ]
    assert set(codes(await client.get(path, params={"q": "1.009994"}, headers=OPERATOR))) == (
        permits
    )
    assert codes(
        await client.get(path, params={"q": BUILD, "state": "received"}, headers=OPERATOR)
    ) == [QUIET]
    assert codes(await client.get(path, params={"q": "%"}, headers=OPERATOR)) == []
    # the code, whole or its beginning; as a word of ``q`` too
    assert codes(await client.get(path, params={"code": PERMITS[1]}, headers=OPERATOR)) == [
        PERMITS[1]
    ]
    assert codes(await client.get(path, params={"code": f"{DESK}-251202"}, headers=OPERATOR)) == [
        COMPANY
    ]
    assert codes(await client.get(path, params={"q": COMPANY}, headers=OPERATOR)) == [COMPANY]
    # the state; filters combine
    assert codes(await client.get(path, params={"state": "returned"}, headers=OPERATOR)) == [
        COMPANY
    ]
    r = await client.get(path, params={"q": "xây dựng", "state": "returned"}, headers=OPERATOR)
    assert codes(r) == []
    # empty fields of a form are no filter
    r = await client.get(f"{path}?q=&code=&state=&agency=&after=", headers=OPERATOR)
    assert codes(r) == newest_first

    # cursor paging: every row once, in the same order
    seen: list[str] = []
    after = None
    for _ in range(10):
        r = await client.get(
            path, params={"limit": 2, **({"after": after} if after else {})}, headers=OPERATOR
        )
        seen += codes(r)
        after = r.json()["next_after"]
        if after is None:
            break
    assert seen == newest_first
    r = await client.get(path, params={"after": "bm90IGEgY3Vyc29y"}, headers=OPERATOR)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.after"

    # an agency sees its own dossiers only, and may not ask for another's
    finance = staff(FINANCE, "department_head")
    assert codes(await client.get(path, headers=finance)) == [COMPANY]
    assert codes(await client.get(path, params={"q": "xây dựng"}, headers=finance)) == []
    r = await client.get(path, params={"agency": BUILD}, headers=finance)
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "agency"
    assert codes(await client.get(path, params={"agency": FINANCE}, headers=OPERATOR)) == [COMPANY]

    # the page: the top bar's box, the results, the next page's link
    html = {**OPERATOR, "accept": "text/html"}
    r = await client.get("/dossiers", params={"q": "xay dung", "limit": 2}, headers=html)
    assert r.status_code == 200 and 'id="top-search"' in r.text
    assert PERMITS[4] in r.text and PERMITS[3] in r.text and PERMITS[0] not in r.text
    assert "Sở Xây dựng Thành phố Hồ Chí Minh (000.00.06.H29)" in r.text
    assert 'id="next-page"' in r.text
    more = r.text.split('id="next-page"')[0].rsplit('href="', 1)[1].split('"')[0]
    r = await client.get(more.replace("&amp;", "&"), headers=html)
    assert r.status_code == 200 and PERMITS[2] in r.text and PERMITS[4] not in r.text
    r = await client.get("/dossiers?q=&code=&state=&agency=&after=", headers=html)
    assert r.status_code == 200 and COMPANY in r.text
    r = await client.get("/dossiers?after=!!", headers=html)
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    r = await client.get("/dossiers", headers={**finance, "accept": "text/html"})
    assert r.status_code == 200 and COMPANY in r.text and PERMITS[0] not in r.text


async def dead_letter(
    pool: Any, n: int, writer: str, event_type: str, code: str, **row: Any
) -> str:
    entry = f"{writer}-0-{n}"
    agency = FINANCE if code == COMPANY else BUILD
    await pool.execute(
        "INSERT INTO dead_letter_entries(id, writer, dlq_partition, dlq_offset, value, reason,"
        " detail, event_type, dossier_code, agencies, dead_lettered_at)"
        " VALUES ($1, $2, 0, $3, $4, 'invalid', 'test', $5, $6, $7, $8)",
        entry,
        writer,
        n,
        b"{}",
        event_type,
        code,
        [agency, DESK],
        row.get("at", T0 + timedelta(minutes=n)),
    )
    return entry


async def test_dead_letters_filtered_and_paged(console: tuple[httpx.AsyncClient, Any]) -> None:
    client, rt = console
    pool = rt.pool
    a = [await dead_letter(pool, n, "intake", "notification.sent", PERMITS[0]) for n in (1, 2, 3)]
    b = [await dead_letter(pool, n, "routing", "routing.step_taken", COMPANY) for n in (4, 5)]
    old = await dead_letter(pool, 6, "notification", "dossier.received", PERMITS[1], at=None)
    await pool.execute(
        "INSERT INTO dead_letter_actions(entry_id, action, person, role, agency_id, reason)"
        " VALUES ($1, 'discard', 'x', 'operator', $2, 'test')",
        a[0],
        OPS,
    )
    path = "/v1/console/dead-letters"

    async def ids(headers: dict[str, str] = OPERATOR, **params: Any) -> list[str]:
        r = await client.get(path, params=params, headers=headers)
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()]

    newest_first = [*b[::-1], *a[::-1], old]
    assert await ids() == newest_first
    assert await ids(writer="intake") == a[::-1]
    assert await ids(event_type="routing.*") == b[::-1]
    assert await ids(event_type="notification.sent") == a[::-1]
    assert await ids(dossier=COMPANY) == b[::-1]
    assert await ids(status="discarded") == [a[0]]
    assert await ids(status="open", writer="intake") == a[:0:-1]
    assert await ids(writer="intake", dossier=COMPANY) == []
    r = await client.get(f"{path}?status=&writer=&event_type=&dossier=&after=", headers=OPERATOR)
    assert [d["id"] for d in r.json()] == newest_first
    r = await client.get(path, params={"writer": "Intake!"}, headers=OPERATOR)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.writer"
    # paging on with the last id seen
    seen: list[str] = []
    page = await ids(limit=2)
    while page:
        seen += page
        page = await ids(limit=2, after=page[-1])
    assert seen == newest_first
    # an agency sees the dead letters naming it, filtered the same way
    finance = staff(FINANCE, "department_head")
    assert await ids(finance) == b[::-1]
    assert await ids(finance, writer="intake") == []

    # the page: the filter form, one page at a time with a link to the next
    html = {**OPERATOR, "accept": "text/html"}
    r = await client.get("/dead-letters", params={"writer": "intake", "limit": 2}, headers=html)
    assert r.status_code == 200 and 'id="dl-filters"' in r.text
    assert a[2] in r.text and a[1] in r.text and a[0] not in r.text and b[0] not in r.text
    more = r.text.split('id="next-page"')[0].rsplit('href="', 1)[1].split('"')[0]
    r = await client.get(more.replace("&amp;", "&"), headers=html)
    assert r.status_code == 200 and a[0] in r.text and a[2] not in r.text
    assert 'id="next-page"' not in r.text
    r = await client.get("/dead-letters?status=&writer=&event_type=&dossier=&after=", headers=html)
    assert r.status_code == 200 and old in r.text and b[0] in r.text
    r = await client.get("/dead-letters?status=lost", headers=html)
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    r = await client.get("/dead-letters", headers={**finance, "accept": "text/html"})
    assert r.status_code == 200 and b[0] in r.text and a[0] not in r.text
