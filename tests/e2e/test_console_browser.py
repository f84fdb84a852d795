"""The console's pages in a real browser (Playwright driving the system Chromium) against
the running stack: the live stream shows a new dossier's events within a second, an agency
user sees nothing of another agency's, a poisoned event shows under dead letters and,
replayed fixed, is accepted by the consumer that refused it, and lag rises while a
consumer is stopped and falls once it is back.

With ``LIENTHONG_SCREENSHOTS=1`` the main pages are saved as ``docs/console-*.png``.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from contracts.topics import CONSULTATION, DEAD_LETTERS, NOTIFICATION
from services.console.api import COOKIE
from tests.e2e.stack import Stack
from tests.e2e.test_walking_skeleton import PERMIT, desk
from tests.helpers import eventually, kafka_kwargs, poisoned_receipt

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

playwright = pytest.importorskip("playwright.async_api")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
OPS, STRANGER = "000.00.00.H29", "000.20.01.H29"
SHOTS = os.environ.get("LIENTHONG_SCREENSHOTS") == "1"


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - once, before the browser starts
        pytest.skip("no /usr/bin/chromium")
    async with playwright.async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


VIOLATIONS: list[str] = []
"""Content-Security-Policy violations any page of the test reported (there must be none:
the console works under the strict policy, services/runtime/headers.py)."""
REPORT = """document.addEventListener("securitypolicyviolation", (e) => {
  console.error("CSP violation: " + e.violatedDirective + " " + e.blockedURI);
});"""


def watched(page: Any) -> Any:
    """The page, its policy violations (reported by the browser on its console, and by
    the ``securitypolicyviolation`` event) and uncaught errors recorded."""

    def on_console(message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or "CSP violation" in text:
            VIOLATIONS.append(f"{page.url}: {text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: VIOLATIONS.append(f"{page.url}: error {error}"))
    return page


async def new_context(browser: Any) -> Any:
    context = await browser.new_context(
        viewport={"width": 1360, "height": 900}, locale="vi-VN", timezone_id="Asia/Ho_Chi_Minh"
    )
    await context.add_init_script(REPORT)
    return context


async def signed_in(browser: Any, stack: Stack, agency: str, role: str) -> Any:
    """A browser page holding the console's session cookie for a staff token."""
    context = await new_context(browser)
    await context.add_cookies(
        [
            {
                "name": COOKIE,
                "value": stack.credentials.token(agency, role),
                "url": stack.url("console"),
            }
        ]
    )
    return watched(await context.new_page())


async def shot(page: Any, name: str) -> None:
    if SHOTS:
        DOCS.mkdir(exist_ok=True)
        await page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=False)


async def reloaded_until(page: Any, rows: Any, seconds: int = 30) -> Any:
    """``rows`` once the page shows one, reloading it each second (a server-rendered list
    that only changes on load)."""
    for _ in range(seconds):
        if await rows.count():
            break
        await page.wait_for_timeout(1000)
        await page.reload()
    return rows


async def poison(stack: Stack, code: str) -> tuple[uuid.UUID, dict[str, Any]]:
    """A notification.sent without its recipient on the notification topic: intake (which
    keeps the timeline) refuses it with the field's reason."""
    event_id = uuid.uuid4()
    envelope = poisoned_receipt(code, event_id)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, **kafka_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(
            NOTIFICATION.full_name(stack.topic_prefix),
            json.dumps(envelope).encode(),
            key=code.encode(),
        )
    finally:
        await producer.stop()
    return event_id, envelope


async def test_the_console_in_a_browser(
    stack: Stack, http: httpx.AsyncClient, browser: Any, db: asyncpg.Connection
) -> None:
    expect = playwright.expect
    console = stack.url("console")
    VIOLATIONS.clear()

    # 0. signing in: a `next` that is no path of the console's own goes to "/" (no script
    # runs, no other host), and the page works under the strict policy
    guest = watched(await (await new_context(browser)).new_page())
    dialogs: list[str] = []

    async def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    guest.on("dialog", on_dialog)
    answer = await guest.goto(f"{console}/login?next=javascript:alert(document.domain)")
    assert answer is not None and answer.status == 200
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert answer.headers["x-frame-options"] == "DENY"
    assert await guest.get_attribute("#login", "data-next") == "/"
    await guest.fill("#token", stack.credentials.token(OPS, "operator"))
    await guest.click("#login button[type=submit]")
    await guest.wait_for_url(f"{console}/")
    await expect(guest.locator("#live-state")).to_have_text("Đang nhận")
    assert dialogs == []
    # the stylesheet applied (served from the origin, allowed by style-src 'self')
    colour = await guest.eval_on_selector("header.top", "e => getComputedStyle(e).backgroundColor")
    assert colour == "rgb(16, 36, 62)"
    for elsewhere in ("//evil.example/", "/.//evil.example/", "/%2e%2e//evil.example/"):
        await guest.goto(f"{console}/login?next={quote(elsewhere)}")
        assert await guest.get_attribute("#login", "data-next") == "/", elsewhere
    await guest.goto(f"{console}/login?next=/sla%3Fhours%3D72")
    await guest.fill("#token", stack.credentials.token(OPS, "operator"))
    await guest.click("#login button[type=submit]")
    await guest.wait_for_url(f"{console}/sla?hours=72")

    page = await signed_in(browser, stack, OPS, "operator")

    # 1. the live stream shows a new dossier's events within a second of submission
    await page.goto(f"{console}/")
    await expect(page.locator("#live-state")).to_have_text("Đang nhận")
    r = await http.post(
        f"{stack.url('intake')}/v1/dossiers", json=PERMIT, headers=desk(stack, PERMIT)
    )
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    await expect(page.locator("#events tbody tr", has_text=code).first).to_be_visible(timeout=1000)
    await expect(
        page.locator("#events tbody tr[data-type='routing.dossier_routed']", has_text=code)
    ).to_be_visible(timeout=15000)
    # pause holds the page still, resume catches up from the last event shown
    await page.click("#pause")
    await expect(page.locator("#live-state")).to_have_text("Đã tạm dừng")
    await page.click("#pause")
    await expect(page.locator("#live-state")).to_have_text("Đang nhận")
    await shot(page, "stream")

    # the dossier's timeline with its causation chain drawn
    await eventually(
        lambda: db.fetchval(
            "SELECT count(*) FROM console.opinion_requests WHERE dossier_code = $1", code
        ),
        lambda n: n == 3,
        timeout=60,
    )
    await page.goto(f"{console}/dossiers/{code}")
    await expect(page.locator("svg.chain path.link").first).to_be_attached()
    await expect(page.locator("h1")).to_contain_text(code)
    assert "0912345678" not in await page.content()
    await shot(page, "dossier")

    # 2. an agency user cannot see another agency's rows
    other = await signed_in(browser, stack, STRANGER, "department_head")
    await other.goto(f"{console}/")
    await expect(other.locator("#events tbody tr", has_text=code)).to_have_count(0)
    answer = await other.goto(f"{console}/dossiers/{code}")
    assert answer is not None and answer.status == 403
    answer = await other.goto(f"{console}/lag")
    assert answer is not None and answer.status == 403

    # 3. a poisoned event appears under dead letters; replayed fixed, the consumer takes it
    event_id, envelope = await poison(stack, code)
    await page.goto(f"{console}/dead-letters")
    row = await reloaded_until(
        page, page.locator("#dead-letters tbody tr", has_text="notification.sent")
    )
    await expect(row.first).to_contain_text("recipient")
    await shot(page, "dead-letters")
    entry = await row.first.get_attribute("data-id")
    await page.goto(f"{console}/dead-letters/{entry}?reveal=true")
    await expect(page.locator("#payload")).to_contain_text(str(event_id))
    fixed = {**envelope, "data": {**envelope["data"], "recipient": "a@example.vn"}}
    await page.fill("#reason", "Bổ sung người nhận bị thiếu")
    await page.check("#edit")
    await page.fill("#fixed", json.dumps(fixed, ensure_ascii=False, indent=2))
    await page.click("#replay")
    await page.wait_for_url(f"{console}/dead-letters/{entry}")
    await eventually(
        lambda: db.fetchval("SELECT count(*) FROM intake.inbox WHERE event_id = $1", event_id),
        lambda n: n == 1,
        timeout=60,
    )
    await page.reload()
    await expect(page.locator("#dl-status")).to_have_text("Đã phát lại")
    await expect(page.locator("#audit")).to_contain_text("Bổ sung người nhận bị thiếu")

    # a laundered dead letter: on notification's dead-letter topic, claiming consultation's
    # group and topic; shown forged, with no way to replay it
    laundered = poisoned_receipt(code, uuid.uuid4())
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, **kafka_kwargs())
    await producer.start()
    try:
        await producer.send_and_wait(
            DEAD_LETTERS["notification"].full_name(stack.topic_prefix),
            json.dumps(laundered).encode(),
            key=code.encode(),
            headers=[
                ("dlq_reason", b"handler_failed"),
                ("dlq_consumer", f"{stack.topic_prefix}lienthong-consultation".encode()),
                ("dlq_topic", CONSULTATION.full_name(stack.topic_prefix).encode()),
                ("dlq_stored_id", b"1"),
            ],
        )
    finally:
        await producer.stop()
    await page.goto(f"{console}/dead-letters")
    forged = await reloaded_until(page, page.locator("#dead-letters tbody tr.forged"))
    await expect(forged.first).to_contain_text("Nguồn giả mạo")
    await forged.first.locator("a").click()
    await expect(page.locator("#forged")).to_contain_text("lienthong-consultation")
    await expect(page.locator("#replay")).to_have_count(0)
    await shot(page, "dead-letter-forged")

    await page.goto(f"{console}/sla?hours=720")
    await expect(page.locator("#sla-dossiers")).to_contain_text(code)
    await shot(page, "sla")
    await page.goto(f"{console}/figures")
    await expect(page.locator("#trend")).to_be_visible()
    await shot(page, "figures")

    # 4. lag rises while a consumer is stopped and falls after it restarts
    stack.kill("notification", signal.SIGTERM)
    for i in range(5):
        body = {**PERMIT, "applicant": {**PERMIT["applicant"], "phone": f"09{i:08d}"}}
        r = await http.post(
            f"{stack.url('intake')}/v1/dossiers", json=body, headers=desk(stack, body)
        )
        assert r.status_code == 201, r.text
    await page.goto(f"{console}/lag")
    group = f"{stack.topic_prefix}lienthong-notification"
    total = page.locator(f".stat[data-group='{group}'] .lag-total")
    await expect(total).not_to_have_text("0", timeout=30000)
    await shot(page, "lag")
    stack.start("notification")
    stack.wait_ready("notification")
    await expect(total).to_have_text("0", timeout=90000)
    assert VIOLATIONS == [], "\n".join(VIOLATIONS)
