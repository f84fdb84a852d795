"""Screenshots of the console's main pages from a running system, for docs/ and the README.

``python -m deploy.screenshots [--console URL] [--token TOKEN] [--out docs]``

Drives Debian's Chromium (``/usr/bin/chromium``, never a downloaded browser) with
Playwright, signed in with the operator token ``make run`` wrote (or ``--token``), and saves
``console-{stream,dossier,lag,dead-letters,sla,figures}.png``. Run it after some load
(``python -m deploy.cli load``) so the pages have something to show.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx
from playwright.async_api import async_playwright

from deploy.cli import RUN, operator_token, url_of
from services.console.api import COOKIE

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
ROOT = Path(__file__).resolve().parent.parent


def a_dossier(console: str, token: str) -> str | None:
    """The dossier with the longest timeline among the latest received."""
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(timeout=10, headers=headers) as http:
        page = http.get(
            f"{console}/v1/console/events", params={"type": "routing.*", "limit": 200}
        ).json()
        counts: dict[str, int] = {}
        for e in page["items"]:
            if e.get("dossier_code"):
                counts[e["dossier_code"]] = counts.get(e["dossier_code"], 0) + 1
        return max(counts, key=lambda c: counts[c]) if counts else None


async def shoot(console: str, token: str, out: Path, code: str | None) -> list[Path]:
    """Each page, signed in as ``token``; ``out`` exists."""
    pages = {"stream": "/", "lag": "/lag", "dead-letters": "/dead-letters", "sla": "/sla"}
    pages["figures"] = "/figures"
    if code:
        pages["dossier"] = f"/dossiers/{code}"
    saved: list[Path] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = await browser.new_context(
            viewport={"width": 1360, "height": 900},
            locale="vi-VN",
            timezone_id="Asia/Ho_Chi_Minh",
        )
        await context.add_cookies([{"name": COOKIE, "value": token, "url": console}])
        page = await context.new_page()
        for name, path in pages.items():
            await page.goto(f"{console}{path}", wait_until="networkidle")
            if name == "stream":
                await page.wait_for_timeout(1500)  # the live rows arrive
            target = out / f"console-{name}.png"
            await page.screenshot(path=str(target), full_page=False)
            saved.append(target)
        await browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.screenshots", description=__doc__)
    p.add_argument("--console", default=None, help="the console's URL (default: make run's)")
    p.add_argument("--token", default=None, help=f"operator token (else {RUN}/operator-token)")
    p.add_argument("--out", type=Path, default=ROOT / "docs")
    a = p.parse_args(argv)
    token = operator_token(a.token)
    if not token:
        raise SystemExit("no operator token: pass --token or start `make run`")
    console = a.console or url_of("console")
    a.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(console, token, a.out, a_dossier(console, token))):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
