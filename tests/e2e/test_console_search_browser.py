"""The console's search and dead-letter filters in a real browser (Playwright driving the
system Chromium) against the running stack: an operator finds a new dossier from the top
bar's search box and opens it, finds it again by words of its procedure typed without
accents but not by its applicant's name, and filters the dead letters down to the one a
poisoned event of that dossier left.

With ``LIENTHONG_SCREENSHOTS=1`` the pages are saved as ``docs/console-search*.png``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.stack import Stack
from tests.e2e.test_console_browser import (
    ARGS,
    CHROMIUM,
    OPS,
    VIOLATIONS,
    poison,
    reloaded_until,
    shot,
    signed_in,
)
from tests.e2e.test_walking_skeleton import PERMIT, desk
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

playwright = pytest.importorskip("playwright.async_api")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once, before the browser starts
        pytest.skip("no /usr/bin/chromium")
    async with playwright.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


async def test_an_operator_searches_dossiers_and_filters_dead_letters(
    stack: Stack, http: httpx.AsyncClient, browser: Any, db: asyncpg.Connection
) -> None:
    expect = playwright.expect
    console = stack.url("console")
    VIOLATIONS.clear()
    r = await http.post(
        f"{stack.url('intake')}/v1/dossiers", json=PERMIT, headers=desk(stack, PERMIT)
    )
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    await eventually(
        lambda: db.fetchval(
            "SELECT count(*) FROM console.dossiers WHERE code = $1 AND procedure_name IS NOT NULL",
            code,
        ),
        lambda n: n == 1,
        timeout=60,
    )
    page = await signed_in(browser, stack, OPS, "operator")

    # 1. the top bar's box: the code's beginning finds it; its link opens the dossier
    await page.goto(f"{console}/")
    await page.fill("#top-search input[name=q]", code[:-2])
    await page.click("#top-search button[type=submit]")
    await page.wait_for_url("**/dossiers?q=*")
    row = page.locator(f"#dossiers tbody tr[data-code='{code}']")
    await expect(row).to_be_visible()
    await expect(row).to_contain_text("Đang xử lý")
    await shot(page, "search")
    await row.locator("a").click()
    await page.wait_for_url(f"{console}/dossiers/{code}")
    await expect(page.locator("h1")).to_contain_text(code)

    # words of the procedure without accents find it; the applicant's name does not
    await page.goto(f"{console}/dossiers")
    await page.fill("#search-form input[name=q]", "giay phep xay dung")
    await page.click("#search-form button[type=submit]")
    await expect(page.locator(f"#dossiers tbody tr[data-code='{code}']")).to_be_visible()
    await page.fill("#search-form input[name=q]", "Minh Long")
    await page.click("#search-form button[type=submit]")
    await page.wait_for_url("**/dossiers?q=Minh+Long*")
    await expect(page.locator(f"#dossiers tbody tr[data-code='{code}']")).to_have_count(0)
    await expect(page.locator("#dossiers tbody")).to_contain_text("Không tìm thấy hồ sơ nào")

    # 2. the dead letters, filtered by writer and dossier (fields left empty are none)
    event_id, _ = await poison(stack, code)
    await page.goto(f"{console}/dead-letters")
    await page.select_option("#dl-filters select[name=writer]", "intake")
    await page.fill("#dl-filters input[name=dossier]", code)
    await page.click("#dl-filters button[type=submit]")
    await page.wait_for_url("**/dead-letters?*writer=intake*")
    rows = await reloaded_until(page, page.locator("#dead-letters tbody tr[data-id]"), 60)
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("notification.sent")
    await expect(rows.first).to_contain_text(code)
    await shot(page, "search-dead-letters")
    # the same dossier's dead letters discarded: none
    await page.select_option("#dl-filters select[name=status]", "discarded")
    await page.click("#dl-filters button[type=submit]")
    await page.wait_for_url("**/dead-letters?status=discarded*")
    await expect(page.locator("#dead-letters tbody tr[data-id]")).to_have_count(0)
    # opened from the filtered list, it is the poisoned event
    await page.select_option("#dl-filters select[name=status]", "open")
    await page.click("#dl-filters button[type=submit]")
    await page.locator("#dead-letters tbody tr[data-id] a").first.click()
    await expect(page.locator("#payload")).to_contain_text(code)
    assert str(event_id) in await page.content()
    assert VIOLATIONS == [], "\n".join(VIOLATIONS)
