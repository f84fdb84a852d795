"""The console's figures page in a real browser against the running stack: an operator
filters the figures by agency, procedure and month, and downloads the same rows as CSV
(a BOM, the Vietnamese header, names beside ids). The read model's rows are written
directly, so the figures do not wait for dossiers to finish."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.e2e.stack import Stack
from tests.e2e.test_console_browser import OPS, VIOLATIONS, browser, signed_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

playwright = pytest.importorskip("playwright.async_api")
__all__ = ["browser"]  # the fixture, reused
LEAD, OTHER = "000.00.06.H29", "000.20.01.H29"
PERMIT, BUSINESS = "1.009994", "2.000001"


async def seed(db: asyncpg.Connection) -> None:
    march = datetime(2026, 3, 10, 3, tzinfo=UTC)
    april = datetime(2026, 4, 10, 3, tzinfo=UTC)
    rows = [
        (f"{LEAD}-260310-0001", LEAD, PERMIT, "Cấp giấy phép xây dựng", march, "late"),
        (f"{LEAD}-260310-0002", LEAD, PERMIT, "Cấp giấy phép xây dựng", april, "on_time"),
        (f"{OTHER}-260310-0003", OTHER, BUSINESS, "Đăng ký hộ kinh doanh", march, "on_time"),
    ]
    for code, agency, procedure, name, at, timeliness in rows:
        await db.execute(
            "INSERT INTO console.dossiers(code, agency, receiving_agency, lead_agency,"
            " procedure_code, procedure_name, online, state, received_at, finished_at,"
            " timeliness) VALUES ($1, $2, $2, $2, $3, $4, false, 'returned', $5, $6, $7)",
            code,
            agency,
            procedure,
            name,
            at,
            at + timedelta(days=5),
            timeliness,
        )


async def test_figures_filtered_and_downloaded_as_csv(
    stack: Stack, browser: Any, db: asyncpg.Connection
) -> None:
    expect = playwright.expect
    console = stack.url("console")
    VIOLATIONS.clear()
    await seed(db)
    page = await signed_in(browser, stack, OPS, "operator")
    await page.goto(f"{console}/figures")
    await expect(page.locator("#figures tbody tr")).to_have_count(3)

    await page.select_option("#f-agency", LEAD)
    await page.fill("#f-procedure", PERMIT)
    await page.fill("#f-from", "2026-03")
    await page.fill("#f-to", "2026-03")
    await page.click("#figures-filter button[type=submit]")
    await page.wait_for_url("**/figures?**")
    assert "to_month=2026-03" in page.url
    rows = page.locator("#figures tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("2026-03")
    await expect(rows.first).to_contain_text(LEAD)

    async with page.expect_download() as info:
        await page.click("#csv")
    download = await info.value
    assert download.suggested_filename.endswith(".csv")
    path = await download.path()
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert table[0][:3] == ["Tháng", "Mã cơ quan", "Cơ quan"]
    assert len(table) == 2 and table[1][0] == "2026-03" and table[1][1] == LEAD
    assert table[1][3] == PERMIT and table[1][10] == "1"  # one late
    assert VIOLATIONS == [], "\n".join(VIOLATIONS)
